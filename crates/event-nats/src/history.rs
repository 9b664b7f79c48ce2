//! `history`: the newest matching events, newest first, without reading the
//! whole stream.
//!
//! The cost model comes from measurements against `nats-server` file
//! storage (see the `history_100k_stream` bench):
//!
//! * an **unfiltered** consumer is cheap to create anywhere; it reads the
//!   tail window directly;
//! * a **filtered** consumer is cheap to create at the stream's first
//!   sequence, and its creation response counts the matches (`num_pending`),
//!   but created in the middle of the stream the server counts its pending
//!   matches by scanning from the start sequence to the end of its storage
//!   block (about a microsecond per message);
//! * a **message get** by `next_by_subj` costs one request (tens of
//!   microseconds) plus a cheap scan to the next match, and many can be in
//!   flight at once.
//!
//! So a filtered query first counts the matches with a consumer at the
//! stream start (created together with the stream-info request), sizes a
//! tail window from the match density (`limit / density` with a margin),
//! and reads that window either with a consumer (dense matches, short
//! window) or by stepping through it with parallel message gets (sparse
//! matches, long window), whichever the cost model says is cheaper. When
//! the window comes up short it sizes the next, older window from the
//! matches still known to be older. When the matches are about as few as
//! `limit`, the counting consumer itself reads them all.

use crate::denial::Rule;
use crate::error;
use crate::provider::NatsProvider;
use crate::pull::{PULL_GRACE, Pull};
use crate::subscription::delete_in_background;
use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::consumer::{self, AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use event_core::{Error, Event, Result};
use futures_util::StreamExt;
use std::time::Duration;

/// Largest pull request.
const MAX_FETCH: u64 = 4096;
/// A window is sized for this many times the matches still needed
/// (measured: a larger margin costs more message gets than the occasional
/// second, small window it saves).
const MARGIN_NUM: u64 = 11;
/// Denominator of the margin (11/10 = 1.1).
const MARGIN_DEN: u64 = 10;
/// Extra sequences added to every window.
const SLACK: u64 = 8;
/// Message gets kept in flight while stepping through a window.
const PARALLEL_GETS: usize = 24;
/// How many messages a filtered consumer's creation scans for the price of
/// one message get (measured: ~1.2 us per scanned message, ~40 us per get).
const SCAN_PER_GET: u64 = 32;

/// A raw match: stream sequence, the subject it is stored under, payload.
type Raw = (u64, String, Bytes);

pub(crate) async fn history(
    provider: &NatsProvider,
    filter: Option<&str>,
    limit: usize,
) -> Result<Vec<Event>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    match narrow(filter, &provider.inner.config.subject_prefix) {
        Narrowed::Nothing => Ok(Vec::new()),
        Narrowed::All => unfiltered(provider, limit).await,
        Narrowed::Filter(filter) => filtered(provider, &filter, limit).await,
    }
}

/// A (valid) filter intersected with the stream's subjects `<prefix>.>`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Narrowed {
    /// No subject of the stream matches.
    Nothing,
    /// Every subject of the stream matches: no filter (the server counts
    /// for unfiltered consumers much more cheaply).
    All,
    /// Matches what this filter, wholly inside the stream's subjects,
    /// matches (wildcards over prefix tokens replaced by the prefix, which
    /// the server requires of a consumer filter).
    Filter(String),
}

pub(crate) fn narrow(filter: Option<&str>, prefix: &str) -> Narrowed {
    let Some(filter) = filter else {
        return Narrowed::All;
    };
    let tokens: Vec<&str> = filter.split('.').collect();
    let mut narrowed: Vec<&str> = Vec::with_capacity(tokens.len());
    for (i, expected) in prefix.split('.').enumerate() {
        match tokens.get(i).copied() {
            Some(">") => return Narrowed::All,
            Some(token) if token == "*" || token == expected => narrowed.push(expected),
            _ => return Narrowed::Nothing,
        }
    }
    match &tokens[narrowed.len()..] {
        [] => Narrowed::Nothing,
        [">"] => Narrowed::All,
        rest => {
            narrowed.extend_from_slice(rest);
            Narrowed::Filter(narrowed.join("."))
        }
    }
}

