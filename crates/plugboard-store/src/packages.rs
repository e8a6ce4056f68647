//! The `packages` table and the verified package bytes every host loads from.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::db::{Db, on_db, transaction};
use crate::records::announce;
use crate::{Store, StoreError};

/// An installed package, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct PackageRow {
    /// The package's name.
    pub name: String,
    /// The current version.
    pub version: String,
    /// Where it came from: `path`, `url`, `upload` or `registry`.
    pub source_kind: String,
    /// The path or URL it was installed from.
    pub source: String,
    /// SHA-256 (hex) of the current version's package file.
    pub sha256: String,
    /// Its package dependencies: name → semver requirement.
    pub dependencies: BTreeMap<String, String>,
    /// The current version's manifest (`plugboard.toml`).
    pub manifest: String,
    /// The version before the last upgrade, kept for rollback.
    pub previous_version: Option<String>,
    /// Its package file's SHA-256.
    pub previous_sha256: Option<String>,
    /// Bumped by every write; writers name the revision they read.
    pub revision: i64,
    /// Why the package last failed to load on a host, if it did.
    pub load_error: Option<String>,
    /// What an operator granted it, as the installer writes it (JSON); `None` for a
    /// package installed before grants were stored.
    pub grants: Option<String>,
    /// When it was first installed.
    pub installed_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str = "name, version, source_kind, source, sha256, dependencies, manifest, previous_version, previous_sha256, revision, load_error, grants, installed_at, updated_at";

async fn load(db: Db, name: Option<String>) -> Result<Vec<PackageRow>, StoreError> {
    on_db!(&db, |pool| {
        let rows = match &name {
            Some(n) => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM packages WHERE name = $1"))
                    .bind(n)
                    .fetch_all(pool)
                    .await?
            }
            None => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM packages ORDER BY name"))
                    .fetch_all(pool)
                    .await?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Json(dependencies): Json<BTreeMap<String, String>> = row.try_get("dependencies")?;
            out.push(PackageRow {
                name: row.try_get("name")?,
                version: row.try_get("version")?,
                source_kind: row.try_get("source_kind")?,
                source: row.try_get("source")?,
                sha256: row.try_get("sha256")?,
                dependencies,
                manifest: row.try_get("manifest")?,
                previous_version: row.try_get("previous_version")?,
                previous_sha256: row.try_get("previous_sha256")?,
                revision: row.try_get("revision")?,
                load_error: row.try_get("load_error")?,
                grants: row.try_get("grants")?,
                installed_at: row.try_get("installed_at")?,
                updated_at: row.try_get("updated_at")?,
            });
        }
        Ok(out)
    })
}

