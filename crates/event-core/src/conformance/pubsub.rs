//! Publish and subscribe: the round trip, wildcard filters, ordering,
//! concurrent publishers, `history`, and a subscription as a `Stream`.

use super::{ProviderFactory, assert_invalid_subject, event, n_of, publish_n, recv, recv_manual};
use crate::{Event, SubscribeOptions, Subscription};
use serde_json::json;
use std::collections::{HashMap, HashSet};

/// A published event arrives with every field intact and its delivery
/// context, on a live subscription and read back from the store (replayed
/// to a durable created after the publish, in manual-ack mode, and from
/// `history`); the first publish on a fresh provider is sequence 1.
pub async fn publish_subscribe_round_trip(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut sub = p
        .subscribe(&p.category_subject("rt"))
        .await
        .expect("subscribe");
    let sent = Event::typed(
        p.build_subject("rt", "forex.usd_cny"),
        "rt",
        "forex.rate_change",
        3,
        "USD/CNY broke 7.35 — ünïcödé ✓",
        "reuters",
        // a computed float that a JSON parser without exact float parsing
        // reads back one ULP off, and the extreme integers
        json!({
            "rate": 7.3521,
            "computed": 0.21291890726713458,
            "max": u64::MAX,
            "min": i64::MIN,
            "nested": {"list": [1, "two", null, true]}
        }),
    )
    .with_metadata("region", "asia")
    .with_metadata("odd key/with:chars", "v");
    let seq = p.publish(&sent).await.expect("publish");
    assert_eq!(
        seq, 1,
        "the first publish on a fresh provider: stream sequences start at 1 (the Contract, \
         \"Publish\")"
    );
    let got = recv(
        &mut sub,
        &caps,
        "the published event on a live subscription",
    )
    .await;
    assert_eq!(*got.event, sent, "event fields must round-trip exactly");
    assert_eq!(
        got.sequence, seq,
        "the delivery carries the publish sequence"
    );
    assert_eq!(got.num_delivered, 1, "first delivery");
    assert!(!got.stream.is_empty(), "stream name must be set");
    // read back from the store, not handed over live: every field intact too
    let mut durable = p
        .subscribe_durable("rt-replay", &p.category_subject("rt"))
        .await
        .expect("durable");
    let replayed = recv_manual(
        &mut durable,
        &caps,
        "the stored event, replayed to a durable created after the publish",
    )
    .await;
    assert_eq!(
        *replayed.received.event, sent,
        "a stored event replayed to a new durable must round-trip exactly (metadata, numbers \
         and all)"
    );
    assert_eq!(
        (replayed.received.sequence, replayed.received.num_delivered),
        (seq, 1),
        "the replayed delivery: (sequence, num_delivered)"
    );
    assert!(
        !replayed.received.stream.is_empty(),
        "stream name must be set on a manual-ack delivery too"
    );
    replayed.ack().await.expect("ack");
    assert_eq!(
        p.history(None, 1).await.expect("history"),
        vec![sent],
        "history must return the stored event exactly (metadata, numbers and all)"
    );
}

