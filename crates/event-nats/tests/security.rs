//! Security wiring against a real `nats-server`: TLS (server verification,
//! mutual TLS, `tls.require`), nkey authentication and decentralised JWT
//! authentication through a `.creds` file.
//!
//! Certificates are made at test time with the `openssl` CLI; NATS JWTs are
//! signed with the `nkeys` crate. Without `nats-server` or `openssl` the tests
//! print a `SKIPPED` line (or panic when `A3S_REQUIRE_NATS=1`).
//!
//! Error variants asserted here (the documented contract):
//! - TLS failures (unknown CA, missing client certificate, a connection
//!   refused or dropped mid-handshake) → [`Error::Connection`], message
//!   naming TLS or the certificate problem; `tls.require` or a `tls://` URL
//!   against a server without TLS → [`Error::Unsupported`] (not transient)
//!   saying what to change;
//! - rejected nkeys / JWTs → [`Error::Authentication`], and so are
//!   credentials refused on reconnection (a secret rotated on the server),
//!   until the server accepts them again;
//! - missing or malformed `.creds` file, malformed nkey seed →
//!   [`Error::InvalidConfig`] before any network I/O.

mod common;
#[path = "common/security.rs"]
mod sec;

use common::NatsServer;
use event_core::{Error, Event, EventProvider};
use event_nats::{ClientCert, NatsConfig, NatsOptions, NatsProvider, TlsOptions};
use sec::{Operator, Pki, TempDir};
use std::path::Path;
use std::time::{Duration, Instant};

macro_rules! server {
    ($name:expr, $extra:expr) => {
        match NatsServer::start_with($name, $extra) {
            Some(s) => s,
            None => return,
        }
    };
}

fn event(p: &NatsProvider, n: u64) -> Event {
    common::numbered_event(p, "sec", n)
}

/// Publishes one event and reads it back through a subscription.
async fn round_trip(p: &NatsProvider) {
    let filter = format!("{}.>", p.subject_prefix());
    let mut sub = p.subscribe(&filter).await.expect("subscribe");
    let sent = event(p, 7);
    p.publish(&sent).await.expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("event within 5 s")
        .expect("next")
        .expect("an event");
    assert_eq!(*got.event, sent);
    let history = p.history(None, 10).await.expect("history");
    assert_eq!(history, vec![sent]);
}

fn tls_options(ca: Option<&Path>, client: Option<&Pki>) -> NatsOptions {
    NatsOptions {
        tls: TlsOptions {
            require: true,
            ca_file: ca.map(Path::to_path_buf),
            client_cert: client.map(|pki| ClientCert {
                cert_file: pki.client_cert.clone(),
                key_file: pki.client_key.clone(),
            }),
        },
        ..NatsOptions::default()
    }
}

fn config(server: &NatsServer, tag: &str) -> NatsConfig {
    NatsConfig {
        connect_timeout_secs: 3,
        ..common::config(server, tag)
    }
}

fn tls_server(test: &str) -> Option<(Pki, NatsServer)> {
    let pki = Pki::generate(test)?;
    let server = NatsServer::start_with(test, &pki.server_tls_block())?;
    Some((pki, server))
}

// ---------------------------------------------------------------- TLS

#[tokio::test]
async fn mutual_tls_with_ca_and_client_cert_publishes_and_subscribes() {
    let Some((pki, server)) =
        tls_server("mutual_tls_with_ca_and_client_cert_publishes_and_subscribes")
    else {
        return;
    };
    let p = NatsProvider::connect_with(
        config(&server, "mtls"),
        tls_options(Some(&pki.ca), Some(&pki)),
    )
    .await
    .expect("mutual TLS connect");
    assert!(p.health().await.expect("health"));
    round_trip(&p).await;
    assert!(
        server.log().contains("TLS required for client connections"),
        "the server really runs TLS: {}",
        server.log()
    );
}

#[tokio::test]
async fn tls_url_scheme_enables_tls_without_the_require_flag() {
    let Some((pki, server)) = tls_server("tls_url_scheme_enables_tls_without_the_require_flag")
    else {
        return;
    };
    let mut options = tls_options(Some(&pki.ca), Some(&pki));
    options.tls.require = false;
    let cfg = NatsConfig {
        url: format!("tls://127.0.0.1:{}", server.port()),
        ..config(&server, "tlsurl")
    };
    let p = NatsProvider::connect_with(cfg, options)
        .await
        .expect("tls:// connect");
    round_trip(&p).await;
}

