//! Reading a `.pbpkg` in memory under limits ([`verify`]) and writing one ([`pack`]).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::PackageError;
use crate::manifest::{Manifest, README, SETTINGS_SCHEMA};
use crate::policy::ArchiveLimits;
use crate::sign::{self, SIGNATURE_FILE, SignatureStatus, SigningKey, VerifyingKey};

/// The archive name of the manifest.
pub const MANIFEST_FILE: &str = "plugboard.toml";
/// The archive name of the component.
pub const COMPONENT_FILE: &str = "plugin.wasm";
/// Every name a package entry may have.
pub const ENTRY_NAMES: [&str; 5] = [
    MANIFEST_FILE,
    COMPONENT_FILE,
    README,
    SETTINGS_SCHEMA,
    SIGNATURE_FILE,
];

/// How to verify a package.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Limits on the archive.
    pub limits: ArchiveLimits,
    /// The expected sha256 of the package file (hex), if pinned.
    pub sha256: Option<String>,
    /// Keys trusted to sign packages. When not empty, a package must be signed by one of
    /// them.
    pub trusted_keys: Vec<VerifyingKey>,
    /// Skip the check of the component's imports against the capabilities the manifest
    /// asks for: only for a package already installed (loaded again, rolled back to),
    /// which was accepted before that check existed and must keep loading.
    pub skip_import_check: bool,
}

/// A package that passed every check, in memory. Nothing was written to disk.
#[derive(Clone, Debug)]
pub struct VerifiedPackage {
    /// The checked manifest.
    pub manifest: Manifest,
    /// `plugboard.toml` as written.
    pub manifest_text: String,
    /// `plugin.wasm` (its header says it is a component; the contract is checked by the
    /// wasm host when it loads it).
    pub component: Vec<u8>,
    /// `README.md`, if present.
    pub readme: Option<String>,
    /// `settings.schema.json`, if present (a JSON object).
    pub settings_schema: Option<serde_json::Value>,
    /// sha256 of the whole package file, lowercase hex.
    pub sha256: String,
    /// The key id of the trusted key that signed it, if verified.
    pub signer: Option<String>,
    /// The signature's status in full (unsigned, verified, or signed by a key that was
    /// not checked).
    pub signature: SignatureStatus,
}

