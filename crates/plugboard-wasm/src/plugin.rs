//! One loaded plugin: its pre-instantiated component, its warm instances, its limits, and
//! how its calls and callbacks cross the sandbox.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use plugboard_core::{Context, PluginRecord, Reason, Reply, Wire};
use plugboard_engine::{
    Callbacks, Closing, Code, EncodedStep, Failure, FailureKind, JsonWrapper, Op, Opened, Told,
};
use wasmtime::Store;
use wasmtime::component::types::ComponentItem;

use crate::bindings::{self, Contract, Guest, GuestPre, GuestReply};
use crate::cache::{self, Origin};
use crate::capabilities::{Emitter, KeyValue};
use crate::host::{Grants, HostState, Stopped, WasmError, WasmHost};

/// The limits a plugin runs under. The defaults fit a plugin that handles a request's
/// worth of data; the operator may loosen or tighten them per plugin.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Linear memory cap.
    pub memory: usize,
    /// How long one call (or callback) may run.
    pub deadline: Duration,
    /// Fuel per call, when the host was configured with fuel.
    pub fuel: Option<u64>,
    /// The largest reply (encoded state) accepted.
    pub max_reply: usize,
    /// Warm instances kept for reuse.
    pub warm: usize,
    /// The host imports it may call. The default grants every one: a component an
    /// embedder loads itself is its own code; the installer grants a package only what its
    /// manifest asks for.
    pub grants: Grants,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 64 << 20,
            deadline: Duration::from_millis(100),
            fuel: None,
            max_reply: 1 << 20,
            warm: 4,
            grants: Grants::ALL,
        }
    }
}

/// A warm instance, ready for a call.
struct Warm {
    store: Store<HostState>,
    plugin: Guest,
    /// The settings' version when it was made: an instance made before a settings change
    /// is not reused, so that a plugin that caches its settings sees the new ones.
    settings_version: u64,
}

/// A loaded, validated WebAssembly plugin.
pub struct WasmPlugin {
    host: WasmHost,
    name: Arc<str>,
    pre: GuestPre,
    /// The contract version it was built against.
    contract: Contract,
    /// The names of the component's imports (`plugboard:plugin/kv@0.4.0`, `wasi:…`).
    imports: Vec<String>,
    limits: Limits,
    settings: Arc<RwLock<Option<String>>>,
    /// Its key-value data, shared with its instances; none until granted.
    kv: Arc<RwLock<Option<Arc<dyn KeyValue>>>>,
    /// Its event emitter; none until granted.
    emitter: Arc<RwLock<Option<Arc<dyn Emitter>>>>,
    /// The host imports it is granted; changed live by `set_grants`.
    grants: RwLock<Grants>,
    /// The `http` capability: none until granted; changed live by `set_http`.
    http: Arc<RwLock<Option<crate::http::HttpAccess>>>,
    http_stats: Arc<crate::http::HttpStats>,
    /// Bumped on every change of `settings` or `grants`.
    settings_version: AtomicU64,
    /// Its log budget, shared by its instances.
    logs: Arc<crate::host::LogBudget>,
    /// Warm instances; the lock is held only to take or return one, never during a call,
    /// so calls from several threads run concurrently.
    warm: Mutex<Vec<Warm>>,
    /// The binary layout the guest reads per event (asked once per event).
    layouts: Mutex<HashMap<String, Option<u64>>>,
    hash: String,
    origin: Origin,
    /// The per-call deadline in epoch ticks, worked out when it is set rather than on
    /// every call (it is a `u128` division, on the hot path): the load-time limit, or an
    /// operator's override ([`WasmPlugin::set_deadline`]).
    deadline_ticks: AtomicU64,
    /// The same deadline in nanoseconds, for the host's waits.
    deadline_nanos: AtomicU64,
}

impl WasmHost {
    /// Loads a component from a file; see [`WasmHost::load`].
    pub fn load_file(
        &self,
        name: &str,
        path: &Path,
        limits: Limits,
    ) -> Result<WasmPlugin, WasmError> {
        let bytes = std::fs::read(path)
            .map_err(|e| WasmError::Other(format!("{}: {e}", path.display())))?;
        self.load(name, &bytes, limits)
    }

