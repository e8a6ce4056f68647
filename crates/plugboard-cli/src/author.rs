//! `plugboard new` and `plugboard build`: a plugin project that builds, tests and packs as
//! it comes, in Rust (the PDK), JavaScript (componentize-js) or Python (componentize-py),
//! and one command from its sources to a `.pbpkg`, with the language's own toolchain.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, anyhow, bail};
use plugboard::Engine;
use plugboard_package::Manifest;
use serde_json::{Value, json};

/// The language of a plugin project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    /// Rust, with plugboard-pdk, built for wasm32-wasip2 by cargo.
    Rust,
    /// JavaScript, built by componentize-js (its SpiderMonkey runtime in the component).
    Js,
    /// Python, built by componentize-py.
    Python,
}

/// What `plugboard new` was asked.
#[derive(clap::Args)]
pub(crate) struct New {
    /// The package's name (and the project's directory).
    name: String,
    /// The language.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// The event its plugin hooks.
    #[arg(long, default_value = "on_user_after_save_failure")]
    event: String,
    /// Where to create it [default: ./NAME].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The plugboard-pdk crate a Rust project depends on [default: the one beside the
    /// sources this binary was built from].
    #[arg(long, value_name = "DIR")]
    pdk: Option<PathBuf>,
}

/// Creates the project.
pub(crate) fn new(out: &mut impl Write, n: &New) -> Result<()> {
    let dir = n.dir.clone().unwrap_or_else(|| PathBuf::from(&n.name));
    if dir.exists() {
        bail!(
            "{} exists already: choose another name or --dir",
            dir.display()
        );
    }
    let (state, ty) = match known(&n.event) {
        Some((state, ty)) => (state, Some(ty)),
        None => (json!({}), None),
    };
    let typed = ty.is_some();
    let manifest = manifest(&n.name, &n.event);
    // The same checks as `pack`: a name that could never be installed is refused now.
    Manifest::parse(&manifest).map_err(|e| anyhow!("`{}`: {e}", n.name))?;
    let mut files: Vec<(&str, String)> = vec![
        ("plugboard.toml", manifest),
        ("state.json", serde_json::to_string_pretty(&state)? + "\n"),
        (
            ".gitignore",
            "/target\n/plugin.wasm\n*.pbpkg\n__pycache__/\nnode_modules/\n".into(),
        ),
        ("README.md", readme(&n.name, &n.event, n.lang, typed)),
    ];
    match n.lang {
        Lang::Rust => {
            let pdk = match &n.pdk {
                Some(p) => p.clone(),
                None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugboard-pdk"),
            };
            let pdk = pdk.canonicalize().map_err(|_| {
                anyhow!(
                    "plugboard-pdk is not at {}: pass --pdk with the path of crates/plugboard-pdk in a Plugboard checkout",
                    pdk.display()
                )
            })?;
            files.push(("Cargo.toml", cargo_toml(&n.name, &pdk)));
            files.push(("src/lib.rs", rust_lib(&n.name, &n.event, ty.as_deref())));
            files.push(("tests/plugin.rs", RUST_TEST.into()));
        }
        Lang::Js => {
            files.push(("app.js", js_app(&n.name, &n.event)));
            files.push(("package.json", js_package(&n.name)));
            files.push(("tests/plugin.test.mjs", JS_TEST.into()));
        }
        Lang::Python => {
            files.push(("app.py", python_app(&n.name, &n.event)));
            files.push(("tests/test_plugin.py", PYTHON_TEST.into()));
        }
    }
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    writeln!(
        out,
        "created {} ({:?}, on `{}`)",
        dir.display(),
        n.lang,
        n.event
    )?;
    writeln!(out, "next:")?;
    if n.lang == Lang::Js {
        writeln!(
            out,
            "  npm install --prefix {}   # componentize-js, once",
            dir.display()
        )?;
    }
    writeln!(out, "  plugboard build {}", dir.display())?;
    writeln!(
        out,
        "  plugboard test {} --state {}",
        dir.display(),
        dir.join("state.json").display()
    )?;
    writeln!(
        out,
        "  plugboard install {} --grant all",
        dir.join(format!("{}-0.1.0.pbpkg", n.name)).display()
    )?;
    Ok(())
}

