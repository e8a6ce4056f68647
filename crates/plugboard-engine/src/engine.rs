//! The engine: registry, lifecycle, dependency resolution, and the handles that call events.

use std::any::{Any, TypeId, type_name};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use plugboard_core::{
    AsyncCollector, AsyncPlugin, Collect, Collector, DependType, EMPTY_META, Event, EventInfo,
    Json, Meta, Mode, Plugin, PluginRecord, Reason, Registration, Status,
};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::background::{Background, Spawned};
use crate::chain::{
    AnySlot, CallOptions, EventProfile, OnFailure, PlanStep, PluginProfile, Slot, Stats, Trace,
};
use crate::change::{Cause, LifecycleEvent};
use crate::code::{Code, CodeKind};
use crate::collect::{Collected, Gather, gather_runner};
use crate::error::{CallError, EngineError, Failure, Op};
use crate::graph::{Node, active_set, chain_order, find_cycle};
use crate::persist::{Changeset, PersistError, Persistence, StoredRecord};

mod boot;
mod control;
mod hook;
mod register;

use control::{Change, info_of};
pub use hook::{CollectHook, Hook};

/// A collecting event's slot: a chain over its accumulator.
type CollectSlot<E> = Slot<Gather<<E as Event>::State, <E as Collect>::Output>>;

/// Which plugins a lifecycle operation applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// One plugin, by name.
    Plugin(&'a str),
    /// Every plugin registered on an event.
    Event(&'a str),
    /// Every plugin.
    All,
}

impl<'a> From<&'a str> for Target<'a> {
    fn from(name: &'a str) -> Self {
        Target::Plugin(name)
    }
}

impl<'a> From<&'a String> for Target<'a> {
    fn from(name: &'a String) -> Self {
        Target::Plugin(name)
    }
}

/// What a lifecycle operation did.
#[derive(Debug, Default)]
pub struct Report {
    /// The records the operation itself changed, as they are now.
    pub changed: Vec<PluginRecord>,
    /// For operations on an event or on all plugins: the plugins it could not change, and
    /// why (e.g. `start` on a stopped plugin). Each plugin's change is all or nothing.
    pub skipped: Vec<(String, EngineError)>,
    /// Plugins whose callback failed on an operation it may not refuse (`stop`,
    /// `delete`, `unregister`): the operation went ahead; what the callback said.
    pub overridden: Vec<(String, String)>,
}

/// Everything known about one plugin.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
pub struct PluginInfo {
    /// The registered record.
    #[serde(flatten)]
    pub record: PluginRecord,
    /// Whether its code is loaded (false after `delete`, or for a record whose code is missing).
    pub loaded: bool,
    /// The kind of code, when loaded.
    pub kind: Option<CodeKind>,
    /// Its code runs around the rest of its event's chain (a wrapper), when loaded.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub wrapper: bool,
    /// Whether it is in its event's chain now (around it, for a wrapper).
    pub in_chain: bool,
    /// Hard dependencies that are not active (why a plugin is held).
    pub waiting_for: Vec<String>,
    /// Plugins that depend on this one.
    pub dependents: Vec<String>,
    /// Failures since registration.
    pub failures: u64,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// The last failure.
    pub last_error: Option<Failure>,
}

/// What [`Engine::finish_boot`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BootReport {
    /// Plugins left `registered` by an interrupted boot, started now.
    pub started: Vec<String>,
    /// Plugins that could not be started, and why.
    pub failed: Vec<(String, String)>,
    /// Records whose code was not registered: never called.
    pub missing_code: Vec<String>,
}

/// A plugin's health.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
pub struct Health {
    /// The plugin.
    pub plugin: String,
    /// Its status.
    pub status: Status,
    /// Whether its code is loaded.
    pub loaded: bool,
    /// Whether its health check passed (false when its code is not loaded).
    pub healthy: bool,
    /// Why not.
    pub reason: Option<String>,
    /// Failures in a row.
    pub consecutive_failures: u32,
}

