//! # plugboard-store
//!
//! Durable storage for Plugboard, on an embedded SQLite file by default and on PostgreSQL
//! for deployments of several hosts, with the same behaviour on both. It is the only crate
//! that knows SQL.
//!
//! It keeps these tables: `plugins` (the engine's records, written through on every
//! lifecycle change), `packages` (installed plugin packages) with `package_archives` (the
//! verified package files every host loads from), `activities` (the activity
//! log), `settings`, `kv` with `kv_usage` (plugins' key-value data, [`Store::kv`]), and
//! `events` (the hosts' event catalogues, [`Store::publish_events`]). Versioned migrations run when a store is opened; a database written
//! by a newer Plugboard, or one that is not a Plugboard database, is refused untouched.
//!
//! ```no_run
//! use plugboard_store::Store;
//!
//! let store = Store::open("sqlite://.plugboard/plugboard.db")?;
//! let engine = store.engine(plugboard_engine::Engine::builder())?; // records restored
//! // … register the host's plugins …
//! engine.finish_boot()?;
//! let _watch = store.watch(&engine); // follow changes made by other processes
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The API is blocking: the store runs its own small tokio runtime, so it can be used from
//! plain threads, the CLI, or (through `spawn_blocking`) async hosts alike.

mod activity;
mod db;
mod events;
pub(crate) mod health;
mod kv;
mod packages;
mod records;
mod runtime;
mod schema;
mod secrets;
mod settings;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use activity::{
    Activity, ActivityKind, ActivityLog, ActivityPriority, ActivityQuery, ActivityStatus,
    LogConfig, NewActivity,
};
pub use health::{DEFAULT_TIMEOUT, StoreHealth, StoreOptions, parse_duration};
pub use kv::{Kv, KvEntry, KvQuota, KvUsage, MAX_KEY_CHARS, MAX_LIST, MAX_VALUE_BYTES};
pub use packages::PackageRow;
pub use settings::{SEALED, SettingChange, Settings, is_sealed, redact_secrets};
pub use watch::Watch;

use crate::db::Db;
use crate::runtime::OwnedRuntime;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL is not one the store understands.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    BadUrl(String),
    /// Opening without creating, and there is no Plugboard database there.
    #[error("no Plugboard database at {0}")]
    NoDatabase(String),
    /// The file exists but is not a SQLite database.
    #[error("{path} is not a SQLite database; refusing to touch it")]
    NotADatabase {
        /// The file.
        path: String,
    },
    /// The database has tables but is not a Plugboard database.
    #[error("{0} is not a Plugboard database (it has other tables); refusing to touch it")]
    NotPlugboard(String),
    /// The database was written by a newer Plugboard.
    #[error(
        "the database's schema is version {found}, newer than this Plugboard's {supported}; refusing to touch it"
    )]
    NewerSchema {
        /// The schema version found.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// A value is not acceptable (names the field).
    #[error("invalid {field}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// Another process changed a record since this one read it (a lost update, refused).
    #[error("plugin `{plugin}` was changed by another process (expected version {expected})")]
    Conflict {
        /// The plugin.
        plugin: String,
        /// The version this process expected.
        expected: i64,
    },
    /// Another process changed the package since this one read it.
    #[error("package `{package}` was changed by another process meanwhile; nothing was written")]
    PackageConflict {
        /// The package.
        package: String,
    },
    /// A key-value write would take a scope past its quota; nothing was written.
    #[error("the key-value data of `{scope}` would exceed its quota of {limit} {what}")]
    KvQuota {
        /// The scope (a package).
        scope: String,
        /// `keys` or `bytes`.
        what: &'static str,
        /// The quota.
        limit: u64,
    },
    /// A stored row could not be read back.
    #[error("corrupt row in {table}: {why}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The database could not be reached (refused, gone, or its connection was lost);
    /// nothing was written.
    #[error("the database is unreachable ({why}); nothing was written, try again once it is back")]
    Unavailable {
        /// What the connection attempt or the lost connection said.
        why: String,
    },
    /// The connection was lost while the commit was under way: the change may or may not
    /// have been stored. Every host applies whatever was, once the database is back.
    #[error(
        "the connection to the database was lost while committing ({why}): the change may or may not have been stored; look again once the database is back"
    )]
    CommitUnknown {
        /// What the connection said.
        why: String,
    },
    /// The database did not answer within the store's deadline ([`StoreOptions::timeout`]);
    /// the operation was abandoned and its transaction closed. Only if the deadline fell
    /// while the commit itself was under way may it have been applied, which every host
    /// then sees as a change made elsewhere.
    #[error(
        "the database did not answer within {after:?} (PLUGBOARD_DB_TIMEOUT); the operation was abandoned"
    )]
    Timeout {
        /// The deadline.
        after: std::time::Duration,
    },
    /// The disk under the database is full (SQLite's `SQLITE_FULL`, PostgreSQL's
    /// 53100); the transaction was rolled back, nothing was written.
    #[error(
        "the database's disk is full ({why}); nothing was written: free some space and try again"
    )]
    DiskFull {
        /// What the database said.
        why: String,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Db(sqlx::Error),
    /// Filesystem or runtime failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

// By hand rather than `#[from]`: the cause is in the message, so it is not also a source
// (a chain printed with `{:#}` would say it twice).
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if health::is_unavailable(&e) {
            StoreError::Unavailable { why: e.to_string() }
        } else if health::is_full(&e) {
            StoreError::DiskFull { why: e.to_string() }
        } else {
            StoreError::Db(e)
        }
    }
}

