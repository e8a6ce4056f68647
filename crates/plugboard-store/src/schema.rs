//! Versioned, embedded migrations, applied when a store opens.

use crate::StoreError;
use crate::db::Db;

/// The newest schema this build knows.
pub(crate) const VERSION: i64 = 6;

/// One migration, in each backend's dialect.
struct Migration {
    version: i64,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[V1, V2, V3, V4, V5, V6];

/// The hosts' event catalogues (`events.rs`): what each declared event is and the JSON
/// Schema of its state, so that tools in other processes (`plugboard events`) describe
/// an embedder's own events too.
const V6: Migration = Migration {
    version: 6,
    sqlite: "CREATE TABLE events (name TEXT PRIMARY KEY, section TEXT NOT NULL, doc TEXT NOT NULL, schema TEXT NOT NULL, updated_at TEXT NOT NULL)",
    postgres: "CREATE TABLE events (name TEXT PRIMARY KEY, section TEXT NOT NULL, doc TEXT NOT NULL, schema TEXT NOT NULL, updated_at TIMESTAMPTZ NOT NULL)",
};

/// What an operator granted each package (JSON, read by the installer). NULL for a
/// package installed before grants existed: it keeps what its manifest asks for.
const V5: Migration = Migration {
    version: 5,
    sqlite: "ALTER TABLE packages ADD COLUMN grants TEXT",
    postgres: "ALTER TABLE packages ADD COLUMN grants TEXT",
};

/// Plugins' key-value data (`kv.rs`): the entries, and each scope's usage, kept in step by
/// every write (whose lock it also is). On PostgreSQL keys sort bytewise (`COLLATE "C"`),
/// as on SQLite, so that listing and paging agree on both.
const V4: Migration = Migration {
    version: 4,
    sqlite: r#"
CREATE TABLE kv (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    expires_at INTEGER,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE kv_usage (
    scope TEXT PRIMARY KEY,
    keys INTEGER NOT NULL,
    bytes INTEGER NOT NULL
)
"#,
    postgres: r#"
CREATE TABLE kv (
    scope TEXT NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    value BYTEA NOT NULL,
    size BIGINT NOT NULL,
    expires_at BIGINT,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE kv_usage (
    scope TEXT PRIMARY KEY,
    keys BIGINT NOT NULL,
    bytes BIGINT NOT NULL
)
"#,
};

/// Settings' names may be up to 200 characters: a package's plugin settings are stored as
/// `package.<name>`, and package names have up to 50. (SQLite cannot alter a CHECK: the
/// table is rebuilt.) A plugin's code deleted by an operator is recorded (`unloaded`), so
/// that every host unloads it.
const V3: Migration = Migration {
    version: 3,
    sqlite: r#"
CREATE TABLE settings_v3 (
    name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 5 AND 200),
    configs TEXT NOT NULL,
    inserted_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
INSERT INTO settings_v3 (name, configs, inserted_at, updated_at)
    SELECT name, configs, inserted_at, updated_at FROM settings;
DROP TABLE settings;
ALTER TABLE settings_v3 RENAME TO settings;
ALTER TABLE plugins ADD COLUMN unloaded BOOLEAN NOT NULL DEFAULT FALSE
"#,
    postgres: r#"
ALTER TABLE settings DROP CONSTRAINT IF EXISTS settings_name_check;
ALTER TABLE settings ADD CONSTRAINT settings_name_check CHECK (length(name) BETWEEN 5 AND 200);
ALTER TABLE plugins ADD COLUMN unloaded BOOLEAN NOT NULL DEFAULT FALSE
"#,
};

/// The installer: verified package bytes shared by every host (an archive is kept while a
/// package's current or previous version uses it), the manifest, the previous version
/// for rollback, a revision for lost-update checks, and the last load error.
const V2: Migration = Migration {
    version: 2,
    sqlite: r#"
CREATE TABLE package_archives (
    sha256 TEXT PRIMARY KEY,
    bytes BLOB NOT NULL,
    inserted_at TEXT NOT NULL
);
ALTER TABLE packages ADD COLUMN manifest TEXT NOT NULL DEFAULT '';
ALTER TABLE packages ADD COLUMN previous_version TEXT;
ALTER TABLE packages ADD COLUMN previous_sha256 TEXT;
ALTER TABLE packages ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
ALTER TABLE packages ADD COLUMN load_error TEXT
"#,
    postgres: r#"
CREATE TABLE package_archives (
    sha256 TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL,
    inserted_at TIMESTAMPTZ NOT NULL
);
ALTER TABLE packages ADD COLUMN manifest TEXT NOT NULL DEFAULT '';
ALTER TABLE packages ADD COLUMN previous_version TEXT;
ALTER TABLE packages ADD COLUMN previous_sha256 TEXT;
ALTER TABLE packages ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;
ALTER TABLE packages ADD COLUMN load_error TEXT
"#,
};

const V1: Migration = Migration {
    version: 1,
    sqlite: r#"
CREATE TABLE plugins (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 100),
    status TEXT NOT NULL CHECK (status IN ('registered','started','restarted','stopped','held')),
    depend_type TEXT NOT NULL CHECK (depend_type IN ('hard','soft')),
    depends TEXT NOT NULL,
    extra TEXT NOT NULL,
    owner_package TEXT,
    version INTEGER NOT NULL,
    inserted_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX plugins_event ON plugins (event);
CREATE TABLE packages (
    name TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    source_kind TEXT NOT NULL CHECK (source_kind IN ('path','url','upload','registry')),
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    dependencies TEXT NOT NULL,
    installed_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE activities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL,
    subject TEXT,
    section_id TEXT,
    extra TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX activities_created_at ON activities (created_at);
CREATE INDEX activities_subject ON activities (subject);
CREATE TABLE settings (
    name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 5 AND 50),
    configs TEXT NOT NULL,
    inserted_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"#,
    postgres: r#"
CREATE TABLE plugins (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 100),
    status TEXT NOT NULL CHECK (status IN ('registered','started','restarted','stopped','held')),
    depend_type TEXT NOT NULL CHECK (depend_type IN ('hard','soft')),
    depends JSONB NOT NULL,
    extra JSONB NOT NULL,
    owner_package TEXT,
    version BIGINT NOT NULL,
    inserted_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX plugins_event ON plugins (event);
CREATE TABLE packages (
    name TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    source_kind TEXT NOT NULL CHECK (source_kind IN ('path','url','upload','registry')),
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    dependencies JSONB NOT NULL,
    installed_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE activities (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL,
    subject TEXT,
    section_id TEXT,
    extra JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX activities_created_at ON activities (created_at);
CREATE INDEX activities_subject ON activities (subject);
CREATE TABLE settings (
    name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 5 AND 50),
    configs JSONB NOT NULL,
    inserted_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
"#,
};

/// The statements of one migration, with the bookkeeping around them; the last one takes
/// the migration's version as `$1`.
fn statements(current: i64, m: &'static Migration, ddl: &'static str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if current == 0 && m.version == 1 {
        out.push("CREATE TABLE plugboard_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
        out.push("INSERT INTO plugboard_meta (key, value) VALUES ('schema', 'plugboard'), ('schema_version', '0')");
    }
    out.extend(ddl.split(';').map(str::trim).filter(|s| !s.is_empty()));
    out.push("UPDATE plugboard_meta SET value = $1 WHERE key = 'schema_version'");
    out
}

/// The schema version recorded in the database (0 for an empty one).
pub(crate) async fn version(db: Db) -> Result<i64, StoreError> {
    match &db {
        Db::Sqlite(pool, _) => sqlite_version(&mut *pool.acquire().await?).await,
        Db::Postgres(pool) => pg_version(&mut *pool.acquire().await?).await,
    }
}

/// Commits on success, rolls back on failure (the connection returns to the pool clean).
macro_rules! finish {
    ($conn:expr, $result:expr) => {
        match $result {
            Ok(()) => {
                sqlx::query("COMMIT").execute(&mut *$conn).await?;
                Ok(())
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *$conn).await;
                Err(e)
            }
        }
    };
}

/// Brings the schema up to [`VERSION`] in one transaction that holds the database's
/// write lock (SQLite `BEGIN IMMEDIATE`, a PostgreSQL advisory lock), so that two
/// processes opening a new database at once neither collide nor apply anything twice.
pub(crate) async fn migrate(db: Db) -> Result<(), StoreError> {
    // One body for both backends (compiled once for each): only how the write lock is
    // taken, how the version is read and which dialect is applied differ.
    macro_rules! run {
        ($pool:expr, $begin:literal, $lock:expr, $version:ident, $ddl:ident) => {{
            let mut conn = $pool.acquire().await?;
            sqlx::query($begin).execute(&mut *conn).await?;
            let result = async {
                if let Some(lock) = $lock {
                    sqlx::query(lock).execute(&mut *conn).await?;
                }
                let current = $version(&mut conn).await?;
                if current > VERSION {
                    return Err(StoreError::NewerSchema {
                        found: current,
                        supported: VERSION,
                    });
                }
                #[allow(clippy::needless_range_loop)]
                for i in 0..MIGRATIONS.len() {
                    let m = &MIGRATIONS[i];
                    if m.version <= current {
                        continue;
                    }
                    for stmt in statements(current, m, m.$ddl) {
                        let q = sqlx::query(stmt);
                        let q = if stmt.contains("$1") {
                            q.bind(m.version.to_string())
                        } else {
                            q
                        };
                        q.execute(&mut *conn).await?;
                    }
                    tracing::info!(version = m.version, "applied migration");
                }
                Ok(())
            }
            .await;
            finish!(conn, result)
        }};
    }
    match &db {
        Db::Sqlite(pool, _) => run!(
            pool,
            "BEGIN IMMEDIATE",
            None::<&str>,
            sqlite_version,
            sqlite
        ),
        Db::Postgres(pool) => run!(
            pool,
            "BEGIN",
            Some("SELECT pg_advisory_xact_lock(7244023)"),
            pg_version,
            postgres
        ),
    }
}

/// Reads the version on one connection: 0 for an empty database, an error for one with
/// tables that are not ours. Only the query listing the tables differs by backend.
macro_rules! read_version {
    ($conn:expr, $tables:literal) => {{
        let tables: Vec<String> = sqlx::query_scalar($tables).fetch_all(&mut *$conn).await?;
        if !tables.iter().any(|t| t == "plugboard_meta") {
            if tables.is_empty() {
                return Ok(0);
            }
            return Err(StoreError::NotPlugboard("the database".into()));
        }
        let v: Option<String> =
            sqlx::query_scalar("SELECT value FROM plugboard_meta WHERE key = 'schema_version'")
                .fetch_optional(&mut *$conn)
                .await?;
        parse_version(v)
    }};
}

async fn sqlite_version(conn: &mut sqlx::SqliteConnection) -> Result<i64, StoreError> {
    read_version!(
        conn,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
}

async fn pg_version(conn: &mut sqlx::PgConnection) -> Result<i64, StoreError> {
    read_version!(
        conn,
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()"
    )
}

fn parse_version(v: Option<String>) -> Result<i64, StoreError> {
    v.and_then(|v| v.parse().ok())
        .ok_or_else(|| StoreError::Corrupt {
            table: "plugboard_meta",
            why: "no schema_version".into(),
        })
}
