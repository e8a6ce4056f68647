//! Plugins' key-value data: scoped, quota-bound, expiring, and safe under concurrent writes
//! from several processes' stores.

use std::time::{Duration, Instant};

use plugboard_store::{KvQuota, KvUsage, Store, StoreError};

use crate::each_backend;

const Q: KvQuota = KvQuota::DEFAULT;

/// Waits until `ok` holds; the deadline only guards against a hang.
fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn entries_are_set_read_listed_and_deleted_within_their_scope_only() {
    each_backend(|backend, url| {
        let store = Store::open(url).unwrap();
        let a = store.kv("pkg-a").unwrap();
        let b = store.kv("pkg-b").unwrap();
        assert_eq!(a.get("k").unwrap(), None);
        a.set("k", b"one", None, Q).unwrap();
        a.set("ip:10.0.0.2", b"2", None, Q).unwrap();
        a.set("ip:10.0.0.1", b"1", None, Q).unwrap();
        a.set("ipx", b"x", None, Q).unwrap();
        assert_eq!(a.get("k").unwrap().as_deref(), Some(&b"one"[..]));
        // Another scope sees none of it, and its own keys are its own.
        assert_eq!(b.get("k").unwrap(), None, "{backend:?}");
        b.set("k", b"theirs", None, Q).unwrap();
        assert_eq!(a.get("k").unwrap().as_deref(), Some(&b"one"[..]));
        assert!(b.list("", None, 100).unwrap().iter().all(|e| e.key == "k"));

        // Listing by prefix, in byte order, paged.
        let keys = |after: Option<&str>, limit| -> Vec<String> {
            a.list("ip:", after, limit)
                .unwrap()
                .into_iter()
                .map(|e| e.key)
                .collect()
        };
        assert_eq!(
            keys(None, 100),
            ["ip:10.0.0.1", "ip:10.0.0.2"],
            "{backend:?}"
        );
        assert_eq!(keys(None, 1), ["ip:10.0.0.1"]);
        assert_eq!(keys(Some("ip:10.0.0.1"), 1), ["ip:10.0.0.2"]);
        let all = a.list("", None, 100).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all.iter().find(|e| e.key == "k").unwrap().size, 3);

        assert_eq!(
            a.usage().unwrap(),
            KvUsage {
                keys: 4,
                bytes: (1 + 3) + (11 + 1) * 2 + (3 + 1)
            }
        );
        assert!(a.delete("k").unwrap());
        assert!(!a.delete("k").unwrap());
        assert_eq!(a.get("k").unwrap(), None);
        assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"theirs"[..]));
        assert_eq!(a.usage().unwrap().keys, 3);

        let scopes = store.kv_scopes().unwrap();
        assert_eq!(
            scopes.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
            ["pkg-a", "pkg-b"]
        );
        assert_eq!(a.clear().unwrap(), 3);
        assert_eq!(a.list("", None, 100).unwrap(), []);
        assert_eq!(a.usage().unwrap(), KvUsage::default());
        assert_eq!(b.usage().unwrap().keys, 1);

        // Data outlives the process: another store on the same database reads it.
        drop(store);
        let again = Store::open(url).unwrap();
        assert_eq!(
            again.kv("pkg-b").unwrap().get("k").unwrap().as_deref(),
            Some(&b"theirs"[..])
        );
    });
}

#[test]
fn bad_keys_values_and_scopes_are_refused_and_write_nothing() {
    each_backend(|backend, url| {
        let store = Store::open(url).unwrap();
        let kv = store.kv("pkg").unwrap();
        let long = "k".repeat(plugboard_store::MAX_KEY_CHARS + 1);
        let big = vec![0u8; plugboard_store::MAX_VALUE_BYTES + 1];
        for (what, e) in [
            ("empty key", kv.set("", b"v", None, Q).unwrap_err()),
            ("long key", kv.set(&long, b"v", None, Q).unwrap_err()),
            ("NUL key", kv.set("a\0b", b"v", None, Q).unwrap_err()),
            ("big value", kv.set("k", &big, None, Q).unwrap_err()),
        ] {
            assert!(matches!(e, StoreError::Invalid { .. }), "{what}: {e:?}");
        }
        assert!(matches!(
            store.kv("").err().unwrap(),
            StoreError::Invalid {
                field: "kv.scope",
                ..
            }
        ));
        kv.set("n", b"not a number", None, Q).unwrap();
        let e = kv.increment("n", 1, None, Q).unwrap_err();
        assert!(e.to_string().contains("not an integer"), "{e}");
        kv.set("max", i64::MAX.to_string().as_bytes(), None, Q)
            .unwrap();
        let e = kv.increment("max", 1, None, Q).unwrap_err();
        assert!(e.to_string().contains("overflow"), "{e}");
        // Nothing but the two good writes is there.
        assert_eq!(kv.usage().unwrap().keys, 2, "{backend:?}");
        assert_eq!(kv.get("n").unwrap().as_deref(), Some(&b"not a number"[..]));
    });
}

