//! Tests of the package format: hostile archives, manifests, round trips, downloads.
#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod fetch;
mod hostile;
mod manifest;
mod roundtrip;

use std::io::Write;
use std::path::Path;

use plugboard_package::{PackageError, VerifyOptions, verify, write_archive};

/// The smallest bytes that pass the component header check.
pub const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

/// The manifest of the brief, in full.
pub const MANIFEST: &str = r#"[package]
name = "audit"
version = "1.2.0"
description = "Enriches extra on failed saves"
authors = ["Ann <ann@example.org>"]
license = "MIT"
host = ">=0.1.0"
contract = "0.2"
readme = "README.md"
settings_schema = "settings.schema.json"

[[hooks]]
event = "on_user_after_save_failure"
priority = 100
plugin = "audit"
depend_type = "soft"
depends = ["validator"]

[dependencies]
validator = "^1.0"

[limits]
memory_mib = 64
deadline_ms = 100
fuel = 1000000
max_reply_kib = 1024

[capabilities]
log = true
settings = true
clock = true
"#;

/// A smaller manifest that names no optional files.
pub const SMALL: &str = r#"[package]
name = "audit"
version = "1.2.0"
license = "MIT"
contract = "0.2"

[[hooks]]
event = "on_user_after_save_failure"
priority = 10
"#;

pub const README: &str = "# audit\n\nEnriches `extra` on failed saves.\n";
pub const SCHEMA: &str = r#"{"type": "object", "properties": {"level": {"type": "string"}}}"#;

/// The files of a good package (with the full manifest).
pub fn good_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("plugboard.toml", MANIFEST.as_bytes().to_vec()),
        ("plugin.wasm", COMPONENT.to_vec()),
        ("README.md", README.as_bytes().to_vec()),
        ("settings.schema.json", SCHEMA.as_bytes().to_vec()),
    ]
}

/// A package from named files, through the crate's own deterministic writer.
pub fn archive(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    write_archive(files.iter().map(|(n, c)| (*n, c.as_slice()))).unwrap()
}

/// A directory ready for `pack`.
pub fn package_dir(manifest: &str, extra: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), manifest, extra);
    dir
}

pub fn write_dir(dir: &Path, manifest: &str, extra: &[(&str, &[u8])]) {
    std::fs::write(dir.join("plugboard.toml"), manifest).unwrap();
    std::fs::write(dir.join("plugin.wasm"), COMPONENT).unwrap();
    for (name, contents) in extra {
        std::fs::write(dir.join(name), contents).unwrap();
    }
}

/// Verifies with default options and returns the refusal.
pub fn refusal(bytes: &[u8]) -> PackageError {
    refusal_with(bytes, &VerifyOptions::default())
}

pub fn refusal_with(bytes: &[u8], opts: &VerifyOptions) -> PackageError {
    match verify(bytes, opts) {
        Ok(p) => panic!(
            "accepted a package that should be refused: {:?}",
            p.manifest
        ),
        Err(e) => e,
    }
}

/// One raw ustar header block with the given name bytes, type flag, link name and size,
/// written by hand (the tar crate refuses to write `..` and absolute paths).
pub fn raw_header(name: &[u8], kind: u8, link: &[u8], size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    assert!(name.len() <= 100 && link.len() <= 100);
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A raw tar entry: header, contents, padding to 512 bytes.
pub fn raw_entry(name: &[u8], kind: u8, link: &[u8], contents: &[u8]) -> Vec<u8> {
    let mut out = raw_header(name, kind, link, contents.len() as u64).to_vec();
    out.extend_from_slice(contents);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// A gzip-compressed tar from raw entries, with the end-of-archive blocks.
pub fn raw_tar(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for e in entries {
        gz.write_all(e).unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap()
}

/// The good package's entries as raw tar entries, for mixing with hostile ones.
pub fn good_raw_entries() -> Vec<Vec<u8>> {
    vec![
        raw_entry(b"plugboard.toml", b'0', b"", SMALL.as_bytes()),
        raw_entry(b"plugin.wasm", b'0', b"", COMPONENT),
    ]
}
