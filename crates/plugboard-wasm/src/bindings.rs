//! Host bindings generated from the WIT contracts this host serves, side by side: 0.4.0
//! (`wit/plugin.wit` at the repository's root), 0.3.0 and 0.2.0 (`contracts/` in this
//! crate, as they were released). Each version's imports are linked under their own
//! versioned names, so one linker serves them all; a component is bound to the version
//! its `guest` export names, and the rest of the crate sees one [`Guest`].

use wasmtime::Store;
use wasmtime::component::{InstancePre, Linker};

use crate::host::HostState;

/// The 0.2.0 contract: `host` (log, settings, clock) and `guest`.
pub(crate) mod v2 {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "contracts/0.2.0",
        // A plugin calling an import it was not granted traps.
        imports: { default: trappable },
    });
}

/// The 0.3.0 contract: 0.2.0's, plus `kv` and `events`.
pub(crate) mod v3 {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "contracts/0.3.0",
        imports: { default: trappable },
    });
}

/// The 0.4.0 contract: 0.3.0's, plus the `wrapper` export. Bound from the world that has
/// both exports, but per interface: `wrapper` is there only in a wrapper's component.
pub(crate) mod v4 {
    wasmtime::component::bindgen!({
        world: "plugin-wrapper",
        path: "../../wit",
        imports: { default: trappable },
    });
}

/// A contract version this host serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Contract {
    V2,
    V3,
    V4,
}

impl Contract {
    /// The version a component's `plugboard:plugin/guest@VERSION` export names, if served
    /// (0.x versions are compatible when their minor versions match).
    pub(crate) fn of(version: &str) -> Option<Contract> {
        let mut parts = version.split('.');
        match (parts.next(), parts.next()) {
            (Some("0"), Some("2")) => Some(Contract::V2),
            (Some("0"), Some("3")) => Some(Contract::V3),
            (Some("0"), Some("4")) => Some(Contract::V4),
            _ => None,
        }
    }
}

/// Adds every served version's imports to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    v2::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v3::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v4::PluginWrapper::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// A pre-instantiated component, of either version.
pub(crate) enum GuestPre {
    V2(v2::PluginPre<HostState>),
    V3(v3::PluginPre<HostState>),
    V4(V4Pre),
}

/// A 0.4.0 component: its `guest` export, and its `wrapper` export if it has one.
pub(crate) struct V4Pre {
    pre: InstancePre<HostState>,
    guest: v4g::GuestIndices,
    wrapper: Option<v4w::GuestIndices>,
}

use v4::exports::plugboard::plugin::guest as v4g;
use v4::exports::plugboard::plugin::wrapper as v4w;

impl GuestPre {
    pub(crate) fn new(contract: Contract, pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        Ok(match contract {
            Contract::V2 => GuestPre::V2(v2::PluginPre::new(pre)?),
            Contract::V3 => GuestPre::V3(v3::PluginPre::new(pre)?),
            Contract::V4 => GuestPre::V4(V4Pre {
                guest: v4g::GuestIndices::new(&pre)?,
                wrapper: v4w::GuestIndices::new(&pre).ok(),
                pre,
            }),
        })
    }

    /// Whether the component exports the `wrapper` interface (contract 0.4 and later).
    pub(crate) fn has_wrapper(&self) -> bool {
        matches!(self, GuestPre::V4(p) if p.wrapper.is_some())
    }

    pub(crate) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        Ok(match self {
            GuestPre::V2(p) => Guest::V2(p.instantiate(store)?),
            GuestPre::V3(p) => Guest::V3(p.instantiate(store)?),
            GuestPre::V4(p) => {
                let instance = p.pre.instantiate(&mut *store)?;
                Guest::V4 {
                    guest: p.guest.load(&mut *store, &instance)?,
                    wrapper: p
                        .wrapper
                        .as_ref()
                        .map(|w| w.load(&mut *store, &instance))
                        .transpose()?,
                }
            }
        })
    }
}

/// An instance, of either version.
pub(crate) enum Guest {
    V2(v2::Plugin),
    V3(v3::Plugin),
    V4 {
        guest: v4g::Guest,
        wrapper: Option<v4w::Guest>,
    },
}

/// A guest's reply, whichever version gave it.
pub(crate) enum GuestReply {
    Continue(Vec<u8>),
    Halt(Vec<u8>),
}

