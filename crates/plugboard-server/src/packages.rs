//! The package endpoints (`/api/packages…`): list, upload, install from a URL, roll back,
//! uninstall, and the index's newer versions. Only with the `packages` feature, which
//! brings the installer (and wasmtime); a host serving the API without an installer
//! answers them 404.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::routing::{get, post};
use plugboard_installer::{
    Capabilities, Grant, InstallAction, InstallOptions, Installed, Installer, Outdated,
    PackageGrants, PackageStatus,
};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::Shared;
use crate::api::blocking;
use crate::error::{ApiError, ErrorBody};
use crate::views::{Overridden, Uninstalled};

type ApiResult<T> = Result<T, ApiError>;

/// The package routes.
pub(crate) fn routes(state: &Shared) -> axum::Router<Shared> {
    axum::Router::new()
        .route(
            "/api/packages",
            get(packages)
                .post(upload_package)
                .layer(DefaultBodyLimit::max(state.options.upload_limit)),
        )
        .route("/api/packages/url", post(install_url))
        .route("/api/packages/outdated", get(outdated))
        .route("/api/packages/{name}", axum::routing::delete(uninstall))
        .route("/api/packages/{name}/rollback", post(rollback))
        .route("/api/grants", get(grants))
        .route(
            "/api/packages/{name}/grants",
            get(package_grants).post(change_grants),
        )
        .route("/api/packages/{name}/settings", get(package_settings))
}

/// A package's settings with the schema that checks them: what the dashboard's form is
/// drawn from.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct PackageSettings {
    /// The setting they are stored as (`package.NAME`): `PUT /api/settings/{setting}`
    /// changes them.
    setting: String,
    /// The package's `settings.schema.json` (null: it ships none, any JSON is taken).
    schema: Option<serde_json::Value>,
    /// The values, without the secret fields (null: none set).
    configs: Option<serde_json::Value>,
    /// The fields the schema marks secret (write-only).
    secret_fields: Vec<String>,
    /// The secret fields that are set (their values are never returned).
    secrets: Vec<String>,
}

/// `GET /api/packages/{name}/settings`: the package's settings schema and values (secret
/// fields only named).
#[utoipa::path(get, path = "/api/packages/{name}/settings", tag = "packages",
    params(("name" = String, Path, description = "The package")),
    responses((status = 200, body = PackageSettings), (status = 404, body = ErrorBody)))]
pub(crate) async fn package_settings(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<PackageSettings>> {
    blocking(move || {
        installer(&state)?;
        let schema = plugboard_installer::settings::package_schema(&state.store, &name)?;
        let setting = plugboard_installer::settings::package_setting(&name);
        let stored = state.store.settings().get(&setting)?;
        let (configs, secrets) = match stored.as_ref().map(plugboard_store::redact_secrets) {
            Some((c, s)) => (Some(c), s),
            None => (None, Vec::new()),
        };
        Ok(Json(PackageSettings {
            setting,
            secret_fields: schema
                .as_ref()
                .map(|s| s.secret_fields())
                .unwrap_or_default(),
            schema: schema.map(|s| s.schema().clone()),
            configs,
            secrets,
        }))
    })
    .await
}

/// `GET /api/grants`: every installed package's capabilities, asked and granted.
#[utoipa::path(get, path = "/api/grants", tag = "packages",
    responses((status = 200, body = Vec<PackageGrants>)))]
pub(crate) async fn grants(State(state): State<Shared>) -> ApiResult<Json<Vec<PackageGrants>>> {
    blocking(move || Ok(Json(installer(&state)?.grants()?))).await
}

/// `GET /api/packages/{name}/grants`.
#[utoipa::path(get, path = "/api/packages/{name}/grants", tag = "packages",
    params(("name" = String, Path, description = "The package")),
    responses((status = 200, body = PackageGrants), (status = 404, body = ErrorBody)))]
pub(crate) async fn package_grants(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<PackageGrants>> {
    blocking(move || {
        installer(&state)?;
        Ok(Json(plugboard_installer::package_grants(
            &state.store,
            &name,
        )?))
    })
    .await
}

/// A change of a package's grants.
#[derive(Deserialize, ToSchema)]
pub(crate) struct GrantChange {
    /// Capabilities to grant, e.g. `kv,http=api.example.com` (`all`: what it asks for).
    #[serde(default)]
    #[schema(
        pattern = "^ *(all|none|log|settings|clock|random|kv|http|emit)(=[^,]*)? *(, *(all|none|log|settings|clock|random|kv|http|emit)(=[^,]*)? *)*$"
    )]
    grant: Option<String>,
    /// Capabilities to revoke, e.g. `kv` (`all`: everything); in effect on the plugin's
    /// next call, in every host sharing the database within a second.
    #[serde(default)]
    #[schema(
        pattern = "^ *(all|none|log|settings|clock|random|kv|http|emit)(=[^,]*)? *(, *(all|none|log|settings|clock|random|kv|http|emit)(=[^,]*)? *)*$"
    )]
    revoke: Option<String>,
}

