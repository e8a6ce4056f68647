//! The hostile corpus: every archive here must be refused with its own error.

use std::time::{Duration, Instant};

use flate2::{Compress, Compression, FlushCompress};
use plugboard_package::{ArchiveLimits, PackageError, VerifyOptions, verify};

use crate::*;

fn with(mut entries: Vec<Vec<u8>>, extra: Vec<u8>) -> Vec<u8> {
    entries.push(extra);
    raw_tar(&entries)
}

#[test]
fn the_good_raw_package_is_accepted() {
    // The control for the cases below: the same raw writer, no hostile entry.
    let p = verify(&raw_tar(&good_raw_entries()), &VerifyOptions::default()).unwrap();
    assert_eq!(p.manifest.package.name, "audit");
    assert_eq!(p.component, COMPONENT);
    // `./` entries are skipped and `./name` is normalised.
    let bytes = raw_tar(&[
        raw_entry(b"./", b'5', b"", b""),
        raw_entry(b"./plugboard.toml", b'0', b"", SMALL.as_bytes()),
        raw_entry(b"./plugin.wasm", b'0', b"", COMPONENT),
    ]);
    let p = verify(&bytes, &VerifyOptions::default()).unwrap();
    assert_eq!(p.manifest.package.name, "audit");
}

#[test]
fn tar_slip_with_dot_dot_is_refused() {
    let bytes = with(
        good_raw_entries(),
        raw_entry(b"../../etc/evil", b'0', b"", b"x"),
    );
    let e = refusal(&bytes);
    assert!(
        matches!(&e, PackageError::PathTraversal { name } if name == "../../etc/evil"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "entry `../../etc/evil` has a `..` component (path traversal)"
    );
    let bytes = with(
        good_raw_entries(),
        raw_entry(b"./a/../plugin.wasm", b'0', b"", b"x"),
    );
    assert!(matches!(
        refusal(&bytes),
        PackageError::PathTraversal { .. }
    ));
}

#[test]
fn tar_slip_with_an_absolute_path_is_refused() {
    let bytes = with(
        good_raw_entries(),
        raw_entry(b"/etc/cron.d/evil", b'0', b"", b"x"),
    );
    let e = refusal(&bytes);
    assert!(
        matches!(&e, PackageError::AbsolutePath { name } if name == "/etc/cron.d/evil"),
        "{e:?}"
    );
}

#[test]
fn symlinks_are_refused() {
    let bytes = raw_tar(&[
        raw_entry(b"plugboard.toml", b'0', b"", SMALL.as_bytes()),
        raw_entry(b"plugin.wasm", b'2', b"/etc/passwd", b""),
    ]);
    let e = refusal(&bytes);
    assert!(
        matches!(&e, PackageError::Symlink { name, target } if name == "plugin.wasm" && target == "/etc/passwd"),
        "{e:?}"
    );
}

#[test]
fn hard_links_are_refused() {
    let bytes = with(
        good_raw_entries(),
        raw_entry(b"README.md", b'1', b"plugin.wasm", b""),
    );
    let e = refusal(&bytes);
    assert!(
        matches!(&e, PackageError::HardLink { name, target } if name == "README.md" && target == "plugin.wasm"),
        "{e:?}"
    );
}

#[test]
fn devices_and_fifos_are_refused() {
    for (flag, kind) in [
        (b'3', "character device"),
        (b'4', "block device"),
        (b'6', "fifo"),
    ] {
        let bytes = with(good_raw_entries(), raw_entry(b"README.md", flag, b"", b""));
        let e = refusal(&bytes);
        assert!(
            matches!(&e, PackageError::SpecialFile { name, kind: k } if name == "README.md" && *k == kind),
            "{e:?}"
        );
    }
}

#[test]
fn directories_and_extension_headers_are_refused() {
    let bytes = with(good_raw_entries(), raw_entry(b"sub/", b'5', b"", b""));
    assert!(
        matches!(refusal(&bytes), PackageError::UnsupportedEntry { name, .. } if name == "sub/")
    );
    let bytes = with(
        good_raw_entries(),
        raw_entry(b"././@PaxHeader", b'x', b"", b"20 path=plugin.wasm\n"),
    );
    let e = refusal(&bytes);
    assert!(
        matches!(&e, PackageError::UnsupportedEntry { kind, .. } if kind == "pax extension header"),
        "{e:?}"
    );
}

/// 1 GiB of zeros as one `plugin.wasm` entry, compressed to about 1 MiB: deflate
/// segments of 1 MiB of zeros, each ending in a full flush, repeated. The gzip trailer's
/// checksum is left zero: a reader that respects the limit never gets there.
fn bomb() -> Vec<u8> {
    const GIB: u64 = 1 << 30;
    let mut c = Compress::new(Compression::best(), false);
    let mut segment = |input: &[u8], flush: FlushCompress| -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + 1024);
        let before = c.total_in();
        c.compress_vec(input, &mut out, flush).unwrap();
        assert_eq!(c.total_in() - before, input.len() as u64);
        out
    };
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    gz.extend(segment(
        &raw_header(b"plugin.wasm", b'0', b"", GIB),
        FlushCompress::Full,
    ));
    let zeros = segment(&vec![0u8; 1 << 20], FlushCompress::Full);
    for _ in 0..1024 {
        gz.extend_from_slice(&zeros);
    }
    gz.extend(segment(&[], FlushCompress::Finish));
    gz.extend_from_slice(&[0; 8]);
    gz
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    let bytes = bomb();
    assert!(bytes.len() < 2 << 20, "the bomb is {} bytes", bytes.len());
    // With a small limit the refusal must come after reading about that much.
    let opts = VerifyOptions {
        limits: ArchiveLimits {
            max_unpacked: 4 << 20,
            ..ArchiveLimits::default()
        },
        ..VerifyOptions::default()
    };
    let (e, small) = cpu_time(|| refusal_with(&bytes, &opts));
    assert!(
        matches!(&e, PackageError::UnpackedTooLarge { name, limit } if name == "plugin.wasm" && *limit == 4 << 20),
        "{e:?}"
    );
    // With the default (64 MiB) limit: refused the same way, and far from reading 1 GiB.
    let (e, default) = cpu_time(|| refusal(&bytes));
    assert!(matches!(e, PackageError::UnpackedTooLarge { .. }), "{e:?}");
    assert!(default < Duration::from_secs(20), "took {default:?}");
    // Reading scales with the limit, not with the 1 GiB the header claims.
    assert!(
        small * 4 < default + Duration::from_millis(200),
        "{small:?} vs {default:?}"
    );
}

