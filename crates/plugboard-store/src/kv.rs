//! Plugins' key-value data. Each scope (an installed package: its plugins share their code,
//! and so their data) has its own keys, which no other scope can name, counted against a
//! quota the caller passes on every write.
//!
//! Every write is one transaction that first locks the scope's usage row, so that writes to
//! one scope are serialised on both backends and across every process sharing the
//! database: an increment or a compare-and-swap from two hosts never loses an update, and
//! the usage (keys, bytes) always matches the rows. Reads take no lock.
//!
//! An entry may expire: past its expiry it reads as absent everywhere, and its row is
//! removed by the next write that needs the room, or by [`Store::purge_expired_kv`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use time::OffsetDateTime;

use crate::db::{Db, on_db, transaction};
use crate::{Backend, Store, StoreError};

/// The longest key, in characters (so at most 1 KiB of UTF-8).
pub const MAX_KEY_CHARS: usize = 256;
/// The largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The most entries one [`Kv::list`] returns.
pub const MAX_LIST: usize = 1000;

/// How much one scope may hold. Only writes that grow the scope are checked against it, so
/// that a scope over a lowered quota can still delete and shrink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvQuota {
    /// Live entries.
    pub max_keys: u64,
    /// Bytes of keys and values together.
    pub max_bytes: u64,
}

impl KvQuota {
    /// 10,000 keys and 16 MiB.
    pub const DEFAULT: KvQuota = KvQuota {
        max_keys: 10_000,
        max_bytes: 16 << 20,
    };
}

/// What a scope holds now (entries past their expiry included until they are purged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvUsage {
    /// Entries.
    pub keys: u64,
    /// Bytes of keys and values together.
    pub bytes: u64,
}

/// One entry, as listed (without its value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// The value's size in bytes.
    pub size: u64,
    /// When it expires (milliseconds since the Unix epoch), if it does.
    pub expires_at_ms: Option<i64>,
    /// Its last write.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// One scope's data; see [`Store::kv`].
pub struct Kv<'a> {
    store: &'a Store,
    scope: String,
}

/// A write, applied to the current value (`None`: absent or expired).
enum Op {
    Set(Vec<u8>, Option<i64>),
    Delete,
    Increment(i64, Option<i64>),
    Swap {
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
        expires: Option<i64>,
    },
}

/// What a write did.
enum Done {
    /// Whether the key existed (delete) or the swap happened.
    Flag(bool),
    /// The value after an increment.
    Count(i64),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn expiry(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| now_ms().saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX)))
}

fn check_scope(scope: &str) -> Result<(), StoreError> {
    let n = scope.chars().count();
    if n == 0 || n > 200 || scope.chars().any(char::is_control) {
        return Err(StoreError::Invalid {
            field: "kv.scope",
            why: format!("{scope:?}: a scope has 1 to 200 characters, none of them control"),
        });
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), StoreError> {
    let n = key.chars().count();
    if n == 0 || n > MAX_KEY_CHARS {
        return Err(StoreError::Invalid {
            field: "kv.key",
            why: format!("a key has 1 to {MAX_KEY_CHARS} characters, not {n}"),
        });
    }
    // PostgreSQL's text cannot hold a NUL: refuse it on both backends.
    if key.contains('\0') {
        return Err(StoreError::Invalid {
            field: "kv.key",
            why: "a key may not contain NUL characters".into(),
        });
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::Invalid {
            field: "kv.value",
            why: format!(
                "a value has at most {MAX_VALUE_BYTES} bytes, not {}",
                value.len()
            ),
        });
    }
    Ok(())
}

fn size(key: &str, value: &[u8]) -> i64 {
    i64::try_from(key.len() + value.len()).unwrap_or(i64::MAX)
}

/// The value of a counter: decimal text, which an operator can read.
fn counter(value: Option<&[u8]>) -> Result<i64, StoreError> {
    match value {
        None => Ok(0),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Invalid {
                field: "kv.value",
                why: "the value is not an integer (a counter is stored as decimal text)".into(),
            }),
    }
}

