//! The [`SchemaRegistry`] trait and the validation policies.

use crate::compatibility::Compatibility;
use crate::schema::EventSchema;
use event_core::{Event, Result, SchemaValidator};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What validation does with a typed event whose type (or type and version)
/// has no registered schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UnknownTypePolicy {
    /// Let it through unvalidated (the original `a3s-event` behaviour).
    #[default]
    Allow,
    /// Refuse it with [`Error::SchemaValidation`](event_core::Error::SchemaValidation).
    Reject,
}

/// What validation does with an untyped event (an empty or blank
/// `event_type`: only whitespace, which no schema can be registered under).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UntypedPolicy {
    /// Let it through unvalidated (the original behaviour: only typed events
    /// are validated).
    #[default]
    Allow,
    /// Refuse it: every published event must carry a type.
    Reject,
}

/// A registry of event schemas: one [`EventSchema`] per event type and
/// version, with compatibility enforced when a version is registered.
///
/// # Contract
///
/// - **Register** ([`register`](Self::register)) checks the definition
///   (non-empty type, version ≥ 1, a JSON Schema that compiles), then checks
///   the new version against the earlier ones under the type's
///   [`Compatibility`] level, and stores it only if everything passes; a
///   failure is [`Error::Schema`](event_core::Error::Schema) whose reason names
///   the field or rule that broke. Versions of a type are registered in
///   increasing order (gaps allowed). Registered schemas are immutable:
///   registering the same type and version again is a no-op when the
///   definition is identical and an error otherwise.
/// - **Validate** ([`validate`](Self::validate)) is the publish-time check:
///   `Ok(())` or [`Error::SchemaValidation`](event_core::Error::SchemaValidation)
///   naming the event type, version and a JSON pointer into the payload.
///   Untyped events and unknown types follow the registry's
///   [`UntypedPolicy`] and [`UnknownTypePolicy`].
/// - **Compatibility** levels are per type, falling back to the
///   registry-wide default ([`Compatibility::Backward`] unless set). Changing a
///   level applies to later registrations; existing versions are not
///   re-checked (as in Confluent Schema Registry).
/// - All methods take `&self` and may be called concurrently.
///
/// Implementations should also implement [`SchemaValidator`] so the event bus
/// can use them (or wrap them in [`RegistryValidator`]).
pub trait SchemaRegistry: Send + Sync {
    /// Registers `schema` (see the contract).
    fn register(&self, schema: EventSchema) -> Result<()>;

    /// The schema of `event_type` at `version`, if registered.
    fn get(&self, event_type: &str, version: u32) -> Result<Option<EventSchema>>;

    /// The highest registered version of `event_type`.
    fn latest_version(&self, event_type: &str) -> Result<Option<u32>>;

    /// Every event type with at least one registered version, sorted.
    fn list_types(&self) -> Result<Vec<String>>;

    /// Validates `event`'s payload against the schema of its type and version.
    fn validate(&self, event: &Event) -> Result<()>;

    /// Checks the registered `new_version` of `event_type` against its earlier
    /// versions under `mode` (the previous version, or every earlier one for
    /// the transitive levels). `Ok(())` when there is no earlier version;
    /// [`Error::NotFound`](event_core::Error::NotFound) when `new_version` is
    /// not registered; [`Error::Schema`](event_core::Error::Schema) naming the
    /// broken rule otherwise.
    fn check_compatibility(
        &self,
        event_type: &str,
        new_version: u32,
        mode: Compatibility,
    ) -> Result<()>;

    /// Checks `candidate` as [`register`](Self::register) would, without
    /// registering it (Confluent's "test compatibility"): `Ok(())` exactly
    /// when registering it now would succeed. It is checked against the
    /// registered versions of its type older than it, under the type's
    /// configured level; a version older than the latest, or a registered
    /// version with another definition, is refused as `register` refuses it.
    fn test_compatibility(&self, candidate: &EventSchema) -> Result<()>;

    /// Sets the compatibility level of one event type.
    fn set_compatibility(&self, event_type: &str, level: Compatibility) -> Result<()>;

    /// Sets the registry-wide default level, used by types without their own.
    fn set_default_compatibility(&self, level: Compatibility) -> Result<()>;

    /// The level that applies to `event_type` (its own, or the default).
    fn compatibility(&self, event_type: &str) -> Result<Compatibility>;
}

/// Adapts any [`SchemaRegistry`] to the bus's [`SchemaValidator`] hook.
///
/// [`MemorySchemaRegistry`](crate::MemorySchemaRegistry) implements
/// [`SchemaValidator`] itself; this is for an `Arc<dyn SchemaRegistry>` or a
/// third-party registry that does not.
#[derive(Clone)]
pub struct RegistryValidator<R: ?Sized>(pub Arc<R>);

impl<R: ?Sized> std::fmt::Debug for RegistryValidator<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryValidator")
    }
}

impl<R: SchemaRegistry + ?Sized> SchemaValidator for RegistryValidator<R> {
    fn validate(&self, event: &Event) -> Result<()> {
        SchemaRegistry::validate(&*self.0, event)
    }
}
