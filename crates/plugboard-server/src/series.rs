//! `GET /api/series`: the last minutes of each event and plugin, for the dashboard's charts.
//!
//! The engine keeps cumulative counters only (calls, failures, a latency histogram per
//! plugin and per event). A sampler turns them into time series: every interval it reads
//! them, keeps the difference from the previous reading as one point (calls, failures,
//! p50 and p99 of the calls in that interval, interpolated within the histogram's buckets
//! as Prometheus' `histogram_quantile` does) and keeps the last [`POINTS`] points per
//! series in a ring. Every ring ends at the same sample, so that one timestamp and the
//! interval place every point.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use plugboard_engine::{Engine, LATENCY_BUCKETS_US};
use serde::Serialize;
use utoipa::ToSchema;

use crate::Shared;

/// Points kept per series: at the default interval of 2 s, the last 5 minutes.
pub(crate) const POINTS: usize = 150;

/// One interval of one series.
#[derive(Clone, Copy, Default)]
struct Point {
    calls: u64,
    failures: u64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
}

/// What a series is of.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Event(String),
    Plugin { event: String, plugin: String },
}

/// A counter reading: calls, failures, per-bucket counts (not cumulative).
#[derive(Clone, Default)]
struct Reading {
    calls: u64,
    failures: u64,
    buckets: Vec<u64>,
}

impl Reading {
    fn from_cumulative(calls: u64, failures: u64, cumulative: &[u64]) -> Reading {
        let mut prev = 0;
        let buckets = cumulative
            .iter()
            .map(|&c| {
                let b = c.saturating_sub(prev);
                prev = c;
                b
            })
            .collect();
        Reading {
            calls,
            failures,
            buckets,
        }
    }

    /// The interval's point: what was added since `before`. Counters only grow; one that
    /// went down was reset (a plugin unregistered and registered again), and counts from 0.
    fn since(&self, before: Option<&Reading>) -> Point {
        let before = match before {
            Some(b) if b.calls <= self.calls && b.failures <= self.failures => b,
            _ => &Reading::default(),
        };
        let delta: Vec<u64> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, &n)| n.saturating_sub(before.buckets.get(i).copied().unwrap_or(0)))
            .collect();
        Point {
            calls: self.calls - before.calls,
            failures: self.failures - before.failures,
            p50_us: quantile(&delta, 0.5),
            p99_us: quantile(&delta, 0.99),
        }
    }
}

/// The `q` quantile of per-bucket counts, in microseconds: linear within the bucket that
/// holds it (from the previous bound, or 0); in the +Inf bucket, the last finite bound.
/// `None` without any count.
fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let lo = if i == 0 {
                0.0
            } else {
                LATENCY_BUCKETS_US[i - 1]
            };
            let Some(&hi) = LATENCY_BUCKETS_US.get(i) else {
                return Some(lo);
            };
            return Some(lo + (hi - lo) * ((rank - below as f64) / n as f64).clamp(0.0, 1.0));
        }
        below += n;
    }
    LATENCY_BUCKETS_US.last().copied()
}

#[derive(Default)]
struct Inner {
    last: BTreeMap<Key, Reading>,
    rings: BTreeMap<Key, VecDeque<Point>>,
    /// Samples taken; rings are as long as this, up to [`POINTS`].
    samples: usize,
    /// When the last sample was taken, in milliseconds since the Unix epoch.
    end_ms: u64,
}

/// The rings of every series, filled by [`sample`].
#[derive(Default)]
pub(crate) struct Series {
    inner: Mutex<Inner>,
}

