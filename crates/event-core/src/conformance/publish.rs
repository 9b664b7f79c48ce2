//! Publishing: dedup ids and the publish outcome, `expected_sequence`,
//! payload limits, `publish_shared`, `publish_batch`, and `info`'s counts.

use super::{ProviderFactory, assert_invalid_subject, event, n_of, publish_n, recv, skip};
use crate::{Error, Event, PublishOptions};
use serde_json::json;
use std::sync::Arc;

#[cfg(doc)]
use crate::EventProvider;

/// A repeated dedup id returns the first sequence and stores nothing, on
/// any subject: dedup is per stream, not per subject. Nor is it delivered:
/// a live subscription gets each stored event once, and no repeat.
pub async fn msg_id_deduplicates(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut live = p
        .subscribe(&p.category_subject("dup"))
        .await
        .expect("subscribe");
    let e = event(&*p, "dup", "t", 1);
    let first = p.publish(&e).await.expect("publish");
    let again = p.publish(&e).await.expect("republish");
    assert_eq!(first, again, "same event id: same sequence");
    let opts = PublishOptions {
        msg_id: Some("order-42".into()),
        ..PublishOptions::default()
    };
    let a = p
        .publish_with_options(&event(&*p, "dup", "t", 2), &opts)
        .await
        .expect("publish");
    let b = p
        .publish_with_options(&event(&*p, "dup", "t", 3), &opts)
        .await
        .expect("publish");
    assert_eq!(a, b, "same msg id: same sequence");
    let c = p
        .publish_with_options(&event(&*p, "dup", "other", 4), &opts)
        .await
        .expect("publish");
    assert_eq!(
        a, c,
        "same msg id on another subject: same sequence (dedup is per stream)"
    );
    let mut moved = e.clone();
    moved.subject = p.build_subject("dup", "elsewhere");
    assert_eq!(
        p.publish(&moved).await.expect("republish"),
        first,
        "same event id on another subject: same sequence (dedup is per stream)"
    );
    let history = p
        .history(Some(&p.category_subject("dup")), 10)
        .await
        .expect("history");
    assert_eq!(
        history.iter().map(n_of).collect::<Vec<_>>(),
        vec![2, 1],
        "duplicates stored nothing"
    );
    assert_eq!(p.info().await.expect("info").messages, 2);
    // a sentinel ends what the live subscription got
    p.publish(&event(&*p, "dup", "t", 5))
        .await
        .expect("publish");
    let mut got = Vec::new();
    loop {
        let n = n_of(
            &recv(
                &mut live,
                &caps,
                "the live subscription: the stored events, then the sentinel n=5",
            )
            .await
            .event,
        );
        got.push(n);
        if n == 5 {
            break;
        }
    }
    assert_eq!(
        got,
        vec![1, 2, 5],
        "a live subscription gets each stored event once, and no repeat (the repeats of a \
         dedup id stored nothing)"
    );
}

