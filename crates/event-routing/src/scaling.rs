//! Typed payloads for Gateway ↔ Box scaling coordination.
//!
//! | event type | payload |
//! |---|---|
//! | `a3s.gateway.scale.up` | [`ScaleUpPayload`] |
//! | `a3s.gateway.scale.down` | [`ScaleDownPayload`] |
//! | `a3s.box.instance.ready` | [`InstanceReadyPayload`] |
//! | `a3s.box.instance.stopped` | [`InstanceStoppedPayload`] |
//! | `a3s.box.instance.health` | [`InstanceHealthPayload`] |
//!
//! [`ScalingEvent`] converts each to and from an [`Event`], validating on the
//! way in and out: an empty service or instance id, zero replicas to scale up
//! to, a CPU share outside 0–100 % or a negative number in an unsigned field
//! is refused with [`Error::SchemaValidation`].
//!
//! ```
//! use event_routing::scaling::{ScaleUpPayload, ScalingEvent};
//!
//! let up = ScaleUpPayload {
//!     service: "checkout".into(),
//!     desired_replicas: 5,
//!     reason: "p99 latency over budget".into(),
//! };
//! let event = up.to_event("gateway")?;
//! assert_eq!(event.event_type, "a3s.gateway.scale.up");
//! assert_eq!(event.subject, "events.scaling.gateway.scale.up");
//! assert_eq!(ScaleUpPayload::from_event(&event)?, up);
//!
//! let mut bad = event.clone();
//! bad.payload["desired_replicas"] = serde_json::json!(-1);
//! assert!(ScaleUpPayload::from_event(&bad).is_err());
//! # Ok::<(), event_core::Error>(())
//! ```

use event_core::{Error, Event, Result};
use serde::{Serialize, de::DeserializeOwned};

/// Category of scaling events.
pub const CATEGORY: &str = "scaling";

fn invalid(event_type: &str, path: &str, reason: impl Into<String>) -> Error {
    Error::SchemaValidation {
        event_type: event_type.to_owned(),
        version: 1,
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn non_empty(event_type: &str, field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(invalid(
            event_type,
            &format!("/{field}"),
            "must not be empty",
        ));
    }
    Ok(())
}

/// A typed scaling payload with its event type.
pub trait ScalingEvent: Serialize + DeserializeOwned {
    /// The event type (`a3s.gateway.scale.up`).
    const EVENT_TYPE: &'static str;

    /// Checks the values ([`Error::SchemaValidation`] naming the field).
    fn validate(&self) -> Result<()>;

    /// A one-line summary for the event.
    fn summary(&self) -> String;

    /// The event subject under `prefix`:
    /// `{prefix}.scaling.{event type without "a3s."}`.
    fn subject(prefix: &str) -> String {
        let topic = Self::EVENT_TYPE
            .strip_prefix("a3s.")
            .unwrap_or(Self::EVENT_TYPE);
        format!("{prefix}.{CATEGORY}.{topic}")
    }

    /// A validated event under the `events` prefix, from `source`.
    fn to_event(&self, source: &str) -> Result<Event> {
        self.to_event_with_prefix("events", source)
    }

    /// A validated event under `prefix`, from `source`.
    fn to_event_with_prefix(&self, prefix: &str, source: &str) -> Result<Event> {
        self.validate()?;
        let payload = serde_json::to_value(self)?;
        Ok(Event::typed(
            Self::subject(prefix),
            CATEGORY,
            Self::EVENT_TYPE,
            1,
            self.summary(),
            source,
            payload,
        ))
    }

    /// The event, consuming the payload (see [`to_event`](Self::to_event)).
    fn into_event(self, source: &str) -> Result<Event>
    where
        Self: Sized,
    {
        self.to_event(source)
    }

    /// Reads and validates the payload of `event`, which must carry
    /// [`EVENT_TYPE`](Self::EVENT_TYPE).
    fn from_event(event: &Event) -> Result<Self>
    where
        Self: Sized,
    {
        if event.event_type != Self::EVENT_TYPE {
            return Err(invalid(
                Self::EVENT_TYPE,
                "",
                format!("event type is {:?}", event.event_type),
            ));
        }
        let payload: Self = serde_json::from_value(event.payload.clone())
            .map_err(|e| invalid(Self::EVENT_TYPE, "", e.to_string()))?;
        payload.validate()?;
        Ok(payload)
    }
}

/// `a3s.gateway.scale.up`: the gateway asks for more replicas.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScaleUpPayload {
    /// Service to scale.
    pub service: String,
    /// Replicas wanted (at least 1).
    pub desired_replicas: u32,
    /// Why.
    pub reason: String,
}