/// Reads a package file from disk, at most `limit` bytes: a larger file is refused
/// ([`PackageError::CompressedTooLarge`]), and so is anything but a regular file (a
/// device such as `/dev/zero` would never end; a FIFO would block).
pub fn read_package_file(path: &Path, limit: u64) -> Result<Vec<u8>, PackageError> {
    use std::io::Read as _;
    let regular = |m: &std::fs::Metadata| m.file_type().is_file();
    let meta = std::fs::metadata(path).map_err(|e| PackageError::io(path, e))?;
    if !regular(&meta) {
        return Err(PackageError::NotAFile { path: path.into() });
    }
    let file = std::fs::File::open(path).map_err(|e| PackageError::io(path, e))?;
    // Checked again on what was opened: the path may have changed in between.
    let meta = file.metadata().map_err(|e| PackageError::io(path, e))?;
    if !regular(&meta) {
        return Err(PackageError::NotAFile { path: path.into() });
    }
    if meta.len() > limit {
        return Err(PackageError::CompressedTooLarge {
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| PackageError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(PackageError::CompressedTooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks a sha256 pin's form and returns it in lowercase.
pub fn normalise_pin(pin: &str) -> Result<String, PackageError> {
    let p = pin.trim().to_ascii_lowercase();
    if p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(p)
    } else {
        Err(PackageError::InvalidPin {
            pin: pin.to_owned(),
        })
    }
}

/// A reader that fails once more than `limit` bytes have passed through it.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other(CapReached));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[derive(Debug)]
struct CapReached;

impl std::fmt::Display for CapReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decompressed stream limit reached")
    }
}

impl std::error::Error for CapReached {}

fn is_cap(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<CapReached>())
}

/// The checks on an entry's header: name and type. Returns the normalised name, or `None`
/// for a `./` directory entry (skipped).
fn check_header(raw_name: &[u8], header: &tar::Header) -> Result<Option<String>, PackageError> {
    let name = std::str::from_utf8(raw_name)
        .map_err(|_| PackageError::NonUtf8Name {
            name: String::from_utf8_lossy(raw_name).into_owned(),
        })?
        .to_owned();
    if name.starts_with('/') || name.starts_with('\\') || name.get(1..2) == Some(":") {
        return Err(PackageError::AbsolutePath { name });
    }
    if name.split(['/', '\\']).any(|c| c == "..") {
        return Err(PackageError::PathTraversal { name });
    }
    let mut short = name.as_str();
    while let Some(rest) = short.strip_prefix("./") {
        short = rest;
    }
    let kind = header.entry_type();
    let link = || {
        header
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default()
    };
    if kind.is_symlink() {
        return Err(PackageError::Symlink {
            name,
            target: link(),
        });
    }
    if kind.is_hard_link() {
        return Err(PackageError::HardLink {
            name,
            target: link(),
        });
    }
    let special = if kind.is_character_special() {
        Some("character device")
    } else if kind.is_block_special() {
        Some("block device")
    } else if kind.is_fifo() {
        Some("fifo")
    } else {
        None
    };
    if let Some(kind) = special {
        return Err(PackageError::SpecialFile { name, kind });
    }
    if kind.is_dir() && (short.is_empty() || short == ".") {
        return Ok(None);
    }
    if !kind.is_file() {
        let kind = if kind.is_dir() {
            "directory".to_owned()
        } else if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
            "pax extension header".to_owned()
        } else if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            "GNU long name".to_owned()
        } else {
            format!("type `{}`", kind.as_byte().escape_ascii())
        };
        return Err(PackageError::UnsupportedEntry { name, kind });
    }
    if !ENTRY_NAMES.contains(&short) {
        return Err(PackageError::UnknownEntry { name });
    }
    Ok(Some(short.to_owned()))
}

/// Checks the bytes of `plugin.wasm`: the wasm magic, then the component version/layer.
pub fn check_component_header(bytes: &[u8]) -> Result<(), PackageError> {
    let why = match bytes.get(..8) {
        _ if !bytes.starts_with(b"\0asm") => {
            "it does not start with the WebAssembly magic `\\0asm`"
        }
        None => "it is too short to be a WebAssembly component",
        Some(h) if h[4..8] == [0x0d, 0x00, 0x01, 0x00] => return Ok(()),
        Some(h) if h[4..8] == [0x01, 0x00, 0x00, 0x00] => {
            "it is a core WebAssembly module; packages hold components (wasm32-wasip2 or `wasm-tools component new`)"
        }
        Some(_) => "unknown WebAssembly version or layer after the magic",
    };
    Err(PackageError::NotAComponent { why: why.into() })
}

