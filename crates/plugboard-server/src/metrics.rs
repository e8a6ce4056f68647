//! `GET /metrics`: the Prometheus text format, written by hand.
//!
//! Calls and timings come from the engine's per-plugin profile (profiling is turned on for
//! every event at start unless disabled): a latency histogram per plugin (the engine's
//! buckets, in seconds as Prometheus prefers), plus the longest call as a gauge.
//! Failures are counted from the engine's `PluginFailed` lifecycle events while the server
//! runs; installs from the installs this server performed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use plugboard_core::Status;

use crate::Shared;

/// Counters the server keeps itself.
#[derive(Default)]
pub(crate) struct Metrics {
    /// (plugin, event, kind) → failures.
    failures: Mutex<BTreeMap<(String, String, String), u64>>,
    /// (action, result) → installer operations.
    installs: Mutex<BTreeMap<(String, String), u64>>,
    /// Lifecycle events the server missed because it fell behind.
    lagged: AtomicU64,
}

impl Metrics {
    pub(crate) fn failure(&self, plugin: &str, event: &str, kind: &str) {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((plugin.to_owned(), event.to_owned(), kind.to_owned()))
            .or_default() += 1;
    }

    /// Counts an installer operation (`install`, `upgrade`, `rollback`, `uninstall`…) and
    /// whether it succeeded (`ok`) or why not (an error code).
    #[cfg(feature = "packages")]
    pub(crate) fn install(&self, action: &str, result: &str) {
        let mut m = self.installs.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((action.to_owned(), result.to_owned())).or_default() += 1;
    }

    pub(crate) fn lagged(&self, n: u64) {
        self.lagged.fetch_add(n, Relaxed);
    }
}

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new().route("/metrics", get(metrics))
}

