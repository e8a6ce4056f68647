//! Site search: answers `on_content_search`, a collecting event. Every plugin of a
//! collecting event is given the same input (here the search, `data.text`) and answers
//! with its contribution instead of a state: this one, a typed collector, adds the first
//! documentation page whose title or text holds every word searched for, as a search
//! hit, or passes when none does.

use plugboard_pdk::reference::{Payload, SearchHit};
use plugboard_pdk::{Collector, Contribute};

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

impl Collector for SiteSearch {
    type Input = Payload;
    type Output = SearchHit;

    fn collect(&self, _event: &str, input: Payload) -> Result<Contribute<SearchHit>, String> {
        let text = input
            .data
            .get("text")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_lowercase();
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() {
            return Ok(Contribute::Pass);
        }
        let found = PAGES.iter().find(|(title, _, body)| {
            let page = format!("{title} {body}").to_lowercase();
            words.iter().all(|w| page.contains(w))
        });
        Ok(match found {
            Some((title, href, body)) => {
                let mut hit = SearchHit::new(*title, *href).text(*body);
                hit.section = Some("docs".into());
                Contribute::Add(hit)
            }
            None => Contribute::Pass,
        })
    }
}

plugboard_pdk::export_collector!(SiteSearch, SiteSearch);
