//! Fire-and-forget calls: handed to a task, never blocking, slowing or failing the caller.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};

use crate::code::BoxFuture;

/// Whether a fire-and-forget call was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spawned {
    /// The call will run in the background.
    Queued,
    /// The background queue was full; the call was dropped and counted.
    Dropped,
}

type Job = BoxFuture<'static, ()>;

/// Runs jobs on the caller's tokio runtime when there is one, else on a worker thread of
/// the engine's own; either way the number of jobs in flight is bounded.
pub(crate) struct Background {
    limit: usize,
    in_flight: Arc<AtomicUsize>,
    dropped: AtomicU64,
    worker: OnceLock<Option<SyncSender<Job>>>,
}

/// Decrements the in-flight count when a job ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Background {
    pub(crate) fn new(limit: usize) -> Self {
        Background {
            limit: limit.max(1),
            in_flight: Arc::new(AtomicUsize::new(0)),
            dropped: AtomicU64::new(0),
            worker: OnceLock::new(),
        }
    }

    /// Calls dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Hands `job` to the background; returns at once.
    pub(crate) fn submit(&self, job: Job) -> Spawned {
        if self.in_flight.fetch_add(1, Relaxed) >= self.limit {
            self.in_flight.fetch_sub(1, Relaxed);
            self.dropped.fetch_add(1, Relaxed);
            return Spawned::Dropped;
        }
        let slot = Slot(self.in_flight.clone());
        let job: Job = Box::pin(async move {
            let _slot = slot;
            job.await
        });
        // On a caller's multi-threaded runtime, as its task. Not on a current-thread one
        // (the background worker's own, when a background call fires another): a task
        // spawned there runs only while that runtime is driven, which may be never again.
        if let Ok(handle) = tokio::runtime::Handle::try_current()
            && handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        {
            drop(handle.spawn(job));
            return Spawned::Queued;
        }
        let sent = match self.worker.get_or_init(|| spawn_worker(self.limit)) {
            Some(tx) => match tx.try_send(job) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        if sent {
            Spawned::Queued
        } else {
            self.dropped.fetch_add(1, Relaxed);
            Spawned::Dropped
        }
    }
}

/// The engine's own worker, for callers outside any tokio runtime.
fn spawn_worker(limit: usize) -> Option<SyncSender<Job>> {
    // The channel preallocates its slots; `in_flight` bounds the work anyway.
    let (tx, rx) = sync_channel::<Job>(limit.min(65_536));
    // enable_all: async plugins may use whichever tokio drivers the host compiled in.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| tracing::error!(error = %e, "cannot build the background runtime"))
        .ok()?;
    std::thread::Builder::new()
        .name("plugboard-background".into())
        .spawn(move || {
            for job in rx {
                runtime.block_on(job);
            }
        })
        .map_err(|e| tracing::error!(error = %e, "cannot start the background worker"))
        .ok()?;
    Some(tx)
}
