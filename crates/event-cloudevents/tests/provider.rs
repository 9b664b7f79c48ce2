//! The provider binding: CloudEvents published and received through the
//! memory provider (the reference implementation of the contract).

mod common;

use cloudevents::AttributesReader;
use common::Rng;
use event_cloudevents::{CloudEvent, CloudEventProviderExt, cloudevent_from_structured};
use event_core::{Error, Event, EventProvider};
use event_memory::MemoryProvider;
use serde_json::json;
use std::time::Duration;

/// A random event that a provider accepts: a valid subject, a unique id.
fn publishable(rng: &mut Rng, i: usize) -> Event {
    let mut event = rng.event();
    event.id = format!("evt-{i}");
    event.subject = format!("events.ce.t{}", i % 3);
    event
}

async fn next_ce(
    sub: &mut event_cloudevents::CloudEventSubscription,
) -> event_cloudevents::ReceivedCloudEvent {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("delivery in time")
        .expect("no error")
        .expect("open subscription")
}

#[tokio::test]
async fn random_cloudevents_come_back_equal() {
    let provider = MemoryProvider::default();
    let mut sub = provider.subscribe_cloudevents("events.ce.>").await.unwrap();
    let mut rng = Rng::new(2024);
    let mut sent = Vec::new();
    for i in 0..60 {
        let ce = CloudEvent::from(publishable(&mut rng, i));
        let seq = provider.publish_cloudevent(&ce).await.unwrap();
        assert_eq!(seq, i as u64 + 1);
        sent.push(ce);
    }
    for (i, ce) in sent.iter().enumerate() {
        let received = next_ce(&mut sub).await;
        assert_eq!(&received.event, ce, "event {i}");
        assert_eq!(received.sequence, i as u64 + 1);
        assert_eq!(received.num_delivered, 1);
    }
    sub.close().await.unwrap();

    // What the provider stored is the A3S event itself.
    let history = provider.history(Some("events.ce.>"), 1).await.unwrap();
    assert_eq!(CloudEvent::from(history[0].clone()), sent[59]);
}

#[tokio::test]
async fn durable_manual_ack_redelivers_on_nak() {
    let provider = MemoryProvider::default();
    let ce = CloudEvent::from(Event::new(
        "events.orders.created",
        "orders",
        "order 1",
        "shop",
        json!({"id": 1}),
    ));
    provider.publish_cloudevent(&ce).await.unwrap();

    let mut sub = provider
        .subscribe_durable_cloudevents("ce-worker", "events.orders.>")
        .await
        .unwrap();
    let (first, pending) = sub.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(first, ce);
    assert_eq!(pending.received.num_delivered, 1);
    pending.nak().await.unwrap();

    let (again, pending) = tokio::time::timeout(Duration::from_secs(5), sub.next_manual_ack())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again, ce);
    assert_eq!(pending.received.num_delivered, 2);
    pending.ack().await.unwrap();
    sub.close().await.unwrap();
}

#[tokio::test]
async fn cloudevent_without_subject_is_refused_before_publishing() {
    let provider = MemoryProvider::default();
    let foreign = cloudevent_from_structured(
        br#"{"specversion":"1.0","id":"x-1","source":"/other","type":"com.example.ping","data":{"n":1}}"#,
    )
    .unwrap();
    match provider.publish_cloudevent(&foreign).await {
        Err(Error::InvalidSubject { reason, .. }) => {
            assert!(reason.contains("subject"), "{reason}")
        }
        other => panic!("expected InvalidSubject, got {other:?}"),
    }
    assert_eq!(provider.info().await.unwrap().messages, 0);
}

/// Under a prefix of two tokens the category of a foreign CloudEvent is the
/// token after the prefix, not the prefix's second token.
#[tokio::test]
async fn foreign_cloudevent_under_a_two_token_prefix_gets_the_category_after_the_prefix() {
    let provider = MemoryProvider::new(event_memory::MemoryConfig {
        subject_prefix: "acme.events".into(),
        ..Default::default()
    })
    .unwrap();
    let foreign = cloudevent_from_structured(
        br#"{"specversion":"1.0","id":"x-1","source":"/other","type":"com.example.ping",
             "data":{"n":1}}"#,
    )
    .unwrap();
    provider
        .publish_cloudevent_to("acme.events.partner.ping", &foreign)
        .await
        .unwrap();
    let stored = provider.history(None, 1).await.unwrap().remove(0);
    assert_eq!(stored.subject, "acme.events.partner.ping");
    assert_eq!(stored.category, "partner");
    let partner = provider
        .history(Some("acme.events.partner.>"), 1)
        .await
        .unwrap();
    assert_eq!(partner.len(), 1);
}

