//! `/graphql` over HTTP.
//!
//! - `POST` takes `application/json`, and `multipart/form-data` for uploads (the GraphQL
//!   multipart request spec). Anything else (`text/plain`, forms) is 415: those are the
//!   content types a cross-site HTML form or a "simple" cross-origin fetch can send with
//!   the partner's cookie, so refusing them is the CSRF defence. A JSON POST from
//!   another origin needs a CORS preflight, which this server never grants; a multipart
//!   one is "simple", so with a cookie it must also carry `X-Requested-With` or
//!   `Apollo-Require-Preflight`, which only a preflighted request can.
//! - `GET` with `?query=` runs read-only queries; a mutation over GET is 405. Without a
//!   query it serves GraphiQL, when enabled.
//! - A batch (a JSON array) may hold at most `max_batch` operations, and at most one
//!   `login` or `register` among them (see `graphql::limits`).
//!
//! - The answer's media type follows `Accept` (GraphQL over HTTP): with
//!   `application/graphql-response+json` preferred, the answer has that type, and a
//!   request that fails before execution (a document that does not parse or validate,
//!   variables that do not coerce) is a 400 whose body has no `data` entry. Otherwise
//!   (`application/json`, `*/*`, no `Accept`), `application/json` as before: such
//!   failures are 200 with `data: null`, as clients written before the media type
//!   expect.
//!
//! Error codes are set by the schema itself (`graphql::ErrorCodes`); this layer only
//! turns a failure caused by an unavailable database into a 503 with `Retry-After`.

use async_graphql::http::{receive_batch_body, GraphiQLSource, MultipartOptions};
use async_graphql::parser::types::OperationType;
use async_graphql::{
    BatchRequest, BatchResponse, ParseRequestError, Request, ServerError, Variables,
};
use axum::body::{to_bytes, Body};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::TryStreamExt as _;
use tower_sessions::Session;

use super::caching::{cacheable_answer, no_store_unless_set, Asker, Cacheability};
use super::persisted;
use super::{
    auth, content_essence, declared_length, is_preflighted, json_error, with_retry_after, AppState,
};
use crate::error::ServiceError;
use crate::graphql::limits::{may_have_password_fields, password_fields, ONE_PASSWORD_FIELD};
use crate::graphql::{request_data, RequestAuth};
use crate::service::persisted_queries::Sender;
use crate::sessions::PartnerSession;

pub fn router() -> Router<AppState> {
    Router::new().route("/graphql", get(get_graphql).post(post_graphql))
}

async fn post_graphql(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let media = Media::negotiate(&headers);
    no_store_unless_set(media.label(post_answer(&state, session, &headers, body, media).await))
}

async fn post_answer(
    state: &AppState,
    session: Session,
    headers: &HeaderMap,
    body: Body,
    media: Media,
) -> Response {
    let batch = match content_essence(headers).as_deref() {
        Some("application/json") => read_json(state, headers, body).await,
        Some("multipart/form-data") => read_multipart(state, headers, body).await,
        _ => Err(json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_USER_INPUT",
            "POST /graphql needs Content-Type: application/json (or multipart/form-data for uploads)",
        )),
    };
    let mut batch = match batch {
        Ok(batch) => batch,
        Err(response) => return response,
    };
    // The batch's length is checked before any hash is resolved: each resolved text is
    // a copy (async-graphql's request holds a `String`), so a long batch of hashes
    // would otherwise cost its length times the longest stored text.
    if let BatchRequest::Batch(requests) = &batch {
        if requests.len() > state.settings.max_batch {
            return batch_too_long(state.settings.max_batch, requests.len());
        }
    }
    let mut to_learn = Vec::new();
    let mut refusal = None;
    let requests = match &mut batch {
        BatchRequest::Single(request) => std::slice::from_mut(request),
        BatchRequest::Batch(requests) => requests.as_mut_slice(),
    };
    for request in requests {
        match persisted::resolve(&state.service, request).await {
            Ok(learn) => to_learn.push(learn),
            Err(err) => {
                refusal = Some(err);
                break;
            }
        }
    }
    if let Some(refusal) = refusal {
        return refused(refusal, &batch);
    }
    match &batch {
        BatchRequest::Single(request) if request.query.trim().is_empty() => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                "the request has no query",
            );
        }
        BatchRequest::Batch(requests) if password_fields_in(requests) > 1 => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                ONE_PASSWORD_FIELD,
            );
        }
        _ => {}
    }
    let answer = execute(state, session, headers, batch, media, Method::Post).await;
    learn(state, to_learn, answer).await
}

/// The password fields of a whole batch (each document's own count is the schema's
/// check). Documents that cannot hold one are not parsed again; one that does not
/// parse counts none here, and the schema refuses it.
fn password_fields_in(requests: &[Request]) -> usize {
    requests
        .iter()
        .filter(|r| may_have_password_fields(&r.query))
        .filter_map(|r| async_graphql::parser::parse_query(&r.query).ok())
        .map(|doc| password_fields(&doc))
        .sum()
}

