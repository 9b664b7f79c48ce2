//! The compatibility checker: can a reader schema read everything a writer
//! schema admits?
//!
//! The check is a conservative proof that every payload valid under the
//! writer's [effective schema](crate::EventSchema::effective_schema) is valid
//! under the reader's. When the checker cannot prove it, it refuses and says
//! where and why; it never accepts an evolution it does not understand.

use crate::compatibility::Compatibility;
use crate::schema::EventSchema;
use crate::validate::{MAX_DEPTH, compile, too_deep};
use jsonschema::Draft;
use serde_json::{Map, Number, Value};
use std::cell::Cell;
use std::cmp::Ordering;
use std::fmt;

/// Why a reader schema cannot read data written with a writer schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// JSON pointer into the payload where the schemas disagree (`""` is the
    /// payload root; `*` stands for "any array item" or "any undeclared
    /// property").
    pub path: String,
    /// The rule that broke, in words.
    pub rule: String,
}

impl Incompatibility {
    fn new(path: &str, rule: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "at the payload root: {}", self.rule)
        } else {
            write!(f, "at `{}`: {}", self.path, self.rule)
        }
    }
}

impl std::error::Error for Incompatibility {}

type Check = Result<(), Incompatibility>;

/// Whether a consumer using `reader` can read every payload valid under
/// `writer`.
///
/// `Ok(())` is a proof; an `Err` names the first place (a JSON pointer into the
/// payload) and the rule that stops the proof: a real incompatibility, or a
/// construct the checker does not understand. See the crate documentation for
/// the list of understood keywords.
///
/// ```
/// use event_schema::{EventSchema, can_read};
/// use serde_json::json;
///
/// let v1 = EventSchema::new("t", 1).with_json_schema(json!({
///     "type": "object", "properties": {"n": {"type": "integer"}}
/// }));
/// let v2 = EventSchema::new("t", 2).with_json_schema(json!({
///     "type": "object", "properties": {"n": {"type": "number"}}
/// }));
/// assert!(can_read(&v2, &v1).is_ok()); // integer widens to number
/// let err = can_read(&v1, &v2).unwrap_err(); // number does not narrow to integer
/// assert_eq!(err.path, "/n");
/// ```
pub fn can_read(reader: &EventSchema, writer: &EventSchema) -> Result<(), Incompatibility> {
    // Same JSON Schema, and the reader requires no field the writer does not:
    // the reader's valid set contains the writer's, whatever the schema says.
    if reader.json_schema == writer.json_schema
        && reader
            .required_fields
            .iter()
            .all(|f| writer.required_fields.contains(f))
    {
        return Ok(());
    }
    // Local references resolved where that is exact (see `inline_refs`).
    let reader_inlined = inline_schema_refs(reader);
    let writer_inlined = inline_schema_refs(writer);
    let resolved = reader_inlined.is_some() || writer_inlined.is_some();
    let r = reader_inlined.as_ref().unwrap_or(reader).effective_schema();
    let w = writer_inlined.as_ref().unwrap_or(writer).effective_schema();
    // The proof walks both schemas one call per level (and compiles
    // subschemas, which recurses too): refuse what no JSON document can
    // carry rather than exhaust the stack.
    for (who, schema) in [("reader", &r), ("writer", &w)] {
        if too_deep(schema) {
            return Err(Incompatibility::new(
                "",
                format!(
                    "the {who}'s schema nests arrays and objects more than {MAX_DEPTH} levels \
                     deep, deeper than any JSON document can carry; the checker does not walk it"
                ),
            ));
        }
    }
    let r_draft = declared_draft(&r);
    let w_draft = declared_draft(&w);
    for (who, draft) in [("reader", r_draft), ("writer", w_draft)] {
        if let Some(d) = draft
            && (d.contains("draft-03") || d.contains("draft-04"))
        {
            return Err(Incompatibility::new(
                "",
                format!(
                    "the {who} declares `$schema` {d:?}; the compatibility checker \
                         understands drafts 6, 7, 2019-09 and 2020-12 only"
                ),
            ));
        }
    }
    let ctx = Ctx {
        reader_draft: r_draft,
        writer_draft: w_draft,
        same_draft: same_draft(r_draft, w_draft),
        steps: Cell::new(MAX_STEPS),
    };
    subset(&w, &r, "", &ctx).map_err(|mut e| {
        if ctx.steps.get() == 0 {
            return Incompatibility::new(
                "",
                format!(
                    "the schemas are too complex to check: the proof needs more than \
                     {MAX_STEPS} steps (unions tried branch by branch multiply them)"
                ),
            );
        }
        if resolved {
            e.rule.push_str(
                " (checked with the schemas' local `$ref`s resolved to their definitions)",
            );
        }
        e
    })
}

/// `schema` with its JSON Schema's local references inlined, or `None`
/// when it has none or they cannot be inlined exactly.
fn inline_schema_refs(schema: &EventSchema) -> Option<EventSchema> {
    let json = schema.json_schema.as_ref()?;
    let inlined = inline_refs(json)?;
    Some(EventSchema {
        json_schema: Some(inlined),
        ..schema.clone()
    })
}

/// The most schema nodes [`inline_refs`] produces: references to shared
/// definitions multiply, and a schema that grows beyond this is left alone.
const INLINE_BUDGET: usize = 100_000;