/// [`EventProvider::publish_shared_with_outcome`] tells a stored event from
/// a duplicate, when the provider says at all: the first publish of a dedup
/// id is stored, a repeat inside the window is a duplicate with the first
/// sequence. A provider that does not say (the trait's default, `None`)
/// says so for both. Its [`PublishOptions`] count as in
/// `publish_with_options`: a repeated `msg_id` is a duplicate, a stale
/// `expected_sequence` is `WrongLastSequence`.
pub async fn publish_outcome_reports_duplicates(factory: &dyn ProviderFactory) {
    let p = factory.create().await;
    let e = Arc::new(event(&*p, "outcome", "t", 1));
    let opts = PublishOptions::default();
    let first = p
        .publish_shared_with_outcome(Arc::clone(&e), &opts)
        .await
        .expect("publish");
    let again = p
        .publish_shared_with_outcome(Arc::clone(&e), &opts)
        .await
        .expect("republish");
    assert_eq!(
        first.sequence, again.sequence,
        "a duplicate: the first sequence"
    );
    match (first.duplicate, again.duplicate) {
        (None, None) => println!(
            "conformance: {} does not say whether a publish was a duplicate \
             (publish_shared_with_outcome returns None); the bus then routes every repeat",
            p.name()
        ),
        (Some(false), Some(true)) => {}
        other => panic!(
            "publish_shared_with_outcome: the first publish must be stored (Some(false)) and \
             its repeat a duplicate (Some(true)), or both None; got {other:?}"
        ),
    }
    // A plain publish of the same id is a duplicate too, and a new id is not.
    let plain = p.publish(&e).await.expect("publish");
    assert_eq!(plain, first.sequence);
    let other = p
        .publish_shared_with_outcome(Arc::new(event(&*p, "outcome", "t", 2)), &opts)
        .await
        .expect("publish");
    assert!(other.sequence > first.sequence);
    if first.duplicate.is_some() {
        assert_eq!(other.duplicate, Some(false), "a new dedup id is stored");
    }
    assert_eq!(p.info().await.expect("info").messages, 2);
    // the options count as in publish_with_options: the dedup id ...
    let by_id = PublishOptions {
        msg_id: Some("outcome-key".into()),
        ..PublishOptions::default()
    };
    let keyed = p
        .publish_shared_with_outcome(Arc::new(event(&*p, "outcome", "t", 3)), &by_id)
        .await
        .expect("publish");
    let rekeyed = p
        .publish_shared_with_outcome(Arc::new(event(&*p, "outcome", "t", 4)), &by_id)
        .await
        .expect("publish");
    assert_eq!(
        keyed.sequence, rekeyed.sequence,
        "publish_shared_with_outcome of two events with the same PublishOptions::msg_id: the \
         repeat must return the first one's sequence (the options count as in \
         publish_with_options)"
    );
    if keyed.duplicate.is_some() {
        assert_eq!(
            (keyed.duplicate, rekeyed.duplicate),
            (Some(false), Some(true)),
            "publish_shared_with_outcome with a repeated PublishOptions::msg_id: (first, repeat)"
        );
    }
    // ... and the expected sequence
    let stale = PublishOptions {
        expected_sequence: Some(first.sequence),
        ..PublishOptions::default()
    };
    match p
        .publish_shared_with_outcome(Arc::new(event(&*p, "outcome", "t", 5)), &stale)
        .await
    {
        Err(Error::WrongLastSequence { expected, .. }) => assert_eq!(expected, first.sequence),
        other => panic!(
            "publish_shared_with_outcome with a stale PublishOptions::expected_sequence: \
             expected WrongLastSequence (the options count as in publish_with_options), got \
             {other:?}"
        ),
    }
    assert_eq!(
        p.info().await.expect("info").messages,
        3,
        "the repeated msg_id and the conflict stored nothing"
    );
}

/// An empty dedup id (or one with control characters) is refused before
/// sending, as JetStream refuses it; it never becomes one dedup key that
/// silently swallows every later publish using it. Every publish path
/// refuses it: `publish_with_options`, the shared forms (which the event
/// bus uses) and `publish_batch`.
pub async fn unusable_msg_id_refused(factory: &dyn ProviderFactory) {
    let p = factory.create().await;
    let refused = |path: &str, what: &str, result: crate::Result<u64>| match result {
        Err(Error::InvalidConfig { .. }) => {}
        other => panic!("{path}, {what}: expected InvalidConfig, got {other:?}"),
    };
    for id in ["", "a\r\nb", "\u{0}"] {
        let opts = PublishOptions {
            msg_id: Some(id.to_string()),
            ..PublishOptions::default()
        };
        let what = format!("msg_id {id:?}");
        for n in 0..2 {
            let e = event(&*p, "badid", "t", n);
            refused(
                "publish_with_options",
                &what,
                p.publish_with_options(&e, &opts).await,
            );
            refused(
                "publish_shared_with_options",
                &what,
                p.publish_shared_with_options(Arc::new(e.clone()), &opts)
                    .await,
            );
            refused(
                "publish_shared_with_outcome",
                &what,
                p.publish_shared_with_outcome(Arc::new(e), &opts)
                    .await
                    .map(|outcome| outcome.sequence),
            );
        }
    }
    let what = "an empty event id as the dedup id";
    for n in 0..2 {
        let mut e = event(&*p, "badid", "t", 9 + n);
        e.id = String::new();
        refused("publish", what, p.publish(&e).await);
        refused(
            "publish_shared",
            what,
            p.publish_shared(Arc::new(e.clone())).await,
        );
        refused(
            "publish_shared_with_outcome",
            what,
            p.publish_shared_with_outcome(Arc::new(e.clone()), &PublishOptions::default())
                .await
                .map(|outcome| outcome.sequence),
        );
        match p.publish_batch(std::slice::from_ref(&e)).await {
            Ok(results) => match results.as_slice() {
                [Err(Error::InvalidConfig { .. })] => {}
                other => {
                    panic!("publish_batch, {what}: expected [Err(InvalidConfig)], got {other:?}")
                }
            },
            Err(other) => {
                panic!("publish_batch, {what}: expected [Err(InvalidConfig)], got {other:?}")
            }
        }
    }
    assert_eq!(p.info().await.expect("info").messages, 0, "nothing stored");
}

