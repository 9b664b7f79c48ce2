//! Permission violations, and the operations they make fail.
//!
//! nats-server does not answer a publish or a subscription that the user's
//! permissions deny: it drops it and sends
//! `-ERR 'Permissions Violation for Publish to "<subject>"'` (or `for
//! Subscription to "<subject>"`) on the connection, which async-nats hands
//! to the connection's event callback as a server error, not to the request
//! that caused it. Without this module a denied request timed out as if the
//! server were slow, a denied pull looked like an empty stream (`history`
//! returned nothing, a subscription waited forever) and a denied ack was
//! silently dropped.
//!
//! [`Denials`] keeps the recent violations of the connection. An operation
//! takes a [`mark`](Denials::mark) before its I/O and describes the subjects
//! it needs with [`Rule`]s; a violation recorded after the mark that a rule
//! matches ends the operation with [`Error::Authentication`] naming the
//! denied subject and the permission to grant (see [`guarded`]).

use event_core::{Error, Result};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Violations kept: enough for every operation in flight to find its own
/// (each looks only at those recorded since it started), a publish batch's
/// window of acknowledgements included.
const KEPT: usize = 256;

/// What the server refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Publish,
    Subscribe,
}

/// One permission violation reported by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    /// Position in the connection's sequence of violations.
    pub(crate) id: u64,
    pub(crate) action: Action,
    pub(crate) subject: String,
}

/// The text of a Go-quoted string (nats-server names the subject with
/// `%q`: a `"` or `\` in it is escaped with a `\`, and so is what is not
/// printable) whose opening quote is already taken off, up to its closing
/// quote (the rest of `quoted` when there is none).
fn unquote(quoted: &str) -> String {
    let mut text = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => {
                let hex = |chars: &mut std::str::Chars<'_>, digits: usize| {
                    let code: String = chars.by_ref().take(digits).collect();
                    u32::from_str_radix(&code, 16).ok().and_then(char::from_u32)
                };
                let unescaped = match chars.next() {
                    Some('a') => Some('\u{7}'),
                    Some('b') => Some('\u{8}'),
                    Some('f') => Some('\u{c}'),
                    Some('n') => Some('\n'),
                    Some('r') => Some('\r'),
                    Some('t') => Some('\t'),
                    Some('v') => Some('\u{b}'),
                    Some('x') => hex(&mut chars, 2),
                    Some('u') => hex(&mut chars, 4),
                    Some('U') => hex(&mut chars, 8),
                    other => other,
                };
                text.extend(unescaped);
            }
            c => text.push(c),
        }
    }
    text
}

impl Denial {
    /// The action and subject of a server error text such as
    /// `Permissions Violation for Publish to "a.b"` (or `for Subscription
    /// to "_INBOX.x"`, possibly followed by ` using queue "q"`); `None` for
    /// any other error.
    pub(crate) fn parse(text: &str) -> Option<(Action, String)> {
        let text = text.trim().trim_start_matches("nats: ");
        let rest = text.strip_prefix("Permissions Violation for ")?;
        let (action, rest) = if let Some(rest) = rest.strip_prefix("Publish to ") {
            (Action::Publish, rest)
        } else if let Some(rest) = rest.strip_prefix("Subscription to ") {
            (Action::Subscribe, rest)
        } else {
            return None;
        };
        let subject = match rest.strip_prefix('"') {
            Some(quoted) => unquote(quoted),
            None => rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        };
        (!subject.is_empty()).then_some((action, subject))
    }

    /// [`Error::Authentication`] for operation `op`, naming the denied
    /// subject and the permission that would allow it.
    pub(crate) fn error(&self, op: &str) -> Error {
        let (verb, kind) = match self.action {
            Action::Publish => ("publish to", "publish"),
            Action::Subscribe => ("subscribe to", "subscribe"),
        };
        let mut message = format!(
            "{op}: the server denied {verb} {:?} (Permissions Violation): grant this user \
             {kind} permission on {:?}",
            self.subject,
            self.permission()
        );
        if self.subject.starts_with("$JS.ACK.") {
            message.push_str(
                " to acknowledge events (unacknowledged events are redelivered after the ack \
                 wait, none is lost)",
            );
        } else if self.action == Action::Subscribe {
            message.push_str(" (JetStream replies and pulled events arrive on _INBOX subjects)");
        }
        Error::Authentication(message)
    }

