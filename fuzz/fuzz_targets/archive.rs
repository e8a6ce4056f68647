//! `.pbpkg` verification (`plugboard_package::verify`): any bytes are refused cleanly or
//! verified, never a panic, under default or tight limits, with or without a trusted key.
//! What verifies respects the limits, has a manifest that parses to the one returned and
//! a component header, and re-packed (`write_archive` of the same files) verifies to the
//! same contents.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plugboard_package::{
    ArchiveLimits, COMPONENT_FILE, MANIFEST_FILE, Manifest, README, SETTINGS_SCHEMA, VerifyOptions,
    check_component_header, sha256_hex, verify, write_archive,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    // Bit 0: trust the key the seeds are signed with. Bit 1: tight limits (entries and
    // manifest size from the high bits), so that small inputs reach every limit. Bit 2:
    // the rest is a plain tar, gzipped here, so that mutations reach the tar layer. Bit 3:
    // pin the file's sha256 (in capitals).
    let trusted_keys = if mode & 1 != 0 {
        vec![plugboard_fuzz::seed_key().verifying_key()]
    } else {
        Vec::new()
    };
    let limits = if mode & 2 != 0 {
        ArchiveLimits {
            max_compressed: 64 << 10,
            max_entries: usize::from(mode >> 5) + 1,
            max_unpacked: 4 << 10,
            max_manifest: u64::from(mode >> 3 & 3) * 256 + 64,
        }
    } else {
        ArchiveLimits::default()
    };
    let gzipped;
    let bytes = if mode & 4 != 0 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, bytes).expect("gzip in memory");
        gzipped = gz.finish().expect("gzip in memory");
        &gzipped[..]
    } else {
        bytes
    };
    let opts = VerifyOptions {
        limits,
        sha256: (mode & 8 != 0).then(|| sha256_hex(bytes).to_uppercase()),
        trusted_keys,
        skip_import_check: mode & 16 != 0,
    };
    let package = match verify(bytes, &opts) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(package.sha256, sha256_hex(bytes));
    let unpacked = package.manifest_text.len()
        + package.component.len()
        + package.readme.as_ref().map_or(0, String::len);
    assert!(
        unpacked as u64 <= limits.max_unpacked,
        "over the unpacked limit"
    );
    assert!(package.manifest_text.len() as u64 <= limits.max_manifest);
    assert_eq!(
        Manifest::parse(&package.manifest_text).expect("a verified manifest parses"),
        package.manifest
    );
    check_component_header(&package.component).expect("a verified component header");
    if !opts.trusted_keys.is_empty() {
        assert!(
            package.signer.is_some(),
            "verified without the trusted key's signature"
        );
    }
    assert!(
        package.manifest.package.readme.is_none() || package.readme.is_some(),
        "the manifest names a readme the package lacks"
    );

    // The same files, re-packed, verify to the same contents (unsigned: the signature
    // covers the files, not the archive, so it is left out unless a key is trusted).
    let schema = package.settings_schema.as_ref().map(|s| s.to_string());
    let mut files: Vec<(&str, &[u8])> = vec![
        (MANIFEST_FILE, package.manifest_text.as_bytes()),
        (COMPONENT_FILE, &package.component),
    ];
    if let Some(r) = &package.readme {
        files.push((README, r.as_bytes()));
    }
    if let Some(s) = &schema {
        files.push((SETTINGS_SCHEMA, s.as_bytes()));
    }
    let repacked = write_archive(files).expect("writing an archive in memory");
    let again = verify(
        &repacked,
        &VerifyOptions {
            limits: ArchiveLimits::default(),
            skip_import_check: opts.skip_import_check,
            ..VerifyOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("a verified package's files, re-packed, are refused: {e}"));
    assert_eq!(again.manifest, package.manifest);
    assert_eq!(again.component, package.component);
    assert_eq!(again.readme, package.readme);
    assert_eq!(again.settings_schema, package.settings_schema);
});
