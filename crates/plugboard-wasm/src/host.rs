//! The engine, the linker and what a plugin may import.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{v2, v3, v4};
use crate::capabilities::{CapabilityError, Emitter, KeyValue};

/// Why loading or running a plugin failed (outside a call: calls report
/// [`Failure`](plugboard_engine::Failure)s).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WasmError {
    /// The bytes are not a WebAssembly component.
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component does not export the plugin contract at all.
    #[error(
        "the component does not implement the plugboard:plugin contract (no `plugboard:plugin/guest` export)"
    )]
    NotAPlugin,
    /// The component implements a contract version this host does not support.
    #[error("the component implements plugboard:plugin@{found}, but this host serves {supported}")]
    ContractVersion {
        /// The version the component implements.
        found: String,
        /// The version this host implements.
        supported: &'static str,
    },
    /// The component needs an import the host does not offer.
    #[error("the component cannot be linked: {0}")]
    Link(String),
    /// The plugin refused to start (`initial` returned an error or trapped).
    #[error("the plugin refused: {0}")]
    Refused(String),
    /// Engine or filesystem failure.
    #[error("{0}")]
    Other(String),
}

/// Why the host stopped a guest from inside one of its own functions. Raised as the
/// guest's trap, and recognised by type (never by message text) when the call fails.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stopped {
    /// The memory limiter refused a `memory.grow`.
    #[error(
        "memory limit exceeded: the plugin asked for {asked} bytes of linear memory; its limit is {limit}"
    )]
    Memory {
        /// Bytes the instance would have held.
        asked: usize,
        /// Its limit, in bytes.
        limit: usize,
    },
    /// A WASI wait still pending at the call's deadline (which cannot interrupt a wait in
    /// the host, so the wait itself is bounded).
    #[error("the plugin's deadline passed while it waited ({0})")]
    Waited(&'static str),
    /// A host import the plugin was not granted.
    #[error(
        "`{plugin}` called `{import}` without the `{capability}` capability (a package asks for it under [capabilities])"
    )]
    Denied {
        /// The plugin.
        plugin: Arc<str>,
        /// The import it called.
        import: &'static str,
        /// The capability that grants it.
        capability: &'static str,
    },
}

impl WasmError {
    pub(crate) fn other(e: impl std::fmt::Display) -> Self {
        WasmError::Other(e.to_string())
    }
}

/// How the host is set up; the defaults suit most deployments.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Where compiled components are cached (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    /// Whether plugins may be given fuel budgets ([`Limits::fuel`](crate::Limits)). Fuel
    /// metering slows every plugin a little, so it is off unless asked for.
    pub fuel: bool,
    /// Instances the pooling allocator keeps slots for, across all plugins.
    pub max_instances: u32,
    /// The largest linear memory any plugin may have.
    pub max_memory: usize,
    /// How often the deadline clock ticks.
    pub tick: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            cache_dir: None,
            fuel: false,
            max_instances: 1000,
            max_memory: 256 << 20,
            tick: Duration::from_millis(1),
        }
    }
}

/// What each plugin instance's store holds.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: Limiter,
    pub(crate) plugin: Arc<str>,
    pub(crate) settings: Arc<std::sync::RwLock<Option<String>>>,
    pub(crate) grants: Grants,
    pub(crate) logs: Arc<LogBudget>,
    /// The plugin's key-value data, shared with the plugin (which may revoke it at any
    /// time); none: `kv` is not granted.
    pub(crate) kv: Arc<std::sync::RwLock<Option<Arc<dyn KeyValue>>>>,
    /// Its event emitter, shared likewise; none: `emit` is not granted.
    pub(crate) emitter: Arc<std::sync::RwLock<Option<Arc<dyn Emitter>>>>,
    /// How many emits led to the current call (its meta's [`crate::EMIT_DEPTH`]).
    pub(crate) emit_depth: u32,
    /// `wasi:http`: the context, and the hooks that check and send each request (and
    /// hold the current call's deadline, which bounds every wait).
    pub(crate) http_ctx: wasmtime_wasi_http::WasiHttpCtx,
    pub(crate) http: crate::http::PluginHttp,
}

