//! # plugboard-wasm
//!
//! Sandboxed WebAssembly plugins for Plugboard. A plugin is a WebAssembly component that
//! implements the `plugboard:plugin` WIT contract (`wit/plugin.wit` at the repository's
//! root): it exports `initial`, `call`, `lifecycle` and `health`, and may import only
//! what its capabilities grant: logging, its own settings, the time, and (contract 0.3)
//! its own key-value data ([`KeyValue`], a service the loader hands it). It is granted no
//! filesystem, environment or process access. Components built against contract 0.2.0
//! run unchanged beside 0.3.0 ones: the host serves both versions at once.
//!
//! [`WasmHost`] owns the wasmtime engine (pooling allocator, epoch interruption) and an
//! on-disk cache of compiled components; [`WasmHost::load`] validates a component against
//! the contract and pre-instantiates it; the resulting [`WasmPlugin`] joins any event's
//! chain through [`WasmPlugin::code`], beside native plugins, and is registered, ordered,
//! halted, held, stopped and restarted exactly like them.
//!
//! Every call runs under limits ([`Limits`]: memory, a deadline, optional fuel, a cap on
//! the reply's size). An infinite loop, a memory hog, a trap, a stack overflow, a
//! malformed or oversized reply is a typed [`Failure`](plugboard_engine::Failure), counted
//! and published like a native panic; the instance it poisoned is discarded and replaced.
//!
//! This is the only crate that knows wasmtime.

mod bindings;
mod cache;
mod capabilities;
mod host;
mod http;
mod plugin;

pub use cache::Origin;
pub use capabilities::{CapabilityError, EMIT_DEPTH, Emitter, KeyValue};
pub use host::{DeniedHook, Grants, HostConfig, LOG_LINES_PER_SECOND, WasmError, WasmHost};
pub use http::{HttpAccess, HttpCounts, HttpPolicy, is_internal};
pub use plugin::{Limits, WasmPlugin};
