//! What the fuzz targets share: the reference events an input's first byte selects, sample
//! states (seeds, and the "previous" states that in-place decoding writes over), and the
//! checks a decoded state must pass. `fuzz_targets/` holds the targets; `examples/seeds.rs`
//! writes the seed corpora.

use std::sync::OnceLock;

use plugboard_core::reference::*;
use plugboard_core::wire::{DecodeInPlace, Wire};
use plugboard_core::{Context, Event, Reply, from_fn};
use plugboard_engine::{CallError, CallOptions, Engine, Registration};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Calls `$m!` with the reference events that opt into the binary layout, in the order an
/// input's first byte selects them.
macro_rules! binary_events {
    ($m:ident) => {
        $m!(
            OnChangeDependency,
            OnRouter,
            OnUserAfterDeleteRole,
            OnUserAfterSaveRole,
            OnUserAfterLogin,
            OnUserAfterLogout,
            OnUserAfterSave,
            OnUserAfterSaveFailure,
            OnUserAuthorisation,
            OnUserAuthorisationFailure,
            OnUserBeforeLogin,
            OnUserLoginFailure
        )
    };
}

/// Calls `$m!` with the placeholder reference events (state: [`Payload`], JSON only).
macro_rules! payload_events {
    ($m:ident) => {
        $m!(
            OnCheckAnswer,
            OnDisplay,
            OnInit,
            OnPrivacyCollectAdminCapabilities,
            OnUserAfterDelete,
            OnUserBeforeSave,
            OnUserLogin,
            OnContentPrepare,
            OnContentAfterTitle,
            OnContentBeforeDisplay,
            OnContentAfterDisplay,
            OnContentBeforeSave,
            OnContentAfterSave,
            OnContentPrepareForm,
            OnContentPrepareData,
            OnContentBeforeDelete,
            OnContentAfterDelete,
            OnContentChangeState,
            OnContentSearch,
            OnContentSearchAreas
        )
    };
}

macro_rules! names {
    ($($ty:ty),*) => { &[$(<$ty as Event>::NAME),*] };
}

/// The names of the binary reference events, as an input's first byte selects them.
pub const BINARY_EVENTS: &[&str] = binary_events!(names);
/// The names of the placeholder reference events (after the binary ones in [`ALL_EVENTS`]).
pub const PAYLOAD_EVENTS: &[&str] = payload_events!(names);

/// Every reference event's name: the binary ones, then the placeholders.
pub fn all_events() -> Vec<&'static str> {
    BINARY_EVENTS
        .iter()
        .chain(PAYLOAD_EVENTS)
        .copied()
        .collect()
}

/// A state as JSON, to compare states (the reference states do not implement `PartialEq`).
pub fn as_json<T: Serialize>(state: &T) -> Value {
    serde_json::to_value(state).expect("a decoded state serialises to JSON")
}

fn conn() -> Value {
    json!({"method": "POST", "path": "/signup", "headers": {"user-agent": "t", "x-a": "b"}, "peer": "10.0.0.1:443"})
}

