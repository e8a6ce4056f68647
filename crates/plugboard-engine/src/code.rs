//! Plugin code, erased: what the registry keeps for each plugin, and the runners that
//! chains call.

use std::any::{Any, TypeId, type_name};
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use plugboard_core::{
    AsyncPlugin, Context, Event, Json, Plugin, PluginRecord, Reason, Reply, Wire,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Failure, FailureKind, Op};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What kind of code a plugin runs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeKind {
    /// A native, synchronous plugin.
    Native,
    /// A native async plugin.
    NativeAsync,
    /// A plugin that works on JSON (a dynamic plugin).
    Json,
    /// A plugin that works on the encoded state (a sandboxed WebAssembly plugin).
    Encoded,
}

/// A synchronous step of a chain over state `S`.
///
/// Implemented by the engine for native plugins; other crates (e.g. the WebAssembly host)
/// implement it for `S = serde_json::Value` to join any chain through a JSON bridge, and
/// report their own failures (traps, timeouts) as [`Failure`]s.
pub trait SyncStep<S>: Send + Sync + 'static {
    /// Runs the step.
    fn run(&self, state: S, cx: &Context<'_>) -> Result<Reply<S>, Failure>;
}

/// An async step of a chain over state `S`.
pub trait AsyncStep<S>: Send + Sync + 'static {
    /// Runs the step.
    fn run<'a>(&'a self, state: S, cx: &'a Context<'a>)
    -> BoxFuture<'a, Result<Reply<S>, Failure>>;
}

/// A step that works on the encoded state, such as a sandboxed plugin.
///
/// Consecutive encoded steps in a chain that use the same [`Wire`] pass the bytes from one
/// to the next: the state is encoded before the first and decoded (and so validated
/// against the event's state type) after the last, not in between. A step whose input does
/// not decode is not charged for it: the step that produced the bytes is.
pub trait EncodedStep: Send + Sync + 'static {
    /// Runs the step on the state encoded in `wire`; replies in the same encoding.
    fn run(&self, state: &[u8], wire: Wire, cx: &Context<'_>) -> Result<Reply<Vec<u8>>, Failure>;

    /// The encoding this step wants for `event`'s state, given the fingerprint of the
    /// state's binary layout (`None`: the event has none, so JSON it is). Asked when the
    /// chain is built, not per call.
    fn wire(&self, event: &str, layout: Option<u64>) -> Wire {
        let _ = (event, layout);
        Wire::Json
    }
}

/// The state type of encoded steps: they fit any event.
pub(crate) struct Encoded;

/// The callbacks of a plugin, without its event type.
pub trait Callbacks: Send + Sync + 'static {
    /// Runs the callback for `op` (`initial` for [`Op::Register`]).
    fn lifecycle(&self, op: Op, record: &PluginRecord) -> Result<(), Reason>;
    /// Runs the health check.
    fn health_check(&self) -> Result<(), Reason>;
}

/// A native step: cannot fail except by panicking, so it replies without a `Result`
/// wrapper (the state is moved one time fewer per step on the hot path).
pub(crate) trait NativeStep<S>: Send + Sync + 'static {
    fn run(&self, state: S, cx: &Context<'_>) -> Reply<S>;
}

/// A native collector's step: adds its answer to the accumulator in place (nothing is
/// moved through it), and says whether it ends the collection.
pub(crate) trait CollectStep<S>: Send + Sync + 'static {
    fn collect_into(&self, acc: &mut S, cx: &Context<'_>) -> bool;
}

/// A step, native, fallible (JSON bridges, sandboxed plugins) or async.
pub(crate) enum Runner<S> {
    Native(Arc<dyn NativeStep<S>>),
    /// A native collector in a collecting chain.
    Collect(Arc<dyn CollectStep<S>>),
    Sync(Arc<dyn SyncStep<S>>),
    Async(Arc<dyn AsyncStep<S>>),
    Encoded(Arc<dyn EncodedStep>),
}

impl<S> Clone for Runner<S> {
    fn clone(&self) -> Self {
        match self {
            Runner::Native(r) => Runner::Native(r.clone()),
            Runner::Collect(r) => Runner::Collect(r.clone()),
            Runner::Sync(r) => Runner::Sync(r.clone()),
            Runner::Async(r) => Runner::Async(r.clone()),
            Runner::Encoded(r) => Runner::Encoded(r.clone()),
        }
    }
}

/// A registered plugin's code: its callbacks plus a runner over its own state type.
#[derive(Clone)]
pub struct Code {
    kind: CodeKind,
    /// Runs around the rest of the chain rather than as a step of it.
    wrapper: bool,
    state_type: TypeId,
    state_name: &'static str,
    callbacks: Arc<dyn Callbacks>,
    /// A `Runner<S>` for the plugin's state type `S`.
    runner: Arc<dyn Any + Send + Sync>,
}