/// `expected_sequence` publishes only on the expected last sequence, the
/// stream's (any subject's), not the last one of the event's subject; 0
/// is the last sequence of a stream nothing was published to yet (a
/// publish that succeeds only onto a new stream).
pub async fn expected_sequence_conflict(factory: &dyn ProviderFactory) {
    let p = factory.create().await;
    // 0: the stream must be empty (publish once, onto a new stream)
    let empty = PublishOptions {
        expected_sequence: Some(0),
        ..PublishOptions::default()
    };
    let s1 = p
        .publish_with_options(&event(&*p, "exp", "t", 1), &empty)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "expected_sequence 0 on an empty stream: expected the publish to succeed, got {e}"
            )
        });
    let ok = PublishOptions {
        expected_sequence: Some(s1),
        ..PublishOptions::default()
    };
    let s2 = p
        .publish_with_options(&event(&*p, "exp", "t", 2), &ok)
        .await
        .expect("expected matches");
    assert!(s2 > s1);
    let stale = PublishOptions {
        expected_sequence: Some(s1),
        ..PublishOptions::default()
    };
    match p
        .publish_with_options(&event(&*p, "exp", "t", 3), &stale)
        .await
    {
        Err(Error::WrongLastSequence { expected, .. }) => assert_eq!(expected, s1),
        other => panic!("expected WrongLastSequence, got {other:?}"),
    }
    assert_eq!(
        p.info().await.expect("info").messages,
        2,
        "the conflicting event was not stored"
    );
    // the stream's last sequence, whatever subject it was published on
    let s3 = p
        .publish(&event(&*p, "exp", "other", 4))
        .await
        .expect("publish");
    let subject_last = PublishOptions {
        expected_sequence: Some(s2),
        ..PublishOptions::default()
    };
    match p
        .publish_with_options(&event(&*p, "exp", "t", 5), &subject_last)
        .await
    {
        Err(Error::WrongLastSequence { expected, .. }) => assert_eq!(expected, s2),
        other => panic!(
            "expected_sequence {s2}, the last sequence of the event's subject, while the \
             stream's last is {s3} (on another subject): expected WrongLastSequence \
             (expected_sequence is the stream's last sequence, not the subject's), got \
             {other:?}"
        ),
    }
    let stream_last = PublishOptions {
        expected_sequence: Some(s3),
        ..PublishOptions::default()
    };
    let s4 = p
        .publish_with_options(&event(&*p, "exp", "t", 6), &stream_last)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "expected_sequence {s3}, the stream's last sequence (published on another \
                 subject): expected the publish to succeed, got {e}"
            )
        });
    assert!(s4 > s3);
    match p
        .publish_with_options(&event(&*p, "exp", "t", 7), &empty)
        .await
    {
        Err(Error::WrongLastSequence { expected: 0, .. }) => {}
        other => panic!(
            "expected_sequence 0 (the stream must be empty) on a stream at {s4}: expected \
             WrongLastSequence (0 is a sequence to compare, not \"no check\"), got {other:?}"
        ),
    }
}

