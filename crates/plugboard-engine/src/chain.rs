//! Compiled chains and dispatch: the hot path.
//!
//! Each event has a [`Slot`] holding an immutable [`Chain`] behind an `ArcSwap`. The
//! control path builds a new chain whenever the event's active plugins change and swaps it
//! in whole; a call loads the current chain without a lock and walks it. A call that runs
//! during a change sees the whole old chain or the whole new one.

use std::any::{TypeId, type_name};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use plugboard_core::{Context, EventInfo, Meta, Reply, Wire};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::code::{BoxFuture, CatchUnwind, Code, Runner};
use crate::collect::Gather;
use crate::engine::Shared;
use crate::error::{CallError, Failure, FailureKind};
use crate::wrap::{Around, Outcome};

/// What happens to a call when one of its plugins fails (panics, or replies with an
/// invalid state).
///
/// Whatever the policy, the failure is counted against the plugin, published, and the
/// plugin is stopped once its consecutive failures reach the engine's threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The call returns [`CallError::PluginFailed`] naming the plugin. Costs nothing on
    /// calls that do not fail, which is why it is the default: Rust states are moved
    /// through the chain, so keeping a copy to fall back on would cost a clone per call.
    #[default]
    Error,
    /// The call returns its input unchanged, as Mishka did. Costs one clone of the state
    /// per call (before the chain runs).
    ReturnInput,
    /// The failing plugin is skipped and the chain goes on with the state it was given.
    /// Costs one clone of the state per plugin.
    Skip,
}

/// Runs a synchronous step from async code: on a multi-threaded tokio runtime through
/// `block_in_place` (the worker hands its other tasks on first), elsewhere (a
/// current-thread runtime, such as the engine's own background worker) in place.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Counters kept per plugin across chain rebuilds.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) consecutive: AtomicU32,
    pub(crate) failures: AtomicU64,
    pub(crate) calls: AtomicU64,
    pub(crate) nanos: AtomicU64,
    pub(crate) max_nanos: AtomicU64,
    /// Per-bucket counts (not cumulative), the last for +Inf.
    pub(crate) buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    pub(crate) last_error: Mutex<Option<Failure>>,
    /// A stop at the failure threshold is queued and has not run yet.
    pub(crate) stop_pending: std::sync::atomic::AtomicBool,
}

impl Stats {
    #[inline]
    fn succeeded(&self) {
        // A load first so that healthy plugins do not write a shared cache line per call.
        if self.consecutive.load(Relaxed) != 0 {
            self.consecutive.store(0, Relaxed);
        }
    }

    fn timed(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.calls.fetch_add(1, Relaxed);
        self.nanos.fetch_add(ns, Relaxed);
        self.max_nanos.fetch_max(ns, Relaxed);
        let us = ns as f64 / 1e3;
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&le| us <= le)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
    }
}

/// One plugin in a compiled chain.
pub(crate) struct Step<S> {
    pub(crate) name: Arc<str>,
    pub(crate) runner: Runner<S>,
    /// The encoding an encoded step works in (JSON for the others).
    pub(crate) wire: Wire,
    pub(crate) stats: Arc<Stats>,
}

/// An event's compiled chain: immutable once built.
pub(crate) struct Chain<S> {
    pub(crate) steps: Box<[Step<S>]>,
    /// The wrappers around the steps, outermost first.
    pub(crate) wrappers: Box<[Wrap<S>]>,
    /// The first async plugin, if any: a sync call must refuse the chain.
    pub(crate) first_async: Option<Arc<str>>,
    pub(crate) policy: OnFailure,
    pub(crate) profiling: bool,
    /// Every step is native, the policy is `Error` and profiling is off: the steps can
    /// take the short walk, with nothing to keep per step.
    pub(crate) plain_steps: bool,
    /// `plain_steps` and every step a waterfall's native one: the steps inside wrappers
    /// take the shortest walk.
    pub(crate) native: bool,
    /// `native` and no wrappers: the whole call takes the short walk.
    pub(crate) plain: bool,
}

impl<S> Chain<S> {
    fn empty(policy: OnFailure) -> Self {
        Chain {
            steps: Box::new([]),
            wrappers: Box::new([]),
            first_async: None,
            policy,
            profiling: false,
            plain_steps: true,
            native: true,
            plain: true,
        }
    }
}

/// A wrapper in a compiled chain.
pub(crate) struct Wrap<S> {
    pub(crate) name: Arc<str>,
    pub(crate) around: Arc<dyn Around<S>>,
    pub(crate) stats: Arc<Stats>,
}

/// What the control path hands a slot to build a chain from.
pub(crate) struct PlanStep {
    pub(crate) name: Arc<str>,
    pub(crate) code: Code,
    pub(crate) stats: Arc<Stats>,
}

/// How one step of a traced call ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StepOutcome {
    /// The plugin replied continue.
    Continued,
    /// The plugin replied halt; the chain stopped.
    Halted,
    /// A wrapper ran around the rest of the chain (its time includes theirs).
    Wrapped,
    /// The plugin failed.
    Failed {
        /// What happened.
        failure: Failure,
    },
}

/// One step of a traced call.
#[derive(Clone, Debug, Serialize)]
pub struct TraceStep {
    /// The plugin.
    pub plugin: String,
    /// How long it took.
    #[serde(serialize_with = "ser_micros")]
    pub elapsed: Duration,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: StepOutcome,
    /// The state the plugin replied (continue or halt), as JSON: what the next step was
    /// given. `None` for a failed step (the call went on from the state it was given, or
    /// ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
}

fn ser_micros<Ser: serde::Serializer>(d: &Duration, s: Ser) -> Result<Ser::Ok, Ser::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e6)
}

/// A call with a per-plugin account: which plugins ran, in what order, how long each
/// took, and who halted.
#[derive(Debug)]
pub struct Trace<S> {
    /// The call's result.
    pub result: Result<S, CallError>,
    /// The steps that ran, in order.
    pub steps: Vec<TraceStep>,
    /// The plugin that halted the chain, if one did.
    pub halted_by: Option<String>,
    /// The state the call started from, as JSON: what the first step was given (for a
    /// collecting event, the contributions so far: none). `None` when the call did not
    /// start.
    pub given: Option<Value>,
}

