//! Tests of the `plugboard` binary, run as a user runs it.
#![allow(clippy::unwrap_used, missing_docs)]

mod catalogue;
mod e2e;
mod install;
mod operator;
mod package;

use std::path::Path;
use std::process::{Command, Output};

/// The binary, with its data directory in `home` and no inherited database.
pub fn plugboard_in(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plugboard"));
    c.env_remove("RUST_LOG")
        .env_remove("PLUGBOARD_DATABASE_URL")
        .env("PLUGBOARD_HOME", home);
    c
}

pub fn run(home: &Path, args: &[&str]) -> Output {
    plugboard_in(home).args(args).output().unwrap()
}

pub fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}
