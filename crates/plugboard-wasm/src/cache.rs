//! The on-disk cache of compiled components, keyed by the component's hash and the
//! engine's configuration, so that a restart does not recompile. A corrupt entry is
//! detected (each artifact has a checksum beside it) and rebuilt.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::host::WasmError;

/// Hex SHA-256 of some bytes.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn key(engine: &Engine, component_hash: &str) -> String {
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{component_hash}-{:016x}", h.finish())
}

/// How a component was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Compiled now (no cache, or nothing cached yet).
    Compiled,
    /// Loaded from the cache.
    Cached,
    /// The cached entry was corrupt: compiled again and the entry rewritten.
    Rebuilt,
}

/// Compiles `bytes`, or loads them from `dir`'s cache.
pub(crate) fn load(
    engine: &Engine,
    dir: Option<&Path>,
    bytes: &[u8],
) -> Result<(Component, String, Origin), WasmError> {
    let hash = sha256(bytes);
    let Some(dir) = dir else {
        return Ok((compile(engine, bytes)?, hash, Origin::Compiled));
    };
    let base = dir.join(key(engine, &hash));
    let artifact = base.with_extension("cwasm");
    let checksum = base.with_extension("sha256");
    let mut origin = Origin::Compiled;
    if artifact.exists() {
        match read_checked(&artifact, &checksum) {
            Some(data) => {
                // SAFETY: the artifact was written by `Component::serialize` of this same
                // engine configuration (its key includes the configuration's hash), and
                // its checksum, written after it, still matches: it has not been altered
                // or truncated since.
                #[allow(unsafe_code)]
                match unsafe { Component::deserialize(engine, &data) } {
                    Ok(c) => return Ok((c, hash, Origin::Cached)),
                    Err(e) => {
                        tracing::warn!(path = %artifact.display(), error = %e, "unusable cache entry; recompiling")
                    }
                }
            }
            None => tracing::warn!(path = %artifact.display(), "corrupt cache entry; recompiling"),
        }
        origin = Origin::Rebuilt;
    }
    let component = compile(engine, bytes)?;
    if let Err(e) = store(&component, &artifact, &checksum) {
        tracing::warn!(error = %e, "could not write the compile cache");
    }
    Ok((component, hash, origin))
}

fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, WasmError> {
    Component::new(engine, bytes).map_err(|e| WasmError::NotAComponent(format!("{e:#}")))
}

fn read_checked(artifact: &Path, checksum: &Path) -> Option<Vec<u8>> {
    let data = std::fs::read(artifact).ok()?;
    let expected = std::fs::read_to_string(checksum).ok()?;
    (sha256(&data) == expected.trim()).then_some(data)
}

/// Writes the artifact, then its checksum, each atomically (temp file + rename).
fn store(component: &Component, artifact: &Path, checksum: &Path) -> Result<(), WasmError> {
    let data = component.serialize().map_err(WasmError::other)?;
    write_atomic(artifact, &data)?;
    write_atomic(checksum, sha256(&data).as_bytes())
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), WasmError> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    // `create_new` refuses an existing file or symlink planted at the temp path.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(WasmError::other)?;
    f.write_all(data).map_err(WasmError::other)?;
    f.sync_all().map_err(WasmError::other)?;
    std::fs::rename(&tmp, path).map_err(WasmError::other)
}

/// Deletes the cached artifacts of a component (any engine configuration); returns how
/// many files went.
pub(crate) fn evict(dir: &Path, component_hash: &str) -> usize {
    let prefix = format!("{component_hash}-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}
