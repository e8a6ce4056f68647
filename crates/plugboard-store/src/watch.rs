//! Following changes made by other processes sharing the database: `LISTEN/NOTIFY` on
//! PostgreSQL, `PRAGMA data_version` on SQLite. A change reloads the records into the
//! engine, which rebuilds its chains; the settings cache is cleared.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use plugboard_engine::Engine;
use sqlx::ConnectOptions;
use sqlx::postgres::PgListener;

use crate::Store;
use crate::db::Db;
use crate::records::CHANNEL;

/// How often SQLite is polled for commits by other connections.
const POLL: Duration = Duration::from_millis(200);

/// How soon a lost connection or a failed reload is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// How long the listener may be silent before it is asked whether it is still there.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// A running watcher; dropping it stops watching.
pub struct Watch {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Applies other processes' changes; returns whether that worked (if not, the caller
/// tries again on its next round rather than waiting for the next change).
async fn reload(store: &Store, engine: &Engine) -> bool {
    store.inner.settings.clear();
    let (store, engine) = (store.clone(), engine.clone());
    match tokio::task::spawn_blocking(move || {
        let r = store.sync(&engine);
        // Packages, grants and settings are the installer's to apply: wake it.
        store.inner.changes.bump();
        r
    })
    .await
    {
        Ok(Ok(changed)) => {
            if changed {
                tracing::debug!("applied changes from another process");
            }
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not apply changes from another process; retrying");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "sync task failed; retrying");
            false
        }
    }
}

impl Store {
    /// Starts following changes made by other processes, applying them to `engine`.
    pub fn watch(&self, engine: &Engine) -> Watch {
        let (store, engine) = (self.clone(), engine.clone());
        let task = self.runtime().spawn(async move {
            match store.db().clone() {
                Db::Sqlite(_, opts) => {
                    // `data_version` (per connection) moves on every commit by anyone; the
                    // generation row only on changes other processes must apply.
                                        let mut conn: Option<sqlx::SqliteConnection> = None;
                    let mut last_version: Option<i64> = None;
                    let mut last_generation = -1;
                    let mut pending = false;
                    loop {
                        if conn.is_none() {
                            match (*opts).clone().connect().await {
                                Ok(c) => conn = Some(c),
                                Err(e) => tracing::warn!(error = %e, "watch: cannot connect; retrying"),
                            }
                        }
                        if let Some(c) = conn.as_mut() {
                                                        match sqlx::query_scalar::<_, i64>("PRAGMA data_version").fetch_one(&mut *c).await {
                                Ok(v) if last_version == Some(v) && !pending => {}
                                Ok(v) => {
                                    last_version = Some(v);
                                    match crate::records::generation(store.db().clone()).await {
                                                                                Ok(g) if g == last_generation && !pending => {}
                                        Ok(g) => {
                                            // The first pass applies whatever changed between
                                            // the engine's load and this watcher's start; a
                                            // failed reload is retried on the next round.
                                            pending = !reload(&store, &engine).await;
                                            last_generation = g;
                                        }
                                        Err(e) => tracing::warn!(error = %e, "watch: cannot read the generation"),
                                    }
                                }
                                                                Err(e) => {
                                    tracing::warn!(error = %e, "watch: data_version failed; reconnecting");
                                    // data_version compares only within one connection.
                                    conn = None;
                                    last_version = None;
                                }
                            }
                        }
                        tokio::time::sleep(POLL).await;
                    }
                }
                Db::Postgres(pool) => {
                    let health = &store.inner.health;
                    // Whether the connection was lost since the last successful listen:
                    // notifications sent meanwhile are gone, so the reload that follows
                    // the next listen is what catches up (a resync).
                    let mut lost = false;
                    let mut listened = false;
                    loop {
                        let mut listener = match PgListener::connect_with(&pool).await {
                            Ok(l) => l,
                            Err(e) => {
                                health.down(&format!("cannot connect: {e}"));
                                // Only a connection that was there can be lost.
                                lost = listened;
                                tokio::time::sleep(RETRY).await;
                                continue;
                            }
                        };
                        if let Err(e) = listener.listen(CHANNEL).await {
                            tracing::warn!(error = %e, "watch: LISTEN failed; retrying");
                            lost = listened;
                            tokio::time::sleep(RETRY).await;
                            continue;
                        }
                        health.up();
                        listened = true;
                        if lost {
                            health.reconnects.fetch_add(1, Relaxed);
                            tracing::info!("watch: listening again; reloading what changed meanwhile");
                        }
                        // Anything missed while (re)connecting.
                        let mut pending = !reload(&store, &engine).await;
                        if lost && !pending {
                            health.resyncs.fetch_add(1, Relaxed);
                            lost = false;
                        }
                        loop {
                            // A failed reload is retried shortly, not at the next change.
                            let next = if pending {
                                match tokio::time::timeout(RETRY / 2, listener.try_recv()).await {
                                    Err(_) => Ok(Some(())),
                                    Ok(r) => r.map(|n| n.map(|_| ())),
                                }
                            } else {
                                // A socket that died silently (a host gone, a dropped
                                // NAT entry) would never wake `try_recv`: ask the
                                // connection something now and then.
                                match tokio::time::timeout(HEARTBEAT, listener.try_recv()).await {
                                    Ok(r) => r.map(|n| n.map(|_| ())),
                                    Err(_) => {
                                        let ping = sqlx::query("SELECT 1").execute(&mut listener);
                                        match tokio::time::timeout(RETRY * 20, ping).await {
                                            Ok(Ok(_)) => continue,
                                            Ok(Err(e)) => Err(e),
                                            Err(_) => Ok(None),
                                        }
                                    }
                                }
                            };
                            match next {
                                Ok(Some(())) => {
                                    pending = !reload(&store, &engine).await;
                                    if lost && !pending {
                                        health.resyncs.fetch_add(1, Relaxed);
                                        lost = false;
                                    }
                                }
                                // `try_recv` reports a lost connection (Ok(None)) and would
                                // reconnect on its next call; a fresh listener instead,
                                // counted, then a full reload.
                                Ok(None) => {
                                    tracing::warn!("watch: connection to the database lost; reconnecting");
                                    health.down("the watcher's connection was lost");
                                    lost = true;
                                    break;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "watch: listener failed; reconnecting");
                                    health.down(&format!("listener failed: {e}"));
                                    lost = true;
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        });
        Watch { task }
    }
}