/// A plugin's share of an event's time, from [`Engine::profile`](crate::Engine::profile).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
pub struct PluginProfile {
    /// The plugin.
    pub plugin: String,
    /// Its position in the chain (0 runs first).
    pub position: usize,
    /// Calls timed since profiling was turned on.
    pub calls: u64,
    /// Mean time per call, in microseconds.
    pub mean_us: f64,
    /// Longest call, in microseconds.
    pub max_us: f64,
    /// Failures since registration.
    pub failures: u64,
    /// How many timed calls took at most each bound of [`LATENCY_BUCKETS_US`]
    /// (cumulative, as Prometheus histograms count; the last bucket is +Inf).
    pub buckets: Vec<u64>,
    /// The total time of the timed calls, in microseconds.
    pub sum_us: f64,
}

/// An event's whole calls (every plugin of a call together), from
/// [`Engine::event_profile`](crate::Engine::event_profile): counted while profiling is on.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
pub struct EventProfile {
    /// The event.
    pub event: String,
    /// Calls of a non-empty chain timed since profiling was turned on.
    pub calls: u64,
    /// Of those, the calls that ended in an error.
    pub errors: u64,
    /// Mean time per call, in microseconds.
    pub mean_us: f64,
    /// Longest call, in microseconds.
    pub max_us: f64,
    /// Cumulative counts per bound of [`LATENCY_BUCKETS_US`], then +Inf.
    pub buckets: Vec<u64>,
    /// The total time of the timed calls, in microseconds.
    pub sum_us: f64,
}

/// The upper bounds (microseconds) of the latency histogram buckets; a final +Inf bucket
/// follows them in [`PluginProfile::buckets`].
pub const LATENCY_BUCKETS_US: [f64; 12] = [
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    1_000.0,
    10_000.0,
    100_000.0,
    1_000_000.0,
];

/// Receives each step of a call; the plain call's observer does nothing and compiles away.
trait Observer {
    const TIMED: bool;
    /// Wants each step's reply (costs a serialisation per step, and a decode between
    /// encoded steps that would otherwise pass bytes along).
    const STATES: bool = false;
    fn step(&mut self, name: &Arc<str>, elapsed: Duration, outcome: StepOutcome);
    /// The state the last reported step replied.
    #[inline(always)]
    fn state<T: Serialize>(&mut self, _replied: &T) {}
}

struct Quiet;

impl Observer for Quiet {
    const TIMED: bool = false;
    #[inline(always)]
    fn step(&mut self, _: &Arc<str>, _: Duration, _: StepOutcome) {}
}

#[derive(Default)]
struct Recorder {
    steps: Vec<TraceStep>,
    halted_by: Option<String>,
}

impl Observer for Recorder {
    const TIMED: bool = true;
    const STATES: bool = true;
    fn step(&mut self, name: &Arc<str>, elapsed: Duration, outcome: StepOutcome) {
        if outcome == StepOutcome::Halted {
            self.halted_by = Some(name.to_string());
        }
        self.steps.push(TraceStep {
            plugin: name.to_string(),
            elapsed,
            outcome,
            state: None,
        });
    }

    fn state<T: Serialize>(&mut self, replied: &T) {
        if let Some(last) = self.steps.last_mut() {
            last.state = serde_json::to_value(replied).ok();
        }
    }
}

/// Where a sync walk is, kept outside its `catch_unwind` so that a panic can be
/// attributed to its step and the walk resumed after it.
struct Walk<S> {
    pos: usize,
    backup: Option<S>,
    started: Option<Instant>,
    /// A step halted the chain (what a wrapper around it is told).
    halted: bool,
}

/// One event's chain holder.
pub(crate) struct Slot<S> {
    pub(crate) info: EventInfo,
    /// The fingerprint of the state's binary layout, if it has one.
    layout: Option<u64>,
    /// The event's name, out of its `Cow` so that building a step's context is a copy.
    name: Box<str>,
    chain: ArcSwap<Chain<S>>,
    shared: Weak<Shared>,
    /// The whole chain's time per call while profiling (`failures`: calls that ended in
    /// an error); per-plugin times do not add up to a call's percentiles.
    stats: Stats,
    /// How a plugin's code becomes a step of this chain, when not by its own state type
    /// (a collecting event's adapters).
    adapt: Option<Adapt<S>>,
}

/// Makes the step of a plugin (by name and code) for a chain over `S`.
pub(crate) type Adapt<S> = fn(&Arc<str>, &Code) -> Option<Runner<S>>;

/// The state bound every slot needs.
pub(crate) trait State:
    Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> State for T {}

impl<S: State> Slot<S> {
    pub(crate) fn new(
        info: EventInfo,
        layout: Option<u64>,
        shared: Weak<Shared>,
        policy: OnFailure,
    ) -> Self {
        Slot {
            name: info.name.clone().into(),
            info,
            layout,
            chain: ArcSwap::from_pointee(Chain::empty(policy)),
            shared,
            stats: Stats::default(),
            adapt: None,
        }
    }

    /// Builds its chains' steps with `adapt` (a collecting event's).
    pub(crate) fn adapted(mut self, adapt: Adapt<S>) -> Self {
        self.adapt = Some(adapt);
        self
    }

