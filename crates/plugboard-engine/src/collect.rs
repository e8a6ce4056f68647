//! Collecting events in the engine.
//!
//! A collecting event's chain is an ordinary chain over an accumulator, [`Gather`]: the
//! caller's input and the contributions so far. Each plugin's runner reads the input,
//! pushes its contribution with its name, and replies continue, or halt when it ends the
//! collection. So ordering, dependencies, failure policies, profiling, traces, async
//! steps and panics work as they do for a waterfall, with no second dispatch loop; a
//! native collector's step is a call and a push into a vector reserved for the chain.
//!
//! JSON, async and sandboxed (encoded) plugins join a collecting chain through adapters
//! built with the chain ([`gather_runner`]): they are given the input as JSON and reply
//! their contribution as JSON (`null` for none), halting to end the collection.

use std::marker::PhantomData;
use std::sync::Arc;

use plugboard_core::{AsyncCollector, Collect, Collector, Context, Contribute, Reply, Wire};
use serde::de::DeserializeOwned;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::code::{AsyncStep, BoxFuture, Code, CollectStep, Runner, SyncStep};
use crate::error::{Failure, FailureKind};

/// One plugin's contribution to a collecting call.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Contribution<O> {
    /// The plugin that gave it.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub plugin: Arc<str>,
    /// What it gave.
    pub output: O,
}

/// What a collecting call gathered: each contribution in chain order, and the plugin
/// that ended the collection early, if one did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Collected<O> {
    /// The contributions, in the order their plugins ran.
    pub results: Vec<Contribution<O>>,
    /// The plugin that ended the collection (no plugin after it was asked).
    pub stopped_by: Option<Arc<str>>,
}

impl<O> Collected<O> {
    /// The contributions without their plugins.
    pub fn outputs(&self) -> impl Iterator<Item = &O> {
        self.results.iter().map(|c| &c.output)
    }

    /// The contributions without their plugins, owned.
    pub fn into_outputs(self) -> Vec<O> {
        self.results.into_iter().map(|c| c.output).collect()
    }
}

/// The state a collecting chain carries. Deserialised from the input alone (a call by
/// name with JSON gives the input); serialised as what was gathered (what a call by name
/// answers, and what a trace shows after each step).
pub(crate) struct Gather<S, O> {
    pub(crate) input: S,
    pub(crate) results: Vec<Contribution<O>>,
    pub(crate) stopped_by: Option<Arc<str>>,
}

impl<S, O> Gather<S, O> {
    /// A call's accumulator, with room for every plugin of the chain.
    pub(crate) fn new(input: S, room: usize) -> Self {
        Gather {
            input,
            results: Vec::with_capacity(room),
            stopped_by: None,
        }
    }

    pub(crate) fn into_collected(self) -> Collected<O> {
        Collected {
            results: self.results,
            stopped_by: self.stopped_by,
        }
    }

    /// Adds a plugin's answer in place; whether it ends the collection.
    #[inline]
    fn add(&mut self, plugin: &Arc<str>, answer: Contribute<O>) -> bool {
        let ends = answer.ends();
        if let Some(output) = answer.into_output() {
            self.results.push(Contribution {
                plugin: plugin.clone(),
                output,
            });
        }
        if ends {
            self.stopped_by = Some(plugin.clone());
        }
        ends
    }

    /// Adds a plugin's answer; halts when it ends the collection.
    fn answer(mut self, plugin: &Arc<str>, answer: Contribute<O>) -> Reply<Self> {
        if self.add(plugin, answer) {
            Reply::Halt(self)
        } else {
            Reply::Continue(self)
        }
    }
}

impl<S: Clone, O: Clone> Clone for Gather<S, O> {
    fn clone(&self) -> Self {
        Gather {
            input: self.input.clone(),
            results: self.results.clone(),
            stopped_by: self.stopped_by.clone(),
        }
    }
}

impl<S, O: Serialize> Serialize for Gather<S, O> {
    fn serialize<Ser: Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        let mut st = s.serialize_struct("Collected", 2)?;
        st.serialize_field("results", &self.results)?;
        st.serialize_field("stopped_by", &self.stopped_by)?;
        st.end()
    }
}

impl<'de, S: Deserialize<'de>, O> Deserialize<'de> for Gather<S, O> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        S::deserialize(d).map(|input| Gather::new(input, 0))
    }
}

/// A native collector; `.1` is its name, given to its contributions.
pub(crate) struct NativeCollector<E, P>(pub(crate) P, pub(crate) Arc<str>, PhantomData<fn() -> E>);

impl<E: Collect, P: Collector<E>> NativeCollector<E, P> {
    pub(crate) fn new(plugin: P, name: Arc<str>) -> Self {
        NativeCollector(plugin, name, PhantomData)
    }
}

impl<E: Collect, P: Collector<E>> CollectStep<Gather<E::State, E::Output>>
    for NativeCollector<E, P>
{
    #[inline]
    fn collect_into(&self, g: &mut Gather<E::State, E::Output>, cx: &Context<'_>) -> bool {
        let answer = self.0.collect(&g.input, cx);
        g.add(&self.1, answer)
    }
}

/// A native async collector; `.1` is its name.
pub(crate) struct NativeAsyncCollector<E, P>(
    pub(crate) P,
    pub(crate) Arc<str>,
    PhantomData<fn() -> E>,
);