/// Verifies a package in memory and returns its contents. Nothing is written to disk.
///
/// In order: the compressed size and the sha256 pin; then each entry as it is read: the
/// entry count, its name (UTF-8, relative, no `..`, one of the package's file names,
/// not seen before) and type (regular files only), and its contents, counted as read
/// against the unpacked and manifest limits (header sizes are not trusted, and the
/// decompressed stream itself is capped); then the manifest, the component header, the
/// readme and settings schema, and the signature.
pub fn verify(bytes: &[u8], opts: &VerifyOptions) -> Result<VerifiedPackage, PackageError> {
    let limits = &opts.limits;
    if bytes.len() as u64 > limits.max_compressed {
        return Err(PackageError::CompressedTooLarge {
            size: bytes.len() as u64,
            limit: limits.max_compressed,
        });
    }
    let sha256 = sha256_hex(bytes);
    if let Some(pin) = &opts.sha256 {
        let expected = normalise_pin(pin)?;
        if expected != sha256 {
            return Err(PackageError::ShaMismatch {
                expected,
                actual: sha256,
            });
        }
    }

    // The whole decompressed stream (headers, padding and contents) may not exceed the
    // contents limit plus a header and padding per allowed entry, plus the end blocks.
    let overhead = (limits.max_entries as u64 + 2) * 2048 + 4096;
    let stream = Capped {
        inner: flate2::read::GzDecoder::new(bytes),
        left: limits.max_unpacked.saturating_add(overhead),
    };
    let mut archive = tar::Archive::new(stream);
    let corrupt = |e: io::Error| PackageError::Corrupt { why: e.to_string() };
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut unpacked = 0u64;
    let mut count = 0usize;
    let entries = archive.entries().map_err(corrupt)?.raw(true);
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            if is_cap(&e) {
                PackageError::UnpackedTooLarge {
                    name: "(between entries)".into(),
                    limit: limits.max_unpacked,
                }
            } else {
                corrupt(e)
            }
        })?;
        count += 1;
        if count > limits.max_entries {
            return Err(PackageError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw_name = entry.path_bytes().into_owned();
        let Some(name) = check_header(&raw_name, entry.header())? else {
            continue;
        };
        if files.contains_key(&name) {
            return Err(PackageError::DuplicateEntry { name });
        }
        let left = limits.max_unpacked - unpacked;
        let cap = if name == MANIFEST_FILE {
            left.min(limits.max_manifest)
        } else {
            left
        };
        let mut contents = Vec::new();
        let read = (&mut entry)
            .take(cap.saturating_add(1))
            .read_to_end(&mut contents);
        match read {
            Ok(_) => {}
            Err(e) if is_cap(&e) => {
                return Err(PackageError::UnpackedTooLarge {
                    name,
                    limit: limits.max_unpacked,
                });
            }
            Err(e) => return Err(corrupt(e)),
        }
        let n = contents.len() as u64;
        if n > cap {
            return Err(if name == MANIFEST_FILE && n > limits.max_manifest {
                PackageError::ManifestTooLarge {
                    limit: limits.max_manifest,
                }
            } else {
                PackageError::UnpackedTooLarge {
                    name,
                    limit: limits.max_unpacked,
                }
            });
        }
        unpacked += n;
        files.insert(name, contents);
    }

    let missing = |name: &str, named_by: &str| PackageError::MissingEntry {
        name: name.into(),
        named_by: named_by.into(),
    };
    let manifest_bytes = files
        .get(MANIFEST_FILE)
        .ok_or_else(|| missing(MANIFEST_FILE, ""))?;
    let manifest_text =
        String::from_utf8(manifest_bytes.clone()).map_err(|_| PackageError::NotUtf8 {
            name: MANIFEST_FILE.into(),
        })?;
    let manifest = Manifest::parse(&manifest_text)?;
    let component = files
        .get(COMPONENT_FILE)
        .ok_or_else(|| missing(COMPONENT_FILE, ""))?;
    check_component_header(component)?;
    if manifest.package.readme.is_some() && !files.contains_key(README) {
        return Err(missing(README, "package.readme"));
    }
    if manifest.package.settings_schema.is_some() && !files.contains_key(SETTINGS_SCHEMA) {
        return Err(missing(SETTINGS_SCHEMA, "package.settings_schema"));
    }
    let readme = files
        .get(README)
        .map(|b| {
            String::from_utf8(b.clone()).map_err(|_| PackageError::NotUtf8 {
                name: README.into(),
            })
        })
        .transpose()?;
    let settings_schema = files
        .get(SETTINGS_SCHEMA)
        .map(|b| {
            let v: serde_json::Value =
                serde_json::from_slice(b).map_err(|e| PackageError::SettingsSchema {
                    why: format!("not valid JSON: {e}"),
                })?;
            // A schema that does not compile would refuse every setting later.
            crate::SettingsSchema::compile(&v)?;
            Ok(v)
        })
        .transpose()?;

    let message = sign::signed_message(files.iter().map(|(n, c)| (n.as_str(), c.as_slice())));
    let signature = sign::check(
        files.get(SIGNATURE_FILE).map(Vec::as_slice),
        &message,
        &opts.trusted_keys,
    )?;
    let signer = match &signature {
        SignatureStatus::Verified { key_id } => Some(key_id.clone()),
        _ => None,
    };
    let component = files.remove(COMPONENT_FILE).unwrap_or_default();
    // After the signature: a tampered component is reported as such, not as whatever
    // its bytes now fail.
    if !opts.skip_import_check {
        crate::imports::check_imports(&manifest, &component)?;
    }
    Ok(VerifiedPackage {
        manifest,
        manifest_text,
        component,
        readme,
        settings_schema,
        sha256,
        signer,
        signature,
    })
}

