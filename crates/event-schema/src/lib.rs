//! # event-schema: schema registry for A3S Event
//!
//! Per event type and version, an [`EventSchema`]: required top-level fields
//! (as in the original `a3s-event`) and, beyond them, an optional full JSON
//! Schema, validated with the [`jsonschema`] crate (compiled once, at
//! registration). [`MemorySchemaRegistry`] implements the [`SchemaRegistry`]
//! trait and event-core's [`SchemaValidator`](event_core::SchemaValidator)
//! hook, so the event bus can validate typed events on publish, before
//! encryption.
//!
//! - **Validation** errors are
//!   [`Error::SchemaValidation`](event_core::Error::SchemaValidation) with the
//!   event type, version and a JSON pointer into the payload (`/customer/email`).
//!   Payload values are masked in the reason, and object keys the schema
//!   does not name are masked in the path and the reason (`/cards/*`: a
//!   key can be data too). Payloads nested deeper than 128 levels (where
//!   `serde_json` stops decoding, so only ever built in memory) are handled
//!   without risking the thread's stack: with a schema whose validation
//!   follows the payload down (a `$ref`, `uniqueItems`) such a payload is
//!   refused; with any other schema it is validated (the check goes only as
//!   deep as the schema), and if it does not match, the error names the
//!   depth, with an empty path, instead of locating the failure (building
//!   that error copies or prints the payload: `anyOf`, `oneOf`,
//!   `unevaluatedItems`). Both refusals are
//!   [`Error::SchemaValidation`](event_core::Error::SchemaValidation) whose
//!   reason says the payload is nested deeper than 128 levels. A schema
//!   nested deeper than that (only ever built in memory) is refused too:
//!   registering it is an [`Error::Schema`](event_core::Error::Schema) and
//!   [`can_read`] refuses it, where compiling or walking it could exhaust
//!   the stack.
//! - **Patterns** (`pattern`, `patternProperties`) are matched by
//!   `jsonschema`'s default engine, `fancy-regex`: linear for plain
//!   patterns, backtracking for backreferences and lookaround, up to its
//!   step limit (a string that exceeds it fails validation). Schemas are
//!   yours, payloads may not be: a pattern that backtracks badly
//!   (`^(a*)*\1b`) costs that limit for every string it is matched against,
//!   so keep patterns that untrusted payloads meet free of nested
//!   quantifiers over backreferences.
//! - **Compatibility** levels are Confluent Schema Registry's
//!   ([`Compatibility`]: `BACKWARD` (default), `BACKWARD_TRANSITIVE`,
//!   `FORWARD`, `FORWARD_TRANSITIVE`, `FULL`, `FULL_TRANSITIVE`, `NONE`), per
//!   type or registry-wide, enforced when a version is registered. A refused
//!   evolution is [`Error::Schema`](event_core::Error::Schema) whose reason
//!   names the level, the versions, the field and the rule.
//! - **Policies**: [`UnknownTypePolicy`] for typed events without a schema
//!   (`Allow`, the original behaviour and the default, or `Reject`) and
//!   [`UntypedPolicy`] for events with an empty or blank `event_type` (`Allow` by
//!   default: only typed events are validated; `Reject` to require types).
//!   A known type published with an unregistered version counts as unknown:
//!   [`UnknownTypePolicy`] decides (`Reject` names the registered versions).
//!   [`UntypedPolicy`] looks only at whether the event has a type, so
//!   `UntypedPolicy::Reject` lets such an event through unless
//!   `UnknownTypePolicy::Reject` is set too.
//!
//! ## Example
//!
//! ```
//! use event_core::{Error, Event};
//! use event_schema::{Compatibility, EventSchema, MemorySchemaRegistry, SchemaRegistry};
//! use serde_json::json;
//!
//! let registry = MemorySchemaRegistry::new(); // BACKWARD by default
//! registry.register(
//!     EventSchema::new("order.created", 1).with_json_schema(json!({
//!         "type": "object",
//!         "properties": {"id": {"type": "string"}, "amount": {"type": "integer"}},
//!         "required": ["id", "amount"]
//!     })),
//! )?;
//!
//! let event = Event::typed("events.shop.order", "shop", "order.created", 1,
//!     "order placed", "shop", json!({"id": "o-1", "amount": "ten"}));
//! match registry.validate(&event) {
//!     Err(Error::SchemaValidation { path, .. }) => assert_eq!(path, "/amount"),
//!     other => panic!("expected a validation error, got {other:?}"),
//! }
//!
//! // v2 widens `amount` to number: new consumers still read v1 data.
//! registry.register(
//!     EventSchema::new("order.created", 2).with_json_schema(json!({
//!         "type": "object",
//!         "properties": {"id": {"type": "string"}, "amount": {"type": "number"}},
//!         "required": ["id", "amount"]
//!     })),
//! )?;
//!
//! // v3 makes a new field required: v3 consumers cannot read v2 data.
//! let err = registry.register(
//!     EventSchema::new("order.created", 3).with_json_schema(json!({
//!         "type": "object",
//!         "properties": {"id": {"type": "string"}, "amount": {"type": "number"}},
//!         "required": ["id", "amount", "currency"]
//!     })),
//! ).unwrap_err();
//! assert!(err.to_string().contains("/currency"));
//! assert_eq!(registry.compatibility("order.created")?, Compatibility::Backward);
//! # Ok::<(), event_core::Error>(())
//! ```
//!
//! ## What the compatibility checker understands
//!
//! "Reader R can read writer W" is proved keyword by keyword on the
//! [effective schemas](EventSchema::effective_schema) (required fields merged
//! into the JSON Schema): every payload valid under W must be valid under R.
//! The public entry point is [`can_read`].
//!
//! | JSON Schema | rule (R reads W when ...) |
//! |---|---|
//! | unchanged schema or subschema (no `$ref` inside) | always |
//! | local `$ref` (`"#/$defs/money"`, a JSON pointer into the same schema) | resolved: the referenced subschema is checked in its place. Not resolved (so refused when changed): recursive references, references by anchor or URI, `$dynamicRef`/`$recursiveRef`, a `$ref` with a constraining sibling, schemas with an `$id` or `$schema` below the root |
//! | `true`, `{}`, annotation-only subschemas in R | always |
//! | `type` | every type W allows is allowed by R; `integer` widens to `number` (integer→number is safe, number→integer is not) |
//! | `enum`, `const` | every value W allows is valid under R (adding enum values is backward-safe, removing them forward-safe); R restricting to a set W does not have is refused |
//! | `required` (and `required_fields`) | every name R requires, W requires too |
//! | `properties` in both | recursively, R's property schema reads W's |
//! | property only in W | R's `additionalProperties` reads it (`false` in R refuses it) |
//! | property only in R | W's `additionalProperties` must be readable by it: with an open W (`additionalProperties` absent or `true`) R may not constrain the new property (Confluent's open content model rule); with a closed W it is fine |
//! | `additionalProperties` (bool or schema) | R's reads W's; R closing an open W is refused |
//! | `items` (single schema) | recursively |
//! | `anyOf`, `oneOf`, `allOf` alone in a subschema (annotations aside), as in `{"anyOf": [T, {"type": "null"}]}` | W `anyOf`/`oneOf`: R reads every branch; R `allOf`: every branch reads W; R `anyOf`: one branch reads W (a W with a list of types, one type at a time); R `oneOf`: one branch reads W and every other branch declares types disjoint from W's (a `type` beside a `$ref`, in W or in a branch, counts under 2019-09 and 2020-12 only: drafts 6 and 7 ignore it); W `allOf`: one branch is read by R. Beside other keywords, refused when changed |
//! | `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `multipleOf` | R's bound is implied by W's (numbers only matter if W allows numbers); bounds are compared exactly, also beyond 2^53; W's `multipleOf` must be an integer multiple of R's, read as written in decimal |
//! | `minLength`, `maxLength`, `minItems`, `maxItems`, `minProperties`, `maxProperties`, `uniqueItems` | R's bound is implied by W's |
//! | `pattern`, `format`, `contentEncoding`, `contentMediaType` | R's is absent or identical to W's; `contentEncoding` and `contentMediaType` as a pair (where asserted, the media type is checked on the decoded string, and an encoding next to an unknown media type is not checked), so with either in R, W has the same two; `format` and the content keywords also need the same draft (drafts 6 and 7 assert them, 2019-09 and 2020-12 only annotate; no `$schema` is 2020-12, and spellings of one draft's URI, with or without `#`, `http` or `https`, are one draft) |
//! | annotations (`title`, `description`, `default`, `examples`, `$comment`, `$id`, `$defs`, `deprecated`, `readOnly`, `writeOnly`, root `$schema`) and vendor extensions (`x-…`, which validators ignore) | ignored |
//!
//! Anything else in a subschema that changed (an unresolved `$ref`, `allOf`,
//! `anyOf` or `oneOf` beside other keywords, `not`, `if`/`then`/`else`, `patternProperties`,
//! `dependentRequired`, `prefixItems`, tuple `items`, `unevaluated*`, draft-4
//! schemas, ...) is treated conservatively: the evolution is refused with a
//! reason naming the keyword, unless the level is `NONE`. The checker may
//! refuse a change that is in fact safe; it never accepts one it cannot prove.
//! A proof that would take more than 250,000 subschema comparisons (unions
//! are tried branch by branch, which multiplies with nesting) is refused as
//! too complex rather than holding up registration.
//!
//! In practice: with `BACKWARD` you may remove fields, make required fields
//! optional, widen types and add enum values; to add a constrained optional
//! property, the previous version must be closed (`additionalProperties:
//! false`). With `FORWARD`, the mirror image. `FULL` allows only changes
//! safe both ways (adding or removing unconstrained optional fields,
//! annotations).
//!
//! ## Dependencies
//!
//! `jsonschema` is built with `default-features = false`: no HTTP client, no
//! file resolver; remote `$ref`s fail to compile rather than being fetched.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod checker;
mod compatibility;
mod index;
mod memory;
mod registry;
mod required;
mod schema;
mod validate;

pub use checker::{Incompatibility, can_read};
pub use compatibility::Compatibility;
pub use memory::MemorySchemaRegistry;
pub use registry::{RegistryValidator, SchemaRegistry, UnknownTypePolicy, UntypedPolicy};
pub use schema::EventSchema;