/// What `build` made.
pub(crate) struct Built {
    /// The project's manifest.
    pub(crate) manifest: Manifest,
    /// The package's bytes, as written to `NAME-VERSION.pbpkg`.
    pub(crate) package: Vec<u8>,
}

/// Builds the project in `dir` into `plugin.wasm` and packs it.
pub(crate) fn build(out: &mut impl Write, dir: &Path) -> Result<Built> {
    let text = std::fs::read_to_string(dir.join("plugboard.toml"))
        .with_context(|| format!("{} has no plugboard.toml", dir.display()))?;
    let manifest = Manifest::parse(&text).map_err(|e| anyhow!("plugboard.toml: {e}"))?;
    let component = dir.join("plugin.wasm");
    if dir.join("Cargo.toml").is_file() {
        build_rust(dir, &component)?;
    } else if dir.join("app.js").is_file() {
        build_js(dir, &manifest, &component)?;
    } else if dir.join("app.py").is_file() {
        build_python(dir, &manifest, &component)?;
    } else {
        bail!(
            "{} holds none of Cargo.toml, app.js and app.py: `plugboard build` builds Rust, JavaScript and Python projects (`plugboard pack` packs a component you built)",
            dir.display()
        );
    }
    let (bytes, sha) = plugboard_package::pack(dir, None).map_err(|e| anyhow!("packing: {e}"))?;
    let file = dir.join(format!(
        "{}-{}.pbpkg",
        manifest.package.name, manifest.package.version
    ));
    std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
    writeln!(out, "{} sha256 {sha}", file.display())?;
    Ok(Built {
        manifest,
        package: bytes,
    })
}

fn build_rust(dir: &Path, component: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !output.status.success() {
        bail!("cargo build failed (is the target installed? `rustup target add wasm32-wasip2`)");
    }
    // Where cargo put it (CARGO_TARGET_DIR and workspaces move it), from its own report.
    let built = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"))
        .ok_or_else(|| anyhow!("cargo built no .wasm: is the crate a cdylib?"))?;
    std::fs::copy(&built, component)
        .with_context(|| format!("copying {} to {}", built.display(), component.display()))?;
    Ok(())
}

/// The WIT contract, as this binary serves it, for tools that read WIT files.
const WIT: &[(&str, &str)] = &[
    ("plugin.wit", include_str!("../../../wit/plugin.wit")),
    ("deps/cli.wit", include_str!("../../../wit/deps/cli.wit")),
    (
        "deps/clocks.wit",
        include_str!("../../../wit/deps/clocks.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../../wit/deps/filesystem.wit"),
    ),
    ("deps/http.wit", include_str!("../../../wit/deps/http.wit")),
    ("deps/io.wit", include_str!("../../../wit/deps/io.wit")),
    (
        "deps/random.wit",
        include_str!("../../../wit/deps/random.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../../wit/deps/sockets.wit"),
    ),
];

/// The WIT contract written to a temporary directory, for a tool to build against.
fn wit_dir() -> Result<tempfile::TempDir> {
    let tmp = tempfile::tempdir()?;
    for (path, text) in WIT {
        let path = tmp.path().join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    Ok(tmp)
}

/// componentize-py and componentize-js import every interface of the world they build
/// against, and a package must ask for each import's capability: the narrowest world that
/// has what the manifest asks for (a wrapper's exports `wrapper` too: `wrapper-basic`,
/// or `plugin-wrapper` with every import).
fn narrowest_world(manifest: &Manifest) -> &'static str {
    let caps = &manifest.capabilities;
    let wrapper = manifest
        .hooks
        .iter()
        .any(|h| h.role == plugboard_package::Role::Wrapper);
    match (caps.kv, !caps.http.is_empty(), !caps.emit.is_empty()) {
        (false, false, false) if wrapper => "wrapper-basic",
        _ if wrapper => "plugin-wrapper",
        (false, false, false) => "plugin-basic",
        (true, false, false) => "plugin-kv",
        (false, true, false) => "plugin-http",
        _ => "plugin",
    }
}