async fn write(
    db: Db,
    scope: String,
    key: String,
    op: Op,
    quota: KvQuota,
) -> Result<Done, StoreError> {
    let now = now_ms();
    let backend = db.backend();
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    transaction!(&db, |conn| async {
        sqlx::query("INSERT INTO kv_usage (scope, keys, bytes) VALUES ($1, 0, 0) ON CONFLICT (scope) DO NOTHING")
            .bind(&scope)
            .execute(&mut *conn)
            .await?;
        let (mut keys, mut bytes): (i64, i64) = sqlx::query_as(&format!(
            "SELECT keys, bytes FROM kv_usage WHERE scope = $1{lock}"
        ))
        .bind(&scope)
        .fetch_one(&mut *conn)
        .await?;
        let row: Option<(Vec<u8>, Option<i64>, i64)> =
            sqlx::query_as("SELECT value, expires_at, size FROM kv WHERE scope = $1 AND key = $2")
                .bind(&scope)
                .bind(&key)
                .fetch_optional(&mut *conn)
                .await?;
        let had_row = i64::from(row.is_some());
        let old_size = row.as_ref().map_or(0, |r| r.2);
        let old_expires = row.as_ref().and_then(|r| r.1);
        let live = row.filter(|r| r.1.is_none_or(|e| e > now)).map(|r| r.0);

        let (new, expires, done) = match op {
            Op::Set(v, expires) => (Some(v), expires, Done::Flag(true)),
            Op::Delete => (None, None, Done::Flag(live.is_some())),
            Op::Increment(delta, ttl) => {
                let n = counter(live.as_deref())?
                    .checked_add(delta)
                    .ok_or_else(|| StoreError::Invalid {
                        field: "kv.value",
                        why: "the counter would overflow".into(),
                    })?;
                // A counter keeps the expiry it started with (a rate window), and gets
                // the given one only when it starts.
                let expires = if live.is_some() { old_expires } else { ttl };
                (Some(n.to_string().into_bytes()), expires, Done::Count(n))
            }
            Op::Swap {
                expected,
                new,
                expires,
            } => {
                if live != expected {
                    return Ok(Done::Flag(false));
                }
                (new, expires, Done::Flag(true))
            }
        };

        let new_size = new.as_ref().map_or(0, |v| size(&key, v));
        let has_row = i64::from(new.is_some());
        let grows = has_row > had_row || new_size > old_size;
        let over = |keys: i64, bytes: i64| {
            let k = u64::try_from(keys - had_row + has_row).unwrap_or(0);
            let b = u64::try_from(bytes - old_size + new_size).unwrap_or(0);
            if k > quota.max_keys {
                Some(("keys", quota.max_keys))
            } else if b > quota.max_bytes {
                Some(("bytes", quota.max_bytes))
            } else {
                None
            }
        };
        if grows && over(keys, bytes).is_some() {
            // Expired entries still count until purged: make the room they hold, then
            // look again.
            let (n, b): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), CAST(SUM(size) AS BIGINT) FROM kv WHERE scope = $1 AND key <> $2 AND expires_at <= $3",
            )
            .bind(&scope)
            .bind(&key)
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
            if n > 0 {
                sqlx::query("DELETE FROM kv WHERE scope = $1 AND key <> $2 AND expires_at <= $3")
                    .bind(&scope)
                    .bind(&key)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                keys -= n;
                bytes -= b.unwrap_or(0);
                sqlx::query("UPDATE kv_usage SET keys = $2, bytes = $3 WHERE scope = $1")
                    .bind(&scope)
                    .bind(keys)
                    .bind(bytes)
                    .execute(&mut *conn)
                    .await?;
            }
            if let Some((what, limit)) = over(keys, bytes) {
                // Rolls back, the purge with the rest: a refusal writes nothing.
                return Err(StoreError::KvQuota {
                    scope: scope.clone(),
                    what,
                    limit,
                });
            }
        }

        match &new {
            Some(v) => {
                sqlx::query(
                    "INSERT INTO kv (scope, key, value, size, expires_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, size = excluded.size, \
                     expires_at = excluded.expires_at, updated_at = excluded.updated_at",
                )
                .bind(&scope)
                .bind(&key)
                .bind(v)
                .bind(new_size)
                .bind(expires)
                .bind(OffsetDateTime::now_utc())
                .execute(&mut *conn)
                .await?;
            }
            None if had_row == 1 => {
                sqlx::query("DELETE FROM kv WHERE scope = $1 AND key = $2")
                    .bind(&scope)
                    .bind(&key)
                    .execute(&mut *conn)
                    .await?;
            }
            None => {}
        }
        sqlx::query("UPDATE kv_usage SET keys = $2, bytes = $3 WHERE scope = $1")
            .bind(&scope)
            .bind(keys - had_row + has_row)
            .bind(bytes - old_size + new_size)
            .execute(&mut *conn)
            .await?;
        Ok(done)
    })
}