    /// How many plugins the chain has now.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.chain.load().steps.len()
    }

    pub(crate) fn shared(&self) -> Option<Arc<Shared>> {
        self.shared.upgrade()
    }

    /// The synchronous call: the hot path.
    #[inline]
    pub(crate) fn call(&self, state: S, meta: &Meta) -> Result<S, CallError> {
        let chain = self.chain.load();
        if chain.steps.is_empty() && chain.wrappers.is_empty() {
            return Ok(state);
        }
        if chain.plain {
            return self.run_plain(&chain, state, meta);
        }
        // A plain collecting chain: its collectors add in place, under one unwind guard.
        if chain.plain_steps && chain.wrappers.is_empty() {
            return self.plain_walk(&chain, state, meta).0;
        }
        self.run(&chain, state, meta, &mut Quiet)
    }

    /// The short walk of a plain chain: native steps only, and a panic ends the call.
    #[inline]
    fn run_plain(&self, chain: &Chain<S>, state: S, meta: &Meta) -> Result<S, CallError> {
        let pos = Cell::new(0usize);
        let out = catch_unwind(AssertUnwindSafe(|| {
            let mut state = state;
            for (i, step) in chain.steps.iter().enumerate() {
                pos.set(i);
                let Runner::Native(runner) = &step.runner else {
                    // `plain` is only set when every step is native.
                    continue;
                };
                let cx = Context::new(&self.name, &step.name, meta);
                state = match runner.run(state, &cx) {
                    Reply::Continue(next) => next,
                    Reply::Halt(last) => {
                        step.stats.succeeded();
                        return last;
                    }
                };
                step.stats.succeeded();
            }
            state
        }));
        out.map_err(|payload| self.plain_failure(chain, pos.get(), &*payload))
    }

    /// A panic in a short walk, charged to the step at `pos`.
    #[cold]
    fn plain_failure(
        &self,
        chain: &Chain<S>,
        pos: usize,
        payload: &(dyn std::any::Any + Send),
    ) -> CallError {
        let failure = Failure::from_panic(payload);
        match chain.steps.get(pos) {
            Some(step) => {
                self.failed(step, &failure);
                self.error(step, failure)
            }
            None => CallError::PluginFailed {
                event: self.info.name.to_string(),
                plugin: String::new(),
                failure,
            },
        }
    }

    /// [`Slot::run_plain`] inside wrappers: the same walk, its end as a wrapper is told.
    /// Kept apart on purpose: `run_plain` written as this walk plus `into_state` made
    /// `Hook::call` at 10 plugins 1.19x its baseline instead of 1.07x (the reply's tag
    /// through the unwind guard).
    #[inline]
    fn native_walk(&self, chain: &Chain<S>, state: S, meta: &Meta) -> Outcome<S> {
        let pos = Cell::new(0usize);
        let out = catch_unwind(AssertUnwindSafe(|| {
            let mut state = state;
            for (i, step) in chain.steps.iter().enumerate() {
                pos.set(i);
                let Runner::Native(runner) = &step.runner else {
                    // `native` is only set when every step is native.
                    continue;
                };
                let cx = Context::new(&self.name, &step.name, meta);
                state = match runner.run(state, &cx) {
                    Reply::Continue(next) => next,
                    Reply::Halt(last) => {
                        step.stats.succeeded();
                        return Reply::Halt(last);
                    }
                };
                step.stats.succeeded();
            }
            Reply::Continue(state)
        }));
        out.map_err(|payload| self.plain_failure(chain, pos.get(), &*payload))
    }

    /// The short walk of plain steps that may collect, in wrappers or a collecting chain;
    /// says whether a step halted (what a wrapper around it is told).
    #[inline]
    fn plain_walk(&self, chain: &Chain<S>, state: S, meta: &Meta) -> (Result<S, CallError>, bool) {
        let pos = Cell::new(0usize);
        let halted = Cell::new(false);
        let out = catch_unwind(AssertUnwindSafe(|| {
            let mut state = state;
            for (i, step) in chain.steps.iter().enumerate() {
                pos.set(i);
                let cx = Context::new(&self.name, &step.name, meta);
                match &step.runner {
                    Runner::Native(runner) => {
                        state = match runner.run(state, &cx) {
                            Reply::Continue(next) => next,
                            Reply::Halt(last) => {
                                step.stats.succeeded();
                                halted.set(true);
                                return last;
                            }
                        };
                    }
                    Runner::Collect(runner) => {
                        if runner.collect_into(&mut state, &cx) {
                            step.stats.succeeded();
                            halted.set(true);
                            return state;
                        }
                    }
                    // `plain_steps` is only set when every step is native.
                    _ => continue,
                }
                step.stats.succeeded();
            }
            state
        }));
        let out = out.map_err(|payload| self.plain_failure(chain, pos.get(), &*payload));
        (out, halted.get())
    }

    pub(crate) fn trace(&self, state: S, meta: &Meta) -> Trace<S> {
        let chain = self.chain.load_full();
        let mut rec = Recorder::default();
        let given = serde_json::to_value(&state).ok();
        let result = self.run(&chain, state, meta, &mut rec);
        Trace {
            result,
            steps: rec.steps,
            halted_by: rec.halted_by,
            given,
        }
    }

    /// Walks the chain under a single `catch_unwind` (one per call, not one per step:
    /// each would copy the state in and out of the unwinding frame). When a step panics,
    /// the walk resumes after it if the policy says to skip.
    fn run<O: Observer>(
        &self,
        chain: &Chain<S>,
        state: S,
        meta: &Meta,
        obs: &mut O,
    ) -> Result<S, CallError> {
        if !chain.profiling {
            return self.run_steps(chain, state, meta, obs);
        }
        let started = Instant::now();
        let out = self.run_steps(chain, state, meta, obs);
        self.called(started, out.is_err());
        out
    }

    /// Counts a whole call in the event's own profile.
    fn called(&self, started: Instant, failed: bool) {
        self.stats.timed(started.elapsed());
        if failed {
            self.stats.failures.fetch_add(1, Relaxed);
        }
    }

    fn run_steps<O: Observer>(
        &self,
        chain: &Chain<S>,
        state: S,
        meta: &Meta,
        obs: &mut O,
    ) -> Result<S, CallError> {
        if let Some(plugin) = &chain.first_async {
            return Err(CallError::NeedsAsync {
                event: self.info.name.to_string(),
                plugin: plugin.to_string(),
            });
        }
        if chain.wrappers.is_empty() {
            return self.run_inner(chain, state, meta, obs).0;
        }
        self.wrapped(chain, 0, state, meta, obs)
            .map(Reply::into_state)
    }

    /// Runs wrapper `i` around the rest (the wrappers inside it, then the steps).
    fn wrapped<O: Observer>(
        &self,
        chain: &Chain<S>,
        i: usize,
        state: S,
        meta: &Meta,
        obs: &mut O,
    ) -> Outcome<S> {
        let Some(w) = chain.wrappers.get(i) else {
            // A plain chain inside wrappers still takes a short walk, unless traced.
            if chain.native && !O::TIMED {
                return self.native_walk(chain, state, meta);
            }
            let (result, halted) = if chain.plain_steps && !O::TIMED {
                self.plain_walk(chain, state, meta)
            } else {
                self.run_inner(chain, state, meta, obs)
            };
            return outcome_of(result, halted);
        };
        let cx = Context::new(&self.name, &w.name, meta);
        let started = (O::TIMED || chain.profiling).then(Instant::now);
        let out = if chain.native && !O::TIMED && i + 1 == chain.wrappers.len() {
            // The innermost wrapper around native steps: straight to their walk.
            w.around
                .around(state, &cx, &mut |s: S| self.native_walk(chain, s, meta))
        } else {
            let mut inner = |s: S| self.wrapped(chain, i + 1, s, meta, &mut *obs);
            w.around.around(state, &cx, &mut inner)
        };
        self.unwrapped(chain, w, started, out, obs)
    }

    /// A wrapper's end: timed, and its own failure counted and reported against it.
    #[inline]
    fn unwrapped<O: Observer>(
        &self,
        chain: &Chain<S>,
        w: &Wrap<S>,
        started: Option<Instant>,
        out: Result<Outcome<S>, Failure>,
        obs: &mut O,
    ) -> Outcome<S> {
        let elapsed = started.map(|t| t.elapsed()).unwrap_or_default();
        if chain.profiling {
            w.stats.timed(elapsed);
        }
        match out {
            Ok(outcome) => {
                w.stats.succeeded();
                obs.step(&w.name, elapsed, StepOutcome::Wrapped);
                if let Ok(Reply::Continue(s) | Reply::Halt(s)) = &outcome {
                    obs.state(s);
                }
                outcome
            }
            Err(failure) => {
                self.failed_named(&w.name, &w.stats, &failure);
                obs.step(
                    &w.name,
                    elapsed,
                    StepOutcome::Failed {
                        failure: failure.clone(),
                    },
                );
                Err(CallError::PluginFailed {
                    event: self.info.name.to_string(),
                    plugin: w.name.to_string(),
                    failure,
                })
            }
        }
    }

    /// The steps of a call, without the wrappers; says whether a step halted.
    fn run_inner<O: Observer>(
        &self,
        chain: &Chain<S>,
        state: S,
        meta: &Meta,
        obs: &mut O,
    ) -> (Result<S, CallError>, bool) {
        let mut input = (chain.policy == OnFailure::ReturnInput).then(|| state.clone());
        let mut walk = Walk {
            pos: 0,
            backup: None,
            started: None,
            halted: false,
        };
        let mut state = state;
        loop {
            let out = catch_unwind(AssertUnwindSafe(|| {
                self.walk(chain, state, meta, obs, &mut walk, &mut input)
            }));
            let payload = match out {
                Ok(result) => return (result, walk.halted),
                Err(payload) => payload,
            };
            let Some(step) = chain.steps.get(walk.pos) else {
                // Not a plugin's panic (the engine's own code is not expected to panic);
                // report it against the event rather than unwind into the caller.
                let err = CallError::PluginFailed {
                    event: self.info.name.to_string(),
                    plugin: String::new(),
                    failure: Failure::from_panic(&*payload),
                };
                return (Err(err), false);
            };
            let failure = Failure::from_panic(&*payload);
            let elapsed = walk.started.map(|t| t.elapsed()).unwrap_or_default();
            match self.on_failure(
                chain,
                step,
                failure,
                elapsed,
                obs,
                &mut input,
                &mut walk.backup,
            ) {
                Ok(next) => {
                    state = next;
                    walk.pos += 1;
                }
                Err(done) => return (done, false),
            }
        }
    }

    #[inline(always)]
    fn walk<O: Observer>(
        &self,
        chain: &Chain<S>,
        mut state: S,
        meta: &Meta,
        obs: &mut O,
        walk: &mut Walk<S>,
        input: &mut Option<S>,
    ) -> Result<S, CallError> {
        let timed = O::TIMED || chain.profiling;
        let skip = chain.policy == OnFailure::Skip;
        while let Some(step) = chain.steps.get(walk.pos) {
            if matches!(step.runner, Runner::Encoded(_)) {
                match self.encoded_group(chain, state, meta, obs, walk, input) {
                    Ok(Reply::Continue(next)) => {
                        state = next;
                        continue;
                    }
                    Ok(Reply::Halt(last)) => {
                        walk.halted = true;
                        return Ok(last);
                    }
                    Err(done) => return done,
                }
            }
            let cx = Context::new(&self.name, &step.name, meta);
            if skip {
                // Cleared first: if the clone itself panics, no stale backup is left behind.
                walk.backup = None;
                walk.backup = Some(state.clone());
            }
            if timed {
                walk.started = Some(Instant::now());
            }
            // Native steps reply without a `Result` around the state: on this path every
            // wrapper is another copy of the state.
            let reply = match &step.runner {
                Runner::Native(runner) => runner.run(state, &cx),
                Runner::Collect(runner) => {
                    if runner.collect_into(&mut state, &cx) {
                        Reply::Halt(state)
                    } else {
                        Reply::Continue(state)
                    }
                }
                Runner::Sync(runner) => match runner.run(state, &cx) {
                    Ok(reply) => reply,
                    Err(failure) => {
                        let elapsed = walk.started.map(|t| t.elapsed()).unwrap_or_default();
                        match self.on_failure(
                            chain,
                            step,
                            failure,
                            elapsed,
                            obs,
                            input,
                            &mut walk.backup,
                        ) {
                            Ok(next) => state = next,
                            Err(done) => return done,
                        }
                        walk.pos += 1;
                        continue;
                    }
                },
                // Excluded by the caller (`first_async` is set whenever a step is async) and
                // above (encoded steps run as a group).
                Runner::Async(_) | Runner::Encoded(_) => {
                    return Err(self.error(
                        step,
                        Failure::new(
                            FailureKind::InvalidReply,
                            "unexpected step kind in a sync call",
                        ),
                    ));
                }
            };
            let elapsed = if timed {
                walk.started.map(|t| t.elapsed()).unwrap_or_default()
            } else {
                Duration::ZERO
            };
            if chain.profiling {
                step.stats.timed(elapsed);
            }
            step.stats.succeeded();
            state = match reply {
                Reply::Continue(next) => {
                    obs.step(&step.name, elapsed, StepOutcome::Continued);
                    obs.state(&next);
                    next
                }
                Reply::Halt(last) => {
                    obs.step(&step.name, elapsed, StepOutcome::Halted);
                    obs.state(&last);
                    walk.halted = true;
                    return Ok(last);
                }
            };
            walk.pos += 1;
        }
        Ok(state)
    }

    /// Runs consecutive encoded steps of one wire from `walk.pos`: encodes the state once,
    /// passes the bytes from step to step, and decodes once after the last (or the
    /// halting) step. Leaves `walk.pos` after the group.
    #[allow(clippy::type_complexity)]
    fn encoded_group<O: Observer>(
        &self,
        chain: &Chain<S>,
        state: S,
        meta: &Meta,
        obs: &mut O,
        walk: &mut Walk<S>,
        input: &mut Option<S>,
    ) -> Result<Reply<S>, Result<S, CallError>> {
        let timed = O::TIMED || chain.profiling;
        let skip = chain.policy == OnFailure::Skip;
        let wire = chain.steps[walk.pos].wire;
        let first = walk.pos;
        walk.backup = None;
        let mut bytes = match encode(wire, &state) {
            Ok(b) => b,
            Err(f) => {
                let step = &chain.steps[walk.pos];
                let mut backup = Some(state);
                let next =
                    self.on_failure(chain, step, f, Duration::ZERO, obs, input, &mut backup)?;
                walk.pos += 1;
                return Ok(Reply::Continue(next));
            }
        };
        drop(state);
        // Under Skip, the state each step was given (decoded anyway, to resume from).
        let mut given: Option<S> = None;
        while let Some(step) = chain.steps.get(walk.pos) {
            let Runner::Encoded(runner) = &step.runner else {
                break;
            };
            if step.wire != wire {
                break;
            }
            if skip {
                // The decode that Skip needs also checks the previous step's reply: bytes
                // that do not decode are that step's failure, skipped like any other.
                match decode::<S>(wire, &bytes) {
                    Ok(s) => given = Some(s),
                    Err(f) if walk.pos > first => {
                        let prev = &chain.steps[walk.pos - 1];
                        let mut backup = given.take();
                        let next = self.on_failure(
                            chain,
                            prev,
                            f,
                            Duration::ZERO,
                            obs,
                            input,
                            &mut backup,
                        )?;
                        bytes = encode(wire, &next).map_err(|f| Err(self.error(prev, f)))?;
                        given = Some(next);
                    }
                    Err(f) => return Err(Err(self.error(step, f))),
                }
                // `run` resumes from `walk` if the step panics.
                walk.backup = given.clone();
            }
            let cx = Context::new(&self.name, &step.name, meta);
            let started = timed.then(Instant::now);
            walk.started = started;
            let next_same = chain
                .steps
                .get(walk.pos + 1)
                .is_some_and(|s| matches!(s.runner, Runner::Encoded(_)) && s.wire == wire);
            // A step answers for what it replies: decoded right here when the group ends
            // with it (the state leaves the group) or it halts; otherwise passed on as is.
            let out = runner.run(&bytes, wire, &cx).and_then(|reply| match reply {
                Reply::Halt(b) => decode::<S>(wire, &b).map(|s| Err(Reply::Halt(s))),
                Reply::Continue(b) if !next_same => {
                    decode::<S>(wire, &b).map(|s| Err(Reply::Continue(s)))
                }
                Reply::Continue(b) => Ok(Ok(b)),
            });
            let elapsed = started.map(|t| t.elapsed()).unwrap_or_default();
            if chain.profiling {
                step.stats.timed(elapsed);
            }
            match out {
                // Passed on, still encoded.
                Ok(Ok(next)) => {
                    step.stats.succeeded();
                    obs.step(&step.name, elapsed, StepOutcome::Continued);
                    if O::STATES
                        && let Ok(replied) = decode::<S>(wire, &next)
                    {
                        obs.state(&replied);
                    }
                    bytes = next;
                    walk.pos += 1;
                }
                // The group ends here, decoded.
                Ok(Err(reply)) => {
                    step.stats.succeeded();
                    walk.pos += 1;
                    let outcome = if reply.is_halt() {
                        StepOutcome::Halted
                    } else {
                        StepOutcome::Continued
                    };
                    obs.step(&step.name, elapsed, outcome);
                    match &reply {
                        Reply::Continue(s) | Reply::Halt(s) => obs.state(s),
                    }
                    return Ok(reply);
                }
                Err(failure) => {
                    // Without Skip nothing decoded this step's input: if it does not decode,
                    // the previous step replied garbage and the call ends on its account.
                    if !skip
                        && walk.pos > first
                        && let Err(f) = decode::<S>(wire, &bytes)
                    {
                        let prev = &chain.steps[walk.pos - 1];
                        let mut none = None;
                        let outcome =
                            self.on_failure(chain, prev, f, Duration::ZERO, obs, input, &mut none);
                        // Without Skip the policy always ends the call here.
                        return Err(match outcome {
                            Err(done) => done,
                            Ok(_) => Err(self.error(step, failure)),
                        });
                    }
                    // Skip goes on from the state this step was given.
                    let mut backup = given.take();
                    let next =
                        self.on_failure(chain, step, failure, elapsed, obs, input, &mut backup)?;
                    walk.pos += 1;
                    if !next_same {
                        return Ok(Reply::Continue(next));
                    }
                    bytes = encode(wire, &next).map_err(|f| Err(self.error(step, f)))?;
                }
            }
        }
        // Reached when the group ends without a step that decoded (cannot happen: the
        // last step of a group decodes); kept total.
        decode::<S>(wire, &bytes).map(Reply::Continue).map_err(|f| {
            let step = &chain.steps[walk.pos.saturating_sub(1)];
            Err(self.error(step, f))
        })
    }

    /// Counts a failure and applies the policy: `Ok(state)` to go on with, or the call's end.
    #[allow(clippy::too_many_arguments)]
    #[cold]
    fn on_failure<O: Observer>(
        &self,
        chain: &Chain<S>,
        step: &Step<S>,
        failure: Failure,
        elapsed: Duration,
        obs: &mut O,
        input: &mut Option<S>,
        backup: &mut Option<S>,
    ) -> Result<S, Result<S, CallError>> {
        self.failed(step, &failure);
        obs.step(
            &step.name,
            elapsed,
            StepOutcome::Failed {
                failure: failure.clone(),
            },
        );
        match (chain.policy, input.take(), backup.take()) {
            (OnFailure::ReturnInput, Some(input), _) => Err(Ok(input)),
            (OnFailure::Skip, _, Some(backup)) => Ok(backup),
            _ => Err(Err(self.error(step, failure))),
        }
    }

    /// The async call: runs sync steps inline and awaits async ones.
    pub(crate) async fn call_async(&self, state: S, meta: &Meta) -> Result<S, CallError> {
        let chain = self.chain.load_full();
        if chain.steps.is_empty() && chain.wrappers.is_empty() {
            return Ok(state);
        }
        self.run_async(&chain, state, meta, &mut Quiet).await
    }

    pub(crate) async fn trace_async(&self, state: S, meta: &Meta) -> Trace<S> {
        let chain = self.chain.load_full();
        let mut rec = Recorder::default();
        let given = serde_json::to_value(&state).ok();
        let result = self.run_async(&chain, state, meta, &mut rec).await;
        Trace {
            result,
            steps: rec.steps,
            halted_by: rec.halted_by,
            given,
        }
    }

    async fn run_async<O: Observer + Send>(
        &self,
        chain: &Chain<S>,
        state: S,
        meta: &Meta,
        obs: &mut O,
    ) -> Result<S, CallError> {
        if !chain.profiling {
            return self.run_steps_async(chain, state, meta, obs).await;
        }
        let started = Instant::now();
        let out = self.run_steps_async(chain, state, meta, obs).await;
        self.called(started, out.is_err());
        out
    }

    async fn run_steps_async<O: Observer + Send>(
        &self,
        chain: &Chain<S>,
        state: S,
        meta: &Meta,
        obs: &mut O,
    ) -> Result<S, CallError> {
        if chain.wrappers.is_empty() {
            return self.run_inner_async(chain, state, meta, obs).await.0;
        }
        self.wrapped_async(chain, 0, state, meta, obs)
            .await
            .map(Reply::into_state)
    }

    /// [`Slot::wrapped`] for async chains: the wrapper's halves around an awaited rest.
    fn wrapped_async<'a, O: Observer + Send>(
        &'a self,
        chain: &'a Chain<S>,
        i: usize,
        state: S,
        meta: &'a Meta,
        obs: &'a mut O,
    ) -> BoxFuture<'a, Outcome<S>> {
        Box::pin(async move {
            let Some(w) = chain.wrappers.get(i) else {
                let (result, halted) = self.run_inner_async(chain, state, meta, obs).await;
                return outcome_of(result, halted);
            };
            let cx = Context::new(&self.name, &w.name, meta);
            let started = (O::TIMED || chain.profiling).then(Instant::now);
            let out = async {
                let (reply, mut token) = w.around.before(state, &cx)?;
                let mut outcome = match reply {
                    Reply::Continue(s) => {
                        self.wrapped_async(chain, i + 1, s, meta, &mut *obs).await
                    }
                    Reply::Halt(s) => Ok(Reply::Halt(s)),
                };
                for _ in 0..=crate::wrap::MAX_RETRIES {
                    match w.around.after(outcome, &mut token, &cx)? {
                        crate::wrap::After::Return(o) => return Ok(o),
                        crate::wrap::After::Retry(s) => {
                            outcome = self.wrapped_async(chain, i + 1, s, meta, &mut *obs).await;
                        }
                    }
                }
                Err(crate::wrap::too_many_retries())
            }
            .await;
            self.unwrapped(chain, w, started, out, obs)
        })
    }

    async fn run_inner_async<O: Observer + Send>(
        &self,
        chain: &Chain<S>,
        mut state: S,
        meta: &Meta,
        obs: &mut O,
    ) -> (Result<S, CallError>, bool) {
        let mut input = (chain.policy == OnFailure::ReturnInput).then(|| state.clone());
        for step in chain.steps.iter() {
            let cx = Context::new(&self.name, &step.name, meta);
            let backup = (chain.policy == OnFailure::Skip).then(|| state.clone());
            let timed = O::TIMED || chain.profiling;
            let started = timed.then(Instant::now);
            let out = match &step.runner {
                Runner::Native(runner) => catch_unwind(AssertUnwindSafe(|| runner.run(state, &cx)))
                    .map_err(|payload| Failure::from_panic(&*payload)),
                Runner::Collect(runner) => catch_unwind(AssertUnwindSafe(|| {
                    let mut state = state;
                    if runner.collect_into(&mut state, &cx) {
                        Reply::Halt(state)
                    } else {
                        Reply::Continue(state)
                    }
                }))
                .map_err(|payload| Failure::from_panic(&*payload)),
                // Synchronous steps (a wasm plugin may run up to its deadline) must not hold
                // an executor thread: they run where blocking is allowed.
                Runner::Sync(runner) => blocking(|| {
                    catch_unwind(AssertUnwindSafe(|| runner.run(state, &cx)))
                        .unwrap_or_else(|payload| Err(Failure::from_panic(&*payload)))
                }),
                Runner::Encoded(runner) => blocking(|| {
                    catch_unwind(AssertUnwindSafe(|| {
                        let bytes = encode(step.wire, &state)?;
                        match runner.run(&bytes, step.wire, &cx)? {
                            Reply::Continue(b) => decode(step.wire, &b).map(Reply::Continue),
                            Reply::Halt(b) => decode(step.wire, &b).map(Reply::Halt),
                        }
                    }))
                    .unwrap_or_else(|payload| Err(Failure::from_panic(&*payload)))
                }),
                Runner::Async(runner) => {
                    match catch_unwind(AssertUnwindSafe(|| runner.run(state, &cx))) {
                        Ok(fut) => CatchUnwind(fut).await.unwrap_or_else(Err),
                        Err(payload) => Err(Failure::from_panic(&*payload)),
                    }
                }
            };
            let elapsed = started.map(|t| t.elapsed()).unwrap_or_default();
            if chain.profiling {
                step.stats.timed(elapsed);
            }
            match out {
                Ok(Reply::Continue(next)) => {
                    step.stats.succeeded();
                    obs.step(&step.name, elapsed, StepOutcome::Continued);
                    obs.state(&next);
                    state = next;
                }
                Ok(Reply::Halt(last)) => {
                    step.stats.succeeded();
                    obs.step(&step.name, elapsed, StepOutcome::Halted);
                    obs.state(&last);
                    return (Ok(last), true);
                }
                Err(failure) => {
                    self.failed(step, &failure);
                    obs.step(
                        &step.name,
                        elapsed,
                        StepOutcome::Failed {
                            failure: failure.clone(),
                        },
                    );
                    match (chain.policy, input.take(), backup) {
                        (OnFailure::ReturnInput, Some(input), _) => return (Ok(input), false),
                        (OnFailure::Skip, _, Some(backup)) => state = backup,
                        _ => return (Err(self.error(step, failure)), false),
                    }
                }
            }
        }
        (Ok(state), false)
    }

    fn error(&self, step: &Step<S>, failure: Failure) -> CallError {
        CallError::PluginFailed {
            event: self.info.name.to_string(),
            plugin: step.name.to_string(),
            failure,
        }
    }

    /// The failure path: count, publish, and stop the plugin past the threshold.
    #[cold]
    fn failed(&self, step: &Step<S>, failure: &Failure) {
        self.failed_named(&step.name, &step.stats, failure);
    }

    /// [`Slot::failed`] for a plugin given by name and counters (a step or a wrapper).
    #[cold]
    fn failed_named(&self, name: &Arc<str>, stats: &Arc<Stats>, failure: &Failure) {
        let consecutive = stats.consecutive.fetch_add(1, Relaxed).saturating_add(1);
        stats.failures.fetch_add(1, Relaxed);
        if let Ok(mut last) = stats.last_error.lock() {
            *last = Some(failure.clone());
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.plugin_failed(&self.info.name, name, stats, failure, consecutive);
        }
    }

    /// Builds and swaps in a new chain.
    pub(crate) fn install(&self, plan: &[PlanStep], policy: OnFailure, profiling: bool) {
        let mut first_async = None;
        // Wrappers keep the plan's order among themselves: the first is the outermost.
        let wrappers: Vec<Wrap<S>> = plan
            .iter()
            .filter(|p| p.code.is_wrapper())
            .filter_map(|p| {
                Some(Wrap {
                    name: p.name.clone(),
                    around: p.code.around::<S>()?,
                    stats: p.stats.clone(),
                })
            })
            .collect();
        let steps: Vec<Step<S>> = plan
            .iter()
            .filter(|p| !p.code.is_wrapper())
            .filter_map(|p| {
                // The control path checked state types at registration; a plugin whose
                // code cannot run on this state is left out rather than trusted.
                let runner = match self.adapt {
                    Some(adapt) => adapt(&p.name, &p.code)?,
                    None => p.code.runner::<S>()?,
                };
                if matches!(runner, Runner::Async(_)) && first_async.is_none() {
                    first_async = Some(p.name.clone());
                }
                let wire = match &runner {
                    Runner::Encoded(r) => r.wire(&self.info.name, self.layout),
                    _ => Wire::Json,
                };
                Some(Step {
                    name: p.name.clone(),
                    runner,
                    wire,
                    stats: p.stats.clone(),
                })
            })
            .collect();
        let plain_steps = policy == OnFailure::Error
            && !profiling
            && steps
                .iter()
                .all(|s| matches!(s.runner, Runner::Native(_) | Runner::Collect(_)));
        // The hot walk of waterfalls takes native steps only.
        let native = plain_steps && steps.iter().all(|s| matches!(s.runner, Runner::Native(_)));
        let plain = native && wrappers.is_empty();
        self.chain.store(Arc::new(Chain {
            steps: steps.into_boxed_slice(),
            wrappers: wrappers.into_boxed_slice(),
            first_async,
            policy,
            profiling,
            plain_steps,
            native,
            plain,
        }));
    }

    /// The wrappers around the current chain, outermost first.
    pub(crate) fn wrapper_names(&self) -> Vec<String> {
        self.chain
            .load()
            .wrappers
            .iter()
            .map(|w| w.name.to_string())
            .collect()
    }

    /// The plugins in the current chain, in order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.chain
            .load()
            .steps
            .iter()
            .map(|s| s.name.to_string())
            .collect()
    }

    pub(crate) fn event_profile(&self) -> EventProfile {
        let calls = self.stats.calls.load(Relaxed);
        let nanos = self.stats.nanos.load(Relaxed);
        EventProfile {
            event: self.info.name.to_string(),
            calls,
            errors: self.stats.failures.load(Relaxed),
            mean_us: if calls == 0 {
                0.0
            } else {
                nanos as f64 / calls as f64 / 1e3
            },
            max_us: self.stats.max_nanos.load(Relaxed) as f64 / 1e3,
            buckets: cumulative(&self.stats.buckets),
            sum_us: nanos as f64 / 1e3,
        }
    }

    /// Each plugin's profile: the steps in chain order, then the wrappers (outermost
    /// first; a wrapper's time includes the rest of the chain's).
    pub(crate) fn profile(&self) -> Vec<PluginProfile> {
        let chain = self.chain.load();
        let steps = chain.steps.iter().map(|s| (&s.name, &s.stats));
        let wrappers = chain.wrappers.iter().map(|w| (&w.name, &w.stats));
        steps
            .chain(wrappers)
            .enumerate()
            .map(|(position, (name, stats))| {
                let calls = stats.calls.load(Relaxed);
                let nanos = stats.nanos.load(Relaxed);
                PluginProfile {
                    plugin: name.to_string(),
                    position,
                    calls,
                    mean_us: if calls == 0 {
                        0.0
                    } else {
                        nanos as f64 / calls as f64 / 1e3
                    },
                    max_us: stats.max_nanos.load(Relaxed) as f64 / 1e3,
                    failures: stats.failures.load(Relaxed),
                    buckets: cumulative(&stats.buckets),
                    sum_us: nanos as f64 / 1e3,
                }
            })
            .collect()
    }
}

