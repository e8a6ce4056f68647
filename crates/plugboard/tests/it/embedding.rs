//! A host embedding Plugboard through the facade only.

use plugboard::prelude::*;
use plugboard::reference::{OnUserAfterSave, Payload};
use plugboard::serde_json::json;

plugboard::event! {
    /// Fires when an order is placed (a host's own event).
    pub struct OnOrderPlaced("on_order_placed", section = "shop") {
        /// Order total in cents.
        pub total: u64,
        /// Discount applied, in cents.
        pub discount: u64,
    }
}

struct TenPercentOff;

impl Plugin<OnOrderPlaced> for TenPercentOff {
    fn call(&self, mut s: OnOrderPlaced, _: &Context<'_>) -> Reply<OnOrderPlaced> {
        s.discount = s.total / 10;
        Reply::Continue(s)
    }
}

#[test]
fn a_host_event_is_typed_and_callable_by_name_with_its_schema() {
    let engine = Engine::new();
    engine
        .register(Registration::new("ten_percent"), TenPercentOff)
        .unwrap();
    engine.start("ten_percent").unwrap();
    let out = engine
        .call::<OnOrderPlaced>(OnOrderPlaced {
            total: 5000,
            discount: 0,
        })
        .unwrap();
    assert_eq!(out.discount, 500);
    let out = engine
        .call_json(
            "on_order_placed",
            json!({"total": 100, "discount": 0}),
            &CallOptions::default(),
        )
        .unwrap();
    assert_eq!(out, json!({"total": 100, "discount": 10}));
    let info = engine.event("on_order_placed").unwrap();
    assert_eq!(info.section, "shop");
    assert_eq!(
        info.doc,
        "Fires when an order is placed (a host's own event)."
    );
    assert_eq!(info.fields(), ["total", "discount"]);
    assert_eq!(info.schema["properties"]["total"]["type"], "integer");
    // 32 reference events plus the host's own.
    assert_eq!(engine.events().len(), 33);
}

#[test]
fn a_type_mismatch_between_plugin_and_event_is_refused() {
    let engine = Engine::new();
    plugboard::event! {
        /// Claims the name of a reference event with another state.
        pub struct Impostor("on_user_after_save", section = "user") {
            /// Anything.
            pub x: u8,
        }
    }
    let err = engine.hook::<Impostor>().map(|_| ()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("event `on_user_after_save` is already declared with state type"),
        "{err}"
    );
    // The real one is fine, and placeholder events take the generic payload.
    engine.hook::<OnUserAfterSave>().unwrap();
    let out = engine
        .call::<plugboard::reference::OnContentPrepare>(Payload::default())
        .unwrap();
    assert!(out.data.is_empty());
}
