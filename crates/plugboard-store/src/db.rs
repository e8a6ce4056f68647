//! The two backends behind one type, and how a URL becomes a pool.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

use crate::{Backend, StoreError, sqlite_path};

/// A connection pool on either backend.
#[derive(Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool, Box<SqliteConnectOptions>),
    Postgres(PgPool),
}

/// Runs the same code against whichever pool is open: sqlx's API is the same on both, so
/// one body serves both backends (it is compiled once for each).
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool, _) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// Runs `$body` (an `async` block using the connection `$conn`) in one write transaction on
/// either backend; the body's `Result` decides commit or rollback. SQLite takes the write
/// lock up front (`BEGIN IMMEDIATE`), so that two processes queue on the busy timeout
/// instead of failing on a lock upgrade; PostgreSQL runs a plain transaction. A connection
/// whose transaction did not end (it could not, or the operation timed out and was dropped
/// mid-way) is closed, never returned to the pool inside it: the next user would commit
/// its half-done writes, and on SQLite it would hold the write lock.
macro_rules! transaction {
    ($db:expr, |$conn:ident| $body:expr) => {
        $crate::db::on_db!($db, |pool| {
            let mut $conn = $crate::db::TxConn::new(pool.acquire().await?);
            let begin = match $db.backend() {
                $crate::Backend::Sqlite => "BEGIN IMMEDIATE",
                $crate::Backend::Postgres => "BEGIN",
            };
            sqlx::query(begin).execute(&mut *$conn).await?;
            let result = $body.await;
            let end = match &result {
                Ok(_) => {
                    $crate::health::committing();
                    sqlx::query("COMMIT").execute(&mut *$conn).await.map(|_| ())
                }
                Err(_) => sqlx::query("ROLLBACK")
                    .execute(&mut *$conn)
                    .await
                    .map(|_| ()),
            };
            match end {
                Ok(()) => $conn.ended(),
                // The connection went while committing: the commit may have landed.
                Err(e) if result.is_ok() && $crate::health::is_unavailable(&e) => {
                    return Err($crate::StoreError::CommitUnknown { why: e.to_string() });
                }
                Err(e) => return result.and(Err($crate::StoreError::from(e))),
            }
            result
        })
    };
}
pub(crate) use transaction;

/// A pooled connection inside a transaction: dropped before [`TxConn::ended`] (an error, or
/// the operation's future dropped at its deadline), it is closed rather than pooled, which
/// ends the transaction on the server without committing it.
pub(crate) struct TxConn<DB: sqlx::Database> {
    conn: sqlx::pool::PoolConnection<DB>,
    open: bool,
}

impl<DB: sqlx::Database> TxConn<DB> {
    pub(crate) fn new(conn: sqlx::pool::PoolConnection<DB>) -> Self {
        TxConn { conn, open: true }
    }

    /// The transaction committed or rolled back: the connection may go back to the pool.
    pub(crate) fn ended(&mut self) {
        self.open = false;
    }
}

impl<DB: sqlx::Database> std::ops::Deref for TxConn<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.conn
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for TxConn<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }
}

impl<DB: sqlx::Database> Drop for TxConn<DB> {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

impl Db {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(..) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Connects; without `create`, a SQLite file that does not exist is refused, and
    /// nothing (not even its directory) is made.
    pub(crate) async fn open(
        url: String,
        create: bool,
        timeout: Duration,
    ) -> Result<Db, StoreError> {
        let url = url.as_str();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            // One connection first, so that a server that is down is reported at once
            // (the pool would retry a refused connection until its deadline).
            match tokio::time::timeout(timeout, opts.connect()).await {
                Ok(Ok(conn)) => drop(conn),
                Ok(Err(e)) => {
                    return Err(StoreError::Unavailable {
                        why: format!("cannot connect: {e}"),
                    });
                }
                Err(_) => return Err(StoreError::Timeout { after: timeout }),
            }
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(timeout)
                .connect_with(opts)
                .await?;
            return Ok(Db::Postgres(pool));
        }
        let Some(path) = sqlite_path(url) else {
            return Err(StoreError::BadUrl(url.to_owned()));
        };
        let exists = path.exists();
        if !exists && !create {
            return Err(StoreError::NoDatabase(path.display().to_string()));
        }
        if !exists {
            // The data directory and the database are the operator's alone: 0700 / 0600
            // (SQLite gives its -wal and -shm files the database's mode).
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                let mut builder = std::fs::DirBuilder::new();
                builder.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                builder.create(dir)?;
            }
            let mut file = std::fs::OpenOptions::new();
            file.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
            match file.open(path) {
                Ok(_) => {}
                // Another process created it at the same moment.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::BadUrl(url.to_owned()))?
            // Waiting for another process's write lock ends at the operation deadline.
            .busy_timeout(timeout)
            .foreign_keys(true);
        if exists {
            // Look before writing anything: WAL mode itself would change the file's header.
            inspect(base.clone().read_only(true), &path.display().to_string()).await?;
        }
        // WAL with full sync: a commit is on disk before it is acknowledged.
        let opts = base
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.clone())
            .await
            .map_err(|e| not_a_db(e, path))?;
        Ok(Db::Sqlite(pool, Box::new(opts)))
    }
}

/// Refuses a file that is not a SQLite database, or one with tables that are not ours.
async fn inspect(opts: SqliteConnectOptions, path: &str) -> Result<(), StoreError> {
    let mut conn = opts
        .connect()
        .await
        .map_err(|e| not_a_db(e, std::path::Path::new(path)))?;
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|e| not_a_db(e, std::path::Path::new(path)))?;
    let _ = conn.close().await;
    if !tables.is_empty() && !tables.iter().any(|(t,)| t == "plugboard_meta") {
        return Err(StoreError::NotPlugboard(path.to_owned()));
    }
    Ok(())
}

fn not_a_db(e: sqlx::Error, path: &std::path::Path) -> StoreError {
    let notadb = match &e {
        sqlx::Error::Database(d) => d.code().as_deref() == Some("26"),
        _ => false,
    };
    if notadb {
        StoreError::NotADatabase {
            path: path.display().to_string(),
        }
    } else {
        StoreError::Db(e)
    }
}
