//! Wrappers: plugins that run around the rest of an event's chain.
//!
//! A wrapper is called before the chain's plugins (and the wrappers inside it) with the
//! state, and after them with their outcome: the state they replied, whether one halted,
//! or why the chain failed. It may change the state on the way in, answer without running
//! the rest (by halting in `before`), replace the outcome on the way out (a fallback for a
//! failure, a cached answer), or run the rest again (a retry). This is the shape of
//! pluggy's hookwrappers and of a tower `Layer`, split into two calls so that the same
//! wrapper works around synchronous and async chains, and so that a sandboxed plugin can
//! be one (two calls across the boundary, no continuation to hand over).
//!
//! Wrappers are ordered among themselves as plugins are (dependencies, then priority,
//! then name); the first is the outermost. Native wrappers implement [`Wrapper`];
//! sandboxed ones implement [`JsonWrapper`] (the state crosses as JSON) and join any
//! waterfall's chain.

use std::any::Any;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};

use plugboard_core::{Context, Event, Reply};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{CallError, Failure, FailureKind};

/// What the rest of the chain did, as a wrapper sees it: the state it replied (`Halt`
/// when a plugin halted the chain), or why it failed.
pub type Outcome<S> = Result<Reply<S>, CallError>;

/// A wrapper's last word on one call.
#[derive(Debug)]
pub enum After<S> {
    /// This is the outcome of the call, as far as this wrapper is concerned (the one it
    /// was given, or another).
    Return(Outcome<S>),
    /// Run the rest of the chain again from this state; `after` is called again with the
    /// new outcome (at most [`MAX_RETRIES`] times per call).
    Retry(S),
}

impl<S> From<Outcome<S>> for After<S> {
    fn from(outcome: Outcome<S>) -> Self {
        After::Return(outcome)
    }
}

/// The most times one wrapper may run the rest of a chain again in one call; past it the
/// call fails on the wrapper's account.
pub const MAX_RETRIES: u32 = 16;

/// A plugin that runs around the rest of event `E`'s chain.
///
/// ```
/// use std::time::Instant;
/// use plugboard_core::{Context, Reply, reference::{OnContentPrepare, Payload}};
/// use plugboard_engine::{After, Outcome, Wrapper};
///
/// /// Adds how long the rest of the chain took, and turns a failure into the input.
/// struct Timed;
///
/// impl Wrapper<OnContentPrepare> for Timed {
///     type Token = (Instant, Payload);
///
///     fn before(&self, state: Payload, _cx: &Context<'_>) -> (Reply<Payload>, Self::Token) {
///         (Reply::Continue(state.clone()), (Instant::now(), state))
///     }
///
///     fn after(&self, outcome: Outcome<Payload>, token: &mut Self::Token, _cx: &Context<'_>) -> After<Payload> {
///         let mut state = match outcome {
///             Ok(reply) => reply.into_state(),
///             Err(_) => token.1.clone(),
///         };
///         state.extra.insert("took_us".into(), (token.0.elapsed().as_micros() as u64).into());
///         After::Return(Ok(Reply::Continue(state)))
///     }
/// }
/// ```
pub trait Wrapper<E: Event>: Send + Sync + 'static {
    /// What `before` hands `after` in the same call (a start time, a transaction, the
    /// input). `()` when nothing is.
    type Token: Send + 'static;

    /// Called before the rest of the chain. `Continue` runs it with the state given;
    /// `Halt` answers with that state without running it (`after` is still called, with
    /// that halt as the outcome).
    fn before(&self, state: E::State, cx: &Context<'_>) -> (Reply<E::State>, Self::Token);

    /// Called with the rest of the chain's outcome; returns the outcome the caller (or the
    /// wrapper outside this one) sees, or asks to run the rest again.
    fn after(
        &self,
        outcome: Outcome<E::State>,
        token: &mut Self::Token,
        cx: &Context<'_>,
    ) -> After<E::State>;

    plugboard_core::__lifecycle_callbacks!();
}

/// A wrapper without its event type: runs `inner` (the rest of the chain) between its
/// two halves. `Err` is the wrapper's own failure (a panic), not the chain's.
pub(crate) trait Around<S>: Send + Sync + 'static {
    fn around(
        &self,
        state: S,
        cx: &Context<'_>,
        inner: &mut dyn FnMut(S) -> Outcome<S>,
    ) -> Result<Outcome<S>, Failure>;

    /// The first half, for callers that await the rest between the halves (async
    /// chains): the token is boxed (no allocation for a token of size zero).
    fn before(&self, state: S, cx: &Context<'_>) -> Result<(Reply<S>, Token), Failure>;

    /// The second half, with the token `before` gave.
    fn after(
        &self,
        outcome: Outcome<S>,
        token: &mut Token,
        cx: &Context<'_>,
    ) -> Result<After<S>, Failure>;
}