fn build_js(dir: &Path, manifest: &Manifest, component: &Path) -> Result<()> {
    let tmp = wit_dir()?;
    // The project's own (`npm install` brings the version its package.json pins), else
    // one on PATH.
    let local = dir.join("node_modules/.bin/componentize-js");
    let program = if local.is_file() {
        local
    } else {
        PathBuf::from("componentize-js")
    };
    let mut cmd = Command::new(&program);
    cmd.arg("app.js")
        .arg("--wit")
        .arg(tmp.path())
        .args(["--world-name", narrowest_world(manifest)])
        .arg("-o")
        .arg(component)
        .current_dir(dir);
    // By default componentize-js exports `wasi:http/incoming-handler` (the fetch event,
    // which no Plugboard host calls) and imports outbound HTTP, which a package may only
    // import when it asks for the `http` capability.
    cmd.args(["--disable", "fetch-event"]);
    if manifest.capabilities.http.is_empty() {
        cmd.arg("http");
    }
    let status = cmd.status().map_err(|e| {
        anyhow!(
            "running {} ({e}): `npm install` in the project (its package.json lists componentize-js), or `npm install -g @bytecodealliance/componentize-js`",
            program.display()
        )
    })?;
    if !status.success() {
        bail!("componentize-js failed ({status})");
    }
    Ok(())
}

fn build_python(dir: &Path, manifest: &Manifest, component: &Path) -> Result<()> {
    let tmp = wit_dir()?;
    let world = narrowest_world(manifest);
    let status = Command::new("componentize-py")
        .arg("-d")
        .arg(tmp.path())
        .args(["-w", world, "componentize", "app", "-p"])
        .arg(dir)
        .arg("-o")
        .arg(component)
        .status()
        .map_err(|e| {
            anyhow!("running componentize-py ({e}): install it with `pip install componentize-py`")
        })?;
    if !status.success() {
        bail!("componentize-py failed ({status})");
    }
    Ok(())
}

/// A Rust project's test: `cargo test` builds the component and calls it in the real host.
const RUST_TEST: &str = r#"//! The plugin in the real Plugboard host: `cargo test` builds it (`plugboard build`) and
//! calls it (`plugboard test`) through `plugboard_pdk::testing::Trial`. `$PLUGBOARD` names
//! the binary when `plugboard` is not on PATH.

use plugboard_pdk::serde_json::{self, Value};
use plugboard_pdk::testing::Trial;

fn sample() -> Value {
    serde_json::from_str(include_str!("../state.json")).expect("state.json is JSON")
}

#[test]
fn it_continues_with_the_sample_state() {
    // `.settings(json!({...}))`, `.kv("key", "value")` and `.grant("log")` set up the
    // rest of what the plugin sees; `outcome.kv` is its data afterwards.
    let outcome = Trial::new(env!("CARGO_MANIFEST_DIR"))
        .state(sample())
        .run()
        .unwrap();
    assert!(outcome.continued(), "{outcome:?}");
    assert_eq!(outcome.steps[0].outcome, "continued");
}
"#;

/// The componentize-js release a new JavaScript project pins (the one CI builds with).
const COMPONENTIZE_JS: &str = "0.23.0";
/// componentize-js imports preview2-shim when it runs but declares it only as a
/// dev-dependency, so a project that installs it with `npm ci` must list it itself.
const PREVIEW2_SHIM: &str = "0.25.0";

