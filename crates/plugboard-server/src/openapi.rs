//! The OpenAPI document of the JSON API, generated from the handlers' annotations.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

#[cfg(feature = "packages")]
use crate::packages;
use crate::{api, error, kv, metrics, series, stream};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Plugboard admin API",
        description = "Events, plugins, packages, activity, settings, packages' key-value data and a live stream of a Plugboard host. Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        api::health, api::ready, api::api_health, api::session,
        api::events, api::event, api::call_event,
        api::plugins, api::plugin, api::plugin_action,
        api::activity, api::settings, api::setting, api::put_setting, api::delete_setting,
        api::profile, series::series, api::openapi_json, stream::stream, metrics::metrics,
        kv::list, kv::entry, kv::delete, kv::clear,
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
        packages::grants,
        packages::package_grants,
        packages::change_grants,
        packages::package_settings,
    ),
    components(schemas(packages::UrlInstall, packages::GrantChange))
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

/// The error answers every operation may give, documented on each: 400 (a path, query or
/// body that does not parse), 401 (no or a wrong credential, where one is needed), and
/// for operations with a body 413 (too large), 415 (not its content type) and 422 (JSON
/// of the wrong shape).
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::HttpMethod;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            for method in [
                HttpMethod::Get,
                HttpMethod::Put,
                HttpMethod::Post,
                HttpMethod::Delete,
            ] {
                let op = match method {
                    HttpMethod::Get => item.get.as_mut(),
                    HttpMethod::Put => item.put.as_mut(),
                    HttpMethod::Post => item.post.as_mut(),
                    HttpMethod::Delete => item.delete.as_mut(),
                    _ => None,
                };
                let Some(op) = op else { continue };
                let public = op
                    .security
                    .as_ref()
                    .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
                let responses = &mut op.responses.responses;
                let mut add = |code: &str, description: &str| {
                    responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error(description).into());
                };
                if !public {
                    add(
                        "400",
                        "`bad_request`: a path, query or body that does not parse",
                    );
                    add("401", "`unauthorized`: no admin token or session");
                }
                if op.request_body.is_some() {
                    add("413", "`too_large`: the body is over the limit");
                    add(
                        "415",
                        "`unsupported_media_type`: not the body's content type",
                    );
                    add("422", "`bad_request`: JSON of the wrong shape");
                }
            }
        }
    }
}

/// The OpenAPI document of the admin API (also served at `GET /api/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    #[cfg(feature = "packages")]
    doc.merge(PackagesDoc::openapi());
    // After the merge, so that the package endpoints get them too.
    CommonErrors.modify(&mut doc);
    doc
}
