//! Stops at the failure threshold, off the call path: the call that reaches the threshold
//! only hands the plugin's name to a thread of the engine's own, which runs the stop (its
//! callback, the durable write) through the control path. A per-plugin flag keeps one
//! stop pending per plugin, so the queue is bounded by the number of plugins and nothing
//! is ever dropped.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::chain::Stats;
use crate::change::Cause;
use crate::engine::{Shared, Target};
use crate::error::Op;

/// One pending stop.
struct Job {
    plugin: String,
    failures: u32,
    stats: Arc<Stats>,
}

/// The engine's stopper thread and its count of pending stops.
#[derive(Default)]
pub(crate) struct Stopper {
    tx: Mutex<Option<Sender<Job>>>,
    pending: Mutex<usize>,
    idle: Condvar,
}

impl Stopper {
    /// Queues a stop of `plugin` unless one is pending already. Never blocks on the
    /// control path and never drops.
    pub(crate) fn submit(
        &self,
        shared: &Arc<Shared>,
        plugin: &str,
        failures: u32,
        stats: &Arc<Stats>,
    ) {
        if stats.stop_pending.swap(true, SeqCst) {
            return;
        }
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let job = Job {
            plugin: plugin.to_owned(),
            failures,
            stats: stats.clone(),
        };
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let job = match tx.as_ref() {
            Some(t) => match t.send(job) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => job,
        };
        // First use (or the thread is gone): start it.
        let (sender, rx) = channel::<Job>();
        let weak: Weak<Shared> = Arc::downgrade(shared);
        let spawned = std::thread::Builder::new()
            .name("plugboard-stopper".into())
            .spawn(move || {
                for job in rx {
                    if let Some(shared) = weak.upgrade() {
                        let cause = Cause::FailureThreshold {
                            failures: job.failures,
                        };
                        if let Err(e) =
                            shared.operate(Target::Plugin(&job.plugin), Op::Stop, Some(cause))
                        {
                            tracing::error!(plugin = %job.plugin, error = %e, "stop at the failure threshold failed");
                        }
                        job.stats.stop_pending.store(false, SeqCst);
                        shared.stopper.done();
                    }
                }
            });
        match spawned {
            Ok(_) => {
                // The channel was just made: the receiver is alive.
                let _ = sender.send(job);
                *tx = Some(sender);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the stopper thread; stopping inline");
                drop(tx);
                let cause = Cause::FailureThreshold { failures };
                let _ = shared.operate(Target::Plugin(plugin), Op::Stop, Some(cause));
                stats.stop_pending.store(false, SeqCst);
                self.done();
            }
        }
    }

    fn done(&self) {
        let mut n = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.idle.notify_all();
        }
    }

    /// Waits until no stop is pending, at most `timeout`; whether none is.
    pub(crate) fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut n = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = self
                .idle
                .wait_timeout(n, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}