    /// Compiles (or loads from the cache), validates against the contract and
    /// pre-instantiates a plugin component, then instantiates it once to prove it starts.
    pub fn load(&self, name: &str, bytes: &[u8], limits: Limits) -> Result<WasmPlugin, WasmError> {
        let inner = &self.inner;
        if limits.memory > inner.config.max_memory {
            return Err(WasmError::Other(format!(
                "plugin `{name}` asks for {} MiB of memory; this host allows {} MiB",
                limits.memory >> 20,
                inner.config.max_memory >> 20
            )));
        }
        let hash = cache::sha256(bytes);
        let known = inner
            .compiled
            .lock()
            .ok()
            .and_then(|c| c.get(&hash).cloned());
        let (component, origin) = match known {
            Some(c) => (c, Origin::Cached),
            None => {
                let (c, _, origin) =
                    cache::load(&inner.engine, inner.config.cache_dir.as_deref(), bytes)?;
                if let Ok(mut m) = inner.compiled.lock() {
                    m.insert(hash.clone(), c.clone());
                }
                (c, origin)
            }
        };
        let contract = check_contract(&inner.engine, &component)?;
        let imports = component
            .component_type()
            .imports(&inner.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let instance_pre = inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| WasmError::Link(format!("{e:#}")))?;
        let pre =
            GuestPre::new(contract, instance_pre).map_err(|e| WasmError::Link(format!("{e:#}")))?;
        let (deadline_ticks, deadline_nanos) = self.deadline_in_ticks(limits.deadline);
        let grants = limits.grants;
        let plugin = WasmPlugin {
            host: self.clone(),
            name: Arc::from(name),
            pre,
            contract,
            imports,
            limits,
            settings: Arc::default(),
            kv: Arc::default(),
            grants: RwLock::new(grants),
            emitter: Arc::default(),
            http: Arc::default(),
            http_stats: Arc::default(),
            settings_version: AtomicU64::new(0),
            logs: Arc::new(crate::host::LogBudget::new(
                self.inner.log_lines_dropped.clone(),
            )),
            warm: Mutex::new(Vec::new()),
            layouts: Mutex::default(),
            hash,
            origin,
            deadline_ticks: AtomicU64::new(deadline_ticks),
            deadline_nanos: AtomicU64::new(deadline_nanos),
        };
        let warm = plugin
            .instantiate()
            .map_err(|f| WasmError::Refused(f.message))?;
        plugin.give_back(warm);
        Ok(plugin)
    }
}