impl Code {
    /// Code for a native plugin on event `E`.
    pub(crate) fn native<E: Event, P: Plugin<E>>(plugin: P) -> Self {
        let inner = Arc::new(Native::<E, P>(plugin, PhantomData));
        Code {
            wrapper: false,
            kind: CodeKind::Native,
            state_type: TypeId::of::<E::State>(),
            state_name: type_name::<E::State>(),
            callbacks: inner.clone(),
            runner: Arc::new(Runner::<E::State>::Native(inner)),
        }
    }

    /// Code for a native async plugin on event `E`.
    pub(crate) fn native_async<E: Event, P: AsyncPlugin<E>>(plugin: P) -> Self {
        let inner = Arc::new(NativeAsync::<E, P>(plugin, PhantomData));
        Code {
            wrapper: false,
            kind: CodeKind::NativeAsync,
            state_type: TypeId::of::<E::State>(),
            state_name: type_name::<E::State>(),
            callbacks: inner.clone(),
            runner: Arc::new(Runner::<E::State>::Async(inner)),
        }
    }

    /// Code for a plugin that runs on JSON and may fail in its own ways (for example a
    /// sandboxed WebAssembly plugin). It can join any event's chain.
    pub fn json_step<T>(step: Arc<T>) -> Self
    where
        T: SyncStep<Value> + Callbacks,
    {
        Code {
            wrapper: false,
            kind: CodeKind::Json,
            state_type: TypeId::of::<Value>(),
            state_name: type_name::<Value>(),
            callbacks: step.clone(),
            runner: Arc::new(Runner::<Value>::Sync(step)),
        }
    }

    /// Code for a plugin that runs on the encoded state (for example a sandboxed
    /// WebAssembly plugin). It can join any event's chain; consecutive encoded steps pass
    /// the encoded state along without decoding it in between.
    pub fn encoded_step<T>(step: Arc<T>) -> Self
    where
        T: EncodedStep + Callbacks,
    {
        Code {
            wrapper: false,
            kind: CodeKind::Encoded,
            state_type: TypeId::of::<Encoded>(),
            state_name: "encoded JSON",
            callbacks: step.clone(),
            runner: Arc::new(step as Arc<dyn EncodedStep>),
        }
    }

    /// Code for a native `Plugin<Json>`.
    pub(crate) fn json<P: Plugin<Json>>(plugin: P) -> Self {
        let mut code = Code::native::<Json, P>(plugin);
        code.kind = CodeKind::Json;
        code
    }

    /// Code for a native wrapper on event `E`.
    pub(crate) fn wrapper<E: Event, W: crate::wrap::Wrapper<E>>(wrapper: W) -> Self {
        let inner = Arc::new(crate::wrap::NativeWrapper::<E, W>::new(wrapper));
        let around: Arc<dyn crate::wrap::Around<E::State>> = inner.clone();
        Code {
            wrapper: true,
            kind: CodeKind::Native,
            state_type: TypeId::of::<E::State>(),
            state_name: type_name::<E::State>(),
            callbacks: inner,
            runner: Arc::new(around),
        }
    }

    /// Code for a wrapper that works on JSON (for example a sandboxed WebAssembly
    /// plugin's two calls). It can wrap any waterfall event's chain.
    pub fn json_wrapper<T>(wrapper: Arc<T>) -> Self
    where
        T: crate::wrap::JsonWrapper + Callbacks,
    {
        Code {
            wrapper: true,
            kind: CodeKind::Encoded,
            state_type: TypeId::of::<Encoded>(),
            state_name: "encoded JSON",
            callbacks: wrapper.clone(),
            runner: Arc::new(wrapper as Arc<dyn crate::wrap::JsonWrapper>),
        }
    }

    /// The kind of code.
    pub fn kind(&self) -> CodeKind {
        self.kind
    }

    /// Whether it runs around the rest of its event's chain (a wrapper) rather than as one
    /// of its steps.
    pub fn is_wrapper(&self) -> bool {
        self.wrapper
    }

    /// A wrapper's runner over state `S`: its own, or a JSON wrapper's adapter.
    pub(crate) fn around<S>(&self) -> Option<Arc<dyn crate::wrap::Around<S>>>
    where
        S: Serialize + DeserializeOwned + Send + 'static,
    {
        if let Some(json) = self
            .runner
            .downcast_ref::<Arc<dyn crate::wrap::JsonWrapper>>()
        {
            return Some(Arc::new(crate::wrap::JsonAround::<S>::new(json.clone())));
        }
        self.runner
            .downcast_ref::<Arc<dyn crate::wrap::Around<S>>>()
            .cloned()
    }

