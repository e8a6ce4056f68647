//! Integration tests of the engine: one binary, topic modules, shared fixtures.
#![allow(
    clippy::unwrap_used,
    clippy::new_without_default,
    missing_docs,
    unreachable_pub
)]

mod alloc;
mod calls;
mod collect;
mod encoded;
mod failures;
mod json_async;
mod lifecycle;
mod model;
mod review;
mod stress;
mod wrap;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use plugboard_core::{Context, Plugin, PluginRecord, Reason, Reply, Status};
use plugboard_engine::{Engine, Registration};

plugboard_core::event! {
    /// A test event whose state records which plugins ran.
    pub struct OnTest("on_test", section = "test", binary) {
        /// Names of the plugins that ran, in order.
        pub trail: Vec<String>,
        /// A field the tests keep private.
        pub secret: String,
    }
}

impl OnTest {
    pub fn new() -> Self {
        OnTest {
            trail: Vec::new(),
            secret: "s3cret".into(),
        }
    }
}

/// Appends its name to the trail; may halt; may overwrite the secret.
pub struct Tag {
    pub name: &'static str,
    pub halt: bool,
    pub starts: Arc<AtomicUsize>,
}

impl Tag {
    pub fn new(name: &'static str) -> Self {
        Tag {
            name,
            halt: false,
            starts: Arc::default(),
        }
    }
    pub fn halting(name: &'static str) -> Self {
        Tag {
            halt: true,
            ..Tag::new(name)
        }
    }
}

impl Plugin<OnTest> for Tag {
    fn call(&self, mut state: OnTest, _cx: &Context<'_>) -> Reply<OnTest> {
        state.trail.push(self.name.to_owned());
        state.secret = format!("changed by {}", self.name);
        if self.halt {
            Reply::Halt(state)
        } else {
            Reply::Continue(state)
        }
    }

    fn start(&self, _record: &PluginRecord) -> Result<(), Reason> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// An engine without the reference events (tests that need them build their own).
pub fn engine() -> Engine {
    Engine::builder().reference_events(false).build()
}

/// Registers and starts `Tag`s: (name, priority).
pub fn started(engine: &Engine, plugins: &[(&'static str, u8)]) {
    for (name, priority) in plugins {
        engine
            .register(Registration::new(*name).priority(*priority), Tag::new(name))
            .unwrap();
        engine.start(*name).unwrap();
    }
}

pub fn trail(engine: &Engine) -> Vec<String> {
    engine.call::<OnTest>(OnTest::new()).unwrap().trail
}

pub fn status(engine: &Engine, name: &str) -> Status {
    engine.plugin(name).unwrap().record.status
}
