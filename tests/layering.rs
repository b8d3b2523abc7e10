//! The crate's layering, checked from the source: a module may import only the modules below it.
//!
//! ```text
//! testing
//! admin
//! integrations   reconcile
//! migration
//! router
//! health
//! registry
//! placement   capacity
//! error
//! model
//! time   hash   telemetry
//! ```
//!
//! Every `crate::…` path in code (comments and doc links are not imports) names the module it
//! reaches into; paths through the crate root's re-exports (`crate::Error`, `use crate::{…}`)
//! are refused too, since they would hide an edge. `docs/architecture.md` draws the same graph.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it may import (besides itself).
const LAYERS: &[(&str, &[&str])] = &[
    ("time", &[]),
    ("hash", &[]),
    ("telemetry", &[]),
    ("model", &["time", "hash"]),
    ("error", &["model"]),
    ("capacity", &["model", "error", "time", "telemetry"]),
    ("placement", &["model", "error", "time", "hash", "telemetry"]),
    ("rollout", &["model", "error", "time", "registry", "telemetry"]),
    (
        "registry",
        &["model", "error", "time", "hash", "placement", "telemetry"],
    ),
    ("health", &["model", "error", "time", "registry", "telemetry"]),
    (
        "router",
        &["model", "error", "time", "hash", "registry", "health", "telemetry"],
    ),
    (
        "migration",
        &[
            "model",
            "error",
            "time",
            "hash",
            "registry",
            "health",
            "router",
            "placement",
            "telemetry",
        ],
    ),
    (
        "integrations",
        &[
            "model",
            "error",
            "time",
            "hash",
            "registry",
            "health",
            "router",
            "migration",
            "placement",
            "capacity",
            "telemetry",
        ],
    ),
    (
        "reconcile",
        &["model", "error", "time", "registry", "migration", "telemetry"],
    ),
    (
        "testing",
        &[
            "model",
            "error",
            "time",
            "hash",
            "registry",
            "health",
            "router",
            "migration",
            "placement",
            "capacity",
            "integrations",
            "reconcile",
            "telemetry",
        ],
    ),
    (
        "admin",
        &[
            "model",
            "error",
            "time",
            "hash",
            "registry",
            "health",
            "router",
            "migration",
            "placement",
            "capacity",
            "integrations",
            "reconcile",
            "telemetry",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file with comments removed (line comments, doc comments and block comments);
/// string literals are kept as they are, which is harmless here.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            let end = after.find('\n').unwrap_or(after.len());
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix("/*") {
            let end = after.find("*/").map_or(after.len(), |i| i + 2);
            rest = &after[end..];
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The first segment after each `crate::` in `code`: a module name, or `{`/an item name for a
/// path through the crate root.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // e.g. `$crate::` or `other_crate::`
        }
        let seg: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        found.push(if seg.is_empty() {
            rest.chars().take(1).collect()
        } else {
            seg
        });
    }
    found
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "expected the crate's sources under {}", src.display());
    let known: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    let mut violations = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap_or(file);
        let first = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let Some((_, allowed)) = LAYERS.iter().find(|(m, _)| *m == module) else {
            violations.push(format!(
                "{}: module `{module}` has no place in the layer table",
                rel.display()
            ));
            continue;
        };
        let text = fs::read_to_string(file).unwrap_or_default();
        for seg in crate_paths(&code_of(&text)) {
            if seg == module || allowed.contains(&seg.as_str()) {
                continue;
            }
            if known.contains(seg.as_str()) {
                violations.push(format!(
                    "{}: `{module}` imports the higher layer `{seg}`",
                    rel.display()
                ));
            } else {
                violations.push(format!(
                    "{}: `crate::{seg}` goes through the crate root's re-exports; name the module",
                    rel.display()
                ));
            }
        }
    }
    violations.dedup();
    assert!(
        violations.is_empty(),
        "layering violations:\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn the_checker_sees_through_comments_and_root_paths() {
    let code = code_of("use crate::model::X; // crate::router\n/* crate::migration */ let e: crate::Error;");
    assert_eq!(crate_paths(&code), vec!["model".to_string(), "Error".to_string()]);
    assert_eq!(crate_paths("use crate::{a, b}; $crate::x"), vec!["{".to_string()]);
}
