//! The transport to an address: a replica or the balancer, over reqwest.

use std::time::Duration;

use http::Request;

use crate::{Response, Transport, TransportError};

/// Sends a [`crate::Client`]'s requests to `base` (`http://127.0.0.1:8080`, say).
#[derive(Clone)]
pub struct Remote {
    http: reqwest::Client,
    base: String,
}

impl Remote {
    /// A transport with its own connection pool and a 10-second timeout.
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|e| panic!("an HTTP client: {e}"));
        Self::with_client(base, http)
    }

    /// A transport over a reqwest client of the caller's (its own timeouts and pool).
    /// The client should keep no cookies: [`crate::Client`] keeps them.
    pub fn with_client(base: &str, http: reqwest::Client) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }
}

impl Transport for Remote {
    type Body = reqwest::Body;

    async fn round_trip(
        &self,
        request: Request<reqwest::Body>,
    ) -> Result<Response, TransportError> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let answer = async {
            let response = self
                .http
                .request(parts.method, format!("{}{path}", self.base))
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>(Response {
                status,
                headers,
                body,
            })
        };
        answer
            .await
            .map_err(|e| TransportError(describe(&e).to_owned()))
    }
}

/// What went wrong, in the words the load tester's report uses.
fn describe(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "answer cut short"
    } else {
        "connection error"
    }
}
