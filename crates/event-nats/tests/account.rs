//! Connecting with credentials of an account that has no JetStream: a
//! permanent refusal naming the cause, not a transient connection error
//! that a caller would retry forever.

#![allow(clippy::unwrap_used)]

mod common;

use common::NatsServer;
use event_core::Error;
use event_nats::{NatsOptions, NatsProvider};

#[tokio::test]
async fn an_account_without_jetstream_is_an_authentication_error_not_transient() {
    let Some(server) = NatsServer::start_with(
        "an_account_without_jetstream_is_an_authentication_error_not_transient",
        "accounts {\n  JS: { jetstream: enabled, users: [ { user: js, password: js } ] }\n  \
         PLAIN: { users: [ { user: plain, password: plain } ] }\n}",
    ) else {
        return;
    };
    let user = |name: &str| NatsOptions {
        user: Some(name.into()),
        password: Some(name.into()),
        ..NatsOptions::default()
    };
    // the JetStream account works
    NatsProvider::connect_with(common::config(&server, "js"), user("js"))
        .await
        .expect("account with JetStream");
    match NatsProvider::connect_with(common::config(&server, "plain"), user("plain")).await {
        Err(e @ Error::Authentication(_)) => {
            assert!(!e.is_transient());
            let text = e.to_string();
            assert!(text.contains("JetStream not enabled for account"), "{text}");
        }
        other => panic!("expected Authentication, got {other:?}"),
    }
}
