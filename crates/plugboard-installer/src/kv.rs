//! The `kv` capability's service: a package's plugins read and write the package's own
//! key-value data in the store, under the operator's quota.

use std::time::Duration;

use plugboard_store::{KvQuota, Store, StoreError};
use plugboard_wasm::{CapabilityError, KeyValue};

/// A package's key-value data, as its plugins reach it.
pub(crate) struct PackageKv {
    pub(crate) store: Store,
    pub(crate) package: String,
    /// The installer's quota, read at every write: a change of the `installer` setting
    /// applies to the next write.
    pub(crate) quota: std::sync::Arc<std::sync::RwLock<KvQuota>>,
}

/// Store errors as the plugin sees them: its own mistakes and its quota are its to handle;
/// the store's failures say only that the service is unavailable (no database detail
/// crosses the sandbox, but the host logs it).
fn error(package: &str, e: StoreError) -> CapabilityError {
    match e {
        StoreError::KvQuota { .. } => CapabilityError::Quota(e.to_string()),
        StoreError::Invalid { .. } => CapabilityError::Invalid(e.to_string()),
        other => {
            tracing::warn!(package, "key-value store failed: {other}");
            CapabilityError::Unavailable("the host's store failed; try again later".into())
        }
    }
}

impl PackageKv {
    fn quota(&self) -> KvQuota {
        *self
            .quota
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn run<T>(
        &self,
        f: impl FnOnce(&plugboard_store::Kv<'_>) -> Result<T, StoreError>,
    ) -> Result<T, CapabilityError> {
        self.store
            .kv(&self.package)
            .and_then(|kv| f(&kv))
            .map_err(|e| error(&self.package, e))
    }
}

impl KeyValue for PackageKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CapabilityError> {
        self.run(|kv| kv.get(key))
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), CapabilityError> {
        self.run(|kv| kv.set(key, value, ttl, self.quota()))
    }

    fn delete(&self, key: &str) -> Result<bool, CapabilityError> {
        self.run(|kv| kv.delete(key))
    }

    fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, CapabilityError> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        self.run(|kv| kv.list(prefix, after, limit))
            .map(|entries| entries.into_iter().map(|e| e.key).collect())
    }

    fn increment(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, CapabilityError> {
        self.run(|kv| kv.increment(key, delta, ttl, self.quota()))
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, CapabilityError> {
        self.run(|kv| kv.compare_and_swap(key, expected, new, ttl, self.quota()))
    }
}