fn too_large(limit: usize) -> Response {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "BAD_USER_INPUT",
        &format!("the request body is larger than {limit} bytes"),
    )
}

async fn read_json(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<BatchRequest, Response> {
    let limit = state.settings.body_limit;
    if declared_length(headers).is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    let bytes = to_bytes(body, limit).await.map_err(|_| too_large(limit))?;
    // A batch is counted before it is built: parsed whole, a 1 MiB body of `{},`
    // would be some 350,000 requests in memory before its length could be refused.
    // `IgnoredAny` is zero-sized, so counting allocates nothing per element.
    if bytes.trim_ascii_start().first() == Some(&b'[') {
        if let Ok(items) = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&bytes) {
            if items.len() > state.settings.max_batch {
                return Err(batch_too_long(state.settings.max_batch, items.len()));
            }
        }
    }
    serde_json::from_slice(&bytes).map_err(|err| {
        json_error(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            &format!("the body is not a GraphQL request: {err}"),
        )
    })
}

/// The refusal of a batch longer than `max`.
fn batch_too_long(max: usize, len: usize) -> Response {
    json_error(
        StatusCode::BAD_REQUEST,
        "BAD_USER_INPUT",
        &format!("a batch may hold at most {max} operations, not {len}"),
    )
}

/// A GraphQL multipart request (uploads). With cookie authentication it must carry a
/// header that a cross-site form cannot set, or it is refused (415) before it is read.
async fn read_multipart(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<BatchRequest, Response> {
    if !is_preflighted(headers) {
        return Err(json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_USER_INPUT",
            "a multipart request must carry an X-Requested-With or Apollo-Require-Preflight header",
        ));
    }
    let pictures = state.settings.pictures;
    // Room for every allowed file at its largest, plus the operations themselves.
    let limit = pictures
        .max_files
        .saturating_mul(pictures.max_bytes)
        .saturating_add(state.settings.body_limit);
    if declared_length(headers).is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let reader = Body::new(http_body_util::Limited::new(body, limit))
        .into_data_stream()
        .map_err(std::io::Error::other)
        .into_async_read();
    let options = MultipartOptions::default()
        .max_file_size(pictures.max_bytes)
        .max_num_files(pictures.max_files);
    let batch = receive_batch_body(content_type, reader, options)
        .await
        .map_err(|err| match err {
            ParseRequestError::PayloadTooLarge => json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BAD_USER_INPUT",
                &format!(
                    "a file is larger than the limit of {} bytes ({} MiB)",
                    pictures.max_bytes,
                    pictures.max_bytes / (1024 * 1024)
                ),
            ),
            ParseRequestError::Io(e) if is_length_limit(&e) => too_large(limit),
            ParseRequestError::InvalidMultipart(e) if is_length_limit(&e) => too_large(limit),
            other => json_error(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                &format!("invalid multipart request: {other}"),
            ),
        })?;
    check_uploads(&batch, pictures.max_files)
        .map_err(|message| json_error(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &message))?;
    Ok(batch)
}

/// At most `max_files` files per request, and one file per field. (async-graphql bounds
/// only the total size; a file mapped onto a field that already has one would be
/// accepted and silently ignored.)
fn check_uploads(batch: &BatchRequest, max_files: usize) -> Result<(), String> {
    fn markers(value: &async_graphql::Value) -> usize {
        match value {
            async_graphql::Value::String(s) => usize::from(s.starts_with("#__graphql_file__:")),
            async_graphql::Value::List(items) => items.iter().map(markers).sum(),
            async_graphql::Value::Object(fields) => fields.values().map(markers).sum(),
            _ => 0,
        }
    }
    let files: usize = batch.iter().map(|r| r.uploads.len()).sum();
    if files > max_files {
        return Err(format!(
            "a request may carry at most {max_files} files, not {files}"
        ));
    }
    for request in batch.iter() {
        let used: usize = request.variables.values().map(markers).sum();
        if request.uploads.len() > used {
            return Err("each field takes one file; a field was given several".to_owned());
        }
    }
    Ok(())
}

/// Whether an error (or one of its causes) is the body-size limit.
fn is_length_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>()
            || e.to_string().contains("length limit exceeded")
        {
            return true;
        }
        current = e.source();
    }
    false
}

#[derive(serde::Deserialize)]
struct GetParams {
    query: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    variables: Option<String>,
    /// Apollo's `persistedQuery` among them (see `persisted`).
    extensions: Option<String>,
}

async fn get_graphql(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(params): Query<GetParams>,
) -> Response {
    let media = Media::negotiate(&headers);
    no_store_unless_set(media.label(get_answer(&state, session, &headers, params, media).await))
}

