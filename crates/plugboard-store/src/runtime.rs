//! The store's own runtime: it lets the blocking API be called from anywhere, including
//! from inside another tokio runtime, and keeps every connection on one reactor.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};

pub(crate) struct OwnedRuntime(Option<Runtime>);

impl OwnedRuntime {
    pub(crate) fn new() -> std::io::Result<Self> {
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("plugboard-store")
            .enable_all()
            .build()
            .map(|rt| OwnedRuntime(Some(rt)))
    }

    fn rt(&self) -> std::io::Result<&Runtime> {
        self.0
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the store's runtime has shut down"))
    }

    /// Runs `fut` on the store's runtime and waits for its result on this thread.
    ///
    /// Waiting on a channel rather than `Runtime::block_on` is what makes this callable
    /// from a thread that is itself running another runtime.
    pub(crate) fn block_on<T, F>(&self, fut: F) -> std::io::Result<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt()?.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| std::io::Error::other("a store task ended without answering"))
    }

    pub(crate) fn spawn<F>(&self, fut: F) -> Option<tokio::task::JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.as_ref().map(|rt| rt.spawn(fut))
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime's context panics; this does not wait.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
