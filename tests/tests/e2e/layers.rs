//! The module-cycle and layering check over this workspace's real source
//! (`tests::layers`): no crate has a cycle among its top-level modules, and
//! every layer rule of `tests::layers::RULES` holds.

use tests::layers::{check_workspace, RULES};
use tests::prom::workspace_root;

#[test]
fn no_crate_has_a_module_cycle_and_every_layer_rule_holds() {
    if let Err(problems) = check_workspace(&workspace_root(), RULES) {
        panic!(
            "{} problem(s) in the module structure:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
}

/// The names in the `[dependencies]` table of `crate_dir/Cargo.toml`.
fn dependencies(crate_dir: &std::path::Path) -> Vec<String> {
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    let mut in_dependencies = false;
    let mut names = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
        } else if in_dependencies && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or("");
            names.push(name.to_string());
        }
    }
    names
}

#[test]
fn the_serving_core_depends_on_no_leaf_cache_or_tantivy_even_through_workspace_crates() {
    let root = workspace_root();
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![(
        "frontend-core".to_string(),
        vec!["frontend-core".to_string()],
    )];
    while let Some((krate, path)) = todo.pop() {
        if !seen.insert(krate.clone()) {
            continue;
        }
        for dependency in dependencies(&root.join(&krate)) {
            assert!(
                !matches!(
                    dependency.as_str(),
                    "leaf" | "cache" | "tantivy" | "indexer"
                ),
                "frontend-core must not depend on {dependency} (through {})",
                path.join(" → ")
            );
            if root.join(&dependency).join("Cargo.toml").exists() {
                let mut next = path.clone();
                next.push(dependency.clone());
                todo.push((dependency, next));
            }
        }
    }
    assert!(
        seen.contains("svc"),
        "the walk reached the workspace crates"
    );
}
