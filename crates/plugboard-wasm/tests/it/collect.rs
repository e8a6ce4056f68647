//! A typed guest collector (the PDK's `Collector`, `plugins/site-search`) on a collecting
//! reference event, beside a native one: each answer typed and attributed, a pass adds
//! nothing.

use plugboard_core::reference::{OnContentSearch, Payload, SearchHit};
use plugboard_core::{Collector, Context, Contribute, Event};
use plugboard_engine::{Engine, Registration};
use serde_json::json;

use crate::{add, host, load};

/// A native collector that always answers with one hit.
struct Pages;

impl Collector<OnContentSearch> for Pages {
    fn collect(&self, input: &Payload, _: &Context<'_>) -> Contribute<SearchHit> {
        let words = input.data["text"].as_str().unwrap_or_default();
        Contribute::Add(SearchHit::new(format!("Pages about {words}"), "/pages"))
    }
}

fn search(words: &str) -> Payload {
    serde_json::from_value(json!({ "data": { "text": words } })).unwrap()
}

#[test]
fn a_typed_wasm_collector_answers_beside_a_native_one() {
    let engine = Engine::new();
    engine
        .register_collector::<OnContentSearch, _>(Registration::new("pages").priority(1), Pages)
        .unwrap();
    engine.start("pages").unwrap();
    add(
        &engine,
        OnContentSearch::NAME,
        load(&host(), "site_search", "site-search"),
        Registration::new("site-search").priority(2),
    );
    let hook = engine.collector::<OnContentSearch>().unwrap();
    let found = hook.collect(search("Capabilities grant")).unwrap();
    let by: Vec<(&str, &str)> = found
        .results
        .iter()
        .map(|c| (&*c.plugin, c.output.title.as_str()))
        .collect();
    assert_eq!(
        by,
        [
            ("pages", "Pages about Capabilities grant"),
            ("site-search", "Capabilities")
        ]
    );
    let hit = &found.results[1].output;
    assert_eq!(hit.href, "/docs/capabilities");
    assert_eq!(hit.section.as_deref(), Some("docs"));
    assert_eq!(found.stopped_by, None);
    // Words it does not know: it passes, adding nothing.
    let found = hook.collect(search("zzzz")).unwrap();
    assert_eq!(found.results.len(), 1);
    assert_eq!(&*found.results[0].plugin, "pages");
}