/// Builds an [`Engine`] with non-default settings.
#[derive(Clone)]
pub struct EngineBuilder {
    failure_threshold: u32,
    on_failure: OnFailure,
    background_limit: usize,
    reference_events: bool,
    broadcast_capacity: usize,
    persistence: Option<Arc<dyn Persistence>>,
    records_only: bool,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            failure_threshold: 5,
            on_failure: OnFailure::default(),
            background_limit: 1024,
            reference_events: true,
            broadcast_capacity: 1024,
            persistence: None,
            records_only: false,
        }
    }
}

impl EngineBuilder {
    /// Stops a plugin after this many failures in a row; 0 never stops. Default 5.
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// The failure policy of events that do not set their own. Default [`OnFailure::Error`].
    pub fn on_failure(mut self, policy: OnFailure) -> Self {
        self.on_failure = policy;
        self
    }

    /// How many fire-and-forget calls may be in flight before new ones are dropped. Default 1024.
    pub fn background_limit(mut self, n: usize) -> Self {
        self.background_limit = n;
        self
    }

    /// Whether to declare the 32 reference events at start. Default true.
    pub fn reference_events(mut self, yes: bool) -> Self {
        self.reference_events = yes;
        self
    }

    /// How many lifecycle events a slow subscriber may lag behind. Default 1024.
    pub fn broadcast_capacity(mut self, n: usize) -> Self {
        self.broadcast_capacity = n.max(1);
        self
    }

    /// Writes every record change through to durable storage before it becomes visible.
    pub fn persistence(mut self, persistence: Arc<dyn Persistence>) -> Self {
        self.persistence = Some(persistence);
        self
    }

    /// For tools that manage stored records without running plugins (such as the CLI):
    /// records count as having their code, so dependents are held and released exactly as
    /// a host would do it.
    pub fn records_only(mut self, yes: bool) -> Self {
        self.records_only = yes;
        self
    }

    /// Builds the engine.
    pub fn build(self) -> Engine {
        let (changes, _) = broadcast::channel(self.broadcast_capacity);
        let shared = Arc::new(Shared {
            control: Mutex::new(Control {
                records_only: self.records_only,
                ..Control::default()
            }),
            slots: ArcSwap::from_pointee(Slots::default()),
            changes,
            threshold: self.failure_threshold,
            default_policy: self.on_failure,
            background: Background::new(self.background_limit),
            stopper: crate::stopper::Stopper::default(),
            persistence: self.persistence,
            views: ArcSwap::from_pointee(Views::default()),
        });
        let engine = Engine { shared };
        if self.reference_events {
            struct Declare<'a>(&'a Engine);
            impl plugboard_core::reference::Visit for Declare<'_> {
                fn visit<E: Event>(&mut self) {
                    // A fresh engine has no conflicting names.
                    let _ = self.0.declare::<E>();
                }

                fn visit_collect<E: Collect>(&mut self) {
                    let _ = self.0.declare_collect::<E>();
                }
            }
            plugboard_core::reference::for_each(&mut Declare(&engine));
        }
        engine
    }
}

/// The plugin engine. Cheap to clone; clones share everything.
///
/// ```
/// use plugboard_engine::{Engine, Registration};
/// use plugboard_core::{Reply, from_fn, reference::{OnContentPrepare, Payload}};
///
/// let engine = Engine::new();
/// engine.register::<OnContentPrepare, _>(
///     Registration::new("stamp"),
///     from_fn(|mut s: Payload, _cx: &plugboard_core::Context<'_>| {
///         s.extra.insert("stamped".into(), true.into());
///         Reply::Continue(s)
///     }),
/// ).unwrap();
/// engine.start("stamp").unwrap();
/// let out = engine.call::<OnContentPrepare>(Payload::default()).unwrap();
/// assert_eq!(out.extra["stamped"], true);
/// ```
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