impl WasmHost {
    /// A deadline as epoch ticks of this host's clock (at least one) and as nanoseconds.
    fn deadline_in_ticks(&self, deadline: Duration) -> (u64, u64) {
        let nanos = deadline.as_nanos();
        let ticks = u64::try_from(nanos / self.inner.tick.as_nanos().max(1))
            .unwrap_or(u64::MAX)
            .max(1);
        (ticks, u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// The contract version a component's `guest` export names; refuses components that do
/// not export the contract, or export a version this host does not serve.
fn check_contract(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Result<Contract, WasmError> {
    let ty = component.component_type();
    let mut found = None;
    for (name, item) in ty.exports(engine) {
        if let Some(version) = name.strip_prefix("plugboard:plugin/guest@")
            && matches!(item.ty, ComponentItem::ComponentInstance(_))
        {
            found = Some(version.to_owned());
        }
    }
    match found {
        None => Err(WasmError::NotAPlugin),
        Some(v) => Contract::of(&v).ok_or(WasmError::ContractVersion {
            found: v,
            supported: crate::bindings::SERVED,
        }),
    }
}

fn failure(kind: FailureKind, message: impl Into<String>) -> Failure {
    Failure::new(kind, message)
}

impl WasmPlugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SHA-256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.hash
    }

    /// Whether the component was compiled now or came from the cache.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The contract version it was built against (`0.2` or `0.3`).
    pub fn contract(&self) -> &'static str {
        match self.contract {
            Contract::V2 => "0.2",
            Contract::V3 => "0.3",
            Contract::V4 => "0.4",
        }
    }

    /// Whether the component exports the `wrapper` interface (contract 0.4 and later):
    /// whether it can run around an event's chain ([`WasmPlugin::wrapper_code`]).
    pub fn exports_wrapper(&self) -> bool {
        self.pre.has_wrapper()
    }

    /// The plugin as engine code for a wrapper, ready for `Engine::register_code`: its
    /// `before` and `after` run around the rest of the event's chain. Refused for a
    /// component that does not export the `wrapper` interface.
    pub fn wrapper_code(self: Arc<Self>) -> Result<Code, WasmError> {
        if !self.exports_wrapper() {
            return Err(WasmError::Refused(format!(
                "`{}` cannot be a wrapper: its component does not export `plugboard:plugin/wrapper` (contract {}; wrappers need 0.4 or later, built against the world `plugin-wrapper` or `wrapper-basic`)",
                self.name,
                self.contract()
            )));
        }
        Ok(Code::json_wrapper(self))
    }

    /// The names of the component's imports, e.g. `plugboard:plugin/kv@0.4.0`: what it
    /// may call, whether or not it is granted (a loader can refuse a component that
    /// imports a capability its package did not ask for).
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Whether the component imports the `kv` capability's interface.
    pub fn imports_kv(&self) -> bool {
        self.imports
            .iter()
            .any(|i| i.starts_with("plugboard:plugin/kv@"))
    }

    /// Grants (`Some`) or revokes (`None`) the `kv` capability: the plugin's own key-value
    /// data. Takes effect on its next import call, in every instance.
    pub fn set_kv(&self, kv: Option<Arc<dyn KeyValue>>) {
        if let Ok(mut k) = self.kv.write() {
            *k = kv;
        }
    }

    /// Grants (`Some`) or revokes (`None`) the `emit` capability: the service that fires
    /// the events it may fire. Takes effect on its next emit, in every instance.
    pub fn set_emitter(&self, emitter: Option<Arc<dyn Emitter>>) {
        if let Ok(mut e) = self.emitter.write() {
            *e = emitter;
        }
    }

    /// Grants (`Some`) or revokes (`None`) the `http` capability: which origins it may
    /// reach. Takes effect on its next request, in every instance.
    pub fn set_http(&self, access: Option<crate::http::HttpAccess>) {
        if let Ok(mut a) = self.http.write() {
            *a = access;
        }
    }

    /// Its outbound HTTP since it was loaded.
    pub fn http_counts(&self) -> crate::http::HttpCounts {
        self.http_stats.counts()
    }

    /// The host imports it is granted now (at first, [`Limits::grants`]).
    pub fn grants(&self) -> Grants {
        self.grants
            .read()
            .map(|g| *g)
            .unwrap_or_else(|p| *p.into_inner())
    }

    /// Changes the host imports it is granted. Like a settings change, the warm instances
    /// are let go: from its next call on, every instance runs with the new grants.
    pub fn set_grants(&self, grants: Grants) {
        if let Ok(mut g) = self.grants.write() {
            if *g == grants {
                return;
            }
            *g = grants;
            self.settings_version.fetch_add(1, Ordering::SeqCst);
        }
        if let Ok(mut w) = self.warm.lock() {
            w.clear();
        }
    }

    /// The limits it was loaded with (its deadline may since have been overridden: see
    /// [`WasmPlugin::deadline`]).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The deadline of each call (and of the waits within it) in force now.
    pub fn deadline(&self) -> Duration {
        Duration::from_nanos(self.deadline_nanos.load(Ordering::Relaxed))
    }

    /// Overrides the deadline it was loaded with (an operator giving a plugin that calls
    /// out a longer one, say), from its next call on, in every instance; `None` restores
    /// the load-time limit. A call running now keeps the deadline it started with.
    pub fn set_deadline(&self, deadline: Option<Duration>) {
        let (ticks, nanos) = self
            .host
            .deadline_in_ticks(deadline.unwrap_or(self.limits.deadline));
        self.deadline_ticks.store(ticks, Ordering::Relaxed);
        self.deadline_nanos.store(nanos, Ordering::Relaxed);
    }

    /// The settings the plugin reads through its `settings` import.
    pub fn settings(&self) -> Option<String> {
        self.settings.read().ok().and_then(|s| s.clone())
    }

    /// Sets the settings the plugin reads through its `settings` import. When they
    /// change, the warm instances are let go: the plugin's next call runs on a fresh
    /// instance, which reads the new settings even if the plugin cached the old ones.
    pub fn set_settings(&self, settings: Option<String>) {
        if let Ok(mut s) = self.settings.write() {
            if *s == settings {
                return;
            }
            *s = settings;
            self.settings_version.fetch_add(1, Ordering::SeqCst);
        }
        if let Ok(mut w) = self.warm.lock() {
            w.clear();
        }
    }

    /// Log lines dropped because the plugin wrote more than
    /// [`crate::LOG_LINES_PER_SECOND`] in a second.
    pub fn log_lines_dropped(&self) -> u64 {
        self.logs.dropped()
    }

    /// How many warm instances are kept now.
    pub fn warm_instances(&self) -> usize {
        self.warm.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// Bytes of linear memory each warm instance holds (for reports).
    pub fn instance_memory(&self) -> Vec<usize> {
        self.warm
            .lock()
            .map(|w| w.iter().map(|i| i.store.data().limits.used).collect())
            .unwrap_or_default()
    }

    /// The plugin as engine code, ready for `Engine::register_code`. It works on the
    /// encoded state: consecutive wasm plugins in a chain pass the bytes along.
    pub fn code(self: Arc<Self>) -> Code {
        Code::encoded_step(self)
    }

    fn instantiate(&self) -> Result<Warm, Failure> {
        // Read before the instance exists: a change racing with it makes it stale, never
        // the other way round.
        let settings_version = self.settings_version.load(Ordering::SeqCst);
        let state = HostState::new(
            self.name.clone(),
            self.limits.memory,
            self.settings.clone(),
            self.grants(),
            self.logs.clone(),
            self.kv.clone(),
            self.emitter.clone(),
            crate::http::PluginHttp {
                plugin: self.name.clone(),
                access: self.http.clone(),
                stats: self.http_stats.clone(),
                deadline: std::time::Instant::now() + self.deadline(),
                denied: self.host.inner.denied.clone(),
            },
        );
        let mut store = Store::new(&self.host.inner.engine, state);
        store.limiter(|s| &mut s.limits);
        self.arm(&mut store)?;
        let plugin = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&self.name, "instantiate", e))?;
        Ok(Warm {
            store,
            plugin,
            settings_version,
        })
    }

