//! Following changes made by other processes sharing the database: `LISTEN/NOTIFY` on
//! PostgreSQL, `PRAGMA data_version` on SQLite. A change reloads the records into the
//! engine, which rebuilds its chains; the settings cache is cleared.

use std::time::Duration;

use plugboard_engine::Engine;
use sqlx::postgres::PgListener;
use sqlx::{ConnectOptions, Connection};

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

async fn reload(store: &Store, engine: &Engine) {
    store.inner.settings.clear();
    let (store, engine) = (store.clone(), engine.clone());
    match tokio::task::spawn_blocking(move || store.sync(&engine)).await {
        Ok(Ok(true)) => tracing::debug!("applied changes from another process"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not apply changes from another process"),
        Err(e) => tracing::warn!(error = %e, "sync task failed"),
    }
}

impl Store {
    /// Starts following changes made by other processes, applying them to `engine`.
    pub fn watch(&self, engine: &Engine) -> Watch {
        let (store, engine) = (self.clone(), engine.clone());
        let task = self.runtime().spawn(async move {
            match store.db().clone() {
                Db::Sqlite(_, opts) => {
                    let mut conn = loop {
                        match (*opts).clone().connect().await {
                            Ok(c) => break c,
                            Err(e) => {
                                tracing::warn!(error = %e, "watch: cannot connect; retrying");
                                tokio::time::sleep(POLL * 5).await;
                            }
                        }
                    };
                    let mut last: Option<i64> = None;
                    loop {
                        match sqlx::query_scalar::<_, i64>("PRAGMA data_version").fetch_one(&mut conn).await {
                            Ok(v) => {
                                if last.is_some_and(|l| l != v) {
                                    reload(&store, &engine).await;
                                }
                                last = Some(v);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "watch: data_version failed; reconnecting");
                                let _ = conn.ping().await;
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
                    reload(&store, &engine).await;
                    loop {
                        match listener.recv().await {
                            Ok(_) => reload(&store, &engine).await,
                            Err(e) => {
                                tracing::warn!(error = %e, "watch: connection lost; relistening");
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