/// The steps' result as a wrapper sees it: a halt says so.
fn outcome_of<S>(result: Result<S, CallError>, halted: bool) -> Outcome<S> {
    result.map(|s| {
        if halted {
            Reply::Halt(s)
        } else {
            Reply::Continue(s)
        }
    })
}

/// Per-bucket counts made cumulative, as Prometheus histograms count.
fn cumulative(buckets: &[AtomicU64]) -> Vec<u64> {
    buckets
        .iter()
        .scan(0, |total, b| {
            *total += b.load(Relaxed);
            Some(*total)
        })
        .collect()
}

impl<I: State, O: State> Slot<Gather<I, O>> {
    /// A collecting call: the accumulator is made here, with room for every plugin of
    /// the chain it runs (the only allocation of a plain collection).
    #[inline]
    pub(crate) fn collect(&self, input: I, meta: &Meta) -> Result<Gather<I, O>, CallError> {
        let chain = self.chain.load();
        let state = Gather::new(input, chain.steps.len());
        if chain.steps.is_empty() && chain.wrappers.is_empty() {
            return Ok(state);
        }
        if chain.plain_steps && chain.wrappers.is_empty() {
            return self.plain_walk(&chain, state, meta).0;
        }
        self.run(&chain, state, meta, &mut Quiet)
    }
}