    /// Sets the deadline (and fuel) for the next call.
    fn arm(&self, store: &mut Store<HostState>) -> Result<(), Failure> {
        store.set_epoch_deadline(self.deadline_ticks.load(Ordering::Relaxed));
        // Waits in the host (HTTP, WASI streams) end at the same deadline.
        store.data_mut().http.deadline = std::time::Instant::now() + self.deadline();
        if self.host.inner.config.fuel {
            // With metering on, a store starts with no fuel: a plugin without a budget
            // gets an unlimited one.
            let fuel = self.limits.fuel.unwrap_or(u64::MAX);
            store
                .set_fuel(fuel)
                .map_err(|e| failure(FailureKind::ResourceLimit, e.to_string()))?;
        }
        Ok(())
    }

    fn take(&self) -> Result<Warm, Failure> {
        let pooled = self.warm.lock().ok().and_then(|mut w| w.pop());
        match pooled {
            Some(mut warm) => {
                self.arm(&mut warm.store)?;
                Ok(warm)
            }
            None => self.instantiate(),
        }
    }

    fn give_back(&self, warm: Warm) {
        if warm.settings_version != self.settings_version.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(mut w) = self.warm.lock()
            && w.len() < self.limits.warm
        {
            w.push(warm);
        }
    }

    /// Runs `f` on a warm instance. An instance that trapped is dropped (its state may be
    /// anything), never reused.
    fn with_instance<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Warm) -> wasmtime::Result<T>,
    ) -> Result<T, Failure> {
        let mut warm = self.take()?;
        match f(&mut warm) {
            Ok(v) => {
                self.give_back(warm);
                Ok(v)
            }
            Err(e) => Err(classify(&self.name, what, e)),
        }
    }

    fn record_json(record: &PluginRecord) -> String {
        serde_json::to_string(record).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// Innermost frames of one function past which an out-of-bounds access is taken for a
/// stack overflow. A Rust (or C) guest keeps the locals whose address is taken on a
/// shadow stack at the bottom of linear memory; running off it is an out-of-bounds
/// access, not the engine's native stack overflow. wasmtime keeps the innermost 20
/// frames of a trap's backtrace, so this is the most that can be asked for.
const RECURSION_FRAMES: usize = 16;

/// Whether the innermost frames of a backtrace are one function calling itself.
fn recursing(backtrace: Option<&wasmtime::WasmBacktrace>) -> bool {
    let Some(frames) = backtrace.map(wasmtime::WasmBacktrace::frames) else {
        return false;
    };
    frames.len() >= RECURSION_FRAMES
        && frames[..RECURSION_FRAMES]
            .windows(2)
            .all(|w| w[0].func_index() == w[1].func_index())
}

/// Turns a wasmtime error into the failure a plugin is charged with: by the error's type
/// (the host's own [`Stopped`], wasmtime's traps and pool errors), never its text.
fn classify(plugin: &str, what: &str, e: wasmtime::Error) -> Failure {
    if let Some(stopped) = e.downcast_ref::<Stopped>() {
        let kind = match stopped {
            Stopped::Memory { .. } => FailureKind::ResourceLimit,
            Stopped::Waited(_) => FailureKind::Timeout,
            Stopped::Denied { .. } => FailureKind::Trap,
        };
        let message = match stopped {
            Stopped::Memory { .. } => {
                format!("`{plugin}` exceeded its memory limit in {what}: {stopped}")
            }
            Stopped::Waited(import) => {
                format!("`{plugin}` overran its deadline in {what}, waiting in {import}")
            }
            Stopped::Denied { .. } => format!("{stopped} in {what}"),
        };
        return failure(kind, message);
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return failure(
            FailureKind::ResourceLimit,
            format!(
                "the host's instance pool is full; `{plugin}` could not get an instance for {what}: {e:#}"
            ),
        );
    }
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return match trap {
            wasmtime::Trap::Interrupt => failure(
                FailureKind::Timeout,
                format!("`{plugin}` overran its deadline in {what}"),
            ),
            wasmtime::Trap::OutOfFuel => failure(
                FailureKind::ResourceLimit,
                format!("`{plugin}` ran out of fuel in {what}"),
            ),
            wasmtime::Trap::StackOverflow => failure(
                FailureKind::Trap,
                format!("`{plugin}` overflowed its stack in {what}"),
            ),
            wasmtime::Trap::MemoryOutOfBounds if recursing(e.downcast_ref()) => failure(
                FailureKind::Trap,
                format!(
                    "`{plugin}` overflowed its stack in {what} (a recursion ran out of its shadow stack in linear memory)"
                ),
            ),
            other => failure(
                FailureKind::Trap,
                format!("`{plugin}` trapped in {what}: {other}"),
            ),
        };
    }
    failure(
        FailureKind::Trap,
        format!("`{plugin}` failed in {what}: {e:#}"),
    )
}

