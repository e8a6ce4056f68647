//! Following changes made by other processes sharing the database: `LISTEN/NOTIFY` on
//! PostgreSQL, `PRAGMA data_version` on SQLite. A change reloads the records into the
//! engine, which rebuilds its chains; the settings cache is cleared.

use std::time::Duration;

use plugboard_engine::Engine;
use sqlx::ConnectOptions;
use sqlx::postgres::PgListener;

use crate::Store;
use crate::db::Db;
use crate::records::CHANNEL;

/// How often SQLite is polled for commits by other connections.
const POLL: Duration = Duration::from_millis(200);

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
    match tokio::task::spawn_blocking(move || store.sync(&engine)).await {
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
                Db::Postgres(pool) => loop {
                    let mut listener = match PgListener::connect_with(&pool).await {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::warn!(error = %e, "watch: cannot listen; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    };
                    if let Err(e) = listener.listen(CHANNEL).await {
                        tracing::warn!(error = %e, "watch: LISTEN failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                                        // Anything missed while (re)connecting.
                    let mut pending = !reload(&store, &engine).await;
                    loop {
                        if pending {
                            // A failed reload is retried shortly, not at the next change.
                            match tokio::time::timeout(Duration::from_millis(500), listener.try_recv()).await {
                                Err(_) => {
                                    pending = !reload(&store, &engine).await;
                                    continue;
                                }
                                Ok(r) => {
                                    if matches!(r, Ok(Some(_)) | Ok(None)) {
                                        pending = !reload(&store, &engine).await;
                                    }
                                    if r.is_err() {
                                        break;
                                    }
                                    continue;
                                }
                            }
                        }
                        // `try_recv` reports a lost connection (Ok(None)) instead of
                        // reconnecting silently: notifications sent meanwhile are lost, so
                        // reload after it.
                        match listener.try_recv().await {
                            Ok(Some(_)) => pending = !reload(&store, &engine).await,
                            Ok(None) => {
                                tracing::warn!("watch: connection lost; reloading");
                                pending = !reload(&store, &engine).await;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "watch: listener failed; relistening");
                                break;
                            }
                        }
                    }
                },
            }
        });
        Watch { task }
    }
}
