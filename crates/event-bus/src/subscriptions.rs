//! Managed subscriptions: filters, options, state persistence, creation.

use crate::bus::EventBus;
use crate::metrics::EventMetrics;
use crate::naming::durable_consumer_name;
use crate::state::DEFAULT_STATE_STORE_TIMEOUT;
use crate::subscription::{BusSubscription, DlqLimits, Membership, changed_ids, detached};
use event_core::subject::{validate_filter, validate_filter_for_prefix};
use event_core::{
    Error, Result, StateStore, SubscribeOptions, Subscription, SubscriptionFilter,
    SubscriptionRecord,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;

/// One subscriber's change in an update: its filter, and its options
/// (`None`: keep the subscriber's current ones).
type Upsert = (SubscriptionFilter, Option<Option<SubscribeOptions>>);

/// The bus's subscriptions and the store that persists them. Guarded by one
/// async mutex held across the save, so saves land in change order.
pub(crate) struct SubState {
    records: BTreeMap<String, SubscriptionRecord>,
    store: Option<Arc<dyn StateStore>>,
    /// How long a `load` or `save` of `store` may take.
    store_timeout: Duration,
    /// Subscribers whose options were kept, never set, since they were
    /// added before any state store: `set_state_store` gives them their
    /// stored options (see there).
    options_kept: BTreeSet<String>,
    /// Per subscriber, per subject: the stamp of the subject's membership,
    /// new whenever the subject is added (again) or its durability
    /// changes, kept by changes that keep both. A subscription opened
    /// under one stamp ends once its subject has another, even if the
    /// subscriber was removed and added back before it looked.
    stamps: HashMap<String, HashMap<String, u64>>,
    /// The next stamp given (from 1).
    next_stamp: u64,
}

impl SubState {
    /// Whether subscriber `id` (still) has `subject`, with this durability,
    /// under `stamp` (see [`stamp`](Self::stamp)): not dropped or switched
    /// and given back since.
    pub(crate) fn covers(&self, id: &str, subject: &str, durable: bool, stamp: u64) -> bool {
        self.records.get(id).is_some_and(|r| {
            r.filter.durable == durable && r.filter.subjects.iter().any(|s| s == subject)
        }) && self.stamp(id, subject) == stamp
    }

    /// The stamp of `subject` in subscriber `id`'s current record.
    pub(crate) fn stamp(&self, id: &str, subject: &str) -> u64 {
        self.stamps
            .get(id)
            .and_then(|stamps| stamps.get(subject))
            .copied()
            .unwrap_or(0)
    }

    /// Stamps the subjects of `id`'s current record (none if it is gone),
    /// keeping the stamps of those `previous` (its record before the
    /// change) had with the same durability.
    fn restamp(&mut self, id: &str, previous: Option<&SubscriptionRecord>) {
        let Some(now) = self.records.get(id) else {
            self.stamps.remove(id);
            return;
        };
        let old = self.stamps.remove(id).unwrap_or_default();
        let mut stamps = HashMap::with_capacity(now.filter.subjects.len());
        for subject in &now.filter.subjects {
            let kept = previous.is_some_and(|p| {
                p.filter.durable == now.filter.durable && p.filter.subjects.contains(subject)
            });
            let stamp = match old.get(subject) {
                Some(&stamp) if kept => stamp,
                _ => {
                    let stamp = self.next_stamp;
                    self.next_stamp += 1;
                    stamp
                }
            };
            stamps.insert(subject.clone(), stamp);
        }
        self.stamps.insert(id.to_owned(), stamps);
    }

    fn snapshot(records: &BTreeMap<String, SubscriptionRecord>) -> Vec<SubscriptionRecord> {
        records.values().cloned().collect()
    }

    /// Makes `change` to the records: on a copy that replaces them once the
    /// state store saved it, so a save that fails, panics or is cut off
    /// (its runtime shut down) changes nothing; in place when there is no
    /// store (nothing can fail, and a change costs O(log n) instead of a
    /// copy of every record). A failed save counts in `metrics`.
    async fn apply(
        &mut self,
        metrics: &EventMetrics,
        change: impl FnOnce(&mut BTreeMap<String, SubscriptionRecord>),
    ) -> Result<()> {
        let Some(store) = &self.store else {
            change(&mut self.records);
            return Ok(());
        };
        let mut next = self.records.clone();
        change(&mut next);
        save_to(
            &**store,
            &Self::snapshot(&next),
            self.store_timeout,
            metrics,
        )
        .await?;
        self.records = next;
        Ok(())
    }
}

impl Default for SubState {
    fn default() -> Self {
        Self {
            records: BTreeMap::new(),
            store: None,
            store_timeout: DEFAULT_STATE_STORE_TIMEOUT,
            options_kept: BTreeSet::new(),
            stamps: HashMap::new(),
            next_stamp: 1,
        }
    }
}

/// Saves `records` to `store` within `limit`. A save that fails (an error,
/// the time limit, a panic, or cut off by its runtime's shutdown) is logged
/// and counted in `metrics` (`state_save_errors`).
async fn save_to(
    store: &dyn StateStore,
    records: &[SubscriptionRecord],
    limit: Duration,
    metrics: &EventMetrics,
) -> Result<()> {
    /// Counts the save while it has not returned: if it never does (it
    /// panicked, or its task was dropped), it failed.
    struct Unfinished<'a>(Option<&'a EventMetrics>);
    impl Drop for Unfinished<'_> {
        fn drop(&mut self) {
            if let Some(metrics) = self.0 {
                metrics.add_state_save_error(1);
                tracing::warn!(
                    "saving subscription state panicked or was cut off; the change is not applied"
                );
            }
        }
    }
    let mut unfinished = Unfinished(Some(metrics));
    let saved = within(limit, "saving subscription state", store.save(records)).await;
    unfinished.0 = None;
    if let Err(err) = &saved {
        metrics.add_state_save_error(1);
        tracing::warn!(
            store = %store.location(),
            error = %err,
            "could not save subscription state; the change is not applied"
        );
    }
    saved
}

