//! The JSON API under `/api`, the auth middleware, login and logout, and the response
//! layers every route shares (JSON errors, request logs).

use std::net::SocketAddr;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use plugboard_core::{EventInfo, Status};
use plugboard_engine::{CallError, CallOptions, PluginInfo, Report, Target, Trace};
use plugboard_store::{Activity, ActivityKind, ActivityQuery, ActivityStatus};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{self, SESSION_COOKIE, Session};
use crate::error::{ApiError, ErrorBody, ErrorDetail, call_error_code};
use crate::views::{
    ActionResult, CallResult, Deleted, EventHealth, EventProfile, EventView, HostHealth, Liveness,
    Overridden, PluginAction, PluginSummary, PluginView, SettingView, Skipped, StepOutcome,
    StoreReadiness, TraceStep,
};
use crate::{Shared, stream};

type ApiResult<T> = Result<T, ApiError>;

/// Runs blocking work (the engine, the installer, the store) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a worker task failed: {e}")))?
}

// ----- routes -----

/// The routes that need auth.
pub(crate) fn routes(state: &Shared) -> axum::Router<Shared> {
    let router = axum::Router::new()
        .route("/api/health", get(api_health))
        .route("/api/session", get(session))
        .route("/api/events", get(events))
        .route("/api/events/{name}", get(event))
        .route("/api/events/{name}/call", post(call_event))
        .route("/api/plugins", get(plugins))
        .route("/api/plugins/{name}", get(plugin))
        .route("/api/plugins/{name}/{action}", post(plugin_action))
        .route("/api/activity", get(activity))
        .route("/api/settings", get(settings))
        .route(
            "/api/settings/{name}",
            get(setting).put(put_setting).delete(delete_setting),
        )
        .route("/api/profile", get(profile))
        .route("/api/series", get(crate::series::series))
        .route("/api/stream", get(stream::stream))
        .route("/api/openapi.json", get(openapi_json))
        .merge(crate::kv::routes());
    #[cfg(feature = "packages")]
    let router = router.merge(crate::packages::routes(state));
    #[cfg(not(feature = "packages"))]
    let _ = state;
    router
}

/// The routes open to everyone.
pub(crate) fn public_routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
}

/// Unknown paths.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// Turns every error response that is not already JSON (or an HTML page) into the JSON
/// error shape, keeping its status: rejections of extractors, body limits, 405s.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let ctype = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.starts_with("application/json") || ctype.starts_with("text/html") {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    // axum rejects a well-formed body of the wrong shape with 422; here 422 means a
    // refusal by the installer or the engine, so a malformed request is a 400.
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    let mut error = ApiError::new(status, ApiError::code_of(status), message);
    if status == StatusCode::TOO_MANY_REQUESTS {
        error.retry_after = parts
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
    }
    let mut out = error.into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// Refuses a NUL anywhere in the path or query (a name with one can be stored by no
/// database): a 400 before any handler runs.
pub(crate) async fn refuse_nul(req: Request, next: Next) -> Response {
    let uri = req.uri();
    let has_nul = |s: &str| s.to_ascii_lowercase().contains("%00");
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return ApiError::bad_request("names and parameters may not contain NUL characters")
            .into_response();
    }
    next.run(req).await
}

/// The security headers every response carries: no script but the dashboard's own file
/// (no inline script, no `eval`), no framing, no content sniffing, no referrer leaks.
pub(crate) async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Logs each request (method, path, status, time) at debug level, errors at info.
pub(crate) async fn log_request(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let micros = start.elapsed().as_micros() as u64;
    if status >= 400 {
        tracing::info!(%method, %path, status, micros, "request");
    } else {
        tracing::debug!(%method, %path, status, micros, "request");
    }
    response
}

// ----- auth -----

/// How a request proved who it is.
#[derive(Clone, Debug)]
pub(crate) enum Auth {
    /// The admin token.
    Token,
    /// A session cookie.
    Session(Session),
}

