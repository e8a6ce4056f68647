//! Unhealthy: works, but its health check fails, so that the installer's tests can show an
//! upgrade to it is refused and the running version stays.

use plugboard_pdk::reference::OnUserAfterSaveFailure;
use plugboard_pdk::{Plugin, Reply};

struct Unhealthy;

impl Plugin for Unhealthy {
    type State = OnUserAfterSaveFailure;

    fn call(&self, _event: &str, s: Self::State) -> Result<Reply<Self::State>, String> {
        Ok(Reply::Continue(s))
    }

    fn health(&self) -> Result<(), String> {
        Err("cannot reach its database".into())
    }
}

plugboard_pdk::export_plugin!(Unhealthy, Unhealthy);
