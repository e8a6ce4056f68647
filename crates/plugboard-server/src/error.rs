//! Errors: the server's own ([`ServerError`], for starting it) and the API's ([`ApiError`],
//! every failed request), with the mapping of engine, installer and store errors to
//! stable codes and HTTP statuses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plugboard_engine::{CallError, EngineError, PersistError};
#[cfg(feature = "packages")]
use plugboard_installer::InstallError;
use plugboard_store::StoreError;
use serde::Serialize;
use serde_json::json;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: String,
        /// Why (in the message: not repeated as a source).
        error: std::io::Error,
    },
    /// The admin token file could not be read or written.
    #[error("admin token file {path}: {error}")]
    Token {
        /// The file.
        path: String,
        /// Why (in the message: not repeated as a source).
        error: std::io::Error,
    },
    /// The stored admin token hash (in the database, or an earlier version's file) is not
    /// a sha256.
    #[error("the admin token hash in {0} is damaged (not a hex sha256)")]
    DamagedToken(String),
    /// The store failed (reading or writing the admin token's hash).
    #[error(transparent)]
    Store(#[from] plugboard_store::StoreError),
    /// The system's random source failed.
    #[error("no randomness for tokens: {0}")]
    Random(String),
    /// The engine refused what the server needs (its demo hooks).
    #[error("the engine refused: {0}")]
    Engine(EngineError),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
}

// By hand rather than `#[from]`: the cause is in the message, so it is not also a source
// (a chain printed with `{:#}` would say it twice).
impl From<EngineError> for ServerError {
    fn from(e: EngineError) -> Self {
        ServerError::Engine(e)
    }
}

/// A failed API request: an HTTP status, a stable snake_case code and a human message,
/// sent as `{"error": {"code": …, "message": …}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code, e.g. `not_found`.
    pub code: &'static str,
    /// What happened, for people.
    pub message: String,
    /// Seconds to wait, for `rate_limited`.
    pub retry_after: Option<u64>,
    /// Machine-readable details (for `consent_required`: what the package asks for).
    pub details: Option<Box<serde_json::Value>>,
}

/// The body of an error, as documented in the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// The error.
    pub(crate) error: ErrorDetail,
}

/// A code and a message.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, snake_case.
    pub(crate) code: String,
    /// For people.
    pub(crate) message: String,
    /// For `consent_required`: `asks` (what the package asks for and is not granted, a
    /// line each, in words) and `grant` (the grant that installs it, e.g. `kv,log`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) details: Option<Box<serde_json::Value>>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The default code of a status, for responses produced outside the handlers (e.g. a
    /// body over the limit).
    pub(crate) fn code_of(status: StatusCode) -> &'static str {
        match status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            _ if status.is_client_error() => "bad_request",
            _ => "internal",
        }
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> serde_json::Value {
        match &self.details {
            None => json!({ "error": { "code": self.code, "message": self.message } }),
            Some(d) => {
                json!({ "error": { "code": self.code, "message": self.message, "details": d } })
            }
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let (status, code) = match &e {
            EngineError::UnknownPlugin(_) | EngineError::UnknownEvent(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            // The request is well formed; the plugin's current state refuses it.
            EngineError::Stopped(_) => (StatusCode::CONFLICT, "invalid_state"),
            EngineError::InvalidName { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            EngineError::EventConflict { .. }
            | EngineError::StateMismatch { .. }
            | EngineError::WrapperOnCollecting { .. }
            | EngineError::Cycle(_)
            | EngineError::Persist(PersistError::Conflict { .. }) => {
                (StatusCode::CONFLICT, "conflict")
            }
            EngineError::Refused { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "refused"),
            EngineError::Persist(PersistError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = match &e {
            StoreError::Invalid { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            StoreError::Conflict { .. } | StoreError::PackageConflict { .. } => {
                (StatusCode::CONFLICT, "conflict")
            }
            e if e.is_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            StoreError::DiskFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "store_full"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

#[cfg(feature = "packages")]
impl From<InstallError> for ApiError {
    fn from(e: InstallError) -> Self {
        let e = match e {
            InstallError::Store(e) => return e.into(),
            InstallError::Engine(e) => return e.into(),
            other => other,
        };
        if let InstallError::NotGranted { missing, .. } = &e {
            let mut err = ApiError::new(StatusCode::CONFLICT, "consent_required", e.to_string());
            let asks: Vec<_> = missing
                .kinds()
                .into_iter()
                .map(|c| {
                    json!({ "capability": c.name(), "scope": missing.scopes(c), "description": c.describe() })
                })
                .collect();
            err.details = Some(Box::new(
                json!({ "asks": asks, "grant": missing.to_grant() }),
            ));
            return err;
        }
        let (status, code) = match &e {
            InstallError::NotInstalled(_) => (StatusCode::NOT_FOUND, "not_found"),
            InstallError::Grant(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            InstallError::Busy(_) => (StatusCode::CONFLICT, "conflict"),
            InstallError::NotNewer { .. } | InstallError::HasDependents { .. } => {
                (StatusCode::CONFLICT, "conflict")
            }
            InstallError::NoPrevious(_) | InstallError::Index { .. } => {
                (StatusCode::CONFLICT, "invalid_state")
            }
            InstallError::InvalidSetting { .. } => (StatusCode::BAD_REQUEST, "invalid_setting"),
            // A stored secret this host cannot open (another host's key): give it again.
            InstallError::Secret { .. } => (StatusCode::CONFLICT, "secret_unavailable"),
            InstallError::Package(_)
            | InstallError::Fetch(_)
            | InstallError::Component { .. }
            | InstallError::Dependencies { .. }
            | InstallError::UnknownEvent { .. }
            | InstallError::NameTaken { .. }
            | InstallError::Unhealthy { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "refused"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// The code of a call error, as reported in a call's `error` field.
pub(crate) fn call_error_code(e: &CallError) -> &'static str {
    match e {
        CallError::UnknownEvent(_) => "not_found",
        CallError::InvalidState { .. } => "invalid_state",
        CallError::NeedsAsync { .. } => "needs_async",
        CallError::PluginFailed { .. } => "plugin_failed",
        _ => "call_failed",
    }
}