/// A label value, escaped.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One histogram's lines: the engine's cumulative buckets (microseconds) in seconds.
fn histogram(out: &mut String, name: &str, labels: &str, buckets: &[u64], sum_us: f64, count: u64) {
    for (i, n) in buckets.iter().enumerate() {
        let le = plugboard_engine::LATENCY_BUCKETS_US
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |us| format!("{}", us / 1e6));
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum_us / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

fn status_name(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{s:?}").to_lowercase())
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub(crate) async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    let engine = &state.engine;
    let mut out = String::new();

    let mut profiles = Vec::new();
    for event in engine.events() {
        if let Ok(p) = engine.profile(&event.name) {
            profiles.push((event.name.to_string(), p));
        }
    }
    family(
        &mut out,
        "plugboard_event_calls_total",
        "counter",
        "Calls that ran an event's chain (timed calls of its first plugin; needs profiling).",
    );
    for (event, p) in &profiles {
        let calls = p
            .iter()
            .find(|s| s.position == 0)
            .map_or(0, |first| first.calls);
        let _ = writeln!(
            out,
            "plugboard_event_calls_total{{event=\"{}\"}} {calls}",
            esc(event)
        );
    }
    family(
        &mut out,
        "plugboard_event_latency_seconds",
        "histogram",
        "Time per call of each event's whole chain (needs profiling).",
    );
    for event in engine.events() {
        let Ok(whole) = engine.event_profile(&event.name) else {
            continue;
        };
        let labels = format!("event=\"{}\"", esc(&whole.event));
        histogram(
            &mut out,
            "plugboard_event_latency_seconds",
            &labels,
            &whole.buckets,
            whole.sum_us,
            whole.calls,
        );
    }
    family(
        &mut out,
        "plugboard_event_errors_total",
        "counter",
        "Calls of each event that ended in an error (needs profiling).",
    );
    for event in engine.events() {
        if let Ok(whole) = engine.event_profile(&event.name) {
            let _ = writeln!(
                out,
                "plugboard_event_errors_total{{event=\"{}\"}} {}",
                esc(&whole.event),
                whole.errors
            );
        }
    }
    family(
        &mut out,
        "plugboard_plugin_calls_total",
        "counter",
        "Timed calls of each plugin in its event's chain (needs profiling).",
    );
    for (event, p) in &profiles {
        for s in p {
            let _ = writeln!(
                out,
                "plugboard_plugin_calls_total{{event=\"{}\",plugin=\"{}\"}} {}",
                esc(event),
                esc(&s.plugin),
                s.calls
            );
        }
    }
    family(
        &mut out,
        "plugboard_plugin_latency_seconds",
        "histogram",
        "Time per call of each plugin in its event's chain (needs profiling).",
    );
    for (event, p) in &profiles {
        for s in p {
            let labels = format!("event=\"{}\",plugin=\"{}\"", esc(event), esc(&s.plugin));
            histogram(
                &mut out,
                "plugboard_plugin_latency_seconds",
                &labels,
                &s.buckets,
                s.sum_us,
                s.calls,
            );
        }
    }
    family(
        &mut out,
        "plugboard_plugin_latency_max_microseconds",
        "gauge",
        "Longest call of each plugin.",
    );
    for (event, p) in &profiles {
        for s in p {
            let _ = writeln!(
                out,
                "plugboard_plugin_latency_max_microseconds{{event=\"{}\",plugin=\"{}\"}} {}",
                esc(event),
                esc(&s.plugin),
                s.max_us
            );
        }
    }

    let plugins = engine.plugins();
    family(
        &mut out,
        "plugboard_plugin_failures_total",
        "counter",
        "Failures of each plugin since registration (all kinds).",
    );
    for p in &plugins {
        let _ = writeln!(
            out,
            "plugboard_plugin_failures_total{{event=\"{}\",plugin=\"{}\"}} {}",
            esc(&p.record.event),
            esc(&p.record.name),
            p.failures
        );
    }
    family(
        &mut out,
        "plugboard_failures_by_kind_total",
        "counter",
        "Plugin failures seen by this server, by kind (panic, trap, timeout, …).",
    );
    {
        let m = state
            .metrics
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for ((plugin, event, kind), n) in m.iter() {
            let _ = writeln!(
                out,
                "plugboard_failures_by_kind_total{{event=\"{}\",plugin=\"{}\",kind=\"{}\"}} {n}",
                esc(event),
                esc(plugin),
                esc(kind)
            );
        }
    }
    family(&mut out, "plugboard_plugins", "gauge", "Plugins by status.");
    let mut by_status: BTreeMap<String, u64> = [
        Status::Registered,
        Status::Started,
        Status::Restarted,
        Status::Stopped,
        Status::Held,
    ]
    .into_iter()
    .map(|s| (status_name(s), 0))
    .collect();
    for p in &plugins {
        *by_status.entry(status_name(p.record.status)).or_default() += 1;
    }
    for (status, n) in &by_status {
        let _ = writeln!(out, "plugboard_plugins{{status=\"{}\"}} {n}", esc(status));
    }
    family(
        &mut out,
        "plugboard_installs_total",
        "counter",
        "Installer operations performed through this server, by action and result.",
    );
    {
        let m = state
            .metrics
            .installs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for ((action, result), n) in m.iter() {
            let _ = writeln!(
                out,
                "plugboard_installs_total{{action=\"{}\",result=\"{}\"}} {n}",
                esc(action),
                esc(result)
            );
        }
    }
    family(
        &mut out,
        "plugboard_background_dropped_total",
        "counter",
        "Fire-and-forget calls dropped because the background queue was full.",
    );
    let _ = writeln!(
        out,
        "plugboard_background_dropped_total {}",
        engine.background_dropped()
    );
    family(
        &mut out,
        "plugboard_activity_dropped_total",
        "counter",
        "Activity entries of this server dropped because the writer could not keep up.",
    );
    let _ = writeln!(
        out,
        "plugboard_activity_dropped_total {}",
        state.log.dropped()
    );
    family(
        &mut out,
        "plugboard_stream_lagged_total",
        "counter",
        "Lifecycle events the server missed because it fell behind.",
    );
    let _ = writeln!(
        out,
        "plugboard_stream_lagged_total {}",
        state.metrics.lagged.load(Relaxed)
    );
    let h = state.store.health();
    for (name, kind, help, value) in [
        (
            "plugboard_store_reachable",
            "gauge",
            "1 while the database answers the store's operations, 0 while it is unreachable (calls go on).",
            u64::from(h.reachable),
        ),
        (
            "plugboard_store_reconnects_total",
            "counter",
            "Times the connection that follows other hosts' changes was lost and made again.",
            h.reconnects,
        ),
        (
            "plugboard_store_resyncs_total",
            "counter",
            "Full reloads of the stored records after a reconnect (changes whose notification was lost).",
            h.resyncs,
        ),
        (
            "plugboard_store_timeouts_total",
            "counter",
            "Store operations abandoned at their deadline (PLUGBOARD_DB_TIMEOUT).",
            h.timeouts,
        ),
        (
            "plugboard_store_unavailable_total",
            "counter",
            "Store operations refused at once because the database was unreachable.",
            h.unavailable,
        ),
    ] {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    #[cfg(feature = "packages")]
    if let Some(installer) = &state.installer {
        family(
            &mut out,
            "plugboard_guest_log_lines_dropped_total",
            "counter",
            "Log lines of installed plugins dropped because a plugin wrote more than its budget a second.",
        );
        let _ = writeln!(
            out,
            "plugboard_guest_log_lines_dropped_total {}",
            installer.host().log_lines_dropped()
        );
        family(
            &mut out,
            "plugboard_emits_total",
            "counter",
            "Events fired by installed packages (the emit capability): queued, stopped at the depth limit (loops), refused.",
        );
        let emits = installer.emit_counts();
        for (outcome, n) in [
            ("queued", emits.queued),
            ("loop_stopped", emits.loops_stopped),
            ("refused", emits.refused),
        ] {
            let _ = writeln!(out, "plugboard_emits_total{{outcome=\"{outcome}\"}} {n}");
        }
        let counts = installer.http_counts();
        for (name, help, value) in [
            (
                "plugboard_plugin_http_requests_total",
                "Outbound HTTP requests of installed packages to granted origins.",
                (|c: &plugboard_installer::HttpCounts| c.requests) as fn(&_) -> u64,
            ),
            (
                "plugboard_plugin_http_denied_total",
                "Outbound HTTP requests refused: origin or address not granted, or no `http` capability.",
                |c| c.denied,
            ),
            (
                "plugboard_plugin_http_failures_total",
                "Outbound HTTP requests that failed (connection, TLS, timeout, body cap, protocol).",
                |c| c.failures,
            ),
            (
                "plugboard_plugin_http_sent_bytes_total",
                "Request body bytes installed packages sent.",
                |c| c.bytes_sent,
            ),
            (
                "plugboard_plugin_http_received_bytes_total",
                "Response body bytes installed packages received.",
                |c| c.bytes_received,
            ),
        ] {
            family(&mut out, name, "counter", help);
            for (package, c) in &counts {
                let _ = writeln!(out, "{name}{{package=\"{}\"}} {}", esc(package), value(c));
            }
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