/// Checks the admin token or the session cookie (not CSRF).
pub(crate) fn authenticate(
    state: &Shared,
    headers: &HeaderMap,
) -> ApiResult<(Auth, Option<String>)> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or("");
        // The scheme is case-insensitive (RFC 9110).
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        return if state.token.matches(token.trim()) {
            Ok((Auth::Token, None))
        } else {
            Err(ApiError::unauthorized("the admin token is wrong"))
        };
    }
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| auth::cookie(c, SESSION_COOKIE));
    match id {
        Some(id) => match state.sessions.get(id) {
            Some(s) => Ok((Auth::Session(s), Some(id.to_owned()))),
            None => Err(ApiError::unauthorized(
                "the session has expired or is unknown; log in again",
            )),
        },
        None => Err(ApiError::unauthorized(
            "log in, or send the admin token as `Authorization: Bearer <token>`",
        )),
    }
}

fn csrf_error() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf",
        "missing or wrong CSRF token: send the session's token (GET /api/session) as the X-CSRF-Token header",
    )
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
}

/// The `csrf` field of a form body.
fn form_csrf(body: &[u8]) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v)
}

/// Requires the admin token or a session; a session's state-changing requests must carry
/// its CSRF token.
pub(crate) async fn require_auth(
    State(state): State<Shared>,
    req: Request,
    next: Next,
) -> Response {
    let (auth, _) = match authenticate(&state, req.headers()) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let mut req = req;
    if let Auth::Session(session) = &auth
        && changes_state(req.method())
    {
        let header_token = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ok = match header_token {
            Some(t) => auth::secret_eq(&t, &session.csrf),
            None if is_form(req.headers()) => {
                let (parts, body) = req.into_parts();
                let bytes = match axum::body::to_bytes(body, state.options.json_limit).await {
                    Ok(b) => b,
                    Err(_) => {
                        return ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "too_large",
                            "the form is too large",
                        )
                        .into_response();
                    }
                };
                let ok = form_csrf(&bytes).is_some_and(|t| auth::secret_eq(&t, &session.csrf));
                req = Request::from_parts(parts, Body::from(bytes));
                ok
            }
            None => false,
        };
        if !ok {
            return csrf_error().into_response();
        }
    }
    req.extensions_mut().insert(auth);
    next.run(req).await
}

const LOGIN_PAGE: &str = include_str!("../assets/login.html");

fn login_page(message: &str) -> String {
    let note = if message.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            crate::demo::escape(message)
        )
    };
    LOGIN_PAGE.replace("{{message}}", &note)
}

/// `GET /login`: the login form.
async fn login_form() -> Html<String> {
    Html(login_page(""))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /login`: a form with `token`; on success a session cookie and a redirect to `/`.
async fn login(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let ip = peer.ip();
    // The right token always logs in: the limit slows wrong guesses, and must not let
    // someone else (sharing an address, or a proxy) lock the operator out.
    let right = state.token.matches(form.token.trim());
    if let (false, Some(wait)) = (right, state.limiter.blocked(ip)) {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Html(login_page(
                "Too many failed logins; wait a minute and try again.",
            )),
        )
            .into_response();
        if let Ok(v) = wait.to_string().parse() {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    if !right {
        state.limiter.fail(ip);
        tracing::warn!(%ip, "failed login");
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_page("That token is not the admin token.")),
        )
            .into_response();
    }
    state.limiter.clear(ip);
    let (id, _) = match state.sessions.create() {
        Ok(s) => s,
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    let cookie = format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        state.sessions.lifetime().as_secs()
    );
    let mut r = Redirect::to("/").into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = cookie.parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /logout`: ends the session (its CSRF token is required, as header or form field)
/// and clears the cookie.
async fn logout(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Ok((Auth::Session(session), Some(id))) = authenticate(&state, &headers) {
        let token = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| form_csrf(&body));
        if !token.is_some_and(|t| auth::secret_eq(&t, &session.csrf)) {
            return csrf_error().into_response();
        }
        state.sessions.remove(&id);
    }
    let mut r = Redirect::to("/login").into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) =
        format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0").parse()
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// The current session.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct SessionInfo {
    /// `token` or `session`.
    auth: &'static str,
    /// The CSRF token to send as `X-CSRF-Token` (sessions only).
    csrf: Option<String>,
    /// When the session ends (RFC 3339; sessions only).
    expires_at: Option<String>,
}