impl StoreError {
    /// Whether the database could not be reached or did not answer in time (an outage,
    /// worth retrying), rather than answering no.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. }
                | StoreError::Timeout { .. }
                | StoreError::CommitUnknown { .. }
        )
    }
}

/// Which database a store is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// An open store. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    rt: OwnedRuntime,
    db: Db,
    url: String,
    settings: settings::Cache,
    options: StoreOptions,
    health: Arc<health::Health>,
    changes: health::Changes,
}

/// The data directory: `$PLUGBOARD_HOME`, or `./.plugboard/`.
pub fn home() -> PathBuf {
    std::env::var_os("PLUGBOARD_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".plugboard"))
}

/// The database URL to use: `$PLUGBOARD_DATABASE_URL`, or a SQLite file in [`home`].
pub fn default_url() -> String {
    std::env::var("PLUGBOARD_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("sqlite://{}", home().join("plugboard.db").display()))
}

impl Store {
    /// Opens (creating a SQLite file and its directory if needed) and migrates a store.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, true, StoreOptions::default())
    }

    /// [`Store::open`] with options (the operations' deadline).
    pub fn open_with_options(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        Store::open_with(url, true, options)
    }

    /// Opens a store that exists, creating nothing: no SQLite file or directory, no
    /// tables in an empty PostgreSQL database ([`StoreError::NoDatabase`]). For tools that
    /// only read.
    pub fn open_existing(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, false, StoreOptions::default())
    }

    fn open_with(url: &str, create: bool, options: StoreOptions) -> Result<Store, StoreError> {
        let rt = OwnedRuntime::new()?;
        let db = rt.block_on(Db::open(url.to_owned(), create, options.timeout))??;
        if !create && rt.block_on(schema::version(db.clone()))?? == 0 {
            return Err(StoreError::NoDatabase(redact(url)));
        }
        rt.block_on(schema::migrate(db.clone()))??;
        Ok(Store {
            inner: Arc::new(Inner {
                rt,
                db,
                url: redact(url),
                settings: settings::Cache::default(),
                options,
                health: Arc::default(),
                changes: health::Changes::default(),
            }),
        })
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.inner.db.backend()
    }

    /// The URL, with any password removed.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Runs a future on the store's runtime and waits for it, from any thread, under the
    /// operation deadline (see the `health` module).
    pub(crate) fn run<T, F>(&self, f: impl FnOnce(Db) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.inner.db.clone();
        let health = self.inner.health.clone();
        let limit = self.inner.options.timeout;
        let op = f(db.clone());
        self.inner.rt.block_on(async move {
            let result = health::guarded(&db, &health, limit, op).await;
            health.observe(&result);
            result
        })?
    }

    /// What this store knows of its database's reachability, and its reconnect, resync
    /// and timeout counts.
    pub fn health(&self) -> StoreHealth {
        self.inner.health.snapshot()
    }

    /// A count of the changes by other processes this store's watcher ([`Store::watch`])
    /// has seen; pass it to [`Store::wait_change`].
    pub fn changes_seen(&self) -> u64 {
        self.inner.changes.current()
    }

    /// Waits until the watcher sees a change by another process after `seen` (a value of
    /// [`Store::changes_seen`]), at most `timeout`; the new count. Lets other followers
    /// act on a change at once instead of polling (without a watcher: only the timeout).
    pub fn wait_change(&self, seen: u64, timeout: std::time::Duration) -> u64 {
        self.inner.changes.wait(seen, timeout)
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    pub(crate) fn runtime(&self) -> &OwnedRuntime {
        &self.inner.rt
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    /// SQLite's `PRAGMA integrity_check` (`ok`, or what is damaged); `ok` on PostgreSQL,
    /// which checks itself.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        self.run(|db| async move {
            match db {
                Db::Sqlite(pool, _) => {
                    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
                        .fetch_all(&pool)
                        .await?;
                    Ok(rows.join("; "))
                }
                Db::Postgres(_) => Ok("ok".to_owned()),
            }
        })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.run(schema::version)
    }
}

fn redact(url: &str) -> String {
    // postgres://user:password@host/db → postgres://user:***@host/db
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn sqlite_path(url: &str) -> Option<&Path> {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|p| Path::new(p.split('?').next().unwrap_or(p)))
}
