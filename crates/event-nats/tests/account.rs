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

/// A subject prefix in the server's reserved namespaces would make the
/// stream capture them: on `$JS` every JetStream API request of the account
/// is stored and answered with a publish acknowledgement, breaking every
/// JetStream client; on `_INBOX` every reply. Refused before any I/O.
#[tokio::test]
async fn a_reserved_subject_prefix_is_invalid_config_and_breaks_nothing() {
    let Some(server) =
        NatsServer::start("a_reserved_subject_prefix_is_invalid_config_and_breaks_nothing")
    else {
        return;
    };
    for prefix in ["$JS", "$SYS", "$KV.bucket", "_INBOX", "_INBOX.app"] {
        let config = event_nats::NatsConfig {
            subject_prefix: prefix.into(),
            ..common::config(&server, "reserved")
        };
        match NatsProvider::connect(config).await {
            Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "subject_prefix"),
            other => panic!("{prefix}: expected InvalidConfig, got {other:?}"),
        }
    }
    // JetStream still answers
    NatsProvider::connect(common::config(&server, "after"))
        .await
        .expect("JetStream of the account still works");
}
