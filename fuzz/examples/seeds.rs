//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/seed-*`: the
//! example plugins' manifests, small packages (plain, signed, with a readme and a settings
//! schema, and hostile ones), every reference event's sample states in both layouts, and
//! the admin API's request bodies. `cargo xtask fuzz` then minimises the corpora with the
//! rest of what the fuzzer found (`cargo fuzz cmin`).
//!
//! Run it with `cargo run --manifest-path fuzz/Cargo.toml --example seeds`.

use std::path::{Path, PathBuf};

use plugboard_core::Event;
use plugboard_core::wire::Wire;
use plugboard_fuzz::{BINARY_EVENTS, all_events, samples, seed_key};
use plugboard_package::{pack, sha256_hex, write_archive};
use serde_json::{Value, json};

const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = root().join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed written");
}

fn with(prefix: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![prefix];
    out.extend_from_slice(bytes);
    out
}

const FULL_MANIFEST: &str = r#"[package]
name = "full-example"
version = "1.2.3-beta.1+build.5"
description = "Every field a manifest may have."
authors = ["Ann <ann@example.org>", "Bob"]
license = "MIT OR Apache-2.0"
host = ">=0.1, <2"
contract = "0.2"
readme = "README.md"
settings_schema = "settings.schema.json"

[dependencies]
audit = "^1.0"
other_pkg = "~2.1.0"

[limits]
memory_mib = 64
deadline_ms = 250
fuel = 1000000
max_reply_kib = 512

[capabilities]
log = true
settings = true
clock = false

[[hooks]]
event = "on_user_after_save_failure"
priority = 0

[[hooks]]
event = "on_content_before_save"
plugin = "full-example.validator"
priority = 100
depend_type = "hard"
depends = ["audit", "full-example"]
"#;

const SCHEMA: &str = r#"{"type": "object", "properties": {"level": {"type": "string", "enum": ["debug", "info"]}, "threshold": {"type": "integer", "minimum": 1}, "token": {"type": "string", "writeOnly": true}}, "required": ["level"], "additionalProperties": false}"#;

fn manifests() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let plugins = root().join("../plugins");
    for dir in ["audit", "dependent", "validator"] {
        let text = std::fs::read_to_string(plugins.join(dir).join("plugboard.toml"))
            .expect("an example plugin's manifest");
        out.push((dir.to_owned(), text));
    }
    out.push(("full".into(), FULL_MANIFEST.into()));
    let minimal = "[package]\nname = \"ab\"\nversion = \"0.0.0\"\nlicense = \"x\"\ncontract = \"*\"\n\n[[hooks]]\nevent = \"e\"\npriority = 50\n";
    out.push(("minimal".into(), minimal.into()));
    for (name, bad) in [
        ("unknown-field", "[package]\nname = \"ab\"\nflavour = 1\n"),
        (
            "priority",
            "[package]\nname = \"ab\"\nversion = \"1.0.0\"\nlicense = \"x\"\ncontract = \"0.2\"\n[[hooks]]\nevent = \"e\"\npriority = 101\n",
        ),
        (
            "self-depend",
            "[package]\nname = \"ab\"\nversion = \"1.0.0\"\nlicense = \"x\"\ncontract = \"0.2\"\n[dependencies]\nab = \"1\"\n[[hooks]]\nevent = \"e\"\npriority = 1\nplugin = \"p\"\ndepends = [\"p\"]\n",
        ),
        (
            "limits-zero",
            "[package]\nname = \"ab\"\nversion = \"1.0.0\"\nlicense = \"x\"\ncontract = \"0.2\"\n[limits]\nfuel = 0\n[[hooks]]\nevent = \"e\"\npriority = 1\n",
        ),
        (
            "inline",
            "package = { name = \"ab\", version = \"1.0.0\", license = \"x\", contract = \"0.2\" }\nhooks = [{ event = \"e\", priority = 1 }, { event = \"f\", priority = 2, plugin = \"g\" }]\n",
        ),
    ] {
        out.push((name.into(), bad.into()));
    }
    out
}