/// An event whose encoded size is over the provider's limit is
/// `PayloadTooLarge` and not stored, even when its payload alone is under
/// the limit, by `publish` and `publish_batch` alike; an event of exactly
/// the limit is accepted ("exceeds" is strict), and a refusal reports a
/// size over the limit.
pub async fn payload_over_limit_rejected(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let Some(max) = caps.max_payload else {
        skip(
            "payload_over_limit_rejected",
            p.name(),
            "capabilities.max_payload is None",
        );
        return;
    };
    let mut e = event(&*p, "big", "t", 0);
    e.payload = json!({ "blob": "x".repeat(max + 1) });
    match p.publish(&e).await {
        Err(Error::PayloadTooLarge { size, max: limit }) => {
            assert!(size > limit);
        }
        other => panic!(
            "expected PayloadTooLarge, got {other:?}: the event's payload alone is over \
             Capabilities::max_payload ({max} bytes); set it to the provider's real limit (or \
             None, to skip the payload-limit checks)"
        ),
    }
    // the limit applies to the encoded event, not to the payload alone: a
    // payload just under it leaves no room for the id, subject and the rest
    let mut e = event(&*p, "big", "t", 0);
    e.payload = json!({ "blob": "x".repeat(max.saturating_sub(16)) });
    match p.publish(&e).await {
        Err(Error::PayloadTooLarge { size, max: limit }) => {
            assert!(size > limit);
        }
        other => panic!(
            "a payload under the limit in an encoded event over it: expected \
             PayloadTooLarge, got {other:?}"
        ),
    }
    // "exceeds" is strict: an event of exactly the limit is accepted. Its
    // JSON is `max` bytes; a provider that counts more than the JSON (what
    // its backend stores beside the event) refuses it, and must then say a
    // size over the limit, and accept the event that many bytes smaller
    let at_limit = |n: u64, bytes: usize| -> Event {
        let mut e = event(&*p, "big", "t", n);
        e.payload = json!({ "blob": "" });
        let base = serde_json::to_vec(&e).map_or(0, |json| json.len());
        e.payload = json!({ "blob": "x".repeat(bytes.saturating_sub(base)) });
        e
    };
    let exact = at_limit(2, max);
    match p.publish(&exact).await {
        Ok(_) => {}
        Err(Error::PayloadTooLarge { size, max: limit }) if size > limit => {
            let framing = size - limit;
            let smaller = at_limit(3, max.saturating_sub(framing));
            if let Err(e) = p.publish(&smaller).await {
                panic!(
                    "the provider refused an event whose JSON is {max} bytes as {size} bytes, \
                     over its limit {limit}; the same event {framing} bytes smaller ({limit} \
                     bytes by the provider's own count) must be accepted (only an event that \
                     exceeds the limit is PayloadTooLarge), got {e}"
                );
            }
        }
        Err(Error::PayloadTooLarge { size, max: limit }) => panic!(
            "an event whose JSON is exactly Capabilities::max_payload ({max} bytes) was refused \
             as PayloadTooLarge of {size} bytes with a limit of {limit}: only an event that \
             exceeds the limit is refused (size > max)"
        ),
        Err(other) => panic!(
            "an event whose JSON is exactly Capabilities::max_payload ({max} bytes): expected \
             it accepted (or PayloadTooLarge over the limit, if the provider counts more than \
             the JSON), got {other}"
        ),
    }
    assert_eq!(
        p.info().await.expect("info").messages,
        1,
        "the events over the limit stored nothing, the one at the limit is stored"
    );
    let mut small = event(&*p, "big", "t", 1);
    small.payload = json!({ "blob": "x".repeat(max / 2) , "n": 1});
    p.publish(&small)
        .await
        .expect("an event under the limit is accepted");
    assert_eq!(p.info().await.expect("info").messages, 2);
    // a batch refuses the event over the limit alone (a pipelining
    // provider's own path)
    let mut big = event(&*p, "big", "t", 4);
    big.payload = json!({ "blob": "x".repeat(max + 1) });
    let results = p
        .publish_batch(&[big, event(&*p, "big", "t", 5)])
        .await
        .expect("publish_batch");
    match results.as_slice() {
        [Err(Error::PayloadTooLarge { size, max: limit }), Ok(_)] if size > limit => {}
        other => panic!(
            "publish_batch of an event over the limit and a small one: expected \
             [Err(PayloadTooLarge), Ok], got {other:?}"
        ),
    }
    assert_eq!(
        p.info().await.expect("info").messages,
        3,
        "the batch stored its small event alone"
    );
}

