//! Settings: named JSON configurations, with a read cache that writes invalidate and a
//! change notification so that a plugin can react to its own settings changing.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::types::Json;
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::db::{Db, on_db};
use crate::records::announce;
use crate::{Store, StoreError};

/// The member that marks a sealed (encrypted) field of a setting: a package's secret
/// settings are stored as `{"$sealed": "…"}` (sealed and opened by `plugboard-installer`'s
/// `secrets` module; the store only needs to recognise them, to keep them out of sight).
pub const SEALED: &str = "$sealed";

/// Whether `v` is a sealed field.
pub fn is_sealed(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.len() == 1 && m.get(SEALED).is_some_and(Value::is_string))
}

/// A setting's configs as an operator may see them: without their sealed fields, and the
/// names of those fields (set, never shown).
pub fn redact_secrets(configs: &Value) -> (Value, Vec<String>) {
    let Value::Object(map) = configs else {
        return (configs.clone(), Vec::new());
    };
    let mut secrets = Vec::new();
    let mut shown = serde_json::Map::new();
    for (k, v) in map {
        if is_sealed(v) {
            secrets.push(k.clone());
        } else {
            shown.insert(k.clone(), v.clone());
        }
    }
    (Value::Object(shown), secrets)
}

/// A change to a setting, as subscribers see it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum SettingChange {
    /// Set (created or replaced) by this process.
    Set(String),
    /// Deleted by this process.
    Deleted(String),
    /// Changed by another process; the name is not known, the cache was cleared.
    External,
}

pub(crate) struct Cache {
    values: Mutex<HashMap<String, Option<Value>>>,
    changes: broadcast::Sender<SettingChange>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            values: Mutex::new(HashMap::new()),
            changes: broadcast::channel(256).0,
        }
    }
}

impl Cache {
    fn get(&self, name: &str) -> Option<Option<Value>> {
        self.values.lock().ok()?.get(name).cloned()
    }

    fn put(&self, name: &str, value: Option<Value>) {
        if let Ok(mut v) = self.values.lock() {
            v.insert(name.to_owned(), value);
        }
    }

    pub(crate) fn clear(&self) {
        if let Ok(mut v) = self.values.lock() {
            v.clear();
        }
        let _ = self.changes.send(SettingChange::External);
    }
}

/// The settings of a store; see [`Store::settings`].
pub struct Settings<'a> {
    store: &'a Store,
}

fn check_name(name: &str) -> Result<(), StoreError> {
    if name.chars().any(char::is_control) {
        return Err(StoreError::Invalid {
            field: "settings.name",
            why: format!("{name:?} has control characters"),
        });
    }
    let n = name.chars().count();
    // The database's CHECK says the same (5: room for `package.` and a name).
    if !(5..=200).contains(&n) {
        return Err(StoreError::Invalid {
            field: "settings.name",
            why: format!("{name:?} has {n} characters; a setting's name has 5 to 200"),
        });
    }
    Ok(())
}

async fn read(db: Db, name: String) -> Result<Option<Value>, StoreError> {
    let v: Option<Json<Value>> = on_db!(&db, |pool| {
        sqlx::query_scalar("SELECT configs FROM settings WHERE name = $1")
            .bind(&name)
            .fetch_optional(pool)
            .await?
    });
    Ok(v.map(|Json(v)| v))
}

async fn write(db: Db, name: String, configs: Value) -> Result<(), StoreError> {
    let now = OffsetDateTime::now_utc();
    on_db!(&db, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO settings (name, configs, inserted_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (name) DO UPDATE SET configs = excluded.configs, updated_at = excluded.updated_at",
        )
        .bind(&name)
        .bind(Json(&configs))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        announce!(tx, db.backend(), "settings");
        crate::health::committing();
        tx.commit().await?;
    });
    Ok(())
}

async fn remove(db: Db, name: String) -> Result<bool, StoreError> {
    let n = on_db!(&db, |pool| {
        let mut tx = pool.begin().await?;
        let n = sqlx::query("DELETE FROM settings WHERE name = $1")
            .bind(&name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        announce!(tx, db.backend(), "settings");
        crate::health::committing();
        tx.commit().await?;
        n
    });
    Ok(n > 0)
}

async fn all(db: Db) -> Result<Vec<(String, Value, OffsetDateTime)>, StoreError> {
    let rows: Vec<(String, Json<Value>, OffsetDateTime)> = on_db!(&db, |pool| {
        sqlx::query_as("SELECT name, configs, updated_at FROM settings ORDER BY name")
            .fetch_all(pool)
            .await?
    });
    Ok(rows.into_iter().map(|(n, Json(v), t)| (n, v, t)).collect())
}

impl Settings<'_> {
    /// A setting's configs, from the cache when possible.
    pub fn get(&self, name: &str) -> Result<Option<Value>, StoreError> {
        check_name(name)?;
        if let Some(v) = self.store.inner.settings.get(name) {
            return Ok(v);
        }
        let n = name.to_owned();
        let v = self.store.run(move |db| read(db, n))?;
        self.store.inner.settings.put(name, v.clone());
        Ok(v)
    }

    /// A setting's configs, read from the database (not the cache), e.g. right after
    /// another process may have changed it.
    pub fn read(&self, name: &str) -> Result<Option<Value>, StoreError> {
        check_name(name)?;
        let n = name.to_owned();
        let v = self.store.run(move |db| read(db, n))?;
        self.store.inner.settings.put(name, v.clone());
        Ok(v)
    }

    /// A setting's configs as a typed value.
    pub fn get_as<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        self.get(name)?
            .map(|v| {
                serde_json::from_value(v).map_err(|e| StoreError::Invalid {
                    field: "settings.configs",
                    why: format!("{name}: {e}"),
                })
            })
            .transpose()
    }

    /// Creates or replaces a setting.
    pub fn set(&self, name: &str, configs: impl Serialize) -> Result<(), StoreError> {
        check_name(name)?;
        let configs = serde_json::to_value(configs).map_err(|e| StoreError::Invalid {
            field: "settings.configs",
            why: e.to_string(),
        })?;
        // PostgreSQL's JSON cannot hold a NUL character; refuse it on both backends.
        if configs.to_string().contains("\\u0000") {
            return Err(StoreError::Invalid {
                field: "settings.configs",
                why: "may not contain NUL characters".into(),
            });
        }
        let n = name.to_owned();
        let v = configs.clone();
        self.store.run(move |db| write(db, n, v))?;
        self.store.inner.settings.put(name, Some(configs));
        let _ = self
            .store
            .inner
            .settings
            .changes
            .send(SettingChange::Set(name.to_owned()));
        Ok(())
    }

    /// Deletes a setting; returns whether it existed.
    pub fn delete(&self, name: &str) -> Result<bool, StoreError> {
        check_name(name)?;
        let n = name.to_owned();
        let existed = self.store.run(move |db| remove(db, n))?;
        self.store.inner.settings.put(name, None);
        if existed {
            let _ = self
                .store
                .inner
                .settings
                .changes
                .send(SettingChange::Deleted(name.to_owned()));
        }
        Ok(existed)
    }

    /// Every setting with its configs and last change.
    pub fn list(&self) -> Result<Vec<(String, Value, OffsetDateTime)>, StoreError> {
        self.store.run(all)
    }

    /// Subscribes to setting changes.
    pub fn subscribe(&self) -> broadcast::Receiver<SettingChange> {
        self.store.inner.settings.changes.subscribe()
    }
}

impl Store {
    /// The store's settings.
    pub fn settings(&self) -> Settings<'_> {
        Settings { store: self }
    }
}