/// An engine handle that does not keep the engine alive (for services its own plugins
/// hold, such as an event emitter: a strong handle there would be a cycle).
#[derive(Clone)]
pub struct WeakEngine(std::sync::Weak<Shared>);

impl WeakEngine {
    /// The engine, if it is still alive.
    pub fn upgrade(&self) -> Option<Engine> {
        self.0.upgrade().map(|shared| Engine { shared })
    }
}

impl Engine {
    /// A handle that does not keep the engine alive.
    pub fn downgrade(&self) -> WeakEngine {
        WeakEngine(Arc::downgrade(&self.shared))
    }
}

pub(crate) struct Shared {
    control: Mutex<Control>,
    slots: ArcSwap<Slots>,
    changes: broadcast::Sender<LifecycleEvent>,
    threshold: u32,
    default_policy: OnFailure,
    background: Background,
    /// Stops plugins at the failure threshold, off the call path.
    pub(crate) stopper: crate::stopper::Stopper,
    persistence: Option<Arc<dyn Persistence>>,
    /// The records as of the last change, for queries: they never take the control lock,
    /// so a plugin callback may ask about plugins.
    views: ArcSwap<Views>,
}

#[derive(Default)]
struct Views {
    entries: BTreeMap<String, Entry>,
    active: HashSet<String>,
}