/// The consumer filter for subscription filter `filter`: narrowed to the
/// stream's subjects, since JetStream refuses a consumer filter that is not
/// a subset of them (`*.orders.>` becomes `<prefix>.orders.>`, `>` becomes
/// `<prefix>.>`), so a wildcard over the prefix token matches here what it
/// matches on every provider. A filter matching none of the stream's
/// subjects is kept as given (subscriptions refuse one before any I/O, see
/// [`validate_filter_for_prefix`](event_core::subject::validate_filter_for_prefix)).
pub(crate) fn consumer_filter(filter: &str, prefix: &str) -> String {
    match narrow(Some(filter), prefix) {
        Narrowed::All => format!("{prefix}.>"),
        Narrowed::Filter(narrowed) => narrowed,
        Narrowed::Nothing => filter.to_string(),
    }
}

/// What `history` needs to know about the stream now.
struct Bounds {
    first: u64,
    last: u64,
    /// Direct gets are allowed and answered by the one replica: they skip
    /// the JetStream API layer (measured ~30% faster); with replicas they
    /// may be answered by a lagging follower, so message gets go to the
    /// leader instead.
    direct: bool,
}

/// The stream's sequence bounds, `None` when it is empty.
async fn bounds(provider: &NatsProvider) -> Result<Option<Bounds>> {
    let info = provider.stream_info("history: stream info").await?;
    let state = info.state;
    Ok((state.messages > 0).then_some(Bounds {
        first: state.first_sequence.max(1),
        last: state.last_sequence,
        direct: info.config.allow_direct && info.config.num_replicas <= 1,
    }))
}

/// No filter: tail windows read by unfiltered consumers (cheap anywhere).
async fn unfiltered(provider: &NatsProvider, limit: usize) -> Result<Vec<Event>> {
    let Some(Bounds { first, last, .. }) = bounds(provider).await? else {
        return Ok(Vec::new());
    };
    let mut out = Collected::new(limit);
    let mut end = last + 1;
    let mut window = out.need().saturating_add(SLACK);
    while !out.done() && end > first {
        let start = end.saturating_sub(window).max(first);
        let (consumer, guard) = create_consumer(provider, None, start).await?;
        let pending = consumer.cached_info().num_pending;
        let raws =
            read_consumer(provider, &consumer, &guard.name, pending, end - start, end).await?;
        guard.release().await;
        out.take_newest(raws);
        end = start;
        // short because of deleted sequences or undecodable payloads
        window = window.saturating_mul(2);
    }
    Ok(out.events)
}

/// A filter: count, size the window from the density, read it.
async fn filtered(provider: &NatsProvider, filter: &str, limit: usize) -> Result<Vec<Event>> {
    // the counting consumer starts at the stream's first sequence, where
    // the server counts from per-block subject totals without scanning
    let (bounds, counter) =
        tokio::join!(bounds(provider), create_consumer(provider, Some(filter), 0));
    let (counter, counter_guard) = counter?;

    let Some(Bounds {
        first,
        last,
        direct,
    }) = bounds?
    else {
        counter_guard.release().await;
        return Ok(Vec::new());
    };
    // matches in [first, end) not read yet (the count may include a few
    // events published after the stream info; they are past `end`)
    let mut older = counter.cached_info().num_pending;
    let mut out = Collected::new(limit);
    let mut end = last + 1;
    // after a window much sparser than estimated (clustered matches), the
    // next one is at least twice as long, so that a long stretch without
    // matches costs a logarithmic number of windows
    let mut at_least = 0u64;
    while !out.done() && end > first && older > 0 {
        let need = out.need();
        let span = end - first;
        // window = need / density * margin, density = older / span
        let window = need
            .saturating_mul(span)
            .saturating_mul(MARGIN_NUM)
            .checked_div(older.saturating_mul(MARGIN_DEN))
            .unwrap_or(span)
            .saturating_add(SLACK)
            .max(at_least);
        let start = end.saturating_sub(window).max(first);
        let expected = need.saturating_mul(MARGIN_NUM) / MARGIN_DEN;
        let raws = if start == first {
            // the rest of the stream: the counting consumer sits at `first`
            let pending = counter.cached_info().num_pending;
            read_consumer(provider, &counter, &counter_guard.name, pending, older, end).await?
        } else {
            let gets = expected.saturating_add(PARALLEL_GETS as u64);
            if (last + 1 - start) <= gets.saturating_mul(SCAN_PER_GET) {
                let (consumer, guard) = create_consumer(provider, Some(filter), start).await?;
                let pending = consumer.cached_info().num_pending;
                // twice the estimate: rarely a second pull, and a window
                // older than the tail does not pull the newer matches too
                let hint = expected.saturating_mul(2).min(end - start);
                let raws =
                    read_consumer(provider, &consumer, &guard.name, pending, hint, end).await?;
                guard.release().await;
                raws
            } else {
                step_range(provider, direct, filter, start, end, need).await?
            }
        };
        at_least = if (raws.len() as u64).saturating_mul(2) < expected {
            window.saturating_mul(2)
        } else {
            0
        };
        older = older.saturating_sub(raws.len() as u64);
        out.take_newest(raws);
        end = start;
    }
    counter_guard.release().await;
    Ok(out.events)
}

