//! What the balancer changes in a request on its way to a replica, and in the answer on
//! its way back.
//!
//! # The request
//!
//! - Hop-by-hop fields (RFC 9110 §7.6.1) are the client's business with the balancer,
//!   not the replica's: `Connection` and the fields it names, `Keep-Alive`, `TE`,
//!   `Trailer`, `Transfer-Encoding`, `Upgrade`, the proxy fields, and `Expect` (the
//!   balancer answers `100 Continue` itself and sends the body at once). The same list
//!   pingora-proxy 0.9 strips by default, so nothing changed for the replicas when the
//!   request path left it.
//! - A WebSocket handshake keeps `Connection: Upgrade` and `Upgrade: websocket` on
//!   `GET /graphql/ws` alone; no other protocol, and no other route, is upgraded.
//! - The framing is the balancer's: a body of unknown length goes on chunked.
//! - `X-Forwarded-For` (the client's address appended to any the client sent),
//!   `X-Forwarded-Proto`, `X-Forwarded-Host`, and `X-Request-Id` (the client's, when
//!   it is 1 to 128 characters of `A-Z a-z 0-9 - _ . : /`, else a new one: an id is
//!   written into both processes' logs, and a space or a quote there would forge a
//!   field).
//! - `traceparent`: the client's trace continued with the balancer's span, or a new
//!   trace ([`crate::tracecontext`]); `tracestate` goes on as it came.
//!
//! # The answer
//!
//! - `X-Request-Id` is the request's.
//! - The replica's note of the partner it authenticated ([`limits::PARTNER_HEADER`]) is
//!   taken out and given to the rate limits.

use std::net::IpAddr;

use http::header::{self, HeaderName, HeaderValue};
use http::Version;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

use crate::limits;

pub const REQUEST_ID: &str = "x-request-id";

/// Fields never forwarded, whatever `Connection` says.
const HOP_BY_HOP: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "expect",
];

/// Fields `Connection` may not take away: the message's framing and its target.
const NOT_NOMINABLE: [HeaderName; 3] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

/// Most `Connection` tokens read; past this the request is refused (as pingora does),
/// so a header of thousands of tokens costs nothing.
const MAX_NOMINATIONS: usize = 32;

/// The request id a client sent, when it is safe to log as it is: 1 to 128 characters
/// of `A-Z a-z 0-9 - _ . : /`.
pub fn client_request_id(request: &RequestHeader) -> Option<&str> {
    request
        .headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
        })
}

/// A request id unique across processes and restarts: this process's start time and
/// pid, fixed once, then a counter. Nothing per request but the counter and the format.
pub fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{started:016x}-{:08x}", std::process::id())
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{n:x}")
}

/// Whether the request asks for a WebSocket (the only upgrade forwarded).
pub fn is_websocket(request: &RequestHeader) -> bool {
    request.version == Version::HTTP_11
        && request
            .headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// How a request's body goes to the replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    /// Read whole already: sent with its length, whatever framing the client used.
    Length(usize),
    /// Streamed as it comes: with the client's `Content-Length`, else chunked.
    Streamed,
}

/// The header a replica reads the client's address from: the balancer's own view
/// ([`crate::client_addr`]: past trusted proxies), set here and never taken from a
/// client. `X-Forwarded-For` keeps its meaning, each hop appending its peer.
pub const CLIENT_HEADER: &str = "x-ecanteen-client";

