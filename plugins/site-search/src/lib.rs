//! Site search: answers `on_content_search`, a collecting event. Every plugin of a
//! collecting event is given the same input (here the search, `data.text`) and replies
//! its contribution instead of a state: this one replies the first documentation page
//! whose title or text holds every word searched for, as a search hit (`title`, `href`,
//! `text`, `section`), or `null` when none does.

use plugboard_pdk::serde_json::{Value, json};
use plugboard_pdk::{Plugin, Reply};

/// The pages this plugin knows: (title, path, text).
const PAGES: &[(&str, &str, &str)] = &[
    (
        "Writing a plugin",
        "/docs/writing",
        "A plugin takes an event's state and replies continue or halt; collectors answer a collecting event.",
    ),
    (
        "Capabilities",
        "/docs/capabilities",
        "A package asks for kv, http, emit, log, settings or clock; an operator grants them.",
    ),
    (
        "Upgrading and rolling back",
        "/docs/upgrades",
        "Install a newer version over a running host; roll back to the previous one.",
    ),
    (
        "Search events",
        "/docs/search",
        "on_content_search collects every plugin's hits for the words searched for.",
    ),
];

struct SiteSearch;

impl Plugin for SiteSearch {
    type State = Value;

    fn call(&self, _event: &str, input: Value) -> Result<Reply<Value>, String> {
        let text = input["data"]["text"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() {
            return Ok(Reply::Continue(Value::Null));
        }
        let found = PAGES.iter().find(|(title, _, body)| {
            let page = format!("{title} {body}").to_lowercase();
            words.iter().all(|w| page.contains(w))
        });
        Ok(Reply::Continue(match found {
            Some((title, href, body)) => {
                json!({ "title": title, "href": href, "text": body, "section": "docs" })
            }
            None => Value::Null,
        }))
    }
}

plugboard_pdk::export_plugin!(SiteSearch, SiteSearch);