/// A payload nested [`MAX_PAYLOAD_DEPTH`](crate::MAX_PAYLOAD_DEPTH) levels
/// deep is stored and read back intact; one level deeper is
/// `Error::Serialization` at publish and nothing is stored (JSON readers
/// could never read it back: accepting it would lose it).
pub async fn payload_too_deep_rejected(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut sub = p
        .subscribe(&p.category_subject("deep"))
        .await
        .expect("subscribe");
    let mut deepest = event(&*p, "deep", "t", 0);
    deepest.payload = nested(crate::MAX_PAYLOAD_DEPTH);
    p.publish(&deepest)
        .await
        .expect("a payload nested MAX_PAYLOAD_DEPTH levels deep is accepted");
    let got = recv(
        &mut sub,
        &caps,
        "the payload nested MAX_PAYLOAD_DEPTH levels deep",
    )
    .await;
    assert_eq!(
        *got.event, deepest,
        "a payload nested MAX_PAYLOAD_DEPTH levels deep must read back intact"
    );
    let mut too_deep = event(&*p, "deep", "t", 1);
    too_deep.payload = nested(crate::MAX_PAYLOAD_DEPTH + 1);
    match p.publish(&too_deep).await {
        Err(Error::Serialization(_)) => {}
        other => panic!(
            "a payload nested deeper than MAX_PAYLOAD_DEPTH: expected Error::Serialization \
             at publish, got {other:?}"
        ),
    }
    match p.publish_shared(Arc::new(too_deep.clone())).await {
        Err(Error::Serialization(_)) => {}
        other => panic!(
            "publish_shared of a payload nested deeper than MAX_PAYLOAD_DEPTH: expected \
             Error::Serialization, got {other:?}"
        ),
    }
    match p
        .publish_shared_with_options(Arc::new(too_deep.clone()), &PublishOptions::default())
        .await
    {
        Err(Error::Serialization(_)) => {}
        other => panic!(
            "publish_shared_with_options of a payload nested deeper than MAX_PAYLOAD_DEPTH: \
             expected Error::Serialization, got {other:?}"
        ),
    }
    match p
        .publish_shared_with_outcome(Arc::new(too_deep.clone()), &PublishOptions::default())
        .await
    {
        Err(Error::Serialization(_)) => {}
        other => panic!(
            "publish_shared_with_outcome of a payload nested deeper than MAX_PAYLOAD_DEPTH \
             (the path the event bus takes with an encryptor or a router): expected \
             Error::Serialization, got {other:?}"
        ),
    }
    // a batch refuses that event alone (a pipelining provider's own path)
    let flat = event(&*p, "deep", "t", 2);
    let results = p
        .publish_batch(&[too_deep, flat])
        .await
        .expect("publish_batch");
    match results.as_slice() {
        [Err(Error::Serialization(_)), Ok(_)] => {}
        other => panic!(
            "publish_batch of a payload nested deeper than MAX_PAYLOAD_DEPTH and a flat one: \
             expected [Err(Error::Serialization), Ok], got {other:?}"
        ),
    }
    assert_eq!(
        p.info().await.expect("info").messages,
        2,
        "the payload nested too deep must not be stored"
    );
}

