//! Where a browser request comes from, for the few places a cookie alone must not be
//! enough: a WebSocket handshake (browsers attach cookies to it from any page), and the
//! paper's `GET /ecanteen/logout` (a link or a redirect from any site carries a `Lax`
//! cookie).

use axum::http::{header, HeaderMap};

/// Whether the request comes from a page of this very server, or from no page at all:
/// a non-browser client (which sends neither header), or an address typed or
/// bookmarked (`Sec-Fetch-Site: none`). `Sec-Fetch-Site` decides when the browser sends
/// it; otherwise `Origin`, when present, must name this host (as the client, or a
/// balancer in front, sent it).
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn a_page_of_another_site_is_not_this_origin() {
        let host = ("host", "canteen.example");
        assert!(same_origin(&headers(&[host])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://canteen.example")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "none")])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
        // Another subdomain of the same site is another origin.
        assert!(!same_origin(&headers(&[
            host,
            ("sec-fetch-site", "same-site")
        ])));
        // The header the browser sets wins over an Origin that looks right.
        assert!(!same_origin(&headers(&[
            host,
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://canteen.example")
        ])));
    }
}
