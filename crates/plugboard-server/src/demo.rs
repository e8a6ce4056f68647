//! The demo host (no auth): a sign-up form whose outcome fires the reference events
//! `on_user_after_save_failure` (validation failed) or `on_user_after_save` (the user was
//! added) through the engine's typed hooks, so operators can watch plugins act on real
//! calls; and a webhook receiver (`/demo/hooks`) that lists what was posted to it, such as
//! the `webhook` example's summaries of failed sign-ups. Users and arrivals live in memory
//! only, bounded.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use plugboard_core::Event;
use plugboard_core::reference::{
    Conn, Endpoint, ErrorPayload, Ip, ModifierUser, OnUserAfterSave, OnUserAfterSaveFailure,
    SaveStatus, UserInfo,
};
use plugboard_store::{ActivityKind, ActivityStatus, NewActivity};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;

const FORM: &str = include_str!("../assets/demo.html");
const WELCOME: &str = include_str!("../assets/demo-welcome.html");
const HOOKS: &str = include_str!("../assets/demo-hooks.html");
const SEARCH: &str = include_str!("../assets/demo-search.html");

/// The most of a search the demo passes on.
const SEARCH_TEXT: usize = 200;

/// Sign-ups the demo remembers; past this the oldest is forgotten, so that anyone who
/// can reach the demo cannot grow the server's memory without bound.
pub(crate) const DEMO_USERS: usize = 1000;

/// Posts the demo's receiver keeps (the newest); older ones are forgotten.
pub(crate) const DEMO_HOOKS: usize = 50;

/// The most of a posted body the receiver keeps.
const HOOK_BODY: usize = 16 * 1024;

/// The demo's users (emails taken), the oldest first, and what its webhook receiver got.
#[derive(Default)]
pub(crate) struct Demo {
    emails: Mutex<Users>,
    hooks: Mutex<VecDeque<Arrival>>,
}

/// One post to the demo's receiver.
struct Arrival {
    at: String,
    content_type: String,
    /// Whether it carried `Authorization: Bearer …` (the value is never kept or shown: it
    /// may be a secret setting of the plugin that sent it).
    bearer: bool,
    body: String,
}

#[derive(Default)]
struct Users {
    taken: HashSet<String>,
    order: VecDeque<String>,
}

impl Users {
    fn contains(&self, email: &str) -> bool {
        self.taken.contains(email)
    }

    /// Takes an email; false when it was taken already.
    fn insert(&mut self, email: String) -> bool {
        if !self.taken.insert(email.clone()) {
            return false;
        }
        self.order.push_back(email);
        while self.order.len() > DEMO_USERS {
            if let Some(oldest) = self.order.pop_front() {
                self.taken.remove(&oldest);
            }
        }
        true
    }
}

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/demo", get(form))
        .route("/demo/signup", post(signup))
        .route("/demo/search", get(search))
        .route(
            "/demo/hooks",
            get(hooks)
                .post(receive)
                .layer(axum::extract::DefaultBodyLimit::max(HOOK_BODY)),
        )
}

/// `POST /demo/hooks`: keeps the post (at most [`DEMO_HOOKS`], the newest) and answers 204.
async fn receive(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let text = String::from_utf8_lossy(&body);
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| text.into_owned()),
        Err(_) => text.into_owned(),
    };
    let arrival = Arrival {
        at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(100)
            .collect(),
        bearer: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer ")),
        body,
    };
    let mut hooks = state.demo.hooks.lock().unwrap_or_else(|p| p.into_inner());
    hooks.push_front(arrival);
    hooks.truncate(DEMO_HOOKS);
    StatusCode::NO_CONTENT
}

/// `GET /demo/hooks`: what arrived, the newest first.
async fn hooks(State(state): State<Shared>) -> Html<String> {
    let items: String = {
        let hooks = state.demo.hooks.lock().unwrap_or_else(|p| p.into_inner());
        hooks
            .iter()
            .map(|a| {
                format!(
                    "<li class=\"card\"><p><time>{}</time> · <code>{}</code>{}</p><pre>{}</pre></li>",
                    escape(&a.at),
                    escape(&a.content_type),
                    if a.bearer {
                        " · with a bearer token (not shown)"
                    } else {
                        ""
                    },
                    escape(&a.body)
                )
            })
            .collect()
    };
    let list = if items.is_empty() {
        "<p id=\"no-hooks\">Nothing has arrived yet. A failed sign-up on <a href=\"/demo\">the demo form</a> makes the <code>webhook</code> example post here.</p>".to_owned()
    } else {
        format!("<ol id=\"hooks\" reversed>{items}</ol>")
    };
    Html(HOOKS.replace("{{list}}", &list))
}

