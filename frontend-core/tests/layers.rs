//! The crate's layering, checked on its own source: no module imports a
//! module that (directly or not) imports it, `query` never imports `http`,
//! `cluster` never imports `query` or `http`, `metrics` imports none of
//! them, and the crate does not depend on the leaf, the cache or tantivy.
//!
//! Imports are read as `crate::a::b` paths (test code included); a path is
//! attributed to the longest module it names. A module's use of its own
//! ancestors (their re-exports) is not an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`query::root`, `crate` for the root) → the source files
/// that make it up.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap().with_extension("");
        let mut parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        // `x/mod.rs` is `x`; a `tests.rs` beside `x.rs` is part of `x`.
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "tests")
        ) {
            parts.pop();
        }
        let name = if parts.is_empty() {
            "crate".to_string()
        } else {
            parts.join("::")
        };
        modules.entry(name).or_default().push(file);
    }
    modules
}

/// The `crate::…` paths in `text`, as lists of lowercase segments.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        // Comments name modules without importing them.
        let line_start = text.len() - rest.len() - "crate::".len();
        let line = &text[text[..line_start].rfind('\n').map_or(0, |n| n + 1)..line_start];
        if line.contains("//") {
            continue;
        }
        let mut segments = Vec::new();
        let mut tail = rest;
        loop {
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            if end == 0 {
                break;
            }
            segments.push(tail[..end].to_string());
            tail = &tail[end..];
            match tail.strip_prefix("::") {
                Some(next) => tail = next,
                None => break,
            }
        }
        paths.push(segments);
    }
    paths
}

/// Module → the modules it imports.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, files) in &modules {
        let edges = graph.entry(module.clone()).or_default();
        for file in files {
            let text = std::fs::read_to_string(file).unwrap();
            for path in crate_paths(&text) {
                let target = (1..=path.len())
                    .rev()
                    .map(|n| path[..n].join("::"))
                    .find(|name| modules.contains_key(name))
                    .unwrap_or_else(|| "crate".to_string());
                let ancestor = target == "crate"
                    || *module == target
                    || module.starts_with(&format!("{target}::"));
                if !ancestor {
                    edges.insert(target);
                }
            }
        }
    }
    graph
}

#[test]
fn no_module_imports_itself_through_others() {
    let graph = graph();
    // Depth-first search; a back edge to a module on the stack is a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            cycles.push(cycle.join(" → "));
            return;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, cycles);
        }
        stack.pop();
        done.insert(node.to_string());
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn layers_import_only_downward() {
    let forbidden: &[(&str, &[&str])] = &[
        ("query", &["http", "config"]),
        ("cluster", &["query", "http", "config"]),
        ("metrics", &["query", "http", "cluster", "config"]),
    ];
    let mut violations = Vec::new();
    for (module, imports) in graph() {
        for (layer, banned) in forbidden {
            let inside = module == *layer || module.starts_with(&format!("{layer}::"));
            for target in imports.iter().filter(|_| inside) {
                let top = target.split("::").next().unwrap();
                if banned.contains(&top) {
                    violations.push(format!("{module} imports {target}"));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_crate_does_not_depend_on_leaf_cache_or_tantivy() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    for line in manifest.lines() {
        let name = line.split(['=', '.', ' ']).next().unwrap_or("");
        assert!(
            !matches!(name, "leaf" | "cache" | "tantivy"),
            "frontend-core must not depend on {name}: {line}"
        );
    }
}

#[test]
fn the_checker_sees_paths_and_cycles() {
    let paths =
        crate_paths("use crate::query::root::{Answer, Root};\nx = crate::metrics::X; mycrate::a");
    assert_eq!(
        paths,
        vec![
            vec!["query".to_string(), "root".to_string()],
            vec!["metrics".to_string()],
        ]
    );
    let graph = graph();
    assert!(graph["query::root"].contains("query::fanout"), "{graph:?}");
    assert!(graph.contains_key("http::error"));
}
