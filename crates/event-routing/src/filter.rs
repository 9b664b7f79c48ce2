//! Trigger filters: which events a trigger receives.
//!
//! A [`TriggerFilter`] combines, with AND:
//!
//! - the original helpers: event type ([`by_type`](TriggerFilter::by_type)),
//!   source ([`by_source`](TriggerFilter::by_source)), subject pattern
//!   ([`by_subject`](TriggerFilter::by_subject), the core
//!   [`SubjectPattern`] with `*` and `>`), and exact metadata attributes
//!   ([`with_attribute`](TriggerFilter::with_attribute));
//! - Knative's `filters` dialects ([`FilterExpr`]): `exact`, `prefix`,
//!   `suffix`, composed with `all`, `any` and `not`.
//!
//! An empty filter matches every event.
//!
//! # Attributes
//!
//! [`FilterExpr`] names attributes as CloudEvents does. `id`, `type`,
//! `source`, `subject` and `category` are the event's fields (`type` is
//! [`Event::event_type`]); any other name is looked up in
//! [`Event::metadata`], and then as `ce-<name>`: the metadata key under
//! which `event-cloudevents` keeps an extension attribute of a CloudEvent
//! from another producer (received by a `WebhookSource`, say), so that a
//! filter on extension `tenant` matches its `tenant` either way. An
//! attribute the event does not have matches no `exact`, `prefix` or
//! `suffix` expression.
//!
//! [`TriggerFilter::with_attribute`] compares a metadata key exactly, with
//! no such fallback; an empty value there matches any value of a key the
//! event has (Knative's `filter.attributes` reading of `""`), while
//! [`FilterExpr`] refuses empty values, as Knative's `filters` do.
//!
//! # Compared with a Knative trigger
//!
//! - The helpers and the expressions all apply (AND). A Knative trigger
//!   with both `filter.attributes` and `filters` ignores `filter`.
//! - `by_type("")` and `by_source("")` select events whose type or source
//!   is empty (an untyped event's type is `""`); of the helpers, only
//!   `with_attribute` reads `""` as any value, as `filter.attributes` does.
//! - An `exact`, `prefix` or `suffix` map may name several attributes (all
//!   must match); Knative allows one per map.
//! - Attribute names are any non-empty string (metadata keys are free-form);
//!   Knative allows lowercase letters and digits only.
//! - There is no `cesql` dialect: reading one is a deserialization error.
//! - The CloudEvents attributes an [`Event`] has no field for
//!   (`specversion`, `time`, `datacontenttype`, `dataschema`) are found only
//!   where a foreign CloudEvent left them in metadata (`ce-<name>`). An
//!   untyped event's `type` is `""` here (sent as a CloudEvent it becomes
//!   `a3s.event`), and a metadata entry is named by its key (`region`), not
//!   by the extension it travels as (`a3smregion`).
//!
//! ```
//! use event_core::Event;
//! use event_routing::{FilterExpr, TriggerFilter};
//!
//! let filter = TriggerFilter::by_subject("events.orders.>")
//!     .with_attribute("region", "eu")
//!     .with_filter(FilterExpr::any([
//!         FilterExpr::prefix("type", "order."),
//!         FilterExpr::not(FilterExpr::suffix("source", "-test")),
//!     ]));
//! let compiled = filter.compile()?;
//!
//! let event = Event::typed("events.orders.created", "orders", "order.created", 1,
//!     "new order", "shop", serde_json::json!({}))
//!     .with_metadata("region", "eu");
//! assert!(compiled.matches(&event));
//! # Ok::<(), event_core::Error>(())
//! ```

use event_core::{Error, Event, Result, SubjectPattern};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Prefix of the metadata keys holding a foreign CloudEvent's extension
/// attributes (`event-cloudevents`' mapping: extension `traceparent` is
/// metadata `ce-traceparent`).
pub(crate) const FOREIGN_PREFIX: &str = "ce-";