    /// The permission to grant: the subject widened to what the provider
    /// needs for every consumer or delivery of the stream.
    fn permission(&self) -> String {
        let tokens: Vec<&str> = self.subject.split('.').collect();
        let upto = |n: usize| format!("{}.>", tokens[..n].join("."));
        match tokens.as_slice() {
            ["_INBOX", ..] => "_INBOX.>".to_string(),
            // $JS.ACK.<stream>.<consumer>...
            ["$JS", "ACK", _, _, ..] => upto(3),
            // $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>
            ["$JS", "API", "CONSUMER", "MSG", "NEXT", _, _, ..] => upto(6),
            // $JS.API.CONSUMER.<op>.<stream>.<consumer>...
            ["$JS", "API", "CONSUMER", _, _, _, ..] => upto(5),
            _ => self.subject.clone(),
        }
    }
}

/// A subject an operation needs; matched against the violations recorded
/// while it runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rule<'a> {
    /// A publish to exactly this subject.
    Publish(&'a str),
    /// A publish to this subject or one below it (`a.b` matches `a.b` and
    /// `a.b.c`, not `a.bc`).
    PublishUnder(&'a str),
    /// Any JetStream API request on consumer `name` of `stream` (create,
    /// info, delete: `$JS.API.CONSUMER.<op>.<stream>.<name>[.<filter>]`).
    Consumer { stream: &'a str, name: &'a str },
    /// An acknowledgement of a delivery of consumer `name` of `stream`
    /// (`$JS.ACK.<stream>.<name>.…`).
    Ack { stream: &'a str, name: &'a str },
    /// A subscription to exactly this subject.
    Subscribe(&'a str),
    /// The client's subscription for request replies (`_INBOX.<id>.*`),
    /// which every JetStream API request needs.
    ReplyInbox,
}

impl Rule<'_> {
    fn matches(&self, denial: &Denial) -> bool {
        let subject = denial.subject.as_str();
        match (*self, denial.action) {
            (Rule::Publish(s), Action::Publish) => subject == s,
            (Rule::PublishUnder(prefix), Action::Publish) => subject
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.')),
            (Rule::Consumer { stream, name }, Action::Publish) => {
                let mut tokens = subject.split('.');
                matches!(
                    (
                        tokens.next(),
                        tokens.next(),
                        tokens.next(),
                        tokens.next(),
                        tokens.next(),
                        tokens.next()
                    ),
                    (Some("$JS"), Some("API"), Some("CONSUMER"), Some(_), Some(s), Some(n))
                        if s == stream && n == name
                )
            }
            (Rule::Ack { stream, name }, Action::Publish) => {
                let tokens: Vec<&str> = subject.split('.').collect();
                tokens.starts_with(&["$JS", "ACK"])
                    && tokens[2..]
                        .windows(2)
                        .any(|w| w[0] == stream && w[1] == name)
            }
            (Rule::Subscribe(s), Action::Subscribe) => subject == s,
            (Rule::ReplyInbox, Action::Subscribe) => {
                subject.starts_with("_INBOX.") && subject.ends_with(".*")
            }
            _ => false,
        }
    }
}

/// The recent permission violations of one connection.
#[derive(Default)]
pub(crate) struct Denials {
    /// How many were recorded: the next one's id.
    recorded: AtomicU64,
    log: Mutex<VecDeque<Denial>>,
    /// Woken (all waiters) on each new violation.
    added: tokio::sync::Notify,
}

impl Denials {
    /// Where an operation starting now begins to look.
    pub(crate) fn mark(&self) -> u64 {
        self.recorded.load(Ordering::Acquire)
    }

    /// Records a violation reported by the server.
    pub(crate) fn record(&self, action: Action, subject: String) {
        {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            let id = self.recorded.load(Ordering::Relaxed);
            log.push_back(Denial {
                id,
                action,
                subject,
            });
            if log.len() > KEPT {
                log.pop_front();
            }
            self.recorded.store(id + 1, Ordering::Release);
        }
        self.added.notify_waiters();
    }

    /// The oldest violation recorded at or after `since` that a rule
    /// matches.
    pub(crate) fn find(&self, since: u64, rules: &[Rule<'_>]) -> Option<Denial> {
        if self.mark() <= since {
            return None;
        }
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter()
            .filter(|d| d.id >= since)
            .find(|d| rules.iter().any(|r| r.matches(d)))
            .cloned()
    }

    /// Waits for a violation at or after `since` that a rule matches.
    pub(crate) async fn wait(&self, since: u64, rules: &[Rule<'_>]) -> Denial {
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            // registered before the log is read: no violation is missed
            added.as_mut().enable();
            if let Some(denial) = self.find(since, rules) {
                return denial;
            }
            added.await;
        }
    }
}

/// Runs `request` (operation `op`), ended at once by a violation that
/// `rules` match, as [`Error::Authentication`]: the server will never
/// answer it. A request that fails otherwise while such a violation is on
/// record fails with that violation too.
pub(crate) async fn guarded<T>(
    denials: &Denials,
    op: &str,
    rules: &[Rule<'_>],
    request: impl Future<Output = Result<T>>,
) -> Result<T> {
    let since = denials.mark();
    tokio::select! {
        biased;
        result = request => match result {
            Err(err) => Err(denials.find(since, rules).map_or(err, |d| d.error(op))),
            ok => ok,
        },
        denial = denials.wait(since, rules) => Err(denial.error(op)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_parsed() {
        assert_eq!(
            Denial::parse(r#"Permissions Violation for Publish to "$JS.ACK.S.c.1.2.3.4.0""#),
            Some((Action::Publish, "$JS.ACK.S.c.1.2.3.4.0".to_string()))
        );
        assert_eq!(
            Denial::parse(
                r#"Permissions Violation for Subscription to "_INBOX.x" using queue "q""#
            ),
            Some((Action::Subscribe, "_INBOX.x".to_string()))
        );
        // `%q`-quoted: quotes and backslashes in the subject are escaped
        assert_eq!(
            Denial::parse(r#"Permissions Violation for Publish to "events.a\"b\\c.\"x\"""#),
            Some((Action::Publish, r#"events.a"b\c."x""#.to_string()))
        );
        assert_eq!(
            Denial::parse(r#"Permissions Violation for Publish to "events.é.\u00e9\x41""#),
            Some((Action::Publish, "events.é.éA".to_string()))
        );
        assert_eq!(Denial::parse("Authorization Violation"), None);
        assert_eq!(
            Denial::parse("Permissions Violation for Publish to \"\""),
            None
        );
    }

    fn denial(action: Action, subject: &str) -> Denial {
        Denial {
            id: 0,
            action,
            subject: subject.to_string(),
        }
    }

    #[test]
    fn rules_match_only_their_subjects() {
        use Action::{Publish, Subscribe};
        let create = denial(Publish, "$JS.API.CONSUMER.CREATE.S.c.events.>");
        let consumer = Rule::Consumer {
            stream: "S",
            name: "c",
        };
        assert!(consumer.matches(&create));
        assert!(
            !Rule::Consumer {
                stream: "S",
                name: "d"
            }
            .matches(&create)
        );
        // a pull is not a consumer API request
        assert!(!consumer.matches(&denial(Publish, "$JS.API.CONSUMER.MSG.NEXT.S.c")));
        let ack = Rule::Ack {
            stream: "S",
            name: "c",
        };
        assert!(ack.matches(&denial(Publish, "$JS.ACK.S.c.1.2.3.4.0")));
        assert!(!ack.matches(&denial(Publish, "$JS.ACK.S.cc.1.2.3.4.0")));
        let under = Rule::PublishUnder("$JS.API.DIRECT.GET.S");
        assert!(under.matches(&denial(Publish, "$JS.API.DIRECT.GET.S")));
        assert!(under.matches(&denial(Publish, "$JS.API.DIRECT.GET.S.events.a")));
        assert!(!under.matches(&denial(Publish, "$JS.API.DIRECT.GET.SX")));
        assert!(Rule::ReplyInbox.matches(&denial(Subscribe, "_INBOX.abc.*")));
        assert!(!Rule::ReplyInbox.matches(&denial(Subscribe, "_INBOX.abc")));
        assert!(!Rule::Publish("a.b").matches(&denial(Subscribe, "a.b")));
    }

    #[test]
    fn errors_name_the_subject_and_the_permission() {
        let err = denial(Action::Publish, "$JS.API.CONSUMER.MSG.NEXT.S.hist-1").error("history");
        let text = err.to_string();
        assert!(matches!(err, Error::Authentication(_)), "{err:?}");
        assert!(
            text.contains("\"$JS.API.CONSUMER.MSG.NEXT.S.hist-1\""),
            "{text}"
        );
        assert!(text.contains("\"$JS.API.CONSUMER.MSG.NEXT.S.>\""), "{text}");
        let text = denial(Action::Subscribe, "_INBOX.x")
            .error("pull")
            .to_string();
        assert!(
            text.contains("subscribe permission on \"_INBOX.>\""),
            "{text}"
        );
    }

    #[tokio::test]
    async fn only_violations_after_the_mark_count() {
        let denials = Denials::default();
        denials.record(Action::Publish, "a.b".to_string());
        let since = denials.mark();
        let rules = [Rule::Publish("a.b")];
        assert_eq!(denials.find(since, &rules), None);
        let waiting = denials.wait(since, &rules);
        tokio::pin!(waiting);
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        denials.record(Action::Publish, "a.c".to_string());
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        denials.record(Action::Publish, "a.b".to_string());
        assert_eq!(waiting.await.id, 2);
    }
}