/// Schema keywords whose value is one subschema.
const ONE_SCHEMA: &[&str] = &[
    "additionalProperties",
    "items",
    "additionalItems",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
];
/// Schema keywords whose value maps names to subschemas.
const NAMED_SCHEMAS: &[&str] = &["properties", "patternProperties", "dependentSchemas"];
/// Schema keywords whose value is an array of subschemas.
const SCHEMA_LIST: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems", "items"];

/// `json` (a root JSON Schema) with every `{"$ref": "#/json/pointer"}` in
/// a subschema position replaced by the subschema it points to, which the
/// validator treats identically. `None` (the checker then refuses the
/// references as before) when the schema has no `$ref`, or when inlining
/// might not be exact: a reference that is not a JSON pointer into this
/// document, with a sibling that is not an annotation (applied by 2019-09
/// and 2020-12, ignored by drafts 6 and 7), recursive, a dynamic or
/// recursive reference anywhere, an `$id` or `$schema` below the root
/// (another base URI or draft), or a result beyond [`INLINE_BUDGET`] nodes
/// or [`MAX_DEPTH`] levels.
fn inline_refs(json: &Value) -> Option<Value> {
    fn any_key(value: &Value, found: &dyn Fn(&str, bool) -> bool, root: bool) -> bool {
        match value {
            Value::Object(map) => map
                .iter()
                .any(|(k, v)| found(k, root) || any_key(v, found, false)),
            Value::Array(items) => items.iter().any(|v| any_key(v, found, false)),
            _ => false,
        }
    }
    // Walked by recursion below, and cloned.
    if too_deep(json)
        || !any_key(json, &|k, _| k == "$ref", true)
        || any_key(
            json,
            &|k, root| {
                matches!(k, "$dynamicRef" | "$recursiveRef")
                    || (!root && matches!(k, "$id" | "$schema"))
            },
            true,
        )
    {
        return None;
    }
    let mut inliner = Inliner {
        document: json,
        expanding: Vec::new(),
        budget: INLINE_BUDGET,
    };
    let out = inliner.schema(json, true, 0)?;
    (!too_deep(&out)).then_some(out)
}

struct Inliner<'a> {
    document: &'a Value,
    /// The pointers being expanded (a repeat is a recursive reference).
    expanding: Vec<&'a str>,
    budget: usize,
}

impl<'a> Inliner<'a> {
    fn schema(&mut self, schema: &'a Value, root: bool, depth: usize) -> Option<Value> {
        self.budget = self.budget.checked_sub(1)?;
        if depth > MAX_DEPTH {
            return None;
        }
        let Value::Object(map) = schema else {
            return Some(schema.clone());
        };
        if let Some(reference) = map.get("$ref") {
            return self.reference(map, reference, root, depth);
        }
        let mut out = Map::new();
        for (key, value) in map {
            let k = key.as_str();
            let inlined = match value {
                Value::Object(named) if NAMED_SCHEMAS.contains(&k) => {
                    let mut each = Map::new();
                    for (name, sub) in named {
                        each.insert(name.clone(), self.schema(sub, false, depth + 1)?);
                    }
                    Value::Object(each)
                }
                Value::Array(list) if SCHEMA_LIST.contains(&k) => Value::Array(
                    list.iter()
                        .map(|sub| self.schema(sub, false, depth + 1))
                        .collect::<Option<_>>()?,
                ),
                Value::Object(_) | Value::Bool(_) if ONE_SCHEMA.contains(&k) => {
                    self.schema(value, false, depth + 1)?
                }
                // Definitions are reached through references only, and
                // every reference the checker reads is inlined: drop them.
                _ if matches!(k, "$defs" | "definitions") => continue,
                // Values and annotations stay as they are.
                _ => {
                    self.budget = self.budget.checked_sub(weight(value))?;
                    value.clone()
                }
            };
            out.insert(key.clone(), inlined);
        }
        Some(Value::Object(out))
    }

    /// The target of `{"$ref": reference, ...siblings}`, inlined.
    fn reference(
        &mut self,
        map: &'a Map<String, Value>,
        reference: &'a Value,
        root: bool,
        depth: usize,
    ) -> Option<Value> {
        let pointer = reference.as_str()?.strip_prefix('#')?;
        if pointer.is_empty() || pointer.contains('%') || self.expanding.contains(&pointer) {
            return None;
        }
        // Annotations only beside it (and the root's `$schema`).
        if !map
            .keys()
            .all(|k| k == "$ref" || is_annotation(k, root) || k == "$anchor")
        {
            return None;
        }
        let target = resolve(self.document, pointer)?;
        if !(target.is_object() || target.is_boolean()) {
            return None;
        }
        self.expanding.push(pointer);
        let inlined = self.schema(target, false, depth + 1)?;
        self.expanding.pop();
        match (root, map.get("$schema"), inlined) {
            (true, Some(draft), Value::Object(mut target)) => {
                target.insert("$schema".into(), draft.clone());
                Some(Value::Object(target))
            }
            (_, _, inlined) => Some(inlined),
        }
    }
}

/// How many JSON values `value` holds, itself included.
fn weight(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(weight).sum::<usize>(),
        Value::Array(items) => 1 + items.iter().map(weight).sum::<usize>(),
        _ => 1,
    }
}