/// The value of attribute `name` on `event` (see the module docs), if any.
pub fn attribute<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    match name {
        "id" => Some(&event.id),
        "type" => Some(&event.event_type),
        "source" => Some(&event.source),
        "subject" => Some(&event.subject),
        "category" => Some(&event.category),
        _ => event
            .metadata
            .get(name)
            .or_else(|| {
                // `ce-<name>`, without building the key.
                event
                    .metadata
                    .iter()
                    .find(|(key, _)| key.strip_prefix(FOREIGN_PREFIX) == Some(name))
                    .map(|(_, value)| value)
            })
            .map(String::as_str),
    }
}

/// A Knative filter expression (the CloudEvents Subscriptions API dialects).
///
/// Serialises in Knative's shape, so triggers can be read from configuration:
///
/// ```
/// use event_routing::FilterExpr;
///
/// let expr: FilterExpr = serde_json::from_str(
///     r#"{"all": [{"exact": {"type": "order.created"}},
///                 {"not": {"prefix": {"source": "test-"}}}]}"#,
/// )?;
/// assert_eq!(
///     expr,
///     FilterExpr::all([
///         FilterExpr::exact("type", "order.created"),
///         FilterExpr::not(FilterExpr::prefix("source", "test-")),
///     ])
/// );
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// A map with several entries requires all of them (AND). An object with
/// two dialects, or an unknown dialect (such as Knative's `cesql`), does not
/// deserialize.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterExpr {
    /// Each attribute equals its value exactly.
    Exact(BTreeMap<String, String>),
    /// Each attribute starts with its value.
    Prefix(BTreeMap<String, String>),
    /// Each attribute ends with its value.
    Suffix(BTreeMap<String, String>),
    /// Every nested expression matches.
    All(Vec<FilterExpr>),
    /// At least one nested expression matches.
    Any(Vec<FilterExpr>),
    /// The nested expression does not match.
    Not(Box<FilterExpr>),
}

fn one(attribute: impl Into<String>, value: impl Into<String>) -> BTreeMap<String, String> {
    BTreeMap::from([(attribute.into(), value.into())])
}

impl FilterExpr {
    /// `attribute` equals `value`.
    pub fn exact(attribute: impl Into<String>, value: impl Into<String>) -> Self {
        Self::Exact(one(attribute, value))
    }

    /// `attribute` starts with `prefix`.
    pub fn prefix(attribute: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self::Prefix(one(attribute, prefix))
    }

    /// `attribute` ends with `suffix`.
    pub fn suffix(attribute: impl Into<String>, suffix: impl Into<String>) -> Self {
        Self::Suffix(one(attribute, suffix))
    }

    /// Every expression matches.
    pub fn all(exprs: impl IntoIterator<Item = FilterExpr>) -> Self {
        Self::All(exprs.into_iter().collect())
    }

    /// At least one expression matches.
    pub fn any(exprs: impl IntoIterator<Item = FilterExpr>) -> Self {
        Self::Any(exprs.into_iter().collect())
    }

    /// `expr` does not match.
    #[allow(clippy::should_implement_trait)]
    pub fn not(expr: FilterExpr) -> Self {
        Self::Not(Box::new(expr))
    }

