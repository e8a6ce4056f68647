//! Validator: on content events, halts the chain when `data.title` is missing or empty,
//! and says why in `extra.rejected`.

use plugboard_pdk::reference::Payload;
use plugboard_pdk::{Plugin, Reply};

struct Validator;

impl Plugin for Validator {
    type State = Payload;

    fn call(&self, _event: &str, mut s: Payload) -> Result<Reply<Payload>, String> {
        let title = s
            .data
            .get("title")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        if title.trim().is_empty() {
            s.extra
                .insert("rejected".into(), "a title is required".into());
            return Ok(Reply::Halt(s));
        }
        s.extra.insert("validated".into(), true.into());
        Ok(Reply::Continue(s))
    }
}

plugboard_pdk::export_plugin!(Validator, Validator);