impl Kv<'_> {
    /// The scope.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// A key's value; `None` when absent or expired.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        let (scope, key) = (self.scope.clone(), key.to_owned());
        self.store.run(move |db| async move {
            let now = now_ms();
            Ok(on_db!(&db, |pool| {
                sqlx::query_scalar(
                    "SELECT value FROM kv WHERE scope = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)",
                )
                .bind(&scope)
                .bind(&key)
                .bind(now)
                .fetch_optional(pool)
                .await?
            }))
        })
    }

    /// Sets a key's value, expiring after `ttl` if given (none: it never expires).
    pub fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        quota: KvQuota,
    ) -> Result<(), StoreError> {
        check_key(key)?;
        check_value(value)?;
        self.write(key, Op::Set(value.to_vec(), expiry(ttl)), quota)
            .map(|_| ())
    }

    /// Deletes a key; whether it was there (and not expired).
    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        match self.write(key, Op::Delete, KvQuota::DEFAULT)? {
            Done::Flag(existed) => Ok(existed),
            Done::Count(_) => Ok(true),
        }
    }

    /// Adds `delta` to a counter (absent: 0) and returns the new value. A counter that
    /// starts now expires after `ttl`, if given; one that exists keeps its expiry.
    pub fn increment(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
        quota: KvQuota,
    ) -> Result<i64, StoreError> {
        check_key(key)?;
        match self.write(key, Op::Increment(delta, expiry(ttl)), quota)? {
            Done::Count(n) => Ok(n),
            Done::Flag(_) => Ok(0),
        }
    }

    /// Replaces the value with `new` (`None`: deletes it) only if it is `expected` now
    /// (`None`: absent); whether it did.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
        quota: KvQuota,
    ) -> Result<bool, StoreError> {
        check_key(key)?;
        if let Some(v) = new {
            check_value(v)?;
        }
        let op = Op::Swap {
            expected: expected.map(<[u8]>::to_vec),
            new: new.map(<[u8]>::to_vec),
            expires: expiry(ttl),
        };
        match self.write(key, op, quota)? {
            Done::Flag(done) => Ok(done),
            Done::Count(_) => Ok(true),
        }
    }

    fn write(&self, key: &str, op: Op, quota: KvQuota) -> Result<Done, StoreError> {
        let (scope, key) = (self.scope.clone(), key.to_owned());
        self.store
            .run(move |db| async move { write(db, scope, key, op, quota).await })
    }

    /// The live entries whose keys start with `prefix`, in byte order of their keys,
    /// after the key `after` if given (to page), at most `limit` (up to [`MAX_LIST`]).
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>, StoreError> {
        if prefix.contains('\0') || after.is_some_and(|a| a.contains('\0')) {
            return Err(StoreError::Invalid {
                field: "kv.prefix",
                why: "may not contain NUL characters".into(),
            });
        }
        let (scope, prefix) = (self.scope.clone(), prefix.to_owned());
        let after = after.unwrap_or("").to_owned();
        let limit = i64::try_from(limit.min(MAX_LIST)).unwrap_or(0);
        let rows: Vec<(String, i64, Option<i64>, OffsetDateTime)> =
            self.store.run(move |db| async move {
                let now = now_ms();
                Ok(on_db!(&db, |pool| {
                    sqlx::query_as(
                        "SELECT key, size, expires_at, updated_at FROM kv WHERE scope = $1 \
                         AND substr(key, 1, length($2)) = $2 AND key > $3 \
                         AND (expires_at IS NULL OR expires_at > $4) ORDER BY key LIMIT $5",
                    )
                    .bind(&scope)
                    .bind(&prefix)
                    .bind(&after)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
                }))
            })?;
        Ok(rows
            .into_iter()
            .map(|(key, size, expires_at_ms, updated_at)| KvEntry {
                size: u64::try_from(size)
                    .unwrap_or(0)
                    .saturating_sub(key.len() as u64),
                key,
                expires_at_ms,
                updated_at,
            })
            .collect())
    }

    /// Deletes every entry of the scope; how many there were (expired ones included).
    pub fn clear(&self) -> Result<u64, StoreError> {
        let scope = self.scope.clone();
        self.store.run(move |db| clear(db, scope))
    }

    /// What the scope holds now.
    pub fn usage(&self) -> Result<KvUsage, StoreError> {
        let scope = self.scope.clone();
        let row: Option<(i64, i64)> = self.store.run(move |db| async move {
            Ok(on_db!(&db, |pool| {
                sqlx::query_as("SELECT keys, bytes FROM kv_usage WHERE scope = $1")
                    .bind(&scope)
                    .fetch_optional(pool)
                    .await?
            }))
        })?;
        Ok(row.map_or_else(KvUsage::default, |(k, b)| KvUsage {
            keys: u64::try_from(k).unwrap_or(0),
            bytes: u64::try_from(b).unwrap_or(0),
        }))
    }
}

