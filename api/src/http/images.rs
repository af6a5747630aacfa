//! Pictures and thumbnails, straight from the database, cached forever.
//!
//! URLs name the SHA-256 of the content, so a URL's bytes never change: responses are
//! `immutable` for a year, with the hash as `ETag` and 304 for a matching
//! `If-None-Match`. The content type is the one found by sniffing at upload, and
//! `nosniff` plus a `default-src 'none'` policy keep a browser from treating a picture
//! as anything else.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::caching::matches_etag;
use super::{json_error, AppState};
use crate::domain::picture::{content_type_of_ext, THUMBNAIL_EXT};
use crate::service::pictures::StoredFile;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/images/{file}", get(picture))
        .route("/images/{hash}/{thumb}", get(thumbnail))
}

fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such picture")
}

async fn picture(
    State(state): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some((hash, ext)) = file.split_once('.') else {
        return not_found();
    };
    if !is_hash(hash) || content_type_of_ext(ext).is_none() {
        return not_found();
    }
    let etag = format!("\"{hash}\"");
    if matches_etag(&headers, &etag) {
        return not_modified(&etag);
    }
    match state.service.picture_file(hash, ext).await {
        Ok(Some(file)) => serve(file, &etag),
        Ok(None) => not_found(),
        Err(err) => super::graphql::service_error_response(err),
    }
}

async fn thumbnail(
    State(state): State<AppState>,
    Path((hash, thumb)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !is_hash(&hash) || thumb != format!("thumb.{THUMBNAIL_EXT}") {
        return not_found();
    }
    let etag = format!("\"{hash}-thumb\"");
    if matches_etag(&headers, &etag) {
        return not_modified(&etag);
    }
    match state.service.thumbnail_file(&hash).await {
        Ok(Some(file)) => serve(file, &etag),
        Ok(None) => not_found(),
        Err(err) => super::graphql::service_error_response(err),
    }
}

fn caching_headers(etag: &str) -> [(header::HeaderName, HeaderValue); 2] {
    [
        (
            header::ETAG,
            HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"\"")),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        ),
    ]
}

fn not_modified(etag: &str) -> Response {
    (StatusCode::NOT_MODIFIED, caching_headers(etag)).into_response()
}

fn serve(file: StoredFile, etag: &str) -> Response {
    let content_type = HeaderValue::from_str(&file.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    (
        caching_headers(etag),
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'"),
            ),
        ],
        file.bytes,
    )
        .into_response()
}