/// The request as a replica gets it; `upgrade`: as a WebSocket handshake (the route
/// allows it and the client asked); `peer`: appended to `X-Forwarded-For`; `client`:
/// the client's address as the balancer resolved it. `Err` (answered 400) when the
/// client's `Connection` header is malformed or names too many fields.
pub fn upstream_request(
    downstream: &RequestHeader,
    body: Framing,
    upgrade: bool,
    peer: Option<IpAddr>,
    client: Option<IpAddr>,
    request_id: &str,
    traceparent: &str,
) -> Result<Box<RequestHeader>> {
    let mut request = Box::new(downstream.clone());
    request.set_version(Version::HTTP_11);
    let nominated = nominations(downstream)?;
    for name in &nominated {
        request.remove_header(name);
    }
    for name in HOP_BY_HOP {
        request.remove_header(name);
    }
    if upgrade {
        request.insert_header(header::CONNECTION, "Upgrade")?;
        request.insert_header(header::UPGRADE, "websocket")?;
    }
    match body {
        Framing::None => {}
        Framing::Length(len) => {
            request.insert_header(header::CONTENT_LENGTH, len.to_string())?;
        }
        Framing::Streamed => {
            if !request.headers.contains_key(header::CONTENT_LENGTH) {
                request.insert_header(header::TRANSFER_ENCODING, "chunked")?;
            }
        }
    }
    request.remove_header(CLIENT_HEADER);
    if let Some(client) = client {
        request.insert_header(CLIENT_HEADER, client.to_string())?;
    }
    if let Some(client) = peer {
        let forwarded = match downstream
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(previous) if !previous.is_empty() => format!("{previous}, {client}"),
            _ => client.to_string(),
        };
        request.insert_header("X-Forwarded-For", forwarded)?;
    }
    request.insert_header("X-Forwarded-Proto", "http")?;
    if let Some(host) = downstream.headers.get(header::HOST).cloned() {
        request.insert_header("X-Forwarded-Host", host)?;
    }
    request.insert_header("X-Request-Id", request_id)?;
    request.insert_header("traceparent", traceparent)?;
    Ok(request)
}

