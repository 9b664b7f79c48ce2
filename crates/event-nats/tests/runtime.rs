//! A provider whose client outlived the Tokio runtime that connected it:
//! async-nats runs the connection on that runtime, so once it is shut down
//! the client's connection task is gone and never comes back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::NatsServer;
use event_core::{Error, EventProvider, SubscribeOptions};
use std::future::Future;
use std::time::Duration;

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `call`'s error, which must come at once (well within the test config's
/// 5 s request timeout: nothing waits for a reconnection that cannot come).
async fn fails_fast<T>(what: &str, call: impl Future<Output = event_core::Result<T>>) -> Error {
    match tokio::time::timeout(Duration::from_secs(2), call).await {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("{what}: succeeded on a dead client"),
        Err(_) => panic!("{what}: still waiting after 2 s"),
    }
}

/// The error every call gets once the client's connection task is gone:
/// `Closed` (not transient: the client does not come back by itself),
/// saying why and to connect again.
fn assert_gone(what: &str, e: &Error) {
    assert!(matches!(e, Error::Closed(_)), "{what}: {e:?}");
    assert!(!e.is_transient(), "{what}: {e:?}");
    let text = e.to_string();
    assert!(text.contains("connection task is gone"), "{what}: {text}");
    assert!(text.contains("runtime"), "{what}: {text}");
    assert!(text.contains("connect again"), "{what}: {text}");
}

#[test]
fn a_provider_used_after_its_connecting_runtime_shut_down_is_closed() {
    let Some(server) = NatsServer::start("runtime_gone") else {
        return;
    };
    let a = multi_thread();
    let (p, sub, delivery) = a.block_on(async {
        let p = common::provider(&server, "rtgone").await;
        p.publish(&common::numbered_event(&p, "t", 1))
            .await
            .unwrap();
        let opts = SubscribeOptions {
            ack_wait: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        let filter = format!("{}.>", p.subject_prefix());
        let mut sub = p
            .subscribe_durable_with_options("d1", &filter, &opts)
            .await
            .unwrap();
        // left unacknowledged
        let delivery = sub.next_manual_ack().await.unwrap().unwrap();
        assert!(p.is_connected());
        (p, sub, delivery)
    });
    drop(a);
    assert!(
        !p.is_connected(),
        "is_connected() after the connecting runtime was shut down"
    );
    let mut sub = sub;
    current_thread().block_on(async {
        let filter = format!("{}.>", p.subject_prefix());
        assert!(!p.health().await.unwrap(), "health");
        let e = fails_fast("publish", p.publish(&common::numbered_event(&p, "t", 2))).await;
        assert_gone("publish", &e);
        let e = fails_fast("subscribe", p.subscribe(&filter)).await;
        assert_gone("subscribe", &e);
        let e = fails_fast(
            "durable subscribe",
            p.subscribe_durable_with_options("d2", &filter, &SubscribeOptions::default()),
        )
        .await;
        assert_gone("durable subscribe", &e);
        let e = fails_fast("history", p.history(None, 10)).await;
        assert_gone("history", &e);
        let e = fails_fast("filtered history", p.history(Some(&filter), 10)).await;
        assert_gone("filtered history", &e);
        let e = fails_fast("info", p.info()).await;
        assert_gone("info", &e);
        let e = fails_fast("unsubscribe", p.unsubscribe("d1")).await;
        assert_gone("unsubscribe", &e);
        let e = fails_fast("next on the old subscription", sub.next_manual_ack()).await;
        assert_gone("next on the old subscription", &e);
        let e = fails_fast("ack of a delivery received before", delivery.ack()).await;
        assert_gone("ack of a delivery received before", &e);
        let e = fails_fast("close of the old subscription", sub.close()).await;
        assert_gone("close of the old subscription", &e);
        assert!(!p.is_connected());
    });
    // dropped outside any runtime
    drop(sub);
    drop(p);
}

/// A provider whose last handle is held by a task its connecting runtime
/// drops while shutting down: the drop, which would keep the connection
/// until what was queued is sent, spawns on a runtime that takes no more
/// tasks, and neither panics nor hangs the shutdown.
#[test]
fn a_provider_dropped_by_its_runtimes_shutdown_neither_panics_nor_hangs() {
    let Some(server) = NatsServer::start("runtime_shutdown_drop") else {
        return;
    };
    for runtime in [multi_thread(), current_thread()] {
        let p = runtime.block_on(common::provider(&server, "rtdrop"));
        runtime.spawn(async move {
            let _held = p;
            std::future::pending::<()>().await;
        });
        drop(runtime);
    }
}

/// The server's open client connections, from its monitoring port.
fn open_connections(monitor: u16) -> u64 {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", monitor)).unwrap();
    conn.write_all(b"GET /varz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let varz: serde_json::Value = serde_json::from_str(body).unwrap();
    varz["connections"].as_u64().unwrap()
}

/// Providers connected and dropped in a loop, each with a delivery it
/// acknowledged just before: the connections their drops keep until what
/// was queued is sent all close (none is kept for ever), whether dropped
/// inside the runtime or outside it.
#[test]
fn providers_dropped_in_a_loop_leave_no_connection_open() {
    let monitor = common::free_port();
    let Some(server) = NatsServer::start_with(
        "providers_dropped_in_a_loop",
        &format!("http: \"127.0.0.1:{monitor}\""),
    ) else {
        return;
    };
    let runtime = multi_thread();
    for round in 0..20 {
        let p = runtime.block_on(async {
            let p = common::provider(&server, "loop").await;
            let filter = format!("{}.>", p.subject_prefix());
            let mut sub = p.subscribe(&filter).await.unwrap();
            p.publish(&common::numbered_event(&p, "t", 1))
                .await
                .unwrap();
            let delivery = sub.next_manual_ack().await.unwrap().unwrap();
            delivery.ack().await.unwrap();
            p
        });
        if round % 2 == 0 {
            runtime.block_on(async move { drop(p) });
        } else {
            drop(p);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let open = open_connections(monitor);
        if open == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{open} connections still open 20 s after the last drop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