/// Sample states of an event, as JSON: a full one and a minimal one.
pub fn samples(event: &str) -> Vec<Value> {
    let extra = json!({"nested": {"list": [1, 2.5, "x", null, true, -7, 18446744073709551615u64]}, "n": -3});
    let error = json!({"code": "taken", "message": "no", "fields": {"email": ["is taken", "twice"]}, "details": {"k": [1, {"a": null}]}});
    let user = "7e5b0c5e-4d59-4c3c-9d4e-2c0b6d7f3a10";
    match event {
        "on_change_dependency" => vec![
            json!({"app": "audit", "status": "force_update"}),
            json!({"app": "", "status": "add"}),
        ],
        "on_router" => vec![
            json!({"action": "post", "path": "/x", "endpoint": "E", "type": "admin", "plug_opts": [{"a": 1}, "b", 1.5]}),
            json!({"action": "live", "path": "", "endpoint": ""}),
        ],
        "on_user_after_delete_role" | "on_user_after_save_role" => vec![
            json!({"role_id": user, "ip": "2001:db8::1", "endpoint": "api", "conn": conn()}),
            json!({"role_id": user, "ip": [127, 0, 0, 1], "endpoint": "html", "conn": {}}),
        ],
        "on_user_after_login" => vec![
            json!({"user_info": {"id": 1, "name": "ann"}, "ip": "1.2.3.4", "endpoint": "html", "conn": conn(), "type": "username", "extra": extra}),
            json!({"user_info": {}, "ip": [0, 0, 0, 0, 0, 0, 0, 1], "endpoint": "api", "conn": {}, "type": "email"}),
        ],
        "on_user_after_logout" => vec![
            json!({"user_id": user, "ip": "1.2.3.4", "endpoint": "html", "conn": conn(), "extra": extra}),
            json!({"user_id": user, "ip": "::", "endpoint": "api", "conn": {}}),
        ],
        "on_user_after_save" => vec![
            json!({"user_info": {"email": "a@b.c"}, "ip": "1.2.3.4", "endpoint": "html", "status": "added", "conn": conn(), "modifier_user": user, "extra": extra}),
            json!({"user_info": {}, "ip": "::1", "endpoint": "api", "status": "edited", "conn": {}, "modifier_user": "self"}),
        ],
        "on_user_after_save_failure" => vec![
            json!({"error": error, "ip": "2001:db8::1", "endpoint": "api", "status": "edited", "conn": conn(), "modifier_user": user, "extra": extra}),
            json!({"error": {"code": "c", "message": "m"}, "ip": [127, 0, 0, 1], "endpoint": "html", "status": "added", "conn": {}, "modifier_user": "self"}),
        ],
        "on_user_authorisation" => vec![
            json!({"conn": conn(), "user_id": user, "ip": "1.2.3.4", "endpoint": "html", "module": "users", "operation": "delete", "extra": extra}),
            json!({"conn": {}, "user_id": user, "ip": "::1", "endpoint": "api", "module": "", "operation": ""}),
        ],
        "on_user_authorisation_failure" => vec![
            json!({"conn": conn(), "ip": "1.2.3.4", "endpoint": "html", "error": error, "module": "users", "operation": "delete", "extra": extra}),
            json!({"conn": {}, "ip": "::1", "endpoint": "api", "error": {"code": "", "message": ""}, "module": "", "operation": ""}),
        ],
        "on_user_before_login" => vec![
            json!({"ip": "1.2.3.4", "assigns": {"a": [1], "b": {"c": "d"}}, "output": "<p>hi</p>", "input": {"user": "ann"}}),
            json!({"ip": "1.2.3.4"}),
        ],
        "on_user_login_failure" => vec![
            json!({"conn": conn(), "ip": "1.2.3.4", "endpoint": "html", "error": error, "extra": extra}),
            json!({"conn": {}, "ip": "::1", "endpoint": "api", "error": {"code": "c", "message": "m"}}),
        ],
        _ => vec![
            json!({"data": {"title": "Hello", "tags": ["a", "b"], "n": 1.25}, "extra": {"stamped": true}}),
            json!({}),
        ],
    }
}

/// Decodes `bytes` in `wire` as a `S`, and if they decode checks that:
/// - encoding the state and decoding it again gives the same state, and a second encoding
///   the same bytes (decode → encode → decode is a fixpoint);
/// - the state survives the `other` wire, when there is one (a state the host accepted in
///   one wire must cross the sandbox in the other: the wire is chosen per plugin);
/// - decoding in place into another state (as the PDK does into the previous call's state)
///   gives the same state as decoding afresh, and fails when it fails.
///
/// `previous` are the states in-place decoding starts from (none: not checked).
pub fn check_state<S>(wire: Wire, other: Option<Wire>, bytes: &[u8], previous: &[S])
where
    S: DecodeInPlace + Serialize + Clone,
{
    let fresh = wire.decode::<S>(bytes);
    for prev in previous {
        let mut place = prev.clone();
        let in_place = wire.decode_into(bytes, &mut place);
        match (&fresh, in_place) {
            (Ok(state), Ok(())) => {
                place.reset_skipped();
                assert_eq!(
                    as_json(&place),
                    as_json(state),
                    "{wire:?}: decoding in place differs from decoding afresh"
                );
            }
            (Err(_), Err(_)) => {}
            (Ok(_), Err(e)) => panic!("{wire:?}: decodes afresh but not in place: {e}"),
            (Err(e), Ok(())) => panic!("{wire:?}: decodes in place but not afresh: {e}"),
        }
    }
    let Ok(state) = fresh else {
        return;
    };
    let json = as_json(&state);
    let once = wire.encode(&state).expect("a decoded state encodes");
    let again: S = wire
        .decode(&once)
        .unwrap_or_else(|e| panic!("{wire:?}: a re-encoded state does not decode: {e}"));
    assert_eq!(
        as_json(&again),
        json,
        "{wire:?}: decode → encode → decode changed the state"
    );
    let twice = wire.encode(&again).expect("a decoded state encodes");
    assert_eq!(once, twice, "{wire:?}: encoding is not a fixpoint");
    if let Some(other) = other {
        let bytes = other.encode(&state).expect("a decoded state encodes");
        match other.decode::<S>(&bytes) {
            Ok(across) => assert_eq!(
                as_json(&across),
                json,
                "{wire:?} → {other:?} changed the state"
            ),
            // Both layouts refuse nesting past 128 levels, but serde_json also counts the
            // state's own levels above a free JSON field: free JSON within a level or three
            // of the limit in the binary layout is too deep as JSON. The other way holds.
            Err(e) if other == Wire::Json && e.to_string().contains("recursion limit") => {}
            Err(e) => panic!("a state decoded from {wire:?} does not decode from {other:?}: {e}"),
        }
    }
}