/// The value at JSON pointer `pointer` (`/a/0/b`, as in a URI fragment
/// without percent-escapes) in `document`.
fn resolve<'a>(document: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut at = document;
    for token in pointer.strip_prefix('/')?.split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        at = match at {
            Value::Object(map) => map.get(&token)?,
            Value::Array(items) => {
                if token.len() > 1 && token.starts_with('0') {
                    return None;
                }
                items.get(token.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(at)
}

/// Checks `candidate` (a new version) against the earlier versions of its
/// type under `level`. `earlier` is in ascending version order. The error is
/// the reason, naming the level, the versions, the field and the rule.
pub(crate) fn check_evolution(
    level: Compatibility,
    candidate: &EventSchema,
    earlier: &[&EventSchema],
) -> Result<(), String> {
    if level == Compatibility::None {
        return Ok(());
    }
    let targets: &[&EventSchema] = if level.is_transitive() {
        earlier
    } else {
        &earlier[earlier.len().saturating_sub(1)..]
    };
    for old in targets.iter().rev() {
        if level.checks_backward() {
            can_read(candidate, old).map_err(|e| {
                format!(
                    "{level}: v{} cannot read data written with v{}: {e}",
                    candidate.version, old.version
                )
            })?;
        }
        if level.checks_forward() {
            can_read(old, candidate).map_err(|e| {
                format!(
                    "{level}: v{} cannot read data written with v{}: {e}",
                    old.version, candidate.version
                )
            })?;
        }
    }
    Ok(())
}

struct Ctx<'a> {
    reader_draft: Option<&'a str>,
    writer_draft: Option<&'a str>,
    same_draft: bool,
    /// Subschema comparisons left before the checker gives up (refusing).
    steps: Cell<usize>,
}

/// How many subschema comparisons one [`can_read`] makes at most: linear
/// in the schemas' size for the keyword rules, but the union rules try
/// branches one after another, which multiplies with nesting.
const MAX_STEPS: usize = 250_000;

/// Whether the draft a root `$schema` declares (absent: 2020-12) applies
/// the keywords beside a `$ref`: 2019-09 and 2020-12 do, drafts 6 and 7
/// ignore every sibling of a `$ref` (its `type` included).
fn ref_siblings_apply(draft: Option<&str>) -> bool {
    matches!(
        draft.map_or_else(Draft::default, Draft::from_schema_uri),
        Draft::Draft201909 | Draft::Draft202012
    )
}

fn declared_draft(schema: &Value) -> Option<&str> {
    schema.get("$schema").and_then(Value::as_str)
}

/// Whether two root `$schema` declarations (absent: 2020-12) name the same
/// draft as the validator reads them: spellings of one draft (a trailing
/// `#`, `http` or `https`, the version-less URI) are one draft. A
/// meta-schema the validator does not know is the same only as itself.
fn same_draft(a: Option<&str>, b: Option<&str>) -> bool {
    let draft = |uri: Option<&str>| uri.map_or_else(Draft::default, Draft::from_schema_uri);
    a == b || (draft(a) == draft(b) && draft(a) != Draft::Unknown)
}

/// Keywords that never change which instances are valid (once `$ref` is
/// excluded, which the checker refuses).
const ANNOTATIONS: &[&str] = &[
    "$id",
    "$anchor",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Keywords the checker reasons about.
const UNDERSTOOD: &[&str] = &[
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "minProperties",
    "maxProperties",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "contentEncoding",
    "contentMediaType",
];

/// Whether `key` never changes which instances are valid: an annotation,
/// a vendor extension (`x-…`, which no draft defines and validators
/// ignore; this crate's validator registers no keywords of its own), or
/// the root's `$schema`.
fn is_annotation(key: &str, root: bool) -> bool {
    ANNOTATIONS.contains(&key) || key.starts_with("x-") || (root && key == "$schema")
}

fn accepts_everything(schema: &Value, root: bool) -> bool {
    match schema {
        Value::Bool(b) => *b,
        Value::Object(map) => map.keys().all(|k| is_annotation(k, root)),
        _ => false,
    }
}

fn accepts_nothing(schema: &Value) -> bool {
    matches!(schema, Value::Bool(false))
}

fn contains_ref(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(k, v)| {
            matches!(k.as_str(), "$ref" | "$dynamicRef" | "$recursiveRef") || contains_ref(v)
        }),
        Value::Array(items) => items.iter().any(contains_ref),
        _ => false,
    }
}

fn child(at: &str, property: &str) -> String {
    let escaped = property.replace('~', "~0").replace('/', "~1");
    format!("{at}/{escaped}")
}

