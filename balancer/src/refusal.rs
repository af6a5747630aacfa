//! What the balancer answers itself, and how: the status, `Retry-After`, and the body
//! in the route's envelope ([`Envelope`]): REST's `{"error": {"code", "message"}}`
//! under `/ecanteen` with the REST contract's codes, GraphQL's `{"errors": [...]}` with
//! the replicas' GraphQL codes elsewhere. An integrator meets these exactly when it
//! matters (under rate limiting and overload), so they read like the replica's own.

use bytes::Bytes;

use crate::routes::Envelope;

/// Why the balancer answers a request itself. Each answer closes the client's
/// connection (an unread body may follow the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    MethodNotAllowed,
    /// The body is over the route's bound (its bytes, in the message).
    TooLarge(usize),
    /// The client took too long to send its header or body.
    TooSlow,
    TooManyRequests(u64),
    NoneReady,
    AtCapacity,
    /// The replica took the request and did not answer in time.
    Slow,
    /// The replica failed (refused, reset, or sent nonsense).
    Failed,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Self::Malformed => 400,
            Self::MethodNotAllowed => 405,
            Self::TooSlow => 408,
            Self::TooLarge(_) => 413,
            Self::TooManyRequests(_) => 429,
            Self::NoneReady | Self::AtCapacity | Self::Slow => 503,
            Self::Failed => 502,
        }
    }

    pub fn retry_after(self) -> Option<u64> {
        match self {
            Self::TooManyRequests(seconds) => Some(seconds),
            Self::NoneReady | Self::AtCapacity | Self::Slow | Self::Failed => Some(1),
            Self::Malformed | Self::MethodNotAllowed | Self::TooLarge(_) | Self::TooSlow => None,
        }
    }

    /// The code in the GraphQL envelope (the replicas' codes) and in the REST one (the
    /// contract's fixed list), and the message.
    fn words(self) -> (&'static str, &'static str, String) {
        match self {
            Self::Malformed => ("BAD_USER_INPUT", "BAD_REQUEST", "malformed request".into()),
            Self::MethodNotAllowed => {
                ("BAD_USER_INPUT", "BAD_REQUEST", "method not allowed".into())
            }
            Self::TooLarge(limit) => (
                "BAD_USER_INPUT",
                "PAYLOAD_TOO_LARGE",
                format!("the request body is larger than {limit} bytes"),
            ),
            Self::TooSlow => (
                "BAD_USER_INPUT",
                "BAD_REQUEST",
                "the request was not sent in time".into(),
            ),
            Self::TooManyRequests(_) => (
                "TOO_MANY_REQUESTS",
                "TOO_MANY_REQUESTS",
                "too many requests; please slow down".into(),
            ),
            Self::NoneReady => (
                "INTERNAL",
                "INTERNAL",
                "no replica is ready; please retry".into(),
            ),
            Self::AtCapacity => (
                "INTERNAL",
                "INTERNAL",
                "every replica is at capacity; please retry".into(),
            ),
            Self::Slow => (
                "INTERNAL",
                "INTERNAL",
                "the replica is slow to answer; please retry".into(),
            ),
            Self::Failed => (
                "INTERNAL",
                "INTERNAL",
                "the replica failed to answer; please retry".into(),
            ),
        }
    }

    /// The body, in `envelope`.
    pub fn body(self, envelope: Envelope) -> Bytes {
        let (graphql, rest, message) = self.words();
        let value = match envelope {
            Envelope::GraphQl => serde_json::json!({
                "errors": [{ "message": message, "extensions": { "code": graphql } }]
            }),
            Envelope::Rest => serde_json::json!({ "error": { "code": rest, "message": message } }),
        };
        Bytes::from(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Refusal; 9] = [
        Refusal::Malformed,
        Refusal::MethodNotAllowed,
        Refusal::TooLarge(1024),
        Refusal::TooSlow,
        Refusal::TooManyRequests(2),
        Refusal::NoneReady,
        Refusal::AtCapacity,
        Refusal::Slow,
        Refusal::Failed,
    ];

    /// The REST contract's codes (shared/specs/rest-compat.md).
    const REST_CODES: [&str; 10] = [
        "BAD_REQUEST",
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "NOT_FOUND",
        "CONFLICT",
        "INSUFFICIENT_STOCK",
        "PAYLOAD_TOO_LARGE",
        "UNSUPPORTED_MEDIA_TYPE",
        "TOO_MANY_REQUESTS",
        "INTERNAL",
    ];

    #[test]
    fn every_refusal_has_both_envelopes() {
        for refusal in ALL {
            let rest: serde_json::Value =
                serde_json::from_slice(&refusal.body(Envelope::Rest)).unwrap();
            let code = rest["error"]["code"].as_str().unwrap();
            assert!(REST_CODES.contains(&code), "{refusal:?}: {rest}");
            assert!(rest["error"]["message"].is_string(), "{rest}");
            assert!(rest.get("errors").is_none(), "{rest}");
            let graphql: serde_json::Value =
                serde_json::from_slice(&refusal.body(Envelope::GraphQl)).unwrap();
            assert!(
                graphql["errors"][0]["extensions"]["code"].is_string(),
                "{graphql}"
            );
            // A 503 or 429 always says when to come back; a client's own mistake never
            // does.
            let status = refusal.status();
            assert_eq!(
                refusal.retry_after().is_some(),
                status == 429 || status >= 500,
                "{refusal:?}"
            );
        }
        let too_large = Refusal::TooLarge(1024).body(Envelope::Rest);
        assert!(String::from_utf8_lossy(&too_large).contains("1024"));
    }
}