async fn get_answer(
    state: &AppState,
    session: Session,
    headers: &HeaderMap,
    params: GetParams,
    media: Media,
) -> Response {
    if params.query.is_none() && params.extensions.is_none() {
        if state.settings.graphiql {
            return Html(GraphiQLSource::build().endpoint("/graphql").finish()).into_response();
        }
        return json_error(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "missing the query parameter",
        );
    }
    let mut request = Request::new(params.query.unwrap_or_default());
    if let Some(extensions) = params.extensions {
        match serde_json::from_str::<async_graphql::Extensions>(&extensions) {
            Ok(extensions) => request.extensions = extensions,
            Err(_) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "BAD_USER_INPUT",
                    "extensions is not a JSON object",
                )
            }
        }
    }
    let learned = match persisted::resolve(&state.service, &mut request).await {
        Ok(learned) => learned,
        Err(refusal) => return refused(refusal, &BatchRequest::Single(request)),
    };
    if request.query.trim().is_empty() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "the request has no query",
        );
    }
    // Only queries may run over GET: a link or an <img> must never change anything.
    if let Ok(document) = async_graphql::parser::parse_query(&request.query) {
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
    let answer = execute(
        state,
        session,
        headers,
        BatchRequest::Single(request),
        media,
        Method::Get,
    )
    .await;
    learn(state, vec![learned], answer).await
}

/// The answer to a request whose persisted query could not be used: for a hash no
/// replica knows, `PERSISTED_QUERY_NOT_FOUND` (once per operation of a batch; the
/// client sends them again with their texts).
fn refused(refusal: persisted::Refusal, batch: &BatchRequest) -> Response {
    match refusal {
        persisted::Refusal::NotFound => {
            let error = serde_json::json!({
                "errors": [{
                    "message": persisted::NOT_FOUND_MESSAGE,
                    "extensions": { "code": persisted::NOT_FOUND },
                }],
            });
            let body = match batch {
                BatchRequest::Single(_) => error,
                BatchRequest::Batch(requests) => {
                    serde_json::Value::Array(vec![error; requests.len()])
                }
            };
            Json(body).into_response()
        }
        persisted::Refusal::Invalid(err) | persisted::Refusal::Failed(err) => {
            service_error_response(err)
        }
    }
}

/// Keeps the persisted queries sent with their texts, once the answer shows that they
/// parsed and validated (an answer that is not a request error).
async fn learn(
    state: &AppState,
    to_learn: Vec<Option<persisted::ToLearn>>,
    answer: Answer,
) -> Response {
    for (learn, ran) in to_learn.into_iter().zip(answer.ran) {
        if let (Some(learn), true) = (learn, ran) {
            let kept = state
                .service
                .persist_query(learn.sha256, learn.query, answer.sender)
                .await;
            if let Err(err) = kept {
                // The operation ran; only the next request with the hash alone will
                // be asked for the text again.
                err.log();
            }
        }
    }
    answer.response
}

/// How a GraphQL request came: only a GET may be answered from a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

/// An HTTP answer, for each operation whether it got past parsing and validation, and
/// whose quota a persisted text of it takes.
struct Answer {
    response: Response,
    ran: Vec<bool>,
    sender: Sender,
}

impl From<Response> for Answer {
    fn from(response: Response) -> Self {
        Self {
            response,
            ran: Vec::new(),
            sender: Sender::Anonymous,
        }
    }
}

