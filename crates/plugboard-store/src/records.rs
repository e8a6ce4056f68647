//! The `plugins` table: loading records at boot and writing changesets through.

use std::sync::Arc;

use plugboard_core::{DependType, PluginRecord, Priority, Status};
use plugboard_engine::{
    Changeset, Engine, EngineBuilder, EngineError, PersistError, Persistence, StoredRecord,
};
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{Db, on_db, transaction};
use crate::{Store, StoreError};

/// The notification channel on PostgreSQL.
pub(crate) const CHANNEL: &str = "plugboard_changes";

fn parse<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_value(Value::String(s.to_owned())).map_err(|e| StoreError::Corrupt {
        table: "plugins",
        why: format!("{what} {s:?}: {e}"),
    })
}

pub(crate) async fn load(db: Db) -> Result<Vec<StoredRecord>, StoreError> {
    let rows = on_db!(&db, |pool| {
        let rows = sqlx::query(
            "SELECT name, event, priority, status, depend_type, depends, extra, version, unloaded, inserted_at, updated_at FROM plugins ORDER BY name",
        )
        .fetch_all(pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let priority: i32 = row.try_get("priority")?;
            let status: String = row.try_get("status")?;
            let depend_type: String = row.try_get("depend_type")?;
            let Json(depends): Json<Vec<String>> = row.try_get("depends")?;
            let Json(extra): Json<Vec<Map<String, Value>>> = row.try_get("extra")?;
            out.push(StoredRecord {
                record: PluginRecord {
                    name: row.try_get("name")?,
                    event: row.try_get("event")?,
                    priority: Priority::new(u64::try_from(priority).unwrap_or(u64::MAX)).map_err(
                        |e| StoreError::Corrupt {
                            table: "plugins",
                            why: e.to_string(),
                        },
                    )?,
                    status: parse::<Status>(&status, "status")?,
                    depend_type: parse::<DependType>(&depend_type, "depend_type")?,
                    depends,
                    extra,
                    inserted_at: row.try_get("inserted_at")?,
                    updated_at: row.try_get("updated_at")?,
                },
                version: row.try_get("version")?,
                unloaded: row.try_get("unloaded")?,
            });
        }
        out
    });
    Ok(rows)
}

/// Bumps the change generation that watchers compare: `PRAGMA data_version` on SQLite
/// changes on *any* commit (the activity log's too), the generation only on changes that
/// other processes must apply. Run inside the change's own transaction.
pub(crate) const BUMP_GENERATION: &str = "INSERT INTO plugboard_meta (key, value) VALUES ('generation', '1') \
     ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(plugboard_meta.value AS BIGINT) + 1 AS TEXT)";

/// Announces a change to other processes, inside the change's own transaction: bumps the
/// generation and, on PostgreSQL, notifies the watchers' channel.
macro_rules! announce {
    ($conn:expr, $backend:expr, $what:literal) => {{
        sqlx::query($crate::records::BUMP_GENERATION)
            .execute(&mut *$conn)
            .await?;
        if $backend == $crate::Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind($crate::records::CHANNEL)
                .bind($what)
                .execute(&mut *$conn)
                .await?;
        }
    }};
}
pub(crate) use announce;

