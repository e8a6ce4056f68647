//! What a component imports, read without compiling it: the imports governed by a
//! capability are checked against the manifest, so that a package whose component would
//! call what it never asked for is refused when it is packed, inspected or installed, not
//! at its first call.
//!
//! Only the imports that map to one capability are checked: `plugboard:plugin/kv` (`kv`),
//! `plugboard:plugin/events` (`emit`) and `wasi:http/outgoing-handler` (`http`). Logging,
//! settings and the clock share the `host` interface every plugin imports, and every
//! guest's standard library imports WASI's clocks and random numbers, so those are
//! governed at the call instead.

use wasmparser::{Parser, Payload};

use crate::error::PackageError;
use crate::manifest::Manifest;

/// The names of a component's own imports (not those of the modules and components nested
/// in it), e.g. `plugboard:plugin/kv@0.4.0`.
pub fn component_imports(bytes: &[u8]) -> Result<Vec<String>, PackageError> {
    let bad = |e: wasmparser::BinaryReaderError| PackageError::NotAComponent {
        why: format!("it cannot be read: {e}"),
    };
    let mut names = Vec::new();
    // Nested modules and components report their sections too: only depth 0 is the
    // component's own.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(bad)? {
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    names.push(import.map_err(bad)?.name.name.to_owned());
                }
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    Ok(names)
}

/// The capability an import needs, and what to write in the manifest to ask for it.
fn governed(import: &str) -> Option<(&'static str, &'static str)> {
    let interface = import.split('@').next().unwrap_or(import);
    match interface {
        "plugboard:plugin/kv" => Some(("kv", "kv = true")),
        "plugboard:plugin/events" => Some(("emit", "emit = [\"<event>\", …]")),
        "wasi:http/outgoing-handler" => Some(("http", "http = [\"https://<host>\", …]")),
        _ => None,
    }
}

/// Refuses a component importing an interface whose capability `manifest` does not ask for.
pub fn check_imports(manifest: &Manifest, component: &[u8]) -> Result<(), PackageError> {
    let asked = &manifest.capabilities;
    for import in component_imports(component)? {
        let Some((capability, fix)) = governed(&import) else {
            continue;
        };
        let declared = match capability {
            "kv" => asked.kv,
            "emit" => !asked.emit.is_empty(),
            _ => !asked.http.is_empty(),
        };
        if !declared {
            return Err(PackageError::UndeclaredImport {
                import,
                capability,
                fix,
            });
        }
    }
    Ok(())
}
