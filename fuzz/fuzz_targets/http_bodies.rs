//! The server's request bodies and query strings (`crates/plugboard-server/src/api.rs`,
//! `packages.rs`, `demo.rs`), decoded as axum's extractors decode them (`Json`: serde_json
//! over the whole body; `Form` and `Query`: serde_urlencoded), then put through what the
//! handler does with them before any effect:
//! - `POST /api/events/{name}/call`: the state must be an object; the engine decodes it
//!   into the event's type or refuses it (`invalid_state`), and returns the decoded state;
//! - `POST /api/packages/url`: http(s) only; the sha256 pin's normal form;
//! - `POST /api/packages?sha256=…`: the pin, then the archive's verification under it;
//! - `DELETE /api/packages/{name}?cascade`, `GET /api/plugins?…`, `GET /api/activity?…`;
//! - `POST /login` (a form with `token`) and the `csrf` field of a session's forms;
//! - `PUT /api/settings/{name}`: the value against a package's settings schema (and the
//!   value compiled as a `settings.schema.json`);
//! - `POST /demo/signup` (no auth): the form's checks, the states it fires (they must
//!   cross both wires), and the page it renders: the user's text appears in it escaped,
//!   and only where the template puts it.
//!
//! The first byte picks the request. Never a panic, and each check holds.
//!
//! The server cannot be built here cheaply (it brings wasmtime and sqlx), and its body
//! types are private: they and the functions used are copied below, and the first run
//! checks every copy against its source, so that this target fails when they drift.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Once, OnceLock};

use libfuzzer_sys::fuzz_target;
use plugboard_core::Status;
use plugboard_core::reference::{
    Conn, Endpoint, ErrorPayload, Ip, ModifierUser, OnUserAfterSave, OnUserAfterSaveFailure,
    SaveStatus, UserInfo,
};
use plugboard_core::wire::Wire;
use plugboard_fuzz::as_json;
use plugboard_package::{SettingsSchema, VerifyOptions, normalise_pin, sha256_hex, verify};
use serde_json::{Value, json};

const API: &str = include_str!("../../crates/plugboard-server/src/api.rs");
const PACKAGES: &str = include_str!("../../crates/plugboard-server/src/packages.rs");
const DEMO: &str = include_str!("../../crates/plugboard-server/src/demo.rs");
const ACTIVITY: &str = include_str!("../../crates/plugboard-store/src/activity.rs");
const FORM: &str = include_str!("../../crates/plugboard-server/assets/demo.html");

/// Where a copied definition comes from, and its tokens.
struct Copy {
    file: &'static str,
    source: &'static str,
    /// Where the definition starts; for a struct, what follows is compared.
    head: &'static str,
    /// Whether `head` is part of what is compared (functions) or not (fields, variants).
    with_head: bool,
    /// Where it ends.
    end: &'static str,
    tokens: &'static str,
}

macro_rules! copy_struct {
    ($copies:ident, $file:ident: struct $name:ident { $($body:tt)* }) => {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct $name { $($body)* }

        const $copies: Copy = Copy {
            file: stringify!($file),
            source: $file,
            head: concat!("struct ", stringify!($name), " {"),
            with_head: false,
            end: "\n}",
            tokens: stringify!($($body)*),
        };
    };
}

macro_rules! copy_fn {
    ($copies:ident, $file:ident: fn $name:ident $($rest:tt)*) => {
        fn $name $($rest)*

        const $copies: Copy = Copy {
            file: stringify!($file),
            source: $file,
            head: concat!("fn ", stringify!($name), "("),
            with_head: true,
            end: "\n}",
            tokens: stringify!(fn $name $($rest)*),
        };
    };
}

/// plugboard-store's `vocabulary!` enums: lowercase names.
macro_rules! copy_vocabulary {
    ($copies:ident, $file:ident: $name:ident($field:literal) { $($variant:ident = $s:literal),+ $(,)? }) => {
        #[derive(Debug, serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        #[allow(dead_code)]
        enum $name { $($variant),+ }

        const $copies: Copy = Copy {
            file: stringify!($file),
            source: $file,
            head: concat!(stringify!($name), "(", stringify!($field), ") {"),
            with_head: false,
            end: "\n    }",
            tokens: stringify!($($variant = $s),+,),
        };
    };
}

copy_struct! { LOGIN_FORM, API: struct LoginForm {
    #[serde(default)]
    token: String,
} }