/// How deep in a chain of emits the call is (0: not from an emit).
fn emit_depth(cx: &Context<'_>) -> u32 {
    cx.meta()
        .get(crate::EMIT_DEPTH)
        .and_then(serde_json::Value::as_u64)
        .map_or(0, |d| u32::try_from(d).unwrap_or(u32::MAX))
}

impl WasmPlugin {
    /// Refuses a reply larger than the plugin's limit.
    fn check_reply(&self, len: usize) -> Result<(), Failure> {
        if len > self.limits.max_reply {
            return Err(failure(
                FailureKind::ResourceLimit,
                format!(
                    "`{}` replied with {len} bytes; the limit is {}",
                    self.name, self.limits.max_reply
                ),
            ));
        }
        Ok(())
    }
}

impl JsonWrapper for WasmPlugin {
    fn before(&self, state: &str, cx: &Context<'_>) -> Result<Opened, Failure> {
        let depth = emit_depth(cx);
        let opened = self.with_instance("before", |w| {
            w.store.data_mut().emit_depth = depth;
            w.plugin.before(&mut w.store, cx.event(), state)
        })?;
        let opened = opened.map_err(|msg| failure(FailureKind::PluginError, msg))?;
        self.check_reply(opened.state.len() + opened.token.len())?;
        Ok(Opened {
            entry: if opened.halt {
                Reply::Halt(opened.state)
            } else {
                Reply::Continue(opened.state)
            },
            token: opened.token,
        })
    }