fn js_package(name: &str) -> String {
    format!(
        r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "scripts": {{
    "build": "plugboard build .",
    "test": "node --test tests/"
  }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "{COMPONENTIZE_JS}",
    "@bytecodealliance/preview2-shim": "{PREVIEW2_SHIM}"
  }}
}}
"#
    )
}

/// A JavaScript project's test, for node's test runner (`npm test`).
const JS_TEST: &str = r#"// The plugin in the real Plugboard host: builds it (`plugboard build`) and calls it with
// `state.json` (`plugboard test`). `$PLUGBOARD` names the binary when `plugboard` is not on
// PATH. Run with `npm test` (node --test).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const plugboard = process.env.PLUGBOARD ?? 'plugboard';

function run(args) {
  const out = spawnSync(plugboard, args, { encoding: 'utf8' });
  assert.ifError(out.error);
  assert.equal(out.status, 0, out.stderr);
  return out.stdout;
}

test('it continues with the sample state', () => {
  run(['build', here]);
  const answer = JSON.parse(run(['test', here, '--state', join(here, 'state.json'), '--json']));
  assert.equal(answer.trace[0].outcome, 'continued', JSON.stringify(answer));
});
"#;

/// A Python project's test, for `python3 -m unittest discover tests` (or pytest).
const PYTHON_TEST: &str = r#""""The plugin in the real Plugboard host: builds it (`plugboard build`) and calls it with
`state.json` (`plugboard test`). `$PLUGBOARD` names the binary when `plugboard` is not on
PATH. Run with `python3 -m unittest discover tests` (or pytest)."""

import json
import os
import subprocess
import unittest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGBOARD = os.environ.get("PLUGBOARD", "plugboard")


class PluginTest(unittest.TestCase):
    def test_it_continues_with_the_sample_state(self):
        subprocess.run([PLUGBOARD, "build", HERE], check=True)
        out = subprocess.run(
            [PLUGBOARD, "test", HERE, "--state", os.path.join(HERE, "state.json"), "--json"],
            capture_output=True,
            text=True,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        answer = json.loads(out.stdout)
        self.assertEqual(answer["trace"][0]["outcome"], "continued", answer)


if __name__ == "__main__":
    unittest.main()
"#;

fn manifest(name: &str, event: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
description = "A Plugboard plugin on `{event}`."
# An SPDX expression: yours to choose.
license = "MIT"
contract = "{contract}"
readme = "README.md"

# What it may reach, each granted by an operator at install: log, settings, clock,
# random, kv, http = ["https://api.example.com"], emit = ["on_some_event"].
[capabilities]
log = true

[[hooks]]
event = "{event}"
plugin = "{name}"
priority = 50
"#,
        contract = contract_minor(),
    )
}

/// The newest contract as a manifest asks for it: `0.4`.
fn contract_minor() -> &'static str {
    let v = plugboard::CONTRACT_VERSION;
    v.rsplit_once('.').map_or(v, |(minor, _)| minor)
}

fn cargo_toml(name: &str, pdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
plugboard-pdk = {{ path = {pdk:?} }}

[dev-dependencies]
plugboard-pdk = {{ path = {pdk:?}, features = ["testing"] }}

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true

# A project of its own, not a member of an enclosing workspace.
[workspace]
"#,
        pdk = pdk.display().to_string()
    )
}

/// `on_user_after_save_failure` → `OnUserAfterSaveFailure`.
fn type_name(event: &str) -> String {
    event
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn rust_lib(name: &str, event: &str, ty: Option<&str>) -> String {
    let (import, ty) = match ty {
        Some(ty) => (
            format!("use plugboard_pdk::reference::{ty};\n"),
            ty.to_owned(),
        ),
        None => (
            "use plugboard_pdk::serde_json::Value;\n".to_owned(),
            "Value".to_owned(),
        ),
    };
    let what = if ty != "Value" {
        format!("the event's state, typed (`plugboard events show {event}`)")
    } else {
        "your host's own event: its state as free JSON".to_owned()
    };
    format!(
        r#"//! {name}: a Plugboard plugin on `{event}`.

{import}use plugboard_pdk::{{Plugin, Reply}};

struct Hook;

impl Plugin for Hook {{
    /// {what}.
    type State = {ty};

    fn call(&self, event: &str, state: Self::State) -> Result<Reply<Self::State>, String> {{
        plugboard_pdk::log::info(&format!("{name} saw {{event}}"));
        // `Reply::Halt(state)` stops the chain here; an `Err` fails this step.
        Ok(Reply::Continue(state))
    }}
}}

plugboard_pdk::export_plugin!(Hook, Hook);
"#
    )
}

fn python_app(name: &str, event: &str) -> String {
    format!(
        r#""""{name}: a Plugboard plugin on `{event}`, in Python (componentize-py)."""