/// `*` matches one token, `>` one or more (never zero: `a.b.>` does not
/// match `a.b`); a literal filter matches only that subject (not one it is
/// a string prefix of), on ephemeral and durable subscriptions and in
/// `history` (with each of the filters); unrelated subjects stay isolated.
pub async fn wildcard_filtering_and_topic_isolation(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let prefix = p.subject_prefix().to_string();
    // (filter after the prefix, the sentinel that ends its events, what it
    // matches, the rule)
    let cases: [(&str, u64, Vec<u64>, &str); 5] = [
        ("wa.*", 100, vec![1, 7], "`wa.*` matches exactly one token"),
        (
            "wa.>",
            100,
            vec![1, 2, 7],
            "`wa.>` matches one or more tokens",
        ),
        ("*.x", 101, vec![1, 3], "`*.x` matches any category"),
        (
            "wb.x",
            101,
            vec![3],
            "a literal filter matches only itself (not `wb.xy`, not `wb.x.y`)",
        ),
        // `>` needs at least one more token: `wa.x.>` does not match `wa.x`
        (
            "wa.x.>",
            102,
            vec![2],
            "`wa.x.>` matches one or more tokens after `wa.x`, not `wa.x` itself (nor \
             `wa.xy`)",
        ),
    ];
    let mut subs = Vec::new();
    for (i, (filter, ..)) in cases.iter().enumerate() {
        let full = format!("{prefix}.{filter}");
        let live = p
            .subscribe(&full)
            .await
            .unwrap_or_else(|e| panic!("subscribe `{full}`: {e}"));
        // created before anything is published: it starts at the first event
        let durable = p
            .subscribe_durable(&format!("wildcard-{i}"), &full)
            .await
            .unwrap_or_else(|e| panic!("durable on `{full}`: {e}"));
        subs.push((live, durable));
    }

    let published = [
        ("wa", "x", 1),
        ("wa", "x.y", 2),
        ("wb", "x", 3),
        ("wb", "y", 4),
        // a literal filter is a whole subject, not a string prefix: `wb.x`
        // matches neither `wb.xy` nor `wb.x.y`
        ("wb", "xy", 5),
        ("wb", "x.y", 6),
        // nor is a tail: `wa.x.>` does not match `wa.xy`
        ("wa", "xy", 7),
        // sentinels so that "nothing else arrived" is checked by order, not
        // sleeps
        ("wa", "end", 100),
        ("wb", "x", 101),
        ("wa", "x.end", 102),
    ];
    for (category, topic, n) in published {
        p.publish(&event(&*p, category, topic, n))
            .await
            .expect("publish");
    }

    let collect = async |sub: &mut Box<dyn Subscription>, what: &str, sentinel: u64| {
        let mut seen = Vec::new();
        loop {
            let n = n_of(
                &recv(
                    sub,
                    &caps,
                    &format!("{what}: the events up to the sentinel n={sentinel}"),
                )
                .await
                .event,
            );
            if n == sentinel {
                return seen;
            }
            seen.push(n);
        }
    };
    for ((filter, sentinel, expected, rule), (live, durable)) in cases.iter().zip(&mut subs) {
        for (kind, sub) in [("ephemeral", live), ("durable", durable)] {
            assert_eq!(
                collect(sub, &format!("{kind}: filter `{filter}`"), *sentinel).await,
                *expected,
                "{kind}: {rule}"
            );
        }
    }
    // `history` with each filter: every published event it matches,
    // newest first
    for (filter, .., rule) in &cases {
        let full = format!("{prefix}.{filter}");
        let pattern = crate::SubjectPattern::parse(&full).expect("a valid filter");
        let matching: Vec<u64> = published
            .iter()
            .rev()
            .filter(|(category, topic, _)| pattern.matches(&p.build_subject(category, topic)))
            .map(|(.., n)| *n)
            .collect();
        assert_eq!(
            p.history(Some(&full), 100)
                .await
                .expect("history")
                .iter()
                .map(n_of)
                .collect::<Vec<_>>(),
            matching,
            "history(`{full}`), newest first: {rule}"
        );
    }
}

