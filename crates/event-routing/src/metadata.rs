//! Metadata keys the routing components write.
//!
//! All are lowercase letters only, so they map one to one onto CloudEvents
//! extension attributes (`a3sm<key>` in `event-cloudevents`) and survive an
//! HTTP hop.

/// Id of the event a [`TopicSink`](crate::TopicSink) or a
/// [`SinkDlqHandler`](crate::SinkDlqHandler) forwarded (the forwarded event
/// carries a new id, or the provider would deduplicate it away); through a
/// chain of forwards, the first event's.
pub const ORIGINAL_ID: &str = "originalid";
/// Subject of the event [`ORIGINAL_ID`] names.
pub const ORIGINAL_SUBJECT: &str = "originalsubject";

/// The subject a CloudEvent had when it arrived at a
/// [`WebhookSource`](crate::http::WebhookSource) whose subject mapping
/// replaced it (`with_subject_mapping`): the sender's, not an A3S subject.
pub const SENDER_SUBJECT: &str = "sendersubject";

/// How many times the event was forwarded by a topic sink or an HTTP sink
/// (absent: never).
/// A broker does not route an event that reached its
/// [`max_hops`](crate::BrokerConfig::max_hops), which breaks routing loops
/// (a trigger whose topic sink publishes where the same trigger matches, or
/// whose HTTP sink posts to a webhook feeding the same broker).
/// It travels with the event, over HTTP too (the CloudEvents extension
/// `a3smroutinghops`), so a sender can set it: see the webhook's docs
/// (`WebhookSource`, feature `http`).
pub const HOPS: &str = "routinghops";

/// Why delivery failed (the last error), on dead-lettered events.
pub const DLQ_REASON: &str = "dlqreason";
/// Delivery attempts made before the event was dead-lettered.
pub const DLQ_ATTEMPTS: &str = "dlqattempts";
/// Name of the trigger whose deliveries failed.
pub const DLQ_TRIGGER: &str = "dlqtrigger";
/// Subject the event was originally published on.
pub const DLQ_ORIGINAL_SUBJECT: &str = "dlqoriginalsubject";
/// Time of the first failed delivery, Unix milliseconds.
pub const DLQ_FIRST_FAILURE_AT: &str = "dlqfirstfailureat";
/// Time the event was dead-lettered, Unix milliseconds.
pub const DLQ_DEAD_LETTERED_AT: &str = "dlqdeadletteredat";
/// The subscriber that failed to process the event, when the dead letter
/// names one (see `DeadLetterEvent::subscriber`).
pub const DLQ_SUBSCRIBER: &str = "dlqsubscriber";
/// On a dead letter a [`SinkDlqHandler`](crate::SinkDlqHandler) or a
/// trigger's dead-letter sink received without the event's payload and own
/// metadata (the whole one was over the sink's provider's limit, or an
/// HTTP endpoint answered `413` or `431`): what was left out, and the limit.
pub const DLQ_PAYLOAD_DROPPED: &str = "dlqpayloaddropped";