import json
from typing import Optional

from wit_world import exports
from wit_world.exports import guest
from wit_world.imports import host


class Guest(exports.Guest):
    def initial(self, record: str) -> None:
        return None

    def layout(self, event: str) -> Optional[int]:
        # JSON only: the binary layout is for guests built from the Rust types.
        return None

    def call(self, event: str, wire: guest.Wire, state: bytes) -> guest.Reply:
        s = json.loads(state)
        host.log(host.Level.INFO, f"{name} saw {{event}}")
        # guest.Reply_Halt(...) stops the chain here; raising
        # componentize_py_types.Err("why") fails this step. Keep to the state's fields:
        # a reply with a field the state lacks fails the step.
        return guest.Reply_Continue(json.dumps(s).encode())

    def lifecycle(self, op: str, record: str) -> None:
        return None

    def health(self) -> None:
        return None
"#
    )
}

fn js_app(name: &str, event: &str) -> String {
    format!(
        r#"// {name}: a Plugboard plugin on `{event}`, in JavaScript (componentize-js).
//
// The WIT contract's interfaces are modules: `plugboard:plugin/host@{version}` gives `log`,
// `settings` and `nowMs`; a `result` import throws its error. The export is `guest`.

import {{ log }} from 'plugboard:plugin/host@{version}';

const decoder = new TextDecoder();
const encoder = new TextEncoder();

export const guest = {{
  // A thrown error refuses the registration.
  initial(record) {{}},

  // JSON only: the binary layout is for guests built from the Rust types.
  layout(event) {{
    return undefined;
  }},

  call(event, wire, state) {{
    const s = JSON.parse(decoder.decode(state));
    log('info', `{name} saw ${{event}}`);
    // {{ tag: 'halt', val }} stops the chain here; a thrown error fails this step. Keep
    // to the state's fields: a reply with a field the state lacks fails the step.
    return {{ tag: 'continue', val: encoder.encode(JSON.stringify(s)) }};
  }},

  lifecycle(op, record) {{}},

  health() {{}},
}};
"#,
        version = plugboard::CONTRACT_VERSION,
    )
}

fn readme(name: &str, event: &str, lang: Lang, typed: bool) -> String {
    let toolchain = match lang {
        Lang::Rust => "Rust with the `wasm32-wasip2` target (`rustup target add wasm32-wasip2`)",
        Lang::Js => "node and componentize-js (`npm install` brings it)",
        Lang::Python => "componentize-py (`pip install componentize-py`)",
    };
    let tests = match lang {
        Lang::Rust => "cargo test                                 # both, from tests/plugin.rs",
        Lang::Js => "npm test                                   # both, from tests/plugin.test.mjs",
        Lang::Python => {
            "python3 -m unittest discover tests        # both, from tests/test_plugin.py"
        }
    };
    let setup = match lang {
        Lang::Js => "npm install                                # componentize-js, once\n",
        Lang::Rust | Lang::Python => "",
    };
    let state = if typed {
        format!(
            "`state.json` is a sample `{event}` state (`plugboard events show {event}` gives its schema)."
        )
    } else {
        format!(
            "`{event}` is not in Plugboard's catalogue: it is your host's own event, and `state.json` is `{{}}` until you write one."
        )
    };
    format!(
        r#"# {name}

A Plugboard plugin on `{event}`. Building it needs {toolchain}.

```sh
{setup}plugboard build .                          # the component, packed: {name}-0.1.0.pbpkg
plugboard test . --state state.json        # one call in the real host, nothing installed
{tests}
plugboard install {name}-0.1.0.pbpkg --grant all   # into the host of $PLUGBOARD_HOME
```

While a `plugboard serve` runs, `PLUGBOARD_TOKEN=<its admin token> plugboard dev .
--server http://127.0.0.1:8080` reinstalls the plugin into it on every change you save and
prints its failures.

{state} `plugboard.toml` is the manifest: the events it hooks, with priorities and
dependencies, and the capabilities it asks for.
"#
    )
}