/// `GET /api/session`.
#[utoipa::path(get, path = "/api/session", tag = "auth",
    responses((status = 200, body = SessionInfo), (status = 401, body = ErrorBody)))]
pub(crate) async fn session(axum::Extension(auth): axum::Extension<Auth>) -> Json<SessionInfo> {
    Json(match auth {
        Auth::Token => SessionInfo {
            auth: "token",
            csrf: None,
            expires_at: None,
        },
        Auth::Session(s) => SessionInfo {
            auth: "session",
            csrf: Some(s.csrf),
            expires_at: s
                .expires_at
                .format(&time::format_description::well_known::Rfc3339)
                .ok(),
        },
    })
}

// ----- health -----

/// `GET /health` (no auth): liveness, with the store's readiness as fields.
#[utoipa::path(get, path = "/health", tag = "health", security(()),
    responses((status = 200, description = "The process is up and serving calls (public: no credentials); `ready` says whether the store is reachable", body = Liveness)))]
pub(crate) async fn health(State(state): State<Shared>) -> Json<Liveness> {
    Json(liveness(&state))
}

/// `GET /ready` (no auth): 200 when operations can be served, 503 while the store is
/// unreachable (calls are still served); for load balancers' readiness probes.
#[utoipa::path(get, path = "/ready", tag = "health", security(()),
    responses(
        (status = 200, description = "The store is reachable", body = Liveness),
        (status = 503, description = "The store is unreachable; calls are still served", body = Liveness)))]
pub(crate) async fn ready(State(state): State<Shared>) -> (StatusCode, Json<Liveness>) {
    let l = liveness(&state);
    let status = if l.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(l))
}

/// Read from what the store last saw (no query here: the endpoint is public).
fn liveness(state: &crate::AppState) -> Liveness {
    let h = state.store.health();
    Liveness {
        status: "ok",
        serving: true,
        ready: h.reachable,
        store: StoreReadiness {
            backend: match state.store.backend() {
                plugboard_store::Backend::Sqlite => "sqlite",
                plugboard_store::Backend::Postgres => "postgres",
            },
            reachable: h.reachable,
            error: h.error,
            reconnects: h.reconnects,
            resyncs: h.resyncs,
            #[cfg(feature = "packages")]
            synced_generation: state.installer.as_ref().and_then(|i| i.synced_generation()),
            #[cfg(not(feature = "packages"))]
            synced_generation: None,
        },
    }
}

/// `GET /api/health`: each plugin's health check, and each event's chain health.
#[utoipa::path(get, path = "/api/health", tag = "health",
    responses((status = 200, body = HostHealth)))]
pub(crate) async fn api_health(State(state): State<Shared>) -> ApiResult<Json<HostHealth>> {
    blocking(move || {
        let engine = &state.engine;
        let mut healthy = std::collections::HashMap::new();
        let mut plugins = Vec::new();
        for p in engine.plugins() {
            if let Ok(h) = engine.health(&p.record.name) {
                healthy.insert(h.plugin.clone(), h.healthy);
                plugins.push(h);
            }
        }
        let events: Vec<EventHealth> = engine
            .events()
            .iter()
            .map(|e| {
                let chain = engine.chain(&e.name).unwrap_or_default();
                let ok = chain
                    .iter()
                    .all(|p| healthy.get(p).copied().unwrap_or(false));
                EventHealth {
                    name: e.name.to_string(),
                    chain_len: chain.len(),
                    healthy: ok,
                }
            })
            .collect();
        Ok(Json(HostHealth { plugins, events }))
    })
    .await
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

// ----- events -----

fn plugin_summary(p: &PluginInfo) -> PluginSummary {
    PluginSummary {
        name: p.record.name.clone(),
        status: p.record.status,
        priority: p.record.priority,
        kind: p.kind,
        in_chain: p.in_chain,
        wrapper: p.wrapper,
        waiting_for: p.waiting_for.clone(),
        package: p.record.package().map(str::to_owned),
    }
}

fn event_view(state: &Shared, info: &EventInfo, all: &[PluginInfo], schema: bool) -> EventView {
    EventView {
        name: info.name.to_string(),
        section: info.section.to_string(),
        doc: info.doc.to_string(),
        fields: info.fields(),
        mode: info.mode,
        wrappers: state.engine.wrappers(&info.name).unwrap_or_default(),
        chain: state.engine.chain(&info.name).unwrap_or_default(),
        plugins: all
            .iter()
            .filter(|p| p.record.event == info.name)
            .map(plugin_summary)
            .collect(),
        schema: schema.then(|| info.schema.clone()),
        output: if schema { info.output.clone() } else { None },
    }
}

/// `GET /api/events`: every event with its chain and plugins.
#[utoipa::path(get, path = "/api/events", tag = "events",
    responses((status = 200, body = Vec<EventView>)))]
