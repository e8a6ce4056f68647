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

/// Fires events for a plugin (the `emit` capability), already bound to the events it was
/// granted: fire-and-forget, so `emit` only queues.
pub trait Emitter: Send + Sync {
    /// Queues a call of `event` with `state` (JSON). `depth` is how many emits led to the
    /// call that emits now (0 for a call the host made; see [`EMIT_DEPTH`]): the service
    /// refuses past its limit, which stops loops.
    fn emit(&self, event: &str, state: &str, depth: u32) -> Result<(), CapabilityError>;
}

/// The call meta key that carries how many emits led to a call: an emitter puts it on
/// the calls it queues, and a plugin's emits during that call carry it on.
pub const EMIT_DEPTH: &str = "plugboard.emit_depth";