/// `publish_shared` and `publish_shared_with_options` keep every rule of
/// `publish`: delivery with fields intact, dedup, expected sequence, subject
/// validation and the payload limit; `publish_shared_with_outcome` (the
/// path the event bus takes with an encryptor or a router) validates the
/// subject and the payload limit too.
pub async fn publish_shared_follows_publish_contract(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut sub = p
        .subscribe(&p.category_subject("shared"))
        .await
        .expect("subscribe");
    let e = std::sync::Arc::new(event(&*p, "shared", "t", 1).with_metadata("trace", "abc"));
    let seq = p
        .publish_shared(std::sync::Arc::clone(&e))
        .await
        .expect("publish_shared");
    let got = recv(&mut sub, &caps, "the event published with publish_shared").await;
    assert_eq!(got.sequence, seq);
    assert_eq!(*got.event, *e, "every field intact");
    assert_eq!(
        p.publish_shared(std::sync::Arc::clone(&e))
            .await
            .expect("republish"),
        seq,
        "same event id: same sequence"
    );
    let by_id = PublishOptions {
        msg_id: Some("shared-1".into()),
        ..PublishOptions::default()
    };
    let a = p
        .publish_shared_with_options(std::sync::Arc::new(event(&*p, "shared", "t", 2)), &by_id)
        .await
        .expect("publish");
    let b = p
        .publish_shared_with_options(std::sync::Arc::new(event(&*p, "shared", "t", 3)), &by_id)
        .await
        .expect("publish");
    assert_eq!(a, b, "same msg id: same sequence");
    let stale = PublishOptions {
        expected_sequence: Some(seq),
        ..PublishOptions::default()
    };
    match p
        .publish_shared_with_options(std::sync::Arc::new(event(&*p, "shared", "t", 4)), &stale)
        .await
    {
        Err(Error::WrongLastSequence { expected, .. }) => assert_eq!(expected, seq),
        other => panic!("expected WrongLastSequence, got {other:?}"),
    }
    let mut bad = event(&*p, "shared", "t", 5);
    bad.subject = format!("{}.shared.*", p.subject_prefix());
    assert_invalid_subject(
        p.publish_shared(std::sync::Arc::new(bad.clone())).await,
        "wildcard in a published subject",
    );
    assert_invalid_subject(
        p.publish_shared_with_outcome(std::sync::Arc::new(bad), &PublishOptions::default())
            .await,
        "publish_shared_with_outcome: wildcard in a published subject",
    );
    match caps.max_payload {
        Some(max) => {
            let mut big = event(&*p, "shared", "t", 6);
            big.payload = json!({ "blob": "x".repeat(max + 1) });
            match p.publish_shared(std::sync::Arc::new(big.clone())).await {
                Err(Error::PayloadTooLarge { size, max: limit }) => assert!(size > limit),
                other => panic!(
                    "publish_shared: expected PayloadTooLarge, got {other:?}: the event's \
                     payload alone is over Capabilities::max_payload ({max} bytes); set it to \
                     the provider's real limit (or None, to skip the payload-limit checks)"
                ),
            }
            match p
                .publish_shared_with_outcome(std::sync::Arc::new(big), &PublishOptions::default())
                .await
            {
                Err(Error::PayloadTooLarge { size, max: limit }) => assert!(size > limit),
                other => panic!(
                    "publish_shared_with_outcome: expected PayloadTooLarge, got {other:?}: the \
                     event's payload alone is over Capabilities::max_payload ({max} bytes)"
                ),
            }
        }
        None => skip(
            "publish_shared_follows_publish_contract",
            p.name(),
            "capabilities.max_payload is None: its payload-limit check (the rest runs)",
        ),
    }
    let history = p
        .history(Some(&p.category_subject("shared")), 10)
        .await
        .expect("history");
    assert_eq!(
        history.iter().map(n_of).collect::<Vec<_>>(),
        vec![2, 1],
        "duplicates, conflicts and refusals stored nothing"
    );
}

/// `info` counts messages, bytes, consumers (durable and ephemeral) and
/// sequences; an empty provider reports zeros.
pub async fn info_counts(factory: &dyn ProviderFactory) {
    let p = factory.create().await;
    let empty = p.info().await.expect("info");
    assert_eq!(
        empty.provider,
        p.name(),
        "info().provider must be name() (the Contract, \"Info and health\"): a wrapper that \
         overrides name() sets its own name in the ProviderInfo it forwards from info()"
    );
    assert_eq!(
        (
            empty.messages,
            empty.bytes,
            empty.consumers,
            empty.first_sequence,
            empty.last_sequence
        ),
        (0, 0, 0, 0, 0),
        "an empty provider: (messages, bytes, consumers, first_sequence, last_sequence)"
    );
    let seqs = publish_n(&*p, "info", "t", 0..7).await;
    let _durable = p
        .subscribe_durable("info-d", &p.category_subject("info"))
        .await
        .expect("durable");
    let _ephemeral = p
        .subscribe(&p.category_subject("info"))
        .await
        .expect("subscribe");
    let info = p.info().await.expect("info");
    assert_eq!(info.messages, 7, "messages stored");
    assert!(info.bytes > 0, "bytes stored");
    assert!(
        info.consumers >= 2,
        "the durable and the ephemeral consumer are counted: {}",
        info.consumers
    );
    assert_eq!(info.last_sequence, seqs[6], "last_sequence");
    assert_eq!(info.first_sequence, seqs[0], "first_sequence");
    let seq = p
        .publish(&event(&*p, "info", "t", 7))
        .await
        .expect("publish");
    let more = p.info().await.expect("info");
    assert_eq!(
        (more.messages, more.last_sequence),
        (8, seq),
        "(messages, last_sequence) after one more publish"
    );
    assert!(
        more.bytes > info.bytes,
        "bytes grow with what is stored: {} then {}",
        info.bytes,
        more.bytes
    );
    assert!(p.health().await.expect("health"));
}