pub(crate) async fn events(State(state): State<Shared>) -> Json<Vec<EventView>> {
    let all = state.engine.plugins();
    Json(
        state
            .engine
            .events()
            .iter()
            .map(|e| event_view(&state, e, &all, false))
            .collect(),
    )
}

/// `GET /api/events/{name}`: one event, with its state's JSON Schema.
#[utoipa::path(get, path = "/api/events/{name}", tag = "events",
    params(("name" = String, Path, description = "The event")),
    responses((status = 200, body = EventView), (status = 404, body = ErrorBody)))]
pub(crate) async fn event(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<EventView>> {
    let info = state
        .engine
        .event(&name)
        .ok_or_else(|| ApiError::not_found(format!("no event named `{name}` is declared")))?;
    Ok(Json(event_view(
        &state,
        &info,
        &state.engine.plugins(),
        true,
    )))
}

/// The body of a call.
#[derive(Deserialize, ToSchema)]
pub(crate) struct CallBody {
    /// The event's state, as JSON.
    #[schema(value_type = Object)]
    state: Value,
}

fn call_result(t: Trace<Value>) -> CallResult {
    // Each step is compared with the state it was given: the last reply, or the state the
    // call started from (for a collecting event, nothing gathered yet).
    let mut given = t.given.unwrap_or(Value::Null);
    let trace = t
        .steps
        .into_iter()
        .map(|s| {
            let (outcome, failure) = match s.outcome {
                plugboard_engine::StepOutcome::Continued => (StepOutcome::Continued, None),
                plugboard_engine::StepOutcome::Halted => (StepOutcome::Halted, None),
                plugboard_engine::StepOutcome::Wrapped => (StepOutcome::Wrapped, None),
                plugboard_engine::StepOutcome::Failed { failure } => {
                    (StepOutcome::Failed, Some(failure))
                }
            };
            let changes = match s.state {
                Some(replied) => {
                    let changes = crate::views::state_changes(&given, &replied);
                    given = replied;
                    changes
                }
                None => Vec::new(),
            };
            TraceStep {
                plugin: s.plugin,
                elapsed_us: s.elapsed.as_secs_f64() * 1e6,
                outcome,
                failure,
                changes,
            }
        })
        .collect();
    let (result, error) = match t.result {
        Ok(v) => (Some(v), None),
        Err(e) => (
            None,
            Some(ErrorDetail {
                code: call_error_code(&e).to_owned(),
                message: e.to_string(),
                details: None,
            }),
        ),
    };
    CallResult {
        result,
        error,
        trace,
        halted_by: t.halted_by,
    }
}

/// `POST /api/events/{name}/call`: calls the event with a JSON state and reports each
/// plugin's step.
#[utoipa::path(post, path = "/api/events/{name}/call", tag = "events",
    params(("name" = String, Path, description = "The event")),
    request_body = CallBody,
    responses(
        (status = 200, description = "The call ran; a failing plugin is reported in `error`", body = CallResult),
        (status = 400, description = "`invalid_state`: the state does not decode", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn call_event(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<CallBody>,
) -> ApiResult<Json<CallResult>> {
    if state.engine.event(&name).is_none() {
        return Err(ApiError::not_found(format!(
            "no event named `{name}` is declared"
        )));
    }
    if !body.state.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_state",
            "`state` must be a JSON object (the event's state)",
        ));
    }
    let (engine, ev, input) = (state.engine.clone(), name.clone(), body.state.clone());
    let trace =
        tokio::task::spawn_blocking(move || engine.trace_json(&ev, input, &CallOptions::default()))
            .await
            .map_err(internal)?;
    let trace = if matches!(trace.result, Err(CallError::NeedsAsync { .. })) {
        state
            .engine
            .trace_json_async(&name, body.state, &CallOptions::default())
            .await
    } else {
        trace
    };
    if let Err(e @ CallError::InvalidState { .. }) = &trace.result {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_state",
            e.to_string(),
        ));
    }
    Ok(Json(call_result(trace)))
}