/// Runs `$body` with `$g` the instance's `guest` interface and `$m` the module of its
/// version: the guest interface is the same in every version, its generated types are
/// not.
macro_rules! each_version {
    ($self:expr, |$g:ident| $body:expr) => {
        each_version!($self, |$g, _m| $body)
    };
    ($self:expr, |$g:ident, $m:ident| $body:expr) => {
        match $self {
            Guest::V2(p) => {
                #[allow(unused_imports)]
                use self::v2 as $m;
                let $g = p.plugboard_plugin_guest();
                $body
            }
            Guest::V3(p) => {
                #[allow(unused_imports)]
                use self::v3 as $m;
                let $g = p.plugboard_plugin_guest();
                $body
            }
            Guest::V4 { guest: $g, .. } => {
                #[allow(unused_imports)]
                use self::v4 as $m;
                $body
            }
        }
    };
}

impl Guest {
    pub(crate) fn call(
        &self,
        store: &mut Store<HostState>,
        event: &str,
        wire: plugboard_core::Wire,
        state: &[u8],
    ) -> wasmtime::Result<Result<GuestReply, String>> {
        each_version!(self, |g, m| {
            use m::exports::plugboard::plugin::guest::{Reply, Wire};
            let wire = match wire {
                plugboard_core::Wire::Json => Wire::Json,
                plugboard_core::Wire::Binary => Wire::Binary,
            };
            let reply = g.call_call(store, event, wire, state)?;
            Ok(reply.map(|r| match r {
                Reply::Continue(b) => GuestReply::Continue(b),
                Reply::Halt(b) => GuestReply::Halt(b),
            }))
        })
    }

    pub(crate) fn layout(
        &self,
        store: &mut Store<HostState>,
        event: &str,
    ) -> wasmtime::Result<Option<u64>> {
        each_version!(self, |g| g.call_layout(store, event))
    }

    pub(crate) fn initial(
        &self,
        store: &mut Store<HostState>,
        record: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        each_version!(self, |g| g.call_initial(store, record))
    }

    pub(crate) fn lifecycle(
        &self,
        store: &mut Store<HostState>,
        op: &str,
        record: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        each_version!(self, |g| g.call_lifecycle(store, op, record))
    }

    pub(crate) fn health(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Result<(), String>> {
        each_version!(self, |g| g.call_health(store))
    }
}

/// What a wrapper's `before` answered: how to go on, and its token.
pub(crate) struct Opened {
    pub(crate) halt: bool,
    pub(crate) state: String,
    pub(crate) token: Vec<u8>,
}

/// What the rest of the chain did, as a wrapper's `after` is told.
pub(crate) enum Told<'a> {
    Continued(&'a str),
    Halted(&'a str),
    Failed(&'a str),
}

/// A wrapper's `after` answer.
pub(crate) enum Closing {
    Keep,
    Continue(String),
    Halt(String),
    Retry { state: String, token: Vec<u8> },
}

impl Guest {
    fn wrapper(&self) -> wasmtime::Result<&v4w::Guest> {
        match self {
            Guest::V4 {
                wrapper: Some(w), ..
            } => Ok(w),
            _ => Err(wasmtime::format_err!(
                "the component does not export `plugboard:plugin/wrapper` (contract 0.4 and later)"
            )),
        }
    }

    pub(crate) fn before(
        &self,
        store: &mut Store<HostState>,
        event: &str,
        state: &str,
    ) -> wasmtime::Result<Result<Opened, String>> {
        let opened = self.wrapper()?.call_before(store, event, state)?;
        Ok(opened.map(|o| {
            let (halt, state) = match o.entry {
                v4w::Entry::Continue(s) => (false, s),
                v4w::Entry::Halt(s) => (true, s),
            };
            Opened {
                halt,
                state,
                token: o.token,
            }
        }))
    }

    pub(crate) fn after(
        &self,
        store: &mut Store<HostState>,
        event: &str,
        outcome: Told<'_>,
        token: &[u8],
    ) -> wasmtime::Result<Result<Closing, String>> {
        let outcome = match outcome {
            Told::Continued(s) => v4w::Outcome::Continued(s.to_owned()),
            Told::Halted(s) => v4w::Outcome::Halted(s.to_owned()),
            Told::Failed(m) => v4w::Outcome::Failed(m.to_owned()),
        };
        let closing = self.wrapper()?.call_after(store, event, &outcome, token)?;
        Ok(closing.map(|c| match c {
            v4w::Closing::Keep => Closing::Keep,
            v4w::Closing::Continue(s) => Closing::Continue(s),
            v4w::Closing::Halt(s) => Closing::Halt(s),
            v4w::Closing::Retry(a) => Closing::Retry {
                state: a.state,
                token: a.token,
            },
        }))
    }
}

/// The contract versions served, as a refusal names them.
pub(crate) const SERVED: &str = "0.2.x, 0.3.x and 0.4.x";
