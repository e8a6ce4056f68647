//! IP ban: counts failed logins per address in the plugin's key-value data and, past a
//! threshold, halts `on_user_before_login` for that address with a notice on the page,
//! until the window that started with its first failure ends.
//!
//! Settings (all optional): `{"threshold": 10, "window_secs": 3600}`. Needs the `kv`
//! capability (the counters) and `settings`.

use std::time::Duration;

use plugboard_pdk::reference::{OnUserBeforeLogin, OnUserLoginFailure};
use plugboard_pdk::serde_json::{self, Value};
use plugboard_pdk::{Plugin, Reply, kv};

struct IpBan;

/// The settings, with their defaults.
struct Rules {
    threshold: i64,
    window: Duration,
}

fn rules() -> Rules {
    let s: Value = plugboard_pdk::settings()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    Rules {
        threshold: s["threshold"].as_i64().unwrap_or(10).max(1),
        window: Duration::from_secs(s["window_secs"].as_u64().unwrap_or(3600).max(1)),
    }
}

fn key(ip: &impl std::fmt::Display) -> String {
    format!("fail:{ip}")
}

/// The failures counted for `ip` in its current window.
fn failures(ip: &impl std::fmt::Display) -> Result<i64, String> {
    let Some(v) = kv::get(&key(ip)).map_err(|e| format!("kv: {e:?}"))? else {
        return Ok(0);
    };
    Ok(String::from_utf8_lossy(&v).parse().unwrap_or(0))
}

impl Plugin for IpBan {
    type State = Value;

    fn call(&self, event: &str, state: Value) -> Result<Reply<Value>, String> {
        let rules = rules();
        match event {
            "on_user_login_failure" => {
                let s: OnUserLoginFailure =
                    serde_json::from_value(state.clone()).map_err(|e| e.to_string())?;
                let ip = s.ip.0;
                let n = kv::increment(&key(&ip), 1, Some(rules.window))
                    .map_err(|e| format!("kv: {e:?}"))?;
                if n == rules.threshold {
                    plugboard_pdk::log::warn(&format!(
                        "{ip} is banned from logging in: {n} failures in the window"
                    ));
                }
                Ok(Reply::Continue(state))
            }
            "on_user_before_login" => {
                let mut s: OnUserBeforeLogin =
                    serde_json::from_value(state.clone()).map_err(|e| e.to_string())?;
                let n = failures(&s.ip.0)?;
                if n >= rules.threshold {
                    s.output = Some(format!(
                        "Too many failed logins from {}; try again later.",
                        s.ip.0
                    ));
                    let halted = serde_json::to_value(s).map_err(|e| e.to_string())?;
                    return Ok(Reply::Halt(halted));
                }
                Ok(Reply::Continue(state))
            }
            other => Err(format!("ip-ban does not handle `{other}`")),
        }
    }
}

plugboard_pdk::export_plugin!(IpBan, IpBan);