copy_struct! { CALL_BODY, API: struct CallBody {
    state: Value,
} }

copy_struct! { PLUGIN_FILTER, API: struct PluginFilter {
    event: Option<String>,
    status: Option<Status>,
} }

copy_struct! { ACTIVITY_FILTER, API: struct ActivityFilter {
    kind: Option<ActivityKind>,
    status: Option<ActivityStatus>,
    subject: Option<String>,
    event: Option<String>,
    limit: Option<u32>,
    before_id: Option<i64>,
} }

copy_vocabulary! { ACTIVITY_KIND, ACTIVITY: ActivityKind("kind") {
    Plugin = "plugin",
    Package = "package",
    Setting = "setting",
    Event = "event",
    Activity = "activity",
    Installer = "installer",
} }

copy_vocabulary! { ACTIVITY_STATUS, ACTIVITY: ActivityStatus("status") {
    Error = "error",
    Info = "info",
    Warning = "warning",
    Report = "report",
    Throw = "throw",
    Exit = "exit",
} }

copy_struct! { UPLOAD_QUERY, PACKAGES: struct UploadQuery {
    sha256: Option<String>,
    #[serde(default)]
    force: bool,
    grant: Option<String>,
} }

copy_struct! { URL_INSTALL, PACKAGES: struct UrlInstall {
    url: String,
    sha256: Option<String>,
    #[serde(default)]
    force: bool,
    grant: Option<String>,
} }

/// A grant as an operator writes it: read without panicking; what it reads as (unless
/// nothing, which is written `none`) is written so that it reads back the same.
fn check_grant(text: &str) {
    use plugboard_package::Capabilities;
    if let Ok(c) = Capabilities::parse_grant(text, &Capabilities::default())
        && !c.is_empty()
    {
        let again = Capabilities::parse_grant(&c.to_grant(), &Capabilities::default());
        assert_eq!(
            again.as_ref(),
            Ok(&c),
            "{text:?} read as {:?}",
            c.to_grant()
        );
        let _ = (c.describe(), c.summary());
    }
}

copy_struct! { UNINSTALL_QUERY, PACKAGES: struct UninstallQuery {
    #[serde(default)]
    cascade: bool,
} }

copy_struct! { SIGNUP, DEMO: struct Signup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
} }

copy_fn! { FORM_CSRF, API: fn form_csrf(body: &[u8]) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v)
} }

copy_fn! { ESCAPE, DEMO: fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
        .replace('{', "&#123;")
} }

copy_fn! { RENDER, DEMO: fn render(name: &str, email: &str, errors: &BTreeMap<String, Vec<String>>, note: &str) -> String {
    let list = |field: &str| {
        errors
            .get(field)
            .map(|ms| {
                ms.iter()
                    .map(|m| format!("<p class=\"error\">{}</p>", escape(m)))
                    .collect::<String>()
            })
            .unwrap_or_default()
    };
    FORM.replace("{{name}}", &escape(name))
        .replace("{{email}}", &escape(email))
        .replace("{{name_errors}}", &list("name"))
        .replace("{{email_errors}}", &list("email"))
        .replace("{{password_errors}}", &list("password"))
        .replace("{{note}}", note)
} }

/// Text without whitespace, comment lines, and attributes other than serde's (utoipa's
/// `#[schema(…)]` and `#[param(…)]` do not change what is accepted). An attribute may span
/// lines (rustfmt splits long ones): it is skipped until its brackets close.
fn tokens(text: &str) -> String {
    let mut out = String::new();
    // Open brackets of a skipped attribute still running over the following lines.
    let mut skipping = 0i32;
    for line in text.lines().map(str::trim) {
        let depth = |l: &str| l.matches('[').count() as i32 - l.matches(']').count() as i32;
        if skipping > 0 {
            skipping += depth(line);
            continue;
        }
        if line.starts_with("//") {
            continue;
        }
        if line.starts_with("#[") && !line.starts_with("#[serde(") {
            skipping = depth(line);
            continue;
        }
        out.extend(line.chars().filter(|c| !c.is_whitespace()));
    }
    out
}

/// The file a copy's source constant holds.
fn path(source: &str) -> &'static str {
    match source {
        "API" => "crates/plugboard-server/src/api.rs",
        "PACKAGES" => "crates/plugboard-server/src/packages.rs",
        "DEMO" => "crates/plugboard-server/src/demo.rs",
        _ => "crates/plugboard-store/src/activity.rs",
    }
}