    pub(crate) fn state_type(&self) -> TypeId {
        self.state_type
    }

    pub(crate) fn state_name(&self) -> &'static str {
        self.state_name
    }

    /// Runs a lifecycle callback; a panic in it is a refusal, never an unwind into the
    /// engine (whatever kind of code implements the callbacks).
    pub(crate) fn lifecycle(&self, op: Op, record: &PluginRecord) -> Result<(), Reason> {
        guarded(|| self.callbacks.lifecycle(op, record))
    }

    /// Runs the health check, guarded like the callbacks.
    pub(crate) fn health_check(&self) -> Result<(), Reason> {
        guarded(|| self.callbacks.health_check())
    }

    /// Whether two codes are the same loaded code (for change detection).
    pub(crate) fn same(&self, other: &Code) -> bool {
        Arc::ptr_eq(&self.runner, &other.runner)
    }

    /// The plugin's own runner, when its state is exactly `S`.
    pub(crate) fn exact_runner<S: 'static>(&self) -> Option<Runner<S>> {
        self.runner.downcast_ref::<Runner<S>>().cloned()
    }

    /// The runner of a JSON or encoded plugin, over JSON (an encoded one stays encoded).
    pub(crate) fn json_runner(&self) -> Option<Runner<Value>> {
        if let Some(r) = self.runner.downcast_ref::<Arc<dyn EncodedStep>>() {
            return Some(Runner::Encoded(r.clone()));
        }
        self.exact_runner::<Value>()
    }

    /// Code for a native collector on a collecting event `E`, contributing as `name`.
    pub(crate) fn collector<E, P>(name: Arc<str>, plugin: P) -> Self
    where
        E: plugboard_core::Collect,
        P: plugboard_core::Collector<E>,
    {
        type G<E> =
            crate::collect::Gather<<E as Event>::State, <E as plugboard_core::Collect>::Output>;
        let inner = Arc::new(crate::collect::NativeCollector::<E, P>::new(plugin, name));
        Code {
            wrapper: false,
            kind: CodeKind::Native,
            state_type: TypeId::of::<G<E>>(),
            state_name: type_name::<G<E>>(),
            callbacks: inner.clone(),
            runner: Arc::new(Runner::<G<E>>::Collect(inner)),
        }
    }

    /// Code for a native async collector on a collecting event `E`.
    pub(crate) fn async_collector<E, P>(name: Arc<str>, plugin: P) -> Self
    where
        E: plugboard_core::Collect,
        P: plugboard_core::AsyncCollector<E>,
    {
        type G<E> =
            crate::collect::Gather<<E as Event>::State, <E as plugboard_core::Collect>::Output>;
        let inner = Arc::new(crate::collect::NativeAsyncCollector::<E, P>::new(
            plugin, name,
        ));
        Code {
            wrapper: false,
            kind: CodeKind::NativeAsync,
            state_type: TypeId::of::<G<E>>(),
            state_name: type_name::<G<E>>(),
            callbacks: inner.clone(),
            runner: Arc::new(Runner::<G<E>>::Async(inner)),
        }
    }

    /// The runner over state `S`: the plugin's own, or a JSON bridge around a JSON plugin.
    pub(crate) fn runner<S>(&self) -> Option<Runner<S>>
    where
        S: Serialize + DeserializeOwned + Send + 'static,
    {
        if let Some(r) = self.runner.downcast_ref::<Runner<S>>() {
            return Some(r.clone());
        }
        if let Some(r) = self.runner.downcast_ref::<Arc<dyn EncodedStep>>() {
            return Some(Runner::Encoded(r.clone()));
        }
        let json = self.runner.downcast_ref::<Runner<Value>>()?;
        Some(match json {
            Runner::Encoded(r) => Runner::Encoded(r.clone()),
            // Collectors are typed: none works on JSON.
            Runner::Collect(_) => return None,
            Runner::Native(inner) => Runner::Sync(Arc::new(Bridge {
                inner: inner.clone(),
                _s: PhantomData::<fn(S) -> S>,
            })),
            Runner::Sync(inner) => Runner::Sync(Arc::new(Bridge {
                inner: inner.clone(),
                _s: PhantomData::<fn(S) -> S>,
            })),
            Runner::Async(inner) => Runner::Async(Arc::new(Bridge {
                inner: inner.clone(),
                _s: PhantomData::<fn(S) -> S>,
            })),
        })
    }
}