/// Options of a call by name with a JSON state.
///
/// ```
/// use plugboard_engine::{CallOptions, Engine};
/// use serde_json::json;
///
/// let engine = Engine::new();
/// // The plugins may read `meta` but not change `data`, and the caller gets back the
/// // state it passed in (the plugins still run, e.g. for their side effects).
/// let opts = CallOptions {
///     private: vec!["data".into()],
///     return_input: true,
///     ..CallOptions::default()
/// };
/// let state = json!({"data": {"title": "hello"}, "extra": {}});
/// let out = engine.call_json("on_content_prepare", state.clone(), &opts)?;
/// assert_eq!(out["data"], state["data"]);
/// # Ok::<(), plugboard_engine::CallError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Read-only meta for the plugins.
    pub meta: Meta,
    /// Top-level fields of the state that the plugins may not change: they are restored
    /// from the input after the chain (Mishka's `private`).
    pub private: Vec<String>,
    /// Run the chain but return the input (Mishka's `return`/`no_return`).
    pub return_input: bool,
}

/// A slot seen without its state type, for calls by name and for the control path.
pub(crate) trait AnySlot: Send + Sync {
    fn info(&self) -> &EventInfo;
    fn state_type(&self) -> TypeId;
    fn state_name(&self) -> &'static str;
    fn install(&self, plan: &[PlanStep], policy: OnFailure, profiling: bool);
    fn names(&self) -> Vec<String>;
    fn wrapper_names(&self) -> Vec<String>;
    fn profile(&self) -> Vec<PluginProfile>;
    fn event_profile(&self) -> EventProfile;
    fn call_json(&self, state: Value, opts: &CallOptions) -> Result<Value, CallError>;
    fn trace_json(&self, state: Value, opts: &CallOptions) -> Trace<Value>;
    fn call_json_async<'a>(
        &'a self,
        state: Value,
        opts: &'a CallOptions,
    ) -> BoxFuture<'a, Result<Value, CallError>>;
    fn trace_json_async<'a>(
        &'a self,
        state: Value,
        opts: &'a CallOptions,
    ) -> BoxFuture<'a, Trace<Value>>;
}