    /// Checks the expression: maps and lists are non-empty, and attribute
    /// names and values are non-empty (Knative refuses an empty value in
    /// `exact`, `prefix` and `suffix` too: an empty prefix or suffix would
    /// match any value). [`Error::InvalidConfig`] otherwise.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Exact(m) | Self::Prefix(m) | Self::Suffix(m) => {
                if m.is_empty() {
                    return Err(Error::invalid_config(
                        format!("filters.{}", self.dialect()),
                        "needs at least one attribute",
                    ));
                }
                if m.keys().any(String::is_empty) {
                    return Err(Error::invalid_config(
                        format!("filters.{}", self.dialect()),
                        "attribute names must not be empty",
                    ));
                }
                if let Some((name, _)) = m.iter().find(|(_, v)| v.is_empty()) {
                    return Err(Error::invalid_config(
                        format!("filters.{}", self.dialect()),
                        format!(
                            "the value for attribute `{name}` must not be empty (to require \
                             only that a metadata attribute is present, use \
                             `TriggerFilter::with_attribute(name, \"\")`)"
                        ),
                    ));
                }
                Ok(())
            }
            Self::All(v) | Self::Any(v) => {
                if v.is_empty() {
                    return Err(Error::invalid_config(
                        format!("filters.{}", self.dialect()),
                        "needs at least one nested expression",
                    ));
                }
                v.iter().try_for_each(Self::validate)
            }
            Self::Not(e) => e.validate(),
        }
    }

    fn dialect(&self) -> &'static str {
        match self {
            Self::Exact(_) => "exact",
            Self::Prefix(_) => "prefix",
            Self::Suffix(_) => "suffix",
            Self::All(_) => "all",
            Self::Any(_) => "any",
            Self::Not(_) => "not",
        }
    }

    /// Whether `event` matches.
    pub fn matches(&self, event: &Event) -> bool {
        match self {
            Self::Exact(m) => m
                .iter()
                .all(|(k, v)| attribute(event, k).is_some_and(|a| a == v)),
            Self::Prefix(m) => m
                .iter()
                .all(|(k, v)| attribute(event, k).is_some_and(|a| a.starts_with(v.as_str()))),
            Self::Suffix(m) => m
                .iter()
                .all(|(k, v)| attribute(event, k).is_some_and(|a| a.ends_with(v.as_str()))),
            Self::All(v) => v.iter().all(|e| e.matches(event)),
            Self::Any(v) => v.iter().any(|e| e.matches(event)),
            Self::Not(e) => !e.matches(event),
        }
    }

    /// Exact `attribute = value` conditions every matching event satisfies
    /// (from `exact` maps, through `all`), for indexing.
    pub(crate) fn required_exact<'a>(&'a self, out: &mut Vec<(&'a str, &'a str)>) {
        match self {
            Self::Exact(m) => out.extend(m.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            Self::All(v) => v.iter().for_each(|e| e.required_exact(out)),
            _ => {}
        }
    }
}

/// Which events a trigger receives: type, source, subject pattern, metadata
/// attributes and Knative filter expressions, all combined with AND.
///
/// A plain description; [`compile`](Self::compile) validates it (the subject
/// pattern, the expressions) into a [`CompiledFilter`] that matches without
/// allocating. [`Broker::add_trigger`](crate::Broker::add_trigger) compiles
/// it for you.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerFilter {
    event_type: Option<String>,
    source: Option<String>,
    subject: Option<String>,
    attributes: BTreeMap<String, String>,
    filters: Vec<FilterExpr>,
}

impl TriggerFilter {
    /// A filter that matches every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Events whose [`event_type`](Event::event_type) is `event_type`.
    pub fn by_type(event_type: impl Into<String>) -> Self {
        Self::default().with_type(event_type)
    }

    /// Events whose source is `source`.
    pub fn by_source(source: impl Into<String>) -> Self {
        Self::default().with_source(source)
    }

    /// Events whose subject matches `pattern` (`*` and `>` wildcards).
    pub fn by_subject(pattern: impl Into<String>) -> Self {
        Self::default().with_subject(pattern)
    }

    /// Also requires the event type `event_type`.
    #[must_use]
    pub fn with_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }

    /// Also requires the source `source`.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Also requires a subject matching `pattern`.
    #[must_use]
    pub fn with_subject(mut self, pattern: impl Into<String>) -> Self {
        self.subject = Some(pattern.into());
        self
    }

    /// Also requires metadata `key` to equal `value`, or, when `value` is
    /// empty, only that the event has metadata `key` (any value), as
    /// Knative's `filter.attributes` reads `""`.
    #[must_use]
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// Also requires the Knative expression `expr`.
    #[must_use]
    pub fn with_filter(mut self, expr: FilterExpr) -> Self {
        self.filters.push(expr);
        self
    }

    /// The required event type, if any.
    pub fn event_type(&self) -> Option<&str> {
        self.event_type.as_deref()
    }

    /// The required source, if any.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// The subject pattern, if any.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The required metadata attributes.
    pub fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }

    /// The Knative expressions.
    pub fn filters(&self) -> &[FilterExpr] {
        &self.filters
    }

    /// Validates and compiles the filter: a bad subject pattern is
    /// [`Error::InvalidSubject`], a bad expression [`Error::InvalidConfig`].
    pub fn compile(&self) -> Result<CompiledFilter> {
        let subject = self
            .subject
            .as_deref()
            .map(SubjectPattern::parse)
            .transpose()?;
        self.filters.iter().try_for_each(FilterExpr::validate)?;
        if self.attributes.keys().any(String::is_empty) {
            return Err(Error::invalid_config(
                "attributes",
                "attribute names must not be empty",
            ));
        }
        Ok(CompiledFilter {
            event_type: self.event_type.as_deref().map(Into::into),
            source: self.source.as_deref().map(Into::into),
            subject,
            attributes: self
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
            filters: self.filters.clone().into_boxed_slice(),
        })
    }
}

