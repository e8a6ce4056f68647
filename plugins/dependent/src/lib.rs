//! Dependent: registered with a hard dependency on `audit`; marks the audit it follows.
//! Works on any event's state as JSON.

use plugboard_pdk::serde_json::{Value, json};
use plugboard_pdk::{Plugin, PluginRecord, Reply};

struct Dependent;

impl Plugin for Dependent {
    type State = Value;

    fn call(&self, _event: &str, mut s: Value) -> Result<Reply<Value>, String> {
        let audited = s["extra"]["audited_by"].is_string();
        s["extra"]["followed_audit"] = json!(audited);
        Ok(Reply::Continue(s))
    }

    fn initial(&self, record: &PluginRecord) -> Result<(), String> {
        if record.depends.iter().any(|d| d == "audit") {
            Ok(())
        } else {
            Err("this plugin must be registered with a hard dependency on `audit`".into())
        }
    }
}

plugboard_pdk::export_plugin!(Dependent, Dependent);