/// Runs a state store call, abandoning it after `limit`
/// ([`Error::Timeout`] naming `operation`).
async fn within<T>(
    limit: Duration,
    operation: &str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(Error::Timeout {
            operation: format!("{operation} (the state store did not answer)"),
            elapsed: limit,
        })
    })
}

/// Validates a subscriber's filter. With `prefix` (the provider's subject
/// prefix) each subject must also be able to match a subject the provider
/// publishes, checked as the providers check it when the subscriber is
/// opened ([`validate_filter_for_prefix`]); records loaded from a state
/// store are checked without it (see `set_state_store_now`).
fn validate_subscriber(filter: &SubscriptionFilter, prefix: Option<&str>) -> Result<()> {
    if filter.subscriber_id.is_empty() {
        return Err(Error::invalid_config("subscriber_id", "must not be empty"));
    }
    if let Some(c) = filter.subscriber_id.chars().find(|c| c.is_control()) {
        return Err(Error::invalid_config(
            "subscriber_id",
            format!("must not contain control characters ({c:?})"),
        ));
    }
    if filter.subjects.is_empty() {
        return Err(Error::invalid_config(
            "subjects",
            format!(
                "subscriber {:?} has no subjects (use remove_subscription to remove it)",
                filter.subscriber_id
            ),
        ));
    }
    for (i, subject) in filter.subjects.iter().enumerate() {
        match prefix {
            Some(prefix) => validate_filter_for_prefix(subject, prefix).map(|_| ())?,
            None => validate_filter(subject)?,
        }
        // a non-durable subscriber gets one subscription per subject: a
        // repeated subject would deliver every event twice
        if filter
            .subjects
            .get(..i)
            .is_some_and(|before| before.contains(subject))
        {
            return Err(Error::invalid_config(
                "subjects",
                format!(
                    "subscriber {:?} lists {subject:?} twice",
                    filter.subscriber_id
                ),
            ));
        }
    }
    Ok(())
}

/// Drops repeated subjects from a stored record (earlier versions accepted
/// them; each meant every event twice), keeping the first of each.
fn without_repeated_subjects(mut record: SubscriptionRecord) -> SubscriptionRecord {
    let before = record.filter.subjects.len();
    let mut seen = std::collections::HashSet::new();
    record.filter.subjects.retain(|s| seen.insert(s.clone()));
    if record.filter.subjects.len() != before {
        tracing::warn!(
            subscriber = %record.filter.subscriber_id,
            "stored subscription listed a subject more than once; keeping one of each"
        );
    }
    record
}

