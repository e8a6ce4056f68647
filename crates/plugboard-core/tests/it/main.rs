//! Tests of the core types: the reference field types' wire forms and the records.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use plugboard_core::reference::{Conn, Ip, ModifierUser, OnUserAfterSaveFailure};
use plugboard_core::{Event, PluginRecord, Priority, Registration, Reply, Status};
use serde_json::json;

mod wire;

#[test]
fn ip_accepts_strings_and_mishka_tuples() {
    let ip: Ip = serde_json::from_value(json!("192.168.1.20")).unwrap();
    assert_eq!(ip.to_string(), "192.168.1.20");
    let ip: Ip = serde_json::from_value(json!([127, 0, 0, 1])).unwrap();
    assert_eq!(ip, Ip::LOCALHOST);
    let ip: Ip = serde_json::from_value(json!([0, 0, 0, 0, 0, 0, 0, 1])).unwrap();
    assert_eq!(serde_json::to_value(ip).unwrap(), json!("::1"));
    let err = serde_json::from_value::<Ip>(json!([300, 0, 0, 1])).unwrap_err();
    assert_eq!(err.to_string(), "IPv4 tuple part 300 is over 255");
    let err = serde_json::from_value::<Ip>(json!([1, 2, 3])).unwrap_err();
    assert!(err.to_string().starts_with("invalid length 3"), "{err}");
    assert!(serde_json::from_value::<Ip>(json!("1.2.3")).is_err());
}

#[test]
fn modifier_user_is_a_uuid_or_self() {
    let m: ModifierUser = serde_json::from_value(json!("self")).unwrap();
    assert_eq!(m, ModifierUser::SelfUser);
    let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let m: ModifierUser = serde_json::from_value(json!(id)).unwrap();
    assert_eq!(serde_json::to_value(m).unwrap(), json!(id));
    let err = serde_json::from_value::<ModifierUser>(json!("admin")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "modifier_user must be a UUID or \"self\", got \"admin\""
    );
}

#[test]
fn priority_is_zero_to_hundred() {
    assert!(Priority::new(100).is_ok());
    assert_eq!(
        Priority::new(101).unwrap_err().to_string(),
        "priority 101 is out of range: it must be between 0 and 100"
    );
    assert!(serde_json::from_value::<Priority>(json!(101)).is_err());
    assert_eq!(
        Registration::new("x").priority(250).priority,
        Priority::LAST
    );
}

#[test]
fn conn_carries_the_hosts_request_natively_but_not_on_the_wire() {
    struct HostRequest {
        user: &'static str,
    }
    let conn = Conn::new("POST", "/users")
        .header("X-Request-Id", "abc")
        .with_native(Arc::new(HostRequest { user: "ada" }));
    assert_eq!(conn.native::<HostRequest>().unwrap().user, "ada");
    assert!(conn.native::<String>().is_none());
    let wire = serde_json::to_value(&conn).unwrap();
    assert_eq!(
        wire,
        json!({"method": "POST", "path": "/users", "headers": {"x-request-id": "abc"}, "peer": null})
    );
    let back: Conn = serde_json::from_value(wire).unwrap();
    assert_eq!(back, conn);
    assert!(back.native::<HostRequest>().is_none());
}

#[test]
fn records_serialise_with_rfc3339_timestamps() {
    let now = time::OffsetDateTime::UNIX_EPOCH;
    let r = PluginRecord {
        name: "audit".into(),
        event: OnUserAfterSaveFailure::NAME.into(),
        priority: Priority::DEFAULT,
        status: Status::Held,
        depend_type: plugboard_core::DependType::Hard,
        depends: vec!["session".into()],
        extra: vec![],
        inserted_at: now,
        updated_at: now,
    };
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["status"], "held");
    assert_eq!(v["depend_type"], "hard");
    assert_eq!(v["inserted_at"], "1970-01-01T00:00:00Z");
    assert_eq!(serde_json::from_value::<PluginRecord>(v).unwrap(), r);
    assert!(r.hard_depends_on("session"));
}

#[test]
fn replies_carry_their_state() {
    let r = Reply::Halt(3).map(|n| n * 2);
    assert!(r.is_halt());
    assert_eq!(r.into_state(), 6);
}
