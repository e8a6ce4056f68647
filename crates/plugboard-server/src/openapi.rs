//! The OpenAPI document of the JSON API, generated from the handlers' annotations.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

#[cfg(feature = "packages")]
use crate::packages;
use crate::{api, error, metrics, stream};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Plugboard admin API",
        description = "Events, plugins, packages, activity, settings and a live stream of a Plugboard host. Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        api::health, api::api_health, api::session,
        api::events, api::event, api::call_event,
        api::plugins, api::plugin, api::plugin_action,
        api::activity, api::settings, api::setting, api::put_setting, api::delete_setting,
        api::profile, api::openapi_json, stream::stream, metrics::metrics,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail, api::CallBody, api::SessionInfo)),
    modifiers(&Security),
    security(("bearer" = []), ("session" = []))
)]
struct ApiDoc;

/// The package endpoints, documented where the server has them.
#[cfg(feature = "packages")]
#[derive(OpenApi)]
#[openapi(
    paths(
        packages::packages,
        packages::upload_package,
        packages::install_url,
        packages::rollback,
        packages::uninstall,
        packages::outdated,
    ),
    components(schemas(packages::UrlInstall))
)]
struct PackagesDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::SESSION_COOKIE,
                "The session cookie set by POST /login; state-changing requests also need X-CSRF-Token.",
            ))),
        );
    }
}

/// The OpenAPI document of the admin API (also served at `GET /api/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    #[cfg_attr(not(feature = "packages"), allow(unused_mut))]
    let mut doc = ApiDoc::openapi();
    #[cfg(feature = "packages")]
    doc.merge(PackagesDoc::openapi());
    doc
}
