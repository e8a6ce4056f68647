//! Host bindings generated from the WIT contract.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../../wit",
    // A plugin calling an import it was not granted traps.
    imports: { default: trappable },
});

pub(crate) use exports::plugboard::plugin::guest::{Reply, Wire};
pub(crate) use plugboard::plugin::host::{Host, Level};
