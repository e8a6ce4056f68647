//! Store tests; every one runs on SQLite and on a real PostgreSQL cluster.
#![allow(clippy::unwrap_used, missing_docs)]

mod activity;
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

/// Runs `f` once per backend with a fresh database URL.
pub fn each_backend(f: impl Fn(Backend, &str)) {
    let dir = tempfile::tempdir().unwrap();
    for backend in BOTH {
        let url = fresh_url(backend, dir.path());
        f(backend, &url);
    }
}