// ----- plugins -----

fn plugin_view(info: PluginInfo) -> PluginView {
    PluginView {
        package: info.record.package().map(str::to_owned),
        info,
    }
}

/// Filters of the plugin list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PluginFilter {
    /// Only plugins of this event.
    event: Option<String>,
    /// Only plugins with this status.
    status: Option<Status>,
}

/// `GET /api/plugins`.
#[utoipa::path(get, path = "/api/plugins", tag = "plugins", params(PluginFilter),
    responses((status = 200, body = Vec<PluginView>), (status = 400, description = "`bad_request`: an unknown status", body = ErrorBody)))]
pub(crate) async fn plugins(
    State(state): State<Shared>,
    Query(f): Query<PluginFilter>,
) -> Json<Vec<PluginView>> {
    Json(
        state
            .engine
            .plugins()
            .into_iter()
            .filter(|p| f.event.as_ref().is_none_or(|e| *e == p.record.event))
            .filter(|p| f.status.is_none_or(|s| s == p.record.status))
            .map(plugin_view)
            .collect(),
    )
}

/// `GET /api/plugins/{name}`.
#[utoipa::path(get, path = "/api/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "The plugin")),
    responses((status = 200, body = PluginView), (status = 404, body = ErrorBody)))]
pub(crate) async fn plugin(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<PluginView>> {
    let p = state
        .engine
        .plugin(&name)
        .ok_or_else(|| ApiError::not_found(format!("no plugin named `{name}` is registered")))?;
    Ok(Json(plugin_view(p)))
}

fn action_result(action: PluginAction, plugin: String, r: Report) -> ActionResult {
    let skipped = r
        .skipped
        .into_iter()
        .map(|(plugin, e)| {
            let e = ApiError::from(e);
            Skipped {
                plugin,
                error: ErrorDetail {
                    code: e.code.to_owned(),
                    message: e.message,
                    details: e.details,
                },
            }
        })
        .collect();
    ActionResult {
        action,
        plugin,
        changed: r.changed,
        skipped,
        overridden: Overridden::list(&r.overridden),
    }
}

/// `POST /api/plugins/{name}/{action}`: `start`, `stop`, `restart`, `enable`, `delete` or
/// `unregister`.
#[utoipa::path(post, path = "/api/plugins/{name}/{action}", tag = "plugins",
    params(("name" = String, Path, description = "The plugin"),
           ("action" = PluginAction, Path, description = "What to do")),
    responses(
        (status = 200, body = ActionResult),
        (status = 400, description = "`bad_request` (unknown action) or `invalid_state` (e.g. start on a stopped plugin)", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn plugin_action(
    State(state): State<Shared>,
    Path((name, action)): Path<(String, String)>,
) -> ApiResult<Json<ActionResult>> {
    let Some(action) = PluginAction::parse(&action) else {
        return Err(ApiError::bad_request(format!(
            "unknown action `{action}`: use start, stop, restart, enable, delete or unregister"
        )));
    };
    blocking(move || {
        let engine = &state.engine;
        let report = state.store.retry_on_conflict(engine, || {
            let target = Target::Plugin(&name);
            match action {
                PluginAction::Start => engine.start(target),
                PluginAction::Stop => engine.stop(target),
                PluginAction::Restart => engine.restart(target),
                PluginAction::Enable => engine.enable(target),
                PluginAction::Delete => engine.delete(target),
                PluginAction::Unregister => engine.unregister(target),
            }
        })?;
        Ok(Json(action_result(action, name, report)))
    })
    .await
}

// ----- activity, settings, profile -----

/// Filters and a page of the activity log.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ActivityFilter {
    /// Only entries about this.
    kind: Option<ActivityKind>,
    /// Only entries that went this way.
    status: Option<ActivityStatus>,
    /// A plugin's, package's or event's name.
    subject: Option<String>,
    /// Only entries about this event: its plugins' changes and failures, and its calls.
    event: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only entries older than this id (the next page).
    before_id: Option<i64>,
}

/// `GET /api/activity`: newest first.
#[utoipa::path(get, path = "/api/activity", tag = "activity", params(ActivityFilter),
    responses((status = 200, body = Vec<Activity>), (status = 400, description = "`bad_request`: an unknown kind or status", body = ErrorBody)))]
