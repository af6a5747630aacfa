//! HTTP caching of GraphQL reads, so a browser or a CDN can hold the public catalogue.
//!
//! - An anonymous `GET /graphql` (no session cookie, no `Authorization`) whose every
//!   field the schema marks as publicly cacheable (its `cache_control` attributes: the
//!   catalogue, `canteen`), answered without errors, carries `Cache-Control: public,
//!   max-age=N, stale-while-revalidate=30` (N is the smallest `max_age` of its fields)
//!   and a weak `ETag`: the SHA-256 of its media type and of the answer with every
//!   object's keys sorted. (Weak, because async-graphql puts the fields of an object in
//!   the order they finished resolving, not always the query's, so two equal answers
//!   are not always the same bytes: see [`canonical_json`].) A request whose
//!   `If-None-Match` names that tag is answered 304 with no body. `Vary` names what else
//!   the answer depends on (`Accept`, `Cookie`, `Authorization`), so a cache never
//!   hands a partner the anonymous answer, or the other way round.
//! - The same read with credentials (a partner's session, an API token) is the same
//!   answer, but a cache in between must not hold it for others, nor anyone keep it
//!   unchecked: `Cache-Control: private, no-cache` with the same `ETag`, so the
//!   partner's own browser revalidates it and gets a 304 while it is unchanged.
//! - Every other GraphQL answer (POST, a field that depends on who asks, any error) is
//!   `Cache-Control: private, no-store`.
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
    /// Only the asker may keep it, and must revalidate it each time.
    Revalidate,
    /// Nobody may keep it.
    NoStore,
}

/// Who asked, as far as caching goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asker {
    /// A GET without any credential.
    AnonymousGet,
    /// A GET with a session cookie or a token.
    CredentialedGet,
    /// A POST: never cached.
    Post,
}

