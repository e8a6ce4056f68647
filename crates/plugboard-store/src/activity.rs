//! The activity log: every lifecycle change, failure and installer action, written by a
//! bounded background writer in batches so that recording never blocks or slows a call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use plugboard_engine::{Cause, Engine, LifecycleEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::types::Json;
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};

use crate::db::{Db, on_db};
use crate::{Store, StoreError};

/// A closed set of names, stored and serialized as the lowercase name.
macro_rules! vocabulary {
    ($(#[$m:meta])* $name:ident($field:literal) { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Its name, as stored and serialized.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = StoreError;

            /// Parses a name, naming the allowed ones when it is not one of them.
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(StoreError::Invalid {
                        field: $field,
                        why: format!(
                            "{s:?} is not one of {}",
                            [$($s),+].join(", ")
                        ),
                    }),
                }
            }
        }
    };
}

vocabulary! {
    /// What an activity entry is about.
    ActivityKind("kind") {
        /// A plugin's record or status.
        Plugin = "plugin",
        /// An installed package.
        Package = "package",
        /// A setting.
        Setting = "setting",
        /// An event and its chain.
        Event = "event",
        /// The activity log itself (dropped entries).
        Activity = "activity",
        /// The installer.
        Installer = "installer",
    }
}

vocabulary! {
    /// How much an activity entry matters.
    ActivityPriority("priority") {
        /// Routine.
        None = "none",
        /// Background detail.
        Low = "low",
        /// Worth a look.
        Medium = "medium",
        /// Needs attention.
        High = "high",
        /// Shown first.
        Featured = "featured",
    }
}

vocabulary! {
    /// How an activity went.
    ActivityStatus("status") {
        /// It failed.
        Error = "error",
        /// It happened.
        Info = "info",
        /// It happened with a concern.
        Warning = "warning",
        /// A summary or measurement.
        Report = "report",
        /// A plugin panicked.
        Throw = "throw",
        /// Something ended.
        Exit = "exit",
    }
}

/// An entry to record.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewActivity {
    /// What it is about.
    pub kind: ActivityKind,
    /// What happened: `add`, `edit`, `delete`, `destroy`, `read`, `call`, `install`, `update`,
    /// an operation's name… (open: a host may record its own).
    pub action: String,
    /// How much it matters.
    pub priority: ActivityPriority,
    /// How it went.
    pub status: ActivityStatus,
    /// The plugin's or package's name.
    pub subject: Option<String>,
    /// A section or event id.
    pub section_id: Option<String>,
    /// Details (any JSON; null when there are none).
    pub extra: Value,
}

/// A recorded entry.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// Its id; ids grow with time.
    pub id: i64,
    /// The entry.
    #[serde(flatten)]
    pub entry: NewActivity,
    /// When it was recorded.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
}

impl NewActivity {
    /// An entry; its priority follows from its status (failures are `high`).
    pub fn new(
        kind: ActivityKind,
        action: &str,
        status: ActivityStatus,
        subject: Option<&str>,
        extra: Value,
    ) -> Self {
        NewActivity {
            kind,
            action: action.to_owned(),
            priority: match status {
                ActivityStatus::Error | ActivityStatus::Throw => ActivityPriority::High,
                _ => ActivityPriority::None,
            },
            status,
            subject: subject.map(str::to_owned),
            section_id: None,
            extra,
        }
    }

