//! Opening, migrating, and refusing databases that are not ours.

use plugboard_store::{Store, StoreError};

use crate::each_backend;

#[test]
fn a_fresh_database_is_migrated_and_reopened() {
    each_backend(|backend, url| {
        let store = Store::open(url).unwrap();
        assert_eq!(store.schema_version().unwrap(), 6, "{backend:?}");
        drop(store);
        let again = Store::open(url).unwrap();
        assert_eq!(again.schema_version().unwrap(), 6);
        assert!(again.records().unwrap().is_empty());
    });
}

#[test]
fn a_sqlite_file_and_its_directory_are_created_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/home/plugboard.db");
    Store::open(&format!("sqlite://{}", path.display())).unwrap();
    assert!(path.exists());
}

#[test]
fn a_file_that_is_not_a_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let content = b"these are my notes, not a database\n".repeat(200);
    std::fs::write(&path, &content).unwrap();
    let err = Store::open(&format!("sqlite://{}", path.display()))
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
    assert!(
        err.to_string()
            .ends_with("is not a SQLite database; refusing to touch it"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), content);
}

#[test]
fn someone_elses_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let url = format!("sqlite://{}", path.display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let opts: sqlx::sqlite::SqliteConnectOptions = url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .create_if_missing(true);
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        sqlx::query("CREATE TABLE invoices (id INTEGER)")
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    });
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&url).err().unwrap();
    assert!(matches!(err, StoreError::NotPlugboard(_)), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn someone_elses_postgres_database_is_refused_untouched() {
    let url = plugboard_testkit::fresh_url(
        plugboard_testkit::Backend::Postgres,
        std::path::Path::new("/tmp"),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let count_tables = |url: &str| {
        rt.block_on(async {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            pool.close().await;
            n
        })
    };
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE invoices (id INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let err = Store::open(&url).err().unwrap();
    assert!(matches!(err, StoreError::NotPlugboard(_)), "{err}");
    assert_eq!(count_tables(&url), 1, "nothing was created");
}

#[test]
fn a_newer_schema_is_refused_on_both_backends() {
    each_backend(|backend, url| {
        Store::open(url).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            match backend {
                plugboard_testkit::Backend::Sqlite => {
                    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
                    sqlx::query(
                        "UPDATE plugboard_meta SET value = '99' WHERE key = 'schema_version'",
                    )
                    .execute(&pool)
                    .await
                    .unwrap();
                    pool.close().await;
                }
                plugboard_testkit::Backend::Postgres => {
                    let pool = sqlx::PgPool::connect(url).await.unwrap();
                    sqlx::query(
                        "UPDATE plugboard_meta SET value = '99' WHERE key = 'schema_version'",
                    )
                    .execute(&pool)
                    .await
                    .unwrap();
                    pool.close().await;
                }
            }
        });
        let err = Store::open(url).err().unwrap();
        assert!(
            matches!(
                err,
                StoreError::NewerSchema {
                    found: 99,
                    supported: 6
                }
            ),
            "{backend:?}: {err}"
        );
        assert_eq!(
            err.to_string(),
            "the database's schema is version 99, newer than this Plugboard's 6; refusing to touch it"
        );
    });
}

#[test]
fn a_bad_url_is_a_clear_error() {
    let err = Store::open("mysql://localhost/x").err().unwrap();
    assert_eq!(
        err.to_string(),
        "unsupported database URL \"mysql://localhost/x\": use sqlite://PATH or postgres://…"
    );
}

/// Runs statements on a store's database, outside the store.
fn execute(backend: plugboard_testkit::Backend, url: &str, statements: &[&str]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        match backend {
            plugboard_testkit::Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(url).await.unwrap();
                for s in statements {
                    sqlx::query(s).execute(&pool).await.unwrap();
                }
                pool.close().await;
            }
            plugboard_testkit::Backend::Postgres => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                for s in statements {
                    sqlx::query(s).execute(&pool).await.unwrap();
                }
                pool.close().await;
            }
        }
    });
}

