//! `events`, `events show` and `demo`.

use expect_test::expect_file;

use crate::{run, stdout};

fn plugboard(args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    run(home.path(), args)
}

#[test]
fn events_lists_the_catalogue() {
    // UPDATE_EXPECT=1 cargo test rewrites the snapshot.
    expect_file!["snapshots/events.txt"].assert_eq(&stdout(&plugboard(&["events"])));
}

#[test]
fn events_json_has_32_events_with_fields() {
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&plugboard(&["events", "--json"]))).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 32);
    let f = list
        .iter()
        .find(|e| e["name"] == "on_user_after_save_failure")
        .unwrap();
    assert_eq!(f["section"], "user");
    assert_eq!(
        f["fields"],
        serde_json::json!([
            "error",
            "ip",
            "endpoint",
            "status",
            "conn",
            "modifier_user",
            "extra"
        ])
    );
}

#[test]
fn a_collecting_event_shows_its_mode_and_both_schemas() {
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&plugboard(&["events", "--json"]))).unwrap();
    let search = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "on_content_search")
        .unwrap();
    assert_eq!(search["mode"], "collect");
    assert_eq!(search["output"]["title"], "SearchHit");
    let prepare = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "on_content_prepare")
        .unwrap();
    assert_eq!(prepare["mode"], "waterfall");
    let shown: serde_json::Value = serde_json::from_str(&stdout(&plugboard(&[
        "events",
        "show",
        "on_content_search",
    ])))
    .unwrap();
    assert_eq!(shown["mode"], "collect");
    assert_eq!(shown["input"]["title"], "Payload");
    assert!(shown["output"]["properties"]["href"].is_object(), "{shown}");
}

#[test]
fn events_show_prints_the_json_schema() {
    let schema: serde_json::Value = serde_json::from_str(&stdout(&plugboard(&[
        "events",
        "show",
        "on_user_after_save_failure",
    ])))
    .unwrap();
    assert_eq!(schema["title"], "OnUserAfterSaveFailure");
    let props = schema["properties"].as_object().unwrap();
    assert_eq!(props.len(), 7);
    assert_eq!(schema["properties"]["endpoint"]["$ref"], "#/$defs/Endpoint");
    let consts = |def: &str| -> Vec<String> {
        schema["$defs"][def]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["const"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(consts("Endpoint"), ["html", "api"]);
    assert_eq!(consts("SaveStatus"), ["added", "edited"]);
    assert_eq!(
        schema["required"],
        serde_json::json!(["error", "ip", "endpoint", "status", "conn", "modifier_user"])
    );
}

#[test]
fn events_show_unknown_is_a_clear_error() {
    let out = plugboard(&["events", "show", "on_nothing"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("no event named `on_nothing`; `plugboard events` lists them"),
        "{err}"
    );
}

#[test]
fn demo_runs_every_step_and_leaves_its_records() {
    let home = tempfile::tempdir().unwrap();
    let out = stdout(&run(home.path(), &["demo"]));
    assert!(home.path().join("plugboard.db").exists());
    // Running it again starts from a clean slate and prints the same story.
    let again = stdout(&run(home.path(), &["demo"]));
    assert_eq!(again.lines().count(), out.lines().count());
    let plugins = stdout(&run(home.path(), &["plugins"]));
    assert!(
        plugins.contains("broken           on_content_prepare             50  stopped"),
        "{plugins}"
    );
    for line in [
        "on_user_after_save_failure   audit (10) -> rate_guard (20, needs audit)",
        "\"block_ip\":true",
        "halted by captcha",
        "markdown: started -> stopped (operator: stop)",
        "toc: started -> held (dependency `markdown` is not active)",
        "on_content_prepare           (no plugin runs)",
        "toc: held -> restarted (dependencies active again)",
        "broken: started -> stopped (5 failures in a row)",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

plugboard::event! {
    /// Fires when a comment is posted, before it is stored.
    pub struct OnComment("on_comment", section = "content") {
        /// The comment's text.
        pub text: String,
        /// Who wrote it.
        pub author: String,
    }
}

/// An embedder's host declares its own typed event; `plugboard events` (another process)
/// lists it and `events show` prints its state's schema, from the database the host
/// recorded its catalogue in.
#[test]
fn events_describe_an_embedders_own_typed_events_from_its_database() {
    let home = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", home.path().join("host.db").display());
    let store = plugboard_store::Store::open(&url).unwrap();
    let engine = store.engine(plugboard::Engine::builder()).unwrap();
    engine.hook::<OnComment>().unwrap(); // declares it
    assert_eq!(store.publish_events(&engine).unwrap(), 33);
    drop(store);

    let list = stdout(&run(home.path(), &["--database", &url, "events"]));
    let line = list
        .lines()
        .find(|l| l.starts_with("on_comment"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        line.contains("content") && line.contains("text, author"),
        "{line}"
    );
    let schema: serde_json::Value = serde_json::from_str(&stdout(&run(
        home.path(),
        &["--database", &url, "events", "show", "on_comment"],
    )))
    .unwrap();
    assert_eq!(schema["properties"]["text"]["type"], "string", "{schema}");
    assert_eq!(
        schema["properties"]["author"]["description"],
        "Who wrote it."
    );
    // Without that database: the reference catalogue, and a clear miss.
    let out = run(home.path(), &["events", "show", "on_comment"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no event named `on_comment`"));
}
