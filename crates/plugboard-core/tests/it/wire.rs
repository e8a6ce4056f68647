//! The binary layout: every reference state that opts in survives it unchanged, and the
//! fingerprints tell layouts apart.

use plugboard_core::reference::*;
use plugboard_core::wire::{Wire, fingerprint};
use plugboard_core::{Event, Json};
use serde_json::{Value, json};

/// Encodes `sample` (given as JSON) in both wires and checks each decodes to the same state.
fn survives<E: Event>(sample: Value) {
    assert!(E::BINARY, "{} should opt into the binary layout", E::NAME);
    let state: E::State = serde_json::from_value(sample).unwrap();
    for wire in [Wire::Json, Wire::Binary] {
        let bytes = wire.encode(&state).unwrap();
        let back: E::State = wire.decode(&bytes).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&state).unwrap(),
            "{} through {wire:?}",
            E::NAME
        );
    }
    let json = Wire::Json.encode(&state).unwrap();
    let binary = Wire::Binary.encode(&state).unwrap();
    assert!(
        binary.len() < json.len(),
        "{}: binary {} B vs JSON {} B",
        E::NAME,
        binary.len(),
        json.len()
    );
}

fn conn() -> Value {
    json!({"method": "POST", "path": "/signup", "headers": {"user-agent": "t"}, "peer": "10.0.0.1:443"})
}

#[test]
fn reference_states_survive_the_binary_layout() {
    let extra = json!({"nested": {"list": [1, 2.5, "x", null, true]}, "n": -3});
    survives::<OnUserAfterSaveFailure>(json!({
        "error": {"code": "taken", "message": "no", "fields": {"email": ["is taken"]}, "details": {"k": 1}},
        "ip": "2001:db8::1", "endpoint": "api", "status": "edited", "conn": conn(),
        "modifier_user": "7e5b0c5e-4d59-4c3c-9d4e-2c0b6d7f3a10", "extra": extra,
    }));
    survives::<OnUserAfterSaveFailure>(json!({
        "error": {"code": "c", "message": "m"}, "ip": [127, 0, 0, 1], "endpoint": "html",
        "status": "added", "conn": {}, "modifier_user": "self",
    }));
    survives::<OnUserBeforeLogin>(json!({
        "ip": "1.2.3.4", "assigns": {"a": [1]}, "output": "<p>hi</p>", "input": {"user": "ann"},
    }));
    survives::<OnUserBeforeLogin>(json!({"ip": "1.2.3.4"}));
    survives::<OnRouter>(json!({
        "action": "post", "path": "/x", "endpoint": "E", "type": "admin", "plug_opts": [{"a": 1}, "b"],
    }));
    survives::<OnUserAfterLogin>(json!({
        "user_info": {"id": 1, "name": "ann"}, "ip": "1.2.3.4", "endpoint": "html", "conn": conn(),
        "type": "username", "extra": [1, 2],
    }));
    survives::<OnUserAfterDeleteRole>(json!({
        "role_id": "7e5b0c5e-4d59-4c3c-9d4e-2c0b6d7f3a10", "ip": "1.2.3.4", "endpoint": "api", "conn": conn(),
    }));
}

#[test]
fn binary_layout_rejects_truncated_and_trailing_bytes() {
    let state: OnUserBeforeLogin =
        serde_json::from_value(json!({"ip": "1.2.3.4", "output": "x"})).unwrap();
    let mut bytes = Wire::Binary.encode(&state).unwrap();
    assert!(
        Wire::Binary
            .decode::<OnUserBeforeLogin>(&bytes[..bytes.len() - 1])
            .is_err()
    );
    bytes.push(0);
    let err = Wire::Binary
        .decode::<OnUserBeforeLogin>(&bytes)
        .unwrap_err();
    assert_eq!(err.to_string(), "1 trailing bytes after the state");
}

