//! The `emit` capability's service: a package's plugins fire the events they were granted,
//! fire-and-forget, through the engine's background queue (bounded; what it cannot take
//! is dropped and counted). Each queued call carries how many emits led to it, so that a
//! loop (A emits B emits A) stops at [`MAX_EMIT_DEPTH`], counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use plugboard_engine::{CallOptions, WeakEngine};
use plugboard_wasm::{CapabilityError, EMIT_DEPTH, Emitter};

/// How many emits may lead to a call that emits again.
pub const MAX_EMIT_DEPTH: u32 = 8;

/// Emits across every package, for metrics.
#[derive(Default)]
pub(crate) struct EmitStats {
    pub(crate) queued: AtomicU64,
    pub(crate) loops_stopped: AtomicU64,
    pub(crate) refused: AtomicU64,
}

/// Emit counts since the installer started: queued, stopped at the depth limit, refused
/// (not granted, no such event, not JSON, the queue full).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmitCounts {
    /// Calls queued.
    pub queued: u64,
    /// Emits refused at the depth limit (loops).
    pub loops_stopped: u64,
    /// Other refusals.
    pub refused: u64,
}

impl EmitStats {
    pub(crate) fn counts(&self) -> EmitCounts {
        EmitCounts {
            queued: self.queued.load(Ordering::Relaxed),
            loops_stopped: self.loops_stopped.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// A package's emitter, bound to the events it was granted.
pub(crate) struct PackageEmitter {
    pub(crate) engine: WeakEngine,
    pub(crate) package: String,
    pub(crate) events: Vec<String>,
    pub(crate) stats: Arc<EmitStats>,
}

impl PackageEmitter {
    fn refuse(&self, e: CapabilityError) -> Result<(), CapabilityError> {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        Err(e)
    }
}

impl Emitter for PackageEmitter {
    fn emit(&self, event: &str, state: &str, depth: u32) -> Result<(), CapabilityError> {
        if !self.events.iter().any(|e| e == event) {
            return self.refuse(CapabilityError::Denied(format!(
                "package `{}` is not granted `emit` of `{event}` (it may fire {})",
                self.package,
                self.events.join(", ")
            )));
        }
        if depth >= MAX_EMIT_DEPTH {
            self.stats.loops_stopped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(package = %self.package, event, depth, "an emit loop was stopped at the depth limit");
            return Err(CapabilityError::Denied(format!(
                "`{event}` not fired: {depth} emits led here, the limit is {MAX_EMIT_DEPTH} (a loop?)"
            )));
        }
        let state: serde_json::Value = match serde_json::from_str(state) {
            Ok(v) => v,
            Err(e) => {
                return self.refuse(CapabilityError::Invalid(format!(
                    "the state of `{event}` is not JSON: {e}"
                )));
            }
        };
        let Some(engine) = self.engine.upgrade() else {
            return self.refuse(CapabilityError::Unavailable(
                "the host is shutting down".into(),
            ));
        };
        let opts = CallOptions {
            meta: plugboard_core::Meta::new().with(EMIT_DEPTH, depth + 1),
            ..CallOptions::default()
        };
        match engine.spawn_json(event, state, opts) {
            Ok(_) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => self.refuse(CapabilityError::Invalid(e.to_string())),
        }
    }
}