/// Proves `writer ⊆ reader` at payload location `at`.
fn subset(w: &Value, r: &Value, at: &str, ctx: &Ctx<'_>) -> Check {
    let root = at.is_empty();
    let left = ctx.steps.get();
    if left == 0 {
        return Err(Incompatibility::new(at, "the proof took too many steps"));
    }
    ctx.steps.set(left - 1);
    if accepts_everything(r, root) || accepts_nothing(w) {
        return Ok(());
    }
    if accepts_nothing(r) {
        return Err(Incompatibility::new(
            at,
            "the reader accepts no value here but the writer does",
        ));
    }
    // An unchanged subtree admits the same values, provided it is read under
    // the same draft and holds no reference whose target may have changed.
    if ctx.same_draft && w == r && !contains_ref(w) {
        return Ok(());
    }
    let empty = Map::new();
    let wm = schema_map(w, &empty, "writer", at)?;
    let rm = schema_map(r, &empty, "reader", at)?;
    if let Some(result) = combinators(w, wm, r, rm, at, ctx) {
        return result;
    }
    for (who, map) in [("reader", rm), ("writer", wm)] {
        for key in map.keys() {
            if !is_annotation(key, root) && !UNDERSTOOD.contains(&key.as_str()) {
                return Err(Incompatibility::new(
                    at,
                    format!(
                        "the {who} uses `{key}`, which the compatibility checker does not \
                         understand, so it cannot prove the change safe (register under \
                         NONE to skip the check)"
                    ),
                ));
            }
        }
    }

    // A writer limited to a finite set of values: check each value.
    if let Some(values) = finite_values(wm, at)? {
        return check_values(&values, r, at, ctx);
    }
    if rm.contains_key("enum") || rm.contains_key("const") {
        return Err(Incompatibility::new(
            at,
            "the reader restricts the value to a fixed set (enum/const) but the writer does not",
        ));
    }

    let wt = TypeSet::of(wm, "writer", at)?;
    let rt = TypeSet::of(rm, "reader", at)?;
    check_types(wt, rt, wm.contains_key("type"), at)?;

    if wt.may_be(TypeSet::NUMBER | TypeSet::INTEGER) {
        check_numeric(wm, rm, at)?;
    }
    if wt.may_be(TypeSet::STRING) {
        check_lower(wm, rm, "minLength", at)?;
        check_upper(wm, rm, "maxLength", at)?;
        check_equal(wm, rm, "pattern", at)?;
        check_content(wm, rm, at)?;
        check_equal(wm, rm, "format", at)?;
        // Whether these are asserted depends on the draft (by default in
        // drafts 6 and 7, annotations only in 2019-09 and 2020-12): the same
        // keyword under another draft is another rule.
        if !ctx.same_draft {
            for key in ["format", "contentEncoding", "contentMediaType"] {
                if rm.contains_key(key) {
                    return Err(Incompatibility::new(
                        at,
                        format!(
                            "`{key}` under different `$schema` drafts: whether it is asserted \
                             differs between drafts, so the checker cannot prove the change safe"
                        ),
                    ));
                }
            }
        }
    }
    if wt.may_be(TypeSet::ARRAY) {
        check_array(wm, rm, at, ctx)?;
    }
    if wt.may_be(TypeSet::OBJECT) {
        check_object(wm, rm, at, ctx)?;
    }
    Ok(())
}

/// The branches of `map` when its only keyword (annotations aside) is one
/// of `keywords` and every branch is a schema that does not switch drafts.
fn alone<'a>(
    map: &'a Map<String, Value>,
    keywords: &[&'static str],
    root: bool,
) -> Option<(&'static str, &'a [Value])> {
    let mut found = None;
    for (key, value) in map {
        if is_annotation(key, root) {
            continue;
        }
        let keyword = keywords.iter().find(|k| **k == key.as_str())?;
        if found.is_some() {
            return None;
        }
        found = Some((*keyword, value.as_array()?.as_slice()));
    }
    let (keyword, branches) = found?;
    let plain = |b: &Value| match b {
        Value::Bool(_) => true,
        Value::Object(m) => !m.contains_key("$schema"),
        _ => false,
    };
    (!branches.is_empty() && branches.iter().all(plain)).then_some((keyword, branches))
}

/// `anyOf`, `oneOf` and `allOf` standing alone in a subschema (besides
/// annotations), the shapes schema generators write (`anyOf: [T, null]`).
/// `None` when none applies (the caller's rules then refuse the keyword).
fn combinators(
    w: &Value,
    wm: &Map<String, Value>,
    r: &Value,
    rm: &Map<String, Value>,
    at: &str,
    ctx: &Ctx<'_>,
) -> Option<Check> {
    let root = at.is_empty();
    // W is the union of its branches (a oneOf's values are a subset of it).
    if let Some((_, branches)) = alone(wm, &["anyOf", "oneOf"], root) {
        return Some(branches.iter().try_for_each(|b| subset(b, r, at, ctx)));
    }
    // R is the intersection of its branches.
    if let Some((_, branches)) = alone(rm, &["allOf"], root) {
        return Some(branches.iter().try_for_each(|b| subset(w, b, at, ctx)));
    }
    if let Some((keyword, branches)) = alone(rm, &["anyOf", "oneOf"], root) {
        return Some(read_by_union(w, wm, r, keyword, branches, at, ctx));
    }
    // W is within each of its branches: one that R reads is enough.
    if let Some((_, branches)) = alone(wm, &["allOf"], root)
        && branches.iter().any(|b| subset(b, r, at, ctx).is_ok())
    {
        return Some(Ok(()));
    }
    None
}