/// A validated [`TriggerFilter`]; [`matches`](Self::matches) does not
/// allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFilter {
    event_type: Option<Box<str>>,
    source: Option<Box<str>>,
    subject: Option<SubjectPattern>,
    attributes: Box<[(Box<str>, Box<str>)]>,
    filters: Box<[FilterExpr]>,
}

impl CompiledFilter {
    /// Whether `event` matches every condition.
    pub fn matches(&self, event: &Event) -> bool {
        self.event_type
            .as_deref()
            .is_none_or(|t| t == event.event_type)
            && self.source.as_deref().is_none_or(|s| s == event.source)
            && self
                .subject
                .as_ref()
                .is_none_or(|p| p.matches(&event.subject))
            && self.attributes.iter().all(|(k, v)| {
                event
                    .metadata
                    .get(&**k)
                    .is_some_and(|value| v.is_empty() || value == &**v)
            })
            && self.filters.iter().all(|f| f.matches(event))
    }

    /// Every index key this filter could be filed under: each an exact
    /// condition every matching event satisfies, in the order the index
    /// prefers them when they are equally rare (exact type, the subject's
    /// literal tokens from the last, exact source, exact attributes, exact
    /// expression attributes). Empty when it has none.
    pub(crate) fn index_keys(&self) -> Vec<IndexKey> {
        let mut exact = Vec::new();
        for f in self.filters.iter() {
            f.required_exact(&mut exact);
        }
        let found = |name: &'static str| {
            exact
                .iter()
                .filter(move |(k, _)| *k == name)
                .map(|(_, v)| Box::<str>::from(*v))
        };
        let mut keys = Vec::new();
        keys.extend(self.event_type.iter().cloned().map(IndexKey::Type));
        keys.extend(found("type").map(IndexKey::Type));
        if let Some(p) = &self.subject {
            // the last literal token is the most specific one
            keys.extend((0..p.as_str().split('.').count()).rev().filter_map(|i| {
                p.literal_token(i)
                    .map(|t| IndexKey::SubjectToken(i, t.into()))
            }));
        }
        for subject in found("subject") {
            // an exact subject: every token is a literal
            let tokens: Vec<&str> = subject.split('.').collect();
            keys.extend(
                tokens
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(i, t)| IndexKey::SubjectToken(i, (*t).into())),
            );
        }
        keys.extend(self.source.iter().cloned().map(IndexKey::Source));
        keys.extend(found("source").map(IndexKey::Source));
        // not an attribute with an empty value (any value matches it)
        keys.extend(
            self.attributes
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| IndexKey::Attribute(k.clone(), v.clone())),
        );
        keys.extend(
            exact
                .iter()
                .filter(|(k, _)| !matches!(*k, "id" | "category" | "type" | "source" | "subject"))
                .map(|(k, v)| IndexKey::Extension((*k).into(), (*v).into())),
        );
        keys
    }
}

/// Where the trigger index files a filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum IndexKey {
    /// Exact event type.
    Type(Box<str>),
    /// Literal subject token at a position.
    SubjectToken(usize, Box<str>),
    /// Exact source.
    Source(Box<str>),
    /// Exact metadata attribute.
    Attribute(Box<str>, Box<str>),
    /// Exact attribute of a Knative expression: metadata `name`, or
    /// `ce-<name>` (see [`attribute`]).
    Extension(Box<str>, Box<str>),
}