/// [`check_state`] for event `E`, with its samples as the previous states.
pub fn check_event<E>(wire: Wire, other: Option<Wire>, bytes: &[u8])
where
    E: Event,
    E::State: DecodeInPlace,
{
    let previous: Vec<E::State> = samples(E::NAME)
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("a sample decodes"))
        .collect();
    check_state::<E::State>(wire, other, bytes, &previous);
}

/// The JSON checks of a placeholder event's state, which decodes neither in place nor in
/// the binary layout.
pub fn check_payload(bytes: &[u8]) {
    let Ok(state) = Wire::Json.decode::<Payload>(bytes) else {
        return;
    };
    let once = Wire::Json.encode(&state).expect("a decoded state encodes");
    let again: Payload = Wire::Json
        .decode(&once)
        .unwrap_or_else(|e| panic!("a re-encoded state does not decode: {e}"));
    assert_eq!(again, state, "decode → encode → decode changed the state");
    assert_eq!(once, Wire::Json.encode(&again).expect("encodes"));
}

/// Runs `check_event::<E>(wire, other, bytes)` for the binary event `index` selects.
pub fn check_binary_event(index: u8, wire: Wire, other: Option<Wire>, bytes: &[u8]) {
    macro_rules! table {
        ($($ty:ty),*) => { &[$(check_event::<$ty>),*] };
    }
    let all: &[fn(Wire, Option<Wire>, &[u8])] = binary_events!(table);
    all[usize::from(index) % all.len()](wire, other, bytes)
}

/// An engine with every reference event declared and, on each, a started JSON plugin that
/// replies the state it was given: each call by name decodes the JSON into the typed state,
/// bridges it to JSON and back around the plugin, and encodes the result.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        // The echo on a collecting event fails on every input that is not a contribution:
        // it must never be stopped for it, or later runs would meet an empty chain.
        let engine = Engine::builder().failure_threshold(u32::MAX).build();
        for (i, event) in all_events().into_iter().enumerate() {
            let name = format!("fuzz_echo_{i}");
            engine
                .register_json(
                    event,
                    Registration::new(name.clone()),
                    from_fn(|s: Value, _cx: &Context<'_>| Reply::Continue(s)),
                )
                .expect("the echo plugin registers");
            engine.start(name.as_str()).expect("the echo plugin starts");
        }
        engine
    })
}

/// The call's options the fuzz input's selector picks: bit 0 `return_input`, bit 1 the
/// state's first two keys `private`.
fn call_options(state: &Value, options: u8) -> CallOptions {
    CallOptions {
        return_input: options & 1 != 0,
        private: match (options & 2 != 0, state.as_object()) {
            (true, Some(fields)) => fields.keys().take(2).cloned().collect(),
            _ => Vec::new(),
        },
        ..CallOptions::default()
    }
}