impl<E: Collect, P: AsyncCollector<E>> NativeAsyncCollector<E, P> {
    pub(crate) fn new(plugin: P, name: Arc<str>) -> Self {
        NativeAsyncCollector(plugin, name, PhantomData)
    }
}

impl<E: Collect, P: AsyncCollector<E>> AsyncStep<Gather<E::State, E::Output>>
    for NativeAsyncCollector<E, P>
{
    fn run<'a>(
        &'a self,
        g: Gather<E::State, E::Output>,
        cx: &'a Context<'a>,
    ) -> BoxFuture<'a, Result<Reply<Gather<E::State, E::Output>>, Failure>> {
        Box::pin(async move {
            let answer = self.0.collect(&g.input, cx).await;
            Ok(g.answer(&self.1, answer))
        })
    }
}

crate::code::plugin_callbacks!(NativeCollector, Collector, Collect);
crate::code::plugin_callbacks!(NativeAsyncCollector, AsyncCollector, Collect);

/// The runner of `code` in a collecting chain over input `S` and contributions `O`: a
/// native collector's own, or an adapter around a JSON, async JSON or encoded plugin.
pub(crate) fn gather_runner<S, O>(name: &Arc<str>, code: &Code) -> Option<Runner<Gather<S, O>>>
where
    S: Serialize + Send + Sync + 'static,
    O: DeserializeOwned + Send + Sync + 'static,
{
    if let Some(own) = code.exact_runner::<Gather<S, O>>() {
        return Some(own);
    }
    let inner = code.json_runner()?;
    let adapter = Arc::new(JsonCollector::<S, O> {
        name: name.clone(),
        inner,
        _p: PhantomData,
    });
    Some(if adapter.is_async() {
        Runner::Async(adapter)
    } else {
        Runner::Sync(adapter)
    })
}

/// A JSON or encoded plugin in a collecting chain.
struct JsonCollector<S, O> {
    name: Arc<str>,
    inner: Runner<Value>,
    _p: PhantomData<fn(S) -> O>,
}

impl<S: Serialize, O: DeserializeOwned> JsonCollector<S, O> {
    fn is_async(&self) -> bool {
        matches!(self.inner, Runner::Async(_))
    }

    fn input(input: &S) -> Result<Value, Failure> {
        serde_json::to_value(input).map_err(|e| {
            Failure::new(
                FailureKind::InvalidReply,
                format!("the input could not be turned into JSON: {e}"),
            )
        })
    }

    /// A JSON reply as an answer: continue adds (`null`: nothing), halt ends.
    fn answer(reply: Reply<Value>) -> Result<Contribute<O>, Failure> {
        let halt = reply.is_halt();
        let output: Option<O> = serde_json::from_value(reply.into_state()).map_err(|e| {
            Failure::new(
                FailureKind::InvalidReply,
                format!("reply is not a valid contribution for the event: {e}"),
            )
        })?;
        Ok(match (output, halt) {
            (Some(o), false) => Contribute::Add(o),
            (None, false) => Contribute::Pass,
            (Some(o), true) => Contribute::Last(o),
            (None, true) => Contribute::Stop,
        })
    }
}

impl<S, O> SyncStep<Gather<S, O>> for JsonCollector<S, O>
where
    S: Serialize + Send + Sync + 'static,
    O: DeserializeOwned + Send + Sync + 'static,
{
    fn run(&self, g: Gather<S, O>, cx: &Context<'_>) -> Result<Reply<Gather<S, O>>, Failure> {
        let reply = match &self.inner {
            Runner::Native(step) => step.run(Self::input(&g.input)?, cx),
            Runner::Sync(step) => step.run(Self::input(&g.input)?, cx)?,
            Runner::Encoded(step) => {
                let bytes = serde_json::to_vec(&g.input).map_err(|e| {
                    Failure::new(
                        FailureKind::InvalidReply,
                        format!("the input could not be encoded: {e}"),
                    )
                })?;
                match step.run(&bytes, Wire::Json, cx)? {
                    Reply::Continue(b) => Reply::Continue(json_of(&b)?),
                    Reply::Halt(b) => Reply::Halt(json_of(&b)?),
                }
            }
            Runner::Async(_) | Runner::Collect(_) => {
                return Err(Failure::new(
                    FailureKind::InvalidReply,
                    "an async plugin in a synchronous collection",
                ));
            }
        };
        let answer = Self::answer(reply)?;
        Ok(g.answer(&self.name, answer))
    }
}

fn json_of(bytes: &[u8]) -> Result<Value, Failure> {
    serde_json::from_slice(bytes)
        .map_err(|e| Failure::new(FailureKind::InvalidReply, format!("reply is not JSON: {e}")))
}

impl<S, O> AsyncStep<Gather<S, O>> for JsonCollector<S, O>
where
    S: Serialize + Send + Sync + 'static,
    O: DeserializeOwned + Send + Sync + 'static,
{
    fn run<'a>(
        &'a self,
        g: Gather<S, O>,
        cx: &'a Context<'a>,
    ) -> BoxFuture<'a, Result<Reply<Gather<S, O>>, Failure>> {
        Box::pin(async move {
            let Runner::Async(step) = &self.inner else {
                return SyncStep::run(self, g, cx);
            };
            let reply = step.run(Self::input(&g.input)?, cx).await?;
            let answer = Self::answer(reply)?;
            Ok(g.answer(&self.name, answer))
        })
    }
}
