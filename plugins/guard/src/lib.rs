//! Guard: halts `on_user_after_save_failure` when the error's code is on its block list
//! (the plugin's settings, a JSON list of codes; `["blocked"]` by default). It only reads
//! the state (`Lazy::get`), so the state goes on, or ends the chain, as the bytes it came
//! in: nothing is re-encoded.

use std::sync::OnceLock;

use plugboard_pdk::reference::OnUserAfterSaveFailure;
use plugboard_pdk::{Flow, Lazy, Plugin};

struct Guard {
    blocked: OnceLock<Vec<String>>,
}

impl Guard {
    fn blocked(&self) -> &[String] {
        self.blocked.get_or_init(|| {
            plugboard_pdk::settings()
                .and_then(|s| plugboard_pdk::serde_json::from_str(&s).ok())
                .unwrap_or_else(|| vec!["blocked".to_owned()])
        })
    }
}

impl Plugin for Guard {
    type State = OnUserAfterSaveFailure;

    fn call_lazy(&self, _event: &str, state: &mut Lazy<'_, Self::State>) -> Result<Flow, String> {
        let code = &state.get()?.error.code;
        Ok(if self.blocked().iter().any(|b| b == code) {
            Flow::Halt
        } else {
            Flow::Continue
        })
    }
}

plugboard_pdk::export_plugin!(
    Guard,
    Guard {
        blocked: OnceLock::new()
    }
);