impl<S: State> Slot<S> {
    fn decode(&self, state: &Value) -> Result<S, CallError> {
        S::deserialize(state).map_err(|error| CallError::InvalidState {
            event: self.info.name.to_string(),
            error,
        })
    }

    fn encode(&self, state: S, input: &Value, opts: &CallOptions) -> Result<Value, CallError> {
        if opts.return_input {
            return Ok(input.clone());
        }
        let mut out = serde_json::to_value(state).map_err(|error| CallError::InvalidState {
            event: self.info.name.to_string(),
            error,
        })?;
        // A collecting event's plugins cannot change its input, and its answer is what
        // they gathered: there is nothing to put back.
        if self.info.mode == plugboard_core::Mode::Waterfall {
            restore_private(&mut out, input, &opts.private);
        }
        Ok(out)
    }
}

/// Decodes an encoded step's reply into the event's state. A JSON reply holding fields the
/// state does not have is refused, naming them: decoding would drop them, and the plugin
/// that added them would never learn why its change was lost.
fn decode<S: DeserializeOwned>(wire: Wire, bytes: &[u8]) -> Result<S, Failure> {
    let invalid = |e: &dyn std::fmt::Display| {
        Failure::new(
            FailureKind::InvalidReply,
            format!("reply is not a valid state for the event: {e}"),
        )
    };
    match wire {
        Wire::Binary => wire.decode(bytes).map_err(|e| invalid(&e)),
        Wire::Json => {
            let mut unknown = Vec::new();
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let state = serde_ignored::deserialize(&mut de, |path| {
                unknown.push(format!("`{path}`"));
            })
            .map_err(|e| invalid(&e))?;
            de.end().map_err(|e| invalid(&e))?;
            if unknown.is_empty() {
                Ok(state)
            } else {
                Err(Failure::new(
                    FailureKind::InvalidReply,
                    format!(
                        "reply has fields the event's state does not: {} (they would be lost: put a plugin's additions in a field the state has, such as `extra`)",
                        unknown.join(", ")
                    ),
                ))
            }
        }
    }
}