/// Told of every call a plugin made to a capability it is not granted: the plugin's name
/// and the capability's.
pub type DeniedHook = Arc<dyn Fn(&str, &'static str) + Send + Sync>;

/// Where a host's [`DeniedHook`] is kept, shared with every instance.
pub(crate) type DeniedSink = Arc<std::sync::RwLock<Option<DeniedHook>>>;

/// Log lines a plugin may write per second; past that they are dropped and counted.
pub const LOG_LINES_PER_SECOND: u32 = 100;

/// One plugin's log budget, shared by its instances.
pub(crate) struct LogBudget {
    /// The current one-second window: its start and the lines asked for in it.
    window: std::sync::Mutex<Option<(std::time::Instant, u32)>>,
    dropped: std::sync::atomic::AtomicU64,
    /// The host's count of every plugin's dropped lines, which outlives the plugins
    /// (an operator's metric must not go down when a package is uninstalled).
    host_dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl LogBudget {
    /// A fresh budget whose drops also count in `host_dropped`.
    pub(crate) fn new(host_dropped: Arc<std::sync::atomic::AtomicU64>) -> LogBudget {
        LogBudget {
            window: std::sync::Mutex::new(None),
            dropped: std::sync::atomic::AtomicU64::new(0),
            host_dropped,
        }
    }

    /// Whether one more line may be written now.
    fn admit(&self, plugin: &str) -> bool {
        let now = std::time::Instant::now();
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let (start, count) = window.get_or_insert((now, 0));
        if now.duration_since(*start) >= std::time::Duration::from_secs(1) {
            if *count > LOG_LINES_PER_SECOND {
                tracing::warn!(
                    target: "plugboard::wasm::guest",
                    plugin,
                    dropped = *count - LOG_LINES_PER_SECOND,
                    "plugin wrote more than {LOG_LINES_PER_SECOND} log lines in a second; the rest were dropped"
                );
            }
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count <= LOG_LINES_PER_SECOND {
            true
        } else {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.host_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            false
        }
    }

    /// Lines dropped since the plugin was loaded.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The host imports a loaded plugin is granted; calling one it was not granted traps,
/// naming it. (A package's manifest *asks* for capabilities, `plugboard_package::Capabilities`;
/// the installer grants what was asked and the operator's policy allowed.) No default:
/// whoever loads a component says what it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grants {
    /// `log`.
    pub log: bool,
    /// `settings`.
    pub settings: bool,
    /// `now-ms` and the WASI clocks (without it they stand still at the epoch).
    pub clock: bool,
    /// WASI random numbers (without it they are a fixed sequence, the same in every
    /// instance).
    pub random: bool,
}

impl Grants {
    /// Every import.
    pub const ALL: Grants = Grants {
        log: true,
        settings: true,
        clock: true,
        random: true,
    };
    /// No import.
    pub const NONE: Grants = Grants {
        log: false,
        settings: false,
        clock: false,
        random: false,
    };
}

impl HostState {
    // One argument per thing an instance shares with its plugin; a struct of them would
    // only be unpacked here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        plugin: Arc<str>,
        memory: usize,
        settings: Arc<std::sync::RwLock<Option<String>>>,
        grants: Grants,
        logs: Arc<LogBudget>,
        kv: Arc<std::sync::RwLock<Option<Arc<dyn KeyValue>>>>,
        emitter: Arc<std::sync::RwLock<Option<Arc<dyn Emitter>>>>,
        http: crate::http::PluginHttp,
    ) -> Self {
        // Nothing is granted: no preopened directories, no environment, no arguments,
        // no network, no inherited stdio.
        let mut builder = WasiCtxBuilder::new();
        builder
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if !grants.clock {
            // WASI's clocks are the `clock` capability too: without it they stand still at
            // the epoch (the standard library reads them, so they cannot trap).
            builder.wall_clock(Frozen).monotonic_clock(Frozen);
        }
        if !grants.random {
            // Likewise random numbers: the standard library draws them (hash seeds), so
            // without `random` they are a fixed sequence rather than a trap.
            let fixed = || wasmtime_wasi::Deterministic::new((0..=255u8).collect());
            builder
                .secure_random(fixed())
                .insecure_random(fixed())
                .insecure_random_seed(0);
        }
        let wasi = builder.build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limits: Limiter {
                max: memory,
                used: 0,
            },
            plugin,
            settings,
            grants,
            logs,
            kv,
            emitter,
            emit_depth: 0,
            http_ctx: wasmtime_wasi_http::WasiHttpCtx::new(),
            http,
        }
    }

    /// Tells the host's [`DeniedHook`] that the plugin used a capability it lacks.
    pub(crate) fn report_denied(&self, capability: &'static str) {
        // The sink lives with the `wasi:http` hooks, which report denied requests and
        // cannot reach this state; one copy serves both.
        let hook = self.http.denied.read().ok().and_then(|h| h.clone());
        if let Some(hook) = hook {
            hook(&self.plugin, capability);
        }
    }

    fn denied(&self, import: &'static str, capability: &'static str) -> wasmtime::Error {
        self.report_denied(capability);
        wasmtime::Error::new(Stopped::Denied {
            plugin: self.plugin.clone(),
            import,
            capability,
        })
    }
}

/// The clocks of a plugin without the `clock` capability: always the epoch.
struct Frozen;

impl wasmtime_wasi::HostWallClock for Frozen {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }

    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for Frozen {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// Caps a plugin's linear memory and keeps count of what it holds.
pub(crate) struct Limiter {
    max: usize,
    /// Bytes of linear memory the instance holds now.
    pub(crate) used: usize,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.max {
            // An error (not `Ok(false)`) traps at once: a plugin that cannot have the
            // memory it asked for is stopped here, with a message saying why.
            return Err(wasmtime::Error::new(Stopped::Memory {
                asked: total,
                limit: self.max,
            }));
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}

impl HostState {
    fn log_line(&mut self, level: tracing::Level, message: String) -> wasmtime::Result<()> {
        if !self.grants.log {
            return Err(self.denied("log", "log"));
        }
        // A plugin may not flood the host's logs: lines are cut, and past its budget per
        // second they are dropped and counted.
        if !self.logs.admit(&self.plugin) {
            return Ok(());
        }
        let message = plugboard_core::bounded(message);
        let plugin = &*self.plugin;
        match level {
            tracing::Level::TRACE => {
                tracing::trace!(target: "plugboard::wasm::guest", plugin, "{message}")
            }
            tracing::Level::DEBUG => {
                tracing::debug!(target: "plugboard::wasm::guest", plugin, "{message}")
            }
            tracing::Level::INFO => {
                tracing::info!(target: "plugboard::wasm::guest", plugin, "{message}")
            }
            tracing::Level::WARN => {
                tracing::warn!(target: "plugboard::wasm::guest", plugin, "{message}")
            }
            tracing::Level::ERROR => {
                tracing::error!(target: "plugboard::wasm::guest", plugin, "{message}")
            }
        }
        Ok(())
    }

    fn read_settings(&mut self) -> wasmtime::Result<Option<String>> {
        if !self.grants.settings {
            return Err(self.denied("settings", "settings"));
        }
        Ok(self.settings.read().ok().and_then(|s| s.clone()))
    }

    fn clock_ms(&mut self) -> wasmtime::Result<u64> {
        if !self.grants.clock {
            return Err(self.denied("now-ms", "clock"));
        }
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0))
    }

    /// The plugin's key-value service, or the contract's `denied` error.
    fn kv(&self) -> Result<Arc<dyn KeyValue>, CapabilityError> {
        let granted = self.kv.read().ok().and_then(|kv| kv.clone());
        granted.ok_or_else(|| {
            self.report_denied("kv");
            CapabilityError::Denied(format!(
                "`{}` is not granted the `kv` capability (a package asks for it under [capabilities])",
                self.plugin
            ))
        })
    }

    fn emit(&mut self, event: &str, state: &str) -> Result<(), CapabilityError> {
        let granted = self.emitter.read().ok().and_then(|e| e.clone());
        match granted {
            Some(e) => e.emit(event, state, self.emit_depth),
            None => {
                self.report_denied("emit");
                Err(CapabilityError::Denied(format!(
                    "`{}` is not granted the `emit` capability (a package asks for it under [capabilities] emit)",
                    self.plugin
                )))
            }
        }
    }
}

/// A guest's time-to-live in milliseconds.
fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

/// Implements the imports of a contract version (`$v`: its bindings' module) on the one
/// set of host functions above; the interfaces are the same in every version that has
/// them, their generated types are not.
macro_rules! host_imports {
    ($v:ident) => {
        impl $v::plugboard::plugin::host::Host for HostState {
            fn log(
                &mut self,
                level: $v::plugboard::plugin::host::Level,
                message: String,
            ) -> wasmtime::Result<()> {
                use $v::plugboard::plugin::host::Level;
                let level = match level {
                    Level::Trace => tracing::Level::TRACE,
                    Level::Debug => tracing::Level::DEBUG,
                    Level::Info => tracing::Level::INFO,
                    Level::Warn => tracing::Level::WARN,
                    Level::Error => tracing::Level::ERROR,
                };
                self.log_line(level, message)
            }

            fn settings(&mut self) -> wasmtime::Result<Option<String>> {
                self.read_settings()
            }

            fn now_ms(&mut self) -> wasmtime::Result<u64> {
                self.clock_ms()
            }
        }
    };
    ($v:ident, capabilities) => {
        host_imports!($v);

        impl $v::plugboard::plugin::types::Host for HostState {}

        impl From<CapabilityError> for $v::plugboard::plugin::types::Error {
            fn from(e: CapabilityError) -> Self {
                use $v::plugboard::plugin::types::Error;
                match e {
                    CapabilityError::Denied(m) => Error::Denied(m),
                    CapabilityError::Quota(m) => Error::Quota(m),
                    CapabilityError::Invalid(m) => Error::Invalid(m),
                    CapabilityError::Unavailable(m) => Error::Unavailable(m),
                }
            }
        }

        // The service's errors are the plugin's to handle, never a trap.
        impl $v::plugboard::plugin::events::Host for HostState {
            fn emit(
                &mut self,
                event: String,
                state: String,
            ) -> wasmtime::Result<Result<(), $v::plugboard::plugin::types::Error>> {
                Ok(HostState::emit(self, &event, &state).map_err(Into::into))
            }
        }

        impl $v::plugboard::plugin::kv::Host for HostState {
            fn get(
                &mut self,
                key: String,
            ) -> wasmtime::Result<Result<Option<Vec<u8>>, $v::plugboard::plugin::types::Error>>
            {
                Ok(self.kv().and_then(|kv| kv.get(&key)).map_err(Into::into))
            }

            fn set(
                &mut self,
                key: String,
                value: Vec<u8>,
                ttl_ms: Option<u64>,
            ) -> wasmtime::Result<Result<(), $v::plugboard::plugin::types::Error>> {
                Ok(self
                    .kv()
                    .and_then(|kv| kv.set(&key, &value, ttl(ttl_ms)))
                    .map_err(Into::into))
            }

            fn delete(
                &mut self,
                key: String,
            ) -> wasmtime::Result<Result<bool, $v::plugboard::plugin::types::Error>> {
                Ok(self.kv().and_then(|kv| kv.delete(&key)).map_err(Into::into))
            }

            fn list_keys(
                &mut self,
                prefix: String,
                after: Option<String>,
                limit: u32,
            ) -> wasmtime::Result<Result<Vec<String>, $v::plugboard::plugin::types::Error>> {
                Ok(self
                    .kv()
                    .and_then(|kv| kv.list_keys(&prefix, after.as_deref(), limit))
                    .map_err(Into::into))
            }

            fn increment(
                &mut self,
                key: String,
                delta: i64,
                ttl_ms: Option<u64>,
            ) -> wasmtime::Result<Result<i64, $v::plugboard::plugin::types::Error>> {
                Ok(self
                    .kv()
                    .and_then(|kv| kv.increment(&key, delta, ttl(ttl_ms)))
                    .map_err(Into::into))
            }

            fn compare_and_swap(
                &mut self,
                key: String,
                expected: Option<Vec<u8>>,
                new: Option<Vec<u8>>,
                ttl_ms: Option<u64>,
            ) -> wasmtime::Result<Result<bool, $v::plugboard::plugin::types::Error>> {
                Ok(self
                    .kv()
                    .and_then(|kv| {
                        kv.compare_and_swap(&key, expected.as_deref(), new.as_deref(), ttl(ttl_ms))
                    })
                    .map_err(Into::into))
            }
        }
    };
}

host_imports!(v2);
host_imports!(v3, capabilities);
host_imports!(v4, capabilities);

/// Bounds WASI's waits by the call's deadline. A wait happens in the host, where the epoch
/// deadline cannot interrupt it: without this, a plugin calling `sleep` (or waiting on a
/// stream that never becomes ready) would hold its caller's thread, and in a callback the
/// engine's control lock, for as long as it liked. A plugin may wait (for an HTTP
/// response, say) until its deadline; a wait still pending then stops the call.
fn bound_waits(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::StoreContextMut;
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::DynPollable;
    use wasmtime_wasi_io::bindings::wasi::io::poll::{Host, HostPollable};
    linker.allow_shadowing(true);
    // The version must be the one wasmtime-wasi defines (48.x: 0.2.12), so that these
    // replace its functions; the hostile plugin's `sleep` test fails (hangs) otherwise.
    let mut poll = linker.instance("wasi:io/poll@0.2.12")?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, HostState>,
         (ps,): (Vec<Resource<DynPollable>>,)|
         -> wasmtime::Result<(Vec<u32>,)> {
            let state = store.data_mut();
            let deadline = tokio::time::Instant::from_std(state.http.deadline);
            let table = &mut state.table;
            wasmtime_wasi::runtime::in_tokio(async {
                tokio::time::timeout_at(deadline, Host::poll(table, ps)).await
            })
            .map_err(|_| wasmtime::Error::new(Stopped::Waited("wasi:io/poll.poll")))?
            .map(|ready| (ready,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, HostState>,
         (p,): (Resource<DynPollable>,)|
         -> wasmtime::Result<()> {
            let state = store.data_mut();
            let deadline = tokio::time::Instant::from_std(state.http.deadline);
            let table = &mut state.table;
            wasmtime_wasi::runtime::in_tokio(async {
                tokio::time::timeout_at(deadline, HostPollable::block(table, p)).await
            })
            .map_err(|_| wasmtime::Error::new(Stopped::Waited("wasi:io/poll.pollable.block")))?
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The wasmtime engine and linker shared by all plugins. Cheap to clone.
#[derive(Clone)]
pub struct WasmHost {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) config: HostConfig,
    pub(crate) tick: Duration,
    ticking: Arc<AtomicBool>,
    /// Components compiled by this host, by hash: loading the same bytes again (another
    /// plugin from the same package, a re-registration) costs no compilation.
    pub(crate) compiled:
        std::sync::Mutex<std::collections::HashMap<String, wasmtime::component::Component>>,
    /// Guest log lines dropped over the budget, by every plugin this host has loaded.
    pub(crate) log_lines_dropped: Arc<std::sync::atomic::AtomicU64>,
    /// Told of denied capability uses.
    pub(crate) denied: DeniedSink,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

impl WasmHost {
    /// A host with the given configuration.
    pub fn new(config: HostConfig) -> Result<WasmHost, WasmError> {
        let mut cfg = Config::new();
        cfg.wasm_component_model(true);
        cfg.epoch_interruption(true);
        cfg.consume_fuel(config.fuel);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.max_instances);
        pool.total_core_instances(config.max_instances * 4);
        pool.total_memories(config.max_instances * 2);
        pool.total_tables(config.max_instances * 4);
        pool.max_memory_size(config.max_memory);
        pool.max_memories_per_component(4);
        pool.max_tables_per_component(8);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(WasmError::other)?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(WasmError::other)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
            .map_err(WasmError::other)?;
        bound_waits(&mut linker).map_err(WasmError::other)?;
        crate::bindings::add_to_linker(&mut linker).map_err(WasmError::other)?;
        if let Some(dir) = &config.cache_dir {
            // Compiled artifacts are native code the host will run: the directory must be
            // the host user's alone.
            std::fs::create_dir_all(dir).map_err(WasmError::other)?;
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(WasmError::other)?;
        }
        // The deadline clock: every tick moves the epoch; a call's deadline is a number
        // of ticks. The thread ends when the host is dropped.
        let ticking = Arc::new(AtomicBool::new(true));
        {
            let (engine, ticking, tick) = (engine.weak(), ticking.clone(), config.tick);
            std::thread::Builder::new()
                .name("plugboard-wasm-epoch".into())
                .spawn(move || {
                    while ticking.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        match engine.upgrade() {
                            Some(e) => e.increment_epoch(),
                            None => break,
                        }
                    }
                })
                .map_err(WasmError::other)?;
        }
        let tick = config.tick;
        Ok(WasmHost {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                tick,
                ticking,
                compiled: std::sync::Mutex::default(),
                log_lines_dropped: Arc::default(),
                denied: Arc::default(),
            }),
        })
    }

    /// Guest log lines dropped because a plugin wrote more than
    /// [`LOG_LINES_PER_SECOND`] in a second, summed over every plugin this host has
    /// loaded (those since unloaded included).
    pub fn log_lines_dropped(&self) -> u64 {
        self.inner.log_lines_dropped.load(Ordering::Relaxed)
    }

    /// Sets the function told of every call a plugin makes to a capability it is not
    /// granted (the call fails either way); it runs on the caller's thread, so it must be
    /// quick (e.g. queue an activity entry).
    pub fn on_denied(&self, hook: DeniedHook) {
        if let Ok(mut h) = self.inner.denied.write() {
            *h = Some(hook);
        }
    }

    /// Forgets a component's compiled form, in memory and in the on-disk cache (for an
    /// uninstalled package); returns how many cache files were deleted.
    pub fn evict(&self, component_sha256: &str) -> usize {
        if let Ok(mut m) = self.inner.compiled.lock() {
            m.remove(component_sha256);
        }
        self.inner
            .config
            .cache_dir
            .as_deref()
            .map_or(0, |dir| crate::cache::evict(dir, component_sha256))
    }

    /// The configuration.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }
}
