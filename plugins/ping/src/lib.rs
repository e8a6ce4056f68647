//! Ping: a test plugin that fires events. `on_reach_ping` and `on_reach_pong` fire each
//! other with `n + 1`: a loop the host must stop. Its component imports
//! `plugboard:plugin/events`: its manifests must ask for `emit`.

use plugboard_pdk::serde_json::Value;
use plugboard_pdk::{Plugin, Reply};

struct Ping;

impl Plugin for Ping {
    type State = Value;

    fn call(&self, event: &str, state: Value) -> Result<Reply<Value>, String> {
        match event {
            "on_reach_ping" | "on_reach_pong" => {
                // Each fires the other with n + 1: a loop the host must stop.
                let other = if event == "on_reach_ping" {
                    "on_reach_pong"
                } else {
                    "on_reach_ping"
                };
                let n = state["n"].as_u64().unwrap_or(0);
                let sent = plugboard_pdk::emit::emit(
                    other,
                    &plugboard_pdk::serde_json::json!({ "n": n + 1 }),
                );
                Ok(Reply::Continue(plugboard_pdk::serde_json::json!({
                    "n": n,
                    "emitted": sent.is_ok(),
                    "error": sent.err().map(|e| format!("{e:?}")),
                })))
            }
            _ => Ok(Reply::Continue(state)),
        }
    }
}

plugboard_pdk::export_plugin!(Ping, Ping);