    /// Checks the open fields (the closed ones are enums), naming the field that is wrong.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.action.is_empty() || self.action.len() > 32 {
            return Err(StoreError::Invalid {
                field: "action",
                why: "must be 1 to 32 characters".into(),
            });
        }
        Ok(())
    }

    /// The entry a lifecycle event is recorded as.
    pub fn from_event(ev: &LifecycleEvent) -> NewActivity {
        let mut a = Self::from_event_fields(ev);
        // One line an operator reads first; the fields stay beside it.
        let summary = Value::String(ev.to_string());
        a.extra = match std::mem::take(&mut a.extra) {
            Value::Object(mut fields) => {
                fields.insert("summary".into(), summary);
                Value::Object(fields)
            }
            Value::Null => json!({ "summary": summary }),
            other => json!({ "summary": summary, "value": other }),
        };
        a
    }

    /// Whether an operator cares to read this event in the log: a chain rebuild only
    /// repeats what the change that caused it says (and boot makes one per event), and a
    /// change applied from another process is that process's entry already.
    pub fn worth_recording(ev: &LifecycleEvent) -> bool {
        !matches!(
            ev,
            LifecycleEvent::ChainRebuilt { .. }
                // Every process sharing the database writes to the same log: the process
                // that made the change records it; the others applying it would repeat it.
                | LifecycleEvent::StatusChanged {
                    cause: Cause::External,
                    ..
                }
        )
    }

    fn from_event_fields(ev: &LifecycleEvent) -> NewActivity {
        match ev {
            LifecycleEvent::Registered { record, replaced } => {
                let mut a = NewActivity::new(
                    ActivityKind::Plugin,
                    if *replaced { "edit" } else { "add" },
                    ActivityStatus::Info,
                    Some(&record.name),
                    json!({ "event": record.event, "priority": record.priority, "depends": record.depends, "status": record.status }),
                );
                a.section_id = Some(record.event.clone());
                a
            }
            LifecycleEvent::StatusChanged {
                plugin,
                event,
                from,
                to,
                cause,
            } => {
                let status = match cause {
                    Cause::FailureThreshold { .. } => ActivityStatus::Error,
                    Cause::DependencyDown { .. } => ActivityStatus::Warning,
                    _ => ActivityStatus::Info,
                };
                let mut a = NewActivity::new(
                    ActivityKind::Plugin,
                    "edit",
                    status,
                    Some(plugin),
                    json!({ "from": from, "to": to, "cause": cause }),
                );
                a.section_id = Some(event.clone());
                a
            }
            LifecycleEvent::Deleted { plugin, event } => {
                let mut a = NewActivity::new(
                    ActivityKind::Plugin,
                    "delete",
                    ActivityStatus::Info,
                    Some(plugin),
                    Value::Null,
                );
                a.section_id = Some(event.clone());
                a
            }
            LifecycleEvent::Undeleted { plugin, event } => {
                let mut a = NewActivity::new(
                    ActivityKind::Plugin,
                    "edit",
                    ActivityStatus::Info,
                    Some(plugin),
                    json!({ "code": "loaded again" }),
                );
                a.section_id = Some(event.clone());
                a
            }
            LifecycleEvent::Unregistered { plugin, event } => {
                let mut a = NewActivity::new(
                    ActivityKind::Plugin,
                    "destroy",
                    ActivityStatus::Info,
                    Some(plugin),
                    Value::Null,
                );
                a.section_id = Some(event.clone());
                a
            }
            LifecycleEvent::ChainRebuilt { event, plugins } => {
                let mut a = NewActivity::new(
                    ActivityKind::Event,
                    "edit",
                    ActivityStatus::Report,
                    None,
                    json!({ "chain": plugins }),
                );
                a.priority = ActivityPriority::Low;
                a.section_id = Some(event.clone());
                a
            }
            LifecycleEvent::PluginFailed {
                plugin,
                event,
                failure,
                consecutive,
            } => {
                let status = if failure.kind == plugboard_engine::FailureKind::Panic {
                    ActivityStatus::Throw
                } else {
                    ActivityStatus::Error
                };
                let mut a = NewActivity::new(
                    ActivityKind::Plugin,
                    "call",
                    status,
                    Some(plugin),
                    json!({ "failure": failure, "consecutive": consecutive }),
                );
                a.section_id = Some(event.clone());
                a
            }
            LifecycleEvent::OperationFailed { op, plugin, error } => NewActivity::new(
                ActivityKind::Plugin,
                op.as_str(),
                ActivityStatus::Error,
                plugin.as_deref(),
                json!({ "error": error }),
            ),
            LifecycleEvent::CallbackOverridden {
                plugin,
                event,
                op,
                reason,
            } => {
                let mut a = NewActivity::new(
                    ActivityKind::Plugin,
                    op.as_str(),
                    ActivityStatus::Warning,
                    Some(plugin),
                    json!({ "callback_failed": reason, "went_ahead": true }),
                );
                a.section_id = Some(event.clone());
                a
            }
            LifecycleEvent::MissingCode { plugin, event } => {
                let mut a = NewActivity::new(
                    ActivityKind::Plugin,
                    "read",
                    ActivityStatus::Warning,
                    Some(plugin),
                    json!({ "missing_code": true }),
                );
                a.section_id = Some(event.clone());
                a
            }
            LifecycleEvent::BackgroundDropped { event, total } => {
                let mut a = NewActivity::new(
                    ActivityKind::Event,
                    "call",
                    ActivityStatus::Warning,
                    None,
                    json!({ "background_dropped": total }),
                );
                a.section_id = Some(event.clone());
                a
            }
            _ => NewActivity::new(
                ActivityKind::Event,
                "edit",
                ActivityStatus::Report,
                None,
                Value::Null,
            ),
        }
    }
}

/// Filters and a page of the activity log, newest first.
#[derive(Clone, Debug, Default)]
pub struct ActivityQuery {
    /// Only this kind.
    pub kind: Option<ActivityKind>,
    /// Only this status.
    pub status: Option<ActivityStatus>,
    /// Only this subject.
    pub subject: Option<String>,
    /// Only entries about this event: its plugins' entries and its calls.
    pub event: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only entries before this time.
    pub until: Option<OffsetDateTime>,
    /// Only entries older than this id (the next page after a page ending at it).
    pub before_id: Option<i64>,
    /// At most this many (default 50, at most 1000).
    pub limit: Option<u32>,
}