/// What a wrapper's `before` hands its `after`, type-erased.
pub(crate) type Token = Box<dyn Any + Send>;

pub(crate) struct NativeWrapper<E, W>(pub(crate) W, PhantomData<fn() -> E>);

impl<E: Event, W: Wrapper<E>> NativeWrapper<E, W> {
    pub(crate) fn new(wrapper: W) -> Self {
        NativeWrapper(wrapper, PhantomData)
    }

    fn typed_before(
        &self,
        state: E::State,
        cx: &Context<'_>,
    ) -> Result<(Reply<E::State>, W::Token), Failure> {
        catch_unwind(AssertUnwindSafe(|| self.0.before(state, cx)))
            .map_err(|payload| Failure::from_panic(&*payload))
    }

    fn typed_after(
        &self,
        outcome: Outcome<E::State>,
        token: &mut W::Token,
        cx: &Context<'_>,
    ) -> Result<After<E::State>, Failure> {
        catch_unwind(AssertUnwindSafe(|| self.0.after(outcome, token, cx)))
            .map_err(|payload| Failure::from_panic(&*payload))
    }
}

pub(crate) fn too_many_retries() -> Failure {
    Failure::new(
        FailureKind::PluginError,
        format!("asked to run the rest of the chain again more than {MAX_RETRIES} times"),
    )
}

impl<E: Event, W: Wrapper<E>> Around<E::State> for NativeWrapper<E, W> {
    fn around(
        &self,
        state: E::State,
        cx: &Context<'_>,
        inner: &mut dyn FnMut(E::State) -> Outcome<E::State>,
    ) -> Result<Outcome<E::State>, Failure> {
        // One guard for both halves: the rest of the chain catches its own panics, so
        // whatever unwinds to here is the wrapper's.
        catch_unwind(AssertUnwindSafe(|| {
            let (reply, mut token) = self.0.before(state, cx);
            let mut outcome = match reply {
                Reply::Continue(s) => inner(s),
                Reply::Halt(s) => Ok(Reply::Halt(s)),
            };
            for _ in 0..=MAX_RETRIES {
                match self.0.after(outcome, &mut token, cx) {
                    After::Return(o) => return Ok(o),
                    After::Retry(s) => outcome = inner(s),
                }
            }
            Err(too_many_retries())
        }))
        .unwrap_or_else(|payload| Err(Failure::from_panic(&*payload)))
    }

    fn before(
        &self,
        state: E::State,
        cx: &Context<'_>,
    ) -> Result<(Reply<E::State>, Token), Failure> {
        let (reply, token) = self.typed_before(state, cx)?;
        Ok((reply, Box::new(token)))
    }

    fn after(
        &self,
        outcome: Outcome<E::State>,
        token: &mut Token,
        cx: &Context<'_>,
    ) -> Result<After<E::State>, Failure> {
        let Some(token) = token.downcast_mut::<W::Token>() else {
            return Err(Failure::new(
                FailureKind::PluginError,
                "a wrapper was handed another wrapper's token",
            ));
        };
        self.typed_after(outcome, token, cx)
    }
}

crate::code::plugin_callbacks!(NativeWrapper, Wrapper, Event);

/// What a JSON wrapper's `before` answered.
#[derive(Debug)]
pub struct Opened {
    /// `Continue`: run the rest of the chain with this state (JSON); `Halt`: answer with
    /// it without running the rest.
    pub entry: Reply<String>,
    /// What `after` is handed in the same call.
    pub token: Vec<u8>,
}

