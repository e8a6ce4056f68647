//! How long an operation may wait on the database, whether the database is reachable, and
//! what the store saw of it going away and coming back.
//!
//! Every blocking store call runs under a deadline ([`StoreOptions::timeout`]). A database
//! that refuses connections makes an operation fail at once rather than at the deadline:
//! once the store knows it is down (an operation or the watcher saw it go), each call
//! first tries one connection of its own; and a call that is slow while the store believes
//! the database is up tries one too, so a database that went away unnoticed is found out
//! within [`SLOW`], not after the pool has retried its connections until the deadline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::ConnectOptions;

use crate::StoreError;
use crate::db::Db;

/// After this long, a PostgreSQL operation checks whether the server still takes
/// connections (see the module's documentation).
const SLOW: Duration = Duration::from_millis(250);

/// The default deadline of a store operation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a store behaves towards its database.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    /// How long one operation may take, waiting for a connection included, before it is
    /// abandoned with [`StoreError::Timeout`]; on SQLite, also how long a write waits for
    /// another process's lock. Default: `$PLUGBOARD_DB_TIMEOUT` (`5s`, `1500ms` or a
    /// number of seconds), else 10 s. (A database that refuses connections fails an
    /// operation at once, whatever the deadline.)
    pub timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        let timeout = std::env::var("PLUGBOARD_DB_TIMEOUT")
            .ok()
            .and_then(|v| parse_duration(&v))
            .unwrap_or(DEFAULT_TIMEOUT);
        StoreOptions { timeout }
    }
}

impl StoreOptions {
    /// These options with another operation deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// `5s`, `1500ms`, `0.5` (seconds): the forms `$PLUGBOARD_DB_TIMEOUT` takes. Zero and
/// anything else is refused (`None`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (number, unit) = match s.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => (s.strip_suffix('s').unwrap_or(s), 1.0),
    };
    let secs = number.trim().parse::<f64>().ok()? * unit;
    (secs.is_finite() && secs > 0.0 && secs < 86_400.0).then(|| Duration::from_secs_f64(secs))
}

/// What a store knows of its database's reachability, for `/health` and `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreHealth {
    /// Whether the last operation or watcher round reached the database.
    pub reachable: bool,
    /// Why it is not reachable, when it is not.
    pub error: Option<String>,
    /// The watcher's connection to the database was lost and made again, this many times.
    pub reconnects: u64,
    /// Full reloads of the stored records after a reconnect, so that changes whose
    /// notification was lost while disconnected are applied.
    pub resyncs: u64,
    /// Operations abandoned at their deadline.
    pub timeouts: u64,
    /// Operations refused at once because the database was unreachable.
    pub unavailable: u64,
}

/// Bumped by the watcher on every change it sees from other processes, so that other
/// followers in this process (the installer's) wake at once instead of at their next poll.
#[derive(Default)]
pub(crate) struct Changes {
    seen: Mutex<u64>,
    cond: std::sync::Condvar,
}

impl Changes {
    pub(crate) fn bump(&self) {
        if let Ok(mut n) = self.seen.lock() {
            *n += 1;
            self.cond.notify_all();
        }
    }

    pub(crate) fn current(&self) -> u64 {
        self.seen.lock().map(|n| *n).unwrap_or(0)
    }

    /// Waits until the count moves past `seen`, at most `timeout`; the count.
    pub(crate) fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let Ok(guard) = self.seen.lock() else {
            return seen;
        };
        match self.cond.wait_timeout_while(guard, timeout, |n| *n == seen) {
            Ok((n, _)) => *n,
            Err(_) => seen,
        }
    }
}

#[derive(Default)]
pub(crate) struct Health {
    down: Mutex<Option<String>>,
    pub(crate) reconnects: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    timeouts: AtomicU64,
    unavailable: AtomicU64,
}

impl Health {
    pub(crate) fn is_down(&self) -> bool {
        self.down.lock().map(|d| d.is_some()).unwrap_or(false)
    }

    /// The database went away (logged once per outage).
    pub(crate) fn down(&self, why: &str) {
        if let Ok(mut d) = self.down.lock() {
            if d.is_none() {
                tracing::warn!(error = %why, "the database is unreachable; operations fail until it is back, calls go on");
            }
            *d = Some(why.to_owned());
        }
    }

    /// The database answered.
    pub(crate) fn up(&self) {
        if let Ok(mut d) = self.down.lock()
            && d.take().is_some()
        {
            tracing::info!("the database is reachable again");
        }
    }

    /// Takes note of an operation's outcome.
    pub(crate) fn observe<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Err(StoreError::Unavailable { why }) => {
                self.unavailable.fetch_add(1, Relaxed);
                self.down(why);
            }
            Err(e @ (StoreError::Timeout { .. } | StoreError::CommitUnknown { .. })) => {
                self.timeouts.fetch_add(1, Relaxed);
                self.down(&e.to_string());
            }
            // Any other answer came from the database.
            _ => self.up(),
        }
    }

    pub(crate) fn snapshot(&self) -> StoreHealth {
        let error = self.down.lock().ok().and_then(|d| d.clone());
        StoreHealth {
            reachable: error.is_none(),
            error,
            reconnects: self.reconnects.load(Relaxed),
            resyncs: self.resyncs.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            unavailable: self.unavailable.load(Relaxed),
        }
    }
}