#[test]
fn counters_and_compare_and_swap() {
    each_backend(|backend, url| {
        let store = Store::open(url).unwrap();
        let kv = store.kv("pkg").unwrap();
        assert_eq!(kv.increment("c", 1, None, Q).unwrap(), 1);
        assert_eq!(kv.increment("c", 41, None, Q).unwrap(), 42);
        assert_eq!(kv.increment("c", -50, None, Q).unwrap(), -8);
        assert_eq!(kv.get("c").unwrap().as_deref(), Some(&b"-8"[..]));

        // Absent is expected: creates once.
        assert!(kv.compare_and_swap("s", None, Some(b"1"), None, Q).unwrap());
        assert!(!kv.compare_and_swap("s", None, Some(b"2"), None, Q).unwrap());
        assert!(
            !kv.compare_and_swap("s", Some(b"0"), Some(b"2"), None, Q)
                .unwrap()
        );
        assert!(
            kv.compare_and_swap("s", Some(b"1"), Some(b"2"), None, Q)
                .unwrap()
        );
        assert_eq!(kv.get("s").unwrap().as_deref(), Some(&b"2"[..]));
        // Swapping to nothing deletes.
        assert!(kv.compare_and_swap("s", Some(b"2"), None, None, Q).unwrap());
        assert_eq!(kv.get("s").unwrap(), None, "{backend:?}");
        assert_eq!(kv.usage().unwrap().keys, 1);
    });
}

#[test]
fn entries_expire_and_expired_entries_make_room() {
    each_backend(|backend, url| {
        let store = Store::open(url).unwrap();
        let kv = store.kv("pkg").unwrap();
        let quota = KvQuota {
            max_keys: 2,
            max_bytes: 1 << 20,
        };
        kv.set("long", b"v", Some(Duration::from_secs(3600)), quota)
            .unwrap();
        kv.set("short", b"v", Some(Duration::from_millis(1)), quota)
            .unwrap();
        wait_until("the short entry expires", || {
            kv.get("short").unwrap().is_none()
        });
        assert_eq!(kv.get("long").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(
            kv.list("", None, 10)
                .unwrap()
                .into_iter()
                .map(|e| e.key)
                .collect::<Vec<_>>(),
            ["long"]
        );
        // The expired entry still holds its place until purged: a new key needs it, and
        // gets it.
        assert_eq!(kv.usage().unwrap().keys, 2);
        kv.set("new", b"v", None, quota).unwrap();
        assert_eq!(kv.usage().unwrap().keys, 2, "{backend:?}");
        // A counter keeps the expiry it started with.
        let c = kv.increment(
            "window",
            1,
            Some(Duration::from_millis(1)),
            KvQuota::DEFAULT,
        );
        assert_eq!(c.unwrap(), 1);
        wait_until("the counter's window ends", || {
            kv.get("window").unwrap().is_none()
        });
        assert_eq!(
            kv.increment("window", 1, None, KvQuota::DEFAULT).unwrap(),
            1
        );
        kv.set(
            "gone",
            b"v",
            Some(Duration::from_millis(1)),
            KvQuota::DEFAULT,
        )
        .unwrap();
        wait_until("the entry expires", || kv.get("gone").unwrap().is_none());
        assert_eq!(store.purge_expired_kv().unwrap(), 1);
        assert_eq!(kv.usage().unwrap().keys, 3);
    });
}

#[test]
fn quotas_refuse_growth_with_a_typed_error_and_allow_shrinking() {
    each_backend(|backend, url| {
        let store = Store::open(url).unwrap();
        let kv = store.kv("pkg").unwrap();
        let keys = KvQuota {
            max_keys: 2,
            max_bytes: 1 << 20,
        };
        kv.set("a", b"1", None, keys).unwrap();
        kv.set("b", b"1", None, keys).unwrap();
        let e = kv.set("c", b"1", None, keys).unwrap_err();
        assert!(
            matches!(&e, StoreError::KvQuota { scope, what: "keys", limit: 2 } if scope == "pkg"),
            "{backend:?}: {e:?}"
        );
        assert_eq!(kv.get("c").unwrap(), None);
        assert!(matches!(
            kv.increment("c", 1, None, keys).unwrap_err(),
            StoreError::KvQuota { what: "keys", .. }
        ));
        // Replacing a key adds no key.
        kv.set("a", b"2", None, keys).unwrap();

        let bytes = KvQuota {
            max_keys: 100,
            max_bytes: 10,
        };
        let e = kv.set("a", b"123456789", None, bytes).unwrap_err();
        assert!(
            matches!(e, StoreError::KvQuota { what: "bytes", .. }),
            "{e:?}"
        );
        assert_eq!(kv.get("a").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(kv.usage().unwrap(), KvUsage { keys: 2, bytes: 4 });
        // Over a lowered quota, a scope may still shrink.
        let tiny = KvQuota {
            max_keys: 0,
            max_bytes: 0,
        };
        kv.set("z", b"", None, tiny).unwrap_err();
        kv.set("a", b"", None, tiny).unwrap();
        assert!(kv.delete("a").unwrap());
        assert_eq!(kv.usage().unwrap(), KvUsage { keys: 1, bytes: 2 });
    });
}

#[test]
fn concurrent_increments_from_two_stores_lose_nothing() {
    each_backend(|backend, url| {
        // Two stores on one database: two processes, as far as the database can tell.
        let stores = [Store::open(url).unwrap(), Store::open(url).unwrap()];
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = stores[i % 2].clone();
                std::thread::spawn(move || {
                    let kv = store.kv("pkg").unwrap();
                    for _ in 0..25 {
                        kv.increment("hits", 1, None, KvQuota::DEFAULT).unwrap();
                    }
                    // New keys at the same time: the usage's bookkeeping stays exact.
                    kv.set(&format!("t{i}"), b"x", None, KvQuota::DEFAULT)
                        .unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let kv = stores[0].kv("pkg").unwrap();
        assert_eq!(
            kv.get("hits").unwrap().as_deref(),
            Some(&b"200"[..]),
            "{backend:?}"
        );
        assert_eq!(kv.usage().unwrap().keys, 9);
        assert_eq!(kv.list("", None, 100).unwrap().len(), 9);
    });
}
