//! Tests of the WebAssembly host with real components built from `plugins/`.
#![allow(clippy::unwrap_used, missing_docs)]

mod chains;
mod collect;
mod hostile;
mod http;
mod loading;
mod python;
mod wrap;

use std::sync::Arc;

use plugboard_engine::{Engine, Registration};
use plugboard_wasm::{HostConfig, Limits, WasmHost, WasmPlugin};

pub use plugboard_testkit::component_path as component;

pub fn host() -> WasmHost {
    WasmHost::new(HostConfig::default()).unwrap()
}

/// The default limits with a generous deadline. The default (100 ms per call, and per
/// instantiation) is a wall-clock budget: on a loaded machine a plugin that does nothing
/// wrong can overrun it, and fail a test that is not about the deadline. Tests of the
/// deadline itself use `Limits::default()`.
pub fn limits() -> Limits {
    Limits {
        deadline: std::time::Duration::from_secs(60),
        ..Limits::default()
    }
}

/// Loads a component under [`limits`].
pub fn load(host: &WasmHost, file: &str, name: &str) -> Arc<WasmPlugin> {
    Arc::new(host.load_file(name, &component(file), limits()).unwrap())
}

/// The component of a committed example package (`examples/packages/FILE`), as it was
/// released: an older contract's build.
pub fn released(file: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../examples/packages/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    plugboard_package::verify(
        &std::fs::read(path).unwrap(),
        &plugboard_package::VerifyOptions::default(),
    )
    .unwrap()
    .component
}

/// Registers and starts a wasm plugin on `event`.
pub fn add(engine: &Engine, event: &str, plugin: Arc<WasmPlugin>, reg: Registration) {
    let name = reg.name.clone();
    engine.register_code(event, reg, plugin.code()).unwrap();
    engine.start(name.as_str()).unwrap();
}
