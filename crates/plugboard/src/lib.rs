//! # plugboard
//!
//! Runtime plugins and event hooks for Rust applications. A host declares **events** at the
//! places where others may act; **plugins** register on an event with a priority and
//! dependencies; calling the event runs its started plugins in order, each replying
//! *continue with this state* or *halt with this state*. Operators start, stop, restart,
//! enable, delete and unregister plugins at run time.
//!
//! This crate is the facade: it re-exports [`plugboard_core`] (the types plugin authors
//! need) and [`plugboard_engine`] (the engine hosts embed).
//!
//! ```
//! use plugboard::prelude::*;
//! use plugboard::reference::{OnUserAfterSaveFailure, ErrorPayload, Ip, Endpoint, SaveStatus, Conn, ModifierUser};
//!
//! /// Tags every failed sign-up so that the audit log can find it.
//! struct Audit;
//!
//! impl Plugin<OnUserAfterSaveFailure> for Audit {
//!     fn call(&self, mut s: OnUserAfterSaveFailure, _cx: &Context<'_>) -> Reply<OnUserAfterSaveFailure> {
//!         s.extra = plugboard::serde_json::json!({ "audited": true, "code": s.error.code });
//!         Reply::Continue(s)
//!     }
//! }
//!
//! let engine = Engine::new();
//! engine.register(Registration::new("audit").priority(10), Audit)?;
//! engine.start("audit")?;
//!
//! let hook = engine.hook::<OnUserAfterSaveFailure>()?;
//! let out = hook.call(OnUserAfterSaveFailure {
//!     error: ErrorPayload::new("validation_failed", "email is taken"),
//!     ip: Ip::LOCALHOST,
//!     endpoint: Endpoint::Html,
//!     status: SaveStatus::Added,
//!     conn: Conn::new("POST", "/signup"),
//!     modifier_user: ModifierUser::SelfUser,
//!     extra: plugboard::serde_json::Value::Null,
//! })?;
//! assert_eq!(out.extra["audited"], true);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use plugboard_core::{
    AsyncCollector, AsyncPlugin, CONTRACT_VERSION, CONTRACT_VERSIONS, Collect, Collector, Context,
    Contribute, DependType, EMPTY_META, Event, EventInfo, FnPlugin, Json, Meta, Mode, Plugin,
    PluginRecord, Priority, PriorityError, Reason, Registration, Reply, Status, event, from_fn,
    reference, schema_of, serde_json,
};
pub use plugboard_engine::{
    After, AsyncStep, BootReport, BoxFuture, CallError, CallOptions, Callbacks, Cause, Changeset,
    Closing, Code, CodeKind, CollectHook, Collected, Contribution, EncodedStep, Engine,
    EngineBuilder, EngineError, EventProfile, Failure, FailureKind, Health, Hook, JsonWrapper,
    LifecycleEvent, MAX_RETRIES, OnFailure, Op, Opened, Outcome, PersistError, Persistence,
    PluginInfo, PluginProfile, Report, Spawned, StepOutcome, StoredRecord, SyncStep, Target, Told,
    Trace, TraceStep, Wrapper, broadcast,
};

/// The names most hosts and plugins use.
pub mod prelude {
    pub use crate::{
        After, AsyncPlugin, CallOptions, Collect, Collector, Context, Contribute, Engine, Event,
        Hook, Meta, OnFailure, Outcome, Plugin, Registration, Reply, Status, Target, Wrapper,
    };
}

/// The README's Rust examples, compiled and run as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