/// What the rest of the chain did, as a JSON wrapper's `after` is told.
#[derive(Debug)]
pub enum Told<'a> {
    /// Every plugin continued; the state they ended with (JSON).
    Continued(&'a str),
    /// A plugin halted the chain with this state (JSON).
    Halted(&'a str),
    /// The rest of the chain failed.
    Failed(&'a CallError),
}

/// A JSON wrapper's last word on one call.
#[derive(Debug)]
pub enum Closing {
    /// The outcome stands as it is.
    Keep,
    /// The call ends with this state (JSON), as if every plugin continued.
    Continue(String),
    /// The call ends with this state (JSON), as a halt.
    Halt(String),
    /// Run the rest of the chain again from this state (JSON); the next `after` is
    /// handed this token.
    Retry {
        /// The state to run the rest from.
        state: String,
        /// The token for the next `after`.
        token: Vec<u8>,
    },
}

/// A wrapper that works on the state as JSON and may fail in its own ways: a sandboxed
/// plugin's two calls. It can wrap any waterfall event's chain; the engine encodes the
/// state for it and decodes (and so checks) what it replies, charging it with a reply
/// that is not the event's state.
pub trait JsonWrapper: Send + Sync + 'static {
    /// The first half: called before the rest of the chain with the state as JSON.
    fn before(&self, state: &str, cx: &Context<'_>) -> Result<Opened, Failure>;

    /// The second half: called with the rest of the chain's outcome and `before`'s token.
    fn after(&self, told: Told<'_>, token: &[u8], cx: &Context<'_>) -> Result<Closing, Failure>;
}

/// A JSON wrapper over state `S`.
pub(crate) struct JsonAround<S> {
    inner: std::sync::Arc<dyn JsonWrapper>,
    _s: PhantomData<fn(S) -> S>,
}

impl<S> JsonAround<S> {
    pub(crate) fn new(inner: std::sync::Arc<dyn JsonWrapper>) -> Self {
        JsonAround {
            inner,
            _s: PhantomData,
        }
    }
}

fn encode_json<S: Serialize>(state: &S) -> Result<String, Failure> {
    serde_json::to_string(state).map_err(|e| {
        Failure::new(
            FailureKind::InvalidReply,
            format!("state could not be turned into JSON: {e}"),
        )
    })
}

fn decode_json<S: DeserializeOwned>(json: &str) -> Result<S, Failure> {
    serde_json::from_str(json).map_err(|e| {
        Failure::new(
            FailureKind::InvalidReply,
            format!("the wrapper replied a state that is not the event's: {e}"),
        )
    })
}

impl<S> JsonAround<S>
where
    S: Serialize + DeserializeOwned + Send + 'static,
{
    /// Tells `after` the outcome: the state crosses as JSON, a failure as its message.
    fn tell(
        &self,
        outcome: &Outcome<S>,
        token: &[u8],
        cx: &Context<'_>,
    ) -> Result<Closing, Failure> {
        match outcome {
            Ok(Reply::Continue(s)) => {
                self.inner
                    .after(Told::Continued(&encode_json(s)?), token, cx)
            }
            Ok(Reply::Halt(s)) => self.inner.after(Told::Halted(&encode_json(s)?), token, cx),
            Err(e) => self.inner.after(Told::Failed(e), token, cx),
        }
    }

    /// The closing as the chain takes it; a retry's token replaces `token`.
    fn close(
        outcome: Outcome<S>,
        closing: Closing,
        token: &mut Vec<u8>,
    ) -> Result<After<S>, Failure> {
        Ok(match closing {
            Closing::Keep => After::Return(outcome),
            Closing::Continue(s) => After::Return(Ok(Reply::Continue(decode_json(&s)?))),
            Closing::Halt(s) => After::Return(Ok(Reply::Halt(decode_json(&s)?))),
            Closing::Retry { state, token: next } => {
                *token = next;
                After::Retry(decode_json(&state)?)
            }
        })
    }

    fn open(&self, state: &S, cx: &Context<'_>) -> Result<(Reply<S>, Vec<u8>), Failure> {
        let opened = self.inner.before(&encode_json(state)?, cx)?;
        let reply = match opened.entry {
            Reply::Continue(s) => Reply::Continue(decode_json(&s)?),
            Reply::Halt(s) => Reply::Halt(decode_json(&s)?),
        };
        Ok((reply, opened.token))
    }
}

impl<S> Around<S> for JsonAround<S>
where
    S: Serialize + DeserializeOwned + Send + 'static,
{
    fn around(
        &self,
        state: S,
        cx: &Context<'_>,
        inner: &mut dyn FnMut(S) -> Outcome<S>,
    ) -> Result<Outcome<S>, Failure> {
        let (reply, mut token) = self.open(&state, cx)?;
        let mut outcome = match reply {
            Reply::Continue(s) => inner(s),
            Reply::Halt(s) => Ok(Reply::Halt(s)),
        };
        for _ in 0..=MAX_RETRIES {
            let closing = self.tell(&outcome, &token, cx)?;
            match Self::close(outcome, closing, &mut token)? {
                After::Return(o) => return Ok(o),
                After::Retry(s) => outcome = inner(s),
            }
        }
        Err(too_many_retries())
    }

    fn before(&self, state: S, cx: &Context<'_>) -> Result<(Reply<S>, Token), Failure> {
        let (reply, token) = self.open(&state, cx)?;
        Ok((reply, Box::new(token)))
    }

    fn after(
        &self,
        outcome: Outcome<S>,
        token: &mut Token,
        cx: &Context<'_>,
    ) -> Result<After<S>, Failure> {
        let Some(token) = token.downcast_mut::<Vec<u8>>() else {
            return Err(Failure::new(
                FailureKind::PluginError,
                "a wrapper was handed another wrapper's token",
            ));
        };
        let closing = self.tell(&outcome, token, cx)?;
        Self::close(outcome, closing, token)
    }
}
