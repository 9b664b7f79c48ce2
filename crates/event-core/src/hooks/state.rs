use crate::error::Result;
use crate::types::SubscriptionRecord;
use async_trait::async_trait;

/// Persists the bus's subscriptions across restarts.
///
/// # Contract
///
/// - `save` replaces the stored set atomically: after a crash, `load` returns
///   either the previous set or the new one, never a mix or a torn file.
/// - `load` of a store never saved returns an empty list; a corrupt or
///   unreadable store is an error naming it, and leaves it untouched.
/// - Must not block the async executor (do file I/O on a blocking thread).
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Loads the stored subscriptions.
    async fn load(&self) -> Result<Vec<SubscriptionRecord>>;

    /// Replaces the stored subscriptions with `subscriptions`.
    async fn save(&self, subscriptions: &[SubscriptionRecord]) -> Result<()>;

    /// Where the store keeps the subscriptions, for the messages of errors
    /// about what it holds: `"state file /var/lib/app/subscriptions.json"`,
    /// a table's name. The bus's errors about stored records (one stored
    /// twice, one with invalid subjects) name it, so that the operator
    /// knows what to fix. Defaults to `"the state store"`.
    fn location(&self) -> String {
        String::from("the state store")
    }
}
