//! [`MemorySchemaRegistry`]: the in-process registry.

use crate::checker::check_evolution;
use crate::compatibility::Compatibility;
use crate::index::TypeIndex;
use crate::registry::{SchemaRegistry, UnknownTypePolicy, UntypedPolicy};
use crate::schema::EventSchema;
use crate::validate::{CompiledSchema, validation_error};
use event_core::{Error, Event, Result, SchemaValidator};
use parking_lot::RwLock;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// An in-memory [`SchemaRegistry`]: schemas live in the process and are lost
/// on restart (register them at startup).
///
/// Each JSON Schema is compiled once, at registration. The registry's state
/// is an immutable snapshot replaced on every change (copy on write):
/// validation finds the compiled schema by type and version without
/// allocating and without taking a lock or touching a shared cache line in
/// the common case (each thread keeps the snapshot it last used, tagged with
/// the registry's generation, and refreshes it when the registry changed).
/// Each snapshot carries a lookup table built for validation (a half-full
/// open-addressing table keyed by the type name's length and first and last
/// eight bytes, so that names of up to 16 bytes are found without hashing
/// the whole name or calling `memcmp`). Schemas with required fields and no
/// JSON Schema are checked without `jsonschema`, by one merge of the
/// payload's sorted keys with the sorted names.
/// Registration is serialised (check and swap happen under one write lock,
/// so two racing registrations cannot both pass a check against a stale
/// latest version). A change copies the snapshot's pointers, one per
/// registered type, and updates the lookup table for the changed types
/// only; register many schemas at start-up with
/// [`register_all`](Self::register_all), one change for the whole batch,
/// all or nothing. A thread keeps the last snapshot it used alive until it
/// validates against a registry again or exits.
///
/// ```
/// use event_schema::{EventSchema, MemorySchemaRegistry, SchemaRegistry, UnknownTypePolicy};
/// use event_core::Event;
/// use serde_json::json;
///
/// let registry = MemorySchemaRegistry::new().with_unknown_type_policy(UnknownTypePolicy::Reject);
/// registry.register(EventSchema::new("user.created", 1).with_required_fields(["id"]))?;
///
/// let ok = Event::typed("events.user.created", "user", "user.created", 1, "new user", "auth",
///     json!({"id": "u1"}));
/// registry.validate(&ok)?;
///
/// let missing = Event::typed("events.user.created", "user", "user.created", 1, "new user", "auth",
///     json!({"name": "x"}));
/// assert!(registry.validate(&missing).is_err());
/// # Ok::<(), event_core::Error>(())
/// ```
#[derive(Debug)]
pub struct MemorySchemaRegistry {
    /// Unique per registry instance (tags the per-thread snapshot cache).
    id: u64,
    /// Bumped after every change to `inner`.
    generation: AtomicU64,
    inner: RwLock<Arc<Inner>>,
    unknown_types: UnknownTypePolicy,
    untyped: UntypedPolicy,
}

impl Default for MemorySchemaRegistry {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            inner: RwLock::new(Arc::new(Inner::default())),
            unknown_types: UnknownTypePolicy::default(),
            untyped: UntypedPolicy::default(),
        }
    }
}

/// The snapshot a thread last validated with.
struct CachedSnapshot {
    registry: u64,
    generation: u64,
    snapshot: Arc<Inner>,
}

thread_local! {
    static SNAPSHOT: RefCell<Option<CachedSnapshot>> = const { RefCell::new(None) };
}

#[derive(Debug, Default, Clone)]
struct Inner {
    /// Shared, so that a copy of the state clones pointers, not each type's
    /// name and versions.
    types: HashMap<Arc<str>, Arc<TypeEntry>>,
    default_level: Compatibility,
    /// The versions in `types` laid out for validation; kept in step by
    /// [`Inner::with_entries`], the only change that touches versions.
    index: TypeIndex,
}

/// Where a schema being registered goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// A version not registered yet, after every registered one.
    New,
    /// Exactly this definition is registered already.
    AlreadyRegistered,
}

#[derive(Debug, Default, Clone)]
struct TypeEntry {
    versions: BTreeMap<u32, Arc<CompiledSchema>>,
    level: Option<Compatibility>,
}