/// The newest-first result being collected.
struct Collected {
    limit: usize,
    events: Vec<Event>,
}

impl Collected {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            events: Vec::with_capacity(limit.min(4096)),
        }
    }

    fn done(&self) -> bool {
        self.events.len() >= self.limit
    }

    /// Events still wanted.
    fn need(&self) -> u64 {
        u64::try_from(self.limit - self.events.len()).unwrap_or(u64::MAX)
    }

    /// Decodes `raws` (oldest first, all older than what was taken before)
    /// from the newest, until the limit is reached.
    fn take_newest(&mut self, mut raws: Vec<Raw>) {
        while !self.done() {
            let Some((sequence, subject, payload)) = raws.pop() else {
                break;
            };
            // the same test as a subscription's: a message claiming
            // another subject than its own is no event either
            match crate::stored::decode(&subject, &payload) {
                Ok(event) => self.events.push(event),
                Err(reason) => tracing::warn!(
                    sequence,
                    %subject,
                    error = %reason,
                    "history skipped a message that is not a valid event"
                ),
            }
        }
    }
}

/// A short-lived consumer, deleted by [`release`](Self::release) before
/// the call returns, so that it neither holds a consumer slot of the stream
/// (its `max_consumers`) nor counts in `info` once `history` has returned;
/// when dropped unreleased (an error, or a `history` dropped part-way),
/// deleted in the background (the server would also drop it after its
/// inactivity threshold). An empty `name` deletes nothing.
struct ConsumerGuard {
    provider: NatsProvider,
    name: String,
}

impl ConsumerGuard {
    /// Deletes the consumer and waits for the server's answer (at most a
    /// request timeout, ended at once by a permission violation the server
    /// reports instead of answering). A deletion that fails (the connection
    /// lost, the user not allowed to delete consumers) is left to the
    /// consumer's inactivity threshold: the events read are still returned.
    /// Cancel-safe: dropped part-way, the guard deletes in the background
    /// as if never released.
    async fn release(mut self) {
        if self.name.is_empty() {
            return;
        }
        let provider = &self.provider;
        let stream = &provider.inner.stream;
        let timeout = provider.consumer_timeout();
        let delete = async {
            match tokio::time::timeout(timeout, stream.delete_consumer(&self.name)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(error::map("history consumer cleanup", e, timeout)),
                Err(_) => Err(Error::Timeout {
                    operation: "history consumer cleanup".to_string(),
                    elapsed: timeout,
                }),
            }
        };
        let rules = provider.consumer_rules(&self.name);
        if let Err(e) = provider
            .guarded("history consumer cleanup", &rules, delete)
            .await
        {
            if matches!(e, Error::Authentication(_)) {
                tracing::warn!(consumer = %self.name, error = %e, "history consumer cleanup");
            } else {
                tracing::debug!(consumer = %self.name, error = %e, "history consumer cleanup");
            }
        }
        self.name.clear();
    }
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            delete_in_background(&self.provider, std::mem::take(&mut self.name));
        }
    }
}

