//! # event-nats: the A3S Event provider on NATS JetStream
//!
//! [`NatsProvider`] implements [`event_core::EventProvider`] on a JetStream
//! stream with [async-nats](https://docs.rs/async-nats). It passes the whole
//! provider conformance suite against a real `nats-server`, survives server
//! restarts (tested with SIGKILL during a 100,000-event batch publish), and
//! publishes at the client's speed.
//!
//! ```no_run
//! use event_core::{Event, EventProvider};
//! use event_nats::{NatsConfig, NatsProvider};
//!
//! # async fn demo() -> event_core::Result<()> {
//! let provider = NatsProvider::connect(NatsConfig::default()).await?; // nats://127.0.0.1:4222
//! let event = Event::new(
//!     provider.build_subject("market", "forex.usd_cny"),
//!     "market",
//!     "USD/CNY broke through 7.35",
//!     "reuters",
//!     serde_json::json!({"rate": 7.3521}),
//! );
//! let sequence = provider.publish(&event).await?;
//!
//! let mut sub = provider
//!     .subscribe_durable("analytics", &provider.category_subject("market"))
//!     .await?;
//! while let Some(pending) = sub.next_manual_ack().await? {
//!     println!("{}: {}", pending.received.sequence, pending.event().summary);
//!     pending.ack().await?;
//! }
//! # let _ = sequence;
//! # Ok(()) }
//! ```
//!
//! ## Configuration
//!
//! [`NatsConfig`] has exactly the fields of the original `a3s-event` README
//! (URL, token, creds file, stream name, subject prefix, storage, limits,
//! timeouts); [`NatsProvider::connect`] uses it with default
//! [`NatsOptions`]. [`NatsProvider::connect_with`] adds what production
//! needs:
//!
//! | setting | where | default |
//! |---|---|---|
//! | URL(s), comma separated (`nats://`, `tls://`, `ws://`, `wss://`) | `NatsConfig::url` | `nats://127.0.0.1:4222` |
//! | stream name / subjects (`{prefix}.>`) | `stream_name`, `subject_prefix` | `A3S_EVENTS`, `events` |
//! | file or memory storage | `storage` | file |
//! | retention limits (0 = unlimited)¹ | `max_events`, `max_age_secs`, `max_bytes` | 100,000 / 7 days / unlimited |
//! | connect and request timeouts | `connect_timeout_secs`, `request_timeout_secs` | 5 s / 10 s |
//! | dedup window for `Nats-Msg-Id`¹ | `NatsOptions::duplicate_window` | 2 min (the max age, if shorter) |
//! | replicas (clusters)¹ | `NatsOptions::replicas` | 1 |
//! | discard policy when full¹ | `NatsOptions::discard` | old |
//! | what connecting does to an existing stream | `NatsOptions::existing_stream` | [`ExistingStream::Adopt`] |
//! | acks in flight per `publish_batch` | `NatsOptions::max_inflight_acks` | 256 |
//! | subscription prefetch ceiling | `NatsOptions::max_prefetch` | 256 |
//! | client pings (a silent server's connection is lost after two to three) | `NatsOptions::ping_interval` | 20 s |
//!
//! ¹ Settings of the stream: applied when the provider creates it. An
//! existing stream keeps its own by default.
//!
//! On connect the stream is created if absent. A stream that exists belongs
//! to whoever created it (an operator, another service sharing it): by
//! default ([`ExistingStream::Adopt`]) the provider keeps its limits, dedup
//! window, replicas and discard policy, logs each one that differs from the
//! config once at `WARN` (the stream, the setting, both values), and
//! changes only what it needs to work: it adds its `{subject_prefix}.>`
//! subject unless a wider subject of the stream such as `events.>`
//! captures it already, turns on `allow_direct` and turns publish
//! acknowledgements back on, lifts a per-subject message limit, and sets
//! interest or work-queue retention back to limits where the server allows
//! it. The update is made from the stream's configuration as the server
//! sends it, with only those fields changed: settings this build of
//! async-nats does not model (metadata, compression, subject transforms,
//! consumer limits, message TTLs of nats-server 2.10 and later) are kept
//! as the stream has them. Everything the provider reads from the stream (the dedup window that
//! applies, the replicas `history` chooses its reads by, the limit a full
//! stream names) is the stream's own. [`ExistingStream::Update`] applies the
//! config's settings in place as well (lowering a limit deletes the stored
//! events beyond it); [`ExistingStream::Verify`] changes nothing and refuses
//! any difference with [`Error::Conflict`](event_core::Error::Conflict)
//! naming each one. A different storage type is `Error::Conflict` in every
//! mode, and so is a change the server refuses (for example a retention
//! policy that nats-server 2.9 cannot change: such a stream would lose
//! events that no subscriber has consumed yet). A `{subject_prefix}.>` that
//! overlaps another stream's subjects is refused by the server; the error
//! names that stream and its overlapping subjects (found by listing the
//! streams by subject; where that is not allowed or takes over 2 s, the
//! server's message alone).
//!
//! ## Authentication and TLS
//!
//! - token: `NatsConfig::token`;
//! - user and password: `NatsOptions::{user, password}`;
//! - nkey: `NatsOptions::nkey_seed`;
//! - JWT + nkey `.creds` file (decentralised auth): `NatsConfig::credentials_path`;
//! - TLS: a `tls://` URL or `NatsOptions::tls.require`; a private CA with
//!   `tls.ca_file` (it replaces the system roots); mutual TLS with
//!   `tls.client_cert` (PEM certificate and key).
//!
//! A malformed nkey seed, a missing or malformed `.creds` file and a missing
//! or malformed TLS file (no PEM certificate, no PEM key) are
//! [`Error::InvalidConfig`](event_core::Error::InvalidConfig) before any I/O. A rejected nkey or JWT is
//! [`Error::Authentication`](event_core::Error::Authentication). TLS failures
//! (untrusted server certificate, client certificate missing or refused, a
//! connection refused or dropped during the handshake) are
//! [`Error::Connection`](event_core::Error::Connection) with the TLS error in
//! the message. `tls.require` or a `tls://` URL against a server without
//! TLS (its INFO, read on a plain connection of its own after the failed
//! handshake, offers none) is
//! [`Error::Unsupported`](event_core::Error::Unsupported), not transient,
//! saying to enable TLS on the server or to connect without it. All of this
//! is tested against a real server in `tests/security.rs`.
//!
//! ```no_run
//! use event_nats::{ClientCert, NatsConfig, NatsOptions, NatsProvider, TlsOptions};
//!
//! # async fn demo() -> event_core::Result<()> {
//! let config = NatsConfig {
//!     url: "tls://nats.internal:4222".into(),
//!     ..NatsConfig::default()
//! };
//! let options = NatsOptions {
//!     user: Some("orders".into()),
//!     password: Some(std::env::var("NATS_PASSWORD").unwrap_or_default()),
//!     tls: TlsOptions {
//!         require: true,
//!         ca_file: Some("/etc/nats/ca.pem".into()),
//!         client_cert: Some(ClientCert {
//!             cert_file: "/etc/nats/client.pem".into(),
//!             key_file: "/etc/nats/client-key.pem".into(),
//!         }),
//!     },
//!     ..NatsOptions::default()
//! };
//! let provider = NatsProvider::connect_with(config, options).await?;
//! # let _ = provider; Ok(()) }
//! ```
//!
//! Connection failures are distinct errors: a malformed URL or field is
//! [`Error::InvalidConfig`](event_core::Error::InvalidConfig) (before any
//! I/O), a refused or unreachable server
//! [`Error::Connection`](event_core::Error::Connection), rejected credentials
//! [`Error::Authentication`](event_core::Error::Authentication), a server
//! that does not answer within `connect_timeout_secs`
//! [`Error::Timeout`](event_core::Error::Timeout), a server running without
//! JetStream [`Error::Unsupported`](event_core::Error::Unsupported) saying
//! how to enable it (`-js`, or a `jetstream {}` block in its configuration
//! file), and so is one without the TLS the configuration requires: not
//! transient, so a retry loop does not spin on it (the server's
//! INFO tells it apart from a JetStream that is only starting, which stays
//! a transient `Connection` error).
//!
//! Credentials refused later, when the client reconnects (a password or
//! token rotated on the server but not in the service, a JWT that expired
//! or was revoked), are [`Error::Authentication`](event_core::Error::Authentication)
//! too: while the server's last word on a reconnection attempt is an
//! authorization violation (or an expired or revoked credential), the
//! operations that would report "not connected" (`publish`, `subscribe`,
//! `history`, `info`, `unsubscribe`, a subscription waiting for the
//! reconnection) fail with it, naming the server and saying that it
//! refused the credentials on reconnect, instead of the transient
//! `Connection` error a retry loop would spin on. The client keeps
//! reconnecting: once the server accepts the credentials again (the
//! secret rotated back, the service's credentials fixed on the server
//! side) the provider works again by itself, and a later attempt that
//! fails for another reason (the server down) makes it a transient
//! `Connection` error again. `health()` is `Ok(false)` throughout.
//!
//! ## Guarantees
//!
//! - **Publish**: the returned sequence is JetStream's, acknowledged by the
//!   server (stored on disk with file storage). The dedup id
//!   (`PublishOptions::msg_id`, default the event id) is sent as
//!   `Nats-Msg-Id`: a repeat inside the duplicate window returns the first
//!   sequence and stores nothing, so a publish that failed or timed out can be
//!   retried safely with the same id;
//!   `publish_shared_with_outcome` says which it was (`Some(true)` for a
//!   duplicate, from the acknowledgement's `duplicate`). Ids are compared exactly, as the
//!   memory provider does: nats-server skips the spaces before a header
//!   value (` a` would repeat `a`), so an id is sent as it is only when it
//!   is printable ASCII, starts and ends with no space and does not start
//!   with `~` (every generated id, and the ids of most applications: a
//!   message another client published with the same `Nats-Msg-Id` is a
//!   duplicate); any other id is sent as `~` followed by its UTF-8 bytes
//!   with each byte outside `!`..=`~` and each `%` written `%XX` (` a` is
//!   `~%20a`, `é` is `~%C3%A9`, `~a` is `~~a`), which no other id is sent
//!   as. `expected_sequence` is sent as `Nats-Expected-Last-Sequence`
//!   (mismatch:
//!   [`Error::WrongLastSequence`](event_core::Error::WrongLastSequence)).
//!   Events larger than the server's `max_payload` (the JSON and the
//!   headers as sent) are refused before sending (the limit of the server
//!   currently connected, raised or lowered by a reconnection); so is one
//!   the stream could never hold, larger than its `max_bytes` less the
//!   subject and nats-server's per-message overhead (34 bytes on file
//!   storage, 16 in memory): JetStream would acknowledge it and then
//!   discard every event of the stream, the new one too, to get under the
//!   limit. (The limit is the stream's as last read: at connect, by `info`
//!   and `health`, and again before an event is refused against it, so a
//!   limit raised elsewhere applies at once.) One larger than the stream's
//!   own `max_msg_size` (set by an administrator) is refused by the
//!   server. All are
//!   [`Error::PayloadTooLarge`](event_core::Error::PayloadTooLarge) with
//!   the limit that applied (for `max_bytes`, the largest event the stream
//!   holds on that subject). A full stream (`DiscardPolicy::New` and
//!   `max_events` or `max_bytes` reached) is
//!   [`Error::Conflict`](event_core::Error::Conflict) on the stream naming
//!   the limit (not transient: it empties only as events expire or are
//!   removed). So is a publish refused for a storage limit beyond the
//!   stream: the server's whole JetStream store full (its `max_file_store`
//!   / `max_memory_store`, or the disk; nats-server answers "insufficient
//!   resources" with status 503, as it answers an outage, but it lasts
//!   until space is freed), or the account's `max_file` / `max_mem`
//!   reached; the error names the limit and what frees it, and a retry
//!   loop on `is_transient()` does not spin on it.
//!   While the connection is down, publishes (and `subscribe`, `history`,
//!   `info`, `unsubscribe`) fail at once with
//!   [`Error::Connection`](event_core::Error::Connection) instead of
//!   queueing; a `history` read the connection drops under, its events on
//!   the way, fails with that error too (within the request timeout and
//!   a grace of 2 s), never returning the events that did arrive as the
//!   whole result. A publish no stream answers is that same transient error
//!   while JetStream is down or recovering, and
//!   [`Error::NotFound`](event_core::Error::NotFound) naming the stream when
//!   it was deleted (one stream-info request on that failure tells which).
//!   A stream whose subjects were changed elsewhere so that it no longer
//!   captures `{subject_prefix}.>` is `Error::Conflict` naming its
//!   subjects for a publish and a new subscription on those subjects
//!   (connecting again adds the subject back), and so is an event
//!   acknowledged by another stream that took those subjects (it is not in
//!   the provider's stream). A publish to a stream sealed elsewhere is
//!   `Error::Conflict` too.
//!   A publish's timeout (`PublishOptions::timeout`, else
//!   `request_timeout_secs`) also bounds the wait for room in the client's
//!   outgoing queue, which stays full while a stalled server (alive, not
//!   reading) holds the connection open.
//! - **Batch publish** pipelines the writes with at most `max_inflight_acks`
//!   unacknowledged publishes and reports one result per event, in order.
//!   Once a publish of the batch got no answer within `request_timeout_secs`
//!   (no acknowledgement, or no room in the outgoing queue: the server
//!   stalled), the events not sent yet fail at once with
//!   [`Error::Timeout`](event_core::Error::Timeout) (not sent; retry them
//!   with the same ids), so a batch to a stalled server ends within about
//!   two request timeouts rather than one per window of acks.
//! - **Subscriptions** are pull consumers with explicit acks: at-least-once.
//!   Durables keep their position on the server; ephemeral consumers are
//!   deleted when the subscription is closed or dropped (and expire on the
//!   server after two idle minutes if the process dies). Ephemerals get
//!   the stream's replicas (JetStream would make them a single replica):
//!   in a cluster, when the node leading one is lost, it fails over with
//!   the stream and the subscription goes on once its open pull expires,
//!   instead of stalling while that node is down. A consumer the
//!   server no longer has (a restart, an administrator, another process's
//!   `unsubscribe`) is noticed when a pull goes unanswered (within 7 s: a
//!   5 s pull expiry and 2 s for the server's answer): a durable's
//!   subscription returns [`Error::NotFound`](event_core::Error::NotFound);
//!   an ephemeral is recreated at its oldest unsettled delivery, else after
//!   the last event it handed out, else where it started, so nothing is
//!   skipped (deliveries of the new consumer count from 1 again). If the
//!   stream itself was replaced meanwhile (the server restarted on an
//!   empty store, or the stream was deleted and created again: it was
//!   created after the lost consumer, or ends before an event the
//!   subscription received), its sequences started again at 1 and every
//!   event in it is newer than the subscription: the ephemeral is
//!   recreated at the new stream's first event (a `ByStartTime` one at its
//!   start time), with a `WARN`. What the old stream held that it had not
//!   received, and its deliveries not settled, are gone with the old
//!   store; nothing tells how many, so no `Lagged` is reported. While the
//!   stream is missing, the ephemeral's calls return
//!   [`Error::NotFound`](event_core::Error::NotFound) naming the stream. A
//!   durable is gone with its stream: its subscription returns `NotFound`
//!   naming the consumer, and subscribing again creates it in the new
//!   stream, read by its deliver policy. A durable
//!   deleted and created again under its name ends the old one's
//!   subscriptions too (a pull request goes to whatever consumer has the
//!   name): at once when the deletion went through this provider (or a
//!   clone), else when their open pull hears of it. A subscription with no
//!   pull open while another process deletes its durable and creates one of
//!   the same name cannot tell (nats-server gives a consumer no identity
//!   beyond its name; its creation time changes across restarts) and reads
//!   the new durable. `ack`, `nak`,
//!   `nak_with_delay`, `term` and `in_progress` map to JetStream's `+ACK`,
//!   `-NAK`, `-NAK {delay}`, `+TERM` and `+WPI`; a nak of a final delivery
//!   is sent as `+TERM`. `backoff` maps to the consumer's; with a backoff,
//!   JetStream uses `backoff[0]` as the ack wait. `max_deliver` maps to the
//!   consumer's plus one, the spare delivery of the contract: JetStream
//!   stops at its limit whether or not the last delivery was settled, so a
//!   final delivery whose holder crashed would end the event unreported;
//!   with the spare it comes once more, still final. The consumer's
//!   description marks it (a durable made without it, by an earlier version
//!   or another client, is updated when a subscription with a `max_deliver`
//!   resumes it; one without leaves a durable's description alone).
//!   Fewer deliveries than backoff steps is
//!   [`Error::InvalidConfig`](event_core::Error::InvalidConfig) before any
//!   I/O (every nats-server refuses it); older servers (2.9, for example)
//!   also refuse a backoff with an unlimited `max_deliver`, which newer
//!   ones accept: that refusal is `InvalidConfig` on `backoff` naming the
//!   server version, the combination and the `max_deliver` to set. An ack wait, backoff step
//!   or nak delay longer than a century is a century (JetStream counts i64
//!   nanoseconds and adds them to the clock), and a `ByStartTime` after
//!   2262-04-11 (where those nanoseconds end) starts after every stored
//!   event. A `ByStartTime` start is compared with the time nats-server
//!   stored each event (its clock, not the event's `timestamp` nor this
//!   process's clock); one in the future starts at the next event stored,
//!   whatever its time (as on the memory provider). A durable keeps the
//!   start it was created with: resumed with another one (say
//!   `now - 1 h`, recomputed at each start of a service) it is
//!   [`Error::Conflict`](event_core::Error::Conflict) on `deliver_policy`
//!   from its second start on; give it a fixed timestamp, or `All`. A stored message that is not an event is terminated and
//!   returned once as [`Error::Undecodable`](event_core::Error::Undecodable)
//!   (ephemeral and durable subscriptions alike), and `history` skips it.
//!   That includes an event whose `subject` is not the subject it is
//!   stored under (another client's message claiming, say, `admin.grant`
//!   while published to `public.note`): filters, durables and `history`
//!   go by the stored subject, so it would reach the readers of one
//!   subject saying it is another's; the error's `subject` is the stored
//!   one and its reason names both. So a stream whose messages the server
//!   stores under other subjects than they were published on (subject
//!   transforms, a sourced or mirrored stream with a transform, account
//!   subject mappings onto the stream's subjects) is not supported: each of
//!   its events would be reported this way. A stored message is read by
//!   its body and subject alone: headers another client stored with it,
//!   even a header block starting with a status line of its own (a
//!   relayed reply's `NATS/1.0 404 No Messages`), change nothing, as long
//!   as the NATS client can parse them. **Known limitation:** a header
//!   block async-nats cannot parse (a line without a colon, say, which
//!   another client can store with a raw `HPUB`) fails the client's
//!   protocol parser when the message arrives: the connection drops and
//!   reconnects, the delivery in flight is lost to that fetch (redelivered
//!   after its ack wait, with the same result, until `max_deliver` ends
//!   it) and a `history` read covering the message fails with
//!   [`Error::Connection`](event_core::Error::Connection) (as any read
//!   whose deliveries a dropped connection lost does: it never returns
//!   part of the events as if they were all).
//!   It is not reported as `Undecodable`, because this crate never sees
//!   it. Only writers that bypass the NATS clients' header API can store
//!   such a block; deny them publish permission on the stream's subjects.
//!   The error's `raw` keeps the body byte
//!   for byte: the body itself when it is UTF-8 text that does not start
//!   with `base64:`, else `base64:` followed by the standard (padded)
//!   base64 of its bytes (the reason then says so). An `EventBus` with a
//!   DLQ handler dead-letters the message with `raw` as its payload (a
//!   JSON string), so the dead letter, the only copy once the message is
//!   terminated, holds the original bytes: a payload starting with
//!   `base64:` is the base64 of the body, any other is its text.
//! - **Prefetch**: a subscription asks the server for one event at a time for
//!   its first 8 deliveries, so a caller that stops early leaves no fetched
//!   but unseen events behind (they would count as a delivery). After that it
//!   doubles its pull size up to `max_prefetch`, bounded by `max_ack_pending`
//!   and by how many events the caller handles in a quarter of the ack wait.
//!   Everything fetched is handed out, however slowly the caller reads it
//!   (async-nats's own batches drop what they still hold 5 s after their
//!   expiry; the provider reads its pull requests itself). While events
//!   wait to be handed out, each call of the subscription keeps them alive:
//!   one that has waited a quarter of the shortest ack wait (the ack wait,
//!   or the shortest `backoff` step) gets an `in_progress`, so a caller that
//!   slows down after a fast start is not handed redeliveries of events
//!   still waiting for their first turn. That needs a call at least every
//!   half of the ack wait: a caller that pauses longer between calls calls
//!   `Subscription::keep_alive` meanwhile (a consumer runner does so while
//!   all its handler slots are busy), or uses `max_prefetch = 1`.
//!   Events fetched
//!   ahead and never handed out are naked when a durable's subscription is
//!   closed (a consumer runner's graceful shutdown closes it), so its next
//!   subscription, in this process or another, gets them at once, with
//!   their delivery count increased. A subscription dropped without
//!   `close` leaves them to be redelivered after the ack wait; set
//!   `max_prefetch = 1` where that matters more than throughput. A
//!   subscription with `max_deliver` never fetches ahead: each event fetched
//!   and not handed out would lose one of its deliveries to a close or a
//!   restart, so a backlog read through a few rolling restarts would use up
//!   its events' attempts (the spare delivery included) unseen. Only the
//!   pull request of a cancelled call (below) can still bring one event
//!   that no call is waiting for. **Known gap:** when that event is a spare
//!   delivery (a final delivery left unsettled, by a crash say, coming once
//!   more) and the subscription is closed or dropped before a call hands it
//!   out, the event ends neither handled nor dead-lettered: JetStream never
//!   delivers a spare again, and the close can only hand it back. A
//!   consumer runner told to stop while it waits for an event is such a
//!   cancelled call: a spare that falls due while it drains its handlers
//!   (within the pull request's 5 s) is lost that way, so one crash and a
//!   graceful shutdown soon after can end an event. The close logs a
//!   warning naming the consumer and the event's stream sequence; reconcile
//!   from the stream (`history`) where that matters. The memory provider
//!   has no such gap.
//! - **History** returns exactly the newest `limit` matches, newest first,
//!   without reading the whole stream. Unfiltered, it reads the tail with a
//!   short-lived consumer. Filtered, it counts the matches first (a consumer
//!   at the stream start, created alongside the stream-info request), sizes
//!   a tail window from the match density, and reads it with a consumer when
//!   matches are dense or by stepping through it with parallel
//!   `next_by_subj` direct gets when they are sparse; short windows are
//!   followed by older ones sized from the matches left. A filter is first
//!   narrowed to the stream's `<prefix>.>` (a filter outside it returns
//!   nothing). Measured on a 100,000-event stream, limit 100 (nats-server
//!   2.9, file storage): 1.7 ms unfiltered, 2.3-2.8 ms for filters matching
//!   100%-10%, 6.3-6.5 ms at 1%; at 0.1% (100 matches) the server has to scan
//!   the whole stream (~16 ms). The provider enables `allow_direct` on its
//!   stream (updated in place on connect); direct gets are used only on
//!   single-replica streams (a follower may lag), leader message gets
//!   otherwise. Each `history` call uses consumer slots of the stream (its
//!   `max_consumers`) and of the account while it runs (each deleted
//!   before the call returns, so `info` right after it does not count it;
//!   a call that fails or is dropped part-way leaves its deletion to a
//!   background task; a deletion the server refuses, the user not allowed
//!   to delete consumers, is not waited for and leaves the consumer to its
//!   10 s inactivity threshold), beside those of the subscriptions: unfiltered, one on
//!   a non-empty stream; filtered, always one (the counting consumer), up
//!   to two at once. At either limit a new
//!   subscription or `history` call is
//!   [`Error::Conflict`](event_core::Error::Conflict) on the stream naming
//!   the limit (not transient: it lasts until a consumer is deleted).
//! - **Reconnection** is async-nats's (automatic, unlimited); connection
//!   changes are logged through `tracing` (target `event_nats`): one `WARN`
//!   when the connection is lost, one `WARN` when it is re-established
//!   (with `down_for` and `failed_attempts`), each failed reconnection
//!   attempt at `DEBUG`, and a reminder `WARN` once a minute while it stays
//!   down; a server refusing the credentials on reconnect is one more
//!   `WARN` per outage, at the first refusal (see above for the error
//!   operations get meanwhile). Dropping the provider (its last clone,
//!   subscription and manual delivery held: a normal exit) closes the
//!   connection with a `DEBUG` line, once what was queued (the last
//!   acknowledgements) is sent, within `request_timeout_secs`, by the
//!   runtime that connected (wherever the drop happens, even outside any
//!   runtime, while that one runs); a delivery
//!   settled after its subscription and provider were dropped (a shutdown
//!   letting handlers finish) reaches the server. A close the application
//!   did not cause is a `WARN`. async-nats
//!   also logs every connection
//!   event itself at `INFO`
//!   (target `async_nats`, `event: ...`, one per attempt): filter it with
//!   `async_nats=warn`. [`NatsProvider::is_connected`]
//!   and `health()` (connection state plus a stream lookup, and for a
//!   replicated stream a leader that has heard from a quorum of its
//!   replicas within 5 s) report it. A
//!   subscription waiting for events when the connection is lost (or
//!   called after a loss that came while its caller was busy with an
//!   event) hands out what it already received, then waits up to
//!   `request_timeout_secs` for the reconnection: it pulls again if the
//!   connection comes back meanwhile (never waiting for a pull request the
//!   lost connection took with it), and returns
//!   [`Error::Connection`](event_core::Error::Connection) otherwise (each
//!   later call waits the same way); it stays usable and pulls again once
//!   the connection is back. A connection is lost when it closes, or when
//!   the server goes silent (a network partition that drops packets
//!   without closing anything: a half-open connection), two to three
//!   [`NatsOptions::ping_interval`]s after its last message (20 s by
//!   default, so within a minute). Until then only publishes and requests
//!   fail, each after its timeout, and `health()` turns false: a
//!   subscription waits silently, so alert on `health()` or on publish
//!   errors.
//!   Acknowledgements made while the connection is down are queued and sent
//!   on reconnection; once the client's outgoing buffer is full, one that
//!   cannot be queued within `request_timeout_secs` is
//!   [`Error::Timeout`](event_core::Error::Timeout) (an auto-ack is logged
//!   and the event redelivered) instead of waiting for the server. A call
//!   cancelled while it waits (a `select!` branch that lost, a timeout)
//!   loses nothing: a delivery it had already received is returned by the
//!   next call. Its pull request stays open for that, so an event that
//!   arrives meanwhile has its ack wait running at the server before the
//!   next call hands it out: a caller that comes back only after the ack
//!   wait may get that delivery and its redelivery back to back (the memory
//!   provider starts the wait when it hands an event out). Call again
//!   within the ack wait, or set an ack wait longer than the gaps between
//!   calls. A spare delivery that arrives that way and is not handed out
//!   before the subscription is closed or dropped is lost (the known gap
//!   above).
//!   The connection runs on the Tokio runtime that called
//!   [`NatsProvider::connect`] (async-nats spawns its connection task
//!   there). Once that runtime is shut down the task is gone and nothing
//!   reconnects: every call of the provider and of its subscriptions
//!   (publishes, `subscribe`, `history`, `info`, `unsubscribe`, a
//!   subscription's next delivery, acks, `close`) fails at once with
//!   [`Error::Closed`](event_core::Error::Closed), not transient, saying
//!   that the client's connection task is gone and to connect again;
//!   `is_connected()` is false and `health()` `Ok(false)` for good.
//!   Connect on a runtime that lives as long as the provider is used (a
//!   provider connected inside one `Runtime::block_on` or `#[tokio::test]`
//!   and used after that runtime is dropped is this case).
//! - **Durables**: changed `ack_wait`, `max_deliver`, `max_ack_pending`,
//!   `backoff` or filter are applied to the existing consumer (a changed
//!   filter only on nats-server 2.9.14 and later: older servers accept it
//!   and keep matching with parts of the old one, so a literal filter
//!   changed to a wildcard one would skip every event; there it is
//!   [`Error::Conflict`](event_core::Error::Conflict)); a different
//!   `deliver_policy` (which applies at creation only) is
//!   [`Error::Conflict`](event_core::Error::Conflict), and so is a consumer
//!   of that name made by another client as a push consumer, with an ack
//!   policy other than explicit, with `headers_only` (events without their
//!   bodies) or with `replay_policy: original` (events at the pace they
//!   were stored; JetStream cannot change it). Such a consumer's
//!   `max_batch` and `max_expires` are kept: pull requests are sized
//!   within them (read again if the server refuses one for them; a refusal
//!   no request gets past is a `Conflict` from `next()`). An update is
//!   made from the consumer's configuration as the server reports it, with
//!   only the subscription's settings changed (filter, `ack_wait`,
//!   `max_deliver`, `max_ack_pending`, `backoff`; the description only for
//!   the spare-delivery mark of a limited `max_deliver`): every other
//!   setting stays, these limits, `max_waiting`, the inactivity threshold,
//!   replicas and storage as well as what async-nats does not model in this
//!   build (`metadata`, `pause_until`, priority groups on nats-server 2.10
//!   and later), whatever the server version. Two processes
//!   creating one durable at the same time get the same: the creation that
//!   loses the race is settled as if the consumer had existed (options
//!   applied, or `Conflict`). Subscriptions already open on a durable
//!   whose options another one changed (another process, in a rolling
//!   deploy) follow: while in use, a durable subscription reads its
//!   consumer again when what it read is older than a second (a
//!   `CONSUMER.INFO` request in the background, one at a time; on failure
//!   it keeps what it had), and the ack wait its deliveries report
//!   ([`PendingEvent::ack_wait`](event_core::PendingEvent::ack_wait)) is a
//!   live view of it, so their holders keep them alive against a shortened
//!   wait (JetStream applies it to the deliveries already held).
//! - **Permissions**: nats-server never answers a request the user's
//!   permissions deny; it reports a `Permissions Violation` on the
//!   connection, which the provider matches to its own requests. A denied
//!   request (connect's stream lookup, creation or update, a publish, a
//!   consumer creation, lookup or deletion, a pull, `history`'s reads,
//!   `info`) or a denied subscription to the `_INBOX` subjects replies and
//!   pulled events arrive on is
//!   [`Error::Authentication`](event_core::Error::Authentication) at once,
//!   naming the denied subject and the permission to grant, instead of a
//!   timeout, an empty `history` or a subscription that waits forever (it
//!   fails on each call). Acknowledgements get no reply: a denied one is
//!   reported by the subscription's next call (and later `ack`s, `close`),
//!   and its event is redelivered after the ack wait. The permissions the
//!   provider needs are in the deployment guide.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod connection;
mod denial;
mod error;
mod history;
mod provider;
mod pull;
mod raw;
mod settings;
mod stored;
mod stream;
mod subscription;

pub use config::{
    ClientCert, DEFAULT_PING_INTERVAL, DiscardPolicy, ExistingStream, MAX_PING_INTERVAL,
    NatsConfig, NatsOptions, StorageType, TlsOptions,
};
pub use provider::NatsProvider;