impl Inner {
    /// This state with the entries of `changed` in place of (or beside) its
    /// own, its validation index updated for those types only.
    fn with_entries(&self, changed: HashMap<Arc<str>, TypeEntry>) -> Self {
        let index = self.index.with_types(changed.iter().map(|(name, entry)| {
            (
                &**name,
                entry
                    .versions
                    .iter()
                    .map(|(version, compiled)| (*version, compiled)),
            )
        }));
        let mut types = self.types.clone();
        for (name, entry) in changed {
            types.insert(name, Arc::new(entry));
        }
        Self {
            types,
            default_level: self.default_level,
            index,
        }
    }

    fn level_for(&self, event_type: &str) -> Compatibility {
        self.types
            .get(event_type)
            .and_then(|t| t.level)
            .unwrap_or(self.default_level)
    }
}

fn schema_error(event_type: &str, version: u32, reason: impl Into<String>) -> Error {
    Error::Schema {
        event_type: event_type.to_owned(),
        version,
        reason: reason.into(),
    }
}

impl MemorySchemaRegistry {
    /// An empty registry: unknown types and untyped events allowed, default
    /// compatibility `BACKWARD`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the policy for typed events without a registered schema.
    #[must_use]
    pub fn with_unknown_type_policy(mut self, policy: UnknownTypePolicy) -> Self {
        self.unknown_types = policy;
        self
    }

    /// Sets the policy for untyped events.
    #[must_use]
    pub fn with_untyped_policy(mut self, policy: UntypedPolicy) -> Self {
        self.untyped = policy;
        self
    }

    /// Sets the registry-wide default compatibility level.
    #[must_use]
    pub fn with_default_compatibility(self, level: Compatibility) -> Self {
        self.update(|inner| {
            inner.default_level = level;
            Ok(())
        })
        .unwrap_or_default();
        self
    }

    /// Applies `change` to a copy of the state and publishes the copy, only
    /// if `change` succeeds. `change` must not add or remove versions (the
    /// copy keeps the validation index as it is): those go through
    /// [`register_all`](Self::register_all).
    fn update<R>(&self, change: impl FnOnce(&mut Inner) -> Result<R>) -> Result<R> {
        let mut current = self.inner.write();
        let mut next = Inner::clone(&current);
        let out = change(&mut next)?;
        *current = Arc::new(next);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(out)
    }