/// Whether R = `{keyword: branches}` (`anyOf` or `oneOf`) reads W: every
/// value of W is valid under one branch (and, for `oneOf`, provably under no
/// other: the other branches admit none of W's types). A W with several
/// types is checked one type at a time.
fn read_by_union(
    w: &Value,
    wm: &Map<String, Value>,
    r: &Value,
    keyword: &str,
    branches: &[Value],
    at: &str,
    ctx: &Ctx<'_>,
) -> Check {
    // A finite W: each value against R itself, exactly.
    if !contains_ref(w)
        && let Some(values) = finite_values(wm, at)?
    {
        return check_values(&values, r, at, ctx);
    }
    // A `type` next to a `$ref` says nothing under drafts 6 and 7, which
    // ignore it: neither the writer's nor a branch's.
    let wt = if wm.contains_key("$ref") && !ref_siblings_apply(ctx.writer_draft) {
        TypeSet::ALL
    } else {
        TypeSet::of(wm, "writer", at)?
    };
    let branch_types_apply = ref_siblings_apply(ctx.reader_draft);
    let disjoint = |b: &Value| match b {
        Value::Bool(accepts) => !accepts,
        Value::Object(bm) if bm.contains_key("$ref") && !branch_types_apply => false,
        Value::Object(bm) if bm.contains_key("type") => {
            TypeSet::of(bm, "reader", at).is_ok_and(|bt| {
                let overlap = |x: TypeSet, y: TypeSet| {
                    x.0 & y.0 != 0
                        || (x.may_be(TypeSet::INTEGER) && y.may_be(TypeSet::NUMBER))
                        || (x.may_be(TypeSet::NUMBER) && y.may_be(TypeSet::INTEGER))
                };
                !overlap(wt, bt)
            })
        }
        _ => false,
    };
    for (i, branch) in branches.iter().enumerate() {
        if subset(w, branch, at, ctx).is_ok()
            && (keyword == "anyOf"
                || branches
                    .iter()
                    .enumerate()
                    .all(|(j, other)| j == i || disjoint(other)))
        {
            return Ok(());
        }
    }
    if let Some(Value::Array(types)) = wm.get("type")
        && types.len() > 1
    {
        return types.iter().try_for_each(|t| {
            let mut one = wm.clone();
            one.insert("type".into(), t.clone());
            subset(&Value::Object(one), r, at, ctx)
        });
    }
    Err(Incompatibility::new(
        at,
        if keyword == "anyOf" {
            "the reader accepts the values of its `anyOf` schemas, none of which reads \
             every value the writer allows"
        } else {
            "the reader accepts the values of exactly one of its `oneOf` schemas: none \
             reads every value the writer allows while the others provably refuse them"
        },
    ))
}

fn schema_map<'a>(
    schema: &'a Value,
    empty: &'a Map<String, Value>,
    who: &str,
    at: &str,
) -> Result<&'a Map<String, Value>, Incompatibility> {
    match schema {
        Value::Object(map) => Ok(map),
        Value::Bool(true) => Ok(empty),
        other => Err(Incompatibility::new(
            at,
            format!("the {who}'s schema here is not a schema (got {other})"),
        )),
    }
}

fn finite_values<'a>(
    wm: &'a Map<String, Value>,
    at: &str,
) -> Result<Option<Vec<&'a Value>>, Incompatibility> {
    if let Some(value) = wm.get("const") {
        return Ok(Some(vec![value]));
    }
    match wm.get("enum") {
        None => Ok(None),
        Some(Value::Array(values)) => Ok(Some(values.iter().collect())),
        Some(_) => Err(Incompatibility::new(
            at,
            "the writer's `enum` is not an array",
        )),
    }
}

/// Whether the reader accepts each of the writer's `values` (its `enum` or
/// `const`), by the validator itself (the reader compiled once).
fn check_values(values: &[&Value], reader: &Value, at: &str, ctx: &Ctx<'_>) -> Check {
    if values.is_empty() {
        return Ok(());
    }
    if contains_ref(reader) {
        return Err(Incompatibility::new(
            at,
            "the reader uses `$ref` here, which the compatibility checker does not resolve",
        ));
    }
    let mut schema = reader.clone();
    if let (Value::Object(map), Some(draft)) = (&mut schema, ctx.reader_draft) {
        map.entry("$schema")
            .or_insert_with(|| Value::String(draft.to_owned()));
    }
    let validator = compile(&schema).map_err(|e| {
        Incompatibility::new(
            at,
            format!("the reader's schema here does not compile: {e}"),
        )
    })?;
    match values.iter().find(|value| !validator.is_valid(value)) {
        None => Ok(()),
        Some(value) => Err(Incompatibility::new(
            at,
            format!("the writer allows the value {value}, which the reader does not accept"),
        )),
    }
}

/// The JSON types a schema admits, as a bit set.
#[derive(Clone, Copy, PartialEq, Eq)]
struct TypeSet(u8);

impl TypeSet {
    const NULL: u8 = 1;
    const BOOLEAN: u8 = 2;
    const OBJECT: u8 = 4;
    const ARRAY: u8 = 8;
    const NUMBER: u8 = 16;
    const INTEGER: u8 = 32;
    const STRING: u8 = 64;
    const ALL: TypeSet = TypeSet(127);
    const NAMES: [(u8, &'static str); 7] = [
        (Self::NULL, "null"),
        (Self::BOOLEAN, "boolean"),
        (Self::OBJECT, "object"),
        (Self::ARRAY, "array"),
        (Self::NUMBER, "number"),
        (Self::INTEGER, "integer"),
        (Self::STRING, "string"),
    ];

    fn of(map: &Map<String, Value>, who: &str, at: &str) -> Result<Self, Incompatibility> {
        let bad = || {
            Incompatibility::new(
                at,
                format!("the {who}'s `type` is not a type name or a list of them"),
            )
        };
        let bit = |name: &Value| {
            name.as_str()
                .and_then(|n| Self::NAMES.iter().find(|(_, s)| *s == n))
                .map(|(b, _)| *b)
        };
        match map.get("type") {
            None => Ok(Self::ALL),
            Some(Value::Array(names)) => names
                .iter()
                .try_fold(0u8, |acc, n| bit(n).map(|b| acc | b))
                .map(TypeSet)
                .ok_or_else(bad),
            Some(name) => bit(name).map(TypeSet).ok_or_else(bad),
        }
    }

    fn may_be(self, bits: u8) -> bool {
        self.0 & bits != 0
    }

    /// Whether this set admits every value of type `bit`.
    fn covers(self, bit: u8) -> bool {
        self.0 & bit != 0 || (bit == Self::INTEGER && self.0 & Self::NUMBER != 0)
    }
}

impl fmt::Display for TypeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Self::NAMES
            .iter()
            .filter(|(b, _)| self.0 & b != 0)
            .map(|(_, n)| *n)
            .collect();
        if names.is_empty() {
            f.write_str("no type")
        } else {
            f.write_str(&names.join(" | "))
        }
    }
}