impl Cacheability {
    /// The cacheability of a GraphQL answer: kept only when every field asked for may
    /// be (the schema's `cache_control`), nothing failed, and it came by GET; public
    /// only when it was asked for without credentials.
    pub fn of(asker: Asker, response: &BatchResponse) -> Self {
        let BatchResponse::Single(single) = response else {
            return Self::NoStore;
        };
        let policy = single.cache_control;
        let max_age = match u32::try_from(policy.max_age) {
            Ok(max_age) if max_age > 0 && policy.public && single.errors.is_empty() => max_age,
            _ => return Self::NoStore,
        };
        match asker {
            Asker::AnonymousGet => Self::Public { max_age },
            Asker::CredentialedGet => Self::Revalidate,
            Asker::Post => Self::NoStore,
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

/// Whether `If-None-Match` lists this ETag or `*`, compared weakly (RFC 9110, 13.1.2:
/// `W/"x"` and `"x"` match).
pub fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    let etag = etag.trim_start_matches("W/");
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// JSON with every object's keys in sorted order, and no spaces: one form for answers
/// that are equal as JSON. async-graphql 7 collects an object's fields from a
/// `FuturesUnordered` (`resolver_utils::container::do_resolve_container`), so a field
/// that waits on the database can come after one listed later in the query; the fix
/// that belongs upstream is to put the results back in the query's order, as the
/// GraphQL spec asks for (7.2.2, "Serialized Map Ordering").
pub fn canonical_json(value: &serde_json::Value, out: &mut Vec<u8>) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(&serde_json::Value::String(key.clone()), out);
                out.push(b':');
                canonical_json(value, out);
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

/// A cacheable answer: the body with its caching headers, or 304 when the client (or
/// a cache in between) already holds an equal answer. `None` for
/// [`Cacheability::NoStore`], or an answer that does not serialise.
pub fn cacheable_answer(
    cacheability: Cacheability,
    request: &HeaderMap,
    content_type: &'static str,
    answer: &BatchResponse,
) -> Option<Response> {
    let cache_control = match cacheability {
        Cacheability::Public { max_age } => {
            format!("public, max-age={max_age}, stale-while-revalidate={STALE_WHILE_REVALIDATE}")
        }
        Cacheability::Revalidate => "private, no-cache".to_owned(),
        Cacheability::NoStore => return None,
    };
    // The body as async-graphql ordered it; the tag of its canonical form.
    let body = serde_json::to_vec(answer).ok()?;
    let value = serde_json::to_value(answer).ok()?;
    let mut canonical = Vec::with_capacity(body.len());
    canonical_json(&value, &mut canonical);
    let mut digest = Sha256::new();
    digest.update(content_type.as_bytes());
    digest.update([0]);
    digest.update(&canonical);
    let hash = digest.finalize();
    let etag = format!("W/\"{}\"", hex(&hash[..16]));
    let headers = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, cache_control),
        (header::VARY, "Accept, Cookie, Authorization".to_owned()),
    ];
    if matches_etag(request, &etag) {
        return Some((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    Some((headers, [(header::CONTENT_TYPE, content_type)], body).into_response())
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
    fn only_a_get_of_public_fields_without_errors_is_kept_and_only_anonymous_is_public() {
        use Asker::*;
        use Cacheability::*;
        assert_eq!(
            Cacheability::of(AnonymousGet, &answer(5, true, false)),
            Public { max_age: 5 }
        );
        assert_eq!(
            Cacheability::of(CredentialedGet, &answer(5, true, false)),
            Revalidate
        );
        assert_eq!(Cacheability::of(Post, &answer(5, true, false)), NoStore);
        for asker in [AnonymousGet, CredentialedGet] {
            assert_eq!(Cacheability::of(asker, &answer(5, false, false)), NoStore);
            assert_eq!(Cacheability::of(asker, &answer(5, true, true)), NoStore);
            // No field asked to be cached, or one said never.
            assert_eq!(Cacheability::of(asker, &answer(0, true, false)), NoStore);
            assert_eq!(Cacheability::of(asker, &answer(-1, true, false)), NoStore);
        }
        let BatchResponse::Single(single) = answer(5, true, false) else {
            unreachable!()
        };
        let batch = BatchResponse::Batch(vec![single]);
        assert_eq!(Cacheability::of(AnonymousGet, &batch), NoStore);
    }

    #[test]
    fn the_tag_names_the_body_and_its_media_type_and_if_none_match_gets_a_304() {
        let public = Cacheability::Public { max_age: 5 };
        let answer = |headers: &HeaderMap, media: &'static str, body: &str| {
            let data: serde_json::Value = serde_json::from_str(body).unwrap();
            let response =
                async_graphql::Response::new(async_graphql::Value::from_json(data).unwrap());
            cacheable_answer(public, headers, media, &BatchResponse::Single(response)).unwrap()
        };
        let empty = HeaderMap::new();
        let first = answer(
            &empty,
            "application/json",
            r#"{"a":1,"b":[1,{"c":2,"d":3}]}"#,
        );
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].clone();
        assert_eq!(
            first.headers()[header::CACHE_CONTROL],
            "public, max-age=5, stale-while-revalidate=30"
        );
        let mut asking = HeaderMap::new();
        asking.insert(header::IF_NONE_MATCH, etag.clone());
        // With the first answer's tag: 304 for an equal answer (its fields in any
        // order), 200 for any other (a value, a list's order, the media type).
        for (media, body, status) in [
            (
                "application/json",
                r#"{"a":1,"b":[1,{"c":2,"d":3}]}"#,
                StatusCode::NOT_MODIFIED,
            ),
            (
                "application/json",
                r#"{"b":[1,{"d":3,"c":2}],"a":1}"#,
                StatusCode::NOT_MODIFIED,
            ),
            (
                "application/json",
                r#"{"a":2,"b":[1,{"c":2,"d":3}]}"#,
                StatusCode::OK,
            ),
            (
                "application/json",
                r#"{"a":1,"b":[{"c":2,"d":3},1]}"#,
                StatusCode::OK,
            ),
            (
                "application/graphql-response+json; charset=utf-8",
                r#"{"a":1,"b":[1,{"c":2,"d":3}]}"#,
                StatusCode::OK,
            ),
        ] {
            let again = answer(&asking, media, body);
            assert_eq!(again.status(), status, "{media} {body}");
            if status == StatusCode::NOT_MODIFIED {
                assert_eq!(again.headers()[header::ETAG], etag);
            }
        }
        assert!(etag.to_str().unwrap().starts_with("W/\""));
        let data = async_graphql::Value::from_json(
            serde_json::from_str(r#"{"a":1,"b":[1,{"c":2,"d":3}]}"#).unwrap(),
        )
        .unwrap();
        let same = BatchResponse::Single(async_graphql::Response::new(data));
        let private =
            cacheable_answer(Cacheability::Revalidate, &asking, "application/json", &same).unwrap();
        assert_eq!(private.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            private.headers()[header::CACHE_CONTROL],
            "private, no-cache"
        );
        let none = cacheable_answer(Cacheability::NoStore, &empty, "application/json", &same);
        assert!(none.is_none());
    }
}