/// A wildcard may stand for the prefix's tokens too (`*` is a whole token
/// anywhere, `>` may be the whole filter): `*.{category}.>`, `*.*.{topic}`
/// (with one `*` per token of a prefix of several, `*.*.{category}.>` under
/// `acme.events`) and `>` subscribe, ephemeral or durable, to what they
/// match among the provider's subjects, as `history` reads them.
pub async fn wildcard_over_prefix_filters(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let all = SubscribeOptions::default();
    let stars = vec!["*"; p.subject_prefix().split('.').count()].join(".");
    let by_category = format!("{stars}.wpa.>");
    let by_topic = format!("{stars}.*.wpt");
    let mut category = p
        .subscribe_with_options(&by_category, &all)
        .await
        .unwrap_or_else(|e| panic!("subscribe `{by_category}`: {e}"));
    let mut topic = p
        .subscribe_durable_with_options("wildcard_prefix", &by_topic, &all)
        .await
        .unwrap_or_else(|e| panic!("subscribe durable `{by_topic}`: {e}"));
    let mut everything = p
        .subscribe_with_options(">", &all)
        .await
        .expect("subscribe `>`");
    p.publish(&event(&*p, "wpa", "x", 1))
        .await
        .expect("publish");
    p.publish(&event(&*p, "wpb", "wpt", 2))
        .await
        .expect("publish");
    p.publish(&event(&*p, "wpa", "wpt", 3))
        .await
        .expect("publish");
    let take = async |sub: &mut Box<dyn Subscription>, filter: &str, count: usize| {
        let mut seen = Vec::new();
        for _ in 0..count {
            let what = format!("filter `{filter}`: event {} of {count}", seen.len() + 1);
            seen.push(n_of(&recv(sub, &caps, &what).await.event));
        }
        seen
    };
    assert_eq!(take(&mut category, &by_category, 2).await, vec![1, 3]);
    assert_eq!(take(&mut topic, &by_topic, 2).await, vec![2, 3]);
    assert_eq!(take(&mut everything, ">", 3).await, vec![1, 2, 3]);
    let history = p
        .history(Some(&by_category), 10)
        .await
        .unwrap_or_else(|e| panic!("history `{by_category}`: {e}"));
    assert_eq!(history.iter().map(n_of).collect::<Vec<_>>(), vec![3, 1]);
}

/// 1,000 events arrive in publish order with strictly increasing sequences.
pub async fn ordering_of_1000_events(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut live = p
        .subscribe(&p.category_subject("ord"))
        .await
        .expect("subscribe");
    let seqs = publish_n(&*p, "ord", "t", 0..1000).await;
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "publish sequences must increase"
    );
    let mut durable = p
        .subscribe_durable("ord-durable", &p.category_subject("ord"))
        .await
        .expect("durable");
    for (i, seq) in seqs.iter().enumerate() {
        let a = recv(
            &mut live,
            &caps,
            &format!("live subscription: event {i} of 1000"),
        )
        .await;
        assert_eq!((n_of(&a.event), a.sequence), (i as u64, *seq), "live order");
        let b = recv(&mut durable, &caps, &format!("durable: event {i} of 1000")).await;
        assert_eq!(
            (n_of(&b.event), b.sequence),
            (i as u64, *seq),
            "durable order"
        );
    }
}

/// 50 concurrent publishers × 100 events: none lost, sequences unique, and
/// each event delivered once at the sequence its publish returned (a
/// sequence taken before storing can differ from the one stored at when
/// publishers race).
pub async fn concurrent_publishers_lose_nothing(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut tasks = Vec::new();
    for t in 0..50u64 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut published = Vec::new();
            for i in 0..100u64 {
                let n = t * 1000 + i;
                let e = event(&*p, "conc", &format!("p{t}"), n);
                published.push((n, p.publish(&e).await.expect("publish")));
            }
            published
        }));
    }
    let mut returned = HashMap::new();
    for t in tasks {
        let published = t.await.expect("publisher task");
        assert!(
            published.windows(2).all(|w| w[0].1 < w[1].1),
            "one publisher's sequences increase"
        );
        returned.extend(published);
    }
    let unique: HashSet<u64> = returned.values().copied().collect();
    assert_eq!(unique.len(), 5000, "every publish gets a unique sequence");

    let mut sub = p
        .subscribe_durable("conc-reader", &p.category_subject("conc"))
        .await
        .expect("durable");
    let mut last = 0;
    let mut seen = HashSet::new();
    let mut misplaced = Vec::new();
    for _ in 0..5000 {
        let r = recv(
            &mut sub,
            &caps,
            &format!(
                "durable: every concurrently published event (got {} of 5000)",
                seen.len()
            ),
        )
        .await;
        assert!(r.sequence > last, "delivery sequences increase");
        last = r.sequence;
        let n = n_of(&r.event);
        seen.insert(n);
        if returned.get(&n) != Some(&r.sequence) {
            misplaced.push((n, returned.get(&n).copied(), r.sequence));
        }
    }
    assert_eq!(seen.len(), 5000, "every event delivered once");
    assert!(
        misplaced.is_empty(),
        "{} of 5000 concurrently published events delivered at another sequence than the \
         sequence its publish returned (n, returned, delivered): {:?}",
        misplaced.len(),
        &misplaced[..misplaced.len().min(10)]
    );
}