fn packages() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let tmp = std::env::temp_dir().join(format!("plugboard-fuzz-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("temp dir");
    for (name, manifest) in manifests().into_iter().take(4) {
        let dir = tmp.join(&name);
        std::fs::create_dir_all(&dir).expect("package dir");
        std::fs::write(dir.join("plugboard.toml"), &manifest).expect("manifest");
        std::fs::write(dir.join("plugin.wasm"), COMPONENT).expect("component");
        if name == "full" {
            std::fs::write(dir.join("README.md"), "# Full\n\nEvery field.\n").expect("readme");
            std::fs::write(dir.join("settings.schema.json"), SCHEMA).expect("schema");
        }
        let (plain, _) = pack(&dir, None).expect("packs");
        out.push((name.clone(), plain));
        let (signed, _) = pack(&dir, Some(&seed_key())).expect("packs signed");
        out.push((format!("{name}-signed"), signed));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let manifest = manifests().remove(0).1;
    let m = manifest.as_bytes();
    let hostile: Vec<(&str, Vec<(&str, &[u8])>)> = vec![
        (
            "unknown-entry",
            vec![
                ("plugboard.toml", m),
                ("plugin.wasm", COMPONENT),
                ("notes.txt", b"hi"),
            ],
        ),
        (
            "dot-slash",
            vec![("./plugboard.toml", m), ("./plugin.wasm", COMPONENT)],
        ),
        (
            "core-module",
            vec![("plugboard.toml", m), ("plugin.wasm", b"\0asm\x01\0\0\0")],
        ),
        ("no-component", vec![("plugboard.toml", m)]),
        (
            "bad-schema",
            vec![
                ("plugboard.toml", m),
                ("plugin.wasm", COMPONENT),
                ("settings.schema.json", b"{\"type\": 5}"),
            ],
        ),
        (
            "bad-signature",
            vec![
                ("plugboard.toml", m),
                ("plugin.wasm", COMPONENT),
                (
                    "plugboard.sig",
                    b"key_id = \"0011223344556677\"\nsignature = \"00\"\n",
                ),
            ],
        ),
    ];
    for (name, files) in hostile {
        out.push((name.into(), write_archive(files).expect("archive")));
    }
    // Entries write_archive would not write: a symlink, a path out of the archive.
    let symlink = raw_tar(&[(b"plugin.wasm", tar::EntryType::Symlink, b"")]);
    out.push(("symlink".into(), gzip(&symlink)));
    let traversal = raw_tar(&[
        (b"plugboard.toml", tar::EntryType::Regular, m),
        (b"../plugin.wasm", tar::EntryType::Regular, COMPONENT),
    ]);
    out.push(("traversal".into(), gzip(&traversal)));
    out.push(("plain-tar".into(), traversal));
    out
}

/// A tar of entries with names written as given (no checks), symlinks to `/etc/passwd`.
fn raw_tar(entries: &[(&[u8], tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, kind, contents) in entries {
        let mut h = tar::Header::new_ustar();
        h.as_ustar_mut().expect("ustar").name[..name.len()].copy_from_slice(name);
        h.set_entry_type(*kind);
        if kind.is_symlink() {
            h.set_link_name("/etc/passwd").expect("link");
        }
        h.set_mode(0o644);
        h.set_size(contents.len() as u64);
        h.set_cksum();
        tar.append(&h, *contents).expect("entry");
    }
    tar.into_inner().expect("tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, bytes).expect("gzip");
    gz.finish().expect("gzip")
}

fn main() {
    for (name, text) in manifests() {
        write("manifest", &name, text.as_bytes());
    }

    for (name, bytes) in packages() {
        // Default limits; the seed key trusted; tight limits; a pin (see the target).
        for mode in [0u8, 1, 2 | 0x40, 8] {
            write("archive", &format!("{name}-{mode}"), &with(mode, &bytes));
        }
        // The plain tar, which the target gzips (mode bit 2).
        let mut tar = Vec::new();
        if std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut tar)
            .is_ok()
        {
            for mode in [4u8, 5] {
                write("archive", &format!("{name}-tar-{mode}"), &with(mode, &tar));
            }
        }
    }

    for (i, event) in BINARY_EVENTS.iter().enumerate() {
        for (j, sample) in samples(event).into_iter().enumerate() {
            let bytes = binary(event, sample);
            write(
                "binary_state",
                &format!("{event}-{j}"),
                &with(i as u8, &bytes),
            );
        }
    }

    for (i, event) in all_events().into_iter().enumerate() {
        for (j, sample) in samples(event).into_iter().enumerate() {
            let text = sample.to_string();
            // Options: none, then `return_input` and `private` (the high bits).
            let selector = i as u8 + 32 * (j as u8 % 4);
            write(
                "json_state",
                &format!("{event}-{j}"),
                &with(selector, text.as_bytes()),
            );
            let body = json!({ "state": sample }).to_string();
            let call = with(0, &with(i as u8, body.as_bytes()));
            write("http_bodies", &format!("call-{event}-{j}"), &call);
        }
    }

    let pin = sha256_hex(b"x");
    let package = packages().remove(0).1;
    let mut upload = format!("sha256={}&force=true\n", sha256_hex(&package)).into_bytes();
    upload.extend_from_slice(&package);
    let http: Vec<(&str, u8, Vec<u8>)> = vec![
        ("url", 1, json!({"url": "https://packages.example.org/audit-1.0.0.pbpkg", "sha256": pin.to_uppercase(), "force": true}).to_string().into_bytes()),
        ("url-http", 1, json!({"url": "http://h:8080/p", "sha256": format!(" {pin} ")}).to_string().into_bytes()),
        ("upload", 2, upload),
        ("upload-query", 2, format!("sha256={pin}&force=false").into_bytes()),
        ("uninstall", 3, b"cascade=true".to_vec()),
        ("activity", 4, b"kind=plugin&status=error&subject=audit&limit=10&before_id=-5".to_vec()),
        ("plugins", 5, b"event=on_user_after_save_failure&status=active".to_vec()),
        ("login", 6, b"token=%20abc+def%20&csrf=0123abcd".to_vec()),
        ("setting", 7, json!({"threshold": 3, "level": "info", "prefix": "a-b1", "hosts": ["a.example", "b"], "token": "s"}).to_string().into_bytes()),
        ("setting-bad", 7, json!({"threshold": 0, "level": "loud", "other": [1]}).to_string().into_bytes()),
        ("setting-schema", 7, SCHEMA.as_bytes().to_vec()),
        ("signup", 8, b"name=Ann+Lee&email=Ann%40Example.org&password=correct+horse".to_vec()),
        ("signup-refused", 8, b"name=+&email=ann&password=short".to_vec()),
    ];
    for (name, selector, body) in http {
        write("http_bodies", name, &with(selector, &body));
    }
}

fn binary(event: &str, sample: Value) -> Vec<u8> {
    macro_rules! encode {
        ($($ty:ty),*) => {
            $(if event == <$ty as Event>::NAME {
                let state: $ty = serde_json::from_value(sample).expect("a sample decodes");
                return Wire::Binary.encode(&state).expect("encodes");
            })*
        };
    }
    use plugboard_core::reference::*;
    encode!(
        OnChangeDependency,
        OnRouter,
        OnUserAfterDeleteRole,
        OnUserAfterSaveRole,
        OnUserAfterLogin,
        OnUserAfterLogout,
        OnUserAfterSave,
        OnUserAfterSaveFailure,
        OnUserAuthorisation,
        OnUserAuthorisationFailure,
        OnUserBeforeLogin,
        OnUserLoginFailure
    );
    panic!("{event} is not a binary event")
}
