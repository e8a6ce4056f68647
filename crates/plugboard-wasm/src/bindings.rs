//! Host bindings generated from the WIT contracts this host serves, side by side: 0.3.0
//! (`wit/plugin.wit` at the repository's root) and 0.2.0 (`contracts/0.2.0/plugin.wit` in
//! this crate, as it was released). Each version's imports are linked under their own
//! versioned names, so one linker serves both; a component is bound to the version its
//! `guest` export names, and the rest of the crate sees one [`Guest`].

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
        path: "../../wit",
        imports: { default: trappable },
    });
}

/// A contract version this host serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Contract {
    V2,
    V3,
}

impl Contract {
    /// The version a component's `plugboard:plugin/guest@VERSION` export names, if served
    /// (0.x versions are compatible when their minor versions match).
    pub(crate) fn of(version: &str) -> Option<Contract> {
        let mut parts = version.split('.');
        match (parts.next(), parts.next()) {
            (Some("0"), Some("2")) => Some(Contract::V2),
            (Some("0"), Some("3")) => Some(Contract::V3),
            _ => None,
        }
    }
}

/// Adds every served version's imports to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    v2::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v3::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// A pre-instantiated component, of either version.
pub(crate) enum GuestPre {
    V2(v2::PluginPre<HostState>),
    V3(v3::PluginPre<HostState>),
}

impl GuestPre {
    pub(crate) fn new(contract: Contract, pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        Ok(match contract {
            Contract::V2 => GuestPre::V2(v2::PluginPre::new(pre)?),
            Contract::V3 => GuestPre::V3(v3::PluginPre::new(pre)?),
        })
    }

    pub(crate) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        Ok(match self {
            GuestPre::V2(p) => Guest::V2(p.instantiate(store)?),
            GuestPre::V3(p) => Guest::V3(p.instantiate(store)?),
        })
    }
}

/// An instance, of either version.
pub(crate) enum Guest {
    V2(v2::Plugin),
    V3(v3::Plugin),
}

/// A guest's reply, whichever version gave it.
pub(crate) enum GuestReply {
    Continue(Vec<u8>),
    Halt(Vec<u8>),
}

/// Runs `$body` with `$g` the instance and `$m` the module of its version: the guest
/// interface is the same in every version, its generated types are not.
macro_rules! each_version {
    ($self:expr, |$g:ident| $body:expr) => {
        match $self {
            Guest::V2($g) => $body,
            Guest::V3($g) => $body,
        }
    };
    ($self:expr, |$g:ident, $m:ident| $body:expr) => {
        match $self {
            Guest::V2($g) => {
                use self::v2 as $m;
                $body
            }
            Guest::V3($g) => {
                use self::v3 as $m;
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
            let reply = g
                .plugboard_plugin_guest()
                .call_call(store, event, wire, state)?;
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
        each_version!(self, |g| {
            g.plugboard_plugin_guest().call_layout(store, event)
        })
    }

    pub(crate) fn initial(
        &self,
        store: &mut Store<HostState>,
        record: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        each_version!(self, |g| {
            g.plugboard_plugin_guest().call_initial(store, record)
        })
    }

    pub(crate) fn lifecycle(
        &self,
        store: &mut Store<HostState>,
        op: &str,
        record: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        each_version!(self, |g| {
            g.plugboard_plugin_guest().call_lifecycle(store, op, record)
        })
    }

    pub(crate) fn health(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Result<(), String>> {
        each_version!(self, |g| { g.plugboard_plugin_guest().call_health(store) })
    }
}

/// The contract versions served, as a refusal names them.
pub(crate) const SERVED: &str = "0.2.x and 0.3.x";
