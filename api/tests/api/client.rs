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
        ("/i18n/id.json", "application/json"),
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

/// The client's strings: one file per language, `client/i18n/<code>.json`.
mod strings {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    const LANGUAGES: [&str; 2] = ["en", "id"];

    fn client_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../client")
    }

    fn language(code: &str) -> BTreeMap<String, String> {
        let path = client_dir().join(format!("i18n/{code}.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The `{name}` placeholders of a string.
    fn placeholders(text: &str) -> BTreeSet<&str> {
        text.split('{')
            .skip(1)
            .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
            .collect()
    }

    /// Every quoted `namespace.key` literal in the client's code and page, for the
    /// namespaces the string files have: the keys the client asks for.
    fn keys_used(namespaces: &BTreeSet<String>) -> BTreeSet<String> {
        let mut files = vec![client_dir().join("index.html")];
        let mut dirs = vec![client_dir().join("js")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "js") {
                    files.push(path);
                }
            }
        }
        let mut used = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // Each quoted stretch on one line, wherever a quote opens.
            for quote in ['\'', '"', '`'] {
                for (start, _) in text.match_indices(quote) {
                    let rest = &text[start + 1..];
                    let Some(end) = rest.find([quote, '\n']) else {
                        continue;
                    };
                    let piece = &rest[..end];
                    let is_key = piece.split_once('.').is_some_and(|(ns, tail)| {
                        namespaces.contains(ns)
                            && !tail.is_empty()
                            && !tail.ends_with('.')
                            && piece
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
                    });
                    if is_key {
                        used.insert(piece.to_owned());
                    }
                }
            }
        }
        used
    }

    #[test]
    fn every_key_is_in_both_languages_with_the_same_placeholders() {
        let files: Vec<_> = LANGUAGES
            .iter()
            .map(|code| (code, language(code)))
            .collect();
        let all: BTreeSet<&String> = files
            .iter()
            .flat_map(|(_, strings)| strings.keys())
            .collect();
        let mut problems = Vec::new();
        for key in &all {
            let present: Vec<_> = files
                .iter()
                .filter_map(|(code, s)| s.get(*key).map(|v| (code, v)))
                .collect();
            for (code, strings) in &files {
                if !strings.contains_key(*key) {
                    problems.push(format!("{key} is missing from {code}.json"));
                }
            }
            if let [(_, first), rest @ ..] = present.as_slice() {
                for (code, text) in rest {
                    if placeholders(first) != placeholders(text) {
                        problems.push(format!("{key}: {code}.json has other placeholders"));
                    }
                }
            }
            for (code, text) in &present {
                if text.trim().is_empty() {
                    problems.push(format!("{key} is empty in {code}.json"));
                }
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn every_key_the_client_uses_has_a_string() {
        let en = language("en");
        let namespaces: BTreeSet<String> = en
            .keys()
            .filter_map(|k| k.split_once('.').map(|(ns, _)| ns.to_owned()))
            .collect();
        let mut used = keys_used(&namespaces);
        // Keys the code builds from a value: every value it can meet.
        for reason in ["RESTOCK", "SALE", "WASTE", "CORRECTION", "COUNT", "OTHER"] {
            used.insert(format!("reason.{reason}"));
        }
        for code in ["UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND", "CONFLICT"] {
            used.insert(format!("error.{code}"));
        }
        for field in ["name", "description", "price", "quantity", "category"] {
            used.insert(format!("conflict.{field}"));
        }
        for category in ["makanan", "minuman"] {
            used.insert(format!("category.{category}"));
        }
        let missing: Vec<_> = used.iter().filter(|k| !en.contains_key(*k)).collect();
        assert!(
            missing.is_empty(),
            "used but in no string file: {missing:?}"
        );
        // The messages of bad input are looked up by the field the server names.
        let unused: Vec<_> = en
            .keys()
            .filter(|k| !used.contains(*k) && !k.starts_with("error.field."))
            .collect();
        assert!(
            unused.is_empty(),
            "in the string files but never used: {unused:?}"
        );
    }
}
