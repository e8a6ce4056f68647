//! Safety net: a wrapper (contract 0.4) that runs around the rest of any event's chain.
//! When the rest fails it runs it again, up to `retries` times (its settings, `{"retries":
//! N}`; 2 by default), then falls back to the state it was given, marked with why; when
//! the rest succeeds it notes how many attempts it took. The state's `extra.wrap` asks it
//! for the other paths a wrapper has, so that the host's tests can drive them: `answer`
//! (halt in `before`, the rest never runs), `fail_before`, `fail_after`, and `garbage`
//! (a reply that is not the event's state).

use plugboard_pdk::serde_json::{Value, json};
use plugboard_pdk::{After, Outcome, Reply, Wrapper};

struct SafetyNet;

/// What `before` hands `after`: the input, and the attempts made so far.
#[derive(plugboard_pdk::serde::Serialize, plugboard_pdk::serde::Deserialize)]
#[serde(crate = "plugboard_pdk::serde")]
struct Token {
    input: Value,
    retries: u32,
}

fn retries() -> u32 {
    plugboard_pdk::settings()
        .and_then(|s| plugboard_pdk::serde_json::from_str::<Value>(&s).ok())
        .and_then(|s| s["retries"].as_u64())
        .map_or(2, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn asked(state: &Value) -> &str {
    state["extra"]["wrap"].as_str().unwrap_or("")
}

/// `state` with `extra[key] = value` (an `extra` that is not an object becomes one).
fn mark(mut state: Value, key: &str, value: Value) -> Value {
    if !state["extra"].is_object() {
        state["extra"] = json!({});
    }
    state["extra"][key] = value;
    state
}

impl Wrapper for SafetyNet {
    type State = Value;
    type Token = Token;

    fn before(&self, _event: &str, state: Value) -> Result<(Reply<Value>, Token), String> {
        let token = Token {
            input: state.clone(),
            retries: 0,
        };
        Ok(match asked(&state) {
            "fail_before" => return Err("asked to fail before the chain".into()),
            "answer" => (Reply::Halt(mark(state, "answered", json!(true))), token),
            _ => (Reply::Continue(mark(state, "wrapped", json!(true))), token),
        })
    }

    fn after(
        &self,
        _event: &str,
        outcome: Outcome<Value>,
        token: &mut Token,
    ) -> Result<After<Value>, String> {
        match asked(&token.input) {
            "fail_after" => return Err("asked to fail after the chain".into()),
            "garbage" => return Ok(After::Continue(json!("not a state"))),
            _ => {}
        }
        Ok(match outcome {
            Outcome::Continued(state) => {
                After::Continue(mark(state, "attempts", json!(token.retries + 1)))
            }
            Outcome::Halted(_) => After::Keep,
            Outcome::Failed(_) if token.retries < retries() => {
                token.retries += 1;
                After::Retry(mark(token.input.clone(), "retry", json!(token.retries)))
            }
            Outcome::Failed(why) => {
                After::Continue(mark(token.input.clone(), "fallback", json!(why)))
            }
        })
    }
}

plugboard_pdk::export_wrapper!(SafetyNet, SafetyNet);