impl EventBus {
    /// Adds or replaces the subscriber `filter.subscriber_id`, keeping the
    /// options it already had (see
    /// [`update_subscription_with_options`](Self::update_subscription_with_options)),
    /// and persists the change through the state store, if one is set.
    ///
    /// Subjects are validated as filters ([`Error::InvalidSubject`]),
    /// including that each can match a subject the provider publishes
    /// (`{prefix}.<category>.<topic>`): `orders.>` under the prefix
    /// `events`, or `events.orders` (a category without a topic), is the
    /// error [`create_subscriber`](Self::create_subscriber) would give for
    /// it. An empty subscriber id or subject list, or a subject listed
    /// twice, is [`Error::InvalidConfig`]. A refused filter changes and
    /// saves nothing, and is refused at once, without waiting for the
    /// changes before it. If the state
    /// store fails, or does not answer within its time limit
    /// ([`Error::Timeout`], see [`set_state_store`](Self::set_state_store)),
    /// the change is not applied and its error is returned (and counted in
    /// the `state_save_errors` metric, and logged at `WARN`).
    /// Durable consumers of subjects the update drops (or of every subject,
    /// when `durable` becomes false) are deleted from the provider, and the
    /// subscriptions opened for dropped subjects (or for every subject, when
    /// `durable` changes) end, as on
    /// [`remove_subscription`](Self::remove_subscription). Subjects the
    /// update adds are opened by the next
    /// [`create_subscriber`](Self::create_subscriber) or
    /// [`consume`](Self::consume): subscriptions and consumer runners
    /// already open do not pick them up.
    ///
    /// **Cancellation.** Changes are made one at a time, in the order they
    /// were called. A change dropped (a `timeout`, a `select!`) while it
    /// still waits for the ones before it does nothing; once it has started,
    /// it runs to completion (saved and applied, or refused) even if the
    /// caller stops waiting for it: the bus and its state store agree (but
    /// for a store that answers after its time limit, which then holds the
    /// refused change until the next save, see
    /// [`set_state_store`](Self::set_state_store)), and a change the caller
    /// makes next comes after it. A caller
    /// that gave up can read the outcome with
    /// [`get_subscription_record`](Self::get_subscription_record). The same
    /// holds for every method that changes subscriptions.
    ///
    /// **Cost.** With a state store, every change saves the whole set of
    /// subscribers (the [`StateStore`](event_core::StateStore) contract), so
    /// registering N subscribers one by one writes O(N²) bytes: measured
    /// with [`FileStateStore`](crate::FileStateStore) (release build, a
    /// 2-core host), 4,000 durable subscribers took 44 s and wrote 1.1 GB.
    /// To register many at start-up, add them
    /// before [`set_state_store`](Self::set_state_store), which merges them
    /// with the stored ones in one save, or register them in one call of
    /// [`update_subscriptions`](Self::update_subscriptions): one save for
    /// all of them. Without a store the change itself
    /// is O(log N); with N subscriptions open (`create_subscriber`,
    /// `consume`), each change still wakes every one of them to look at it.
    pub async fn update_subscription(&self, filter: SubscriptionFilter) -> Result<()> {
        self.upsert(vec![(filter, None)]).await
    }

    /// Adds or replaces every subscriber in `filters`, each keeping the
    /// options it already had, as
    /// [`update_subscription`](Self::update_subscription) does, in one
    /// change: the state store, if one is set, is saved once for all of
    /// them (registering N subscribers one by one saves N times, each time
    /// the whole set). Measured with
    /// [`FileStateStore`](crate::FileStateStore) in the same run as the
    /// figure on `update_subscription` (release build, a 2-core host):
    /// 4,000 durable subscribers in one call took 17 ms and wrote 0.56 MB,
    /// one by one 44 s and 1.1 GB.
    ///
    /// All or nothing. Every filter is validated first, with the errors
    /// `update_subscription` gives, and a subscriber id given twice in
    /// `filters` is [`Error::InvalidConfig`]: a batch refused there
    /// changes and saves nothing, and is refused at once, without waiting
    /// for the changes before it. If the state store fails or does not
    /// answer in time, no subscriber of the batch is changed and the
    /// store's error is returned. Once saved, each subscriber is changed as
    /// `update_subscription` changes it: the durable consumers of the
    /// subjects it drops are deleted, and the subscriptions opened for
    /// those subjects end. An empty batch does nothing. Cancellation is as
    /// on `update_subscription`: the batch is one change. The batch is read
    /// from `filters` when this is called, so the returned future does not
    /// hold the iterator (it is `Send` even if the iterator is not).
    ///
    /// ```
    /// use event_bus::{EventBus, MemoryStateStore};
    /// use event_core::SubscriptionFilter;
    /// use event_memory::MemoryProvider;
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> event_core::Result<()> {
    /// let bus = EventBus::new(MemoryProvider::default());
    /// let store = Arc::new(MemoryStateStore::new());
    /// bus.set_state_store(store.clone()).await?;
    /// bus.update_subscriptions((0..100).map(|i| SubscriptionFilter {
    ///     subscriber_id: format!("worker-{i}"),
    ///     subjects: vec!["events.jobs.>".into()],
    ///     durable: true,
    /// }))
    /// .await?;
    /// assert_eq!(bus.list_subscriptions().await.len(), 100);
    /// assert_eq!(store.saves(), 1);
    /// # Ok(()) }
    /// ```
    pub fn update_subscriptions(
        &self,
        filters: impl IntoIterator<Item = SubscriptionFilter>,
    ) -> impl Future<Output = Result<()>> + Send + '_ {
        // taken from the iterator now, so the future does not hold it (an
        // iterator that is not `Send` still gives a `Send` future)
        self.upsert(filters.into_iter().map(|f| (f, None)).collect())
    }

    /// Like [`update_subscription`](Self::update_subscription), and sets the
    /// subscriber's consumer options (`max_deliver`, `backoff`, `ack_wait`,
    /// deliver policy...). Consumer runners use `backoff` as the nak delay.
    ///
    /// The options apply to the subscriptions opened after the change
    /// ([`create_subscriber`](Self::create_subscriber),
    /// [`consume`](Self::consume)), which pass them to the provider (a
    /// durable's consumer is then updated, or the open refused with the
    /// provider's error). Subscriptions and consumer runners already open
    /// keep the options they were opened with: shut a runner down and
    /// `consume` again to apply new ones.
    pub async fn update_subscription_with_options(
        &self,
        filter: SubscriptionFilter,
        options: SubscribeOptions,
    ) -> Result<()> {
        self.upsert(vec![(filter, Some(Some(options)))]).await
    }