#[test]
fn fingerprints_tell_layouts_apart() {
    let a = OnUserAfterSaveFailure::binary_layout().unwrap();
    assert_eq!(Some(a), OnUserAfterSaveFailure::binary_layout());
    assert_ne!(Some(a), OnUserAuthorisationFailure::binary_layout());
    assert_ne!(fingerprint(&json!({"a": 1})), fingerprint(&json!({"a": 2})));
    // Free JSON and marker events whose state is a shared payload stay JSON-only.
    assert_eq!(Json::binary_layout(), None);
    assert_eq!(OnContentPrepare::binary_layout(), None);
}

#[test]
fn free_json_is_plain_json_in_json_and_a_tree_in_binary() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct S {
        #[serde(with = "plugboard_core::wire::free_json")]
        v: Value,
        #[serde(with = "plugboard_core::wire::free_json")]
        m: serde_json::Map<String, Value>,
        #[serde(with = "plugboard_core::wire::free_json")]
        l: Vec<Value>,
    }
    let tricky = json!({
        "null": null, "t": true, "u": u64::MAX, "i": i64::MIN, "f": -1.5e300,
        "s": "é\"\n", "list": [[], {}, [1, [2, [3]]]], "order": {"z": 1, "a": 2}
    });
    let s = S {
        v: tricky.clone(),
        m: tricky.as_object().unwrap().clone(),
        l: vec![tricky.clone(), Value::Null],
    };
    assert_eq!(
        serde_json::to_value(&s).unwrap(),
        json!({"v": tricky, "m": tricky, "l": [tricky, null]})
    );
    let bytes = Wire::Binary.encode(&s).unwrap();
    let back: S = Wire::Binary.decode(&bytes).unwrap();
    assert_eq!(back, s);
    // Key order survives (maps keep insertion order).
    let keys: Vec<_> = back.v["order"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["z", "a"]);
    // An unknown tag is an error, not a guess.
    let mut bad = Wire::Binary
        .encode(&S {
            v: Value::Null,
            m: Default::default(),
            l: vec![],
        })
        .unwrap();
    bad[0] = 9;
    assert!(Wire::Binary.decode::<S>(&bad).is_err());
}

/// Decoding in place gives exactly what a fresh decode gives, whatever the place held
/// before (longer strings, more map entries, a host request object), on both wires.
#[test]
fn decoding_in_place_leaves_nothing_of_the_old_state() {
    use plugboard_core::wire::DecodeInPlace;
    use std::sync::Arc;
    let old = || OnUserAfterSaveFailure {
        error: ErrorPayload::new("conflict", "an old and much longer message".repeat(8))
            .field("email", "is taken")
            .field("name", "is blank"),
        ip: "2001:db8::1".parse().unwrap(),
        endpoint: Endpoint::Html,
        status: SaveStatus::Added,
        conn: Conn::new("PATCH", "/a/much/longer/path")
            .header("X-Old", "1")
            .header("Accept", "*/*")
            .with_native(Arc::new(7_u32)),
        modifier_user: ModifierUser::SelfUser,
        extra: json!({ "old": { "deep": [1, 2] } }),
    };
    let new: OnUserAfterSaveFailure = serde_json::from_value(json!({
        "error": { "code": "x", "message": "short" },
        "ip": "127.0.0.1", "endpoint": "api", "status": "added",
        "conn": { "method": "GET", "path": "/" },
        "modifier_user": "self", "extra": null
    }))
    .unwrap();
    for wire in [Wire::Json, Wire::Binary] {
        let bytes = wire.encode(&new).unwrap();
        let mut place = old();
        wire.decode_into(&bytes, &mut place).unwrap();
        place.reset_skipped();
        assert_eq!(
            serde_json::to_value(&place).unwrap(),
            serde_json::to_value(&new).unwrap(),
            "{wire:?}"
        );
        assert!(place.conn.native::<u32>().is_none(), "{wire:?}");
        // Trailing bytes are refused in place too.
        let mut longer = bytes.clone();
        longer.extend_from_slice(if wire == Wire::Json { b" 1" } else { b"\x01" });
        assert!(wire.decode_into(&longer, &mut old()).is_err(), "{wire:?}");
    }
}