/// Encodes the state for an encoded step; a state that cannot be encoded is that step's
/// failure (it could not be given its input).
fn encode<S: Serialize>(wire: Wire, state: &S) -> Result<Vec<u8>, Failure> {
    wire.encode(state).map_err(|e| {
        Failure::new(
            FailureKind::InvalidReply,
            format!("state could not be encoded: {e}"),
        )
    })
}

/// Puts the input's private fields back over the output.
fn restore_private(out: &mut Value, input: &Value, private: &[String]) {
    if let (Value::Object(out), Value::Object(input)) = (out, input) {
        for key in private {
            match input.get(key) {
                Some(v) => {
                    out.insert(key.clone(), v.clone());
                }
                None => {
                    out.remove(key);
                }
            }
        }
    }
}

impl<S: State> AnySlot for Slot<S> {
    fn info(&self) -> &EventInfo {
        &self.info
    }

    fn state_type(&self) -> TypeId {
        TypeId::of::<S>()
    }

    fn state_name(&self) -> &'static str {
        type_name::<S>()
    }

    fn install(&self, plan: &[PlanStep], policy: OnFailure, profiling: bool) {
        Slot::install(self, plan, policy, profiling)
    }

    fn names(&self) -> Vec<String> {
        Slot::names(self)
    }

    fn wrapper_names(&self) -> Vec<String> {
        Slot::wrapper_names(self)
    }

    fn profile(&self) -> Vec<PluginProfile> {
        Slot::profile(self)
    }

    fn event_profile(&self) -> EventProfile {
        Slot::event_profile(self)
    }

    fn call_json(&self, state: Value, opts: &CallOptions) -> Result<Value, CallError> {
        let typed = self.decode(&state)?;
        let out = self.call(typed, &opts.meta)?;
        self.encode(out, &state, opts)
    }

    fn trace_json(&self, state: Value, opts: &CallOptions) -> Trace<Value> {
        match self.decode(&state) {
            Ok(typed) => {
                let t = self.trace(typed, &opts.meta);
                Trace {
                    result: t.result.and_then(|s| self.encode(s, &state, opts)),
                    steps: t.steps,
                    halted_by: t.halted_by,
                    given: t.given,
                }
            }
            Err(e) => Trace {
                result: Err(e),
                steps: Vec::new(),
                halted_by: None,
                given: None,
            },
        }
    }

    fn call_json_async<'a>(
        &'a self,
        state: Value,
        opts: &'a CallOptions,
    ) -> BoxFuture<'a, Result<Value, CallError>> {
        Box::pin(async move {
            let typed = self.decode(&state)?;
            let out = self.call_async(typed, &opts.meta).await?;
            self.encode(out, &state, opts)
        })
    }

    fn trace_json_async<'a>(
        &'a self,
        state: Value,
        opts: &'a CallOptions,
    ) -> BoxFuture<'a, Trace<Value>> {
        Box::pin(async move {
            match self.decode(&state) {
                Ok(typed) => {
                    let t = self.trace_async(typed, &opts.meta).await;
                    Trace {
                        result: t.result.and_then(|s| self.encode(s, &state, opts)),
                        steps: t.steps,
                        halted_by: t.halted_by,
                        given: t.given,
                    }
                }
                Err(e) => Trace {
                    result: Err(e),
                    steps: Vec::new(),
                    halted_by: None,
                    given: None,
                },
            }
        })
    }
}
