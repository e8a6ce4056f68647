//! The typed handle on one event: the call path.

use super::*;

/// A typed handle on one event: the hot path. Cheap to clone.
///
/// A call loads the event's current chain without a lock and runs it; it does no lookup by
/// name and allocates nothing of its own for native plugins.
///
/// ```
/// use plugboard_core::reference::{OnContentPrepare, Payload};
/// use plugboard_core::{Reply, from_fn};
/// use plugboard_engine::{Engine, Registration};
///
/// let engine = Engine::new();
/// engine.register::<OnContentPrepare, _>(
///     Registration::new("shout"),
///     from_fn(|mut s: Payload, _cx: &plugboard_core::Context<'_>| {
///         let title = s.data["title"].as_str().unwrap_or_default().to_uppercase();
///         s.data.insert("title".into(), title.into());
///         Reply::Continue(s)
///     }),
/// )?;
/// engine.start("shout")?;
/// // Kept by the host where it calls the event: it follows the chain as plugins come
/// // and go, with no lookup per call.
/// let hook = engine.hook::<OnContentPrepare>()?;
/// let mut state = Payload::default();
/// state.data.insert("title".into(), "hello".into());
/// let out = hook.call(state)?;
/// assert_eq!(out.data["title"], "HELLO");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Hook<E: Event> {
    pub(super) slot: Arc<Slot<E::State>>,
    pub(super) _e: PhantomData<fn() -> E>,
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

/// A typed handle on a collecting event: asks each plugin of its chain, in order, and
/// returns their contributions. Cheap to clone.
///
/// ```
/// use plugboard_core::reference::{OnContentSearch, Payload, SearchHit};
/// use plugboard_core::{Collector, Context, Contribute};
/// use plugboard_engine::{Engine, Registration};
///
/// struct Pages;
/// impl Collector<OnContentSearch> for Pages {
///     fn collect(&self, input: &Payload, _cx: &Context<'_>) -> Contribute<SearchHit> {
///         let text = input.data["text"].as_str().unwrap_or_default();
///         Contribute::Add(SearchHit::new(format!("Pages about {text}"), "/pages"))
///     }
/// }
///
/// let engine = Engine::new();
/// engine.register_collector::<OnContentSearch, _>(Registration::new("pages"), Pages)?;
/// engine.start("pages")?;
/// let search = engine.collector::<OnContentSearch>()?;
/// let mut input = Payload::default();
/// input.data.insert("text".into(), "rust".into());
/// let found = search.collect(input)?;
/// assert_eq!(&*found.results[0].plugin, "pages");
/// assert_eq!(found.results[0].output.title, "Pages about rust");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CollectHook<E: Collect> {
    pub(super) slot: Arc<Slot<Gather<E::State, E::Output>>>,
    pub(super) _e: PhantomData<fn() -> E>,
}

impl<E: Collect> Clone for CollectHook<E> {
    fn clone(&self) -> Self {
        CollectHook {
            slot: self.slot.clone(),
            _e: PhantomData,
        }
    }
}

impl<E: Collect> CollectHook<E> {
    /// Asks every plugin, in chain order, until one ends the collection. A failing
    /// plugin is handled by the event's failure policy: `Error` fails the call, `Skip`
    /// leaves its contribution out, `ReturnInput` returns nothing collected.
    #[inline]
    pub fn collect(&self, input: E::State) -> Result<Collected<E::Output>, CallError> {
        self.slot
            .collect(input, &EMPTY_META)
            .map(Gather::into_collected)
    }

    /// [`CollectHook::collect`] with read-only meta for the plugins.
    #[inline]
    pub fn collect_with(
        &self,
        input: E::State,
        meta: &Meta,
    ) -> Result<Collected<E::Output>, CallError> {
        self.slot.collect(input, meta).map(Gather::into_collected)
    }

    /// Asks a chain that may contain async plugins.
    pub async fn collect_async(&self, input: E::State) -> Result<Collected<E::Output>, CallError> {
        let room = self.slot.len();
        self.slot
            .call_async(Gather::new(input, room), &EMPTY_META)
            .await
            .map(Gather::into_collected)
    }

    /// Asks every plugin and reports each one's step.
    pub fn trace(&self, input: E::State) -> Trace<Collected<E::Output>> {
        let room = self.slot.len();
        let t = self.slot.trace(Gather::new(input, room), &EMPTY_META);
        Trace {
            result: t.result.map(Gather::into_collected),
            steps: t.steps,
            halted_by: t.halted_by,
            given: t.given,
        }
    }

    /// The plugins in the chain now, in order.
    pub fn plugins(&self) -> Vec<String> {
        self.slot.names()
    }
}