/// The words of a search.
#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// `GET /demo/search?q=…`: calls the collecting event `on_content_search` with the words
/// and lists every plugin's answer with the plugin that gave it.
async fn search(
    State(state): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<SearchQuery>,
) -> Response {
    let text: String = query.q.trim().chars().take(SEARCH_TEXT).collect();
    let results = if text.is_empty() {
        String::new()
    } else {
        let engine = state.engine.clone();
        let input = json!({ "data": { "text": text } });
        let answer = tokio::task::spawn_blocking(move || {
            engine.call_json(
                "on_content_search",
                input,
                &plugboard_engine::CallOptions::default(),
            )
        })
        .await;
        match answer {
            Ok(Ok(found)) => search_results(&found),
            Ok(Err(e)) => format!(
                "<p class=\"outcome-failed\" id=\"search-error\">The search failed: {}</p>",
                escape(&e.to_string())
            ),
            Err(e) => format!(
                "<p class=\"outcome-failed\" id=\"search-error\">The search failed: {}</p>",
                escape(&e.to_string())
            ),
        }
    };
    Html(
        SEARCH
            .replace("{{q}}", &escape(&text))
            .replace("{{results}}", &results),
    )
    .into_response()
}

/// Every answer (`{results: [{plugin, output}], stopped_by}`) as a list, each hit with its
/// plugin.
fn search_results(found: &Value) -> String {
    let hits: Vec<String> = found["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let plugin = r["plugin"].as_str().unwrap_or_default();
            let hit = &r["output"];
            let text = |k: &str| escape(hit[k].as_str().unwrap_or_default());
            // Only paths on this host are links: a plugin's answer is not trusted with
            // where a visitor goes.
            let href = hit["href"].as_str().unwrap_or_default();
            let title = if href.starts_with('/') && !href.starts_with("//") {
                format!("<a href=\"{}\">{}</a>", escape(href), text("title"))
            } else {
                text("title")
            };
            format!(
                "<li class=\"card\" data-from=\"{}\"><strong>{title}</strong> <span class=\"badge\">from {}</span><p>{}</p></li>",
                escape(plugin),
                escape(plugin),
                text("text")
            )
        })
        .collect();
    if hits.is_empty() {
        "<p id=\"no-results\">No plugin found anything.</p>".to_owned()
    } else {
        let n = hits.len();
        format!(
            "<p>{n} answer{}.</p><ol id=\"results\">{}</ol>",
            if n == 1 { "" } else { "s" },
            hits.concat()
        )
    }
}

/// HTML-escapes text, and `{` too: the pages are filled in by replacing `{{…}}`, so text
/// holding `{{note}}` would otherwise be filled in after it is placed.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
        .replace('{', "&#123;")
}

fn render(name: &str, email: &str, errors: &BTreeMap<String, Vec<String>>, note: &str) -> String {
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
}

/// `GET /demo`.
async fn form() -> Html<String> {
    Html(render("", "", &BTreeMap::new(), ""))
}

#[derive(Deserialize)]
struct Signup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// The request as the reference events carry it.
fn conn(headers: &HeaderMap, peer: SocketAddr) -> Conn {
    let mut c = Conn::new("POST", "/demo/signup").peer(peer);
    if let Some(ua) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        c = c.header("user-agent", ua);
    }
    c
}

fn note(outcome: &Result<Value, String>) -> String {
    match outcome {
        Ok(extra) if !extra.is_null() => format!(
            "<details class=\"note\"><summary>What the plugins added</summary><pre>{}</pre></details>",
            escape(&serde_json::to_string_pretty(extra).unwrap_or_default())
        ),
        Ok(_) => String::new(),
        Err(e) => format!("<p class=\"note\">A plugin failed: {}</p>", escape(e)),
    }
}