/// A call by name as the admin API makes it (`POST /api/events/{name}/call`): `state`
/// through [`engine`]'s `trace_json`. Checks that the call fails with `InvalidState`
/// exactly when the state does not decode into the event's type `S`, and otherwise
/// returns the decoded state (its JSON), or the input (`return_input`), with the `private`
/// keys put back from the input.
pub fn check_call<S: DeserializeOwned + Serialize>(event: &str, state: &Value, options: u8) {
    let opts = call_options(state, options);
    let typed = S::deserialize(state);
    let trace = engine().trace_json(event, state.clone(), &opts);
    match (typed, trace.result) {
        (Ok(typed), Ok(out)) => {
            if opts.return_input {
                assert_eq!(&out, state, "return_input did not return the input");
                return;
            }
            let mut expected = as_json(&typed);
            if let (Value::Object(expected), Value::Object(input)) = (&mut expected, state) {
                for key in &opts.private {
                    match input.get(key) {
                        Some(v) => expected.insert(key.clone(), v.clone()),
                        None => expected.remove(key),
                    };
                }
            }
            assert_eq!(out, expected, "the call changed the state");
            assert_eq!(trace.steps.len(), 1, "the echo plugin did not run once");
        }
        (Err(_), Err(CallError::InvalidState { .. })) => {}
        (Ok(_), Err(e)) => panic!("a state that decodes was refused: {e}"),
        (Err(e), Ok(_)) => panic!("a state that does not decode was accepted: {e}"),
        (Err(_), Err(e)) => panic!("an invalid state gave another error: {e}"),
    }
}

/// [`check_call`] for a collecting event whose contributions are `O`: [`engine`]'s echo
/// plugin answers with the input itself, so the call gathers the input as its one
/// contribution when it is one (none when it is `null`), fails on the plugin's account
/// (`invalid_reply`) when it is not, and refuses an input that is not the event's state.
pub fn check_collect<S: DeserializeOwned, O: DeserializeOwned + Serialize>(
    event: &str,
    state: &Value,
    options: u8,
) {
    // Nothing of the input can change: `private` has nothing to protect, and is ignored.
    let opts = call_options(state, options);
    let typed = S::deserialize(state);
    let answer = serde_json::from_value::<Option<O>>(state.clone());
    let trace = engine().trace_json(event, state.clone(), &opts);
    let echo = trace.steps.first().map(|s| s.plugin.clone());
    match (typed, trace.result) {
        (Ok(_), Ok(out)) => {
            if opts.return_input {
                assert_eq!(&out, state, "return_input did not return the input");
                return;
            }
            let results = match answer {
                Ok(Some(o)) => serde_json::json!([{ "plugin": echo, "output": as_json(&o) }]),
                Ok(None) => serde_json::json!([]),
                Err(e) => panic!("a call gathered an answer that is not a contribution: {e}"),
            };
            assert_eq!(
                out,
                serde_json::json!({ "results": results, "stopped_by": null }),
                "the call gathered something else"
            );
        }
        (Ok(_), Err(CallError::PluginFailed { failure, .. })) => {
            assert_eq!(failure.kind, plugboard_engine::FailureKind::InvalidReply);
            assert!(
                answer.is_err(),
                "a valid contribution was refused: {failure:?}"
            );
        }
        (Err(_), Err(CallError::InvalidState { .. })) => {}
        (Ok(_), Err(e)) => panic!("an input that decodes was refused: {e}"),
        (Err(e), Ok(_)) => panic!("an input that does not decode was accepted: {e}"),
        (Err(_), Err(e)) => panic!("an invalid input gave another error: {e}"),
    }
}

/// [`check_call`] for the reference event `index` selects (binary events first).
pub fn check_call_event(index: u8, state: &Value, options: u8) {
    macro_rules! table {
        ($($ty:ty),*) => { &[$(check_call_typed::<$ty>),*] };
    }
    fn check_call_typed<E: Event>(state: &Value, options: u8) {
        use plugboard_core::reference::{SearchArea, SearchHit};
        // The search events collect: their plugins answer with contributions.
        match E::NAME {
            "on_content_search" => check_collect::<E::State, SearchHit>(E::NAME, state, options),
            "on_content_search_areas" => {
                check_collect::<E::State, SearchArea>(E::NAME, state, options)
            }
            _ => check_call::<E::State>(E::NAME, state, options),
        }
    }
    let binary: &[fn(&Value, u8)] = binary_events!(table);
    let payload: &[fn(&Value, u8)] = payload_events!(table);
    let all: Vec<_> = binary.iter().chain(payload).collect();
    all[usize::from(index) % all.len()](state, options)
}

/// The key the signed seed packages are signed with (the archive target trusts it in
/// half of its runs, so that signature checks are reached).
pub fn seed_key() -> plugboard_package::SigningKey {
    plugboard_package::SigningKey::from_bytes(&[7; 32])
}