#[derive(Clone, Default)]
struct Slots {
    by_name: HashMap<String, Arc<dyn AnySlot>>,
    /// Typed slots by the event type's `TypeId`, as `Arc<Slot<E::State>>`.
    by_type: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

#[derive(Default)]
struct Control {
    plugins: BTreeMap<String, Entry>,
    installed: HashMap<String, Installed>,
    policies: HashMap<String, OnFailure>,
    profiling: HashSet<String>,
    /// Tools that manage records without running plugins (the CLI) treat every record's
    /// code as present, so that holds and releases are computed as a host would.
    records_only: bool,
    /// Between `restore` and `finish_boot`: records whose code is not registered yet count
    /// as present, so that registering a host's plugins in any order does not hold and
    /// release (and write) dependents along the way.
    booting: bool,
}

#[derive(Clone)]
struct Entry {
    name: Arc<str>,
    record: PluginRecord,
    code: Option<Code>,
    stats: Arc<Stats>,
    /// The record's version in storage (0: never stored).
    version: i64,
    /// An operator deleted its code (stored, so that every host unloads it); registering
    /// code again clears it.
    unloaded: bool,
    /// Code unloaded because another process deleted it: taken back if another process
    /// registers the plugin again (a reinstall), since this host cannot register it itself
    /// until it restarts.
    parked: Option<Code>,
}

impl Entry {
    /// An entry for a stored record whose code is not registered (yet).
    fn stored(stored: StoredRecord) -> Self {
        Entry {
            name: Arc::from(stored.record.name.as_str()),
            record: stored.record,
            code: None,
            stats: Arc::default(),
            version: stored.version,
            unloaded: stored.unloaded,
            parked: None,
        }
    }
}

/// What a slot was last given, to rebuild only chains that changed.
struct Installed {
    steps: Vec<(Arc<str>, Code)>,
    policy: OnFailure,
    profiling: bool,
}

impl Installed {
    fn same(&self, steps: &[PlanStep], policy: OnFailure, profiling: bool) -> bool {
        self.policy == policy
            && self.profiling == profiling
            && self.steps.len() == steps.len()
            && self
                .steps
                .iter()
                .zip(steps)
                .all(|((n, c), p)| *n == p.name && c.same(&p.code))
    }
}

thread_local! {
    static IN_CONTROL: Cell<bool> = const { Cell::new(false) };
}

/// Marks the thread as inside a control operation, so that a plugin callback that calls
/// back into the engine gets an error instead of a deadlock.
struct ControlGuard;

impl ControlGuard {
    fn enter(op: Op) -> Result<Self, EngineError> {
        if IN_CONTROL.with(|c| c.replace(true)) {
            return Err(EngineError::Reentrant(op));
        }
        Ok(ControlGuard)
    }
}

impl Drop for ControlGuard {
    fn drop(&mut self) {
        IN_CONTROL.with(|c| c.set(false));
    }
}

fn validate_name(what: &'static str, name: &str) -> Result<(), EngineError> {
    match plugboard_core::invalid_name(name) {
        Some(why) => Err(EngineError::InvalidName {
            what,
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

impl Engine {
    /// An engine with default settings and the reference events declared.
    pub fn new() -> Self {
        EngineBuilder::default().build()
    }

    /// A builder for non-default settings.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    // ----- events -----

    /// Declares a typed event, making it callable by name. Registering a plugin on it or
    /// asking for its [`Hook`] declares it too.
    pub fn declare<E: Event>(&self) -> Result<(), EngineError> {
        self.typed_slot::<E>().map(|_| ())
    }

    /// Declares a dynamic event: one defined at run time, whose state is free JSON.
    pub fn declare_dynamic(&self, info: EventInfo) -> Result<(), EngineError> {
        validate_name("event", &info.name)?;
        let _g = ControlGuard::enter(Op::Register)?;
        let _ctl = self.shared.lock();
        let slots = self.shared.slots.load();
        if let Some(existing) = slots.by_name.get(info.name.as_ref()) {
            if existing.state_type() == TypeId::of::<Value>() {
                return Ok(());
            }
            return Err(EngineError::EventConflict {
                event: info.name.into_owned(),
                existing: existing.state_name().to_owned(),
                requested: type_name::<Value>().to_owned(),
            });
        }
        let mut next = Slots::clone(&slots);
        let slot: Arc<Slot<Value>> = Arc::new(Slot::new(
            info.clone(),
            None,
            Arc::downgrade(&self.shared),
            self.shared.default_policy,
        ));
        next.by_name.insert(info.name.into_owned(), slot);
        self.shared.slots.store(Arc::new(next));
        Ok(())
    }

    fn typed_slot<E: Event>(&self) -> Result<Arc<Slot<E::State>>, EngineError> {
        self.slot_of::<E, E::State>(Mode::Waterfall, || {
            Slot::new(
                E::info(),
                E::binary_layout(),
                Arc::downgrade(&self.shared),
                self.shared.default_policy,
            )
        })
    }

    fn collect_slot<E: Collect>(&self) -> Result<Arc<CollectSlot<E>>, EngineError> {
        self.slot_of::<E, Gather<E::State, E::Output>>(Mode::Collect, || {
            Slot::new(
                E::collect_info(),
                None,
                Arc::downgrade(&self.shared),
                self.shared.default_policy,
            )
            .adapted(gather_runner::<E::State, E::Output>)
        })
    }

    /// Event `E`'s slot over `S`, declared with `make` if it is not yet.
    fn slot_of<E: Event, S: crate::chain::State>(
        &self,
        mode: Mode,
        make: impl FnOnce() -> Slot<S>,
    ) -> Result<Arc<Slot<S>>, EngineError> {
        let found = |slots: &Slots| {
            slots
                .by_type
                .get(&TypeId::of::<E>())
                .and_then(|s| s.clone().downcast::<Slot<S>>().ok())
        };
        if let Some(slot) = found(&self.shared.slots.load()) {
            return Ok(slot);
        }
        let _g = ControlGuard::enter(Op::Register)?;
        let _ctl = self.shared.lock();
        let slots = self.shared.slots.load();
        if let Some(slot) = found(&slots) {
            return Ok(slot);
        }
        if let Some(existing) = slots.by_name.get(E::NAME) {
            if existing.info().mode != mode {
                return Err(EngineError::ModeMismatch {
                    event: E::NAME.to_owned(),
                    declared: existing.info().mode,
                });
            }
            return Err(EngineError::EventConflict {
                event: E::NAME.to_owned(),
                existing: existing.state_name().to_owned(),
                requested: type_name::<S>().to_owned(),
            });
        }
        let slot = Arc::new(make());
        let mut next = Slots::clone(&slots);
        next.by_name.insert(E::NAME.to_owned(), slot.clone());
        next.by_type.insert(TypeId::of::<E>(), slot.clone());
        self.shared.slots.store(Arc::new(next));
        Ok(slot)
    }

    /// Declares a collecting event `E`: its plugins each answer the same input with a
    /// contribution (see [`Collect`]).
    pub fn declare_collect<E: Collect>(&self) -> Result<(), EngineError> {
        self.collect_slot::<E>().map(|_| ())
    }

    /// A typed handle on the collecting event `E`. Declares the event if needed.
    pub fn collector<E: Collect>(&self) -> Result<CollectHook<E>, EngineError> {
        Ok(CollectHook {
            slot: self.collect_slot::<E>()?,
            _e: PhantomData,
        })
    }

    /// A typed handle on event `E`: the fast way to call it. Declares the event if needed.
    pub fn hook<E: Event>(&self) -> Result<Hook<E>, EngineError> {
        Ok(Hook {
            slot: self.typed_slot::<E>()?,
            _e: PhantomData,
        })
    }

    /// Every declared event, by name.
    pub fn events(&self) -> Vec<EventInfo> {
        let mut all: Vec<EventInfo> = self
            .shared
            .slots
            .load()
            .by_name
            .values()
            .map(|s| s.info().clone())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// One event's description.
    pub fn event(&self, name: &str) -> Option<EventInfo> {
        self.shared
            .slots
            .load()
            .by_name
            .get(name)
            .map(|s| s.info().clone())
    }

    /// The plugins in an event's chain now, in the order they run (wrappers aside).
    pub fn chain(&self, event: &str) -> Result<Vec<String>, EngineError> {
        self.slot(event)
            .map(|s| s.names())
            .map_err(|_| EngineError::UnknownEvent(event.to_owned()))
    }

    /// The wrappers running around an event's chain now, outermost first.
    pub fn wrappers(&self, event: &str) -> Result<Vec<String>, EngineError> {
        self.slot(event)
            .map(|s| s.wrapper_names())
            .map_err(|_| EngineError::UnknownEvent(event.to_owned()))
    }

    fn slot(&self, event: &str) -> Result<Arc<dyn AnySlot>, CallError> {
        self.shared
            .slots
            .load()
            .by_name
            .get(event)
            .cloned()
            .ok_or_else(|| CallError::UnknownEvent(event.to_owned()))
    }

    /// Sets an event's failure policy.
    pub fn set_failure_policy(&self, event: &str, policy: OnFailure) -> Result<(), EngineError> {
        self.configure(event, |ctl| {
            ctl.policies.insert(event.to_owned(), policy);
        })
    }

    /// Turns per-plugin timing on or off for an event; see [`Engine::profile`].
    pub fn set_profiling(&self, event: &str, on: bool) -> Result<(), EngineError> {
        self.configure(event, |ctl| {
            if on {
                ctl.profiling.insert(event.to_owned());
            } else {
                ctl.profiling.remove(event);
            }
        })
    }

    fn configure(&self, event: &str, f: impl FnOnce(&mut Control)) -> Result<(), EngineError> {
        if self.event(event).is_none() {
            return Err(EngineError::UnknownEvent(event.to_owned()));
        }
        let _g = ControlGuard::enter(Op::Register)?;
        let mut ctl = self.shared.lock();
        f(&mut ctl);
        self.shared.finish(&mut ctl, Change::without_records())
    }

    /// Each plugin's time in an event's chain, collected while profiling is on.
    pub fn profile(&self, event: &str) -> Result<Vec<PluginProfile>, EngineError> {
        self.slot(event)
            .map(|s| s.profile())
            .map_err(|_| EngineError::UnknownEvent(event.to_owned()))
    }

    /// An event's whole calls (its plugins together), collected while profiling is on:
    /// what a caller waits for, where [`Engine::profile`] splits it by plugin.
    pub fn event_profile(&self, event: &str) -> Result<EventProfile, EngineError> {
        self.slot(event)
            .map(|s| s.event_profile())
            .map_err(|_| EngineError::UnknownEvent(event.to_owned()))
    }

    // ----- lifecycle -----

    /// Starts plugins: `registered` or `held` ones become `started` (or `held`, while a
    /// hard dependency is not active). Refuses a stopped plugin: use [`Engine::enable`].
    pub fn start<'a>(&self, target: impl Into<Target<'a>>) -> Result<Report, EngineError> {
        self.shared.operate(target.into(), Op::Start, None)
    }

    /// Stops plugins, from any status. Sticky: only [`Engine::enable`] leaves `stopped`.
    /// Every plugin that depends on a stopped one (hard, transitively) is held.
    pub fn stop<'a>(&self, target: impl Into<Target<'a>>) -> Result<Report, EngineError> {
        self.shared.operate(target.into(), Op::Stop, None)
    }

    /// Restarts plugins (status `restarted`; a plugin that never ran is `started`). Refuses
    /// a stopped plugin.
    pub fn restart<'a>(&self, target: impl Into<Target<'a>>) -> Result<Report, EngineError> {
        self.shared.operate(target.into(), Op::Restart, None)
    }

    /// Takes plugins out of `stopped` (status `restarted`, or `held`); on other plugins it
    /// is [`Engine::start`].
    pub fn enable<'a>(&self, target: impl Into<Target<'a>>) -> Result<Report, EngineError> {
        self.shared.operate(target.into(), Op::Enable, None)
    }

    /// Unloads plugins' code, keeping their records (and statuses); dependents are held.
    /// With storage, the deletion is stored: every host sharing it unloads the code too
    /// (from the CLI as well), and it outlives restarts. `start`, `enable` or `restart`
    /// brings a plugin back, and so does registering its code again (outside a boot).
    pub fn delete<'a>(&self, target: impl Into<Target<'a>>) -> Result<Report, EngineError> {
        self.shared.operate(target.into(), Op::Delete, None)
    }

    /// Removes plugins' records. Dependents are held, never removed.
    pub fn unregister<'a>(&self, target: impl Into<Target<'a>>) -> Result<Report, EngineError> {
        self.shared.operate(target.into(), Op::Unregister, None)
    }