    /// Registers `schemas` in their order, all or nothing: each is checked
    /// as [`register`](SchemaRegistry::register) would check it against the
    /// registry holding the ones before it, and the batch is published in
    /// one change (a concurrent [`validate`](Self::validate) sees all of it
    /// or none of it).
    ///
    /// The first schema `register` would refuse refuses the whole batch with
    /// the error `register` would give for it, and nothing is registered. A
    /// definition already registered, or earlier in the batch, is skipped,
    /// as `register` skips it; so does an empty batch, which changes
    /// nothing. The versions of one type go in increasing order, and each is
    /// checked against its type's earlier versions, the batch's included,
    /// under the type's compatibility level.
    ///
    /// Cost: every schema is compiled before the registry is locked; then
    /// the registry's state is copied once, whatever the batch's length
    /// (a copy of pointers, one per registered type, plus the new entries).
    /// Registering many types this way at start-up costs one such copy,
    /// where [`register`](SchemaRegistry::register) makes one per schema.
    ///
    /// ```
    /// use event_core::Event;
    /// use event_schema::{EventSchema, MemorySchemaRegistry, SchemaRegistry};
    /// use serde_json::json;
    ///
    /// let registry = MemorySchemaRegistry::new(); // BACKWARD by default
    /// registry.register_all([
    ///     EventSchema::new("user.created", 1).with_required_fields(["id"]),
    ///     EventSchema::new("user.created", 2).with_required_fields(["id"]),
    ///     EventSchema::new("order.placed", 1).with_required_fields(["id", "amount"]),
    /// ])?;
    /// assert_eq!(registry.versions("user.created"), vec![1, 2]);
    /// registry.validate(&Event::typed("events.shop", "shop", "order.placed", 1,
    ///     "order", "shop", json!({"id": "o-1", "amount": 3})))?;
    ///
    /// // v3 adds a required field: BACKWARD refuses it, so the batch
    /// // registers nothing, not even the type before it.
    /// let refused = registry.register_all([
    ///     EventSchema::new("invoice.sent", 1),
    ///     EventSchema::new("user.created", 3).with_required_fields(["id", "email"]),
    /// ]);
    /// assert!(matches!(refused, Err(event_core::Error::Schema { version: 3, .. })));
    /// assert_eq!(registry.latest_version("invoice.sent")?, None);
    /// # Ok::<(), event_core::Error>(())
    /// ```
    pub fn register_all(&self, schemas: impl IntoIterator<Item = EventSchema>) -> Result<()> {
        // Compile outside the lock: it is the expensive part. A definition
        // that does not compile is reported only if every one before it
        // passes, so the error is the one registering them in order gives.
        let mut compiled = Vec::new();
        let mut refused = None;
        for schema in schemas {
            match CompiledSchema::new(schema) {
                Ok(schema) => compiled.push(schema),
                Err(error) => {
                    refused = Some(error);
                    break;
                }
            }
        }
        let mut current = self.inner.write();
        let changed = Self::place_all(&current, compiled)?;
        if let Some(error) = refused {
            return Err(error);
        }
        if changed.is_empty() {
            return Ok(());
        }
        *current = Arc::new(current.with_entries(changed));
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The entries of the types `schemas` add versions to, once each schema
    /// is added, in order, to `inner` with the ones before it: checked for
    /// placement, then against the type's earlier versions under its level
    /// (skipped when exactly that definition is there already). The first
    /// refusal otherwise. `inner` is not changed.
    fn place_all(
        inner: &Inner,
        schemas: Vec<CompiledSchema>,
    ) -> Result<HashMap<Arc<str>, TypeEntry>> {
        let mut changed: HashMap<Arc<str>, TypeEntry> = HashMap::new();
        for compiled in schemas {
            let schema = &compiled.schema;
            let name = schema.event_type.as_str();
            let entry = changed
                .get(name)
                .or_else(|| inner.types.get(name).map(|t| &**t));
            if Self::check_placement(entry, schema)? == Placement::AlreadyRegistered {
                continue;
            }
            Self::check_candidate(entry, inner.level_for(name), schema)?;
            if !changed.contains_key(name) {
                let registered = inner.types.get_key_value(name);
                let key = registered.map_or_else(|| Arc::from(name), |(key, _)| Arc::clone(key));
                let entry = registered.map(|(_, t)| TypeEntry::clone(t));
                changed.insert(key, entry.unwrap_or_default());
            }
            let version = schema.version;
            if let Some(entry) = changed.get_mut(name) {
                entry.versions.insert(version, Arc::new(compiled));
            }
        }
        Ok(changed)
    }

    /// Runs `f` on the current snapshot: the calling thread's cached one when
    /// it is still current, otherwise a fresh one (cached for next time).
    #[inline]
    fn with_snapshot<R>(&self, f: impl Fn(&Inner) -> R) -> R {
        // Loaded before the snapshot is read: a snapshot tagged with an older
        // generation than it is only causes one extra refresh.
        let generation = self.generation.load(Ordering::Acquire);
        SNAPSHOT
            .try_with(|cell| {
                let Ok(mut slot) = cell.try_borrow_mut() else {
                    // Re-entered on this thread (not done by this crate): bypass the cache.
                    return f(&self.inner.read());
                };
                if let Some(cached) = slot
                    .as_ref()
                    .filter(|c| c.registry == self.id && c.generation == generation)
                {
                    return f(&cached.snapshot);
                }
                f(self.refresh(&mut slot, generation))
            })
            // The cache is already destroyed (called from another thread
            // local's destructor as the thread exits): bypass it.
            .unwrap_or_else(|_| f(&self.inner.read()))
    }

    /// Replaces the thread's cached snapshot with the current one.
    #[cold]
    #[inline(never)]
    fn refresh<'a>(&self, slot: &'a mut Option<CachedSnapshot>, generation: u64) -> &'a Inner {
        &slot
            .insert(CachedSnapshot {
                registry: self.id,
                generation,
                snapshot: Arc::clone(&self.inner.read()),
            })
            .snapshot
    }

    /// The policy for typed events without a registered schema.
    pub fn unknown_type_policy(&self) -> UnknownTypePolicy {
        self.unknown_types
    }

    /// The policy for untyped events.
    pub fn untyped_policy(&self) -> UntypedPolicy {
        self.untyped
    }

    /// The registered versions of `event_type`, ascending.
    pub fn versions(&self, event_type: &str) -> Vec<u32> {
        self.inner
            .read()
            .types
            .get(event_type)
            .map(|t| t.versions.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Validates `event` (same as [`SchemaRegistry::validate`]; an inherent
    /// method so that calls are unambiguous when both [`SchemaRegistry`] and
    /// [`SchemaValidator`] are in scope).
    pub fn validate(&self, event: &Event) -> Result<()> {
        // blank counts as untyped: no such type can be registered
        if event.event_type.trim().is_empty() {
            return self.validate_untyped(event);
        }
        // The closure returns one word: `Error` is large, and moving it out
        // of the thread-local access on every call cost more than the lookup.
        self.with_snapshot(
            |inner| match inner.index.get(&event.event_type, event.version) {
                Some(compiled) if compiled.is_valid(&event.payload) => Ok(()),
                Some(compiled) => Err(Box::new(compiled.error(event))),
                None if self.unknown_types == UnknownTypePolicy::Allow => Ok(()),
                None => Err(Box::new(Self::unknown_type_error(inner, event))),
            },
        )
        .map_err(|error| *error)
    }

    /// [`validate`](Self::validate) for an event without a type (empty or
    /// blank).
    fn validate_untyped(&self, event: &Event) -> Result<()> {
        match self.untyped {
            UntypedPolicy::Allow => Ok(()),
            UntypedPolicy::Reject => Err(validation_error(
                event,
                String::new(),
                "untyped event refused: this registry requires an event type \
                 (UntypedPolicy::Reject)"
                    .to_owned(),
            )),
        }
    }

    /// The refusal of a typed event without a schema, under
    /// [`UnknownTypePolicy::Reject`].
    #[cold]
    #[inline(never)]
    fn unknown_type_error(inner: &Inner, event: &Event) -> Error {
        let entry = inner.types.get(event.event_type.as_str());
        let reason = match entry.filter(|t| !t.versions.is_empty()) {
            None => format!(
                "no schema is registered for event type `{}` \
                 (UnknownTypePolicy::Reject)",
                event.event_type
            ),
            Some(t) => format!(
                "event type `{}` has no schema version {} (registered: {:?}; \
                 UnknownTypePolicy::Reject)",
                event.event_type,
                event.version,
                t.versions.keys().collect::<Vec<_>>()
            ),
        };
        validation_error(event, String::new(), reason)
    }

    /// Whether `schema` may be added to `entry` (the registered versions of
    /// its type): not older than the latest version, and, if its version is
    /// registered, identical to it (registered schemas are immutable).
    fn check_placement(entry: Option<&TypeEntry>, schema: &EventSchema) -> Result<Placement> {
        let Some(t) = entry else {
            return Ok(Placement::New);
        };
        if let Some(existing) = t.versions.get(&schema.version) {
            if existing.schema == *schema {
                return Ok(Placement::AlreadyRegistered);
            }
            return Err(schema_error(
                &schema.event_type,
                schema.version,
                "this version is already registered with a different definition; \
                 registered schemas are immutable, register a new version",
            ));
        }
        if let Some((&latest, _)) = t.versions.last_key_value()
            && latest > schema.version
        {
            return Err(schema_error(
                &schema.event_type,
                schema.version,
                format!(
                    "version {} is older than the latest registered version {latest}; \
                         register versions in increasing order",
                    schema.version
                ),
            ));
        }
        Ok(Placement::New)
    }

    /// Checks `candidate` against the earlier versions in `entry` under
    /// `level`, and that it may be added after them.
    fn check_candidate(
        entry: Option<&TypeEntry>,
        level: Compatibility,
        candidate: &EventSchema,
    ) -> Result<()> {
        let earlier: Vec<&EventSchema> = entry
            .map(|t| {
                t.versions
                    .range(..candidate.version)
                    .map(|(_, c)| &c.schema)
                    .collect()
            })
            .unwrap_or_default();
        check_evolution(level, candidate, &earlier)
            .map_err(|reason| schema_error(&candidate.event_type, candidate.version, reason))
    }
}

impl SchemaRegistry for MemorySchemaRegistry {
    /// Registers `schema` (see the [contract](SchemaRegistry#contract)):
    /// [`register_all`](MemorySchemaRegistry::register_all) with one schema.
    ///
    /// Cost: each registration that adds a version copies the registry's
    /// state (pointers, one per registered type), so registering `n` types
    /// one by one costs `n²` pointer copies; register them at start-up in
    /// one [`register_all`](MemorySchemaRegistry::register_all) batch.
    fn register(&self, schema: EventSchema) -> Result<()> {
        self.register_all([schema])
    }

    fn get(&self, event_type: &str, version: u32) -> Result<Option<EventSchema>> {
        Ok(self
            .inner
            .read()
            .types
            .get(event_type)
            .and_then(|t| t.versions.get(&version))
            .map(|c| c.schema.clone()))
    }

    fn latest_version(&self, event_type: &str) -> Result<Option<u32>> {
        Ok(self
            .inner
            .read()
            .types
            .get(event_type)
            .and_then(|t| t.versions.last_key_value())
            .map(|(v, _)| *v))
    }

    fn list_types(&self) -> Result<Vec<String>> {
        let mut types: Vec<String> = self
            .inner
            .read()
            .types
            .iter()
            .filter(|(_, t)| !t.versions.is_empty())
            .map(|(name, _)| name.to_string())
            .collect();
        types.sort();
        Ok(types)
    }

    fn validate(&self, event: &Event) -> Result<()> {
        MemorySchemaRegistry::validate(self, event)
    }

    fn check_compatibility(
        &self,
        event_type: &str,
        new_version: u32,
        mode: Compatibility,
    ) -> Result<()> {
        let inner = self.inner.read();
        let entry = inner.types.get(event_type).map(|t| &**t);
        let Some(candidate) = entry.and_then(|t| t.versions.get(&new_version)) else {
            return Err(Error::NotFound {
                kind: "schema",
                name: format!("{event_type} v{new_version}"),
            });
        };
        Self::check_candidate(entry, mode, &candidate.schema)
    }

    fn test_compatibility(&self, candidate: &EventSchema) -> Result<()> {
        // The definition must be registrable too.
        let compiled = CompiledSchema::new(candidate.clone())?;
        Self::place_all(&self.inner.read(), vec![compiled]).map(|_| ())
    }

    fn set_compatibility(&self, event_type: &str, level: Compatibility) -> Result<()> {
        if event_type.trim().is_empty() {
            return Err(Error::invalid_config(
                "event_type",
                "cannot set a compatibility level for an empty event type",
            ));
        }
        self.update(|inner| {
            let entry = inner.types.entry(Arc::from(event_type)).or_default();
            Arc::make_mut(entry).level = Some(level);
            Ok(())
        })
    }

    fn set_default_compatibility(&self, level: Compatibility) -> Result<()> {
        self.update(|inner| {
            inner.default_level = level;
            Ok(())
        })
    }

    fn compatibility(&self, event_type: &str) -> Result<Compatibility> {
        Ok(self.inner.read().level_for(event_type))
    }
}

impl SchemaValidator for MemorySchemaRegistry {
    fn validate(&self, event: &Event) -> Result<()> {
        MemorySchemaRegistry::validate(self, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(registry: &MemorySchemaRegistry) -> u64 {
        registry.generation.load(Ordering::Acquire)
    }

    #[test]
    fn a_batch_is_one_change_and_a_batch_changing_nothing_is_none() {
        let registry = MemorySchemaRegistry::new();
        let v1 = EventSchema::new("t", 1).with_required_fields(["a"]);
        let start = generation(&registry);
        registry.register_all([]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(generation(&registry), start);
        registry
            .register_all([
                v1.clone(),
                EventSchema::new("t", 2).with_required_fields(["a"]),
                EventSchema::new("u", 1),
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(generation(&registry), start + 1);
        // Already registered, twice: no change.
        registry
            .register_all([v1.clone(), v1])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(generation(&registry), start + 1);
        // Refused: no change.
        assert!(
            registry
                .register_all([EventSchema::new("w", 1), EventSchema::new("t", 1)])
                .is_err()
        );
        assert_eq!(generation(&registry), start + 1);
        assert_eq!(registry.versions("w"), Vec::<u32>::new());
    }
}