/// Checks every copy against its source.
fn check_copies() {
    let copies = [
        LOGIN_FORM,
        CALL_BODY,
        PLUGIN_FILTER,
        ACTIVITY_FILTER,
        ACTIVITY_KIND,
        ACTIVITY_STATUS,
        UPLOAD_QUERY,
        URL_INSTALL,
        UNINSTALL_QUERY,
        SIGNUP,
        FORM_CSRF,
        ESCAPE,
        RENDER,
    ];
    for c in copies {
        let at = c.source.find(c.head).unwrap_or_else(|| {
            panic!(
                "`{}` is gone from {}: update {}",
                c.head,
                path(c.file),
                file!()
            )
        });
        let start = if c.with_head { at } else { at + c.head.len() };
        let end = start
            + c.source[start..].find(c.end).expect("the definition's end")
            + if c.with_head { c.end.len() } else { 0 };
        assert_eq!(
            tokens(&c.source[start..end]),
            tokens(c.tokens),
            "`{}` changed in {}: update its copy in {}",
            c.head,
            path(c.file),
            file!()
        );
    }
}

/// A settings schema such as a package ships.
fn settings_schema() -> &'static SettingsSchema {
    static SCHEMA: OnceLock<SettingsSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        SettingsSchema::compile(&json!({
            "type": "object",
            "properties": {
                "threshold": { "type": "integer", "minimum": 1, "maximum": 1000 },
                "level": { "enum": ["debug", "info", "warn"] },
                "prefix": { "type": "string", "pattern": "^[a-z]+(-[a-z0-9]+)*$", "maxLength": 32 },
                "hosts": { "type": "array", "items": { "type": "string", "format": "hostname" }, "uniqueItems": true },
                "token": { "type": "string", "writeOnly": true }
            },
            "required": ["threshold"],
            "additionalProperties": false
        }))
        .expect("the sample schema compiles")
    })
}