/// The fields the client's `Connection` header names (RFC 9110 §7.6.1), but never the
/// message's framing or target.
fn nominations(request: &RequestHeader) -> Result<Vec<HeaderName>> {
    let mut names = Vec::new();
    let tokens = request
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    for (n, token) in tokens.enumerate() {
        if n >= MAX_NOMINATIONS {
            return pingora::Error::e_explain(
                pingora::ErrorType::InvalidHTTPHeader,
                "too many Connection header nominations",
            );
        }
        let name = HeaderName::from_bytes(token).map_err(|_| {
            pingora::Error::explain(
                pingora::ErrorType::InvalidHTTPHeader,
                "invalid token nominated by the Connection header",
            )
        })?;
        if !NOT_NOMINABLE.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// The answer as the client gets it. Returns the partner the replica named, if any.
pub fn downstream_response(response: &mut ResponseHeader, request_id: &str) -> Option<i64> {
    let partner = response
        .remove_header(limits::PARTNER_HEADER)
        .and_then(|v| v.to_str().ok().and_then(|v| v.parse::<i64>().ok()));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        // A client's id was checked for length, and a header value it came from.
        let _ = response.insert_header(REQUEST_ID, id);
    }
    partner
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("POST", b"/graphql", None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    #[test]
    fn request_ids_share_the_process_prefix_and_never_repeat() {
        let ids: Vec<String> = (0..1000).map(|_| new_request_id()).collect();
        let prefix = |id: &str| id.rsplit_once('-').map(|(p, _)| p.to_owned());
        let first = prefix(&ids[0]).expect("an id has a prefix and a counter");
        assert!(first.ends_with(&format!("-{:08x}", std::process::id())));
        assert!(ids
            .iter()
            .all(|id| prefix(id).as_deref() == Some(first.as_str())));
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn hop_by_hop_fields_and_the_ones_connection_names_stay_behind() {
        let downstream = request(&[
            ("Host", "shop"),
            ("Connection", "keep-alive, X-Secret, content-length"),
            ("X-Secret", "between the client and the balancer"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Expect", "100-continue"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Content-Length", "2"),
            ("Authorization", "Bearer t"),
            (
                "traceparent",
                "00-11111111111111111111111111111111-2222222222222222-01",
            ),
            ("tracestate", "vendor=x"),
        ]);
        let up = upstream_request(
            &downstream,
            Framing::Streamed,
            false,
            None,
            None,
            "id-1",
            TP,
        )
        .unwrap();
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "expect",
            "upgrade",
            "proxy-authorization",
            "transfer-encoding",
        ] {
            assert!(!up.headers.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(
            up.headers["content-length"], "2",
            "framing is never nominated"
        );
        assert_eq!(up.headers["authorization"], "Bearer t");
        assert_eq!(up.headers["host"], "shop");
        assert_eq!(up.headers["x-forwarded-host"], "shop");
        assert_eq!(up.headers["x-request-id"], "id-1");
        // The balancer's traceparent replaces the client's; tracestate goes on as it came.
        assert_eq!(up.headers.get_all("traceparent").iter().count(), 1);
        assert_eq!(up.headers["traceparent"], TP);
        assert_eq!(up.headers["tracestate"], "vendor=x");
    }

    #[test]
    fn only_a_websocket_upgrade_is_forwarded_and_unknown_lengths_go_chunked() {
        let ws = request(&[
            ("Host", "shop"),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
        ]);
        let up = upstream_request(&ws, Framing::None, true, None, None, "id", TP).unwrap();
        assert_eq!(up.headers["upgrade"], "websocket");
        assert_eq!(up.headers["connection"], "Upgrade");
        assert!(!up.headers.contains_key("transfer-encoding"));

        let chunked = request(&[("Transfer-Encoding", "chunked")]);
        let up =
            upstream_request(&chunked, Framing::Streamed, false, None, None, "id", TP).unwrap();
        assert_eq!(up.headers["transfer-encoding"], "chunked");
    }

    #[test]
    fn forwarded_for_appends_the_client_to_what_it_claimed() {
        let client: IpAddr = "10.0.0.7".parse().unwrap();
        let plain = upstream_request(
            &request(&[]),
            Framing::None,
            false,
            Some(client),
            None,
            "id",
            TP,
        )
        .unwrap();
        assert_eq!(plain.headers["x-forwarded-for"], "10.0.0.7");
        assert_eq!(plain.headers["x-forwarded-proto"], "http");
        let claimed = request(&[("X-Forwarded-For", "1.2.3.4")]);
        let up =
            upstream_request(&claimed, Framing::None, false, Some(client), None, "id", TP).unwrap();
        assert_eq!(up.headers["x-forwarded-for"], "1.2.3.4, 10.0.0.7");
    }

    #[test]
    fn a_connection_header_of_a_thousand_tokens_or_a_bad_token_is_refused() {
        let many = vec!["x-a"; 1000].join(",");
        assert!(upstream_request(
            &request(&[("Connection", &many)]),
            Framing::None,
            false,
            None,
            None,
            "id",
            TP
        )
        .is_err());
        assert!(upstream_request(
            &request(&[("Connection", "bad token")]),
            Framing::None,
            false,
            None,
            None,
            "id",
            TP
        )
        .is_err());
    }

    #[test]
    fn a_body_read_whole_goes_with_its_length_and_the_client_address_is_the_balancers() {
        let chunked = request(&[
            ("Transfer-Encoding", "chunked"),
            ("X-Ecanteen-Client", "6.6.6.6"),
        ]);
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let up = upstream_request(
            &chunked,
            Framing::Length(0),
            false,
            Some(peer),
            Some(client),
            "id",
            TP,
        )
        .unwrap();
        assert_eq!(up.headers["content-length"], "0");
        assert!(!up.headers.contains_key("transfer-encoding"));
        assert_eq!(
            up.headers[CLIENT_HEADER], "198.51.100.7",
            "never the client's own word"
        );
        assert_eq!(up.headers["x-forwarded-for"], "10.0.0.5");
    }

    #[test]
    fn a_client_request_id_is_kept_only_when_it_is_safe_to_log() {
        let id = |v: &str| {
            let r = request(&[("X-Request-Id", v)]);
            client_request_id(&r).map(str::to_owned)
        };
        for good in ["abc-123", "trace-me-7", "a.b:c/d_e", &"x".repeat(128)] {
            assert_eq!(id(good).as_deref(), Some(good));
        }
        // A space and an equals sign would forge a field of the text access log.
        for bad in [
            "x status=200 user=admin",
            "a\"b",
            "",
            &"x".repeat(129),
            "tab\tx",
            "é",
        ] {
            assert_eq!(id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_upgrade_is_forwarded_only_when_the_route_allows_it() {
        let ws = request(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]);
        let up = upstream_request(&ws, Framing::Streamed, false, None, None, "id", TP).unwrap();
        assert!(!up.headers.contains_key("upgrade"));
        assert!(!up.headers.contains_key("connection"));
    }

    #[test]
    fn the_partner_note_is_taken_out_of_the_answer() {
        let mut response = ResponseHeader::build(200, None).unwrap();
        response
            .insert_header(limits::PARTNER_HEADER, "42")
            .unwrap();
        assert_eq!(downstream_response(&mut response, "id-9"), Some(42));
        assert!(!response.headers.contains_key(limits::PARTNER_HEADER));
        assert_eq!(response.headers[REQUEST_ID], "id-9");
    }
}