    // ----- queries -----

    /// Every plugin, by name.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        let views = self.shared.views.load();
        // Who depends on whom, once for all plugins (not a scan per plugin).
        let mut dependents: HashMap<&str, Vec<String>> = HashMap::new();
        for e in views.entries.values() {
            for d in &e.record.depends {
                let list = dependents.entry(d.as_str()).or_default();
                if !list.contains(&e.record.name) {
                    list.push(e.record.name.clone());
                }
            }
        }
        views
            .entries
            .values()
            .map(|e| {
                info_of(
                    &views,
                    e,
                    dependents
                        .remove(e.record.name.as_str())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    /// One plugin.
    pub fn plugin(&self, name: &str) -> Option<PluginInfo> {
        let views = self.shared.views.load();
        let e = views.entries.get(name)?;
        let dependents = views
            .entries
            .values()
            .filter(|o| o.record.depends.contains(&e.record.name))
            .map(|o| o.record.name.clone())
            .collect();
        Some(info_of(&views, e, dependents))
    }

    /// Runs a plugin's health check (outside the engine's lock).
    pub fn health(&self, name: &str) -> Result<Health, EngineError> {
        let (record, code, consecutive) = {
            let views = self.shared.views.load();
            let e = views
                .entries
                .get(name)
                .ok_or_else(|| EngineError::UnknownPlugin(name.to_owned()))?;
            (
                e.record.clone(),
                e.code.clone(),
                e.stats.consecutive.load(Relaxed),
            )
        };
        let check = match &code {
            Some(code) => code.health_check(),
            None => Err(Reason::from("code not loaded")),
        };
        Ok(Health {
            plugin: record.name,
            status: record.status,
            loaded: code.is_some(),
            healthy: check.is_ok(),
            reason: check.err().map(|r| r.0),
            consecutive_failures: consecutive,
        })
    }

    /// Subscribes to lifecycle events.
    pub fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.shared.changes.subscribe()
    }

    /// Fire-and-forget calls dropped because the background queue was full.
    pub fn background_dropped(&self) -> u64 {
        self.shared.background.dropped()
    }

    // ----- calls -----

    /// Calls typed event `E`. An event that was never declared has no plugins, so its
    /// input comes back unchanged. On a hot path, keep a [`Hook`] instead.
    pub fn call<E: Event>(&self, state: E::State) -> Result<E::State, CallError> {
        // Borrow the slot from the snapshot rather than clone its `Arc`: two atomic
        // operations fewer per call.
        let slots = self.shared.slots.load();
        match slots
            .by_type
            .get(&TypeId::of::<E>())
            .and_then(|s| s.downcast_ref::<Slot<E::State>>())
        {
            Some(slot) => slot.call(state, &EMPTY_META),
            None => Ok(state),
        }
    }

    /// Calls an event by name with a JSON state (typed events too): what a host does
    /// for events it did not declare in Rust, and what the admin API does. A state that
    /// is not valid for a typed event is refused before any plugin runs.
    ///
    /// ```
    /// use plugboard_engine::{CallOptions, Engine};
    /// use serde_json::json;
    ///
    /// let engine = Engine::new();
    /// let out = engine.call_json(
    ///     "on_content_prepare",
    ///     json!({"data": {"title": "hello"}, "extra": {}}),
    ///     &CallOptions::default(),
    /// )?;
    /// assert_eq!(out["data"]["title"], "hello"); // no plugins: the state comes back
    /// assert!(engine.call_json("on_content_prepare", json!({"data": 7}), &CallOptions::default()).is_err());
    /// # Ok::<(), plugboard_engine::CallError>(())
    /// ```
    pub fn call_json(
        &self,
        event: &str,
        state: Value,
        opts: &CallOptions,
    ) -> Result<Value, CallError> {
        self.slot(event)?.call_json(state, opts)
    }

    /// Calls an event by name with a JSON state, awaiting async plugins.
    pub async fn call_json_async(
        &self,
        event: &str,
        state: Value,
        opts: &CallOptions,
    ) -> Result<Value, CallError> {
        self.slot(event)?.call_json_async(state, opts).await
    }

    /// Calls an event by name and reports each plugin's step.
    pub fn trace_json(&self, event: &str, state: Value, opts: &CallOptions) -> Trace<Value> {
        match self.slot(event) {
            Ok(slot) => slot.trace_json(state, opts),
            Err(e) => Trace {
                result: Err(e),
                steps: Vec::new(),
                halted_by: None,
                given: None,
            },
        }
    }

    /// Calls an event by name and reports each plugin's step, awaiting async plugins.
    pub async fn trace_json_async(
        &self,
        event: &str,
        state: Value,
        opts: &CallOptions,
    ) -> Trace<Value> {
        match self.slot(event) {
            Ok(slot) => slot.trace_json_async(state, opts).await,
            Err(e) => Trace {
                result: Err(e),
                steps: Vec::new(),
                halted_by: None,
                given: None,
            },
        }
    }

    /// Hands a call by name to the background and returns at once.
    pub fn spawn_json(
        &self,
        event: &str,
        state: Value,
        opts: CallOptions,
    ) -> Result<Spawned, CallError> {
        let slot = self.slot(event)?;
        let name = event.to_owned();
        let spawned = self.shared.background.submit(Box::pin(async move {
            if let Err(e) = slot.call_json_async(state, &opts).await {
                tracing::debug!(event = %name, error = %e, "background call failed");
            }
        }));
        self.shared.note_spawn(event, spawned);
        Ok(spawned)
    }
}
