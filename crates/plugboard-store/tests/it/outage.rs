//! A store operation abandoned at its deadline: its transaction is closed with its
//! connection, never handed to the pool's next user half-done (which would commit it).

use std::process::Command;
use std::time::{Duration, Instant};

use plugboard_store::{KvQuota, Store, StoreError, StoreOptions};
use plugboard_testkit::PgCluster;

#[test]
fn a_write_abandoned_at_its_deadline_is_rolled_back_not_committed_by_the_next_user() {
    let cluster = PgCluster::shared().unwrap();
    let url = cluster.database().unwrap();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let deadline = Duration::from_secs(1);
    let store = Store::open_with_options(&url, StoreOptions::default().timeout(deadline)).unwrap();
    // Warm the pool: several connections, so that the abandoned one could be handed out.
    for i in 0..8 {
        store
            .kv(&format!("warm-{i}"))
            .unwrap()
            .set("k", b"v", None, KvQuota::DEFAULT)
            .unwrap();
    }
    // Another session holds the `kv` table: a set gets as far as its usage row, then waits.
    let mut locker = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &cluster.port().to_string()])
        .args(["-U", "postgres", "-d", &db, "-Xqc"])
        .arg("BEGIN; LOCK TABLE kv IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;")
        .spawn()
        .unwrap();
    let held = Instant::now();
    while cluster
        .psql(
            &db,
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON l.relation = c.oid \
             WHERE c.relname = 'kv' AND l.mode = 'AccessExclusiveLock' AND l.granted",
        )
        .unwrap()
        .trim()
        != "1"
    {
        assert!(
            held.elapsed() < Duration::from_secs(60),
            "the lock was never taken"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let err = store
        .kv("abandoned")
        .unwrap()
        .set("k", b"half-done", None, KvQuota::DEFAULT)
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, StoreError::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains("did not answer within 1s"),
        "{err}"
    );
    assert!(
        took < deadline + Duration::from_secs(10),
        "the deadline did not hold: {took:?}"
    );
    assert!(store.health().timeouts >= 1);
    assert!(locker.wait().unwrap().success());

    // The pool's next users commit their own work, never the abandoned transaction's.
    for i in 0..16 {
        store
            .kv(&format!("after-{i}"))
            .unwrap()
            .set("k", b"v", None, KvQuota::DEFAULT)
            .unwrap();
    }
    let usage_rows = cluster
        .psql(
            &db,
            "SELECT count(*) FROM kv_usage WHERE scope = 'abandoned'",
        )
        .unwrap();
    assert_eq!(
        usage_rows.trim(),
        "0",
        "the abandoned transaction was committed"
    );
    assert_eq!(store.kv("abandoned").unwrap().get("k").unwrap(), None);
    assert!(
        store.health().reachable,
        "a timeout is not an outage once answers come"
    );
}