fn check_types(wt: TypeSet, rt: TypeSet, writer_typed: bool, at: &str) -> Check {
    for (bit, name) in TypeSet::NAMES {
        if wt.0 & bit != 0 && !rt.covers(bit) {
            let rule = if writer_typed {
                format!("type change: the writer allows `{name}` but the reader accepts only {rt}")
            } else {
                format!("the reader requires type {rt} but the writer does not restrict the type")
            };
            return Err(Incompatibility::new(at, rule));
        }
    }
    Ok(())
}

fn number<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<&'a Number>, Incompatibility> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n)),
        Some(_) => Err(Incompatibility::new(
            at,
            format!("`{key}` is not a number (draft-4 boolean forms are not understood)"),
        )),
    }
}

/// `a` compared with `b` exactly (integers beyond 2^53 are not rounded to
/// `f64`, as the validator does not round them either). `None` if a number
/// has no value the checker can compare (never with plain `serde_json`).
fn compare(a: &Number, b: &Number) -> Option<Ordering> {
    fn integer(n: &Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    // `i` compared with the finite float `f`.
    fn with_float(i: i128, f: f64) -> Option<Ordering> {
        if !f.is_finite() {
            return f.partial_cmp(&0.0).map(Ordering::reverse);
        }
        let whole = f.trunc();
        // Beyond every i128 (and so beyond every JSON integer serde_json holds).
        const LIMIT: f64 = 1.7e38;
        if whole >= LIMIT {
            return Some(Ordering::Less);
        }
        if whole <= -LIMIT {
            return Some(Ordering::Greater);
        }
        // `whole` is integral and in range: the conversion is exact.
        #[allow(clippy::cast_possible_truncation)]
        let whole_int = whole as i128;
        Some(match i.cmp(&whole_int) {
            // `|f - whole| < 1`, so an integer on either side of `whole` is
            // on the same side of `f`.
            Ordering::Equal => whole.partial_cmp(&f)?,
            unequal => unequal,
        })
    }
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        (Some(x), None) => with_float(x, b.as_f64()?),
        (None, Some(y)) => with_float(y, a.as_f64()?).map(Ordering::reverse),
        (None, None) => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// Whether `writer_bound` relates to `reader_bound` as `wanted` says (one of
/// the orderings in it), comparing exactly.
fn holds(writer_bound: Option<&Number>, reader_bound: &Number, wanted: &[Ordering]) -> bool {
    writer_bound
        .and_then(|w| compare(w, reader_bound))
        .is_some_and(|order| wanted.contains(&order))
}

/// A JSON number as the decimal it is written as: `mantissa * 10^-decimals`.
/// `None` when it does not fit (the caller then refuses).
fn decimal(n: &Number) -> Option<(i128, i32)> {
    let text = n.to_string();
    let (significand, exponent) = match text.split_once(['e', 'E']) {
        Some((s, e)) => (s, e.parse::<i32>().ok()?),
        None => (text.as_str(), 0),
    };
    let (whole, fraction) = significand.split_once('.').unwrap_or((significand, ""));
    let digits = format!("{whole}{fraction}");
    let mantissa: i128 = digits.parse().ok()?;
    let decimals = i32::try_from(fraction.len()).ok()?.checked_sub(exponent)?;
    Some((mantissa, decimals))
}

/// Whether every value the validator accepts as a multiple of `multiple`
/// it also accepts as a multiple of `divisor` (both positive).
///
/// The validator checks an integer divisor with exact integer arithmetic,
/// and a fractional one on the value read as an `f64`, in the decimal
/// reading of that `f64`. So: `multiple / divisor` must be an integer (as
/// the decimals are written); an integer `multiple` with a fractional
/// `divisor` also needs every integer to be a multiple of the divisor
/// (`1 / divisor` an integer), because an integer beyond 2^53 that is an
/// exact multiple of `multiple` can round to an `f64` that is no multiple of
/// the divisor. Integers beyond 2^53 as divisors are refused unless equal:
/// the validator reads them as the `f64` they round to.
fn implies_multiple(multiple: &Number, divisor: &Number) -> bool {
    const SAFE: f64 = 9_007_199_254_740_992.0;
    let integral = |n: &Number| n.as_f64().is_none_or(|f| f.fract() == 0.0);
    let unsafe_integer = |n: &Number| {
        n.as_f64()
            .is_none_or(|f| f.fract() == 0.0 && f.abs() > SAFE)
    };
    if unsafe_integer(multiple) || unsafe_integer(divisor) {
        return compare(multiple, divisor) == Some(Ordering::Equal);
    }
    let (Some(m), Some(d)) = (decimal(multiple), decimal(divisor)) else {
        return false;
    };
    if integral(multiple) && !integral(divisor) {
        return divides((1, 0), d);
    }
    divides(m, d)
}

/// Whether the decimal `multiple` divided by the decimal `divisor` (both
/// `(mantissa, decimals)`, positive) is an integer; `false` when the
/// arithmetic does not fit.
fn divides((m, m_decimals): (i128, i32), (d, d_decimals): (i128, i32)) -> bool {
    if m <= 0 || d <= 0 {
        return false;
    }
    // multiple / divisor = (m * 10^d_decimals) / (d * 10^m_decimals)
    let shared = m_decimals.min(d_decimals);
    let scale = |mantissa: i128, decimals: i32| {
        let places = u32::try_from(decimals.checked_sub(shared)?).ok()?;
        mantissa.checked_mul(10_i128.checked_pow(places)?)
    };
    match (scale(m, d_decimals), scale(d, m_decimals)) {
        (Some(numerator), Some(denominator)) if denominator != 0 => numerator % denominator == 0,
        _ => false,
    }
}

fn check_numeric(wm: &Map<String, Value>, rm: &Map<String, Value>, at: &str) -> Check {
    use Ordering::{Equal, Greater, Less};
    let w_min = number(wm, "minimum", at)?;
    let w_xmin = number(wm, "exclusiveMinimum", at)?;
    let w_max = number(wm, "maximum", at)?;
    let w_xmax = number(wm, "exclusiveMaximum", at)?;
    let describe = |incl: Option<&Number>, excl: Option<&Number>, word: &str| match (incl, excl) {
        (None, None) => format!("no {word}"),
        (Some(i), None) => format!("{word} {i}"),
        (None, Some(e)) => format!("exclusive {word} {e}"),
        (Some(i), Some(e)) => format!("{word} {i} and exclusive {word} {e}"),
    };
    if let Some(a) = number(rm, "minimum", at)?
        && !(holds(w_min, a, &[Greater, Equal]) || holds(w_xmin, a, &[Greater, Equal]))
    {
        return Err(Incompatibility::new(
            at,
            format!(
                "the reader requires minimum {a} but the writer allows smaller values ({})",
                describe(w_min, w_xmin, "minimum")
            ),
        ));
    }
    if let Some(a) = number(rm, "exclusiveMinimum", at)?
        && !(holds(w_min, a, &[Greater]) || holds(w_xmin, a, &[Greater, Equal]))
    {
        return Err(Incompatibility::new(
            at,
            format!(
                "the reader requires values above {a} but the writer allows {a} or less ({})",
                describe(w_min, w_xmin, "minimum")
            ),
        ));
    }
    if let Some(a) = number(rm, "maximum", at)?
        && !(holds(w_max, a, &[Less, Equal]) || holds(w_xmax, a, &[Less, Equal]))
    {
        return Err(Incompatibility::new(
            at,
            format!(
                "the reader requires maximum {a} but the writer allows larger values ({})",
                describe(w_max, w_xmax, "maximum")
            ),
        ));
    }
    if let Some(a) = number(rm, "exclusiveMaximum", at)?
        && !(holds(w_max, a, &[Less]) || holds(w_xmax, a, &[Less, Equal]))
    {
        return Err(Incompatibility::new(
            at,
            format!(
                "the reader requires values below {a} but the writer allows {a} or more ({})",
                describe(w_max, w_xmax, "maximum")
            ),
        ));
    }
    if let Some(a) = number(rm, "multipleOf", at)? {
        let ok = number(wm, "multipleOf", at)?.is_some_and(|b| implies_multiple(b, a));
        if !ok {
            return Err(Incompatibility::new(
                at,
                format!(
                    "the reader requires multiples of {a} but the writer's values are not \
                     restricted to them"
                ),
            ));
        }
    }
    Ok(())
}

fn count(map: &Map<String, Value>, key: &str, at: &str) -> Result<Option<u64>, Incompatibility> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                // An integral float (`2.0`) is an integer to JSON Schema.
                let f = v.as_f64()?;
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                (f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0)
                    .then_some(f as u64)
            })
            .map(Some)
            .ok_or_else(|| {
                Incompatibility::new(at, format!("`{key}` is not a non-negative integer"))
            }),
    }
}

