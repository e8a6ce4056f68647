//! Why a package is refused: one variant per refusal, each naming the entry or field.

use std::path::PathBuf;

use crate::policy::PolicyViolation;

/// Why a package could not be read, verified, built or accepted.
///
/// Every refusal has its own variant, so that a caller (or a test) can tell a tar-slip
/// from a bad signature without parsing messages; the messages name the entry or the
/// manifest field concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// The package file is larger than the compressed size limit.
    #[error("the package is {size} bytes, more than the limit of {limit} bytes")]
    CompressedTooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The gzip or tar stream is damaged or is not a gzip-compressed tar at all.
    #[error("the package is not a readable gzip-compressed tar archive: {why}")]
    Corrupt {
        /// What the decoder said.
        why: String,
    },
    /// More entries than allowed; reading stopped at the first one too many.
    #[error("the package has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: usize,
    },
    /// An entry's name is not UTF-8.
    #[error("entry name {name:?} is not valid UTF-8")]
    NonUtf8Name {
        /// The name, lossily decoded.
        name: String,
    },
    /// An entry's name is an absolute path.
    #[error("entry `{name}` has an absolute path")]
    AbsolutePath {
        /// The entry's name.
        name: String,
    },
    /// An entry's name has a `..` component.
    #[error("entry `{name}` has a `..` component (path traversal)")]
    PathTraversal {
        /// The entry's name.
        name: String,
    },
    /// A symbolic link entry.
    #[error("entry `{name}` is a symbolic link (to `{target}`); packages hold regular files only")]
    Symlink {
        /// The entry's name.
        name: String,
        /// Where it points.
        target: String,
    },
    /// A hard link entry.
    #[error("entry `{name}` is a hard link (to `{target}`); packages hold regular files only")]
    HardLink {
        /// The entry's name.
        name: String,
        /// What it links to.
        target: String,
    },
    /// A character or block device, or a FIFO.
    #[error("entry `{name}` is a {kind}; packages hold regular files only")]
    SpecialFile {
        /// The entry's name.
        name: String,
        /// `character device`, `block device` or `fifo`.
        kind: &'static str,
    },
    /// Any other entry type (directories other than `./`, pax or GNU extension headers…).
    #[error("entry `{name}` is a {kind} entry; packages hold regular files only")]
    UnsupportedEntry {
        /// The entry's name.
        name: String,
        /// The entry type, as tar names it.
        kind: String,
    },
    /// Two entries with the same (normalised) name.
    #[error("entry `{name}` appears twice")]
    DuplicateEntry {
        /// The entry's name.
        name: String,
    },
    /// An entry that is not one of the files a package may hold.
    #[error(
        "unknown entry `{name}`: a package holds only plugboard.toml, plugin.wasm, README.md, settings.schema.json and plugboard.sig"
    )]
    UnknownEntry {
        /// The entry's name.
        name: String,
    },
    /// A required file is missing (from the archive, or from the directory being packed).
    #[error("`{name}` is missing{}", if .named_by.is_empty() { String::new() } else { format!(" (named by {})", .named_by) })]
    MissingEntry {
        /// The file's name.
        name: String,
        /// The manifest field that names it, if any.
        named_by: String,
    },
    /// The entries together unpack to more than the limit.
    #[error("the package unpacks to more than {limit} bytes (stopped at entry `{name}`)")]
    UnpackedTooLarge {
        /// The entry being read when the limit was reached.
        name: String,
        /// The limit.
        limit: u64,
    },
    /// `plugboard.toml` is larger than the manifest limit.
    #[error("plugboard.toml is larger than the limit of {limit} bytes")]
    ManifestTooLarge {
        /// The limit.
        limit: u64,
    },
    /// A text file is not UTF-8.
    #[error("`{name}` is not valid UTF-8")]
    NotUtf8 {
        /// The file's name.
        name: String,
    },
    /// `plugboard.toml` is not valid TOML, or has an unknown field or a value of the wrong
    /// type. The message names the line and the field.
    #[error("plugboard.toml: {message}")]
    ManifestSyntax {
        /// The parser's message, with line, column and field.
        message: String,
    },
    /// A manifest field has a value the format does not allow.
    #[error("plugboard.toml{}: {field}: {why}", .line.map(|l| format!(" line {l}")).unwrap_or_default())]
    ManifestInvalid {
        /// The field's path, e.g. `hooks[1].priority`.
        field: String,
        /// The line it is on, when known.
        line: Option<usize>,
        /// What is wrong with it.
        why: String,
    },
    /// `settings.schema.json` is not a JSON object.
    #[error("settings.schema.json: {why}")]
    SettingsSchema {
        /// What is wrong with it.
        why: String,
    },
    /// `plugin.wasm` is not a WebAssembly component.
    #[error("plugin.wasm is not a WebAssembly component: {why}")]
    NotAComponent {
        /// What it is instead.
        why: String,
    },
    /// The component imports an interface governed by a capability its manifest does not
    /// ask for: it would be denied at its first call, so it is refused now.
    #[error(
        "the component imports `{import}`, which needs the `{capability}` capability, but plugboard.toml does not ask for it: add `{fix}` under [capabilities], or build the component without that import (componentize-js: `-d http fetch-event`; componentize-py and jco: the narrowest world of wit/plugin.wit, e.g. `plugin-basic`; `plugboard build` picks these from the manifest)"
    )]
    UndeclaredImport {
        /// The import, as the component names it.
        import: String,
        /// The capability it needs.
        capability: &'static str,
        /// What to write in the manifest.
        fix: &'static str,
    },
    /// The package's sha256 is not the expected one.
    #[error("sha256 mismatch: expected {expected}, the package has {actual}")]
    ShaMismatch {
        /// The pinned digest.
        expected: String,
        /// The package's digest.
        actual: String,
    },
    /// A sha256 pin that is not 64 hex digits.
    #[error("`{pin}` is not a sha256 digest (64 hex digits)")]
    InvalidPin {
        /// The pin as given.
        pin: String,
    },
    /// Trusted keys are configured and the package carries no signature.
    #[error("the package is not signed, and signatures are required (trusted keys are configured)")]
    Unsigned,
    /// The package is signed with a key that is not trusted.
    #[error("the package is signed with key {key_id}, which is not a trusted key")]
    UnknownKey {
        /// The signer's key id.
        key_id: String,
    },
    /// The signature does not match the package's contents.
    #[error("the signature by key {key_id} does not match the package's contents")]
    BadSignature {
        /// The signer's key id.
        key_id: String,
    },
    /// `plugboard.sig` cannot be read.
    #[error("plugboard.sig: {why}")]
    SignatureFile {
        /// What is wrong with it.
        why: String,
    },
    /// A key file or key could not be read or made.
    #[error("key {}: {why}", .path.display())]
    Key {
        /// The key file (empty when no file is involved).
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The operator's policy refuses the package.
    #[error("refused by the operator's policy: {0}")]
    Policy(PolicyViolation),
    /// A package file to read is not a regular file (a device, a FIFO, a directory).
    #[error("{}: not a regular file", .path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{}: {error}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error (in the message: not repeated as a source).
        error: std::io::Error,
    },
}

impl PackageError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        line: Option<usize>,
        why: impl Into<String>,
    ) -> Self {
        PackageError::ManifestInvalid {
            field: field.into(),
            line,
            why: why.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PackageError::Io {
            path: path.into(),
            error: source,
        }
    }
}
