//! Testing a plugin in the real host from `cargo test` (the `testing` feature, as a
//! dev-dependency): [`Trial`] builds the project's component (`plugboard build`) and calls
//! it in Plugboard's WebAssembly host (`plugboard test`), with the state, settings, grants
//! and key-value data a test gives, and returns the reply to assert on.
//!
//! It drives the `plugboard` binary rather than linking the host: the host is wasmtime,
//! which would add minutes to every plugin's first `cargo test`. `$PLUGBOARD` names the
//! binary when `plugboard` is not on `PATH`.
//!
//! ```no_run
//! use plugboard_pdk::serde_json::json;
//! use plugboard_pdk::testing::Trial;
//!
//! let outcome = Trial::new(env!("CARGO_MANIFEST_DIR"))
//!     .state(json!({"ip": "203.0.113.9"}))
//!     .settings(json!({"limit": 3}))
//!     .kv("fail:203.0.113.9", "3")
//!     .run()
//!     .unwrap();
//! assert!(outcome.halted(), "{outcome:?}");
//! assert_eq!(outcome.kv["fail:203.0.113.9"], "4");
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a trial could not give an outcome (a plugin's own failure is an [`Outcome`]).
#[derive(Debug)]
pub enum TrialError {
    /// `plugboard` could not be run.
    Spawn(std::io::Error),
    /// `plugboard build` failed; its standard error.
    Build(String),
    /// `plugboard test` answered with no JSON (a bad state, settings or grant); its
    /// standard error.
    Test(String),
    /// The state or settings could not be encoded.
    Encode(String),
}

impl std::fmt::Display for TrialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrialError::Spawn(e) => write!(
                f,
                "running plugboard ({e}): put it on PATH or name it in $PLUGBOARD"
            ),
            TrialError::Build(e) => write!(f, "plugboard build failed:\n{e}"),
            TrialError::Test(e) => write!(f, "plugboard test failed:\n{e}"),
            TrialError::Encode(e) => write!(f, "encoding the state or settings: {e}"),
        }
    }
}

impl std::error::Error for TrialError {}

/// One call of a plugin project's component in the real host.
#[derive(Clone, Debug)]
#[must_use]
pub struct Trial {
    project: PathBuf,
    event: Option<String>,
    state: Result<Value, String>,
    settings: Option<Result<Value, String>>,
    kv: Vec<(String, String)>,
    grant: Option<String>,
}

/// What one step of the call did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(crate = "serde")]
pub struct Step {
    /// The plugin.
    pub plugin: String,
    /// `continued`, `halted` or `failed`.
    pub outcome: String,
    /// The failure's kind and message, when it failed.
    #[serde(default)]
    pub failure: Option<Value>,
}

/// What the call did: the state it ended with (or its error), each step, and the
/// package's key-value data afterwards.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(crate = "serde")]
pub struct Outcome {
    /// The state the call ended with; `None` when it failed.
    pub result: Option<Value>,
    /// Why the call failed.
    pub error: Option<String>,
    /// The plugin that halted the chain.
    pub halted_by: Option<String>,
    /// Each step, in order.
    #[serde(rename = "trace")]
    pub steps: Vec<Step>,
    /// The package's key-value data after the call (values as text).
    pub kv: BTreeMap<String, String>,
}

impl Outcome {
    /// Whether the call went through every step without a halt.
    pub fn continued(&self) -> bool {
        self.error.is_none() && self.halted_by.is_none()
    }

    /// Whether a plugin halted the chain.
    pub fn halted(&self) -> bool {
        self.halted_by.is_some()
    }