/// `POST /api/packages/{name}/grants`: grants and revokes capabilities (neither: the
/// grants as they are).
#[utoipa::path(post, path = "/api/packages/{name}/grants", tag = "packages",
    params(("name" = String, Path, description = "The package")),
    request_body = GrantChange,
    responses((status = 200, body = PackageGrants), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn change_grants(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<Json<PackageGrants>> {
    // An object only (serde would read a struct from an array too).
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body is a JSON object: {\"grant\": …, \"revoke\": …}",
        ));
    }
    let body: GrantChange =
        serde_json::from_value(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    blocking(move || {
        let installer = installer(&state)?;
        let asked = plugboard_installer::package_grants(&state.store, &name)?;
        let read = |text: Option<&str>, base: &Capabilities| -> ApiResult<Capabilities> {
            text.map_or(Ok(Capabilities::none()), |t| {
                Capabilities::parse_grant(t, base).map_err(|e| ApiError::bad_request(e.to_string()))
            })
        };
        let add = read(body.grant.as_deref(), asked.asked())?;
        // `all` revokes whatever is granted, asked for or not.
        let remove = read(
            body.revoke.as_deref(),
            &asked.asked().union(asked.granted()),
        )?;
        Ok(Json(installer.change_grants(&name, &add, &remove)?))
    })
    .await
}

/// This host's installer, or the 404 of a host that has none.
fn installer(state: &Shared) -> ApiResult<Installer> {
    state
        .installer
        .clone()
        .ok_or_else(|| ApiError::not_found("this host has no package installer"))
}

fn count_install<T>(state: &Shared, action: &str, r: &ApiResult<T>) {
    match r {
        Ok(_) => state.metrics.install(action, "ok"),
        Err(e) => state.metrics.install(action, e.code),
    }
}

fn installed_action(r: &ApiResult<Installed>, fallback: InstallAction) -> &'static str {
    r.as_ref().map_or(fallback, |i| i.action).as_str()
}

/// `GET /api/packages`.
#[utoipa::path(get, path = "/api/packages", tag = "packages",
    responses((status = 200, body = Vec<PackageStatus>)))]
pub(crate) async fn packages(State(state): State<Shared>) -> ApiResult<Json<Vec<PackageStatus>>> {
    blocking(move || Ok(Json(installer(&state)?.packages()?))).await
}

/// Options of an upload.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UploadQuery {
    /// The sha256 the file must have (64 hexadecimal digits).
    #[param(pattern = "^[0-9a-fA-F]{64}$")]
    sha256: Option<String>,
    /// Install even if the same or a newer version is installed.
    #[serde(default)]
    force: bool,
    /// What to grant the package beyond what it holds: `all` (what it asks for), or
    /// capabilities such as `kv,log,http=api.example.com`. Without it, a package asking
    /// for more than it holds is refused with 409 `consent_required`, whose details list
    /// what it asks for.
    #[param(
        pattern = "^ *(all|none|log|settings|clock|random|kv|http|emit)(=[^,]*)? *(, *(all|none|log|settings|clock|random|kv|http|emit)(=[^,]*)? *)*$"
    )]
    grant: Option<String>,
}

/// The grant of an install request, checked before anything is read. (The document's
/// pattern for `grant` names the capabilities; a scope's own form, an origin or an event
/// name, is checked here: 400.)
fn grant(text: Option<&str>) -> ApiResult<Grant> {
    match text {
        None => Ok(Grant::Held),
        Some(t) => Grant::written(t).map_err(|e| ApiError::bad_request(e.to_string())),
    }
}

/// `POST /api/packages`: installs an uploaded `.pbpkg` (the raw body).
#[utoipa::path(post, path = "/api/packages", tag = "packages", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The .pbpkg file"),
    responses(
        (status = 200, body = Installed),
        (status = 400, description = "`bad_request`: an empty body", body = ErrorBody),
        (status = 409, description = "`conflict`: not newer; `consent_required`: the package asks for capabilities it is not granted (`details`)", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn upload_package(
    State(state): State<Shared>,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> ApiResult<Json<Installed>> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "send the .pbpkg file as the request body",
        ));
    }
    let grant = grant(q.grant.as_deref())?;
    let st = state.clone();
    let result = blocking(move || {
        let opts = InstallOptions {
            sha256: q.sha256,
            force: q.force,
            grant,
        };
        Ok(installer(&st)?.install_bytes(body.to_vec(), "upload", "upload", &opts)?)
    })
    .await;
    count_install(
        &state,
        installed_action(&result, InstallAction::Install),
        &result,
    );
    result.map(Json)
}

