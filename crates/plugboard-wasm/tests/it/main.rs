//! Tests of the WebAssembly host with real components built from `plugins/`.
#![allow(clippy::unwrap_used, missing_docs)]

mod chains;
mod hostile;
mod loading;
mod python;

use std::sync::Arc;

use plugboard_engine::{Engine, Registration};
use plugboard_wasm::{HostConfig, Limits, WasmHost, WasmPlugin};

pub use plugboard_testkit::component_path as component;

pub fn host() -> WasmHost {
    WasmHost::new(HostConfig::default()).unwrap()
}

pub fn load(host: &WasmHost, file: &str, name: &str) -> Arc<WasmPlugin> {
    Arc::new(
        host.load_file(name, &component(file), Limits::default())
            .unwrap(),
    )
}

/// Registers and starts a wasm plugin on `event`.
pub fn add(engine: &Engine, event: &str, plugin: Arc<WasmPlugin>, reg: Registration) {
    let name = reg.name.clone();
    engine.register_code(event, reg, plugin.code()).unwrap();
    engine.start(name.as_str()).unwrap();
}