/// `history` returns the newest matching events, newest first, up to `limit`.
pub async fn history_newest_first_with_limit_and_filter(factory: &dyn ProviderFactory) {
    let p = factory.create().await;
    for n in 0..30 {
        let cat = if n % 3 == 0 { "ha" } else { "hb" };
        p.publish(&event(&*p, cat, "t", n)).await.expect("publish");
    }
    let all = p.history(None, 100).await.expect("history");
    assert_eq!(
        all.iter().map(n_of).collect::<Vec<_>>(),
        (0..30).rev().collect::<Vec<_>>(),
        "history(None, 100): every event, newest first"
    );
    let ha = p
        .history(Some(&p.category_subject("ha")), 4)
        .await
        .expect("history");
    assert_eq!(
        ha.iter().map(n_of).collect::<Vec<_>>(),
        vec![27, 24, 21, 18],
        "history(category, 4): the newest 4 matching events, newest first"
    );
    let hb = p
        .history(Some(&p.category_subject("hb")), 1000)
        .await
        .expect("history");
    assert_eq!(hb.len(), 20, "a limit above the matches returns them all");
    assert!(
        p.history(Some(&p.category_subject("none")), 10)
            .await
            .expect("history")
            .is_empty()
    );
    assert!(
        p.history(None, 0).await.expect("history").is_empty(),
        "limit 0 returns nothing"
    );
    // callers ask for "everything" this way; sizing a buffer by the limit
    // must not overflow
    match p.history(None, usize::MAX).await {
        Ok(all) => assert_eq!(all.len(), 30, "history(None, usize::MAX): every event"),
        Err(e) => panic!("history(None, usize::MAX) (everything): {e}"),
    }
    assert_invalid_subject(
        p.history(Some("bad..filter"), 10).await,
        "history with a bad filter",
    );
    // the shared form returns the same events in the same order
    for (filter, limit) in [(None, 100), (Some(p.category_subject("ha")), 4)] {
        let owned = p.history(filter.as_deref(), limit).await.expect("history");
        let shared = p
            .history_shared(filter.as_deref(), limit)
            .await
            .expect("history_shared");
        assert_eq!(
            shared.iter().map(|e| (**e).clone()).collect::<Vec<_>>(),
            owned,
            "history_shared({filter:?}, {limit}) differs from history"
        );
    }
    assert!(
        p.history_shared(None, 0)
            .await
            .expect("history_shared")
            .is_empty()
    );
    assert_invalid_subject(
        p.history_shared(Some("bad..filter"), 10).await,
        "history_shared with a bad filter",
    );
}

/// A subscription works as a `futures::Stream`.
pub async fn subscription_as_stream(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let sub = p
        .subscribe(&p.category_subject("strm"))
        .await
        .expect("subscribe");
    let mut stream = sub.into_stream();
    publish_n(&*p, "strm", "t", 0..3).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let item = tokio::time::timeout(
            caps.receive_timeout,
            std::future::poll_fn(|cx| {
                futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
            }),
        )
        .await
        .expect("stream item in time")
        .expect("stream not ended")
        .expect("delivery");
        got.push(n_of(&item.event));
    }
    assert_eq!(got, vec![0, 1, 2]);
}