/// An ephemeral consumer without acks, from `start` (0: the stream's first
/// sequence).
async fn create_consumer(
    provider: &NatsProvider,
    filter: Option<&str>,
    start: u64,
) -> Result<(PullConsumer, ConsumerGuard)> {
    let timeout = provider.consumer_timeout();
    let name = format!("hist-{}", uuid::Uuid::new_v4().simple());
    let deliver_policy = if start == 0 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: start,
        }
    };
    let config = pull::Config {
        name: Some(name.clone()),
        deliver_policy,
        ack_policy: AckPolicy::None,
        filter_subject: filter.unwrap_or_default().to_string(),
        inactive_threshold: Duration::from_secs(10),
        memory_storage: true,
        ..pull::Config::default()
    };
    let create = async {
        provider
            .inner
            .stream
            .create_consumer(config)
            .await
            .map_err(|e| provider.stream_error("history consumer", e, timeout))
    };
    // made before the request: a `history` dropped while waiting for the
    // answer (or timed out) may have had the consumer created, and deletes
    // it rather than leaving it for the inactivity threshold
    let mut guard = ConsumerGuard {
        provider: provider.clone(),
        name: name.clone(),
    };
    let created = provider
        .guarded("history", &provider.consumer_rules(&name), create)
        .await;
    if matches!(&created, Err(e) if !matches!(e, Error::Timeout { .. } | Error::Connection(_))) {
        // a refusal the server answered created nothing
        guard.name.clear();
    }
    Ok((created?, guard))
}