impl ScalingEvent for ScaleUpPayload {
    const EVENT_TYPE: &'static str = "a3s.gateway.scale.up";

    fn validate(&self) -> Result<()> {
        non_empty(Self::EVENT_TYPE, "service", &self.service)?;
        if self.desired_replicas == 0 {
            return Err(invalid(
                Self::EVENT_TYPE,
                "/desired_replicas",
                "scaling up needs at least one replica",
            ));
        }
        Ok(())
    }

    fn summary(&self) -> String {
        format!(
            "scale {} up to {} replicas",
            self.service, self.desired_replicas
        )
    }
}

/// `a3s.gateway.scale.down`: the gateway asks for fewer replicas.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScaleDownPayload {
    /// Service to scale.
    pub service: String,
    /// Replicas to keep (0 scales to zero).
    pub target_replicas: u32,
    /// Seconds in-flight work may take to drain.
    pub drain_timeout_secs: u64,
}

impl ScalingEvent for ScaleDownPayload {
    const EVENT_TYPE: &'static str = "a3s.gateway.scale.down";

    fn validate(&self) -> Result<()> {
        non_empty(Self::EVENT_TYPE, "service", &self.service)
    }

    fn summary(&self) -> String {
        format!(
            "scale {} down to {} replicas",
            self.service, self.target_replicas
        )
    }
}

/// `a3s.box.instance.ready`: an instance is serving.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceReadyPayload {
    /// Service the instance belongs to.
    pub service: String,
    /// Instance id.
    pub instance_id: String,
    /// Where it serves (`http://10.0.0.7:8080`).
    pub endpoint: String,
}

impl ScalingEvent for InstanceReadyPayload {
    const EVENT_TYPE: &'static str = "a3s.box.instance.ready";

    fn validate(&self) -> Result<()> {
        non_empty(Self::EVENT_TYPE, "service", &self.service)?;
        non_empty(Self::EVENT_TYPE, "instance_id", &self.instance_id)?;
        non_empty(Self::EVENT_TYPE, "endpoint", &self.endpoint)
    }

    fn summary(&self) -> String {
        format!("{} instance {} ready", self.service, self.instance_id)
    }
}

/// `a3s.box.instance.stopped`: an instance stopped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceStoppedPayload {
    /// Service the instance belonged to.
    pub service: String,
    /// Instance id.
    pub instance_id: String,
}

impl ScalingEvent for InstanceStoppedPayload {
    const EVENT_TYPE: &'static str = "a3s.box.instance.stopped";

    fn validate(&self) -> Result<()> {
        non_empty(Self::EVENT_TYPE, "service", &self.service)?;
        non_empty(Self::EVENT_TYPE, "instance_id", &self.instance_id)
    }

    fn summary(&self) -> String {
        format!("{} instance {} stopped", self.service, self.instance_id)
    }
}

/// `a3s.box.instance.health`: an instance's load.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InstanceHealthPayload {
    /// Instance id.
    pub instance_id: String,
    /// CPU use, 0–100 %.
    pub cpu_percent: f64,
    /// Resident memory in bytes.
    pub memory_bytes: u64,
    /// Requests in progress.
    pub in_flight: u32,
}

impl ScalingEvent for InstanceHealthPayload {
    const EVENT_TYPE: &'static str = "a3s.box.instance.health";

    fn validate(&self) -> Result<()> {
        non_empty(Self::EVENT_TYPE, "instance_id", &self.instance_id)?;
        if !(0.0..=100.0).contains(&self.cpu_percent) {
            return Err(invalid(
                Self::EVENT_TYPE,
                "/cpu_percent",
                format!("{} is outside 0..=100", self.cpu_percent),
            ));
        }
        Ok(())
    }

    fn summary(&self) -> String {
        format!(
            "instance {}: cpu {:.1}%, {} in flight",
            self.instance_id, self.cpu_percent, self.in_flight
        )
    }
}
