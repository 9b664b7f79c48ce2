//! JetStream configurations as the server's own JSON, for updates.
//!
//! JetStream replaces the whole configuration of a stream or consumer on an
//! update. async-nats's typed configurations model only part of it (in this
//! build: no `metadata`, compression or subject transforms of a stream, no
//! `metadata`, `pause_until` or priority groups of a consumer, nothing a
//! later server adds), so a typed update would silently drop those settings
//! from a stream or consumer provisioned elsewhere. An update is made from
//! the configuration the server reports instead, with only the fields the
//! provider owns changed ([`patched`]).

use crate::error;
use async_nats::jetstream::{self, response::Response};
use event_core::{Error, Result};
use std::time::Duration;

/// Sends JetStream API request `subject` (below `$JS.API.`) with `body`
/// (operation `op` in errors): the server's answer, `Err` inside for its
/// refusal (left to the caller to map), `Err` outside for a request that
/// got no answer (timeout, lost connection).
pub(crate) async fn request(
    js: &jetstream::Context,
    subject: String,
    body: &serde_json::Value,
    op: &str,
    timeout: Duration,
) -> Result<std::result::Result<serde_json::Value, jetstream::Error>> {
    let response: Response<serde_json::Value> = js
        .request(subject, body)
        .await
        .map_err(|e| error::map(op, e, timeout))?;
    Ok(match response {
        Response::Ok(answer) => Ok(answer),
        Response::Err { error } => Err(error),
    })
}

/// The `config` object of an INFO answer about `what` (`stream S`,
/// `consumer C`).
pub(crate) fn config_of(mut info: serde_json::Value, what: &str) -> Result<serde_json::Value> {
    match info.get_mut("config").map(serde_json::Value::take) {
        Some(config @ serde_json::Value::Object(_)) => Ok(config),
        _ => Err(Error::Serialization(format!(
            "{what} info: no configuration in the server's answer"
        ))),
    }
}

/// `raw` (a configuration as the server sent it) with `fields` taken from
/// `typed` (a typed configuration as async-nats serializes it); a field
/// `typed` lacks (async-nats leaves out defaults, and fields it does not
/// model) is removed, so the server applies its default as it would for
/// the typed update. Every other field is kept as the server sent it, those
/// this build does not know included.
pub(crate) fn patched(
    raw: &serde_json::Value,
    typed: &serde_json::Value,
    fields: &[&str],
) -> serde_json::Value {
    let mut update = raw.clone();
    if let Some(object) = update.as_object_mut() {
        for field in fields {
            match typed.get(*field) {
                Some(value) => {
                    object.insert((*field).to_string(), value.clone());
                }
                None => {
                    object.remove(*field);
                }
            }
        }
    }
    update
}
