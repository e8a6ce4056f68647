//! Store tests; every one runs on SQLite and on a real PostgreSQL cluster.
#![allow(clippy::unwrap_used, missing_docs)]

mod activity;
mod kv;
mod outage;
mod records;
mod schema;
mod settings;

use plugboard_core::{Context, Plugin, Reply};
use plugboard_testkit::{BOTH, Backend, fresh_url};

plugboard_core::event! {
    /// A test event.
    pub struct OnStore("on_store", section = "test") {
        /// Plugins that ran.
        pub trail: Vec<String>,
    }
}

pub struct Mark(pub &'static str);

impl Plugin<OnStore> for Mark {
    fn call(&self, mut s: OnStore, _: &Context<'_>) -> Reply<OnStore> {
        s.trail.push(self.0.to_owned());
        Reply::Continue(s)
    }
}

pub fn trail(engine: &plugboard_engine::Engine) -> Vec<String> {
    engine
        .call::<OnStore>(OnStore { trail: vec![] })
        .unwrap()
        .trail
}

/// Waits until `log` has written `n` entries. Lifecycle events reach the log through a
/// forwarding task, and `flush` waits only for what is queued: on a busy machine that task
/// may not have queued the latest events yet when `flush` looks. The deadline only guards
/// against a hang.
pub fn wait_written(log: &plugboard_store::ActivityLog, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while log.written() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} entries written",
            log.written()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Runs `f` once per backend with a fresh database URL.
pub fn each_backend(f: impl Fn(Backend, &str)) {
    let dir = tempfile::tempdir().unwrap();
    for backend in BOTH {
        let url = fresh_url(backend, dir.path());
        f(backend, &url);
    }
}