/// `publish_batch` reports one result per event, in order (each event's
/// sequence, the one it is delivered with), and deduplicates as `publish`
/// does, within the batch too.
pub async fn publish_batch_reports_each_result(factory: &dyn ProviderFactory) {
    let p = factory.create().await;
    let mut events: Vec<Event> = (0..20).map(|n| event(&*p, "batch", "t", n)).collect();
    events[7].subject = "bad..subject".into();
    // the same event twice in one batch, as a retried publish would send it
    events[12] = events[3].clone();
    let results = p.publish_batch(&events).await.expect("batch");
    assert_eq!(results.len(), 20, "one result per event, failures included");
    let mut last = 0;
    for (i, r) in results.iter().enumerate() {
        if i == 7 {
            assert!(
                matches!(r, Err(Error::InvalidSubject { .. })),
                "bad event reported: {r:?}"
            );
        } else if i == 12 {
            assert_eq!(
                r.as_ref().ok(),
                results[3].as_ref().ok(),
                "a repeat inside the batch returns the first one's sequence (dedup by event id)"
            );
        } else {
            let seq = *r.as_ref().expect("good event published");
            assert!(seq > last, "batch sequences increase in order");
            last = seq;
        }
    }
    let stored = p
        .history(Some(&p.category_subject("batch")), 100)
        .await
        .expect("history");
    assert_eq!(
        stored.len(),
        18,
        "every good event of the batch is stored, the repeated one once"
    );
    // each result is the sequence its event was stored at (the refused
    // event took none)
    let caps = factory.capabilities();
    let mut sub = p
        .subscribe_durable("batch-reader", &p.category_subject("batch"))
        .await
        .expect("durable");
    let mut at = std::collections::HashMap::new();
    for i in 0..18 {
        let r = recv(
            &mut sub,
            &caps,
            &format!("the stored batch: event {i} of 18"),
        )
        .await;
        at.insert(n_of(&r.event), r.sequence);
    }
    for (i, r) in results.iter().enumerate() {
        let Ok(reported) = r else { continue };
        let n = n_of(&events[i]);
        assert_eq!(
            Some(reported),
            at.get(&n),
            "publish_batch result {i} (event n={n}) must be the sequence it was stored at"
        );
    }
}