/// Writes a package row (and its archive) in one transaction, refusing it if the row's
/// revision moved since `expected` (0: the package must not exist yet); then deletes the
/// archives no package uses any more.
async fn put(
    db: Db,
    row: PackageRow,
    archive: Option<Vec<u8>>,
    expected: i64,
) -> Result<(), StoreError> {
    transaction!(&db, |conn| async {
        if let Some(bytes) = archive {
            sqlx::query(
                    "INSERT INTO package_archives (sha256, bytes, inserted_at) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(&row.sha256)
                .bind(bytes)
                .bind(OffsetDateTime::now_utc())
                .execute(&mut *conn)
                .await?;
        }
        let affected = if expected == 0 {
            sqlx::query(
                    "INSERT INTO packages (name, version, source_kind, source, sha256, dependencies, manifest, previous_version, previous_sha256, revision, load_error, installed_at, updated_at, grants) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, NULL, $10, $11, $12) ON CONFLICT (name) DO NOTHING",
                )
                .bind(&row.name)
                .bind(&row.version)
                .bind(&row.source_kind)
                .bind(&row.source)
                .bind(&row.sha256)
                .bind(Json(&row.dependencies))
                .bind(&row.manifest)
                .bind(&row.previous_version)
                .bind(&row.previous_sha256)
                .bind(row.installed_at)
                .bind(row.updated_at)
                .bind(&row.grants)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        } else {
            sqlx::query(
                    "UPDATE packages SET version = $2, source_kind = $3, source = $4, sha256 = $5, dependencies = $6, manifest = $7, \
                     previous_version = $8, previous_sha256 = $9, revision = revision + 1, load_error = NULL, updated_at = $10, grants = $12 \
                     WHERE name = $1 AND revision = $11",
                )
                .bind(&row.name)
                .bind(&row.version)
                .bind(&row.source_kind)
                .bind(&row.source)
                .bind(&row.sha256)
                .bind(Json(&row.dependencies))
                .bind(&row.manifest)
                .bind(&row.previous_version)
                .bind(&row.previous_sha256)
                .bind(row.updated_at)
                .bind(expected)
                .bind(&row.grants)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        };
        if affected != 1 {
            return Err(StoreError::PackageConflict {
                package: row.name.clone(),
            });
        }
        let referenced: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM package_archives WHERE sha256 = $1")
                .bind(&row.sha256)
                .fetch_one(&mut *conn)
                .await?;
        if referenced != 1 {
            return Err(StoreError::Invalid {
                field: "archive",
                why: format!("no stored package file with sha256 {}", row.sha256),
            });
        }
        sqlx::query(GC).execute(&mut *conn).await?;
        announce!(conn, db.backend(), "packages");
        Ok(())
    })
}

/// Deletes archives that no package's current or previous version uses.
const GC: &str = "DELETE FROM package_archives WHERE sha256 NOT IN (SELECT sha256 FROM packages) \
     AND sha256 NOT IN (SELECT previous_sha256 FROM packages WHERE previous_sha256 IS NOT NULL)";

async fn remove(db: Db, name: String, expected: i64, keep_data: bool) -> Result<bool, StoreError> {
    transaction!(&db, |conn| async {
        let affected = sqlx::query("DELETE FROM packages WHERE name = $1 AND revision = $2")
            .bind(&name)
            .bind(expected)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if affected == 0 {
            return Ok(false);
        }
        sqlx::query(GC).execute(&mut *conn).await?;
        if !keep_data {
            for table in ["kv", "kv_usage"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE scope = $1"))
                    .bind(&name)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        announce!(conn, db.backend(), "packages");
        Ok(true)
    })
}

impl Store {
    /// The installed packages, by name.
    pub fn packages(&self) -> Result<Vec<PackageRow>, StoreError> {
        self.run(|db| load(db, None))
    }

    /// One installed package.
    pub fn package(&self, name: &str) -> Result<Option<PackageRow>, StoreError> {
        let name = name.to_owned();
        Ok(self.run(|db| load(db, Some(name)))?.into_iter().next())
    }

    /// The stored bytes of a package file, by SHA-256.
    pub fn package_archive(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let sha = sha256.to_owned();
        self.run(|db| async move {
            Ok(on_db!(&db, |pool| {
                sqlx::query_scalar::<_, Vec<u8>>(
                    "SELECT bytes FROM package_archives WHERE sha256 = $1",
                )
                .bind(&sha)
                .fetch_optional(pool)
                .await?
            }))
        })
    }

    /// Installs, upgrades or rolls back a package: writes `row` (and `archive`, the
    /// package file whose SHA-256 is `row.sha256`, unless it is stored already) in one
    /// transaction. `expected` is the revision the caller read (0: a new package); if the
    /// row moved since, nothing is written and [`StoreError::PackageConflict`] says so.
    pub fn put_package(
        &self,
        row: &PackageRow,
        archive: Option<Vec<u8>>,
        expected: i64,
    ) -> Result<(), StoreError> {
        let row = row.clone();
        self.run(move |db| put(db, row, archive, expected))
    }

    /// Removes a package's row (and the archives nothing uses any more) and, unless
    /// `keep_data`, its key-value data, in one transaction; `false` if it was not there at
    /// `expected` (and then nothing is removed).
    pub fn remove_package(
        &self,
        name: &str,
        expected: i64,
        keep_data: bool,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.run(move |db| remove(db, name, expected, keep_data))
    }

    /// Changes what a package is granted (JSON, as the installer writes it), refusing if
    /// the row moved since revision `expected` ([`StoreError::PackageConflict`]); every
    /// host sharing the database is told.
    pub fn set_package_grants(
        &self,
        name: &str,
        grants: &str,
        expected: i64,
    ) -> Result<(), StoreError> {
        let (name, grants) = (name.to_owned(), grants.to_owned());
        self.run(move |db| async move {
            transaction!(&db, |conn| async {
                let affected = sqlx::query(
                    "UPDATE packages SET grants = $2, revision = revision + 1, updated_at = $3 \
                     WHERE name = $1 AND revision = $4",
                )
                .bind(&name)
                .bind(&grants)
                .bind(OffsetDateTime::now_utc())
                .bind(expected)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if affected != 1 {
                    return Err(StoreError::PackageConflict {
                        package: name.clone(),
                    });
                }
                announce!(conn, db.backend(), "packages");
                Ok(())
            })
        })
    }

    /// Records (or clears) why a package failed to load.
    pub fn set_package_error(&self, name: &str, error: Option<&str>) -> Result<(), StoreError> {
        let (name, error) = (name.to_owned(), error.map(str::to_owned));
        self.run(move |db| async move {
            on_db!(&db, |pool| {
                sqlx::query("UPDATE packages SET load_error = $2 WHERE name = $1")
                    .bind(&name)
                    .bind(&error)
                    .execute(pool)
                    .await?;
            });
            Ok(())
        })
    }

    /// The change generation: bumped by every change other processes must apply (plugin
    /// records, packages).
    pub fn generation(&self) -> Result<i64, StoreError> {
        self.run(crate::records::generation)
    }
}