async fn clear(db: Db, scope: String) -> Result<u64, StoreError> {
    transaction!(&db, |conn| async {
        let n = sqlx::query("DELETE FROM kv WHERE scope = $1")
            .bind(&scope)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM kv_usage WHERE scope = $1")
            .bind(&scope)
            .execute(&mut *conn)
            .await?;
        Ok(n)
    })
}

impl Store {
    /// The key-value data of `scope` (a package's name, for installed plugins).
    pub fn kv(&self, scope: &str) -> Result<Kv<'_>, StoreError> {
        check_scope(scope)?;
        Ok(Kv {
            store: self,
            scope: scope.to_owned(),
        })
    }

    /// Every scope that holds data, with its usage.
    pub fn kv_scopes(&self) -> Result<Vec<(String, KvUsage)>, StoreError> {
        let rows: Vec<(String, i64, i64)> = self.run(|db| async move {
            Ok(on_db!(&db, |pool| {
                sqlx::query_as(
                    "SELECT scope, keys, bytes FROM kv_usage WHERE keys > 0 ORDER BY scope",
                )
                .fetch_all(pool)
                .await?
            }))
        })?;
        Ok(rows
            .into_iter()
            .map(|(s, k, b)| {
                let usage = KvUsage {
                    keys: u64::try_from(k).unwrap_or(0),
                    bytes: u64::try_from(b).unwrap_or(0),
                };
                (s, usage)
            })
            .collect())
    }

    /// Removes every expired entry, of every scope; how many.
    pub fn purge_expired_kv(&self) -> Result<u64, StoreError> {
        self.run(|db| async move {
            let now = now_ms();
            transaction!(&db, |conn| async {
                let n = sqlx::query("DELETE FROM kv WHERE expires_at <= $1")
                    .bind(now)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if n > 0 {
                    sqlx::query(
                        "UPDATE kv_usage SET keys = (SELECT COUNT(*) FROM kv WHERE kv.scope = kv_usage.scope), \
                         bytes = (SELECT COALESCE(SUM(size), 0) FROM kv WHERE kv.scope = kv_usage.scope)",
                    )
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(n)
            })
        })
    }
}