/// The change generation (0 before any change).
pub(crate) async fn generation(db: Db) -> Result<i64, StoreError> {
    let v: Option<String> = on_db!(&db, |pool| {
        sqlx::query_scalar("SELECT value FROM plugboard_meta WHERE key = 'generation'")
            .fetch_optional(pool)
            .await?
    });
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn conflict(r: &StoredRecord) -> StoreError {
    StoreError::Conflict {
        plugin: r.record.name.clone(),
        expected: r.version,
    }
}

/// Writes a changeset in one transaction, refusing it whole if any record's version moved.
pub(crate) async fn commit(db: Db, changes: Changeset) -> Result<(), StoreError> {
    transaction!(&db, |conn| async {
        for up in &changes.upserts {
            let r = &up.record;
            let affected = if up.version == 0 {
                sqlx::query(
                        "INSERT INTO plugins (id, name, event, priority, status, depend_type, depends, extra, version, inserted_at, updated_at, unloaded) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $11) ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(Uuid::new_v4())
                    .bind(&r.name)
                    .bind(&r.event)
                    .bind(i32::from(r.priority.get()))
                    .bind(r.status.as_str())
                    .bind(r.depend_type.to_string())
                    .bind(Json(&r.depends))
                    .bind(Json(&r.extra))
                    .bind(r.inserted_at)
                    .bind(r.updated_at)
                    .bind(up.unloaded)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
            } else {
                sqlx::query(
                        "UPDATE plugins SET event = $2, priority = $3, status = $4, depend_type = $5, depends = $6, extra = $7, \
                         updated_at = $8, unloaded = $10, version = version + 1 WHERE name = $1 AND version = $9",
                    )
                    .bind(&r.name)
                    .bind(&r.event)
                    .bind(i32::from(r.priority.get()))
                    .bind(r.status.as_str())
                    .bind(r.depend_type.to_string())
                    .bind(Json(&r.depends))
                    .bind(Json(&r.extra))
                    .bind(r.updated_at)
                    .bind(up.version)
                    .bind(up.unloaded)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
            };
            if affected != 1 {
                return Err(conflict(up));
            }
        }
        for gone in changes.removals.iter().filter(|g| g.version > 0) {
            let affected = sqlx::query("DELETE FROM plugins WHERE name = $1 AND version = $2")
                .bind(&gone.record.name)
                .bind(gone.version)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if affected != 1 {
                return Err(conflict(gone));
            }
        }
        announce!(conn, db.backend(), "plugins");
        Ok(())
    })
}

/// The engine's write-through to this store.
pub(crate) struct StorePersistence(pub(crate) Store);

impl Persistence for StorePersistence {
    fn commit(&self, changes: &Changeset) -> Result<(), PersistError> {
        let changes = changes.clone();
        self.0
            .run(move |db| commit(db, changes))
            .map_err(|e| match e {
                StoreError::Conflict { plugin, expected } => {
                    PersistError::Conflict { plugin, expected }
                }
                e if e.is_unavailable() => PersistError::Unavailable(e.to_string()),
                other => PersistError::Backend(other.to_string()),
            })
    }
}

impl Store {
    /// Every stored plugin record.
    pub fn records(&self) -> Result<Vec<StoredRecord>, StoreError> {
        self.run(load)
    }

    /// Builds an engine that writes through to this store, with the stored records
    /// restored (their code is registered by the host afterwards).
    pub fn engine(&self, builder: EngineBuilder) -> Result<Engine, StoreError> {
        let engine = builder
            .persistence(Arc::new(StorePersistence(self.clone())))
            .build();
        let records = self.records()?;
        engine.restore(records).map_err(engine_error)?;
        Ok(engine)
    }

    /// Reloads the records into `engine` (changes made by other processes).
    ///
    /// Several hosts apply the same change at once and each holds or releases the same
    /// dependents: the first write wins and the others see a version conflict, so a
    /// conflict here means "reload and look again", a few times.
    pub fn sync(&self, engine: &Engine) -> Result<bool, StoreError> {
        let mut changed = false;
        for _ in 0..5 {
            // The store's own error, kept whole (an outage stays an outage for callers).
            let mut failed = None;
            let synced = engine.sync_external(|| {
                self.records().map_err(|e| {
                    let text = e.to_string();
                    failed = Some(e);
                    text
                })
            });
            match synced {
                Ok(c) => return Ok(changed || c),
                Err(EngineError::Persist(PersistError::Conflict { .. })) => changed = true,
                Err(EngineError::Persist(PersistError::Unavailable(why))) => {
                    return Err(StoreError::Unavailable { why });
                }
                Err(e) => return Err(failed.unwrap_or_else(|| engine_error(e))),
            }
        }
        Err(StoreError::Io(std::io::Error::other(
            "records kept changing under five reloads in a row",
        )))
    }
}

impl Store {
    /// Runs an operator's operation on `engine`, reloading the stored records and trying
    /// again (up to three times) when it fails on a record another process changed
    /// meanwhile: the operation (stop this, enable that) is still what the operator asks
    /// for, now checked against the current records. A host that has not applied another
    /// host's latest change yet, or whose own commit landed while its connection was lost,
    /// would otherwise refuse the operator with a conflict.
    pub fn retry_on_conflict<T>(
        &self,
        engine: &Engine,
        mut op: impl FnMut() -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let mut attempts = 0;
        loop {
            match op() {
                Err(EngineError::Persist(PersistError::Conflict { .. })) if attempts < 3 => {
                    attempts += 1;
                    if let Err(e) = self.sync(engine) {
                        tracing::debug!(error = %e, "reload before retrying failed");
                    }
                }
                other => return other,
            }
        }
    }
}

fn engine_error(e: EngineError) -> StoreError {
    StoreError::Io(std::io::Error::other(e.to_string()))
}