async fn execute(
    state: &AppState,
    session: Session,
    headers: &HeaderMap,
    batch: BatchRequest,
    media: Media,
    method: Method,
) -> Answer {
    let session = PartnerSession::new(session);
    let asker = match method {
        Method::Post => Asker::Post,
        // No credential of any kind: the answer is the same for everyone who asks.
        Method::Get if session.id().is_none() && !headers.contains_key(header::AUTHORIZATION) => {
            Asker::AnonymousGet
        }
        Method::Get => Asker::CredentialedGet,
    };
    let actor = match auth::resolve(
        &state.service,
        headers,
        &session,
        state.settings.session_refresh,
    )
    .await
    {
        Ok(actor) => actor,
        Err(err) => return service_error_response(err).into(),
    };
    let sender = if actor.is_some() {
        Sender::Partner
    } else {
        Sender::Anonymous
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
    let ran = match &response {
        BatchResponse::Single(r) => vec![!is_request_error(r)],
        BatchResponse::Batch(rs) => rs.iter().map(|r| !is_request_error(r)).collect(),
    };
    Answer {
        response: answer(headers, response, media, asker),
        ran,
        sender,
    }
}

/// The HTTP answer to an executed batch.
fn answer(headers: &HeaderMap, response: BatchResponse, media: Media, asker: Asker) -> Response {
    // A single operation that failed only because the database is unavailable or the
    // service is busy is a 503 with Retry-After, so balancers and clients know to try
    // again.
    // The wait is the longest the errors ask for (their `retryAfter`, which the
    // service error set: see `ServiceError::retry_after`).
    let unavailable = match &response {
        BatchResponse::Single(r)
            if r.data == async_graphql::Value::Null && !r.errors.is_empty() =>
        {
            r.errors
                .iter()
                .map(unavailable_for)
                .collect::<Option<Vec<u64>>>()
                .and_then(|waits| waits.into_iter().max())
        }
        _ => None,
    };
    if media == Media::GraphqlResponseJson {
        if let BatchResponse::Single(r) = &response {
            if is_request_error(r) {
                // No `data` entry: the request never reached execution.
                let body = serde_json::json!({ "errors": r.errors });
                return (StatusCode::BAD_REQUEST, Json(body)).into_response();
            }
        }
    }
    let cacheability = Cacheability::of(asker, &response);
    if let Some(answer) = cacheable_answer(cacheability, headers, media.content_type(), &response) {
        return answer;
    }
    let json = Json(response).into_response();
    if let Some(wait) = unavailable {
        let (mut parts, body) = json.into_parts();
        parts.status = StatusCode::SERVICE_UNAVAILABLE;
        return with_retry_after(Response::from_parts(parts, body), wait);
    }
    json
}

/// The media type of a GraphQL answer: `application/json`, or the one GraphQL over HTTP
/// defines, when the client prefers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Media {
    Json,
    GraphqlResponseJson,
}

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

impl Media {
    /// The `Content-Type` of an answer in this media type.
    fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
        }
    }

    /// `application/graphql-response+json` when `Accept` names it with a quality at
    /// least that of `application/json` (or of a wildcard that covers it); otherwise
    /// `application/json`, also with no `Accept` at all.
    fn negotiate(headers: &HeaderMap) -> Self {
        let (mut graphql, mut json) = (0.0_f32, 0.0_f32);
        let ranges = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for range in ranges {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                GRAPHQL_RESPONSE_JSON => graphql = graphql.max(quality),
                "application/json" | "application/*" | "*/*" => json = json.max(quality),
                _ => {}
            }
        }
        if graphql > 0.0 && graphql >= json {
            Self::GraphqlResponseJson
        } else {
            Self::Json
        }
    }

    /// Gives a JSON answer this media type.
    fn label(self, mut response: Response) -> Response {
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        if self == Self::GraphqlResponseJson && is_json {
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(Self::GraphqlResponseJson.content_type()),
            );
        }
        response
    }
}

/// Whether an answer failed before execution: no data, and no error with a path (a
/// parse or validation error, variables that did not coerce, a limit of the document).
/// An error raised while executing a field always has the field's path.
fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// How long to wait before sending again, when an error says the service is unavailable
/// or busy (a retryable `INTERNAL` or `BUSY`); `None` for any other error.
fn unavailable_for(err: &ServerError) -> Option<u64> {
    let ext = err.extensions.as_ref()?;
    let code = ext.get("code");
    let unavailable = (code == Some(&async_graphql::Value::from("INTERNAL"))
        || code == Some(&async_graphql::Value::from("BUSY")))
        && ext.get("retryable") == Some(&async_graphql::Value::from(true));
    if !unavailable {
        return None;
    }
    Some(match ext.get("retryAfter") {
        Some(async_graphql::Value::Number(n)) => n.as_u64().unwrap_or(1).max(1),
        _ => 1,
    })
}

/// A failure before execution (authentication, a session that cannot be saved), as a
/// GraphQL-shaped error with the service error's own status and `Retry-After`.
pub(crate) fn service_error_response(err: ServiceError) -> Response {
    err.log();
    let response = json_error(err.http_status(), err.code(), &err.to_string());
    match err.retry_after() {
        Some(wait) => with_retry_after(response, wait.as_secs().max(1)),
        None => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(accept: &str) -> Media {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        Media::negotiate(&headers)
    }

    #[test]
    fn the_answer_takes_the_media_type_the_client_prefers() {
        use Media::*;
        assert_eq!(Media::negotiate(&HeaderMap::new()), Json);
        assert_eq!(accepting("application/json"), Json);
        assert_eq!(accepting("*/*"), Json);
        assert_eq!(
            accepting("application/graphql-response+json"),
            GraphqlResponseJson
        );
        assert_eq!(
            accepting("application/graphql-response+json, application/json;q=0.9"),
            GraphqlResponseJson
        );
        assert_eq!(
            accepting("application/json, application/graphql-response+json"),
            GraphqlResponseJson
        );
        assert_eq!(
            accepting("application/graphql-response+json;q=0.5, application/json"),
            Json
        );
        assert_eq!(accepting("application/graphql-response+json;q=0"), Json);
        assert_eq!(accepting("text/html"), Json);
    }
}