/// Runs `f`; its result and the CPU time this thread spent in it. Unlike the time on the
/// clock, that does not grow while the thread waits for a CPU on a busy machine, so the
/// work done can be compared between runs whatever else the machine is doing. Linux
/// (`/proc/thread-self/schedstat`); elsewhere, the time on the clock.
fn cpu_time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    fn on_cpu() -> Option<Duration> {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let ns = stat.split_whitespace().next()?.parse().ok()?;
        Some(Duration::from_nanos(ns))
    }
    let (cpu, wall) = (on_cpu(), Instant::now());
    let out = f();
    let spent = match (cpu, on_cpu()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => wall.elapsed(),
    };
    (out, spent)
}

#[test]
fn thousands_of_entries_are_refused_early() {
    let entries: Vec<Vec<u8>> = (0..5000)
        .map(|_| raw_entry(b"./", b'5', b"", b""))
        .collect();
    let bytes = raw_tar(&entries);
    let (e, spent) = cpu_time(|| refusal(&bytes));
    assert!(
        matches!(e, PackageError::TooManyEntries { limit: 16 }),
        "{e:?}"
    );
    assert!(spent < Duration::from_secs(2), "took {spent:?}");
    assert_eq!(e.to_string(), "the package has more than 16 entries");
}

#[test]
fn a_huge_manifest_is_refused() {
    let mut huge = SMALL.to_owned();
    huge.push_str(&format!("# {}\n", "x".repeat(70 << 10)));
    let mut files = good_files();
    files[0].1 = huge.into_bytes();
    let e = refusal(&archive(&files));
    assert!(
        matches!(e, PackageError::ManifestTooLarge { limit: 65536 }),
        "{e:?}"
    );
}

