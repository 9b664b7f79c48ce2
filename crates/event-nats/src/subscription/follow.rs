//! Following a durable's settings, which another subscription (in this
//! process or another) may change.

use super::{Kind, NatsSubscription};
use crate::settings::ConsumerSettings;
use std::time::Instant;

impl NatsSubscription {
    /// Re-reads `max_deliver`, the ack wait and the backoff of a durable
    /// from the server: another subscription on it may have changed them,
    /// and a redelivery is when the final-delivery flag and the wait matter
    /// (redeliveries are rare, so this costs a request only on the failure
    /// path). Keeps the values it has if the server does not answer in time.
    /// Also re-reads the consumer's pull request limits. Whether the
    /// settings were read.
    pub(super) async fn refresh_settings(&mut self) -> bool {
        if !matches!(self.kind, Kind::Durable) {
            return false;
        }
        let sent = Instant::now();
        let lookup = self.provider.inner.stream.consumer_info(&self.name);
        match tokio::time::timeout(self.provider.consumer_timeout(), lookup).await {
            Ok(Ok(info)) => {
                let settings = ConsumerSettings::of(&info.config);
                match &self.live {
                    // shared with the deliveries' live ack waits (unless a
                    // later background read was recorded meanwhile)
                    Some(live) => live.store(settings, sent),
                    None => self.apply(&settings),
                }
                self.sync_settings();
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(consumer = %self.name, error = %e, "could not refresh consumer settings");
                false
            }
            Err(_) => {
                tracing::debug!(consumer = %self.name, "consumer settings refresh timed out");
                false
            }
        }
    }

    /// Copies a durable's settings read (in the background) since the last
    /// copy into the subscription's fields.
    fn sync_settings(&mut self) {
        if let Some((settings, version)) = self
            .live
            .as_ref()
            .and_then(|live| live.changed_since(self.live_version))
        {
            self.apply(&settings);
            self.live_version = version;
        }
    }

    fn apply(&mut self, settings: &ConsumerSettings) {
        self.max_deliver = settings.max_deliver;
        self.ack_wait = settings.ack_wait;
        self.backoff.clone_from(&settings.backoff);
        self.limits = settings.limits;
    }

    /// Keeps a durable's settings current while the subscription is in use
    /// (handing out deliveries, keeping those it fetched ahead alive): a
    /// background read when they are older than the bound
    /// ([`crate::settings::REFRESH_AFTER`]), and what earlier reads found.
    /// Never waits for the server.
    pub(super) fn follow_settings(&mut self) {
        if let Some(live) = &self.live {
            live.refresh_if_stale();
        }
        self.sync_settings();
    }

    /// [`refresh_settings`](Self::refresh_settings) before the held
    /// delivery is handed out, if it is a redelivery. The delivery stays
    /// held while this waits.
    pub(super) async fn refresh_for_held(&mut self) {
        let redelivered = self
            .held
            .as_ref()
            .and_then(|message| message.info().ok())
            .is_some_and(|info| info.delivered > 1);
        if redelivered {
            self.refresh_settings().await;
        }
    }
}