pub(crate) async fn activity(
    State(state): State<Shared>,
    Query(f): Query<ActivityFilter>,
) -> ApiResult<Json<Vec<Activity>>> {
    if f.limit.is_some_and(|l| !(1..=1000).contains(&l)) {
        return Err(ApiError::bad_request("`limit` is 1 to 1000"));
    }
    blocking(move || {
        let q = ActivityQuery {
            kind: f.kind,
            status: f.status,
            subject: f.subject,
            event: f.event,
            before_id: f.before_id,
            limit: f.limit,
            ..ActivityQuery::default()
        };
        Ok(Json(state.store.activities(&q)?))
    })
    .await
}

fn rfc3339(t: time::OffsetDateTime) -> Option<String> {
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// `GET /api/settings`.
#[utoipa::path(get, path = "/api/settings", tag = "settings",
    responses((status = 200, body = Vec<SettingView>)))]
pub(crate) async fn settings(State(state): State<Shared>) -> ApiResult<Json<Vec<SettingView>>> {
    blocking(move || {
        let list = state.store.settings().list()?;
        Ok(Json(
            list.into_iter()
                .map(|(name, configs, at)| {
                    let (configs, secrets) = plugboard_store::redact_secrets(&configs);
                    SettingView {
                        name,
                        configs,
                        secrets,
                        updated_at: rfc3339(at),
                    }
                })
                .collect(),
        ))
    })
    .await
}

/// Settings as this host reads and writes them: through the installer's names and checks
/// (`installer` field by field, a package's settings against its schema) when it has the
/// `packages` feature, else as stored. A change is applied here at once (the installer's
/// refresh), and by the other hosts sharing the database within a second.
mod stored {
    use serde_json::Value;

    use super::ApiResult;
    use crate::Shared;

    /// The name as stored and the value.
    pub(super) fn get(state: &Shared, name: &str) -> ApiResult<(String, Option<Value>)> {
        #[cfg(feature = "packages")]
        {
            let (r, value) = plugboard_installer::settings::get(&state.store, name)?;
            Ok((r.name, value))
        }
        #[cfg(not(feature = "packages"))]
        Ok((name.to_owned(), state.store.settings().get(name)?))
    }

    /// Checks and stores a value; the name as stored.
    pub(super) fn set(state: &Shared, name: &str, value: Value) -> ApiResult<String> {
        #[cfg(feature = "packages")]
        {
            let r = plugboard_installer::settings::set(&state.store, &state.secrets, name, value)?;
            if let Some(installer) = &state.installer {
                installer.refresh_settings()?;
            }
            Ok(r.name)
        }
        #[cfg(not(feature = "packages"))]
        {
            state.store.settings().set(name, value)?;
            Ok(name.to_owned())
        }
    }