#[test]
fn a_version_1_database_is_migrated_to_the_current_one_keeping_its_rows() {
    each_backend(|backend, url| {
        let store = Store::open(url).unwrap();
        store
            .settings()
            .set("keep-me", serde_json::json!({"a": 1}))
            .unwrap();
        drop(store);
        // Back to what version 1 wrote.
        execute(
            backend,
            url,
            &[
                "DROP TABLE events",
                "DROP TABLE kv",
                "DROP TABLE kv_usage",
                "ALTER TABLE plugins DROP COLUMN unloaded",
                "DROP TABLE package_archives",
                "ALTER TABLE packages DROP COLUMN manifest",
                "ALTER TABLE packages DROP COLUMN previous_version",
                "ALTER TABLE packages DROP COLUMN previous_sha256",
                "ALTER TABLE packages DROP COLUMN revision",
                "ALTER TABLE packages DROP COLUMN load_error",
                "ALTER TABLE packages DROP COLUMN grants",
                "UPDATE plugboard_meta SET value = '1' WHERE key = 'schema_version'",
            ],
        );
        let store = Store::open(url).unwrap();
        assert_eq!(store.schema_version().unwrap(), 6, "{backend:?}");
        assert_eq!(
            store.settings().get("keep-me").unwrap(),
            Some(serde_json::json!({"a": 1}))
        );
        assert!(store.packages().unwrap().is_empty());
        // Version 3 lets a setting's name hold `package.` and a 50-character package name.
        let long = format!("package.{}", "p".repeat(50));
        store.settings().set(&long, serde_json::json!({})).unwrap();
        assert!(store.settings().set(&"x".repeat(201), 1).is_err());
        // Version 4 holds plugins' key-value data.
        let kv = store.kv("pkg").unwrap();
        kv.set("k", b"v", None, plugboard_store::KvQuota::DEFAULT)
            .unwrap();
        assert_eq!(kv.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    });
}

#[test]
fn a_new_sqlite_database_and_its_directory_are_the_operators_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("home/data");
    let db = dir.join("plugboard.db");
    let store = Store::open(&format!("sqlite://{}", db.display())).unwrap();
    store.settings().set("a-setting", 1).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&tmp.path().join("home")), 0o700);
    assert_eq!(mode(&db), 0o600);
    let wal = dir.join("plugboard.db-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }
}

#[test]
fn a_hosts_event_catalogue_is_recorded_and_read_back_with_its_schemas() {
    crate::each_backend(|backend, url| {
        let store = plugboard_store::Store::open(url).unwrap();
        let engine = store
            .engine(plugboard_engine::Engine::builder().reference_events(false))
            .unwrap();
        engine.hook::<crate::OnStore>().unwrap();
        assert_eq!(store.publish_events(&engine).unwrap(), 1);
        // Again: replaced, not doubled.
        assert_eq!(store.publish_events(&engine).unwrap(), 1);
        let events = store.stored_events().unwrap();
        assert_eq!(events.len(), 1, "{backend:?}");
        assert_eq!(events[0].name, "on_store");
        assert_eq!(events[0].section, "test");
        assert_eq!(events[0].doc, "A test event.");
        assert_eq!(events[0].schema, engine.event("on_store").unwrap().schema);
        assert_eq!(events[0].mode, plugboard_core::Mode::Waterfall);
        // A collecting event keeps its mode and its contribution's schema.
        engine
            .declare_collect::<plugboard_core::reference::OnContentSearch>()
            .unwrap();
        assert_eq!(store.publish_events(&engine).unwrap(), 2);
        let search = store
            .stored_events()
            .unwrap()
            .into_iter()
            .find(|e| e.name == "on_content_search")
            .unwrap();
        let declared = engine.event("on_content_search").unwrap();
        assert_eq!(search.mode, plugboard_core::Mode::Collect, "{backend:?}");
        assert_eq!(search.output, declared.output);
        assert_eq!(search.schema, declared.schema);
    });
}