/// Implements [`Callbacks`] for a holder `$ty<E, P>` whose `.0` is a plugin of trait
/// `$plugin<E>` (`E: $event`; both names in scope where it is used): the plugin traits
/// share their callbacks' names.
macro_rules! plugin_callbacks {
    ($ty:ident, $plugin:ident, $event:ident) => {
        impl<E: $event, P: $plugin<E>> $crate::code::Callbacks for $ty<E, P> {
            fn lifecycle(
                &self,
                op: $crate::error::Op,
                record: &plugboard_core::PluginRecord,
            ) -> Result<(), plugboard_core::Reason> {
                use $crate::error::Op;
                $crate::code::guarded(|| match op {
                    Op::Register => self.0.initial(record),
                    Op::Start | Op::Enable => self.0.start(record),
                    Op::Stop => self.0.stop(record),
                    Op::Restart => self.0.restart(record),
                    Op::Delete => self.0.delete(record),
                    Op::Unregister => self.0.unregister(record),
                })
            }

            fn health_check(&self) -> Result<(), plugboard_core::Reason> {
                $crate::code::guarded(|| self.0.health_check())
            }
        }
    };
}
pub(crate) use plugin_callbacks;

struct Native<E, P>(P, PhantomData<fn() -> E>);

impl<E: Event, P: Plugin<E>> NativeStep<E::State> for Native<E, P> {
    #[inline]
    fn run(&self, state: E::State, cx: &Context<'_>) -> Reply<E::State> {
        self.0.call(state, cx)
    }
}

plugin_callbacks!(Native, Plugin, Event);

struct NativeAsync<E, P>(P, PhantomData<fn() -> E>);

impl<E: Event, P: AsyncPlugin<E>> AsyncStep<E::State> for NativeAsync<E, P> {
    fn run<'a>(
        &'a self,
        state: E::State,
        cx: &'a Context<'a>,
    ) -> BoxFuture<'a, Result<Reply<E::State>, Failure>> {
        Box::pin(async move { Ok(self.0.call(state, cx).await) })
    }
}

plugin_callbacks!(NativeAsync, AsyncPlugin, Event);

/// A callback that panics refuses, with the panic's message; it never poisons the engine.
pub(crate) fn guarded(f: impl FnOnce() -> Result<(), Reason>) -> Result<(), Reason> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(Reason(format!(
            "callback panicked: {}",
            Failure::from_panic(&*payload).message
        )))
    })
}

/// Runs a JSON plugin inside a typed chain: the state is serialised only around this step.
struct Bridge<I: ?Sized, S> {
    inner: Arc<I>,
    _s: PhantomData<fn(S) -> S>,
}

fn to_json<S: Serialize>(state: &S) -> Result<Value, Failure> {
    serde_json::to_value(state).map_err(|e| {
        Failure::new(
            FailureKind::InvalidReply,
            format!("state could not be turned into JSON: {e}"),
        )
    })
}

fn from_json<S: DeserializeOwned>(reply: Reply<Value>) -> Result<Reply<S>, Failure> {
    let halt = reply.is_halt();
    let state = serde_json::from_value(reply.into_state()).map_err(|e| {
        Failure::new(
            FailureKind::InvalidReply,
            format!("reply is not a valid state for the event: {e}"),
        )
    })?;
    Ok(if halt {
        Reply::Halt(state)
    } else {
        Reply::Continue(state)
    })
}

impl<S> SyncStep<S> for Bridge<dyn SyncStep<Value>, S>
where
    S: Serialize + DeserializeOwned + Send + 'static,
{
    fn run(&self, state: S, cx: &Context<'_>) -> Result<Reply<S>, Failure> {
        let json = to_json(&state)?;
        from_json(self.inner.run(json, cx)?)
    }
}

impl<S> SyncStep<S> for Bridge<dyn NativeStep<Value>, S>
where
    S: Serialize + DeserializeOwned + Send + 'static,
{
    fn run(&self, state: S, cx: &Context<'_>) -> Result<Reply<S>, Failure> {
        let json = to_json(&state)?;
        from_json(self.inner.run(json, cx))
    }
}

impl<S> AsyncStep<S> for Bridge<dyn AsyncStep<Value>, S>
where
    S: Serialize + DeserializeOwned + Send + 'static,
{
    fn run<'a>(
        &'a self,
        state: S,
        cx: &'a Context<'a>,
    ) -> BoxFuture<'a, Result<Reply<S>, Failure>> {
        Box::pin(async move {
            let json = to_json(&state)?;
            from_json(self.inner.run(json, cx).await?)
        })
    }
}

/// Polls a future, turning a panic into an error instead of unwinding into the caller.
pub(crate) struct CatchUnwind<F>(pub(crate) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let fut = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *fut).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(Failure::from_panic(&*payload))),
        }
    }
}