impl Series {
    /// Reads the engine's counters and appends one point to every series.
    pub(crate) fn sample(&self, engine: &Engine) {
        let mut now: BTreeMap<Key, Reading> = BTreeMap::new();
        for event in engine.events() {
            let name = event.name.to_string();
            let mut event_failures = 0;
            if let Ok(profile) = engine.profile(&name) {
                for p in profile {
                    // Failures are counted with or without profiling; calls are timed ones.
                    event_failures += p.failures;
                    now.insert(
                        Key::Plugin {
                            event: name.clone(),
                            plugin: p.plugin,
                        },
                        Reading::from_cumulative(p.calls, p.failures, &p.buckets),
                    );
                }
            }
            if let Ok(whole) = engine.event_profile(&name) {
                now.insert(
                    Key::Event(name),
                    Reading::from_cumulative(whole.calls, event_failures, &whole.buckets),
                );
            }
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let first = inner.samples == 0;
        inner.samples = (inner.samples + 1).min(POINTS);
        let len = inner.samples;
        for (key, reading) in &now {
            // The first reading only sets the baseline: what was counted before the
            // server started is not one interval's worth.
            let point = if first {
                Point::default()
            } else {
                reading.since(inner.last.get(key))
            };
            let ring = inner.rings.entry(key.clone()).or_default();
            ring.push_back(point);
            while ring.len() < len {
                ring.push_front(Point::default());
            }
            while ring.len() > len {
                ring.pop_front();
            }
        }
        // A series whose subject is gone ages out: empty points until nothing is left.
        inner.rings.retain(|key, ring| {
            if !now.contains_key(key) {
                ring.push_back(Point::default());
                while ring.len() > len {
                    ring.pop_front();
                }
            }
            now.contains_key(key) || ring.iter().any(|p| p.calls > 0 || p.failures > 0)
        });
        inner.last = now;
        inner.end_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    }

    fn view(&self, interval: Duration) -> SeriesView {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut view = SeriesView {
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            end_ms: inner.end_ms,
            points: inner.samples,
            capacity: POINTS,
            events: Vec::new(),
            plugins: Vec::new(),
        };
        for (key, ring) in &inner.rings {
            // Only series with something to draw: the page says "no calls" for the rest.
            if !ring.iter().any(|p| p.calls > 0 || p.failures > 0) {
                continue;
            }
            let line = Line {
                event: String::new(),
                plugin: None,
                calls: ring.iter().map(|p| p.calls).collect(),
                failures: ring.iter().map(|p| p.failures).collect(),
                p50_us: ring.iter().map(|p| p.p50_us).collect(),
                p99_us: ring.iter().map(|p| p.p99_us).collect(),
            };
            match key {
                Key::Event(event) => view.events.push(Line {
                    event: event.clone(),
                    ..line
                }),
                Key::Plugin { event, plugin } => view.plugins.push(Line {
                    event: event.clone(),
                    plugin: Some(plugin.clone()),
                    ..line
                }),
            }
        }
        view
    }
}

/// One series: a value per interval, oldest first, the last ending at `end_ms`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Line {
    /// The event.
    event: String,
    /// The plugin, for a plugin's series; absent for the event's (its whole calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    plugin: Option<String>,
    /// Calls in each interval (timed calls: profiling must be on).
    calls: Vec<u64>,
    /// Failures in each interval (an event's: its plugins' together).
    failures: Vec<u64>,
    /// The median time of a call in each interval, in microseconds (`null`: no calls).
    p50_us: Vec<Option<f64>>,
    /// The 99th percentile time of a call in each interval, in microseconds.
    p99_us: Vec<Option<f64>>,
}

/// `GET /api/series`: the recent history of every event and plugin that was called or
/// failed in it.
#[derive(Serialize, ToSchema)]
pub(crate) struct SeriesView {
    /// The length of one interval, in milliseconds.
    interval_ms: u64,
    /// When the last interval ended, in milliseconds since the Unix epoch (0: no sample
    /// yet).
    end_ms: u64,
    /// Intervals in every series (fewer than `capacity` while the server is young).
    points: usize,
    /// Intervals a series holds at most.
    capacity: usize,
    /// Events' whole calls.
    events: Vec<Line>,
    /// Each plugin's share.
    plugins: Vec<Line>,
}

/// `GET /api/series`.
#[utoipa::path(get, path = "/api/series", tag = "events",
    responses((status = 200, description = "The last minutes of every event and plugin with calls or failures in them", body = SeriesView)))]
pub(crate) async fn series(State(state): State<Shared>) -> Json<SeriesView> {
    let interval = state.options.sample_every.unwrap_or(Duration::ZERO);
    Json(state.series.view(interval))
}

/// Samples the engine's counters every `every`, until the server stops (the task is
/// aborted).
pub(crate) async fn run(state: Shared, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        state.series.sample(&state.engine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_the_bucket_that_holds_them() {
        // 10 calls in (10, 25] µs, none elsewhere: the median is halfway through it.
        let mut b = vec![0; LATENCY_BUCKETS_US.len() + 1];
        b[4] = 10;
        assert_eq!(quantile(&b, 0.5), Some(17.5));
        assert_eq!(quantile(&b, 1.0), Some(25.0));
        // One slow call in 100 moves the p99 into its bucket, not the median.
        b[4] = 99;
        b[9] = 1;
        assert_eq!(quantile(&b, 0.5), Some(10.0 + 15.0 * (50.0 / 99.0)));
        let p99 = quantile(&b, 0.99).unwrap();
        assert!((10.0..=25.0).contains(&p99), "{p99}");
        assert!(quantile(&b, 0.999).unwrap() > 1_000.0);
        // Past the last bound, the last bound.
        let mut inf = vec![0; LATENCY_BUCKETS_US.len() + 1];
        inf[LATENCY_BUCKETS_US.len()] = 3;
        assert_eq!(quantile(&inf, 0.5), Some(1_000_000.0));
        assert_eq!(quantile(&[0; 13], 0.5), None);
    }

    #[test]
    fn a_point_is_the_difference_and_a_reset_counts_from_zero() {
        let a = Reading::from_cumulative(4, 1, &[0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4, 4]);
        let b = Reading::from_cumulative(10, 1, &[0, 0, 0, 0, 4, 10, 10, 10, 10, 10, 10, 10, 10]);
        let p = b.since(Some(&a));
        assert_eq!((p.calls, p.failures), (6, 0));
        // The six new calls all took (25, 50] µs.
        assert_eq!(p.p50_us, Some(37.5));
        let reset = Reading::from_cumulative(2, 0, &[2; 13]);
        let p = reset.since(Some(&b));
        assert_eq!(p.calls, 2);
        assert_eq!(p.p50_us, Some(0.5));
    }
}
