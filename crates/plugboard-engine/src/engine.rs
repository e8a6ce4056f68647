//! The engine: registry, lifecycle, dependency resolution, and the handles that call events.

use std::any::{Any, TypeId, type_name};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use plugboard_core::{
    AsyncPlugin, DependType, EMPTY_META, Event, EventInfo, Json, Meta, Plugin, PluginRecord,
    Reason, Registration, Status,
};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::background::{Background, Spawned};
use crate::chain::{AnySlot, CallOptions, OnFailure, PlanStep, PluginProfile, Slot, Stats, Trace};
use crate::change::{Cause, LifecycleEvent};
use crate::code::{Code, CodeKind};
use crate::error::{CallError, EngineError, Failure, Op};
use crate::graph::{Node, active_set, chain_order, find_cycle};
use crate::persist::{Changeset, PersistError, Persistence, StoredRecord};

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
    /// Whether it is in its event's chain now.
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
        if let Some(slot) = self.lookup::<E>() {
            return Ok(slot);
        }
        let _g = ControlGuard::enter(Op::Register)?;
        let _ctl = self.shared.lock();
        let slots = self.shared.slots.load();
        if let Some(slot) = slots.by_type.get(&TypeId::of::<E>())
            && let Ok(slot) = slot.clone().downcast::<Slot<E::State>>()
        {
            return Ok(slot);
        }
        if let Some(existing) = slots.by_name.get(E::NAME) {
            return Err(EngineError::EventConflict {
                event: E::NAME.to_owned(),
                existing: existing.state_name().to_owned(),
                requested: type_name::<E::State>().to_owned(),
            });
        }
        let slot: Arc<Slot<E::State>> = Arc::new(Slot::new(
            E::info(),
            E::binary_layout(),
            Arc::downgrade(&self.shared),
            self.shared.default_policy,
        ));
        let mut next = Slots::clone(&slots);
        next.by_name.insert(E::NAME.to_owned(), slot.clone());
        next.by_type.insert(TypeId::of::<E>(), slot.clone());
        self.shared.slots.store(Arc::new(next));
        Ok(slot)
    }

    fn lookup<E: Event>(&self) -> Option<Arc<Slot<E::State>>> {
        self.shared
            .slots
            .load()
            .by_type
            .get(&TypeId::of::<E>())
            .and_then(|s| s.clone().downcast::<Slot<E::State>>().ok())
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

    /// The plugins in an event's chain now, in the order they run.
    pub fn chain(&self, event: &str) -> Result<Vec<String>, EngineError> {
        self.slot(event)
            .map(|s| s.names())
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
        let mut events = Vec::new();
        self.shared.rebuild(&mut ctl, &mut events);
        self.shared.publish(&ctl, events);
        Ok(())
    }

    /// Each plugin's time in an event's chain, collected while profiling is on.
    pub fn profile(&self, event: &str) -> Result<Vec<PluginProfile>, EngineError> {
        self.slot(event)
            .map(|s| s.profile())
            .map_err(|_| EngineError::UnknownEvent(event.to_owned()))
    }

    // ----- registration -----

    /// Registers (or re-registers) a native plugin on event `E`.
    ///
    /// Registration is an upsert: the fields from code (priority, dependencies, extra) and
    /// the code itself replace the old ones; the runtime status is kept. A new plugin is
    /// `registered` and joins its chain once started.
    pub fn register<E: Event, P: Plugin<E>>(
        &self,
        registration: Registration,
        plugin: P,
    ) -> Result<PluginRecord, EngineError> {
        validate_name("plugin", &registration.name)?;
        self.typed_slot::<E>()?;
        self.register_code(E::NAME, registration, Code::native::<E, P>(plugin))
    }

    /// Registers (or re-registers) a native async plugin on event `E`.
    pub fn register_async<E: Event, P: AsyncPlugin<E>>(
        &self,
        registration: Registration,
        plugin: P,
    ) -> Result<PluginRecord, EngineError> {
        validate_name("plugin", &registration.name)?;
        self.typed_slot::<E>()?;
        self.register_code(E::NAME, registration, Code::native_async::<E, P>(plugin))
    }

    /// Registers a plugin that works on JSON on any declared event, by name. On a typed
    /// event the state is converted to JSON around this plugin's step only.
    pub fn register_json<P: Plugin<Json>>(
        &self,
        event: &str,
        registration: Registration,
        plugin: P,
    ) -> Result<PluginRecord, EngineError> {
        self.register_code(event, registration, Code::json(plugin))
    }

    /// Registers prepared code (for hosts of other plugin kinds, such as WebAssembly).
    pub fn register_code(
        &self,
        event: &str,
        registration: Registration,
        code: Code,
    ) -> Result<PluginRecord, EngineError> {
        let name = registration.name.clone();
        let result = self.register_inner(event, registration, code);
        if let Err(e) = &result {
            self.shared.failed_op(Op::Register, Some(&name), e);
        }
        result
    }

    fn register_inner(
        &self,
        event: &str,
        registration: Registration,
        code: Code,
    ) -> Result<PluginRecord, EngineError> {
        let _g = ControlGuard::enter(Op::Register)?;
        validate_name("plugin", &registration.name)?;
        for d in &registration.depends {
            validate_name("plugin", d)?;
        }
        let slot = self
            .slot(event)
            .map_err(|_| EngineError::UnknownEvent(event.to_owned()))?;
        // JSON and encoded steps fit any event; native ones only their own.
        if code.state_type() != slot.state_type()
            && code.state_type() != TypeId::of::<Value>()
            && code.state_type() != TypeId::of::<crate::code::Encoded>()
        {
            return Err(EngineError::StateMismatch {
                plugin: registration.name,
                event: event.to_owned(),
                expected: slot.state_name().to_owned(),
                found: code.state_name().to_owned(),
            });
        }
        let mut ctl = self.shared.lock();
        let name = registration.name.clone();
        let others: BTreeMap<String, Vec<String>> = ctl
            .plugins
            .iter()
            .filter(|(n, _)| **n != name)
            .map(|(n, e)| (n.clone(), e.record.depends.clone()))
            .collect();
        if let Some(cycle) = find_cycle(&name, &registration.depends, &others) {
            return Err(EngineError::Cycle(cycle));
        }
        let now = OffsetDateTime::now_utc();
        let existing = ctl.plugins.get(&name);
        let mut record = PluginRecord {
            name: name.clone(),
            event: event.to_owned(),
            priority: registration.priority,
            status: existing.map_or(Status::Registered, |e| e.record.status),
            depend_type: registration.depend_type,
            depends: registration.depends,
            extra: registration.extra,
            inserted_at: existing.map_or(now, |e| e.record.inserted_at),
            updated_at: now,
        };
        // Registering the same fields again (every boot does) is not a change: keep the
        // timestamp, so that nothing needs writing.
        if let Some(e) = existing {
            let same = PluginRecord {
                updated_at: e.record.updated_at,
                ..record.clone()
            };
            if same == e.record {
                record.updated_at = e.record.updated_at;
            }
        }
        code.lifecycle(Op::Register, &record)
            .map_err(|reason| EngineError::Refused {
                plugin: name.clone(),
                op: Op::Register,
                reason,
            })?;
        let before = statuses(&ctl);
        let snapshot = self.shared.snapshot(&ctl);
        let replaced = existing.is_some();
        // A deletion outlives a restart: at boot, registered code is set aside until an
        // operator starts the plugin again. Any other registration brings it back.
        let still_deleted = ctl.booting && existing.is_some_and(|e| e.unloaded);
        let (stats, version) = match ctl.plugins.get(&name) {
            Some(e) => {
                // New code starts with a clean failure streak.
                e.stats.consecutive.store(0, Relaxed);
                (e.stats.clone(), e.version)
            }
            None => (Arc::default(), 0),
        };
        ctl.plugins.insert(
            name.clone(),
            Entry {
                name: Arc::from(name.as_str()),
                record: record.clone(),
                code: (!still_deleted).then(|| code.clone()),
                stats,
                version,
                unloaded: still_deleted,
                parked: still_deleted.then_some(code),
            },
        );
        let mut events = vec![LifecycleEvent::Registered { record, replaced }];
        // A host's registrations at boot neither hold nor release: `finish_boot` does, once,
        // on all the code registered, so that the order of registrations does not matter
        // and a record whose code never comes keeps its stored status. (A records-only
        // engine, such as the CLI's, never finishes a boot.)
        if !ctl.booting || ctl.records_only {
            self.shared.settle(
                &mut ctl,
                &before,
                &[],
                None,
                Cause::Operator { op: Op::Register },
                &mut events,
            );
        }
        self.shared.commit(&mut ctl, snapshot)?;
        self.shared.rebuild(&mut ctl, &mut events);
        let record = ctl.plugins[&name].record.clone();
        self.shared.publish(&ctl, events);
        Ok(record)
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

    // ----- storage -----

    /// Loads stored records at boot, before the host registers its code. Records whose
    /// code is never registered stay known but are never called ("missing code"); see
    /// [`Engine::finish_boot`].
    pub fn restore(&self, records: Vec<StoredRecord>) -> Result<(), EngineError> {
        let _g = ControlGuard::enter(Op::Register)?;
        let mut ctl = self.shared.lock();
        ctl.booting = true;
        for stored in records {
            let name = stored.record.name.clone();
            match ctl.plugins.get_mut(&name) {
                Some(e) => {
                    e.record = stored.record;
                    e.version = stored.version;
                    e.unloaded = stored.unloaded;
                }
                None => {
                    ctl.plugins.insert(name.clone(), Entry::stored(stored));
                }
            }
        }
        let mut events = Vec::new();
        self.shared.rebuild(&mut ctl, &mut events);
        self.shared.publish(&ctl, events);
        Ok(())
    }

    /// Ends a boot: starts, once, every record still `registered` (a boot interrupted
    /// between registering and starting left it so), and reports the records whose code
    /// is missing.
    pub fn finish_boot(&self) -> Result<BootReport, EngineError> {
        {
            // From now on a record without code is missing: hold its dependents (once).
            let _g = ControlGuard::enter(Op::Start)?;
            let mut ctl = self.shared.lock();
            if ctl.booting {
                ctl.booting = false;
                let before = statuses(&ctl);
                let snapshot = self.shared.snapshot(&ctl);
                let mut events = Vec::new();
                self.shared.settle(
                    &mut ctl,
                    &before,
                    &[],
                    None,
                    Cause::DependenciesUp,
                    &mut events,
                );
                if let Err(e) = self.shared.commit(&mut ctl, snapshot) {
                    ctl.booting = true;
                    return Err(e);
                }
                self.shared.rebuild(&mut ctl, &mut events);
                self.shared.publish(&ctl, events);
            }
        }
        let (registered, missing): (Vec<String>, Vec<(String, String)>) = {
            let views = self.shared.views.load();
            let registered = views
                .entries
                .values()
                .filter(|e| e.code.is_some() && e.record.status == Status::Registered)
                .map(|e| e.record.name.clone())
                .collect();
            let missing = views
                .entries
                .values()
                // Deleted on purpose is not missing.
                .filter(|e| e.code.is_none() && !e.unloaded)
                .map(|e| (e.record.name.clone(), e.record.event.clone()))
                .collect();
            (registered, missing)
        };
        let mut report = BootReport::default();
        for name in registered {
            match self.start(name.as_str()) {
                Ok(_) => report.started.push(name),
                Err(e) => report.failed.push((name, e.to_string())),
            }
        }
        for (plugin, event) in missing {
            tracing::warn!(%plugin, %event, "plugin record has no code: it will not be called");
            let _ = self.shared.changes.send(LifecycleEvent::MissingCode {
                plugin: plugin.clone(),
                event,
            });
            report.missing_code.push(plugin);
        }
        Ok(report)
    }

    /// Applies records changed by another process sharing the storage: newer versions
    /// replace ours (code is kept; no callback runs), records gone from storage are
    /// removed, new ones are added. Dependents are then held or released here, where the
    /// code is, and those changes are written back. Returns whether anything changed.
    ///
    /// `load` reads the stored records; it runs under the engine's control lock, so that no
    /// local change can be committed between the read and its application (a record
    /// registered here in between would otherwise look deleted elsewhere).
    pub fn sync_external(
        &self,
        load: impl FnOnce() -> Result<Vec<StoredRecord>, String>,
    ) -> Result<bool, EngineError> {
        let _g = ControlGuard::enter(Op::Register)?;
        let mut ctl = self.shared.lock();
        let records = load().map_err(|e| EngineError::Persist(PersistError::Backend(e)))?;
        // If writing back the holds and releases fails, everything goes back to before the
        // stored records were applied, so that the next sync sees the difference again.
        let untouched = self
            .shared
            .persistence
            .as_ref()
            .map(|_| ctl.plugins.clone());
        let before = statuses(&ctl);
        let mut events = Vec::new();
        let mut changed = false;
        let mut seen = HashSet::new();
        for stored in records {
            let name = stored.record.name.clone();
            seen.insert(name.clone());
            match ctl.plugins.get_mut(&name) {
                // Storage is the truth: any other version (newer, or a row deleted and
                // created again elsewhere) replaces ours; the code is kept.
                Some(e) if stored.version != e.version => {
                    // An operator's start, restart or enable, wherever it was issued, gives
                    // the plugin a clean failure streak here too.
                    let running = |s: Status| matches!(s, Status::Started | Status::Restarted);
                    if running(stored.record.status)
                        && (e.record.status != stored.record.status
                            || e.record.updated_at != stored.record.updated_at)
                    {
                        e.stats.consecutive.store(0, Relaxed);
                    }
                    if stored.unloaded && !e.unloaded && e.code.is_some() {
                        // Deleted elsewhere: unload the code here too.
                        e.parked = e.code.take();
                        events.push(LifecycleEvent::Deleted {
                            plugin: name.clone(),
                            event: stored.record.event.clone(),
                        });
                    } else if !stored.unloaded && e.unloaded && e.code.is_none() {
                        // Registered again elsewhere: take the code back.
                        e.code = e.parked.take();
                    }
                    e.unloaded = stored.unloaded;
                    e.record = stored.record;
                    e.version = stored.version;
                    changed = true;
                }
                Some(_) => {}
                None => {
                    ctl.plugins.insert(name.clone(), Entry::stored(stored));
                    changed = true;
                }
            }
        }
        let gone: Vec<String> = ctl
            .plugins
            .values()
            .filter(|e| e.version > 0 && !seen.contains(&e.record.name))
            .map(|e| e.record.name.clone())
            .collect();
        for name in gone {
            if let Some(e) = ctl.plugins.remove(&name) {
                events.push(LifecycleEvent::Unregistered {
                    plugin: name,
                    event: e.record.event,
                });
                changed = true;
            }
        }
        if !changed {
            return Ok(false);
        }
        let snapshot = self.shared.snapshot(&ctl);
        self.shared
            .settle(&mut ctl, &before, &[], None, Cause::External, &mut events);
        if let Err(e) = self.shared.commit(&mut ctl, snapshot) {
            if let Some(untouched) = untouched {
                ctl.plugins = untouched;
            }
            return Err(e);
        }
        self.shared.rebuild(&mut ctl, &mut events);
        self.shared.publish(&ctl, events);
        Ok(true)
    }

    /// Waits until every stop decided at the failure threshold has run (they run on a
    /// thread of the engine's own, off the call path), at most `timeout`; whether they all
    /// did. For orderly shutdowns and tests.
    pub fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        self.shared.stopper.wait_idle(timeout)
    }

    /// Every record with its storage version, for storage tools.
    pub fn stored_records(&self) -> Vec<StoredRecord> {
        self.shared
            .views
            .load()
            .entries
            .values()
            .map(|e| StoredRecord {
                record: e.record.clone(),
                version: e.version,
                unloaded: e.unloaded,
            })
            .collect()
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

    /// Calls an event by name with a JSON state (typed events too).
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

/// A typed handle on one event: the hot path. Cheap to clone.
///
/// A call loads the event's current chain without a lock and runs it; it does no lookup by
/// name and allocates nothing of its own for native plugins.
pub struct Hook<E: Event> {
    slot: Arc<Slot<E::State>>,
    _e: PhantomData<fn() -> E>,
}

impl<E: Event> Clone for Hook<E> {
    fn clone(&self) -> Self {
        Hook {
            slot: self.slot.clone(),
            _e: PhantomData,
        }
    }
}

impl<E: Event> Hook<E> {
    /// Runs the chain and returns its result.
    #[inline]
    pub fn call(&self, state: E::State) -> Result<E::State, CallError> {
        self.slot.call(state, &EMPTY_META)
    }

    /// Runs the chain with read-only meta for the plugins.
    #[inline]
    pub fn call_with(&self, state: E::State, meta: &Meta) -> Result<E::State, CallError> {
        self.slot.call(state, meta)
    }

    /// Runs the chain, then puts back the part of the state that `private` selects, so
    /// that plugins cannot change it (Mishka's `private`). Only that part is cloned.
    pub fn call_keeping<P: Clone>(
        &self,
        mut state: E::State,
        private: impl Fn(&mut E::State) -> &mut P,
    ) -> Result<E::State, CallError> {
        let kept = private(&mut state).clone();
        let mut out = self.slot.call(state, &EMPTY_META)?;
        *private(&mut out) = kept;
        Ok(out)
    }

    /// Runs the chain for its effects and returns the input (Mishka's `no_return`).
    /// Failures are still counted and published.
    pub fn call_no_return(&self, state: E::State) -> E::State {
        let _ = self.slot.call(state.clone(), &EMPTY_META);
        state
    }

    /// Hands the call to a background task and returns at once. The call never blocks,
    /// slows or fails the caller: when the background is full it is dropped and counted.
    pub fn spawn(&self, state: E::State) -> Spawned {
        let slot = self.slot.clone();
        match self.slot.shared() {
            Some(shared) => {
                let s = shared.background.submit(Box::pin(async move {
                    if let Err(e) = slot.call_async(state, &EMPTY_META).await {
                        tracing::debug!(event = E::NAME, error = %e, "background call failed");
                    }
                }));
                shared.note_spawn(E::NAME, s);
                s
            }
            None => Spawned::Dropped,
        }
    }

    /// Runs a chain that may contain async plugins.
    pub async fn call_async(&self, state: E::State) -> Result<E::State, CallError> {
        self.slot.call_async(state, &EMPTY_META).await
    }

    /// Runs a chain that may contain async plugins, with meta.
    pub async fn call_async_with(
        &self,
        state: E::State,
        meta: &Meta,
    ) -> Result<E::State, CallError> {
        self.slot.call_async(state, meta).await
    }

    /// Runs the chain and reports each plugin's step.
    pub fn trace(&self, state: E::State) -> Trace<E::State> {
        self.slot.trace(state, &EMPTY_META)
    }

    /// Runs a chain that may contain async plugins and reports each plugin's step.
    pub async fn trace_async(&self, state: E::State) -> Trace<E::State> {
        self.slot.trace_async(state, &EMPTY_META).await
    }

    /// The plugins in the chain now, in order.
    pub fn plugins(&self) -> Vec<String> {
        self.slot.names()
    }
}

fn statuses(ctl: &Control) -> HashMap<String, Status> {
    ctl.plugins
        .iter()
        .map(|(n, e)| (n.clone(), e.record.status))
        .collect()
}

fn nodes(ctl: &Control) -> HashMap<&str, Node<'_>> {
    ctl.plugins
        .iter()
        .map(|(n, e)| {
            (
                n.as_str(),
                Node {
                    record: &e.record,
                    loaded: !e.unloaded && (e.code.is_some() || ctl.records_only || ctl.booting),
                },
            )
        })
        .collect()
}

fn active_of(ctl: &Control) -> HashSet<String> {
    active_set(&nodes(ctl))
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn waiting_for(record: &PluginRecord, active: &HashSet<String>) -> Vec<String> {
    if record.depend_type != DependType::Hard {
        return Vec::new();
    }
    record
        .depends
        .iter()
        .filter(|d| !active.contains(*d))
        .cloned()
        .collect()
}

fn info_of(views: &Views, e: &Entry, dependents: Vec<String>) -> PluginInfo {
    let active = &views.active;
    let last_error = e.stats.last_error.lock().ok().and_then(|l| l.clone());
    PluginInfo {
        record: e.record.clone(),
        loaded: e.code.is_some(),
        kind: e.code.as_ref().map(Code::kind),
        in_chain: active.contains(&e.record.name) && e.record.status.is_active(),
        waiting_for: waiting_for(&e.record, active),
        dependents,
        failures: e.stats.failures.load(Relaxed),
        consecutive_failures: e.stats.consecutive.load(Relaxed),
        last_error,
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Control> {
        // Callbacks run under catch_unwind, so a poisoned lock can only come from a bug in
        // the engine itself; the data is still consistent between operations.
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, ctl: &Control, events: Vec<LifecycleEvent>) {
        self.views.store(Arc::new(Views {
            entries: ctl.plugins.clone(),
            active: active_of(ctl),
        }));
        for ev in events {
            tracing::info!(target: "plugboard::lifecycle", event = ?ev);
            // No subscriber is not an error.
            let _ = self.changes.send(ev);
        }
    }

    /// The records as they were, when a write-through will need them to roll back.
    fn snapshot(&self, ctl: &Control) -> Option<BTreeMap<String, Entry>> {
        self.persistence.as_ref().map(|_| ctl.plugins.clone())
    }

    /// Writes the records that differ from `snapshot` through to storage; on failure puts
    /// the snapshot back, so that the operation changes nothing.
    fn commit(
        &self,
        ctl: &mut Control,
        snapshot: Option<BTreeMap<String, Entry>>,
    ) -> Result<(), EngineError> {
        let (Some(persistence), Some(snapshot)) = (&self.persistence, snapshot) else {
            return Ok(());
        };
        let mut changes = Changeset::default();
        for (name, e) in &ctl.plugins {
            let old = snapshot.get(name);
            if old.is_none_or(|o| o.record != e.record || o.unloaded != e.unloaded) {
                changes.upserts.push(StoredRecord {
                    record: e.record.clone(),
                    version: old.map_or(0, |o| o.version),
                    unloaded: e.unloaded,
                });
            }
        }
        for (name, o) in &snapshot {
            if !ctl.plugins.contains_key(name) {
                changes.removals.push(StoredRecord {
                    record: o.record.clone(),
                    version: o.version,
                    unloaded: o.unloaded,
                });
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        if let Err(e) = persistence.commit(&changes) {
            ctl.plugins = snapshot;
            return Err(EngineError::Persist(e));
        }
        for up in &changes.upserts {
            if let Some(e) = ctl.plugins.get_mut(&up.record.name) {
                e.version = up.version + 1;
            }
        }
        Ok(())
    }

    fn failed_op(&self, op: Op, plugin: Option<&str>, error: &EngineError) {
        tracing::warn!(%op, plugin, %error, "operation failed");
        let _ = self.changes.send(LifecycleEvent::OperationFailed {
            op,
            plugin: plugin.map(str::to_owned),
            error: error.to_string(),
        });
    }

    fn note_spawn(&self, event: &str, spawned: Spawned) {
        if spawned == Spawned::Dropped {
            let total = self.background.dropped();
            tracing::warn!(event, total, "background queue full; call dropped");
            let _ = self.changes.send(LifecycleEvent::BackgroundDropped {
                event: event.to_owned(),
                total,
            });
        }
    }

    /// The failure path of a call: publish, and past the threshold hand the stop to the
    /// stopper thread (the call itself never takes the control lock or writes).
    pub(crate) fn plugin_failed(
        self: &Arc<Self>,
        event: &str,
        plugin: &str,
        stats: &Arc<crate::chain::Stats>,
        failure: &Failure,
        consecutive: u32,
    ) {
        tracing::warn!(event, plugin, kind = %failure.kind, message = %failure.message, consecutive, "plugin failed");
        let _ = self.changes.send(LifecycleEvent::PluginFailed {
            plugin: plugin.to_owned(),
            event: event.to_owned(),
            failure: failure.clone(),
            consecutive,
        });
        if self.threshold == 0 || consecutive < self.threshold {
            return;
        }
        self.stopper.submit(self, plugin, consecutive, stats);
    }

    /// Applies one lifecycle operation to its target, then settles dependencies and
    /// rebuilds the chains that changed. With `forced`, callbacks cannot refuse (the
    /// failure threshold stops a plugin whatever it says).
    pub(crate) fn operate(
        &self,
        target: Target<'_>,
        op: Op,
        forced: Option<Cause>,
    ) -> Result<Report, EngineError> {
        let result = self.operate_inner(target, op, forced);
        if let Err(e) = &result {
            let plugin = match target {
                Target::Plugin(p) => Some(p),
                _ => None,
            };
            self.failed_op(op, plugin, e);
        }
        result
    }

    fn operate_inner(
        &self,
        target: Target<'_>,
        op: Op,
        forced: Option<Cause>,
    ) -> Result<Report, EngineError> {
        let _g = ControlGuard::enter(op)?;
        let mut ctl = self.lock();
        let names: Vec<String> = match target {
            Target::Plugin(name) => {
                if !ctl.plugins.contains_key(name) {
                    return Err(EngineError::UnknownPlugin(name.to_owned()));
                }
                vec![name.to_owned()]
            }
            Target::Event(event) => {
                let names: Vec<String> = ctl
                    .plugins
                    .values()
                    .filter(|e| e.record.event == event)
                    .map(|e| e.record.name.clone())
                    .collect();
                if names.is_empty() && !self.slots.load().by_name.contains_key(event) {
                    return Err(EngineError::UnknownEvent(event.to_owned()));
                }
                names
            }
            Target::All => ctl.plugins.keys().cloned().collect(),
        };
        let single = matches!(target, Target::Plugin(_));
        let before = statuses(&ctl);
        let snapshot = self.snapshot(&ctl);
        let mut events = Vec::new();
        let mut report = Report::default();
        let mut touched = Vec::new();
        let mut removed = Vec::new();
        if let (Some(Cause::FailureThreshold { .. }), Target::Plugin(name)) = (&forced, target) {
            // The stop was decided on a failure streak; if an operator has since restarted
            // the plugin (which resets the streak), it no longer applies.
            let streak = ctl
                .plugins
                .get(name)
                .map_or(0, |e| e.stats.consecutive.load(Relaxed));
            if streak < self.threshold {
                return Ok(Report::default());
            }
        }
        for name in names {
            match apply(
                &mut ctl,
                &name,
                op,
                forced.is_some(),
                &mut events,
                &mut removed,
            ) {
                Ok(true) => touched.push(name),
                Ok(false) => {}
                Err(e) if single => return Err(e),
                Err(e) => report.skipped.push((name, e)),
            }
        }
        let cause = forced.unwrap_or(Cause::Operator { op });
        self.settle(
            &mut ctl,
            &before,
            &touched,
            Some(cause),
            Cause::DependenciesUp,
            &mut events,
        );
        self.commit(&mut ctl, snapshot)?;
        self.rebuild(&mut ctl, &mut events);
        report.overridden = events
            .iter()
            .filter_map(|ev| match ev {
                LifecycleEvent::CallbackOverridden { plugin, reason, .. } => {
                    Some((plugin.clone(), reason.clone()))
                }
                _ => None,
            })
            .collect();
        report.changed = touched
            .iter()
            .filter_map(|n| ctl.plugins.get(n).map(|e| e.record.clone()))
            .chain(removed)
            .collect();
        self.publish(&ctl, events);
        Ok(report)
    }

    /// Holds plugins whose hard dependencies are not active and releases held ones whose
    /// dependencies are, then reports every status that differs from `before`.
    fn settle(
        &self,
        ctl: &mut Control,
        before: &HashMap<String, Status>,
        touched: &[String],
        cause: Option<Cause>,
        fallback: Cause,
        events: &mut Vec<LifecycleEvent>,
    ) {
        let active = active_of(ctl);
        let now = OffsetDateTime::now_utc();
        let mut moved: Vec<(String, Status, Cause)> = Vec::new();
        for (name, e) in &ctl.plugins {
            if e.unloaded
                || (e.code.is_none() && !ctl.records_only && !ctl.booting)
                || !e.record.status.wants_to_run()
            {
                continue;
            }
            let waiting = waiting_for(&e.record, &active);
            match (e.record.status, waiting.first()) {
                (Status::Started | Status::Restarted, Some(dep)) => moved.push((
                    name.clone(),
                    Status::Held,
                    Cause::DependencyDown {
                        dependency: dep.clone(),
                    },
                )),
                (Status::Held, None) => {
                    moved.push((name.clone(), Status::Restarted, Cause::DependenciesUp))
                }
                _ => {}
            }
        }
        let mut auto: HashMap<String, Cause> = HashMap::new();
        for (name, to, why) in moved {
            if let Some(e) = ctl.plugins.get_mut(&name) {
                e.record.status = to;
                e.record.updated_at = now;
            }
            auto.insert(name, why);
        }
        for (name, e) in &ctl.plugins {
            let from = before.get(name).copied();
            let to = e.record.status;
            let Some(from) = from else { continue };
            if from == to {
                continue;
            }
            // A hold or release computed here names its dependency, even for a plugin the
            // operation touched (`start` of a plugin whose dependency is down holds it).
            let why = match auto.get(name) {
                Some(why) => why.clone(),
                None if touched.contains(name) => cause
                    .clone()
                    .unwrap_or(Cause::Operator { op: Op::Register }),
                None => fallback.clone(),
            };
            events.push(LifecycleEvent::StatusChanged {
                plugin: name.clone(),
                event: e.record.event.clone(),
                from,
                to,
                cause: why,
            });
        }
    }

    /// Compiles each event's chain from the active plugins and swaps in those that changed.
    fn rebuild(&self, ctl: &mut Control, events: &mut Vec<LifecycleEvent>) {
        let active = active_of(ctl);
        let mut per_event: HashMap<&str, Vec<&PluginRecord>> = HashMap::new();
        for e in ctl.plugins.values() {
            if active.contains(&e.record.name) && e.record.status.is_active() {
                per_event
                    .entry(e.record.event.as_str())
                    .or_default()
                    .push(&e.record);
            }
        }
        let slots = self.slots.load();
        let mut updates = Vec::new();
        for (event, slot) in &slots.by_name {
            let members = per_event
                .get(event.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let plan: Vec<PlanStep> = chain_order(members)
                .into_iter()
                .filter_map(|r| {
                    let e = ctl.plugins.get(&r.name)?;
                    Some(PlanStep {
                        name: e.name.clone(),
                        code: e.code.clone()?,
                        stats: e.stats.clone(),
                    })
                })
                .collect();
            let policy = ctl
                .policies
                .get(event)
                .copied()
                .unwrap_or(self.default_policy);
            let profiling = ctl.profiling.contains(event);
            let unchanged = match ctl.installed.get(event) {
                Some(i) => i.same(&plan, policy, profiling),
                None => plan.is_empty() && policy == self.default_policy && !profiling,
            };
            if unchanged {
                continue;
            }
            slot.install(&plan, policy, profiling);
            events.push(LifecycleEvent::ChainRebuilt {
                event: event.clone(),
                plugins: plan.iter().map(|p| p.name.to_string()).collect(),
            });
            updates.push((
                event.clone(),
                Installed {
                    steps: plan.into_iter().map(|p| (p.name, p.code)).collect(),
                    policy,
                    profiling,
                },
            ));
        }
        for (event, installed) in updates {
            ctl.installed.insert(event, installed);
        }
    }
}

/// Applies `op` to one plugin. Returns whether anything changed; an error changes nothing.
fn apply(
    ctl: &mut Control,
    name: &str,
    op: Op,
    forced: bool,
    events: &mut Vec<LifecycleEvent>,
    removed: &mut Vec<PluginRecord>,
) -> Result<bool, EngineError> {
    let records_only = ctl.records_only;
    let Some(entry) = ctl.plugins.get_mut(name) else {
        return Err(EngineError::UnknownPlugin(name.to_owned()));
    };
    let from = entry.record.status;
    // Starting, enabling or restarting a deleted plugin brings its code back.
    let back = entry.unloaded && matches!(op, Op::Start | Op::Enable | Op::Restart);
    let to = match (op, from) {
        (Op::Start | Op::Restart, Status::Stopped) => {
            return Err(EngineError::Stopped(name.to_owned()));
        }
        (Op::Start | Op::Enable, Status::Started | Status::Restarted) if back => None,
        (Op::Start | Op::Enable, Status::Started | Status::Restarted) => return Ok(false),
        (Op::Start | Op::Enable | Op::Restart, Status::Registered) => Some(Status::Started),
        (Op::Start | Op::Enable, Status::Held) => Some(Status::Started),
        (Op::Enable, Status::Stopped) | (Op::Restart, _) => Some(Status::Restarted),
        (Op::Stop, Status::Stopped) => return Ok(false),
        (Op::Stop, _) => Some(Status::Stopped),
        (Op::Delete, _) if entry.unloaded || (entry.code.is_none() && !records_only) => {
            return Ok(false);
        }
        (Op::Delete | Op::Unregister, _) => None,
        (Op::Register, _) => return Ok(false),
    };
    // A plugin that never ran is started, not restarted, whatever the operation's name.
    let callback = if from == Status::Registered && op == Op::Restart {
        Op::Start
    } else {
        op
    };
    if back {
        entry.unloaded = false;
        if entry.code.is_none() {
            entry.code = entry.parked.take();
        }
        events.push(LifecycleEvent::Undeleted {
            plugin: name.to_owned(),
            event: entry.record.event.clone(),
        });
    }
    if let Some(code) = &entry.code
        && let Err(reason) = code.lifecycle(callback, &entry.record)
    {
        // A plugin may refuse to start, but never to be taken out: the operator (or the
        // failure threshold) wins, and the refusal is reported.
        if !forced && !op.takes_out() {
            if back {
                entry.parked = entry.code.take();
                entry.unloaded = true;
                events.pop();
            }
            return Err(EngineError::Refused {
                plugin: name.to_owned(),
                op,
                reason,
            });
        }
        tracing::warn!(plugin = name, %op, %reason, "callback failed; the operation goes ahead");
        events.push(LifecycleEvent::CallbackOverridden {
            plugin: name.to_owned(),
            event: entry.record.event.clone(),
            op,
            reason: reason.to_string(),
        });
    }
    match op {
        Op::Delete => {
            // Set aside, not dropped: `start` brings it back without a new registration.
            entry.parked = entry.code.take();
            entry.unloaded = true;
            events.push(LifecycleEvent::Deleted {
                plugin: name.to_owned(),
                event: entry.record.event.clone(),
            });
        }
        Op::Unregister => {
            let event = entry.record.event.clone();
            if let Some(gone) = ctl.plugins.remove(name) {
                removed.push(gone.record);
            }
            events.push(LifecycleEvent::Unregistered {
                plugin: name.to_owned(),
                event,
            });
        }
        _ => {
            if let Some(to) = to {
                entry.record.status = to;
                entry.record.updated_at = OffsetDateTime::now_utc();
            }
            if matches!(op, Op::Start | Op::Enable | Op::Restart) {
                // An operator bringing a plugin back gives it a clean failure streak.
                entry.stats.consecutive.store(0, Relaxed);
            }
        }
    }
    Ok(true)
}