fn check_lower(wm: &Map<String, Value>, rm: &Map<String, Value>, key: &str, at: &str) -> Check {
    if let Some(a) = count(rm, key, at)? {
        let w = count(wm, key, at)?.unwrap_or(0);
        if w < a {
            return Err(Incompatibility::new(
                at,
                format!("`{key}` tightened: the reader requires {a}, the writer allows {w}"),
            ));
        }
    }
    Ok(())
}

fn check_upper(wm: &Map<String, Value>, rm: &Map<String, Value>, key: &str, at: &str) -> Check {
    if let Some(a) = count(rm, key, at)? {
        match count(wm, key, at)? {
            Some(w) if w <= a => {}
            w => {
                let shown = w.map_or_else(|| "no limit".to_owned(), |w| w.to_string());
                return Err(Incompatibility::new(
                    at,
                    format!("`{key}` tightened: the reader allows {a}, the writer allows {shown}"),
                ));
            }
        }
    }
    Ok(())
}

fn check_equal(wm: &Map<String, Value>, rm: &Map<String, Value>, key: &str, at: &str) -> Check {
    if let Some(r) = rm.get(key)
        && wm.get(key) != Some(r)
    {
        let w = wm
            .get(key)
            .map_or_else(|| "none".to_owned(), ToString::to_string);
        return Err(Incompatibility::new(
            at,
            format!("`{key}` changed: the reader requires {r}, the writer has {w}"),
        ));
    }
    Ok(())
}

