//! The live stream (`GET /api/stream`, Server-Sent Events): `change` for every engine
//! lifecycle event (including changes made by other processes, which reach this engine
//! through the store's watcher), `install` for download progress, `activity` for what the
//! server records itself.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use plugboard_engine::LifecycleEvent;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::Shared;

/// One message of the stream: its SSE event name and JSON data.
#[derive(Clone, Debug, Serialize)]
pub struct StreamEvent {
    /// `change`, `install`, `activity` or `outdated`.
    pub kind: &'static str,
    /// The data.
    pub data: Value,
}

/// One Server-Sent Event as it goes over the wire, for the OpenAPI document: the stream
/// is a sequence of them.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct SseMessage {
    /// Its name: `change`, `install`, `activity`, `outdated` or `lagged`.
    event: String,
    /// Its JSON data, as text.
    data: String,
}

/// Fans messages out to every connected stream.
pub(crate) struct Hub {
    tx: broadcast::Sender<StreamEvent>,
}

impl Hub {
    pub(crate) fn new() -> Self {
        Hub {
            tx: broadcast::channel(1024).0,
        }
    }

    /// Sends to every listener (none listening is fine).
    pub(crate) fn publish(&self, kind: &'static str, data: Value) {
        let _ = self.tx.send(StreamEvent { kind, data });
    }

    fn subscribe(&self) -> broadcast::Receiver<StreamEvent> {
        self.tx.subscribe()
    }
}

#[cfg(feature = "packages")]
/// Polls the package index on a schedule; when the set of newer versions changes, publishes
/// it as an `outdated` event (the dashboard's "update available").
pub(crate) async fn poll_index(state: Shared, every: std::time::Duration) {
    let mut last: Option<Value> = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(installer) = state.installer.clone() else {
            return;
        };
        if installer.config().index.is_none() {
            continue;
        }
        let found = tokio::task::spawn_blocking(move || installer.outdated(None)).await;
        match found {
            Ok(Ok(list)) => {
                let now = serde_json::to_value(&list).unwrap_or(Value::Null);
                if last.as_ref() != Some(&now) {
                    tracing::info!(updates = list.len(), "package index checked");
                    state.hub.publish("outdated", now.clone());
                    last = Some(now);
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "package index check failed"),
            Err(e) => tracing::warn!(error = %e, "package index check panicked"),
        }
    }
}

/// Tells the stream's clients when the activity log has new entries, written by any
/// process sharing the database (this server's batching writer, the CLI, other hosts):
/// every second while anyone listens, the newest entry's id is compared with the last one
/// announced. A `change` comes before its entry is written; an `activity` comes after, so
/// a page that reloads on it finds the entry.
pub(crate) async fn follow_activity(state: Shared) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<i64> = None;
    loop {
        tick.tick().await;
        if state.hub.tx.receiver_count() == 0 && last.is_some() {
            continue;
        }
        let store = state.store.clone();
        let newest = tokio::task::spawn_blocking(move || {
            store.activities(&plugboard_store::ActivityQuery {
                limit: Some(1),
                ..Default::default()
            })
        })
        .await;
        let Ok(Ok(newest)) = newest else {
            // An outage is reported by /health; the next tick asks again.
            continue;
        };
        let Some(entry) = newest.into_iter().next() else {
            last = Some(0);
            continue;
        };
        if let Some(seen) = last
            && entry.id > seen
        {
            let summary = entry
                .entry
                .extra
                .get("summary")
                .cloned()
                .unwrap_or(Value::Null);
            state.hub.publish(
                "activity",
                serde_json::json!({
                    "id": entry.id,
                    "kind": entry.entry.kind,
                    "subject": entry.entry.subject,
                    "summary": summary,
                }),
            );
        }
        last = Some(last.unwrap_or(0).max(entry.id));
    }
}

/// Forwards the engine's lifecycle events to the hub and the metrics until aborted.
pub(crate) async fn forward(state: Shared) {
    let mut events = state.engine.subscribe();
    loop {
        match events.recv().await {
            Ok(ev) => {
                if let LifecycleEvent::PluginFailed {
                    plugin,
                    event,
                    failure,
                    ..
                } = &ev
                {
                    state.metrics.failure(plugin, event, failure.kind.as_str());
                }
                match serde_json::to_value(&ev) {
                    Ok(data) => state.hub.publish("change", data),
                    Err(e) => tracing::warn!(error = %e, "cannot serialise a lifecycle event"),
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                state.metrics.lagged(n);
                state
                    .hub
                    .publish("lagged", serde_json::json!({ "missed": n }));
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// `GET /api/stream`.
#[utoipa::path(
    get,
    path = "/api/stream",
    tag = "stream",
    responses((status = 200, description = "Server-Sent Events: `change` (a lifecycle event), `install` (`{url, received, total}`), `activity` (new entries were written: `{id, kind, subject, summary}` of the newest), `lagged` (`{missed}`)", content_type = "text/event-stream", body = SseMessage))
)]
pub(crate) async fn stream(
    State(state): State<Shared>,
    headers: axum::http::HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // The route is behind authentication; a browser's stream belongs to its session.
    let session = crate::api::authenticate(&state, &headers)
        .ok()
        .and_then(|(_, id)| id);
    let rx = state.hub.subscribe();
    let rotations = state.token.rotations();
    let check = tokio::time::interval(Duration::from_secs(1));
    let events = futures_util::stream::unfold(
        (rx, rotations, check, state, session),
        |(mut rx, mut rotations, mut check, state, session)| async move {
            let event = loop {
                tokio::select! {
                    r = rx.recv() => break match r {
                        Ok(m) => Event::default()
                            .event(m.kind)
                            .json_data(&m.data)
                            .unwrap_or_else(|_| Event::default().event(m.kind)),
                        Err(broadcast::error::RecvError::Lagged(n)) => Event::default()
                            .event("lagged")
                            .data(format!("{{\"missed\":{n}}}")),
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    // The admin token was rotated: whatever opened this stream is revoked.
                    _ = rotations.changed() => return None,
                    _ = check.tick() => {
                        // A session that ended (logout, expiry) ends its stream.
                        if session.as_deref().is_some_and(|id| state.sessions.get(id).is_none()) {
                            return None;
                        }
                    }
                }
            };
            Some((Ok(event), (rx, rotations, check, state, session)))
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