/// Whether an error means "the database could not be reached or went away" rather than
/// "the database answered no".
pub(crate) fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL: connection exceptions (08…), the server shutting down or starting
        // (57P01-57P03), too many connections (53300).
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Whether an error means "no space left": SQLite's `SQLITE_FULL` (13, with its extended
/// codes), PostgreSQL's `disk_full` (53100).
pub(crate) fn is_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c == "53100" || c.parse::<i64>().is_ok_and(|n| n & 0xff == 13)),
        _ => false,
    }
}

tokio::task_local! {
    /// Set once the running operation has sent (or is about to send) its `COMMIT`: from
    /// then on, abandoning it cannot tell whether it landed.
    static COMMITTING: Arc<AtomicBool>;
}

/// Marks the running store operation as committing (see [`guarded`]); a no-op outside one.
pub(crate) fn committing() {
    let _ = COMMITTING.try_with(|c| c.store(true, Relaxed));
}

/// Whether a failed connection attempt means the server is not there (refused, reset,
/// unreachable, shutting down or starting up), rather than a server that answered no
/// (too many clients, a password refused): only the former fails an operation early.
fn gone(e: &sqlx::Error) -> bool {
    use std::io::ErrorKind::*;
    match e {
        sqlx::Error::Io(io) => matches!(
            io.kind(),
            ConnectionRefused
                | ConnectionReset
                | ConnectionAborted
                | NotConnected
                | HostUnreachable
                | NetworkUnreachable
                | NotFound
                | UnexpectedEof
                | BrokenPipe
        ),
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

impl Db {
    /// Tries one fresh connection (PostgreSQL; SQLite has no server to lose), within
    /// `limit`: `Unavailable` at once when the server is not there; `Ok` when it answered,
    /// even with a refusal (it is up; the operation will say what it says).
    pub(crate) async fn probe(&self, limit: Duration) -> Result<(), StoreError> {
        let Db::Postgres(pool) = self else {
            return Ok(());
        };
        let opts = pool.connect_options();
        match tokio::time::timeout(limit, opts.connect()).await {
            Ok(Ok(conn)) => {
                // Closing politely is a round trip; dropping the socket is enough.
                drop(conn);
                Ok(())
            }
            Ok(Err(e)) if gone(&e) => Err(StoreError::Unavailable {
                why: format!("cannot connect: {e}"),
            }),
            Ok(Err(_)) => Ok(()),
            Err(_) => Err(StoreError::Timeout { after: limit }),
        }
    }
}

/// Runs one store operation under its deadline, failing fast when the database is down.
pub(crate) async fn guarded<T>(
    db: &Db,
    health: &Health,
    limit: Duration,
    op: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let deadline = tokio::time::Instant::now() + limit;
    if health.is_down() {
        db.probe(limit).await?;
    }
    let committing = Arc::new(AtomicBool::new(false));
    let op = tokio::time::timeout_at(deadline, COMMITTING.scope(committing.clone(), op));
    tokio::pin!(op);
    // Abandoned (at the deadline, or because the server is gone): nothing was written,
    // unless the commit had been sent, and then no one can say.
    let abandoned = |e: StoreError| {
        if committing.load(Relaxed) {
            StoreError::CommitUnknown { why: e.to_string() }
        } else {
            e
        }
    };
    let done = |r: Result<Result<T, StoreError>, tokio::time::error::Elapsed>| match r {
        Ok(r) => r,
        Err(_) => Err(abandoned(StoreError::Timeout { after: limit })),
    };
    tokio::select! {
        r = &mut op => return done(r),
        _ = tokio::time::sleep(SLOW) => {}
    }
    if matches!(db, Db::Postgres(_)) {
        // Dropping the operation here leaves no half-done transaction behind: one in
        // flight is closed, not committed (see `TxConn`).
        tokio::select! {
            r = &mut op => return done(r),
            Err(e @ StoreError::Unavailable { .. }) = db.probe(limit) => return Err(abandoned(e)),
        }
    }
    done(op.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_server_that_is_not_there_fails_an_operation_early() {
        let io = |kind| sqlx::Error::Io(std::io::Error::from(kind));
        assert!(gone(&io(std::io::ErrorKind::ConnectionRefused)));
        assert!(gone(&io(std::io::ErrorKind::ConnectionReset)));
        // It answered: busy, or a refusal of ours; the operation says what it says.
        assert!(!gone(&io(std::io::ErrorKind::PermissionDenied)));
        assert!(!gone(&sqlx::Error::PoolTimedOut));
        assert!(!gone(&sqlx::Error::Protocol(
            "password authentication failed".into()
        )));
    }

    #[test]
    fn durations_in_the_forms_the_variable_takes() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        for bad in ["", "0", "-1s", "soon", "1h", "NaN"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