/// A pin as `normalise_pin` leaves it: 64 lowercase hex digits, and left as it is.
fn check_pin(pin: &str) {
    if let Ok(p) = normalise_pin(pin) {
        assert_eq!(p.len(), 64);
        assert!(
            p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(normalise_pin(&p).ok().as_deref(), Some(p.as_str()));
    }
}

/// The template filled in one pass: what `render` must give, whatever the values hold.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let hit = values
            .iter()
            .find(|(k, _)| after[2..].starts_with(k) && after[2 + k.len()..].starts_with("}}"));
        match hit {
            Some((k, v)) => {
                out.push_str(v);
                rest = &after[k.len() + 4..];
            }
            None => {
                out.push_str("{{");
                rest = &after[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A state the demo fires crosses both wires unchanged.
fn crosses<S: serde::Serialize + serde::de::DeserializeOwned>(state: &S) {
    for wire in [Wire::Json, Wire::Binary] {
        let bytes = wire.encode(state).expect("encodes");
        let back: S = wire.decode(&bytes).expect("decodes");
        assert_eq!(as_json(&back), as_json(state), "{wire:?}");
    }
}

/// `POST /demo/signup`, up to the hooks: the checks, the state fired, the page.
fn signup(f: &Signup) {
    let email = f.email.trim().to_lowercase();
    let mut error = ErrorPayload::new("validation_failed", "the sign-up form has errors");
    if f.name.trim().is_empty() {
        error = error.field("name", "Enter your name.");
    }
    if !email.contains('@') {
        error = error.field("email", "An email address must contain @.");
    }
    if f.password.chars().count() < 8 {
        error = error.field("password", "A password needs at least 8 characters.");
    }
    let conn = Conn::new("POST", "/demo/signup").header("user-agent", &f.name);
    let ip = Ip::LOCALHOST;
    let fields = error.fields.clone();
    if fields.is_empty() {
        let mut user = UserInfo::new();
        user.insert("name".into(), json!(f.name.trim()));
        user.insert("email".into(), json!(email));
        crosses(&OnUserAfterSave {
            user_info: user,
            ip,
            endpoint: Endpoint::Html,
            status: SaveStatus::Added,
            conn,
            modifier_user: ModifierUser::SelfUser,
            extra: Value::Null,
        });
    } else {
        crosses(&OnUserAfterSaveFailure {
            error,
            ip,
            endpoint: Endpoint::Html,
            status: SaveStatus::Added,
            conn,
            modifier_user: ModifierUser::SelfUser,
            extra: Value::Null,
        });
    }
    // The page: the user's text escaped, in its places only.
    for text in [&f.name, &f.email] {
        let escaped = escape(text);
        assert!(
            !escaped.contains(['<', '>', '"', '\'', '{']),
            "not escaped: {escaped}"
        );
    }
    let note = "<p class=\"note\">A plugin failed: x</p>";
    let list = |field: &str| -> String {
        fields
            .get(field)
            .map(|ms| {
                ms.iter()
                    .map(|m| format!("<p class=\"error\">{}</p>", escape(m)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let expected = fill(
        FORM,
        &[
            ("name", &escape(&f.name)),
            ("email", &escape(&f.email)),
            ("name_errors", &list("name")),
            ("email_errors", &list("email")),
            ("password_errors", &list("password")),
            ("note", note),
        ],
    );
    assert_eq!(
        render(&f.name, &f.email, &fields, note),
        expected,
        "the page differs from its template filled in with the escaped text"
    );
}

static COPIES: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    COPIES.call_once(check_copies);
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 16 {
        // POST /api/events/{name}/call; the body's first byte picks the event.
        0 => {
            let Some((&event, body)) = body.split_first() else {
                return;
            };
            if let Ok(call) = serde_json::from_slice::<CallBody>(body)
                && call.state.is_object()
            {
                plugboard_fuzz::check_call_event(event, &call.state, 0);
            }
        }
        1 => {
            if let Ok(req) = serde_json::from_slice::<UrlInstall>(body) {
                if let Some(grant) = &req.grant {
                    check_grant(grant);
                }
                if (req.url.starts_with("http://") || req.url.starts_with("https://"))
                    && let Some(pin) = &req.sha256
                {
                    check_pin(pin);
                }
            }
        }
        // The query, a newline, then the file.
        2 => {
            let (query, file) = match body.iter().position(|&b| b == b'\n') {
                Some(i) => (&body[..i], &body[i + 1..]),
                None => (body, &[][..]),
            };
            let Ok(q) = serde_urlencoded::from_bytes::<UploadQuery>(query) else {
                return;
            };
            if let Some(pin) = &q.sha256 {
                check_pin(pin);
            }
            if let Some(grant) = &q.grant {
                check_grant(grant);
            }
            if file.is_empty() {
                return;
            }
            let opts = VerifyOptions {
                sha256: q.sha256.clone(),
                ..VerifyOptions::default()
            };
            match verify(file, &opts) {
                Ok(package) => {
                    if let Some(pin) = &q.sha256 {
                        assert_eq!(normalise_pin(pin).ok(), Some(sha256_hex(file)));
                    }
                    assert_eq!(package.sha256, sha256_hex(file));
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        3 => {
            let _ = serde_urlencoded::from_bytes::<UninstallQuery>(body);
        }
        4 => {
            let _ = serde_urlencoded::from_bytes::<ActivityFilter>(body);
        }
        5 => {
            let _ = serde_urlencoded::from_bytes::<PluginFilter>(body);
        }
        6 => {
            if let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(body) {
                let _ = form.token.trim();
            }
            if let Some(csrf) = form_csrf(body) {
                let pairs: Vec<(String, String)> =
                    serde_urlencoded::from_bytes(body).expect("form_csrf parsed it");
                assert!(pairs.iter().any(|(k, v)| k == "csrf" && *v == csrf));
            }
        }
        7 => {
            let Ok(value) = serde_json::from_slice::<Value>(body) else {
                return;
            };
            let schema = settings_schema();
            if let Err(violations) = schema.validate(&value) {
                assert!(!violations.is_empty());
                for v in violations {
                    let _ = v.to_string();
                }
            }
            if let Ok(compiled) = SettingsSchema::compile(&value) {
                let _ = compiled.secret_fields();
                for sample in [
                    json!({"threshold": 3}),
                    json!([1, "a", null]),
                    value.clone(),
                ] {
                    if let Err(violations) = compiled.validate(&sample) {
                        for v in violations {
                            let _ = v.to_string();
                        }
                    }
                }
            }
        }
        _ => {
            if let Ok(form) = serde_urlencoded::from_bytes::<Signup>(body) {
                signup(&form);
            }
        }
    }
});
