//! Hostile: misbehaves on purpose, chosen by the event it is called for. The host's tests
//! use it to show that each kind of misbehaviour is contained. It also refuses to be
//! stopped, deleted or unregistered, which an operator overrides. It imports no capability
//! beyond the `host` interface (so the tests package it with any manifest); reaching out
//! (HTTP, emits) is `plugins/fetch` and `plugins/ping`.

use plugboard_pdk::serde_json::Value;
use plugboard_pdk::{Plugin, Reply};

struct Hostile;

#[inline(never)]
fn recurse(n: u64) -> u64 {
    // Not a tail call: every level keeps a frame.
    if n == u64::MAX {
        0
    } else {
        recurse(n + 1).wrapping_add(n) | 1
    }
}

#[inline(never)]
fn recurse_deep_frames(n: u64) -> u64 {
    // Each level keeps a 1 KiB buffer whose address escapes, so it lives on the shadow
    // stack in linear memory: the overflow runs off the bottom of memory, not the
    // engine's native stack.
    let mut frame = [0u8; 1024];
    frame[(n % 1024) as usize] = n as u8;
    let frame = std::hint::black_box(&mut frame);
    if n == u64::MAX {
        0
    } else {
        recurse_deep_frames(n + 1).wrapping_add(u64::from(frame[7]))
    }
}

impl Plugin for Hostile {
    type State = Value;

    fn call(&self, event: &str, state: Value) -> Result<Reply<Value>, String> {
        match event {
            "on_hostile_loop" => loop {
                std::hint::black_box(());
            },
            "on_hostile_memory" => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hog);
                }
            }
            "on_hostile_trap" => {
                let v: Vec<u8> = std::hint::black_box(Vec::new());
                Ok(Reply::Continue(Value::from(v[3])))
            }
            "on_hostile_recursion" => Ok(Reply::Continue(Value::from(recurse(
                std::hint::black_box(0),
            )))),
            "on_hostile_shadow_stack" => Ok(Reply::Continue(Value::from(recurse_deep_frames(
                std::hint::black_box(0),
            )))),
            "on_hostile_invalid" => Ok(Reply::Continue(Value::String(
                "not the event's state".into(),
            ))),
            "on_hostile_huge" => Ok(Reply::Continue(Value::String("x".repeat(2 << 20)))),
            "on_hostile_error" => Err("the plugin says no".into()),
            "on_hostile_chatty" => {
                // A flood of log lines, then a huge error.
                for i in 0..1000 {
                    plugboard_pdk::log::info(&format!("line {i}"));
                }
                Err("no".repeat(1 << 20))
            }
            "on_hostile_sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(Reply::Continue(state))
            }
            "on_hostile_spin" => {
                // Busy for 300 ms by the host's clock: long enough for calls to overlap even
                // on a loaded machine.
                let until = plugboard_pdk::now_ms() + 300;
                while plugboard_pdk::now_ms() < until {}
                Ok(Reply::Continue(state))
            }
            "on_hostile_wasi_random" => {
                // The standard library's hash seeds come from WASI random: governed by the
                // `random` capability (without it, a fixed sequence).
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write(b"plugboard");
                Ok(Reply::Continue(
                    plugboard_pdk::serde_json::json!({ "hash": h.finish().to_string() }),
                ))
            }
            "on_hostile_wasi_clock" => {
                // Through WASI, not the `now-ms` import: governed by the `clock` capability
                // all the same.
                let since = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or_default();
                Ok(Reply::Continue(
                    plugboard_pdk::serde_json::json!({ "ms": since }),
                ))
            }
            _ => Ok(Reply::Continue(state)),
        }
    }

    /// Refuses to be taken out: the host must stop, delete and unregister it anyway.
    fn lifecycle(&self, op: &str, _record: &plugboard_pdk::PluginRecord) -> Result<(), String> {
        match op {
            "stop" | "delete" | "unregister" => Err(format!("hostile refuses to {op}")),
            _ => Ok(()),
        }
    }
}

plugboard_pdk::export_plugin!(Hostile, Hostile);