/// [`EventProvider::publish_batch_with_outcome`] is `publish_batch` with
/// each event's outcome: one result per event, in order, each under the
/// rules of a single publish (a bad subject, an unusable dedup id, a payload
/// over the limit or nested too deep refused at its position, the others
/// stored), each sequence the one its event was stored at. When the
/// provider says (`Some`), an event first stored is `Some(false)`, and a
/// repeat, inside the batch or of an event stored before, is `Some(true)`
/// with the first copy's sequence; a provider that does not say (the
/// default) says `None` for every event.
pub async fn publish_batch_with_outcome_reports_each_result(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let earlier = event(&*p, "obatch", "t", 100);
    let earlier_seq = p.publish(&earlier).await.expect("publish");
    let mut events: Vec<Event> = (0..10).map(|n| event(&*p, "obatch", "t", n)).collect();
    events[2].subject = "bad..subject".into();
    events[4].id = String::new(); // an unusable dedup id
    events[5] = events[1].clone(); // a repeat inside the batch
    events[6] = earlier.clone(); // a repeat of an event stored before
    events[7].payload = nested(crate::MAX_PAYLOAD_DEPTH + 1);
    if let Some(max) = caps.max_payload {
        events[8].payload = json!({ "blob": "x".repeat(max + 1) });
    }
    let results = p
        .publish_batch_with_outcome(&events)
        .await
        .expect("publish_batch_with_outcome");
    assert_eq!(
        results.len(),
        events.len(),
        "publish_batch_with_outcome: one result per event, failures included"
    );
    let refused = |i: usize, ok: bool, what: &str| {
        assert!(
            ok,
            "publish_batch_with_outcome result {i} ({what}): got {:?}",
            results[i]
        );
    };
    refused(
        2,
        matches!(results[2], Err(Error::InvalidSubject { .. })),
        "a bad subject: expected InvalidSubject",
    );
    refused(
        4,
        matches!(results[4], Err(Error::InvalidConfig { .. })),
        "an empty event id as the dedup id: expected InvalidConfig",
    );
    refused(
        7,
        matches!(results[7], Err(Error::Serialization(_))),
        "a payload nested deeper than MAX_PAYLOAD_DEPTH: expected Serialization",
    );
    if caps.max_payload.is_some() {
        refused(
            8,
            matches!(results[8], Err(Error::PayloadTooLarge { .. })),
            "an event over the payload limit: expected PayloadTooLarge",
        );
    }
    let outcome = |i: usize| match &results[i] {
        Ok(outcome) => *outcome,
        Err(err) => panic!("publish_batch_with_outcome result {i}: expected it stored, got {err}"),
    };
    // the sequences: a repeat returns its first copy's
    assert_eq!(
        outcome(5).sequence,
        outcome(1).sequence,
        "a repeat inside the batch returns the first copy's sequence"
    );
    assert_eq!(
        outcome(6).sequence,
        earlier_seq,
        "a repeat of an event stored before the batch returns its sequence"
    );
    let new: Vec<usize> = [0, 1, 3, 9]
        .into_iter()
        .chain(caps.max_payload.is_none().then_some(8))
        .collect();
    let mut last = earlier_seq;
    for &i in &new {
        let seq = outcome(i).sequence;
        assert!(
            seq > last,
            "publish_batch_with_outcome: sequences of new events increase in order ({i}: {seq} after {last})"
        );
        last = seq;
    }
    // the duplicate flags: all said, or none
    let said: Vec<Option<bool>> = new
        .iter()
        .chain(&[5, 6])
        .map(|&i| outcome(i).duplicate)
        .collect();
    if said.iter().all(Option::is_none) {
        println!(
            "conformance: {} does not say whether an event of a batch was a duplicate \
             (publish_batch_with_outcome returns None); the bus then routes every repeat",
            p.name()
        );
    } else {
        for &i in &new {
            assert_eq!(
                outcome(i).duplicate,
                Some(false),
                "publish_batch_with_outcome result {i}: a new event is stored (Some(false))"
            );
        }
        for (i, what) in [(5, "inside the batch"), (6, "of an event stored before")] {
            assert_eq!(
                outcome(i).duplicate,
                Some(true),
                "publish_batch_with_outcome result {i}: a repeat {what} is a duplicate (Some(true))"
            );
        }
    }
    // what was stored: the earlier event and the new ones, once each, at
    // the sequences reported
    let stored = p
        .history(Some(&p.category_subject("obatch")), 100)
        .await
        .expect("history");
    assert_eq!(
        stored.len(),
        1 + new.len(),
        "publish_batch_with_outcome stores each new event once and no repeat"
    );
    let mut sub = p
        .subscribe_durable("obatch-reader", &p.category_subject("obatch"))
        .await
        .expect("durable");
    let mut at = std::collections::HashMap::new();
    for k in 0..stored.len() {
        let r = recv(&mut sub, &caps, &format!("the stored batch: event {k}")).await;
        at.insert(n_of(&r.event), r.sequence);
    }
    for &i in &new {
        let n = n_of(&events[i]);
        assert_eq!(
            Some(&outcome(i).sequence),
            at.get(&n),
            "publish_batch_with_outcome result {i} (event n={n}) must be the sequence it was stored at"
        );
    }
}

/// A payload whose arrays and objects nest `levels` deep.
fn nested(levels: usize) -> serde_json::Value {
    let mut payload = json!({ "leaf": true });
    for _ in 1..levels {
        payload = json!([payload]);
    }
    payload
}