/// A catalogue event's sample state and the PDK's type for it; `None` for a host's own
/// event.
fn known(event: &str) -> Option<(Value, String)> {
    Engine::new().event(event)?;
    Some(match sample(event) {
        Some(state) => (state, type_name(event)),
        // The placeholder events share one generic state.
        None => (
            json!({"data": {"title": "Hello"}, "extra": {}}),
            "Payload".into(),
        ),
    })
}

/// A valid state of each reference event with a state of its own, for a new project's
/// `state.json`.
fn sample(event: &str) -> Option<Value> {
    let conn = json!({"method": "POST", "path": "/users", "headers": {}, "peer": null});
    let ip = "203.0.113.9";
    let id = "7e5b0c5e-4d59-4c3c-9d4e-2c0b6d7f3a10";
    let error = json!({"code": "validation_failed", "message": "the form has errors"});
    let user = json!({"id": 1, "name": "ann"});
    Some(match event {
        "on_change_dependency" => json!({"app": "billing", "status": "add"}),
        "on_router" => json!({"action": "get", "path": "/hello", "endpoint": "HelloController"}),
        "on_user_after_delete_role" | "on_user_after_save_role" => {
            json!({"role_id": id, "ip": ip, "endpoint": "html", "conn": conn})
        }
        "on_user_after_login" => json!({
            "user_info": user, "ip": ip, "endpoint": "html", "conn": conn, "type": "username",
        }),
        "on_user_after_logout" => {
            json!({"user_id": id, "ip": ip, "endpoint": "html", "conn": conn})
        }
        "on_user_after_save" => json!({
            "user_info": user, "ip": ip, "endpoint": "html", "status": "added", "conn": conn,
            "modifier_user": "self",
        }),
        "on_user_after_save_failure" => json!({
            "error": error, "ip": ip, "endpoint": "html", "status": "added", "conn": conn,
            "modifier_user": "self",
        }),
        "on_user_authorisation" => json!({
            "conn": conn, "user_id": id, "ip": ip, "endpoint": "html", "module": "billing",
            "operation": "read",
        }),
        "on_user_authorisation_failure" => json!({
            "conn": conn, "ip": ip, "endpoint": "html", "error": error, "module": "billing",
            "operation": "read",
        }),
        "on_user_before_login" => json!({"ip": ip}),
        "on_user_login_failure" => {
            json!({"conn": conn, "ip": ip, "endpoint": "html", "error": error})
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_event_has_a_sample_state_that_decodes() {
        let engine = Engine::new();
        let events: Vec<String> = engine
            .events()
            .into_iter()
            .map(|e| e.name.to_string())
            .collect();
        assert!(events.len() >= 12, "{events:?}");
        assert!(known("on_my_hosts_event").is_none());
        for event in events {
            let (state, _) = known(&event).unwrap();
            engine
                .call_json(&event, state, &Default::default())
                .unwrap_or_else(|e| panic!("{event}: {e}"));
        }
    }

    #[test]
    fn type_names_follow_the_events() {
        assert_eq!(
            type_name("on_user_after_save_failure"),
            "OnUserAfterSaveFailure"
        );
    }
}