    fn after(&self, told: Told<'_>, token: &[u8], cx: &Context<'_>) -> Result<Closing, Failure> {
        let depth = emit_depth(cx);
        let message;
        let told = match told {
            Told::Continued(s) => bindings::Told::Continued(s),
            Told::Halted(s) => bindings::Told::Halted(s),
            Told::Failed(e) => {
                message = e.to_string();
                bindings::Told::Failed(&message)
            }
        };
        let closing = self.with_instance("after", |w| {
            w.store.data_mut().emit_depth = depth;
            w.plugin.after(&mut w.store, cx.event(), told, token)
        })?;
        let closing = closing.map_err(|msg| failure(FailureKind::PluginError, msg))?;
        Ok(match closing {
            bindings::Closing::Keep => Closing::Keep,
            bindings::Closing::Continue(s) => {
                self.check_reply(s.len())?;
                Closing::Continue(s)
            }
            bindings::Closing::Halt(s) => {
                self.check_reply(s.len())?;
                Closing::Halt(s)
            }
            bindings::Closing::Retry { state, token } => {
                self.check_reply(state.len() + token.len())?;
                Closing::Retry { state, token }
            }
        })
    }
}

impl EncodedStep for WasmPlugin {
    fn run(&self, state: &[u8], wire: Wire, cx: &Context<'_>) -> Result<Reply<Vec<u8>>, Failure> {
        let event = cx.event();
        let depth = emit_depth(cx);
        let reply = self.with_instance("call", |w| {
            w.store.data_mut().emit_depth = depth;
            w.plugin.call(&mut w.store, event, wire, state)
        })?;
        let reply = reply.map_err(|msg| failure(FailureKind::PluginError, msg))?;
        let (halt, out) = match reply {
            GuestReply::Continue(b) => (false, b),
            GuestReply::Halt(b) => (true, b),
        };
        self.check_reply(out.len())?;
        // The engine decodes (and so validates) the state after the last of consecutive
        // encoded steps, not here.
        Ok(if halt {
            Reply::Halt(out)
        } else {
            Reply::Continue(out)
        })
    }

    fn wire(&self, event: &str, layout: Option<u64>) -> Wire {
        let Some(layout) = layout else {
            return Wire::Json;
        };
        let known = self.layouts.lock().ok().and_then(|l| l.get(event).copied());
        let theirs = match known {
            Some(theirs) => theirs,
            None => {
                let asked = self.with_instance("layout", |w| w.plugin.layout(&mut w.store, event));
                match asked {
                    Ok(theirs) => {
                        if let Ok(mut l) = self.layouts.lock() {
                            l.insert(event.to_owned(), theirs);
                        }
                        theirs
                    }
                    // Not remembered: a plugin that failed to answer is asked again at
                    // the next rebuild; meanwhile JSON, which it must read anyway.
                    Err(f) => {
                        tracing::warn!(plugin = %self.name, event, "layout query failed: {}", f.message);
                        None
                    }
                }
            }
        };
        if theirs == Some(layout) {
            Wire::Binary
        } else {
            Wire::Json
        }
    }
}

impl Callbacks for WasmPlugin {
    fn lifecycle(&self, op: Op, record: &PluginRecord) -> Result<(), Reason> {
        let json = Self::record_json(record);
        let out = match op {
            Op::Register => {
                self.with_instance("initial", |w| w.plugin.initial(&mut w.store, &json))
            }
            _ => self.with_instance(op.as_str(), |w| {
                w.plugin.lifecycle(&mut w.store, op.as_str(), &json)
            }),
        };
        match out {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(Reason(msg)),
            Err(f) => Err(Reason(f.message)),
        }
    }

    fn health_check(&self) -> Result<(), Reason> {
        match self.with_instance("health", |w| w.plugin.health(&mut w.store)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(Reason(msg)),
            Err(f) => Err(Reason(f.message)),
        }
    }
}