    /// Adds or replaces the subscribers of `items` in one change (see
    /// [`update_subscriptions`](Self::update_subscriptions)); each item's
    /// options: `None` keeps the subscriber's current ones.
    ///
    /// Waits for the subscriptions lock here (dropped meanwhile, it does
    /// nothing), then runs detached (see [`detached`]) with the lock: the
    /// change is made in full, saved and applied, even if the caller stops
    /// waiting (a `timeout`, a `select!`), so the state store and the bus
    /// do not disagree (short of a save that completes after its time
    /// limit). (Detached before taking the lock, a change given up
    /// on could take it after a change its caller made next, and undo it.)
    async fn upsert(&self, items: Vec<Upsert>) -> Result<()> {
        // before waiting for the changes ahead of this one: a batch with a
        // refused filter touches nothing
        let prefix = self.inner.provider.subject_prefix();
        let mut ids = HashSet::with_capacity(items.len());
        for (filter, _) in &items {
            validate_subscriber(filter, Some(prefix))?;
            if !ids.insert(filter.subscriber_id.as_str()) {
                // one of the two would be lost, silently
                return Err(Error::invalid_config(
                    "subscriber_id",
                    format!(
                        "subscriber {:?} is given twice in one batch",
                        filter.subscriber_id
                    ),
                ));
            }
        }
        drop(ids);
        if items.is_empty() {
            return Ok(());
        }
        let state = self.inner.subs.clone().lock_owned().await;
        let bus = self.clone();
        detached("subscription update", async move {
            bus.upsert_now(state, items).await
        })
        .await
    }

    async fn upsert_now(
        &self,
        mut state: OwnedMutexGuard<SubState>,
        items: Vec<Upsert>,
    ) -> Result<()> {
        // per subscriber: its id, whether its options were kept, and its
        // record before the change
        let mut made: Vec<(String, bool, Option<SubscriptionRecord>)> =
            Vec::with_capacity(items.len());
        state
            .apply(&self.inner.metrics, |records| {
                for (filter, options) in items {
                    let id = filter.subscriber_id.clone();
                    let kept = options.is_none();
                    let options =
                        options.unwrap_or_else(|| records.get(&id).and_then(|p| p.options.clone()));
                    let previous =
                        records.insert(id.clone(), SubscriptionRecord { filter, options });
                    made.push((id, kept, previous));
                }
            })
            .await?;
        let state = &mut *state;
        for (id, kept, previous) in &made {
            state.restamp(id, previous.as_ref());
            if !kept {
                state.options_kept.remove(id);
            } else if state.store.is_none() && previous.is_none() {
                state.options_kept.insert(id.clone());
            }
        }
        let ids = changed_ids(made.iter().map(|(id, ..)| id.as_str()));
        self.inner
            .sub_changes
            .send_modify(|change| change.made(ids));
        // the lock stays held while the dropped durables are deleted, so a
        // concurrent update that re-adds a subject cannot have its consumer
        // deleted under it
        for (id, _, previous) in &made {
            let Some(previous) = previous.as_ref().filter(|p| p.filter.durable) else {
                continue;
            };
            let now = state.records.get(id).filter(|r| r.filter.durable);
            let dropped: Vec<&str> = previous
                .filter
                .subjects
                .iter()
                .filter(|s| !now.is_some_and(|r| r.filter.subjects.contains(s)))
                .map(String::as_str)
                .collect();
            self.delete_durables(id, &dropped).await;
        }
        Ok(())
    }

    /// Replaces the subscriber described by `record` (filter and options
    /// exactly as given, `None` clearing them); persisted like
    /// [`update_subscription`](Self::update_subscription).
    pub async fn set_subscription(&self, record: SubscriptionRecord) -> Result<()> {
        self.upsert(vec![(record.filter, Some(record.options))])
            .await
    }

