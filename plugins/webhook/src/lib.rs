//! Webhook: posts a JSON summary of each failed save (`on_user_after_save_failure`) to the
//! URL in its settings, `{"url": "https://hooks.example.com/…"}`, with
//! `Authorization: Bearer <token>` when its secret `token` is set. Needs `settings` and the
//! `http` capability for that URL's origin, granted by the operator. It leaves the state
//! as it is; a failed post fails the step (counted, and shown in traces), so that an
//! operator sees a hook that stopped working.

use plugboard_pdk::reference::OnUserAfterSaveFailure;
use plugboard_pdk::serde_json::{self, Value, json};
use plugboard_pdk::{Plugin, Reply};

struct Webhook;

/// The settings, as `settings.schema.json` describes them.
#[derive(plugboard_pdk::serde::Deserialize)]
#[serde(crate = "plugboard_pdk::serde")]
struct Settings {
    url: String,
    /// Write-only in the schema: sealed at rest, never shown to an operator again.
    #[serde(default)]
    token: Option<String>,
}

impl Plugin for Webhook {
    type State = Value;

    fn call(&self, event: &str, state: Value) -> Result<Reply<Value>, String> {
        let Some(Settings { url, token }) = plugboard_pdk::settings_as::<Settings>()? else {
            return Err("webhook: no `url` in its settings".into());
        };
        let s: OnUserAfterSaveFailure =
            serde_json::from_value(state.clone()).map_err(|e| e.to_string())?;
        let summary = json!({
            "event": event,
            "code": s.error.code,
            "message": s.error.message,
            "ip": s.ip.to_string(),
            "path": s.conn.path,
        });
        let body = serde_json::to_vec(&summary).map_err(|e| e.to_string())?;
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("authorization", b));
        }
        let r = plugboard_pdk::http::request("POST", &url, &headers, &body)
            .map_err(|e| format!("webhook: posting to {url}: {e}"))?;
        if r.status >= 300 {
            return Err(format!("webhook: {url} answered {}", r.status));
        }
        Ok(Reply::Continue(state))
    }
}

plugboard_pdk::export_plugin!(Webhook, Webhook);
