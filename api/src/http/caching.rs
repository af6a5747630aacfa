//! HTTP caching of GraphQL reads, so a browser or a CDN can hold the public catalogue.
//!
//! - An anonymous `GET /graphql` (no session cookie, no `Authorization`) whose every
//!   field the schema marks as publicly cacheable (its `cache_control` attributes: the
//!   catalogue, `canteen`), answered without errors, carries `Cache-Control: public,
//!   max-age=N, stale-while-revalidate=30` (N is the smallest `max_age` of its fields)
//!   and a strong `ETag`: the SHA-256 of its media type and body. A request whose
//!   `If-None-Match` names that tag is answered 304 with no body. `Vary` names what else
//!   the answer depends on (`Accept`, `Cookie`, `Authorization`), so a cache never
//!   hands a partner the anonymous answer, or the other way round.
//! - Every other GraphQL answer (POST, anything with credentials, a field that depends
//!   on who asks, any error) is `Cache-Control: private, no-store`.
//!
//! The 304 still runs the query: the tag is of what the answer would be now, so a
//! changed stock is never hidden behind an old tag.

use async_graphql::BatchResponse;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// How long a cache may keep serving a public answer while it fetches a fresh one.
pub const STALE_WHILE_REVALIDATE: u32 = 30;

/// What a cache may do with an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cacheability {
    /// Anyone may keep it this many seconds.
    Public { max_age: u32 },
    /// Nobody may keep it.
    NoStore,
}

impl Cacheability {
    /// The cacheability of a GraphQL answer to a request that is an anonymous GET
    /// (`anonymous_get`) or not.
    pub fn of(anonymous_get: bool, response: &BatchResponse) -> Self {
        let BatchResponse::Single(single) = response else {
            return Self::NoStore;
        };
        let policy = single.cache_control;
        match u32::try_from(policy.max_age) {
            Ok(max_age) if anonymous_get && max_age > 0 && policy.public => {
                if single.errors.is_empty() {
                    Self::Public { max_age }
                } else {
                    Self::NoStore
                }
            }
            _ => Self::NoStore,
        }
    }
}

/// `private, no-store`, unless the answer already says how it may be cached.
pub fn no_store_unless_set(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("private, no-store"));
    response
}

/// Whether `If-None-Match` lists this ETag (weak or strong) or `*`.
pub fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// A public answer: the body with its caching headers, or 304 when the client (or a
/// cache in between) already holds this very body.
pub fn public_answer(
    request: &HeaderMap,
    content_type: &'static str,
    body: Vec<u8>,
    max_age: u32,
) -> Response {
    let mut digest = Sha256::new();
    digest.update(content_type.as_bytes());
    digest.update([0]);
    digest.update(&body);
    let hash = digest.finalize();
    let etag = format!("\"{}\"", hex(&hash[..16]));
    let cache_control =
        format!("public, max-age={max_age}, stale-while-revalidate={STALE_WHILE_REVALIDATE}");
    let headers = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, cache_control),
        (header::VARY, "Accept, Cookie, Authorization".to_owned()),
    ];
    if matches_etag(request, &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(max_age: i32, public: bool, errors: bool) -> BatchResponse {
        let mut response = async_graphql::Response::new(async_graphql::Value::Null)
            .cache_control(async_graphql::CacheControl { public, max_age });
        if errors {
            response
                .errors
                .push(async_graphql::ServerError::new("boom", None));
        }
        BatchResponse::Single(response)
    }

    #[test]
    fn only_an_anonymous_get_of_public_fields_without_errors_is_public() {
        use Cacheability::*;
        assert_eq!(
            Cacheability::of(true, &answer(5, true, false)),
            Public { max_age: 5 }
        );
        assert_eq!(Cacheability::of(false, &answer(5, true, false)), NoStore);
        assert_eq!(Cacheability::of(true, &answer(5, false, false)), NoStore);
        assert_eq!(Cacheability::of(true, &answer(5, true, true)), NoStore);
        // No field asked to be cached, or one said never.
        assert_eq!(Cacheability::of(true, &answer(0, true, false)), NoStore);
        assert_eq!(Cacheability::of(true, &answer(-1, true, false)), NoStore);
        let batch = BatchResponse::Batch(vec![async_graphql::Response::new(
            async_graphql::Value::Null,
        )
        .cache_control(async_graphql::CacheControl {
            public: true,
            max_age: 5,
        })]);
        assert_eq!(Cacheability::of(true, &batch), NoStore);
    }

    #[test]
    fn the_tag_names_the_body_and_its_media_type_and_if_none_match_gets_a_304() {
        let empty = HeaderMap::new();
        let first = public_answer(&empty, "application/json", b"{\"a\":1}".to_vec(), 5);
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].clone();
        assert_eq!(
            first.headers()[header::CACHE_CONTROL],
            "public, max-age=5, stale-while-revalidate=30"
        );
        let mut asking = HeaderMap::new();
        asking.insert(header::IF_NONE_MATCH, etag.clone());
        let again = public_answer(&asking, "application/json", b"{\"a\":1}".to_vec(), 5);
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], etag);
        let changed = public_answer(&asking, "application/json", b"{\"a\":2}".to_vec(), 5);
        assert_eq!(changed.status(), StatusCode::OK);
        let other_media = public_answer(
            &asking,
            "application/graphql-response+json; charset=utf-8",
            b"{\"a\":1}".to_vec(),
            5,
        );
        assert_eq!(other_media.status(), StatusCode::OK);
    }
}