/// Settings of the activity writer.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Entries that may wait to be written; past that, new ones are dropped and counted.
    pub capacity: usize,
    /// Entries written per transaction at most.
    pub batch: usize,
    /// Keep at most this many rows (oldest go first).
    pub max_rows: Option<u64>,
    /// Keep rows at most this long.
    pub max_age: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            capacity: 16_384,
            batch: 512,
            max_rows: Some(1_000_000),
            max_age: Some(Duration::from_secs(90 * 24 * 3600)),
        }
    }
}

/// The running activity writer. Dropping it stops taking entries; the writer then drains
/// what is queued while the store lives. Call [`ActivityLog::flush`] first to be sure
/// everything recorded so far is written (lifecycle events still on their way from the
/// engine are not waited for by a drop).
pub struct ActivityLog {
    tx: mpsc::Sender<NewActivity>,
    counters: Arc<Counters>,
    /// The task forwarding lifecycle events, if any.
    forwarder: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl ActivityLog {
    /// Queues an entry; never blocks. Returns false if it was dropped (queue full).
    pub fn record(&self, entry: NewActivity) -> bool {
        enqueue(&self.tx, &self.counters, entry)
    }

    /// Entries dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Relaxed)
    }

    /// Entries written so far.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Relaxed)
    }

    /// Waits until everything queued so far is written (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut quiet = 0;
        while std::time::Instant::now() < deadline {
            let c = &self.counters;
            let done = c.written.load(Relaxed) + c.failed.load(Relaxed);
            if done >= c.queued.load(Relaxed) {
                // Lifecycle events reach the queue through a forwarding task: wait for two
                // quiet polls so that what was just published has arrived too.
                quiet += 1;
                if quiet >= 3 {
                    return true;
                }
            } else {
                quiet = 0;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for ActivityLog {
    fn drop(&mut self) {
        // Stop taking new entries; the writer drains what is queued, then ends when the
        // last sender (this one) is gone.
        if let Some(t) = self.forwarder.take() {
            t.abort();
        }
    }
}

fn enqueue(tx: &mpsc::Sender<NewActivity>, c: &Counters, entry: NewActivity) -> bool {
    match tx.try_send(entry) {
        Ok(()) => {
            c.queued.fetch_add(1, Relaxed);
            true
        }
        Err(_) => {
            c.dropped.fetch_add(1, Relaxed);
            false
        }
    }
}

/// How long the writer holds a batch while the database is unreachable.
const OUTAGE: std::time::Duration = std::time::Duration::from_secs(120);

/// How long one batch write may take (a stalled server or a dead peer would otherwise hold
/// the writer forever).
const WRITE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

async fn insert(db: &Db, batch: &[NewActivity], now: OffsetDateTime) -> Result<(), StoreError> {
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        for a in batch {
            sqlx::query(
                "INSERT INTO activities (kind, action, priority, status, subject, section_id, extra, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(a.kind.as_str())
            .bind(&a.action)
            .bind(a.priority.as_str())
            .bind(a.status.as_str())
            .bind(&a.subject)
            .bind(&a.section_id)
            .bind(Json(&a.extra))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    });
    Ok(())
}

pub(crate) async fn prune(
    db: Db,
    max_rows: Option<u64>,
    max_age: Option<Duration>,
) -> Result<u64, StoreError> {
    let mut removed = 0;
    if let Some(age) = max_age {
        let cutoff = OffsetDateTime::now_utc() - age;
        removed += on_db!(&db, |pool| {
            sqlx::query("DELETE FROM activities WHERE created_at < $1")
                .bind(cutoff)
                .execute(pool)
                .await?
                .rows_affected()
        });
    }
    if let Some(max) = max_rows {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        removed += on_db!(&db, |pool| {
            sqlx::query("DELETE FROM activities WHERE id <= (SELECT id FROM activities ORDER BY id DESC LIMIT 1 OFFSET $1)")
                .bind(max)
                .execute(pool)
                .await?
                .rows_affected()
        });
    }
    Ok(removed)
}

async fn query(db: Db, q: ActivityQuery) -> Result<Vec<Activity>, StoreError> {
    let limit = i64::from(q.limit.unwrap_or(50).clamp(1, 1000));
    // Filters are optional parameters (NULL means "any"), so one statement serves all.
    let sql = "SELECT id, kind, action, priority, status, subject, section_id, extra, created_at FROM activities \
               WHERE ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR subject = $3) \
               AND ($4 IS NULL OR created_at >= $4) AND ($5 IS NULL OR created_at < $5) AND ($6 IS NULL OR id < $6) \
               AND ($8 IS NULL OR section_id = $8 OR (kind = 'event' AND subject = $8)) \
               ORDER BY id DESC LIMIT $7";
    let rows = on_db!(&db, |pool| {
        let rows = sqlx::query(sql)
            .bind(q.kind.map(ActivityKind::as_str))
            .bind(q.status.map(ActivityStatus::as_str))
            .bind(&q.subject)
            .bind(q.since.map(|t| t.to_offset(time::UtcOffset::UTC)))
            .bind(q.until.map(|t| t.to_offset(time::UtcOffset::UTC)))
            .bind(q.before_id)
            .bind(limit)
            .bind(&q.event)
            .fetch_all(pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Json(extra): Json<Value> = row.try_get("extra")?;
            out.push(Activity {
                id: row.try_get("id")?,
                entry: NewActivity {
                    kind: row.try_get::<&str, _>("kind")?.parse()?,
                    action: row.try_get("action")?,
                    priority: row.try_get::<&str, _>("priority")?.parse()?,
                    status: row.try_get::<&str, _>("status")?.parse()?,
                    subject: row.try_get("subject")?,
                    section_id: row.try_get("section_id")?,
                    extra,
                },
                created_at: row.try_get("created_at")?,
            });
        }
        out
    });
    Ok(rows)
}

impl Store {
    /// Starts the activity writer, recording every lifecycle event of `engine` (if given).
    pub fn activity_log(&self, engine: Option<&Engine>, config: LogConfig) -> ActivityLog {
        let (tx, mut rx) = mpsc::channel::<NewActivity>(config.capacity.max(1));
        let counters = Arc::new(Counters::default());
        let db = self.db().clone();
        let c = counters.clone();
        let batch = config.batch.max(1);
        let (max_rows, max_age) = (config.max_rows, config.max_age);
        let _writer = self.runtime().spawn(async move {
            let mut buf = Vec::with_capacity(batch);
            let mut reported_dropped = 0;
            let mut batches = 0u64;
            loop {
                if rx.recv_many(&mut buf, batch).await == 0 {
                    break;
                }
                // The dropped count is itself recorded, once per change.
                let dropped = c.dropped.load(Relaxed);
                if dropped > reported_dropped {
                    buf.push(NewActivity::new(
                        ActivityKind::Activity,
                        "report",
                        ActivityStatus::Warning,
                        None,
                        json!({ "dropped_total": dropped, "dropped_since_last_report": dropped - reported_dropped }),
                    ));
                    c.queued.fetch_add(1, Relaxed);
                    reported_dropped = dropped;
                }
                let n = buf.len() as u64;
                // While the database is away the batch waits (and the queue behind it
                // fills, counting what it cannot hold): an outage of a minute or two
                // loses no entry.
                let mut outage = None;
                loop {
                    let write = insert(&db, &buf, OffsetDateTime::now_utc());
                    let written = tokio::time::timeout(WRITE_DEADLINE, write)
                        .await
                        .unwrap_or(Err(StoreError::Timeout { after: WRITE_DEADLINE }));
                    match written {
                        Ok(()) => {
                            c.written.fetch_add(n, Relaxed);
                        }
                        Err(e) if e.is_unavailable() && outage.is_none_or(|t: std::time::Instant| t.elapsed() < OUTAGE) => {
                            if outage.is_none() {
                                tracing::warn!(error = %e, entries = n, "activity log: the database is away; holding entries");
                                outage = Some(std::time::Instant::now());
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                            continue;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, entries = n, "activity log write failed");
                            c.failed.fetch_add(n, Relaxed);
                        }
                    }
                    break;
                }
                buf.clear();
                batches += 1;
                                if batches.is_multiple_of(64)
                    && let Err(e) = prune(db.clone(), max_rows, max_age).await {
                        tracing::warn!(error = %e, "activity retention failed");
                    }
            }
        });
        let mut forwarder = None;
        if let Some(engine) = engine {
            let mut events = engine.subscribe();
            let (tx, c) = (tx.clone(), counters.clone());
            forwarder = self.runtime().spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(ev) if NewActivity::worth_recording(&ev) => {
                            enqueue(&tx, &c, NewActivity::from_event(&ev));
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            c.dropped.fetch_add(n, Relaxed);
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
        }
        ActivityLog {
            tx,
            counters,
            forwarder,
        }
    }

    /// Reads the activity log, newest first.
    pub fn activities(&self, q: &ActivityQuery) -> Result<Vec<Activity>, StoreError> {
        let q = q.clone();
        self.run(move |db| query(db, q))
    }

    /// Applies retention now; returns the rows removed.
    pub fn prune_activities(
        &self,
        max_rows: Option<u64>,
        max_age: Option<Duration>,
    ) -> Result<u64, StoreError> {
        self.run(move |db| prune(db, max_rows, max_age))
    }
}