#[test]
fn a_non_utf8_name_is_refused() {
    let bytes = with(
        good_raw_entries(),
        raw_entry(b"READ\xffME.md", b'0', b"", b"x"),
    );
    let e = refusal(&bytes);
    assert!(
        matches!(&e, PackageError::NonUtf8Name { name } if name == "READ\u{fffd}ME.md"),
        "{e:?}"
    );
}

#[test]
fn a_duplicate_entry_is_refused() {
    let bytes = with(
        good_raw_entries(),
        raw_entry(b"./plugin.wasm", b'0', b"", COMPONENT),
    );
    let e = refusal(&bytes);
    assert!(
        matches!(&e, PackageError::DuplicateEntry { name } if name == "plugin.wasm"),
        "{e:?}"
    );
}

#[test]
fn an_unknown_entry_is_refused_by_name() {
    let mut files = good_files();
    files.push(("install.sh", b"rm -rf /".to_vec()));
    let e = refusal(&archive(&files));
    assert!(
        matches!(&e, PackageError::UnknownEntry { name } if name == "install.sh"),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("unknown entry `install.sh`"));
}

#[test]
fn missing_files_are_refused() {
    let e = refusal(&archive(&[("plugboard.toml", SMALL.as_bytes().to_vec())]));
    assert!(
        matches!(&e, PackageError::MissingEntry { name, .. } if name == "plugin.wasm"),
        "{e:?}"
    );
    // The full manifest names README.md.
    let mut files = good_files();
    files.retain(|(n, _)| *n != "README.md");
    let e = refusal(&archive(&files));
    assert_eq!(
        e.to_string(),
        "`README.md` is missing (named by package.readme)"
    );
}

#[test]
fn a_settings_schema_must_be_a_json_object() {
    let mut files = good_files();
    files[3].1 = b"[1, 2]".to_vec();
    let e = refusal(&archive(&files));
    assert!(matches!(e, PackageError::SettingsSchema { .. }), "{e:?}");
}

#[test]
fn a_component_is_required() {
    for (bytes, says) in [
        (b"\0asm\x01\0\0\0".to_vec(), "core WebAssembly module"),
        (b"#!/bin/sh\nrm -rf /\n".to_vec(), "magic"),
        (b"\0asm".to_vec(), "too short"),
    ] {
        let mut files = good_files();
        files[1].1 = bytes;
        let e = refusal(&archive(&files));
        assert!(matches!(e, PackageError::NotAComponent { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("plugin.wasm is not a WebAssembly component")
        );
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn not_a_gzip_tar_is_refused() {
    let e = refusal(b"PK\x03\x04 this is a zip");
    assert!(matches!(e, PackageError::Corrupt { .. }), "{e:?}");
}

#[test]
fn the_compressed_size_is_limited() {
    let bytes = archive(&good_files());
    let opts = VerifyOptions {
        limits: ArchiveLimits {
            max_compressed: 100,
            ..ArchiveLimits::default()
        },
        ..VerifyOptions::default()
    };
    let e = refusal_with(&bytes, &opts);
    assert!(
        matches!(e, PackageError::CompressedTooLarge { limit: 100, .. }),
        "{e:?}"
    );
}

#[test]
fn a_wrong_sha256_pin_is_refused_showing_both() {
    let bytes = archive(&good_files());
    let actual = plugboard_package::sha256_hex(&bytes);
    let pin = "ab".repeat(32);
    let opts = VerifyOptions {
        sha256: Some(pin.clone()),
        ..VerifyOptions::default()
    };
    let e = refusal_with(&bytes, &opts);
    assert!(
        matches!(&e, PackageError::ShaMismatch { expected, actual: a } if *expected == pin && *a == actual),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("sha256 mismatch: expected {pin}, the package has {actual}")
    );
    let opts = VerifyOptions {
        sha256: Some("not-hex".into()),
        ..VerifyOptions::default()
    };
    assert!(matches!(
        refusal_with(&bytes, &opts),
        PackageError::InvalidPin { .. }
    ));
    // The right pin, in upper case, passes.
    let opts = VerifyOptions {
        sha256: Some(actual.to_uppercase()),
        ..VerifyOptions::default()
    };
    assert_eq!(verify(&bytes, &opts).unwrap().sha256, actual);
}
