//! The operator's view of packages' key-value data (the `kv` capability): list, read,
//! delete and clear, as `plugboard kv` does. Reads and writes the store only, so a
//! native-only host serves it too (for data another host's packages wrote).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use plugboard_store::{KvEntry, KvUsage, MAX_LIST};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::Shared;
use crate::api::blocking;
use crate::error::{ApiError, ErrorBody};

type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/api/kv/{package}", get(list).delete(clear))
        .route("/api/kv/{package}/{key}", get(entry).delete(delete))
}

/// A package's data, as a path names it (for the document: the handlers take strings).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct PackagePath {
    /// The package (its key-value scope). No control characters.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    package: String,
}

/// One entry, as a path names it.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct KeyPath {
    /// The package (its key-value scope). No control characters.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    package: String,
    /// The key (percent-encoded in the path). No NUL.
    #[param(min_length = 1, max_length = 256, pattern = r"^[^\u0000]+$")]
    key: String,
}

/// Which entries to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only keys starting with this.
    #[serde(default)]
    prefix: String,
    /// Only keys after this one (the last key of the previous page).
    after: Option<String>,
    /// At most this many entries (1 to 1000; 100 by default).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /api/kv/{package}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct KvPage {
    /// The package.
    package: String,
    /// What the package holds now (expired entries included until purged).
    usage: KvUsage,
    /// The live entries, in byte order of their keys.
    entries: Vec<KvEntry>,
}

/// `GET /api/kv/{package}/{key}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct KvValue {
    /// The key.
    key: String,
    /// The value as text, when it is UTF-8.
    text: Option<String>,
    /// The value in hexadecimal, when it is not UTF-8.
    hex: Option<String>,
}

/// `DELETE /api/kv/{package}/{key}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct KvDeleted {
    /// The key removed.
    deleted: String,
}

/// `DELETE /api/kv/{package}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct KvCleared {
    /// The package.
    package: String,
    /// How many entries were removed.
    cleared: u64,
}

/// `GET /api/kv/{package}`: a page of a package's entries (without their values).
#[utoipa::path(get, path = "/api/kv/{package}", tag = "kv",
    params(PackagePath, ListQuery),
    responses((status = 200, body = KvPage)))]
pub(crate) async fn list(
    State(state): State<Shared>,
    Path(package): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<KvPage>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIST}, not {limit}"
        )));
    }
    blocking(move || {
        let kv = state.store.kv(&package)?;
        let entries = kv.list(&q.prefix, q.after.as_deref(), limit)?;
        Ok(Json(KvPage {
            usage: kv.usage()?,
            package,
            entries,
        }))
    })
    .await
}

/// `GET /api/kv/{package}/{key}`.
#[utoipa::path(get, path = "/api/kv/{package}/{key}", tag = "kv",
    params(KeyPath),
    responses((status = 200, body = KvValue), (status = 404, body = ErrorBody)))]
pub(crate) async fn entry(
    State(state): State<Shared>,
    Path((package, key)): Path<(String, String)>,
) -> ApiResult<Json<KvValue>> {
    blocking(move || {
        let value = state
            .store
            .kv(&package)?
            .get(&key)?
            .ok_or_else(|| ApiError::not_found(format!("`{package}` has no key `{key}`")))?;
        Ok(Json(match String::from_utf8(value) {
            Ok(text) => KvValue {
                key,
                text: Some(text),
                hex: None,
            },
            Err(e) => KvValue {
                key,
                text: None,
                hex: Some(e.as_bytes().iter().map(|b| format!("{b:02x}")).collect()),
            },
        }))
    })
    .await
}

/// `DELETE /api/kv/{package}/{key}`.
#[utoipa::path(delete, path = "/api/kv/{package}/{key}", tag = "kv",
    params(KeyPath),
    responses((status = 200, body = KvDeleted), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<Shared>,
    Path((package, key)): Path<(String, String)>,
) -> ApiResult<Json<KvDeleted>> {
    blocking(move || {
        if state.store.kv(&package)?.delete(&key)? {
            Ok(Json(KvDeleted { deleted: key }))
        } else {
            Err(ApiError::not_found(format!(
                "`{package}` has no key `{key}`"
            )))
        }
    })
    .await
}

/// `DELETE /api/kv/{package}`: every entry of the package.
#[utoipa::path(delete, path = "/api/kv/{package}", tag = "kv",
    params(PackagePath),
    responses((status = 200, body = KvCleared)))]
pub(crate) async fn clear(
    State(state): State<Shared>,
    Path(package): Path<String>,
) -> ApiResult<Json<KvCleared>> {
    blocking(move || {
        let cleared = state.store.kv(&package)?.clear()?;
        Ok(Json(KvCleared { package, cleared }))
    })
    .await
}