/// Under a prefix of two tokens a foreign CloudEvent published to its own
/// subject gets the category after the prefix too.
#[tokio::test]
async fn foreign_cloudevent_with_its_own_subject_under_a_two_token_prefix_gets_its_category() {
    let provider = MemoryProvider::new(event_memory::MemoryConfig {
        subject_prefix: "acme.events".into(),
        ..Default::default()
    })
    .unwrap();
    let foreign = cloudevent_from_structured(
        br#"{"specversion":"1.0","id":"x-2","source":"/other","type":"com.example.ping",
             "subject":"acme.events.partner.ping","data":{"n":1}}"#,
    )
    .unwrap();
    provider.publish_cloudevent(&foreign).await.unwrap();
    let stored = provider.history(None, 1).await.unwrap().remove(0);
    assert_eq!(stored.subject, "acme.events.partner.ping");
    assert_eq!(stored.category, "partner");
}

#[tokio::test]
async fn foreign_cloudevent_published_to_an_explicit_subject() {
    let provider = MemoryProvider::default();
    let mut sub = provider
        .subscribe_cloudevents("events.partner.>")
        .await
        .unwrap();
    let foreign = cloudevent_from_structured(
        br#"{"specversion":"1.0","id":"x-1","source":"/other","type":"com.example.ping",
             "subject":"not/an/a3s/subject","traceparent":"00-ab-cd-01","data":{"n":1}}"#,
    )
    .unwrap();
    provider
        .publish_cloudevent_to("events.partner.ping", &foreign)
        .await
        .unwrap();
    let received = next_ce(&mut sub).await.event;
    assert_eq!(received.subject(), Some("events.partner.ping"));
    assert_eq!(received.id(), "x-1");
    assert_eq!(received.ty(), "com.example.ping");
    assert_eq!(
        received
            .extension("traceparent")
            .map(ToString::to_string)
            .as_deref(),
        Some("00-ab-cd-01")
    );
    let event = Event::try_from(received).unwrap();
    assert_eq!(event.category, "partner");
    assert_eq!(event.payload, json!({"n": 1}));
}

#[tokio::test]
async fn unconvertible_cloudevent_is_a_serialization_error() {
    let provider = MemoryProvider::default();
    // JSON-typed data that is not JSON
    let not_json = cloudevent_from_structured(
        br#"{"specversion":"1.0","id":"x","source":"/s","type":"t","subject":"events.a.b",
             "datacontenttype":"application/json","data_base64":"PGEvPg=="}"#,
    )
    .unwrap();
    assert!(matches!(
        provider.publish_cloudevent(&not_json).await,
        Err(Error::Serialization(_))
    ));
    // XML data is held (it used to be refused like the above)
    let xml = cloudevent_from_structured(
        br#"{"specversion":"1.0","id":"x","source":"/s","type":"t","subject":"events.a.b",
             "datacontenttype":"text/xml","data":"<a/>"}"#,
    )
    .unwrap();
    provider.publish_cloudevent(&xml).await.unwrap();
}

#[tokio::test]
async fn a_stored_event_without_id_has_one_cloudevent_id_for_every_consumer() {
    // A provider stores an empty-id event when it is published with an
    // explicit msg_id. Every delivery of it, to any consumer, must carry the
    // same CloudEvent id, or a consumer deduplicating by id sees several
    // events (and a redelivery looks like a new one).
    let provider = MemoryProvider::default();
    let mut live = provider
        .subscribe_cloudevents("events.noid.>")
        .await
        .unwrap();
    let mut durable = provider
        .subscribe_durable_cloudevents("noid-worker", "events.noid.>")
        .await
        .unwrap();
    let mut no_id = Event::new("events.noid.a", "noid", "s", "svc", json!(1));
    no_id.id = String::new();
    let options = event_core::PublishOptions {
        msg_id: Some("m-1".into()),
        ..Default::default()
    };
    provider
        .publish_with_options(&no_id, &options)
        .await
        .unwrap();

    let live_ce = next_ce(&mut live).await.event;
    let (first, pending) = durable.next_manual_ack().await.unwrap().unwrap();
    pending.nak().await.unwrap();
    let (redelivered, pending) =
        tokio::time::timeout(Duration::from_secs(5), durable.next_manual_ack())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    assert_eq!(pending.received.num_delivered, 2);
    pending.ack().await.unwrap();

    assert_eq!(first.id(), live_ce.id());
    assert_eq!(redelivered.id(), live_ce.id());
    assert_eq!(first, live_ce);
    assert_eq!(Event::try_from(live_ce).unwrap(), no_id);
}

