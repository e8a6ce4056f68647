//! The seam between the engine and durable storage: the engine hands every change of
//! records to a [`Persistence`] before the change becomes visible, and rolls back if the
//! write fails. The engine knows nothing of SQL; `plugboard-store` implements this.

use plugboard_core::PluginRecord;

/// A record with the version it has in storage (0: never stored).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRecord {
    /// The record.
    pub record: PluginRecord,
    /// Its storage version; each write increments it.
    pub version: i64,
    /// Whether an operator deleted (unloaded) its code: every host sharing the storage
    /// unloads it, until code is registered for it again.
    pub unloaded: bool,
}

/// The records one control operation changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changeset {
    /// New or changed records, each with the version the engine last saw (0 for new ones):
    /// storage must refuse the write if its version differs (a lost update).
    pub upserts: Vec<StoredRecord>,
    /// Removed records, with the version the engine last saw.
    pub removals: Vec<StoredRecord>,
}

impl Changeset {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// Why storage refused a changeset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// Another process changed the record since this one read it.
    #[error("plugin `{plugin}` was changed by another process (expected version {expected})")]
    Conflict {
        /// The plugin.
        plugin: String,
        /// The version this process expected.
        expected: i64,
    },
    /// The storage could not be reached or did not answer in time; nothing was stored.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The backend failed.
    #[error("storage failed: {0}")]
    Backend(String),
}

/// Durable storage of plugin records.
///
/// `commit` is called under the engine's control lock, after the operation has been
/// validated and before its effects are visible: when it returns `Ok` the change must be
/// durable; when it returns `Err`, the engine undoes the change and the operation fails.
/// It is never called on the call path.
pub trait Persistence: Send + Sync + 'static {
    /// Writes a changeset atomically.
    fn commit(&self, changes: &Changeset) -> Result<(), PersistError>;
}
