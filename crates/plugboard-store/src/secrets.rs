//! The admin token's hash, kept in `plugboard_meta` (never among the settings, which the
//! API lists): every server sharing the database checks tokens against it, and a rotation
//! is announced like any other change.

use crate::db::{Db, on_db};
use crate::records::announce;
use crate::{Store, StoreError};

const KEY: &str = "admin_token_sha256";

async fn read(db: Db) -> Result<Option<String>, StoreError> {
    let v: Option<String> = on_db!(&db, |pool| {
        sqlx::query_scalar("SELECT value FROM plugboard_meta WHERE key = $1")
            .bind(KEY)
            .fetch_optional(pool)
            .await?
    });
    Ok(v)
}

async fn write(db: Db, hash: String, only_if_unset: bool) -> Result<bool, StoreError> {
    let stored = on_db!(&db, |pool| {
        let mut tx = pool.begin().await?;
        let sql = if only_if_unset {
            "INSERT INTO plugboard_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
        } else {
            "INSERT INTO plugboard_meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        };
        let n = sqlx::query(sql)
            .bind(KEY)
            .bind(&hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0 {
            announce!(tx, db.backend(), "token");
        }
        crate::health::committing();
        tx.commit().await?;
        n > 0
    });
    Ok(stored)
}

impl Store {
    /// The admin token's sha256 (hex), if one was set.
    pub fn admin_token_hash(&self) -> Result<Option<String>, StoreError> {
        self.run(read)
    }

    /// Replaces the admin token's sha256 (hex). Every server sharing the database stops
    /// accepting the old token once it sees the change.
    pub fn set_admin_token_hash(&self, sha256_hex: &str) -> Result<(), StoreError> {
        let h = sha256_hex.to_owned();
        self.run(move |db| write(db, h, false)).map(|_| ())
    }

    /// Sets the admin token's sha256 only if none is set (two servers starting on a new
    /// database at once: one wins); returns whether this one was stored.
    pub fn init_admin_token_hash(&self, sha256_hex: &str) -> Result<bool, StoreError> {
        let h = sha256_hex.to_owned();
        self.run(move |db| write(db, h, true))
    }
}
