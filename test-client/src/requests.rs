//! Requests as the service expects them, built once for every sender.
//!
//! Each function answers an `http::Request` with a path-only URI; a transport puts it
//! on its address. The arguments are the caller's own constants and ids, so a method,
//! URI or header that does not parse is a mistake in the caller, and panics.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request};
use serde_json::{json, Value};

/// A request with no body.
pub fn empty(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<Bytes> {
    let mut request = Request::new(Bytes::new());
    *request.method_mut() =
        Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("method {method:?}: {e}"));
    *request.uri_mut() = uri.parse().unwrap_or_else(|e| panic!("URI {uri:?}: {e}"));
    headers.iter().fold(request, |request, (name, value)| {
        with_header(request, name, value)
    })
}

/// A request with a JSON body.
pub fn json(method: &str, uri: &str, body: &Value, headers: &[(&str, &str)]) -> Request<Bytes> {
    let request = empty(method, uri, headers).map(|_| Bytes::from(body.to_string()));
    with_header(request, "content-type", "application/json")
}

/// A GraphQL operation as a JSON `POST /graphql`.
pub fn graphql(query: &str, variables: Value) -> Request<Bytes> {
    json(
        "POST",
        "/graphql",
        &json!({ "query": query, "variables": variables }),
        &[],
    )
}

/// Adds (or replaces) a header.
pub fn with_header<B>(mut request: Request<B>, name: &str, value: &str) -> Request<B> {
    let name =
        HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|e| panic!("header {name:?}: {e}"));
    let value = HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{name}: {value:?}: {e}"));
    request.headers_mut().insert(name, value);
    request
}

/// One file of a GraphQL multipart request: the variable path it fills, and its bytes.
pub struct UploadFile<'a> {
    pub variable: &'a str,
    pub filename: &'a str,
    pub content_type: &'a str,
    pub bytes: Vec<u8>,
}

/// A GraphQL multipart request (the upload spec): `operations`, `map`, then the files.
/// `preflight` adds the `X-Requested-With` header that uploads with a cookie need.
pub fn upload(
    query: &str,
    variables: Value,
    files: &[UploadFile<'_>],
    preflight: bool,
) -> Request<Bytes> {
    let boundary = "ecanteen-test-boundary-7MA4YWxkTrZu0gW";
    let mut body: Vec<u8> = Vec::new();
    let mut part = |name: &str, file: Option<(&str, &str)>, content: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match file {
            Some((filename, content_type)) => format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                 Content-Type: {content_type}\r\n\r\n"
            ),
            None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"),
        };
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    };
    let operations = json!({ "query": query, "variables": variables }).to_string();
    part("operations", None, operations.as_bytes());
    let map: serde_json::Map<String, Value> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (i.to_string(), json!([format!("variables.{}", f.variable)])))
        .collect();
    part("map", None, Value::Object(map).to_string().as_bytes());
    for (i, f) in files.iter().enumerate() {
        part(&i.to_string(), Some((f.filename, f.content_type)), &f.bytes);
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let mut request = empty("POST", "/graphql", &[("content-type", &content_type)]);
    if preflight {
        request = with_header(request, "x-requested-with", "XMLHttpRequest");
    }
    request.map(|_| Bytes::from(body))
}
