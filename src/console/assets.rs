//! The console's static files, embedded in the binary (no CDN, no build
//! step: plain ES modules and CSS under `src/console/ui/`).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// (name, content type, bytes) of every file `/console/{name}` serves.
const FILES: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("ui/app.js")),
    ("dom.js", JS, include_str!("ui/dom.js")),
    ("api.js", JS, include_str!("ui/api.js")),
    ("pages.js", JS, include_str!("ui/pages.js")),
    ("charts.js", JS, include_str!("ui/charts.js")),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("ui/style.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("ui/favicon.svg"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

/// Scripts and styles only from this server; no inline script, no frames.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        include_str!("ui/index.html"),
    )
        .into_response()
}

pub async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CONTENT_SECURITY_POLICY, CSP),
            ],
            *body,
        )
            .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, format!("no console file '{name}'"))
            .into_response(),
    }
}