    /// Replaces every subscriber in `records` (filters and options exactly
    /// as given, as [`set_subscription`](Self::set_subscription) does) in
    /// one change, saved once: all or nothing, as
    /// [`update_subscriptions`](Self::update_subscriptions) (which keeps
    /// each subscriber's options instead).
    ///
    /// ```
    /// use event_bus::{EventBus, MemoryStateStore};
    /// use event_core::{SubscribeOptions, SubscriptionFilter, SubscriptionRecord};
    /// use event_memory::MemoryProvider;
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> event_core::Result<()> {
    /// let bus = EventBus::new(MemoryProvider::default());
    /// let store = Arc::new(MemoryStateStore::new());
    /// bus.set_state_store(store.clone()).await?;
    /// let record = |id: &str, max_deliver| SubscriptionRecord {
    ///     filter: SubscriptionFilter {
    ///         subscriber_id: id.into(),
    ///         subjects: vec!["events.orders.>".into()],
    ///         durable: true,
    ///     },
    ///     options: Some(SubscribeOptions { max_deliver: Some(max_deliver), ..Default::default() }),
    /// };
    /// bus.set_subscriptions([record("billing", 5), record("shipping", 10)]).await?;
    /// let shipping = bus.get_subscription_record("shipping").await.unwrap();
    /// assert_eq!(shipping.options.unwrap().max_deliver, Some(10));
    /// assert_eq!(store.saves(), 1);
    /// # Ok(()) }
    /// ```
    pub fn set_subscriptions(
        &self,
        records: impl IntoIterator<Item = SubscriptionRecord>,
    ) -> impl Future<Output = Result<()>> + Send + '_ {
        // taken now, as in `update_subscriptions`
        self.upsert(
            records
                .into_iter()
                .map(|r| (r.filter, Some(r.options)))
                .collect(),
        )
    }

    /// Removes the subscriber, persists the change, and deletes its durable
    /// consumers from the provider. The subscriptions opened for it
    /// ([`create_subscriber`](Self::create_subscriber),
    /// [`consume`](Self::consume)) end: they return `Ok(None)` and deliver
    /// nothing published after the removal, and consumer runners over them
    /// stop. [`Error::NotFound`] if there is no such subscriber.
    pub async fn remove_subscription(&self, subscriber_id: &str) -> Result<()> {
        self.remove_subscriptions([subscriber_id]).await
    }