    /// The final state, read into the event's type.
    ///
    /// ```no_run
    /// # use plugboard_pdk::testing::Trial;
    /// use plugboard_pdk::reference::OnUserBeforeLogin;
    /// let outcome = Trial::new(".").state(plugboard_pdk::serde_json::json!({"ip": "::1"})).run().unwrap();
    /// let state: OnUserBeforeLogin = outcome.state().unwrap();
    /// assert_eq!(state.ip.to_string(), "::1");
    /// ```
    pub fn state<T: DeserializeOwned>(&self) -> Result<T, String> {
        let v = self
            .result
            .clone()
            .ok_or_else(|| format!("the call failed: {:?}", self.error))?;
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
}

impl Trial {
    /// A trial of the project in `project` (a directory with `plugboard.toml`), on the
    /// first event it hooks, with the state `{}`, no settings, empty kv data and every
    /// capability it asks for.
    pub fn new(project: impl Into<PathBuf>) -> Self {
        Trial {
            project: project.into(),
            event: None,
            state: Ok(Value::Object(Default::default())),
            settings: None,
            kv: Vec::new(),
            grant: None,
        }
    }

    /// Calls this event instead of the first one hooked.
    pub fn event(mut self, event: &str) -> Self {
        self.event = Some(event.to_owned());
        self
    }

    /// The state to call with (any serializable value: a reference event's struct, or
    /// `json!`). A state that cannot be encoded fails [`run`](Trial::run).
    pub fn state(mut self, state: impl Serialize) -> Self {
        self.state = serde_json::to_value(state).map_err(|e| e.to_string());
        self
    }

    /// The package's settings (checked against its schema, as an operator's would be). A
    /// value that cannot be encoded fails [`run`](Trial::run).
    pub fn settings(mut self, settings: impl Serialize) -> Self {
        self.settings = Some(serde_json::to_value(settings).map_err(|e| e.to_string()));
        self
    }

    /// An entry its key-value data starts with.
    pub fn kv(mut self, key: &str, value: &str) -> Self {
        self.kv.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Grants only these capabilities, e.g. `log` or `log,http=http://127.0.0.1:9000`.
    pub fn grant(mut self, capabilities: &str) -> Self {
        self.grant = Some(capabilities.to_owned());
        self
    }

    /// Builds the project (once per test process) and calls it.
    pub fn run(&self) -> Result<Outcome, TrialError> {
        build_once(&self.project)?;
        let mut cmd = plugboard();
        cmd.arg("test")
            .arg(&self.project)
            .args(["--state", "-", "--json"]);
        if let Some(e) = &self.event {
            cmd.args(["--event", e]);
        }
        if let Some(s) = &self.settings {
            let s = s.clone().map_err(TrialError::Encode)?;
            cmd.arg("--settings").arg(s.to_string());
        }
        for (k, v) in &self.kv {
            cmd.arg("--kv").arg(format!("{k}={v}"));
        }
        if let Some(g) = &self.grant {
            cmd.args(["--grant", g]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(TrialError::Spawn)?;
        let state = self.state.clone().map_err(TrialError::Encode)?.to_string();
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(state.as_bytes())
                .map_err(TrialError::Spawn)?;
        }
        let out = child.wait_with_output().map_err(TrialError::Spawn)?;
        // A failed call still answers with JSON (and exits non-zero): it is an outcome.
        serde_json::from_slice(&out.stdout)
            .map_err(|_| TrialError::Test(String::from_utf8_lossy(&out.stderr).into_owned()))
    }
}

fn plugboard() -> Command {
    Command::new(std::env::var_os("PLUGBOARD").unwrap_or_else(|| "plugboard".into()))
}

/// `plugboard build`, once for each project in this process: tests run in parallel, and
/// one build serves them all.
fn build_once(project: &Path) -> Result<(), TrialError> {
    static BUILT: OnceLock<Mutex<BTreeMap<PathBuf, Result<(), String>>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let result = built
        .entry(project.to_path_buf())
        .or_insert_with(|| {
            let out = plugboard()
                .arg("build")
                .arg(project)
                .output()
                .map_err(|e| {
                    format!("running plugboard ({e}): put it on PATH or name it in $PLUGBOARD")
                })?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        })
        .clone();
    result.map_err(TrialError::Build)
}
