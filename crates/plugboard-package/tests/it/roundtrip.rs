//! Building packages: pack → verify, signatures, determinism, keys.

use plugboard_package::{
    PackageError, SignatureStatus, VerifyOptions, generate_key, key_id, pack, read_public_key,
    read_signing_key, verify, write_archive, write_public_key, write_signing_key,
};

use crate::*;

fn full_dir() -> tempfile::TempDir {
    package_dir(
        MANIFEST,
        &[
            ("README.md", README.as_bytes()),
            ("settings.schema.json", SCHEMA.as_bytes()),
        ],
    )
}

fn trusting(keys: Vec<plugboard_package::VerifyingKey>) -> VerifyOptions {
    VerifyOptions {
        trusted_keys: keys,
        ..VerifyOptions::default()
    }
}

#[test]
fn pack_then_verify() {
    let dir = full_dir();
    let (bytes, sha) = pack(dir.path(), None).unwrap();
    assert_eq!(sha.len(), 64);
    let p = verify(
        &bytes,
        &VerifyOptions {
            sha256: Some(sha.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(p.sha256, sha);
    assert_eq!(p.manifest_text, MANIFEST);
    assert_eq!(p.component, COMPONENT);
    assert_eq!(p.readme.as_deref(), Some(README));
    assert_eq!(p.settings_schema.unwrap()["type"], "object");
    assert_eq!(p.signer, None);
    assert_eq!(p.signature, SignatureStatus::Unsigned);
}

#[test]
fn packing_twice_gives_identical_bytes() {
    let a = pack(full_dir().path(), None).unwrap();
    let b = pack(full_dir().path(), None).unwrap();
    assert_eq!(a, b);
    // Signing is deterministic too (Ed25519).
    let key = generate_key().unwrap();
    let dir = full_dir();
    assert_eq!(
        pack(dir.path(), Some(&key)).unwrap(),
        pack(dir.path(), Some(&key)).unwrap()
    );
}

#[test]
fn pack_refuses_what_verify_would() {
    let dir = package_dir(MANIFEST, &[]);
    let e = pack(dir.path(), None).unwrap_err();
    assert!(
        matches!(&e, PackageError::MissingEntry { name, named_by } if name.ends_with("README.md") && named_by == "package.readme"),
        "{e:?}"
    );
    let dir = package_dir(&SMALL.replace("priority = 10", "priority = 101"), &[]);
    assert!(matches!(
        pack(dir.path(), None),
        Err(PackageError::ManifestInvalid { .. })
    ));
    let dir = package_dir(SMALL, &[]);
    std::fs::write(dir.path().join("plugin.wasm"), b"\0asm\x01\0\0\0").unwrap();
    assert!(matches!(
        pack(dir.path(), None),
        Err(PackageError::NotAComponent { .. })
    ));
}

#[test]
fn signed_packages_verify_with_the_trusted_key() {
    let key = generate_key().unwrap();
    let (bytes, _) = pack(full_dir().path(), Some(&key)).unwrap();
    let id = key_id(&key.verifying_key());
    assert_eq!(id.len(), 16);
    let other = generate_key().unwrap().verifying_key();
    let p = verify(&bytes, &trusting(vec![other, key.verifying_key()])).unwrap();
    assert_eq!(p.signer.as_deref(), Some(id.as_str()));
    assert_eq!(
        p.signature,
        SignatureStatus::Verified { key_id: id.clone() }
    );
    // Without trusted keys the signature is reported, not verified.
    let p = verify(&bytes, &VerifyOptions::default()).unwrap();
    assert_eq!(p.signer, None);
    assert_eq!(p.signature, SignatureStatus::Unverified { key_id: id });
}

#[test]
fn an_unsigned_package_is_refused_when_keys_are_configured() {
    let key = generate_key().unwrap();
    let (bytes, _) = pack(full_dir().path(), None).unwrap();
    let e = refusal_with(&bytes, &trusting(vec![key.verifying_key()]));
    assert!(matches!(e, PackageError::Unsigned), "{e:?}");
}

#[test]
fn an_unknown_key_is_refused() {
    let signer = generate_key().unwrap();
    let trusted = generate_key().unwrap();
    let (bytes, _) = pack(full_dir().path(), Some(&signer)).unwrap();
    let e = refusal_with(&bytes, &trusting(vec![trusted.verifying_key()]));
    assert!(
        matches!(&e, PackageError::UnknownKey { key_id: k } if *k == key_id(&signer.verifying_key())),
        "{e:?}"
    );
}

/// The entries of a package, read back with the tar crate (trusted input: our own).
fn entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut c = Vec::new();
            e.read_to_end(&mut c).unwrap();
            (name, c)
        })
        .collect()
}

#[test]
fn a_bad_signature_is_refused() {
    let key = generate_key().unwrap();
    let (bytes, _) = pack(full_dir().path(), Some(&key)).unwrap();
    // Swap the component for another, keeping the signature.
    let mut files = entries(&bytes);
    for (name, c) in &mut files {
        if name == "plugin.wasm" {
            c.extend_from_slice(b"\0extra");
        }
    }
    let tampered = write_archive(files.iter().map(|(n, c)| (n.as_str(), c.as_slice()))).unwrap();
    let e = refusal_with(&tampered, &trusting(vec![key.verifying_key()]));
    assert!(
        matches!(&e, PackageError::BadSignature { key_id: k } if *k == key_id(&key.verifying_key())),
        "{e:?}"
    );
    // A garbled signature file is its own error.
    for (name, c) in &mut files {
        if name == "plugboard.sig" {
            *c = b"key_id = 1".to_vec();
        }
    }
    let garbled = write_archive(files.iter().map(|(n, c)| (n.as_str(), c.as_slice()))).unwrap();
    let e = refusal_with(&garbled, &trusting(vec![key.verifying_key()]));
    assert!(matches!(e, PackageError::SignatureFile { .. }), "{e:?}");
}

#[test]
fn key_files_round_trip_and_the_secret_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_key().unwrap();
    let sk = dir.path().join("k.key");
    let pk = dir.path().join("k.pub");
    write_signing_key(&sk, &key).unwrap();
    write_public_key(&pk, &key.verifying_key()).unwrap();
    assert_eq!(read_signing_key(&sk).unwrap().to_bytes(), key.to_bytes());
    assert_eq!(read_public_key(&pk).unwrap(), key.verifying_key());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sk).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // No overwriting, and garbage is refused.
    assert!(write_signing_key(&sk, &key).is_err());
    std::fs::write(dir.path().join("bad.pub"), "xyz").unwrap();
    assert!(matches!(
        read_public_key(&dir.path().join("bad.pub")),
        Err(PackageError::Key { .. })
    ));
}
