//! Settings: CRUD, typed reads, the cache, notifications, validation.

use plugboard_store::{SettingChange, Store, StoreError};
use serde::Deserialize;
use serde_json::json;

use crate::each_backend;

#[derive(Debug, Deserialize, PartialEq)]
struct Captcha {
    provider: String,
    threshold: f64,
}

#[test]
fn settings_round_trip_typed_and_notify() {
    each_backend(|backend, url| {
        let store = Store::open(url).unwrap();
        let settings = store.settings();
        let mut changes = settings.subscribe();
        assert_eq!(settings.get("captcha").unwrap(), None, "{backend:?}");
        settings
            .set("captcha", json!({"provider": "hcaptcha", "threshold": 0.5}))
            .unwrap();
        assert_eq!(
            changes.try_recv().unwrap(),
            SettingChange::Set("captcha".into())
        );
        let typed: Captcha = settings.get_as("captcha").unwrap().unwrap();
        assert_eq!(
            typed,
            Captcha {
                provider: "hcaptcha".into(),
                threshold: 0.5
            }
        );
        // Replace; another store sees the new value.
        settings
            .set(
                "captcha",
                json!({"provider": "turnstile", "threshold": 0.9}),
            )
            .unwrap();
        let other = Store::open(url).unwrap();
        assert_eq!(
            other.settings().get("captcha").unwrap().unwrap()["provider"],
            "turnstile"
        );
        assert_eq!(settings.list().unwrap().len(), 1);
        assert!(settings.delete("captcha").unwrap());
        assert!(!settings.delete("captcha").unwrap());
        assert_eq!(settings.get("captcha").unwrap(), None);
        let err = settings.get_as::<Captcha>("captcha").unwrap();
        assert!(err.is_none());
    });
}

#[test]
fn names_are_5_to_200_characters() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("s.db").display())).unwrap();
    let err = store.settings().set("abc", json!(1)).unwrap_err();
    assert!(matches!(
        err,
        StoreError::Invalid {
            field: "settings.name",
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "invalid settings.name: \"abc\" has 3 characters; a setting's name has 5 to 200"
    );
    assert!(store.settings().set(&"x".repeat(201), json!(1)).is_err());
    store.settings().set(&"x".repeat(200), json!(1)).unwrap();
    store.settings().delete(&"x".repeat(200)).unwrap();
    assert!(store.settings().list().unwrap().is_empty());
}

#[test]
fn a_typed_read_of_the_wrong_shape_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("s.db").display())).unwrap();
    store
        .settings()
        .set("captcha", json!({"provider": 3}))
        .unwrap();
    let err = store.settings().get_as::<Captcha>("captcha").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid settings.configs: captcha: invalid type"),
        "{err}"
    );
}
