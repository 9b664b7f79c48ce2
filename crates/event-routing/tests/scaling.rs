//! Scaling payloads: event types, round trips and validation.

#![allow(clippy::unwrap_used)] // test helpers

use event_core::Error;
use event_routing::scaling::{
    InstanceHealthPayload, InstanceReadyPayload, InstanceStoppedPayload, ScaleDownPayload,
    ScaleUpPayload, ScalingEvent,
};
use serde_json::json;

fn round_trip<P: ScalingEvent + PartialEq + std::fmt::Debug>(
    payload: P,
    event_type: &str,
    subject: &str,
) {
    let event = payload.to_event("gateway").unwrap();
    assert_eq!(event.event_type, event_type);
    assert_eq!(event.subject, subject);
    assert_eq!(event.category, "scaling");
    assert_eq!(event.source, "gateway");
    assert!(!event.summary.is_empty());
    assert_eq!(P::from_event(&event).unwrap(), payload);
}

#[test]
fn every_payload_round_trips_with_its_event_type() {
    round_trip(
        ScaleUpPayload {
            service: "api".into(),
            desired_replicas: 3,
            reason: "load".into(),
        },
        "a3s.gateway.scale.up",
        "events.scaling.gateway.scale.up",
    );
    round_trip(
        ScaleDownPayload {
            service: "api".into(),
            target_replicas: 0,
            drain_timeout_secs: 30,
        },
        "a3s.gateway.scale.down",
        "events.scaling.gateway.scale.down",
    );
    round_trip(
        InstanceReadyPayload {
            service: "api".into(),
            instance_id: "i-1".into(),
            endpoint: "http://10.0.0.1:80".into(),
        },
        "a3s.box.instance.ready",
        "events.scaling.box.instance.ready",
    );
    round_trip(
        InstanceStoppedPayload {
            service: "api".into(),
            instance_id: "i-1".into(),
        },
        "a3s.box.instance.stopped",
        "events.scaling.box.instance.stopped",
    );
    round_trip(
        InstanceHealthPayload {
            instance_id: "i-1".into(),
            cpu_percent: 99.5,
            memory_bytes: 1 << 30,
            in_flight: 12,
        },
        "a3s.box.instance.health",
        "events.scaling.box.instance.health",
    );
}

#[test]
fn payload_json_uses_the_documented_field_names() {
    let event = ScaleDownPayload {
        service: "api".into(),
        target_replicas: 1,
        drain_timeout_secs: 5,
    }
    .into_event("gw")
    .unwrap();
    assert_eq!(
        event.payload,
        json!({"service": "api", "target_replicas": 1, "drain_timeout_secs": 5})
    );
    let custom = ScaleUpPayload {
        service: "a".into(),
        desired_replicas: 1,
        reason: "r".into(),
    }
    .to_event_with_prefix("prod", "gw")
    .unwrap();
    assert_eq!(custom.subject, "prod.scaling.gateway.scale.up");
}

#[test]
fn invalid_values_are_rejected_both_ways() {
    let health = InstanceHealthPayload {
        instance_id: "i".into(),
        cpu_percent: 100.5,
        memory_bytes: 0,
        in_flight: 0,
    };
    assert!(
        matches!(health.to_event("box"), Err(Error::SchemaValidation { ref path, .. }) if path == "/cpu_percent")
    );
    let negative_cpu = InstanceHealthPayload {
        cpu_percent: -1.0,
        ..health.clone()
    };
    assert!(negative_cpu.validate().is_err());
    let ok = InstanceHealthPayload {
        cpu_percent: 100.0,
        ..health
    };
    let mut event = ok.to_event("box").unwrap();
    event.payload["cpu_percent"] = json!(250);
    assert!(matches!(
        InstanceHealthPayload::from_event(&event),
        Err(Error::SchemaValidation { .. })
    ));

    let up = ScaleUpPayload {
        service: "api".into(),
        desired_replicas: 2,
        reason: "r".into(),
    };
    let mut event = up.to_event("gw").unwrap();
    event.payload["desired_replicas"] = json!(-3);
    let err = ScaleUpPayload::from_event(&event).unwrap_err();
    assert!(matches!(err, Error::SchemaValidation { .. }), "{err}");
    let mut event = ScaleDownPayload {
        service: "api".into(),
        target_replicas: 1,
        drain_timeout_secs: 1,
    }
    .to_event("gw")
    .unwrap();
    event.payload["target_replicas"] = json!(-1);
    assert!(ScaleDownPayload::from_event(&event).is_err());

    assert!(
        ScaleUpPayload {
            desired_replicas: 0,
            ..up.clone()
        }
        .validate()
        .is_err()
    );
    assert!(
        ScaleUpPayload {
            service: " ".into(),
            ..up.clone()
        }
        .to_event("gw")
        .is_err()
    );
    assert!(
        InstanceStoppedPayload {
            service: "a".into(),
            instance_id: "".into()
        }
        .validate()
        .is_err()
    );
    assert!(
        InstanceReadyPayload {
            service: "a".into(),
            instance_id: "i".into(),
            endpoint: "".into()
        }
        .validate()
        .is_err()
    );

    // Wrong event type.
    let up_event = up.to_event("gw").unwrap();
    assert!(ScaleDownPayload::from_event(&up_event).is_err());
    // Missing field.
    let mut partial = up_event.clone();
    partial.payload = json!({"service": "api"});
    assert!(ScaleUpPayload::from_event(&partial).is_err());
}
