//! Tests of the WebAssembly host with real components built from `plugins/`.
#![allow(clippy::unwrap_used, missing_docs)]

mod chains;
mod hostile;
mod loading;
mod python;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use plugboard_engine::{Engine, Registration};
use plugboard_wasm::{HostConfig, Limits, WasmHost, WasmPlugin};

/// The built plugin components; built once per test run (incrementally) with the same
/// command as `cargo xtask build-plugins`.
pub fn component(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        plugboard_testkit::build_plugins(&root).unwrap_or_else(|e| panic!("{e}"))
    });
    dir.join(format!("plugin_{name}.wasm"))
}

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