/// `contentEncoding` and `contentMediaType` as one rule: where the
/// validator asserts them, each changes what the other means (the media
/// type is checked on the decoded string, and an encoding next to a media
/// type the validator does not know is not checked at all), so a reader
/// with either keyword needs the writer's pair to be exactly its own.
fn check_content(wm: &Map<String, Value>, rm: &Map<String, Value>, at: &str) -> Check {
    const KEYS: [&str; 2] = ["contentEncoding", "contentMediaType"];
    if KEYS.iter().all(|key| !rm.contains_key(*key)) {
        return Ok(());
    }
    if KEYS.iter().all(|key| wm.get(*key) == rm.get(*key)) {
        return Ok(());
    }
    let pair = |map: &Map<String, Value>| {
        KEYS.iter()
            .map(|key| {
                let value = map
                    .get(*key)
                    .map_or_else(|| "none".to_owned(), ToString::to_string);
                format!("{key} {value}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(Incompatibility::new(
        at,
        format!(
            "`contentEncoding`/`contentMediaType` changed: the reader has {}, the writer has {}; \
             each changes what the other checks, so the pair must stay identical",
            pair(rm),
            pair(wm)
        ),
    ))
}

fn check_array(wm: &Map<String, Value>, rm: &Map<String, Value>, at: &str, ctx: &Ctx<'_>) -> Check {
    check_lower(wm, rm, "minItems", at)?;
    check_upper(wm, rm, "maxItems", at)?;
    if rm.get("uniqueItems") == Some(&Value::Bool(true))
        && wm.get("uniqueItems") != Some(&Value::Bool(true))
    {
        return Err(Incompatibility::new(
            at,
            "the reader requires unique items but the writer does not",
        ));
    }
    let any = Value::Bool(true);
    let wi = wm.get("items").unwrap_or(&any);
    let ri = rm.get("items").unwrap_or(&any);
    if wi.is_array() || ri.is_array() {
        return Err(Incompatibility::new(
            at,
            "tuple-form `items` (an array of schemas) is not understood by the compatibility checker",
        ));
    }
    subset(wi, ri, &format!("{at}/*"), ctx)
}

fn names<'a>(
    map: &'a Map<String, Value>,
    who: &str,
    at: &str,
) -> Result<Vec<&'a str>, Incompatibility> {
    match map.get("required") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    Incompatibility::new(at, format!("the {who}'s `required` holds a non-string"))
                })
            })
            .collect(),
        Some(_) => Err(Incompatibility::new(
            at,
            format!("the {who}'s `required` is not an array"),
        )),
    }
}

fn properties<'a>(
    map: &'a Map<String, Value>,
    empty: &'a Map<String, Value>,
    who: &str,
    at: &str,
) -> Result<&'a Map<String, Value>, Incompatibility> {
    match map.get("properties") {
        None => Ok(empty),
        Some(Value::Object(props)) => Ok(props),
        Some(_) => Err(Incompatibility::new(
            at,
            format!("the {who}'s `properties` is not an object"),
        )),
    }
}

fn check_object(
    wm: &Map<String, Value>,
    rm: &Map<String, Value>,
    at: &str,
    ctx: &Ctx<'_>,
) -> Check {
    check_lower(wm, rm, "minProperties", at)?;
    check_upper(wm, rm, "maxProperties", at)?;

    let w_required = names(wm, "writer", at)?;
    for name in names(rm, "reader", at)? {
        if !w_required.contains(&name) {
            return Err(Incompatibility::new(
                &child(at, name),
                "required by the reader but not by the writer: data written without it \
                 cannot be read",
            ));
        }
    }

    let empty = Map::new();
    let any = Value::Bool(true);
    let w_props = properties(wm, &empty, "writer", at)?;
    let r_props = properties(rm, &empty, "reader", at)?;
    let w_extra = wm.get("additionalProperties").unwrap_or(&any);
    let r_extra = rm.get("additionalProperties").unwrap_or(&any);

    for (name, ws) in w_props {
        let path = child(at, name);
        match r_props.get(name) {
            Some(rs) => subset(ws, rs, &path, ctx)?,
            None if accepts_nothing(r_extra) && !accepts_nothing(ws) => {
                return Err(Incompatibility::new(
                    &path,
                    "the writer may include this property but the reader does not allow it \
                     (additionalProperties: false)",
                ));
            }
            None => subset(ws, r_extra, &path, ctx)?,
        }
    }
    for (name, rs) in r_props {
        if w_props.contains_key(name) {
            continue;
        }
        let path = child(at, name);
        if accepts_everything(w_extra, false) && !accepts_everything(rs, false) {
            return Err(Incompatibility::new(
                &path,
                "the reader constrains this property but the writer does not declare it and \
                 allows any value for undeclared properties (open content model); close the \
                 writer with additionalProperties: false or leave the property unconstrained",
            ));
        }
        subset(w_extra, rs, &path, ctx)?;
    }
    if accepts_nothing(r_extra) && !accepts_nothing(w_extra) {
        return Err(Incompatibility::new(
            at,
            "the reader does not allow undeclared properties (additionalProperties: false) \
             but the writer does",
        ));
    }
    subset(w_extra, r_extra, &format!("{at}/*"), ctx)
}
