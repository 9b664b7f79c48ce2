//! CloudEvents interop: convert A3S events to and from CloudEvents v1.0,
//! carry them through a provider, and over HTTP in binary and structured mode.
//!
//! Run: `cargo run --example cloudevents`
//!
//! In an application: `a3s-event` with the feature `cloudevents-http`, plus
//! `axum` (for the webhook) and `reqwest` (for the client) of the versions
//! `a3s-event` uses.

use a3s_event::cloudevents::cloudevents::AttributesReader;
use a3s_event::cloudevents::http::client::send_http;
use a3s_event::cloudevents::http::server::HttpEvent;
use a3s_event::cloudevents::http::{Mode, to_http};
use a3s_event::cloudevents::{CloudEventProviderExt, from_structured, to_structured};
use a3s_event::provider::memory::MemoryProvider;
use a3s_event::subject::validate_publish_subject;
use a3s_event::{CloudEvent, Error, Event, EventProvider};
use axum::{Router, extract::State, http::StatusCode, routing::post};
use serde_json::json;
use std::sync::Arc;

/// The webhook of step 4: publishes each CloudEvent it receives, answering
/// `503` only for transient errors so that senders retry only what can
/// succeed.
async fn webhook(
    State(provider): State<Arc<MemoryProvider>>,
    HttpEvent(mut event): HttpEvent,
) -> StatusCode {
    // A CloudEvent from another system seldom has an A3S subject (its
    // `subject` attribute is optional and free-form, `/orders/42` say):
    // give it one, keeping the sender's in metadata, or its publish is
    // refused as an invalid subject.
    if validate_publish_subject(&event.subject, provider.subject_prefix()).is_err() {
        if !event.subject.is_empty() {
            let sender_subject = std::mem::take(&mut event.subject);
            event
                .metadata
                .insert("sendersubject".to_string(), sender_subject);
        }
        event.subject = "events.inbound.webhook".into();
        event.category = "inbound".into();
    }
    match provider.publish(&event).await {
        Ok(_) => StatusCode::ACCEPTED,
        // the sender retries these: the provider is down or slow
        Err(err) if err.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
        // and must not retry these: the same event fails again
        Err(Error::PayloadTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        Err(Error::InvalidSubject { .. } | Error::Serialization(_)) => StatusCode::BAD_REQUEST,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. An A3S event becomes a CloudEvent and comes back unchanged.
    let event = Event::typed(
        "events.market.forex.usd_cny",
        "market",
        "forex.rate_change",
        2,
        "USD/CNY broke through 7.35",
        "reuters",
        json!({"pair": "USD/CNY", "rate": 7.3521}),
    )
    .with_metadata("region", "asia")
    .with_metadata("X-Request-Id", "r-42");

    let ce = CloudEvent::from(event.clone());
    println!(
        "type={} source={} subject={:?}",
        ce.ty(),
        ce.source(),
        ce.subject()
    );
    println!(
        "structured mode:\n{}",
        serde_json::to_string_pretty(&serde_json::from_slice::<serde_json::Value>(
            &to_structured(&event)?
        )?)?
    );
    assert_eq!(Event::try_from(ce.clone())?, event);

    let binary = to_http(&event, Mode::Binary)?;
    println!("binary mode headers:");
    for (name, value) in &binary.headers {
        println!("  {name}: {}", value.to_str().unwrap_or("<binary>"));
    }

    // 2. A CloudEvent from another producer (the spec's JSON example).
    let foreign = from_structured(
        br#"{
            "specversion": "1.0",
            "type": "com.example.someevent",
            "source": "/mycontext",
            "id": "C234-1234-1234",
            "time": "2018-04-05T17:31:00Z",
            "comexampleextension1": "value",
            "datacontenttype": "application/json",
            "data": {"appinfoA": "abc", "appinfoB": 123}
        }"#,
    )?;
    println!(
        "foreign event: type={} metadata={:?}",
        foreign.event_type, foreign.metadata
    );

    // 3. Through a provider: publish CloudEvents, receive CloudEvents.
    let provider = Arc::new(MemoryProvider::default());
    let mut sub = provider.subscribe_cloudevents("events.market.>").await?;
    provider.publish_cloudevent(&ce).await?;
    let received = sub.next().await?.ok_or("subscription closed")?;
    assert_eq!(received.event, ce);
    println!(
        "provider delivered {} at sequence {}",
        received.event.id(),
        received.sequence
    );

    // 4. Over HTTP: a webhook that publishes what it receives, and a client.
    let app = Router::new()
        .route("/events", post(webhook))
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/events", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    for (i, mode) in [Mode::Binary, Mode::Structured].into_iter().enumerate() {
        let mut sent = event.clone();
        sent.id = format!("evt-http-{i}");
        sent.summary = format!("sent in {mode:?} mode: naïve café ✓");
        send_http(&client, &url, &sent, mode).await?;
        let got = sub.next().await?.ok_or("subscription closed")?;
        assert_eq!(Event::try_from(got.event)?, sent);
        println!("HTTP {mode:?}: {} arrived intact", sent.id);
    }
    sub.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use a3s_event::cloudevents::cloudevents::{EventBuilder, EventBuilderV10};

    /// A foreign CloudEvent's `subject` is optional and free-form
    /// (`/orders/42`): the webhook gives the event an A3S subject, keeping
    /// the sender's in metadata, instead of refusing it with a `400` that
    /// tells the sender never to retry.
    #[tokio::test]
    async fn a_free_form_subject_is_replaced_not_refused() {
        let provider = Arc::new(MemoryProvider::default());
        let foreign = EventBuilderV10::new()
            .id("order-42")
            .source("https://shop.example.com")
            .ty("com.example.order.created")
            .subject("/orders/42")
            .data("application/json", json!({"id": 42}))
            .build()
            .unwrap_or_else(|err| panic!("{err}"));
        let event = Event::try_from(CloudEvent::new(foreign)).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(event.subject, "/orders/42");

        let status = webhook(State(provider.clone()), HttpEvent(event)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let stored = provider
            .history(None, 1)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(stored[0].subject, "events.inbound.webhook");
        assert_eq!(stored[0].category, "inbound");
        assert_eq!(stored[0].metadata["sendersubject"], "/orders/42");
    }
}