    /// Removes a value; the name as stored and whether it existed.
    pub(super) fn delete(state: &Shared, name: &str) -> ApiResult<(String, bool)> {
        #[cfg(feature = "packages")]
        {
            let (r, existed) = plugboard_installer::settings::delete(&state.store, name)?;
            if existed && let Some(installer) = &state.installer {
                installer.refresh_settings()?;
            }
            Ok((r.name, existed))
        }
        #[cfg(not(feature = "packages"))]
        Ok((name.to_owned(), state.store.settings().delete(name)?))
    }
}

/// The setting a path names (for the document: the handlers take the name as a string).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct SettingPath {
    /// The setting: `installer`, a package or one of its plugins (the package's plugin
    /// settings, stored as `package.NAME`), or one of the host's own. No control
    /// characters.
    #[param(
        min_length = 5,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    name: String,
}

/// `GET /api/settings/{name}`.
#[utoipa::path(get, path = "/api/settings/{name}", tag = "settings",
    params(SettingPath),
    responses((status = 200, description = "The setting (`name`: as stored)", body = SettingView), (status = 404, body = ErrorBody)))]
pub(crate) async fn setting(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<SettingView>> {
    blocking(move || match stored::get(&state, &name)? {
        (name, Some(configs)) => {
            let (configs, secrets) = plugboard_store::redact_secrets(&configs);
            Ok(Json(SettingView {
                name,
                configs,
                secrets,
                updated_at: None,
            }))
        }
        (name, None) => Err(ApiError::not_found(format!("no setting named `{name}`"))),
    })
    .await
}

/// `PUT /api/settings/{name}`: the body is the setting's configs, checked before they are
/// stored (`installer` field by field; a package's plugin settings against its
/// `settings.schema.json`). This host applies them at once, the others sharing the
/// database within a second.
#[utoipa::path(put, path = "/api/settings/{name}", tag = "settings",
    params(SettingPath),
    request_body(content = Value, description = "The configs"),
    responses((status = 200, description = "The setting as stored (`name`: as stored)", body = SettingView), (status = 400, description = "`invalid_setting`, naming each field", body = ErrorBody),
        (status = 404, description = "`not_found`: `package.<name>` names a package that is not installed", body = ErrorBody)))]
pub(crate) async fn put_setting(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Json(configs): Json<Value>,
) -> ApiResult<Json<SettingView>> {
    blocking(move || {
        let name = stored::set(&state, &name, configs)?;
        // Answered as stored (a secret left out was kept), without the secrets.
        let (_, stored) = stored::get(&state, &name)?;
        let (configs, secrets) = plugboard_store::redact_secrets(&stored.unwrap_or(Value::Null));
        Ok(Json(SettingView {
            name,
            configs,
            secrets,
            updated_at: None,
        }))
    })
    .await
}

/// `DELETE /api/settings/{name}`.
#[utoipa::path(delete, path = "/api/settings/{name}", tag = "settings",
    params(SettingPath),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_setting(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<Deleted>> {
    blocking(move || {
        let (name, existed) = stored::delete(&state, &name)?;
        if existed {
            Ok(Json(Deleted { deleted: name }))
        } else {
            Err(ApiError::not_found(format!("no setting named `{name}`")))
        }
    })
    .await
}

/// `GET /api/profile`: each plugin's time per event (profiling is on for every event
/// unless the server was started without it).
#[utoipa::path(get, path = "/api/profile", tag = "events",
    responses((status = 200, body = Vec<EventProfile>)))]
pub(crate) async fn profile(State(state): State<Shared>) -> ApiResult<Json<Vec<EventProfile>>> {
    let mut out = Vec::new();
    for e in state.engine.events() {
        let plugins = state.engine.profile(&e.name)?;
        if !plugins.is_empty() {
            out.push(EventProfile {
                event: e.name.to_string(),
                plugins,
            });
        }
    }
    Ok(Json(out))
}

/// `GET /api/openapi.json`.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> Response {
    match crate::openapi::openapi().to_json() {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}
