//! Permission violations of what a subscription needs: its pull requests,
//! the inbox of its current pull, its acknowledgements.

use super::NatsSubscription;
use crate::denial::{Action, Denial, Rule};
use crate::provider::Link;
use event_core::{Error, Result};
use std::sync::Arc;

/// What a subscription needs: publishing its pull requests
/// (`pull_subject`), subscribing to the inbox of its current pull,
/// publishing acknowledgements.
pub(super) fn needs<'a>(
    pull_subject: &'a str,
    inbox: Option<&'a str>,
    acks: &'a AckScope,
) -> [Rule<'a>; 3] {
    [
        Rule::Publish(pull_subject),
        Rule::Subscribe(inbox.unwrap_or_default()),
        acks.rule(),
    ]
}

/// Where a subscription's acknowledgements go, to recognise their
/// permission violations.
pub(super) struct AckScope {
    pub(super) link: Arc<Link>,
    pub(super) stream: Arc<str>,
    pub(super) consumer: String,
}

impl AckScope {
    fn rule(&self) -> Rule<'_> {
        Rule::Ack {
            stream: &self.stream,
            name: &self.consumer,
        }
    }

    /// A violation of an acknowledgement recorded since `since`, as the
    /// error of operation `what`.
    pub(super) fn denied(&self, since: u64, what: &str) -> Result<()> {
        match self.link.denials.find(since, &[self.rule()]) {
            Some(denial) => Err(denial.error(&format!("{what} on consumer {}", self.consumer))),
            None => Ok(()),
        }
    }
}

impl NatsSubscription {
    /// The oldest permission violation not reported yet of what this
    /// subscription needs: its pull requests, the inbox of its current
    /// pull, the acknowledgements of its deliveries. Violations of other
    /// subjects are skipped for good (one atomic load per call while the
    /// connection reports none).
    pub(super) fn unreported_denial(&mut self) -> Option<Denial> {
        let denials = &self.provider.inner.link.denials;
        let mark = denials.mark();
        if mark <= self.since {
            return None;
        }
        let rules = needs(&self.pull_subject, self.pull_inbox.as_deref(), &self.acks);
        let found = denials.find(self.since, &rules);
        if found.is_none() {
            self.since = mark;
        }
        found
    }

    /// Reports `denial` (once): a denied pull or pull inbox ends the
    /// current pull (the server never answers it; the next call pulls
    /// again); a denied ack leaves the delivery to be redelivered after its
    /// ack wait.
    pub(super) fn denied(&mut self, denial: &Denial) -> Error {
        self.since = self.since.max(denial.id + 1);
        if denial.action == Action::Subscribe || denial.subject == self.pull_subject {
            self.batch = None;
            self.pull_inbox = None;
        }
        denial.error(&format!("consumer {}", self.name))
    }
}
