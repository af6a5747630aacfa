//! The browser client (`client/`): static files at `/`, served with headers that let
//! the browser enforce what the client promises: no inline script, no framing, no
//! MIME sniffing, no referrer leaks.
//!
//! A path that names no file falls through to the JSON 404 of the API.

use std::path::Path;

use axum::handler::HandlerWithoutStateExt as _;
use axum::http::{header, HeaderName, HeaderValue};
use tower::ServiceBuilder;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// Scripts and styles only from this origin, pictures also from `blob:` (previews of a
/// file about to be uploaded), connections only back to this origin (fetch and the
/// subscription WebSocket).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob:; connect-src 'self'; font-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The client's files, as the router's fallback service.
pub fn service(dir: &Path) -> axum::routing::Router {
    let files = ServeDir::new(dir)
        .append_index_html_on_directories(true)
        .not_found_service(super::not_found.into_service());
    let headers = ServiceBuilder::new()
        .layer(header_layer(
            header::CONTENT_SECURITY_POLICY,
            CONTENT_SECURITY_POLICY,
        ))
        .layer(header_layer(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header_layer(header::REFERRER_POLICY, "same-origin"))
        .layer(header_layer(header::X_FRAME_OPTIONS, "DENY"))
        // The client is small and changes with each release: always revalidate (the
        // ETag/Last-Modified of ServeDir make that cheap).
        .layer(header_layer(header::CACHE_CONTROL, "no-cache"));
    axum::routing::Router::new().fallback_service(headers.service(files))
}

fn header_layer(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}
