//! The services behind the capabilities that reach outside the sandbox. This crate knows
//! no database: whoever loads a plugin (the installer) hands it a service bound to the
//! plugin's own scope and quota, and a plugin without one is denied.

use std::time::Duration;

/// Why a capability's call failed, as the plugin sees it (`types.error` in the contract).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    /// The capability is not granted to the plugin, or was revoked.
    #[error("denied: {0}")]
    Denied(String),
    /// The operator's quota would be exceeded.
    #[error("over quota: {0}")]
    Quota(String),
    /// The arguments are not acceptable.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The service failed; a later call may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// A plugin's own key-value data (the `kv` capability), already bound to its scope and
/// quota: a plugin can name only its own keys.
pub trait KeyValue: Send + Sync {
    /// A key's value; `None` when absent or expired.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CapabilityError>;
    /// Sets a key's value, expiring after `ttl` if given.
    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), CapabilityError>;
    /// Deletes a key; whether it was there.
    fn delete(&self, key: &str) -> Result<bool, CapabilityError>;
    /// Keys starting with `prefix`, in byte order, after `after`, at most `limit`.
    fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, CapabilityError>;
    /// Adds `delta` to a counter; the new value.
    fn increment(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, CapabilityError>;
    /// Replaces `expected` with `new`; whether it did.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, CapabilityError>;
}