/// The consumer's deliveries with stream sequence below `end`, oldest first.
///
/// `pending` is what the consumer (named `name`) has left to deliver (from
/// its creation response); reading stops when the server reports none left,
/// so no pull waits for messages that do not exist. `expected` (the most
/// matches the range is expected to hold) sizes the first pull so that one
/// round trip usually covers the range and the first delivery past it;
/// later pulls double. A pull the server never answers while events are
/// pending is an error, not an empty result: [`Error::Authentication`] when
/// the server reported a permission violation for it, else
/// [`Error::Timeout`].
async fn read_consumer(
    provider: &NatsProvider,
    consumer: &PullConsumer,
    name: &str,
    mut pending: u64,
    expected: u64,
    end: u64,
) -> Result<Vec<Raw>> {
    let timeout = provider.consumer_timeout();
    let denials = &provider.inner.link.denials;
    let mut raws = Vec::new();
    // the consumer's delivery sequence of the last delivery received: with
    // no acks nothing is redelivered, so these count 1, 2, 3, ... and a gap
    // is deliveries lost in transit (the connection dropped, with the
    // pull's replies still on the way)
    let mut delivered = 0u64;
    let mut size = expected.saturating_add(1);
    while pending > 0 {
        let want = pending.min(size).min(MAX_FETCH);
        // more than expected: grow the pulls geometrically
        size = size.saturating_mul(2);
        let want = usize::try_from(want).unwrap_or(1);
        let since = denials.mark();
        let request = BatchConfig {
            batch: want,
            expires: Some(timeout),
            // answered at once (404) when nothing is left
            no_wait: true,
            ..BatchConfig::default()
        };
        let mut batch = Pull::start(provider, consumer, name, request).await?;
        let subjects = batch.subjects();
        let rules = subjects.rules();
        let mut got = 0usize;
        loop {
            let next = tokio::select! {
                biased;
                next = batch.next() => next,
                denial = denials.wait(since, &rules) => return Err(denial.error("history")),
            };
            let message = match next {
                None => break,
                Some(Err(status)) => {
                    return Err(error::map(
                        "history fetch",
                        std::io::Error::other(status),
                        timeout,
                    ));
                }
                Some(Ok(message)) => message,
            };
            got += 1;
            let info = message.info().map_err(|e| {
                Error::provider(
                    error::PROVIDER,
                    format!("history delivery without metadata: {e}"),
                )
            })?;
            let expected = delivered.saturating_add(1);
            if info.consumer_sequence > expected {
                return Err(lost_deliveries(name, info.consumer_sequence - expected));
            }
            if info.consumer_sequence < expected {
                // never from a conforming server (no acks, no redelivery)
                return Err(Error::provider(
                    error::PROVIDER,
                    format!(
                        "history: consumer {name} delivered its delivery {} again after {}; \
                         nothing returned",
                        info.consumer_sequence, delivered
                    ),
                ));
            }
            delivered = info.consumer_sequence;
            let sequence = info.stream_sequence;
            if sequence >= end {
                return Ok(raws);
            }
            pending = info.pending;
            // a stream shared with another subject prefix (the same stream
            // name in two configurations) also holds that prefix's events;
            // unfiltered reads skip them like undecodable payloads
            if message
                .subject
                .strip_prefix(provider.inner.config.subject_prefix.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
            {
                raws.push((
                    sequence,
                    message.subject.to_string(),
                    message.payload.clone(),
                ));
            }
            if pending == 0 {
                break;
            }
        }
        if got == 0 {
            if !batch.answered() {
                // events are pending, yet nothing came back, not even "no
                // messages": the request or its replies never got through
                return Err(Error::Timeout {
                    operation: format!(
                        "history: consumer {name} did not answer a pull for {pending} pending \
                         events (a user not allowed to publish to \
                         $JS.API.CONSUMER.MSG.NEXT.{stream}.> or to subscribe to _INBOX.> \
                         shows like this)",
                        stream = provider.inner.stream_name
                    ),
                    elapsed: timeout + PULL_GRACE,
                });
            }
            // Nothing more to deliver although some was pending: deleted
            // meanwhile, or delivered and lost in transit (the connection
            // dropped with the last pull's replies on the way), which must
            // not pass for the end of the range.
            let info = tokio::time::timeout(timeout, consumer.get_info())
                .await
                .map_err(|_| Error::Timeout {
                    operation: format!("history: consumer {name} info"),
                    elapsed: timeout,
                })?
                .map_err(|e| error::map("history consumer info", e, timeout))?;
            if info.delivered.consumer_sequence > delivered {
                return Err(lost_deliveries(
                    name,
                    info.delivered.consumer_sequence - delivered,
                ));
            }
            break;
        }
    }
    Ok(raws)
}

/// `history`'s error for deliveries of its consumer `name` that never
/// arrived: it returns nothing rather than a result missing events.
fn lost_deliveries(name: &str, lost: u64) -> Error {
    Error::Connection(format!(
        "history: {lost} deliveries of consumer {name} were lost in transit (the connection \
         dropped during the read; a stored message whose header block the NATS client cannot \
         parse does this each time it is read); nothing returned"
    ))
}

/// One range being stepped through: the next sequence to ask from, its
/// exclusive end, where it started and how many matches it found.
#[derive(Clone, Copy)]
struct Cursor {
    at: u64,
    end: u64,
    from: u64,
    found: u64,
}

/// Matches in `[start, end)` found by `next_by_subj` message gets, oldest
/// first: the range is split into parallel cursors, each stepping forward
/// match by match. Cursors entirely older than the newest `need` matches
/// found are dropped; cursors in dense stretches are split to keep
/// [`PARALLEL_GETS`] requests in flight.
async fn step_range(
    provider: &NatsProvider,
    direct: bool,
    filter: &str,
    start: u64,
    end: u64,
    need: u64,
) -> Result<Vec<Raw>> {
    let span = end - start;
    // about one cursor per expected match, at most PARALLEL_GETS
    let parts = span.min(need.saturating_add(1)).min(PARALLEL_GETS as u64);
    let mut cursors: Vec<Cursor> = (0..parts)
        .map(|i| {
            let from = start + span * i / parts;
            Cursor {
                at: from,
                end: start + span * (i + 1) / parts,
                from,
                found: 0,
            }
        })
        .collect();
    let mut found: Vec<Raw> = Vec::new();
    // sequences of the matches found that decode as events: only these
    // count towards `need` (an undecodable match is skipped later)
    let mut sequences: Vec<u64> = Vec::new();
    while !cursors.is_empty() {
        // drop cursors older than `need` known events
        sequences.sort_unstable();
        cursors.retain(|c| {
            let newer = sequences.len() - sequences.partition_point(|s| *s < c.end);
            (newer as u64) < need
        });
        split_dense(&mut cursors);
        let replies = futures_util::future::join_all(
            cursors
                .iter()
                .map(|c| next_match(provider, direct, filter, c.at)),
        )
        .await;
        let mut next = Vec::with_capacity(cursors.len());
        for (mut cursor, reply) in cursors.into_iter().zip(replies) {
            let reply = reply?;
            if let Some((sequence, ..)) = &reply
                && *sequence < cursor.at
            {
                // never from a conforming server: asking again would loop
                return Err(Error::provider(
                    error::PROVIDER,
                    format!(
                        "history: a message get from sequence {} answered sequence {sequence}",
                        cursor.at
                    ),
                ));
            }
            // past this range, the next match is another cursor's
            if let Some((sequence, subject, payload)) = reply.filter(|(s, ..)| *s < cursor.end) {
                cursor.at = sequence + 1;
                cursor.found += 1;
                if crate::stored::decode(&subject, &payload).is_ok() {
                    sequences.push(sequence);
                }
                found.push((sequence, subject, payload));
                if cursor.at < cursor.end {
                    next.push(cursor);
                }
            }
        }
        cursors = next;
    }
    found.sort_unstable_by_key(|(s, ..)| *s);
    Ok(found)
}

/// The first match of `filter` at or after `sequence`, `None` when there is
/// none.
async fn next_match(
    provider: &NatsProvider,
    direct: bool,
    filter: &str,
    sequence: u64,
) -> Result<Option<Raw>> {
    let timeout = provider.consumer_timeout();
    let stream = &provider.inner.stream;
    let name = &provider.inner.stream_name;
    if direct {
        let subject = format!("$JS.API.DIRECT.GET.{name}");
        // an inbox shaped like a request's reply subject (`_INBOX.<id>.*`
        // receives those), so that the get needs no subscribe permission
        // beyond what every request does
        let inbox = format!("{}.get", provider.inner.client.new_inbox());
        let rules = [
            Rule::ReplyInbox,
            Rule::Subscribe(&inbox),
            Rule::PublishUnder(&subject),
        ];
        let get = direct_get_next(provider, subject.clone(), &inbox, filter, sequence, timeout);
        provider.guarded("history", &rules, get).await
    } else {
        let subject = format!("$JS.API.STREAM.MSG.GET.{name}");
        let rules = [Rule::ReplyInbox, Rule::Publish(&subject)];
        let get = async {
            match stream
                .raw_message_builder()
                .sequence(sequence)
                .next_by_subject(filter)
                .send()
                .await
            {
                Ok(message) => Ok(Some((
                    message.sequence,
                    message.subject.to_string(),
                    message.payload,
                ))),
                Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
                Err(e) => Err(error::map("history message get", e, timeout)),
            }
        };
        provider.guarded("history", &rules, get).await
    }
}

/// The first match of `filter` at or after `sequence` by a direct get,
/// `None` when there is none.
///
/// Made here rather than with async-nats's direct get, which reads the
/// answer's status line first: a stored message whose own header block
/// starts with one (`NATS/1.0 404 No Messages`, a reply relayed by a
/// bridge) came back as "not found" (the matches before it then hid), or
/// as an error (a `408`, or a `503` taken for "no responders"). The server
/// answers a message with its stream sequence and subject added to its
/// headers (after the stored ones: the last values are the server's), and
/// "not found" or a refusal without them.
async fn direct_get_next(
    provider: &NatsProvider,
    subject: String,
    inbox: &str,
    filter: &str,
    sequence: u64,
    timeout: Duration,
) -> Result<Option<Raw>> {
    let op = "history direct get";
    let client = &provider.inner.client;
    // the whole request within the timeout: with the server stalled, the
    // client's full outgoing queue would hold the subscription or the
    // request too
    let request = async {
        let inbox = async_nats::Subject::from(inbox);
        let mut replies = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| error::map(op, e, timeout))?;
        let body = serde_json::json!({ "seq": sequence, "next_by_subj": filter });
        client
            .publish_with_reply(subject, inbox, body.to_string().into())
            .await
            .map_err(|e| error::map(op, e, timeout))?;
        replies.next().await.ok_or_else(|| {
            Error::Connection(format!(
                "{op}: the subscription for the answer ended (connection closed?)"
            ))
        })
    };
    // a reconnect meanwhile lost the answer (a stored message whose header
    // block the client cannot parse drops the connection when it arrives):
    // no answer is then the connection's fault, not a slow server's
    let connects = || {
        client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let connected = connects();
    let reply = match tokio::time::timeout(timeout, request).await {
        Ok(reply) => reply?,
        Err(_)
            if connects() != connected
                || client.connection_state() != async_nats::connection::State::Connected =>
        {
            return Err(Error::Connection(format!(
                "{op}: the connection dropped before the answer came (a stored message whose                  header block the NATS client cannot parse does this each time it is read)"
            )));
        }
        Err(_) => {
            return Err(Error::Timeout {
                operation: format!("{op}: no answer"),
                elapsed: timeout,
            });
        }
    };
    let last = |name: &str| {
        reply
            .headers
            .as_ref()
            .and_then(|headers| headers.get_all(name).last())
            .map(|value| value.as_str().to_owned())
    };
    if let (Some(found), Some(stored_under)) = (last("Nats-Sequence"), last("Nats-Subject")) {
        let found = found.trim().parse::<u64>().map_err(|e| {
            Error::provider(
                error::PROVIDER,
                format!("{op}: the answer's Nats-Sequence {found:?}: {e}"),
            )
        })?;
        return Ok(Some((found, stored_under.trim().to_owned(), reply.payload)));
    }
    match reply.status {
        Some(async_nats::StatusCode::NOT_FOUND) => Ok(None),
        Some(async_nats::StatusCode::NO_RESPONDERS) => Err(Error::Connection(format!(
            "{op}: no responders (JetStream is not available)"
        ))),
        status => Err(Error::provider(
            error::PROVIDER,
            format!(
                "{op}: the server answered {status:?} {}",
                reply.description.as_deref().unwrap_or_default()
            ),
        )),
    }
}

/// Splits cursors expected to hold several more matches (by the density
/// each has seen so far) while fewer than [`PARALLEL_GETS`] are active.
fn split_dense(cursors: &mut Vec<Cursor>) {
    while cursors.len() < PARALLEL_GETS {
        let expected = |c: &Cursor| {
            let scanned = (c.at - c.from).max(1);
            c.found.saturating_mul(c.end - c.at) / scanned
        };
        let Some((index, best)) = cursors
            .iter()
            .enumerate()
            .filter(|(_, c)| c.end - c.at >= 2)
            .max_by_key(|(_, c)| expected(c))
        else {
            return;
        };
        if expected(best) < 4 {
            return;
        }
        let cursor = *best;
        let mid = cursor.at + (cursor.end - cursor.at) / 2;
        cursors[index].end = mid;
        cursors.push(Cursor {
            at: mid,
            end: cursor.end,
            from: mid,
            found: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{Narrowed, narrow};

    #[test]
    fn filters_are_narrowed_to_the_stream_subjects() {
        let f = |s: &str| Narrowed::Filter(s.to_string());
        for (filter, prefix, want) in [
            (None, "events", Narrowed::All),
            (Some(">"), "events", Narrowed::All),
            (Some("events.>"), "events", Narrowed::All),
            (Some("*.>"), "events", Narrowed::All),
            (Some("a.>"), "a.b", Narrowed::All),
            (Some("a.b.>"), "a.b", Narrowed::All),
            (Some("events.orders.*"), "events", f("events.orders.*")),
            (
                Some("*.orders.created"),
                "events",
                f("events.orders.created"),
            ),
            (Some("*.*.*"), "events", f("events.*.*")),
            (Some("a.*.c.>"), "a.b", f("a.b.c.>")),
            (Some("events"), "events", Narrowed::Nothing),
            (Some("*"), "events", Narrowed::Nothing),
            (Some("other.>"), "events", Narrowed::Nothing),
            (Some("a.c.>"), "a.b", Narrowed::Nothing),
            (Some("eventsx.a.b"), "events", Narrowed::Nothing),
        ] {
            assert_eq!(narrow(filter, prefix), want, "{filter:?} under {prefix}");
        }
    }
}