#[tokio::test]
async fn a_received_cloudevent_of_an_event_without_id_can_be_published_again() {
    // A relay forwards what it receives. The CloudEvent of a stored empty-id
    // event carries its derived id; converted back, the A3S event has an
    // empty id again, which no provider takes as a dedup id: publishing it
    // used to fail with InvalidConfig (`msg_id`), an error the caller, who
    // gave no msg_id, cannot act on.
    let source = MemoryProvider::default();
    let mut live = source.subscribe_cloudevents("events.noid.>").await.unwrap();
    let mut no_id = Event::new("events.noid.a", "noid", "s", "svc", json!(1));
    no_id.id = String::new();
    let options = event_core::PublishOptions {
        msg_id: Some("m-1".into()),
        ..Default::default()
    };
    source.publish_with_options(&no_id, &options).await.unwrap();
    let ce = next_ce(&mut live).await.event;

    let relay = MemoryProvider::default();
    let mut out = relay.subscribe_cloudevents("events.>").await.unwrap();
    relay.publish_cloudevent(&ce).await.unwrap();
    assert_eq!(next_ce(&mut out).await.event, ce);

    let other = MemoryProvider::default();
    let mut out = other.subscribe_cloudevents("events.>").await.unwrap();
    other
        .publish_cloudevent_to("events.other.b", &ce)
        .await
        .unwrap();
    let moved = Event::try_from(next_ce(&mut out).await.event).unwrap();
    assert_eq!(moved.subject, "events.other.b");
    assert_eq!(moved.payload, json!(1));
}

#[tokio::test]
async fn cloudevents_are_deduplicated_by_source_and_id_together() {
    // CloudEvents identifies an event by `source` and `id`: two producers
    // that both number their events from 1 send two events, which used to be
    // one to the provider (the second returned the first's sequence and was
    // never stored). The same producer repeating an event is still one.
    let provider = MemoryProvider::default();
    let mut sub = provider.subscribe_cloudevents("events.ce.>").await.unwrap();
    let foreign = |source: &str, id: &str| {
        let doc = json!({
            "specversion": "1.0", "id": id, "source": source,
            "type": "com.example.ping", "subject": "events.ce.ping", "data": {"n": 1}
        });
        cloudevent_from_structured(&serde_json::to_vec(&doc).unwrap()).unwrap()
    };
    let a = foreign("/producer-a", "1");
    let b = foreign("/producer-b", "1");
    assert_eq!(provider.publish_cloudevent(&a).await.unwrap(), 1);
    assert_eq!(provider.publish_cloudevent(&b).await.unwrap(), 2);
    // sources that only concatenate alike are different sources
    let c = foreign("/producer-a1", "1");
    let d = foreign("/producer-a", "11");
    assert_eq!(provider.publish_cloudevent(&c).await.unwrap(), 3);
    assert_eq!(provider.publish_cloudevent(&d).await.unwrap(), 4);
    // a repeat, through either call, is the first publish
    assert_eq!(provider.publish_cloudevent(&a).await.unwrap(), 1);
    assert_eq!(
        provider
            .publish_cloudevent_to("events.ce.other", &b)
            .await
            .unwrap(),
        2
    );
    // an id with a control character is no dedup id a provider takes as
    // such (it used to be refused as InvalidConfig `msg_id`); escaped, it is
    let e = foreign("/producer-a", "line\nbreak %0A");
    assert_eq!(provider.publish_cloudevent(&e).await.unwrap(), 5);
    assert_eq!(provider.publish_cloudevent(&e).await.unwrap(), 5);
    assert_eq!(
        event_cloudevents::cloudevent_dedup_id(&e),
        "11:/producer-aline%0Abreak %250A"
    );
    assert_eq!(provider.info().await.unwrap().messages, 5);
    for expected in [&a, &b, &c, &d, &e] {
        let received = next_ce(&mut sub).await.event;
        assert_eq!(received.source(), expected.source());
        assert_eq!(received.id(), expected.id());
    }
}

/// No two sources and ids share a dedup id: every pair of up to three
/// characters from an alphabet of the encoding's own characters (`%`, hex
/// digits, `:`, digits) and control characters gives its own text, and
/// none has a control character left.
#[test]
fn cloudevent_dedup_ids_are_one_to_one() {
    let alphabet = ['a', '1', '2', ':', '%', '0', 'A', '\n', '\u{85}'];
    let mut texts = vec![String::new()];
    for _ in 0..3 {
        let longer: Vec<String> = texts
            .iter()
            .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
            .collect();
        texts.extend(longer);
        texts.sort();
        texts.dedup();
    }
    texts.retain(|t| !t.is_empty());
    let ce = |source: &str, id: &str| {
        let doc = json!({"specversion": "1.0", "id": id, "source": source, "type": "t"});
        cloudevent_from_structured(&serde_json::to_vec(&doc).unwrap())
    };
    // ids over the whole set, sources over the short ones (enough to meet
    // every length boundary the prefix guards)
    let mut seen = std::collections::HashMap::new();
    let mut read = 0;
    for source in texts.iter().filter(|s| s.chars().count() <= 2) {
        for id in &texts {
            let Ok(event) = ce(source, id) else { continue };
            read += 1;
            let dedup = event_cloudevents::cloudevent_dedup_id(&event);
            assert!(!dedup.chars().any(char::is_control), "{dedup:?}");
            if let Some(other) = seen.insert(dedup.clone(), (source.clone(), id.clone())) {
                panic!("{dedup:?} for {:?} and {other:?}", (source, id));
            }
        }
    }
    assert!(read > 50_000, "only {read} events read");
}