/// Writes a deterministic `.pbpkg` from named files: sorted by name, regular files with
/// mode 0644, uid/gid 0 and mtime 0, in a gzip stream without a timestamp or file name.
/// No checks: [`pack`] checks; tests use this to build hostile packages.
pub fn write_archive<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> io::Result<Vec<u8>> {
    let mut files: Vec<_> = files.into_iter().collect();
    files.sort_by(|a, b| a.0.cmp(b.0));
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    for (name, contents) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(name)?;
        h.set_size(contents.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        tar.append(&h, contents)?;
    }
    tar.into_inner()?.finish()
}

/// Builds a package from a directory holding `plugboard.toml`, `plugin.wasm` and,
/// optionally, `README.md` and `settings.schema.json`; signs it when given a key; then
/// verifies the result (with the signer's key trusted) before returning it with its
/// sha256.
pub fn pack(
    dir: &Path,
    signing_key: Option<&SigningKey>,
) -> Result<(Vec<u8>, String), PackageError> {
    let read = |name: &str| -> Result<Option<Vec<u8>>, PackageError> {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PackageError::io(path, e)),
        }
    };
    let missing = |name: &str, named_by: &str| PackageError::MissingEntry {
        name: dir.join(name).display().to_string(),
        named_by: named_by.into(),
    };
    let manifest_bytes = read(MANIFEST_FILE)?.ok_or_else(|| missing(MANIFEST_FILE, ""))?;
    let text = std::str::from_utf8(&manifest_bytes).map_err(|_| PackageError::NotUtf8 {
        name: MANIFEST_FILE.into(),
    })?;
    let manifest = Manifest::parse(text)?;
    let component = read(COMPONENT_FILE)?.ok_or_else(|| missing(COMPONENT_FILE, ""))?;
    check_component_header(&component)?;
    crate::imports::check_imports(&manifest, &component)?;
    let readme = read(README)?;
    if manifest.package.readme.is_some() && readme.is_none() {
        return Err(missing(README, "package.readme"));
    }
    let schema = read(SETTINGS_SCHEMA)?;
    if manifest.package.settings_schema.is_some() && schema.is_none() {
        return Err(missing(SETTINGS_SCHEMA, "package.settings_schema"));
    }
    let mut files: Vec<(&str, &[u8])> = vec![
        (MANIFEST_FILE, &manifest_bytes),
        (COMPONENT_FILE, &component),
    ];
    if let Some(r) = &readme {
        files.push((README, r));
    }
    if let Some(s) = &schema {
        files.push((SETTINGS_SCHEMA, s));
    }
    let sig;
    if let Some(key) = signing_key {
        sig = sign::signature_file(key, &sign::signed_message(files.iter().copied()));
        files.push((SIGNATURE_FILE, sig.as_bytes()));
    }
    let bytes = write_archive(files).map_err(|e| PackageError::io(dir, e))?;
    let opts = VerifyOptions {
        limits: ArchiveLimits::default(),
        sha256: None,
        trusted_keys: signing_key
            .map(|k| vec![k.verifying_key()])
            .unwrap_or_default(),
        skip_import_check: false,
    };
    let verified = verify(&bytes, &opts)?;
    Ok((bytes, verified.sha256))
}