/// The body of an install from a URL.
#[derive(Deserialize, ToSchema)]
pub(crate) struct UrlInstall {
    /// An `http(s)://` URL.
    #[schema(pattern = "^https?://")]
    url: String,
    /// The sha256 the file must have, 64 hexadecimal digits (required unless the host is
    /// trusted).
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    sha256: Option<String>,
    /// Install even if the same or a newer version is installed.
    #[serde(default)]
    force: bool,
    /// What to grant, as for an upload (`all`, or e.g. `kv,http=api.example.com`).
    #[schema(
        pattern = "^ *(all|none|log|settings|clock|random|kv|http|emit)(=[^,]*)? *(, *(all|none|log|settings|clock|random|kv|http|emit)(=[^,]*)? *)*$"
    )]
    grant: Option<String>,
}

/// `POST /api/packages/url`: downloads and installs; progress goes to the stream as
/// `install` events.
#[utoipa::path(post, path = "/api/packages/url", tag = "packages", request_body = UrlInstall,
    responses(
        (status = 200, body = Installed),
        (status = 400, body = ErrorBody),
        (status = 409, description = "`conflict`: not newer; `consent_required`: the package asks for capabilities it is not granted (`details`)", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(crate) async fn install_url(
    State(state): State<Shared>,
    Json(body): Json<UrlInstall>,
) -> ApiResult<Json<Installed>> {
    if !(body.url.starts_with("http://") || body.url.starts_with("https://")) {
        return Err(ApiError::bad_request(
            "the url must start with http:// or https://",
        ));
    }
    let grant = grant(body.grant.as_deref())?;
    let st = state.clone();
    let result = blocking(move || {
        let opts = InstallOptions {
            sha256: body.sha256,
            force: body.force,
            grant,
        };
        let url = body.url;
        let mut last = Instant::now();
        let mut progress = |received: u64, total: Option<u64>| {
            let done = total == Some(received);
            if done || last.elapsed().as_millis() >= 100 {
                last = Instant::now();
                st.hub.publish(
                    "install",
                    json!({ "url": url, "received": received, "total": total }),
                );
            }
        };
        Ok(installer(&st)?.install(&url, &opts, &mut progress)?)
    })
    .await;
    count_install(
        &state,
        installed_action(&result, InstallAction::Install),
        &result,
    );
    result.map(Json)
}

/// `POST /api/packages/{name}/rollback`.
#[utoipa::path(post, path = "/api/packages/{name}/rollback", tag = "packages",
    params(("name" = String, Path, description = "The package")),
    responses((status = 200, body = Installed), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "`invalid_state`: no previous version to roll back to", body = ErrorBody)))]
pub(crate) async fn rollback(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<Installed>> {
    let st = state.clone();
    let result = blocking(move || Ok(installer(&st)?.rollback(&name)?)).await;
    count_install(&state, "rollback", &result);
    result.map(Json)
}

/// Options of an uninstall.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UninstallQuery {
    /// Uninstall even if other packages depend on it (their plugins are held).
    #[serde(default)]
    cascade: bool,
}

/// `DELETE /api/packages/{name}`.
#[utoipa::path(delete, path = "/api/packages/{name}", tag = "packages",
    params(("name" = String, Path, description = "The package"), UninstallQuery),
    responses((status = 200, body = Uninstalled),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn uninstall(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<UninstallQuery>,
) -> ApiResult<Json<Uninstalled>> {
    let st = state.clone();
    let result = blocking(move || {
        let done = installer(&st)?.uninstall(&name, q.cascade)?;
        Ok(Uninstalled {
            overridden: Overridden::list(&done.overridden),
            uninstalled: name,
            held: done.held,
        })
    })
    .await;
    count_install(&state, "uninstall", &result);
    result.map(Json)
}

/// `GET /api/packages/outdated`: newer versions in the configured index.
#[utoipa::path(get, path = "/api/packages/outdated", tag = "packages",
    responses((status = 200, body = Vec<Outdated>), (status = 409, description = "`invalid_state`: no index configured", body = ErrorBody)))]
pub(crate) async fn outdated(State(state): State<Shared>) -> ApiResult<Json<Vec<Outdated>>> {
    blocking(move || Ok(Json(installer(&state)?.outdated(None)?))).await
}
