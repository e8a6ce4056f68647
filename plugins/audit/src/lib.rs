//! Audit: on `on_user_after_save_failure`, enriches `extra` with an audit entry.

use plugboard_pdk::reference::OnUserAfterSaveFailure;
use plugboard_pdk::serde_json::json;
use plugboard_pdk::{Plugin, Reply};

struct Audit;

impl Plugin for Audit {
    type State = OnUserAfterSaveFailure;

    fn call(&self, _event: &str, mut s: Self::State) -> Result<Reply<Self::State>, String> {
        s.extra = json!({ "audited_by": "wasm-audit", "code": s.error.code, "ip": s.ip.to_string(), "at": plugboard_pdk::now_ms() });
        Ok(Reply::Continue(s))
    }
}

plugboard_pdk::export_plugin!(Audit, Audit);
