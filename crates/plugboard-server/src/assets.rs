//! The dashboard's static files, embedded in the binary: `GET /` (the app, for
//! authenticated users; others are sent to `/login`), `/assets/app.js`, `/assets/app.css`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::Shared;

const APP_HTML: &str = include_str!("../assets/app.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/", get(app))
        .route("/assets/app.js", get(js))
        .route("/assets/app.css", get(css))
}

/// `GET /`: the dashboard, or a redirect to the login form.
async fn app(State(state): State<Shared>, headers: HeaderMap) -> Response {
    match crate::api::authenticate(&state, &headers) {
        Ok(_) => ([(header::CACHE_CONTROL, "no-store")], Html(APP_HTML)).into_response(),
        Err(_) => {
            let mut r = Redirect::to("/login").into_response();
            *r.status_mut() = StatusCode::SEE_OTHER;
            r
        }
    }
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS)
}
