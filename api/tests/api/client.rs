//! The browser client's files at `/`, with the headers that let a browser enforce its
//! promises (no inline script, no framing, no sniffing).

use crate::helpers::{Engine, TestApp};

#[tokio::test]
async fn the_client_is_served_at_the_root_with_strict_security_headers() {
    let app = TestApp::new(Engine::Sqlite).await;
    let mut c = app.client();
    for (uri, content_type) in [
        ("/", "text/html"),
        ("/js/app.js", "text/javascript"),
        ("/css/app.css", "text/css"),
    ] {
        let r = c.get(uri).await;
        assert_eq!(r.status, 200, "{uri}");
        let header = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            header("content-type").starts_with(content_type),
            "{uri}: {}",
            header("content-type")
        );
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{uri}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("referrer-policy"), "same-origin");
        assert_eq!(header("x-frame-options"), "DENY");
    }
    // No inline script anywhere in the page, so the policy costs nothing.
    let html = c.get("/").await.text();
    assert!(html.contains(r#"<script type="module" src="/js/app.js">"#));
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(!html.contains(" on"), "no inline event handlers");
    // Paths that name no file are still the JSON 404, not the page.
    let r = c.get("/nope.js").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["errors"][0]["extensions"]["code"], "NOT_FOUND");
    let r = c.get("/../Cargo.toml").await;
    assert_eq!(r.status, 404);
}