#[tokio::test]
async fn mutual_tls_without_client_cert_is_connection_error() {
    let Some((pki, server)) = tls_server("mutual_tls_without_client_cert_is_connection_error")
    else {
        return;
    };
    let started = Instant::now();
    match NatsProvider::connect_with(config(&server, "nocert"), tls_options(Some(&pki.ca), None))
        .await
    {
        Err(Error::Connection(msg)) => {
            assert!(msg.contains("127.0.0.1"), "names the server: {msg}");
            assert!(
                msg.contains("TLS") && msg.contains("tls.client_cert"),
                "says the client certificate is the problem: {msg}"
            );
        }
        other => panic!("expected Connection, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");
}

#[tokio::test]
async fn tls_with_the_wrong_ca_is_connection_error_naming_the_certificate() {
    let Some((pki, server)) =
        tls_server("tls_with_the_wrong_ca_is_connection_error_naming_the_certificate")
    else {
        return;
    };
    match NatsProvider::connect_with(
        config(&server, "wrongca"),
        tls_options(Some(&pki.other_ca), Some(&pki)),
    )
    .await
    {
        Err(Error::Connection(msg)) => {
            assert!(
                msg.contains("TLS") && msg.contains("not trusted") && msg.contains("tls.ca_file"),
                "says the server certificate is not trusted: {msg}"
            );
        }
        other => panic!("expected Connection, got {other:?}"),
    }
    // and without any CA: the system roots do not know the test CA either
    match NatsProvider::connect_with(config(&server, "noca"), tls_options(None, Some(&pki))).await {
        Err(Error::Connection(msg)) => {
            assert!(msg.contains("not trusted"), "untrusted: {msg}")
        }
        other => panic!("expected Connection, got {other:?}"),
    }
}

/// The error of a configuration asking for TLS from a server without it:
/// not transient, saying what to change on either side.
fn assert_tls_not_offered(result: event_core::Result<NatsProvider>, server: &NatsServer) {
    match result {
        Err(e @ Error::Unsupported { .. }) => {
            let msg = e.to_string();
            assert!(!e.is_transient());
            assert!(
                msg.contains(&format!("127.0.0.1:{}", server.port()))
                    && msg.contains("TLS disabled")
                    && msg.contains("`tls {}` block")
                    && msg.contains("tls.require")
                    && msg.contains("nats://"),
                "names the server and what to change: {msg}"
            );
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[tokio::test]
async fn tls_require_against_a_plaintext_server_is_unsupported_not_transient() {
    let server = server!(
        "tls_require_against_a_plaintext_server_is_unsupported_not_transient",
        ""
    );
    let started = Instant::now();
    let result =
        NatsProvider::connect_with(config(&server, "plain"), tls_options(None, None)).await;
    assert_tls_not_offered(result, &server);
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");

    // a tls:// URL asks for TLS as well
    let cfg = NatsConfig {
        url: format!("tls://127.0.0.1:{}", server.port()),
        ..config(&server, "plainurl")
    };
    assert_tls_not_offered(
        NatsProvider::connect_with(cfg, NatsOptions::default()).await,
        &server,
    );
}

#[tokio::test]
async fn tls_to_a_refused_or_dropping_connection_stays_transient() {
    let Some((pki, mut server)) =
        tls_server("tls_to_a_refused_or_dropping_connection_stays_transient")
    else {
        return;
    };
    // nothing listens on the port any more: refused
    server.kill();
    match NatsProvider::connect_with(
        config(&server, "refused"),
        tls_options(Some(&pki.ca), Some(&pki)),
    )
    .await
    {
        Err(e @ Error::Connection(_)) => assert!(e.is_transient()),
        other => panic!("refused: expected Connection, got {other:?}"),
    }

    // a peer that offers TLS in its INFO and hangs up in the middle of the
    // handshake (as a server restarting at that moment does)
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket
                .write_all(
                    b"INFO {\"server_id\":\"X\",\"version\":\"2.9.10\",\"proto\":1,\
                      \"max_payload\":65536,\"tls_required\":true}\r\n",
                )
                .await
                .unwrap();
            let mut hello = [0u8; 64];
            let _ = socket.read(&mut hello).await;
            drop(socket);
        }
    });
    let cfg = NatsConfig {
        url: format!("nats://127.0.0.1:{port}"),
        ..config(&server, "dropped")
    };
    match NatsProvider::connect_with(cfg, tls_options(Some(&pki.ca), Some(&pki))).await {
        Err(e @ Error::Connection(_)) => assert!(e.is_transient()),
        other => panic!("dropped mid-handshake: expected Connection, got {other:?}"),
    }
    peer.abort();
}

#[tokio::test]
async fn unreadable_tls_files_are_invalid_config_before_connecting() {
    let dir = TempDir::new();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    // nothing listens on port 1: any network attempt would be a Connection error
    let cfg = NatsConfig {
        url: "nats://127.0.0.1:1".into(),
        ..NatsConfig::default()
    };
    let missing = TlsOptions {
        require: true,
        ca_file: Some(dir.path().join("nope.pem")),
        client_cert: None,
    };
    match NatsProvider::connect_with(
        cfg.clone(),
        NatsOptions {
            tls: missing,
            ..NatsOptions::default()
        },
    )
    .await
    {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "tls.ca_file"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    let missing_key = TlsOptions {
        require: true,
        ca_file: None,
        client_cert: Some(ClientCert {
            cert_file: garbage.clone(),
            key_file: dir.path().join("nope.key"),
        }),
    };
    match NatsProvider::connect_with(
        cfg,
        NatsOptions {
            tls: missing_key,
            ..NatsOptions::default()
        },
    )
    .await
    {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "tls.client_cert.key_file"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_tls_files_are_invalid_config_not_a_connection_error() {
    let test = "malformed_tls_files_are_invalid_config_not_a_connection_error";
    let Some((pki, server)) = tls_server(test) else {
        return;
    };
    let garbage = pki.ca.with_file_name("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    // a client certificate whose "key" file holds no key; a CA file
    // without a certificate: configuration mistakes, not retryable
    let no_key = TlsOptions {
        require: true,
        ca_file: Some(pki.ca.clone()),
        client_cert: Some(ClientCert {
            cert_file: pki.client_cert.clone(),
            key_file: pki.client_cert.clone(),
        }),
    };
    let no_ca = TlsOptions {
        require: true,
        ca_file: Some(garbage),
        client_cert: None,
    };
    for (tls, field) in [(no_key, "tls.client_cert.key_file"), (no_ca, "tls.ca_file")] {
        let options = NatsOptions {
            tls,
            ..NatsOptions::default()
        };
        match NatsProvider::connect_with(config(&server, "badpem"), options).await {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected InvalidConfig, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- nkey

#[tokio::test]
async fn nkey_auth_accepts_the_right_seed_and_rejects_another() {
    let user = nkeys::KeyPair::new_user();
    let server = server!(
        "nkey_auth_accepts_the_right_seed_and_rejects_another",
        &format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}",
            user.public_key()
        )
    );
    let with_seed = |seed: String| NatsOptions {
        nkey_seed: Some(seed),
        ..NatsOptions::default()
    };
    let p = NatsProvider::connect_with(config(&server, "nkey"), with_seed(user.seed().unwrap()))
        .await
        .expect("right seed");
    round_trip(&p).await;

    let stranger = nkeys::KeyPair::new_user();
    match NatsProvider::connect_with(config(&server, "nkey"), with_seed(stranger.seed().unwrap()))
        .await
    {
        Err(Error::Authentication(msg)) => assert!(!msg.is_empty()),
        other => panic!("different seed: expected Authentication, got {other:?}"),
    }
    // no credentials at all
    match NatsProvider::connect_with(config(&server, "nkey"), NatsOptions::default()).await {
        Err(Error::Authentication(_)) => {}
        other => panic!("no seed: expected Authentication, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_nkey_seed_is_invalid_config_before_connecting() {
    let cfg = NatsConfig {
        url: "nats://127.0.0.1:1".into(),
        ..NatsConfig::default()
    };
    let public_key_not_seed = nkeys::KeyPair::new_user().public_key();
    let account_seed = nkeys::KeyPair::new_account().seed().unwrap();
    for seed in [
        "",
        "SUnotaseed",
        public_key_not_seed.as_str(),
        account_seed.as_str(),
    ] {
        let options = NatsOptions {
            nkey_seed: Some(seed.into()),
            ..NatsOptions::default()
        };
        match NatsProvider::connect_with(cfg.clone(), options).await {
            Err(Error::InvalidConfig { field, reason }) => {
                assert_eq!(field, "nkey_seed");
                if !seed.is_empty() {
                    assert!(!reason.contains(seed), "the secret is not echoed: {reason}");
                }
            }
            other => panic!("{seed:?}: expected InvalidConfig, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- creds (JWT)

#[tokio::test]
async fn creds_file_user_of_a_trusted_account_connects() {
    let op = Operator::new();
    let server = server!(
        "creds_file_user_of_a_trusted_account_connects",
        &op.server_conf()
    );
    let dir = TempDir::new();
    let path = dir.path().join("user.creds");
    std::fs::write(&path, op.user_creds()).unwrap();
    let cfg = NatsConfig {
        credentials_path: Some(path.display().to_string()),
        ..config(&server, "creds")
    };
    let p = NatsProvider::connect(cfg).await.expect("valid creds");
    round_trip(&p).await;
}

#[tokio::test]
async fn creds_file_rejected_by_the_server_is_authentication_error() {
    let op = Operator::new();
    let server = server!(
        "creds_file_rejected_by_the_server_is_authentication_error",
        &op.server_conf()
    );
    let dir = TempDir::new();
    // a user of an account the operator never signed
    let untrusted = Operator::new();
    // a JWT for one user with another user's seed (signature mismatch)
    let user = nkeys::KeyPair::new_user();
    let impostor = nkeys::KeyPair::new_user();
    let cases = [
        ("untrusted account", untrusted.user_creds()),
        (
            "seed of another user",
            sec::creds(
                &sec::user_jwt(&op.account, &user),
                &impostor.seed().unwrap(),
            ),
        ),
    ];
    for (what, text) in cases {
        let path = dir.path().join("bad.creds");
        std::fs::write(&path, text).unwrap();
        let cfg = NatsConfig {
            credentials_path: Some(path.display().to_string()),
            ..config(&server, "creds")
        };
        match NatsProvider::connect(cfg).await {
            Err(Error::Authentication(msg)) => assert!(!msg.is_empty()),
            other => panic!("{what}: expected Authentication, got {other:?}"),
        }
    }
    // no creds at all on an operator-mode server
    match NatsProvider::connect(config(&server, "creds")).await {
        Err(Error::Authentication(_)) => {}
        other => panic!("no creds: expected Authentication, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_or_malformed_creds_file_is_invalid_config_before_connecting() {
    let dir = TempDir::new();
    let user = nkeys::KeyPair::new_user();
    let account = nkeys::KeyPair::new_account();
    let jwt = sec::user_jwt(&account, &user);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let cases = [
        (
            "missing",
            dir.path().join("nope.creds").display().to_string(),
        ),
        ("empty", write("empty.creds", "")),
        ("garbage", write("garbage.creds", "hello\nworld\n")),
        (
            "jwt without seed",
            write(
                "noseed.creds",
                &format!("-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n"),
            ),
        ),
        (
            "bad seed",
            write("badseed.creds", &sec::creds(&jwt, "SUAAAAnotaseed")),
        ),
    ];
    for (what, path) in cases {
        // nothing listens on port 1: a network attempt would be Connection
        let cfg = NatsConfig {
            url: "nats://127.0.0.1:1".into(),
            credentials_path: Some(path.clone()),
            ..NatsConfig::default()
        };
        match NatsProvider::connect(cfg).await {
            Err(Error::InvalidConfig { field, reason }) => {
                assert_eq!(field, "credentials_path", "{what}");
                assert!(reason.contains(&path), "{what}: names the file: {reason}");
            }
            other => panic!("{what}: expected InvalidConfig, got {other:?}"),
        }
    }
}

// ------------------------------------------------ credentials on reconnect

/// An `authorization` block with one user.
fn one_user(password: &str) -> String {
    format!("authorization {{ users = [ {{ user: orders, password: {password} }} ] }}")
}

/// Publishes event `n` until `accept` takes the result (a transient error
/// meanwhile: the client is still reconnecting) or `limit` has passed.
async fn publish_until<T>(
    p: &NatsProvider,
    n: u64,
    limit: Duration,
    mut accept: impl FnMut(&event_core::Result<u64>) -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        let result = p.publish(&event(p, n)).await;
        if let Some(done) = accept(&result) {
            return done;
        }
        assert!(
            start.elapsed() < limit,
            "after {limit:?}, the publish still gives {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn credentials_refused_on_reconnect_are_authentication_until_accepted_again() {
    let mut server = server!(
        "credentials_refused_on_reconnect_are_authentication_until_accepted_again",
        &one_user("first-secret")
    );
    let options = NatsOptions {
        user: Some("orders".into()),
        password: Some("first-secret".into()),
        ..NatsOptions::default()
    };
    let p = NatsProvider::connect_with(config(&server, "rotate"), options)
        .await
        .expect("connect");
    let filter = format!("{}.>", p.subject_prefix());
    let mut sub = p.subscribe(&filter).await.expect("subscribe");
    p.publish(&event(&p, 1)).await.expect("publish");
    sub.next().await.expect("next").expect("event 1");

    // the secret is rotated on the server only: every reconnection attempt
    // is refused
    server.set_extra(&one_user("rotated-secret"));
    server.restart();
    let refused = publish_until(&p, 2, Duration::from_secs(20), |r| match r {
        Err(Error::Authentication(msg)) => Some(msg.clone()),
        Err(e) if e.is_transient() => None,
        other => panic!("expected Authentication once refused, got {other:?}"),
    })
    .await;
    assert!(
        refused.contains(&server.url()) && refused.contains("refused the credentials"),
        "names the server and the refusal: {refused}"
    );
    assert!(refused.contains("reconnect"), "{refused}");
    assert!(!Error::Authentication(refused).is_transient());
    // steadily so, and for the other operations too
    for n in 3..8 {
        match p.publish(&event(&p, n)).await {
            Err(Error::Authentication(_)) => {}
            other => panic!("a later publish: expected Authentication, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // a subscription waiting for the reconnection says so too (its first
    // call after the loss may still be the transient error)
    let mut said = Vec::new();
    for _ in 0..3 {
        match sub.next().await {
            Err(e @ Error::Authentication(_)) => {
                said.push(e);
                break;
            }
            Err(e) if e.is_transient() => said.push(e),
            other => panic!("subscription: expected an error, got {other:?}"),
        }
    }
    assert!(
        matches!(said.last(), Some(Error::Authentication(m)) if m.contains("refused the credentials")),
        "{said:?}"
    );
    assert!(matches!(
        p.subscribe(&filter).await.map(|_| ()),
        Err(Error::Authentication(_))
    ));
    assert!(matches!(
        p.history(None, 1).await,
        Err(Error::Authentication(_))
    ));
    assert!(matches!(p.info().await, Err(Error::Authentication(_))));
    assert!(!p.health().await.expect("health"));

    // the secret is rotated back: the provider recovers by itself
    server.set_extra(&one_user("first-secret"));
    server.restart();
    publish_until(&p, 10, Duration::from_secs(20), |r| match r {
        Ok(_) => Some(()),
        Err(e) if e.is_transient() || matches!(e, Error::Authentication(_)) => None,
        Err(e) => panic!("recovering: {e:?}"),
    })
    .await;
    assert!(p.health().await.expect("health"));

    // a plain outage afterwards is transient, not a stale refusal
    server.kill();
    let start = Instant::now();
    while p.is_connected() {
        assert!(start.elapsed() < Duration::from_secs(10), "loss unnoticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in 11..16 {
        match p.publish(&event(&p, n)).await {
            Err(Error::Connection(msg)) => assert!(msg.contains("reconnecting"), "{msg}"),
            other => panic!("server down: expected Connection, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_refusal_followed_by_an_outage_is_transient_again() {
    let mut server = server!(
        "a_refusal_followed_by_an_outage_is_transient_again",
        &one_user("first-secret")
    );
    let options = NatsOptions {
        user: Some("orders".into()),
        password: Some("first-secret".into()),
        ..NatsOptions::default()
    };
    let p = NatsProvider::connect_with(config(&server, "refdown"), options)
        .await
        .expect("connect");
    server.set_extra(&one_user("rotated-secret"));
    server.restart();
    publish_until(&p, 1, Duration::from_secs(20), |r| match r {
        Err(Error::Authentication(_)) => Some(()),
        Err(e) if e.is_transient() => None,
        other => panic!("expected Authentication once refused, got {other:?}"),
    })
    .await;
    // the server goes away: its last word is no longer a refusal (the
    // next attempt comes within async-nats's longest delay, 4 s)
    server.kill();
    publish_until(&p, 2, Duration::from_secs(15), |r| match r {
        Err(Error::Connection(msg)) => Some(msg.clone()),
        Err(Error::Authentication(_)) => None,
        other => panic!("server down: expected Connection, got {other:?}"),
    })
    .await;
}
