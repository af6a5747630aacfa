//! The crate map's rule (`api/src/lib.rs`, "Which layer may use which"), checked on the
//! sources: an import that climbs fails here, with the file and the module it reached.

use std::path::{Path, PathBuf};

/// Each layer, and the crate modules its files may name (besides its own).
const LAYERS: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("domain", &["error"]),
    ("db", &["error", "domain"]),
    ("service", &["db", "domain", "error"]),
    ("sessions", &["db", "domain", "error"]),
    ("events", &["service", "db", "domain", "error"]),
    (
        "graphql",
        &["events", "sessions", "service", "db", "domain", "error"],
    ),
];

/// The Rust files of a layer: `src/<layer>.rs` and everything under `src/<layer>/`.
fn files_of(src: &Path, layer: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let single = src.join(format!("{layer}.rs"));
    if single.exists() {
        files.push(single);
    }
    let mut dirs = vec![src.join(layer)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The crate modules a source names through `crate::…` (and `crate::{…}` groups).
fn named_modules(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, _) in source.match_indices("crate::") {
        let rest = &source[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or_default();
            names.extend(
                inner
                    .split(',')
                    .map(|p| p.trim().split("::").next().unwrap_or_default().to_owned()),
            );
        } else {
            names.push(
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

#[test]
fn dependencies_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut climbs = Vec::new();
    for (layer, allowed) in LAYERS {
        let files = files_of(&src, layer);
        assert!(!files.is_empty(), "no sources for the layer {layer}");
        for file in files {
            let source = std::fs::read_to_string(&file).unwrap();
            for module in named_modules(&source) {
                if module != *layer && !allowed.contains(&module.as_str()) {
                    climbs.push(format!("{} names crate::{module}", file.display()));
                }
            }
        }
    }
    assert!(
        climbs.is_empty(),
        "imports that climb:\n{}",
        climbs.join("\n")
    );
}

#[test]
fn the_check_sees_an_import_that_climbs() {
    let names = named_modules("use crate::http::session::Store;\nuse crate::{db::Sql, graphql};");
    assert_eq!(names, ["http", "db", "graphql"]);
}
