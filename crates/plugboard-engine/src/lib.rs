//! # plugboard-engine
//!
//! The engine behind Plugboard: it keeps the registry of plugins and their records, runs
//! the lifecycle (start, stop, restart, enable, delete, unregister) with hard and soft
//! dependencies, compiles each event's chain into an immutable snapshot, and dispatches
//! calls through it with failure isolation.
//!
//! The split of work:
//! - the **control path** ([`Engine`]'s registration and lifecycle methods) takes a lock,
//!   validates, runs the plugin's callback, changes records, settles dependencies (holds
//!   and releases), rebuilds the chains that changed and swaps them in, then publishes
//!   [`LifecycleEvent`]s;
//! - the **call path** ([`Hook::call`], [`Engine::call_json`]…) takes no lock: it loads the
//!   current chain and walks it. A call running during a change sees the whole old chain or
//!   the whole new one.
//!
//! ```
//! use plugboard_engine::{Engine, Registration};
//! use plugboard_core::{Context, Plugin, Reply, reference::{Payload, OnContentPrepare}};
//!
//! struct Greeter;
//! impl Plugin<OnContentPrepare> for Greeter {
//!     fn call(&self, mut s: Payload, _: &Context<'_>) -> Reply<Payload> {
//!         s.extra.insert("greeting".into(), "hello".into());
//!         Reply::Continue(s)
//!     }
//! }
//!
//! let engine = Engine::new();
//! engine.register(Registration::new("greeter"), Greeter)?;
//! engine.start("greeter")?;
//! let hook = engine.hook::<OnContentPrepare>()?;
//! assert_eq!(hook.call(Payload::default())?.extra["greeting"], "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod background;
mod chain;
mod change;
mod code;
mod collect;
mod engine;
mod error;
mod graph;
mod persist;
mod stopper;
mod wrap;

pub use background::Spawned;
pub use chain::{
    CallOptions, EventProfile, LATENCY_BUCKETS_US, OnFailure, PluginProfile, StepOutcome, Trace,
    TraceStep,
};
pub use change::{Cause, LifecycleEvent};
pub use code::{AsyncStep, BoxFuture, Callbacks, Code, CodeKind, EncodedStep, SyncStep};
pub use collect::{Collected, Contribution};
pub use engine::{
    BootReport, CollectHook, Engine, EngineBuilder, Health, Hook, PluginInfo, Report, Target,
    WeakEngine,
};
pub use error::{CallError, EngineError, Failure, FailureKind, Op};
pub use persist::{Changeset, PersistError, Persistence, StoredRecord};
pub use plugboard_core::Registration;
/// The channel type of [`Engine::subscribe`].
pub use tokio::sync::broadcast;
pub use wrap::{After, Closing, JsonWrapper, MAX_RETRIES, Opened, Outcome, Told, Wrapper};