    /// Removes several subscribers in one change, persisted with one state
    /// save, as [`remove_subscription`](Self::remove_subscription) removes
    /// one (their subscriptions end, their durables are deleted). All or
    /// nothing: [`Error::NotFound`] naming the first id with no subscriber,
    /// or [`Error::InvalidConfig`] for an id given twice, and nothing is
    /// removed. No ids: nothing to do.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> event_core::Result<()> {
    /// use event_bus::EventBus;
    /// use event_core::SubscriptionFilter;
    /// use event_memory::MemoryProvider;
    ///
    /// let bus = EventBus::new(MemoryProvider::default());
    /// let filter = |id: &str| SubscriptionFilter {
    ///     subscriber_id: id.into(),
    ///     subjects: vec!["events.orders.>".into()],
    ///     durable: true,
    /// };
    /// bus.update_subscriptions([filter("billing"), filter("shipping"), filter("audit")])
    ///     .await?;
    /// bus.remove_subscriptions(["billing", "shipping"]).await?;
    /// assert!(bus.get_subscription("billing").await.is_none());
    /// assert!(bus.get_subscription("audit").await.is_some());
    /// # Ok(()) }
    /// ```
    pub fn remove_subscriptions<'a>(
        &self,
        subscriber_ids: impl IntoIterator<Item = &'a str>,
    ) -> impl Future<Output = Result<()>> + Send + '_ {
        // taken from the iterator now, so the future does not hold it (ids
        // from data that is not `Send` still give a `Send` future, as with
        // `update_subscriptions`)
        self.remove_ids(removal_ids(subscriber_ids))
    }

    async fn remove_ids(&self, ids: Result<Vec<String>>) -> Result<()> {
        let ids = ids?;
        if ids.is_empty() {
            return Ok(());
        }
        // locked, then detached, as `upsert`: a removal dropped while its
        // state is saved still removes the subscribers and deletes their
        // durables
        let state = self.inner.subs.clone().lock_owned().await;
        let bus = self.clone();
        detached("subscription removal", async move {
            bus.remove_now(state, &ids).await
        })
        .await
    }

    async fn remove_now(
        &self,
        mut state: OwnedMutexGuard<SubState>,
        subscriber_ids: &[String],
    ) -> Result<()> {
        if let Some(missing) = subscriber_ids
            .iter()
            .find(|id| !state.records.contains_key(id.as_str()))
        {
            return Err(Error::NotFound {
                kind: "subscription",
                name: missing.clone(),
            });
        }
        let mut removed = Vec::with_capacity(subscriber_ids.len());
        state
            .apply(&self.inner.metrics, |records| {
                removed = subscriber_ids
                    .iter()
                    .filter_map(|id| records.remove(id.as_str()))
                    .collect();
            })
            .await?;
        for id in subscriber_ids {
            state.options_kept.remove(id.as_str());
            state.restamp(id, None);
        }
        let ids = changed_ids(subscriber_ids.iter().map(String::as_str));
        self.inner
            .sub_changes
            .send_modify(|change| change.made(ids));
        // held through the deletes (see `upsert`)
        self.inner
            .metrics
            .add_unsubscribe(u64::try_from(subscriber_ids.len()).unwrap_or(u64::MAX));
        for removed in removed.iter().filter(|r| r.filter.durable) {
            let subjects: Vec<&str> = removed.filter.subjects.iter().map(String::as_str).collect();
            self.delete_durables(&removed.filter.subscriber_id, &subjects)
                .await;
        }
        drop(state);
        Ok(())
    }

    /// Deletes the durable consumers of `subscriber_id` on `subjects`. The
    /// state change they follow is already committed, so a failure is logged
    /// (a consumer that was never created is not a failure).
    async fn delete_durables(&self, subscriber_id: &str, subjects: &[&str]) {
        for subject in subjects {
            let name = durable_consumer_name(subscriber_id, subject);
            match self.inner.provider.unsubscribe(&name).await {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(err) => tracing::warn!(
                    consumer = %name,
                    error = %err,
                    "could not delete a durable consumer; delete it with provider().unsubscribe"
                ),
            }
        }
    }

    /// Every subscriber's filter, ordered by subscriber id.
    pub async fn list_subscriptions(&self) -> Vec<SubscriptionFilter> {
        let state = self.inner.subs.lock().await;
        state.records.values().map(|r| r.filter.clone()).collect()
    }

    /// Every subscriber's filter and options, ordered by subscriber id.
    pub async fn list_subscription_records(&self) -> Vec<SubscriptionRecord> {
        let state = self.inner.subs.lock().await;
        SubState::snapshot(&state.records)
    }

    /// The filter of `subscriber_id`, if it exists.
    pub async fn get_subscription(&self, subscriber_id: &str) -> Option<SubscriptionFilter> {
        let state = self.inner.subs.lock().await;
        state.records.get(subscriber_id).map(|r| r.filter.clone())
    }

    /// The filter and options of `subscriber_id`, if it exists.
    pub async fn get_subscription_record(&self, subscriber_id: &str) -> Option<SubscriptionRecord> {
        let state = self.inner.subs.lock().await;
        state.records.get(subscriber_id).cloned()
    }

    /// Persists subscriptions through `store` from now on.
    ///
    /// The store is loaded first: its subscriptions are added to the bus,
    /// and subscriptions already on the bus (set before the store) win over
    /// stored ones with the same id, as the newer, except for the options of
    /// a subscriber added with [`update_subscription`](Self::update_subscription)
    /// (which keeps the options a subscriber has) and given none since: it
    /// gets its stored options, so declaring the subscribers before loading
    /// the state does not wipe options set at run time. If that changed anything,
    /// the merged set is saved. A stored durable subscriber replaced so
    /// has the durable consumers of the stored subjects it no longer has
    /// (all of them, if it is no longer durable) deleted from the provider
    /// once the merged set is saved, as an update replacing it would
    /// (nothing else would ever delete them: the saved set no longer names
    /// them). If loading fails (a corrupt file, say), or
    /// the store holds an invalid subscription or one subscriber twice, the
    /// error is returned and neither the bus nor the store is changed. A
    /// stored subscription that lists a subject twice (earlier versions
    /// accepted that) is loaded with each subject once. Stored subjects are
    /// checked as filters, not against the provider's subject prefix (as
    /// [`update_subscription`](Self::update_subscription) checks them): a
    /// file written under another prefix loads as it is, is saved back as
    /// it is, and its subscribers fail to open
    /// ([`create_subscriber`](Self::create_subscriber),
    /// [`consume`](Self::consume): [`Error::InvalidSubject`]) until they are
    /// given valid subjects or removed.
    ///
    /// One bus per store: each save writes the bus's whole set, so two
    /// buses (or processes) saving to one store would replace each other's
    /// subscriptions there, the last save winning.
    /// [`FileStateStore`](crate::state::FileStateStore) enforces it for its
    /// file: while another store holds the file (in this process or
    /// another), setting a second one fails with [`Error::Conflict`] and
    /// changes nothing; it works once the holder is dropped (its bus and
    /// every clone of it) or its process exits. Clones of one store share
    /// its lock, so give a store to one bus only. That includes the bus's
    /// own current store: a new `FileStateStore` on the file the bus already
    /// uses is refused too, so to set it again (say with another time limit)
    /// pass the store the bus has, or a clone of it.
    ///
    /// **Time limit.** Each `load` and `save` of the store may take
    /// [`DEFAULT_STATE_STORE_TIMEOUT`] (30 s; another limit with
    /// [`set_state_store_with_timeout`](Self::set_state_store_with_timeout)).
    /// A store that does not answer in time fails the call with
    /// [`Error::Timeout`], as a store error does: a load that times out
    /// leaves the bus and its store as they were, a save that times out
    /// leaves the change unapplied. Subscription changes and reads wait for
    /// the save before them, so without a limit one hung store (a stalled
    /// network mount, an unreachable database) would freeze them all. A
    /// store that completes an abandoned save later holds a set the bus does
    /// not until the next change, whose save writes the bus's whole set
    /// again, provided the store lands saves in the order they were issued
    /// ([`FileStateStore`](crate::state::FileStateStore) does, even for a
    /// save abandoned while it waits behind a hung one; a store of your own
    /// whose late save could land after a newer one would hold the older
    /// set).
    pub async fn set_state_store(&self, store: Arc<dyn StateStore>) -> Result<()> {
        self.set_state_store_with_timeout(store, DEFAULT_STATE_STORE_TIMEOUT)
            .await
    }

    /// [`set_state_store`](Self::set_state_store) with `timeout` as the
    /// time limit of each `load` and `save` of `store`, instead of
    /// [`DEFAULT_STATE_STORE_TIMEOUT`]. A zero `timeout` is
    /// [`Error::InvalidConfig`].
    pub async fn set_state_store_with_timeout(
        &self,
        store: Arc<dyn StateStore>,
        timeout: Duration,
    ) -> Result<()> {
        if timeout.is_zero() {
            return Err(Error::invalid_config(
                "state store timeout",
                "must be greater than zero",
            ));
        }
        // locked, then detached, as `upsert`: dropped while the merged set
        // is saved, the store would hold subscriptions the bus does not
        let state = self.inner.subs.clone().lock_owned().await;
        let bus = self.clone();
        detached("setting the state store", async move {
            bus.set_state_store_now(state, store, timeout).await
        })
        .await
    }

    async fn set_state_store_now(
        &self,
        mut state: OwnedMutexGuard<SubState>,
        store: Arc<dyn StateStore>,
        timeout: Duration,
    ) -> Result<()> {
        let loaded = within(timeout, "loading subscription state", store.load()).await?;
        let mut merged: BTreeMap<String, SubscriptionRecord> = BTreeMap::new();
        for record in loaded {
            let record = without_repeated_subjects(record);
            // not against the provider's prefix: a file written under
            // another prefix still loads (its subscribers fail to open
            // until they are given valid subjects)
            validate_subscriber(&record.filter, None).map_err(|e| {
                Error::invalid_config(
                    "state store",
                    format!("a subscription in {} is invalid: {e}", store.location()),
                )
            })?;
            if let Some(twice) = merged.insert(record.filter.subscriber_id.clone(), record) {
                // keeping either record would lose the other, in the file too
                // on the next save
                return Err(Error::invalid_config(
                    "state store",
                    format!(
                        "subscriber {:?} is stored twice in {}; remove one of its records",
                        twice.filter.subscriber_id,
                        store.location()
                    ),
                ));
            }
        }
        let stored = SubState::snapshot(&merged);
        // per replaced subscriber: the stored durables its record drops
        let mut dropped: Vec<(String, Vec<String>)> = Vec::new();
        for (id, record) in &state.records {
            let mut record = record.clone();
            // added with `update_subscription`, which keeps the options a
            // subscriber has: those are the stored ones
            if state.options_kept.contains(id)
                && let Some(stored) = merged.get(id)
            {
                record.options = stored.options.clone();
            }
            if let Some(previous) = merged.insert(id.clone(), record)
                && previous.filter.durable
            {
                // replaced, as by an update: the durables of the stored
                // subjects it no longer has are deleted once saved
                let now = &state.records[id].filter;
                let gone: Vec<String> = previous
                    .filter
                    .subjects
                    .into_iter()
                    .filter(|s| !(now.durable && now.subjects.contains(s)))
                    .collect();
                if !gone.is_empty() {
                    dropped.push((id.clone(), gone));
                }
            }
        }
        let merged_list = SubState::snapshot(&merged);
        if merged_list != stored {
            save_to(&*store, &merged_list, timeout, &self.inner.metrics).await?;
        }
        let added: Vec<String> = merged
            .keys()
            .filter(|id| !state.records.contains_key(*id))
            .cloned()
            .collect();
        state.records = merged;
        // the stored subscribers the bus did not have: stamped anew (the
        // bus's own keep theirs)
        for id in &added {
            state.restamp(id, None);
        }
        state.store = Some(store);
        state.store_timeout = timeout;
        state.options_kept.clear();
        // held through the deletes (see `upsert`)
        for (id, subjects) in &dropped {
            let subjects: Vec<&str> = subjects.iter().map(String::as_str).collect();
            self.delete_durables(id, &subjects).await;
        }
        Ok(())
    }

    /// Opens the subscriber's subscriptions, one per subject, decrypting.
    ///
    /// Durable subscribers get durable consumers named by
    /// [`durable_consumer_name`](crate::durable_consumer_name) (they resume
    /// where they left off, across restarts); others get live ephemeral
    /// subscriptions. The subscriber's options are passed to the provider;
    /// without options the provider's defaults apply (durables start with
    /// every stored event, ephemeral ones with new events only).
    /// [`Error::NotFound`] if there is no such subscriber.
    pub async fn create_subscriber(
        &self,
        subscriber_id: &str,
    ) -> Result<Vec<Box<dyn Subscription>>> {
        Ok(self
            .open_subscriber(subscriber_id, DlqLimits::default())
            .await?
            .1)
    }

    /// The subscriber's record and its subscriptions, one per subject.
    ///
    /// The subscriptions are opened under the subscriptions lock: a removal
    /// or update waits for them, then deletes the durables it drops and ends
    /// the subscriptions it no longer covers. (Read first and opened after,
    /// a removal in between would find no durable to delete, and the
    /// subscription, never told of the change, would go on delivering for a
    /// removed subscriber over an orphan consumer.)
    pub(crate) async fn open_subscriber(
        &self,
        subscriber_id: &str,
        dlq_limits: DlqLimits,
    ) -> Result<(SubscriptionRecord, Vec<Box<dyn Subscription>>)> {
        let state = self.inner.subs.lock().await;
        let record = state
            .records
            .get(subscriber_id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: "subscription",
                name: subscriber_id.to_string(),
            })?;
        let mut subs: Vec<Box<dyn Subscription>> = Vec::with_capacity(record.filter.subjects.len());
        for subject in &record.filter.subjects {
            let stamp = state.stamp(subscriber_id, subject);
            match self.open(&record, subject, stamp, dlq_limits).await {
                Ok(sub) => subs.push(sub),
                Err(err) => {
                    // The caller gets none of them: close (not just drop)
                    // the ones opened, so that a durable hands back what it
                    // fetched ahead, and count none.
                    for mut sub in subs {
                        if let Err(close) = sub.close().await {
                            tracing::debug!(error = %close, "closing a subscription of a subscriber that failed to open");
                        }
                    }
                    return Err(err);
                }
            }
        }
        drop(state);
        self.inner.metrics.add_subscribe(subs.len() as u64);
        Ok((record, subs))
    }

    /// Opens the subscriber's subscription on `subject` (not counted in
    /// `subscribe_total`: [`open_subscriber`](Self::open_subscriber) counts a
    /// subscriber's subscriptions once every one is open).
    pub(crate) async fn open(
        &self,
        record: &SubscriptionRecord,
        subject: &str,
        stamp: u64,
        dlq_limits: DlqLimits,
    ) -> Result<Box<dyn Subscription>> {
        let provider = &self.inner.provider;
        let sub = if record.filter.durable {
            let name = durable_consumer_name(&record.filter.subscriber_id, subject);
            match &record.options {
                Some(options) => {
                    provider
                        .subscribe_durable_with_options(&name, subject, options)
                        .await?
                }
                None => provider.subscribe_durable(&name, subject).await?,
            }
        } else {
            match &record.options {
                Some(options) => provider.subscribe_with_options(subject, options).await?,
                None => provider.subscribe(subject).await?,
            }
        };
        tracing::debug!(
            subscriber = %record.filter.subscriber_id,
            subject,
            durable = record.filter.durable,
            "subscribed"
        );
        let changes = self.inner.sub_changes.subscribe();
        let seen = changes.borrow().generation;
        let membership = Membership {
            subscriber_id: record.filter.subscriber_id.clone(),
            subject: subject.to_owned(),
            durable: record.filter.durable,
            stamp,
            seen,
            changes,
            unchecked: false,
        };
        Ok(BusSubscription::new(sub, self.inner.clone())
            .with_dlq_limits(dlq_limits)
            .member_of(membership)
            .boxed())
    }

    /// A live, ephemeral, decrypting subscription on `filter_subject` (new
    /// events only), outside the managed subscribers.
    pub async fn subscribe(&self, filter_subject: &str) -> Result<Box<dyn Subscription>> {
        let sub = self.inner.provider.subscribe(filter_subject).await?;
        self.inner.metrics.add_subscribe(1);
        Ok(self.wrap_subscription(sub))
    }

    /// Wraps a provider subscription so its events come out decrypted and
    /// undecryptable events are dead-lettered (see [`BusSubscription`]).
    ///
    /// A subscription that a bus already wraps (one from
    /// [`subscribe`](Self::subscribe), [`create_subscriber`](Self::create_subscriber)
    /// or this method) is returned as it is, still served by the bus that
    /// wrapped it: wrapped twice, it would count lag twice and dead-letter
    /// an undecodable message twice.
    pub fn wrap_subscription(&self, subscription: Box<dyn Subscription>) -> Box<dyn Subscription> {
        if BusSubscription::is_bus_subscription(&*subscription) {
            return subscription;
        }
        BusSubscription::new(subscription, self.inner.clone()).boxed()
    }
}

/// The ids of a `remove_subscriptions` batch, owned, or
/// [`Error::InvalidConfig`] for one given twice.
fn removal_ids<'a>(subscriber_ids: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    // a set, as in `upsert`: a scan of the ids seen so far would make a
    // large batch quadratic, the runtime's thread held all the while
    let mut seen: HashSet<&str> = HashSet::new();
    for id in subscriber_ids {
        if !seen.insert(id) {
            // as in `upsert`: a batch naming one twice is a mistake
            return Err(Error::invalid_config(
                "subscriber_id",
                format!("subscriber {id:?} is given twice in one batch"),
            ));
        }
        ids.push(id.to_owned());
    }
    Ok(ids)
}