/// Records a call of the demo in the activity log and on the stream.
fn record(state: &Shared, event: &str, outcome: &Result<Value, String>) {
    let (status, extra) = match outcome {
        Ok(extra) => (
            ActivityStatus::Info,
            json!({ "summary": format!("{event} called by the demo host's sign-up form"), "added": extra }),
        ),
        Err(e) => (
            ActivityStatus::Error,
            json!({ "summary": format!("{event} called by the demo host's sign-up form failed: {e}"), "error": e }),
        ),
    };
    let mut entry = NewActivity::new(ActivityKind::Event, "call", status, Some(event), extra);
    entry.section_id = Some("user".into());
    if let Ok(v) = serde_json::to_value(&entry) {
        state.hub.publish("activity", v);
    }
    if !state.log.record(entry) {
        tracing::warn!(event, "activity log full: demo call not recorded");
    }
}

/// `POST /demo/signup`.
async fn signup(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<Signup>,
) -> Response {
    let email = f.email.trim().to_lowercase();
    let mut error = ErrorPayload::new("validation_failed", "the sign-up form has errors");
    if f.name.trim().is_empty() {
        error = error.field("name", "Enter your name.");
    }
    if !email.contains('@') {
        error = error.field("email", "An email address must contain @.");
    } else if state
        .demo
        .emails
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&email)
    {
        error = error.field("email", "This email is already taken.");
    }
    if f.password.chars().count() < 8 {
        error = error.field("password", "A password needs at least 8 characters.");
    }
    let conn = conn(&headers, peer);
    let ip = Ip::from(peer.ip());

    if !error.fields.is_empty() {
        let fields = error.fields.clone();
        let s = OnUserAfterSaveFailure {
            error,
            ip,
            endpoint: Endpoint::Html,
            status: SaveStatus::Added,
            conn,
            modifier_user: ModifierUser::SelfUser,
            extra: Value::Null,
        };
        let outcome = fire(state.failure_hook.clone(), s, |s| s.extra).await;
        record(&state, OnUserAfterSaveFailure::NAME, &outcome);
        let page = render(&f.name, &f.email, &fields, &note(&outcome));
        return (StatusCode::UNPROCESSABLE_ENTITY, Html(page)).into_response();
    }

    let added = state
        .demo
        .emails
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(email.clone());
    if !added {
        // Taken between the check and now: show the form again.
        let mut fields = BTreeMap::new();
        fields.insert(
            "email".to_owned(),
            vec!["This email is already taken.".to_owned()],
        );
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Html(render(&f.name, &f.email, &fields, "")),
        )
            .into_response();
    }
    let mut user = UserInfo::new();
    user.insert("name".into(), json!(f.name.trim()));
    user.insert("email".into(), json!(email));
    let s = OnUserAfterSave {
        user_info: user,
        ip,
        endpoint: Endpoint::Html,
        status: SaveStatus::Added,
        conn,
        modifier_user: ModifierUser::SelfUser,
        extra: Value::Null,
    };
    let outcome = fire(state.save_hook.clone(), s, |s| s.extra).await;
    record(&state, OnUserAfterSave::NAME, &outcome);
    Html(
        WELCOME
            .replace("{{name}}", &escape(f.name.trim()))
            .replace("{{note}}", &note(&outcome)),
    )
    .into_response()
}

/// Fires an event on the blocking pool (wasm steps run synchronously); the plugins' effect
/// is the resulting state's `extra`, or why the call failed.
async fn fire<E: Event>(
    hook: plugboard_engine::Hook<E>,
    state: E::State,
    extra: fn(E::State) -> Value,
) -> Result<Value, String> {
    match tokio::task::spawn_blocking(move || hook.call(state)).await {
        Ok(Ok(s)) => Ok(extra(s)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::{DEMO_USERS, Users};

    #[test]
    fn the_demo_forgets_its_oldest_sign_up_past_its_bound() {
        let mut users = Users::default();
        for i in 0..DEMO_USERS {
            assert!(users.insert(format!("u{i}@example.test")));
        }
        assert!(!users.insert("u0@example.test".into()), "still taken");
        assert!(users.insert("new@example.test".into()));
        assert!(
            !users.contains("u0@example.test"),
            "the oldest is forgotten"
        );
        assert!(users.contains("u1@example.test"));
        assert_eq!(users.taken.len(), DEMO_USERS);
        assert_eq!(users.order.len(), DEMO_USERS);
    }
}
