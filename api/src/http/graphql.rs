//! `/graphql` over HTTP.
//!
//! - `POST` takes `application/json` only. Anything else (`text/plain`, forms) is 415:
//!   those are the content types a cross-site HTML form or a "simple" cross-origin fetch
//!   can send with the partner's cookie, so refusing them is the CSRF defence. A JSON
//!   POST from another origin needs a CORS preflight, which this server never grants.
//! - `GET` with `?query=` runs read-only queries; a mutation over GET is 405. Without a
//!   query it serves GraphiQL, when enabled.
//! - A batch (a JSON array) may hold at most `max_batch` operations.
//!
//! Error codes are set by the schema itself (`graphql::ErrorCodes`); this layer only
//! turns a failure caused by an unavailable database into a 503 with `Retry-After`.

use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::OperationType;
use async_graphql::{BatchRequest, BatchResponse, Request, ServerError, Variables};
use axum::body::{to_bytes, Body};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_sessions::Session;

use super::{auth, json_error, with_retry_after, AppState};
use crate::error::ServiceError;
use crate::graphql::{request_data, RequestAuth};
use crate::http::session::PartnerSession;

pub fn router() -> Router<AppState> {
    Router::new().route("/graphql", get(get_graphql).post(post_graphql))
}

async fn post_graphql(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !is_json(&headers) {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_USER_INPUT",
            "POST /graphql needs Content-Type: application/json",
        );
    }
    let limit = state.settings.body_limit;
    let too_large = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BAD_USER_INPUT",
            &format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return too_large();
    }
    let bytes = match to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => return too_large(),
    };
    let batch: BatchRequest = match serde_json::from_slice(&bytes) {
        Ok(batch) => batch,
        Err(err) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                &format!("the body is not a GraphQL request: {err}"),
            )
        }
    };
    if let BatchRequest::Single(request) = &batch {
        if request.query.trim().is_empty() {
            return json_error(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                "the request has no query",
            );
        }
    }
    if let BatchRequest::Batch(requests) = &batch {
        if requests.len() > state.settings.max_batch {
            return json_error(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                &format!(
                    "a batch may hold at most {} operations, not {}",
                    state.settings.max_batch,
                    requests.len()
                ),
            );
        }
    }
    execute(&state, session, &headers, batch).await
}

#[derive(serde::Deserialize)]
struct GetParams {
    query: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    variables: Option<String>,
}

async fn get_graphql(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(params): Query<GetParams>,
) -> Response {
    let Some(query) = params.query else {
        if state.settings.graphiql {
            return Html(GraphiQLSource::build().endpoint("/graphql").finish()).into_response();
        }
        return json_error(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "missing the query parameter",
        );
    };
    // Only queries may run over GET: a link or an <img> must never change anything.
    if let Ok(document) = async_graphql::parser::parse_query(&query) {
        if document
            .operations
            .iter()
            .any(|(_, op)| op.node.ty != OperationType::Query)
        {
            let mut response = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "BAD_USER_INPUT",
                "mutations and subscriptions are not allowed over GET; use POST",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
    }
    let mut request = Request::new(query);
    if let Some(name) = params.operation_name {
        request = request.operation_name(name);
    }
    if let Some(variables) = params.variables {
        match serde_json::from_str::<serde_json::Value>(&variables) {
            Ok(value) => request = request.variables(Variables::from_json(value)),
            Err(_) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "BAD_USER_INPUT",
                    "variables is not valid JSON",
                )
            }
        }
    }
    execute(&state, session, &headers, BatchRequest::Single(request)).await
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

async fn execute(
    state: &AppState,
    session: Session,
    headers: &HeaderMap,
    batch: BatchRequest,
) -> Response {
    let session = PartnerSession::new(session);
    let actor = match auth::resolve(&state.service, headers, &session).await {
        Ok(actor) => actor,
        Err(err) => return service_error_response(err),
    };
    let (auth, loader) = request_data(
        &state.service,
        RequestAuth {
            actor,
            session: Some(session),
        },
    );
    let batch = match batch {
        BatchRequest::Single(r) => BatchRequest::Single(r.data(auth).data(loader)),
        BatchRequest::Batch(rs) => BatchRequest::Batch(
            rs.into_iter()
                .map(|r| {
                    let (auth, loader) = request_data(&state.service, auth.clone());
                    r.data(auth).data(loader)
                })
                .collect(),
        ),
    };
    let response = state.schema.execute_batch(batch).await;
    // A single operation that failed only because the database is unavailable is a
    // 503 with Retry-After, so balancers and clients know to try again.
    let unavailable = matches!(&response, BatchResponse::Single(r)
        if r.data == async_graphql::Value::Null
            && !r.errors.is_empty()
            && r.errors.iter().all(is_retryable_internal));
    let json = Json(response).into_response();
    if unavailable {
        let (mut parts, body) = json.into_parts();
        parts.status = StatusCode::SERVICE_UNAVAILABLE;
        return with_retry_after(Response::from_parts(parts, body), 1);
    }
    json
}

fn is_retryable_internal(err: &ServerError) -> bool {
    err.extensions.as_ref().is_some_and(|ext| {
        ext.get("code") == Some(&async_graphql::Value::from("INTERNAL"))
            && ext.get("retryable") == Some(&async_graphql::Value::from(true))
    })
}

/// An authentication failure before execution, as a GraphQL-shaped error.
fn service_error_response(err: ServiceError) -> Response {
    err.log();
    let status = match &err {
        ServiceError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let response = json_error(status, err.code(), &err.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        with_retry_after(response, 1)
    } else {
        response
    }
}
