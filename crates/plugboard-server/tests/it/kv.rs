//! Packages' key-value data through the admin API: written by another store on the same
//! database (as another host's plugins would), listed, read, deleted and cleared here.

use plugboard_store::{KvQuota, Store};
use serde_json::json;

use crate::Env;

#[test]
fn the_operator_lists_reads_deletes_and_clears_a_packages_data() {
    let env = Env::start();
    let url = format!(
        "sqlite://{}",
        env.home.path().join("plugboard.db").display()
    );
    let other = Store::open(&url).unwrap();
    let kv = other.kv("ip-ban").unwrap();
    kv.set("fail:10.0.0.1", b"3", None, KvQuota::DEFAULT)
        .unwrap();
    kv.set("fail:10.0.0.2", b"1", None, KvQuota::DEFAULT)
        .unwrap();
    kv.set("raw", &[0xff, 0x00], None, KvQuota::DEFAULT)
        .unwrap();
    other
        .kv("someone-else")
        .unwrap()
        .set("x", b"y", None, KvQuota::DEFAULT)
        .unwrap();

    let page = env.api("GET", "/api/kv/ip-ban?prefix=fail:&limit=1", None);
    assert_eq!(page.status, 200, "{}", page.body);
    let v = page.json();
    assert_eq!(
        v["usage"],
        json!({"keys": 3, "bytes": 13 + 1 + 13 + 1 + 3 + 2})
    );
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    assert_eq!(v["entries"][0]["key"], "fail:10.0.0.1");
    let next = env
        .api(
            "GET",
            "/api/kv/ip-ban?prefix=fail:&after=fail:10.0.0.1",
            None,
        )
        .json();
    assert_eq!(next["entries"][0]["key"], "fail:10.0.0.2");
    assert_eq!(next["entries"].as_array().unwrap().len(), 1);
    env.api("GET", "/api/kv/ip-ban?limit=0", None)
        .assert_error(400, "bad_request");

    // Keys travel percent-encoded in the path.
    let r = env.api("GET", "/api/kv/ip-ban/fail%3A10.0.0.1", None);
    assert_eq!(
        r.json(),
        json!({"key": "fail:10.0.0.1", "text": "3", "hex": null})
    );
    let r = env.api("GET", "/api/kv/ip-ban/raw", None);
    assert_eq!(r.json()["hex"], "ff00");
    env.api("GET", "/api/kv/ip-ban/nope", None)
        .assert_error(404, "not_found");

    let r = env.api("DELETE", "/api/kv/ip-ban/fail:10.0.0.1", None);
    assert_eq!(r.json(), json!({"deleted": "fail:10.0.0.1"}));
    assert_eq!(kv.get("fail:10.0.0.1").unwrap(), None);
    env.api("DELETE", "/api/kv/ip-ban/fail:10.0.0.1", None)
        .assert_error(404, "not_found");

    let r = env.api("DELETE", "/api/kv/ip-ban", None);
    assert_eq!(r.json(), json!({"package": "ip-ban", "cleared": 2}));
    assert!(kv.list("", None, 10).unwrap().is_empty());
    // Another package's data is untouched.
    assert_eq!(
        other
            .kv("someone-else")
            .unwrap()
            .get("x")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
}
