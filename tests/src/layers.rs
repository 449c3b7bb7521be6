//! The module-cycle and layering check: for every workspace crate, the
//! graph of its top-level modules must have no cycle, and the crates named
//! in [`RULES`] must keep their layers.
//!
//! A top-level module is one declared in `src/lib.rs` or `src/main.rs`
//! (each is its own crate root). Its files are the one it is declared in
//! and every file of its submodules, found by following `mod x;`
//! declarations as rustc does (`#[path]` included). Module `a` depends on
//! module `b` when code in `a` names `crate::b::…` (also inside
//! `use crate::{b, …}`), reaches `b` through `super::`, or names an item
//! that the crate root re-exports from `b` (`pub use b::Item;` then
//! `crate::Item`). Code under `#[cfg(test)]` is left out: nothing depends
//! on a test module, so it cannot make a cycle that matters.
//!
//! The check reads source text with a small tokenizer (comments and string
//! contents are skipped), not rustc: paths built by macros are not seen.
//!
//! ```no_run
//! let root = tests::prom::workspace_root();
//! if let Err(problems) = tests::layers::check_workspace(&root, tests::layers::RULES) {
//!     panic!("{}", problems.join("\n"));
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tokens::{tokenize, Token};

mod tokens;

/// One layering rule: in crate `krate` (its package name), top-level
/// module `module` must not depend on any of `must_not_import`.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub krate: &'static str,
    pub module: &'static str,
    pub must_not_import: &'static [&'static str],
}

/// The declared layers. The serving core of the frontend depends only
/// downward: `http` → `query` → `cluster`, and its `metrics` (used by all
/// three) on none of them.
pub const RULES: &[Rule] = &[
    Rule {
        krate: "frontend-core",
        module: "query",
        must_not_import: &["http"],
    },
    Rule {
        krate: "frontend-core",
        module: "cluster",
        must_not_import: &["query", "http"],
    },
    Rule {
        krate: "frontend-core",
        module: "metrics",
        must_not_import: &["http", "query", "cluster"],
    },
];

/// Where one dependency was first seen: `file:line`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// The top-level modules of one crate root and their dependencies.
#[derive(Debug, Default)]
pub struct ModuleGraph {
    /// `lib.rs` or `main.rs`, relative to the crate folder.
    pub root: String,
    pub modules: BTreeSet<String>,
    /// `(from, to)` with the first place `from` names `to`.
    pub edges: BTreeMap<(String, String), Site>,
}

impl ModuleGraph {
    /// The modules `module` depends on.
    pub fn dependencies(&self, module: &str) -> BTreeSet<&str> {
        self.edges
            .keys()
            .filter(|(from, _)| from == module)
            .map(|(_, to)| to.as_str())
            .collect()
    }

    /// Every strongly connected component of more than one module (each is
    /// at least one cycle), sorted, each sorted.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let mut tarjan = Tarjan {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            next: 0,
            components: Vec::new(),
        };
        for module in &self.modules {
            if !tarjan.index.contains_key(module.as_str()) {
                tarjan.visit(module);
            }
        }
        let mut components: Vec<Vec<String>> = tarjan
            .components
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|mut c| {
                c.sort();
                c
            })
            .collect();
        components.sort();
        components
    }

    /// One cycle through the modules of `component`, starting and ending at
    /// its first module.
    fn cycle_path(&self, component: &[String]) -> Vec<String> {
        let members: BTreeSet<&str> = component.iter().map(String::as_str).collect();
        let start = component[0].as_str();
        // Breadth-first from `start`'s successors back to `start`.
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(at) = queue.pop_front() {
            for next in self.dependencies(at) {
                if !members.contains(next) {
                    continue;
                }
                if next == start {
                    let mut path = vec![start.to_string()];
                    let mut cursor = at;
                    while cursor != start {
                        path.push(cursor.to_string());
                        cursor = parent[cursor];
                    }
                    path.push(start.to_string());
                    path.reverse();
                    return path;
                }
                if !parent.contains_key(next) {
                    parent.insert(next, at);
                    queue.push_back(next);
                }
            }
        }
        component.to_vec()
    }
}

struct Tarjan<'a> {
    graph: &'a ModuleGraph,
    index: BTreeMap<&'a str, usize>,
    low: BTreeMap<&'a str, usize>,
    stack: Vec<&'a str>,
    on_stack: BTreeSet<&'a str>,
    next: usize,
    components: Vec<Vec<String>>,
}

impl<'a> Tarjan<'a> {
    fn visit(&mut self, module: &'a str) {
        self.index.insert(module, self.next);
        self.low.insert(module, self.next);
        self.next += 1;
        self.stack.push(module);
        self.on_stack.insert(module);
        for next in self.graph.dependencies(module) {
            if !self.index.contains_key(next) {
                self.visit(next);
                let low = self.low[module].min(self.low[next]);
                self.low.insert(module, low);
            } else if self.on_stack.contains(next) {
                let low = self.low[module].min(self.index[next]);
                self.low.insert(module, low);
            }
        }
        if self.low[module] == self.index[module] {
            let mut component = Vec::new();
            while let Some(top) = self.stack.pop() {
                self.on_stack.remove(top);
                component.push(top.to_string());
                if top == module {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

/// Checks every crate of the workspace at `root` (its `Cargo.toml`'s
/// `members`): no cycle among top-level modules, and every rule kept. The
/// error lists each problem on its own lines, with where it was seen.
pub fn check_workspace(root: &Path, rules: &[Rule]) -> Result<(), Vec<String>> {
    let manifest = read(&root.join("Cargo.toml")).map_err(|e| vec![e])?;
    let mut problems = Vec::new();
    let mut crates = BTreeMap::new();
    for member in workspace_members(&manifest) {
        let dir = root.join(&member);
        let name = match read(&dir.join("Cargo.toml")) {
            Ok(text) => package_name(&text).unwrap_or(member.clone()),
            Err(error) => {
                problems.push(error);
                continue;
            }
        };
        match crate_graphs(&dir) {
            Ok(graphs) => {
                crates.insert(name, graphs);
            }
            Err(error) => problems.push(error),
        }
    }
    for (name, graphs) in &crates {
        for graph in graphs {
            problems.extend(cycle_problems(name, graph));
        }
    }
    problems.extend(rule_problems(&crates, rules));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Each cycle of `graph` as one problem: one cycle through it, then every
/// dependency inside it with where it is made.
fn cycle_problems(krate: &str, graph: &ModuleGraph) -> Vec<String> {
    graph
        .cycles()
        .iter()
        .map(|component| {
            let mut text = format!(
                "crate `{krate}` ({}): module cycle {} (modules {{{}}})",
                graph.root,
                graph.cycle_path(component).join(" -> "),
                component.join(", ")
            );
            for ((from, to), site) in &graph.edges {
                if component.contains(from) && component.contains(to) {
                    text.push_str(&format!("\n    {from} -> {to}: {site}"));
                }
            }
            text
        })
        .collect()
}

fn rule_problems(crates: &BTreeMap<String, Vec<ModuleGraph>>, rules: &[Rule]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut missing = BTreeSet::new();
    for rule in rules {
        let Some(graphs) = crates.get(rule.krate) else {
            if !missing.insert(rule.krate) {
                continue;
            }
            problems.push(format!(
                "layer rule for crate `{}`: no such crate in the workspace (rename or drop the rule)",
                rule.krate
            ));
            continue;
        };
        let Some(graph) = graphs.iter().find(|g| g.modules.contains(rule.module)) else {
            problems.push(format!(
                "layer rule for crate `{}`: it has no top-level module `{}`",
                rule.krate, rule.module
            ));
            continue;
        };
        for forbidden in rule.must_not_import {
            if let Some(site) = graph
                .edges
                .get(&(rule.module.to_string(), forbidden.to_string()))
            {
                problems.push(format!(
                    "crate `{}`: layer violation: `{}` must not import `{forbidden}`, but does at {site}",
                    rule.krate, rule.module
                ));
            }
        }
    }
    problems
}

/// The module graph of each crate root (`src/lib.rs`, `src/main.rs`) of
/// the crate in `dir`.
pub fn crate_graphs(dir: &Path) -> Result<Vec<ModuleGraph>, String> {
    let mut graphs = Vec::new();
    for root in ["lib.rs", "main.rs"] {
        let path = dir.join("src").join(root);
        if path.is_file() {
            graphs.push(root_graph(dir, &path, root)?);
        }
    }
    Ok(graphs)
}

/// A source file's modules, as found by walking its tokens.
struct Walk {
    /// `mod x;` declarations: module path (from the crate root), file.
    children: Vec<(Vec<String>, PathBuf)>,
    /// Paths named, resolved from the crate root (`crate`, `super` and
    /// `self` applied), with their lines.
    references: Vec<(Vec<String>, usize)>,
    /// At the crate root: `use` items, as `(name, path)`.
    reexports: Vec<(String, Vec<String>)>,
}

fn root_graph(crate_dir: &Path, root_file: &Path, root_name: &str) -> Result<ModuleGraph, String> {
    let mut graph = ModuleGraph {
        root: format!("src/{root_name}"),
        ..ModuleGraph::default()
    };
    let root_walk = walk_file(root_file, &[], true)?;
    let mut reexports: BTreeMap<String, String> = BTreeMap::new();
    let top: BTreeSet<String> = root_walk
        .children
        .iter()
        .map(|(path, _)| path[0].clone())
        .collect();
    for (name, path) in &root_walk.reexports {
        if let Some(first) = path.first().filter(|m| top.contains(*m)) {
            reexports.insert(name.clone(), first.clone());
        }
    }
    graph.modules = top.clone();
    // Every file of each top-level module, breadth-first through `mod x;`.
    let mut pending: Vec<(Vec<String>, PathBuf)> = root_walk.children;
    let mut seen = BTreeSet::new();
    while let Some((module_path, file)) = pending.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let walk = walk_file(&file, &module_path, false)?;
        let from = module_path[0].clone();
        let shown = file
            .strip_prefix(crate_dir.parent().unwrap_or(crate_dir))
            .unwrap_or(&file);
        for (target, line) in walk.references {
            let Some(first) = target.first() else {
                continue;
            };
            let to = if top.contains(first) {
                first.clone()
            } else if let Some(module) = reexports.get(first) {
                module.clone()
            } else {
                continue;
            };
            if to != from {
                graph.edges.entry((from.clone(), to)).or_insert(Site {
                    file: shown.to_path_buf(),
                    line,
                });
            }
        }
        pending.extend(walk.children);
    }
    Ok(graph)
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// The `members = [...]` of a workspace manifest.
fn workspace_members(manifest: &str) -> Vec<String> {
    let Some(start) = manifest.find("members") else {
        return Vec::new();
    };
    let rest = &manifest[start..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        return Vec::new();
    };
    rest[open + 1..close]
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

/// The `name` of a crate manifest's `[package]`.
fn package_name(manifest: &str) -> Option<String> {
    let package = &manifest[manifest.find("[package]")?..];
    package.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "name").then(|| value.trim().trim_matches('"').to_string())
    })
}

/// Walks one source file of module `module_path` (empty for the crate
/// root): its `mod` declarations and the module paths it refers to.
fn walk_file(file: &Path, module_path: &[String], is_root: bool) -> Result<Walk, String> {
    let source = read(file)?;
    let tokens = tokenize(&source);
    // The folder this file's child modules live in.
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
    let is_mod_rs = is_root || name == "mod.rs";
    let children_dir = if is_mod_rs {
        dir.clone()
    } else {
        dir.join(name.trim_end_matches(".rs"))
    };
    let mut walk = Walk {
        children: Vec::new(),
        references: Vec::new(),
        reexports: Vec::new(),
    };
    let mut walker = Walker {
        tokens: &tokens,
        at: 0,
        file_dir: dir,
        walk: &mut walk,
        is_root,
    };
    walker.items(module_path, &children_dir);
    Ok(walk)
}

struct Walker<'a> {
    tokens: &'a [(Token, usize)],
    at: usize,
    /// The folder of the file itself, for `#[path]`.
    file_dir: PathBuf,
    walk: &'a mut Walk,
    is_root: bool,
}

impl Walker<'_> {
    fn peek(&self, ahead: usize) -> Option<&Token> {
        self.tokens.get(self.at + ahead).map(|(t, _)| t)
    }

    fn ident(&self, ahead: usize, word: &str) -> bool {
        matches!(self.peek(ahead), Some(Token::Ident(w)) if w == word)
    }

    fn punct(&self, ahead: usize, c: char) -> bool {
        self.peek(ahead) == Some(&Token::Punct(c))
    }

    fn line(&self) -> usize {
        self.tokens.get(self.at).map_or(0, |(_, l)| *l)
    }

    /// Walks items until the `}` that closes the block opened before the
    /// call (or the end of the file), for module `module_path` whose child
    /// files are in `children_dir`.
    fn items(&mut self, module_path: &[String], children_dir: &Path) {
        // Attributes seen since the last item: `#[cfg(test)]` and `#[path]`.
        let mut cfg_test = false;
        let mut path_attr: Option<String> = None;
        while let Some(token) = self.peek(0).cloned() {
            match token {
                Token::Punct('}') => {
                    self.at += 1;
                    return;
                }
                Token::Punct('#')
                    if self.punct(1, '[') || (self.punct(1, '!') && self.punct(2, '[')) =>
                {
                    let inner = self.punct(1, '!');
                    self.at += if inner { 2 } else { 1 };
                    let attr = self.group();
                    if !inner {
                        if attr.first() == Some(&Token::Ident("cfg".into()))
                            && attr.get(1) == Some(&Token::Punct('('))
                            && attr.get(2) == Some(&Token::Ident("test".into()))
                            && attr.get(3) == Some(&Token::Punct(')'))
                        {
                            cfg_test = true;
                        }
                        if let [Token::Ident(p), Token::Punct('='), Token::Str(value)] =
                            attr.as_slice()
                        {
                            if p == "path" {
                                path_attr = Some(value.clone());
                            }
                        }
                    }
                    continue;
                }
                _ => {}
            }
            if cfg_test {
                self.skip_item();
                cfg_test = false;
                path_attr = None;
                continue;
            }
            // `mod name;` or `mod name { … }`, after any visibility.
            let mut ahead = 0;
            if self.ident(0, "pub") {
                ahead = 1;
                if self.punct(1, '(') {
                    while self.peek(ahead).is_some() && !self.punct(ahead, ')') {
                        ahead += 1;
                    }
                    ahead += 1;
                }
            }
            if self.ident(ahead, "mod") {
                if let Some(Token::Ident(name)) = self.peek(ahead + 1).cloned() {
                    let mut child_path = module_path.to_vec();
                    child_path.push(name.clone());
                    if self.punct(ahead + 2, ';') {
                        let file = match path_attr.take() {
                            Some(p) => self.file_dir.join(p),
                            None => {
                                let flat = children_dir.join(format!("{name}.rs"));
                                if flat.is_file() {
                                    flat
                                } else {
                                    children_dir.join(&name).join("mod.rs")
                                }
                            }
                        };
                        if file.is_file() {
                            self.walk.children.push((child_path, file));
                        }
                        self.at += ahead + 3;
                        continue;
                    }
                    if self.punct(ahead + 2, '{') {
                        self.at += ahead + 3;
                        let dir = children_dir.join(&name);
                        self.items(&child_path, &dir);
                        path_attr = None;
                        continue;
                    }
                }
            }
            path_attr = None;
            // At the crate root, every `use` (public or not: submodules see
            // private imports of their ancestors) makes `crate::Name` mean
            // the item it imports.
            let reexport = self.is_root && self.ident(ahead, "use");
            if reexport {
                self.at += ahead + 1;
                let mut paths = Vec::new();
                self.use_tree(Vec::new(), &mut paths);
                for (path, alias) in paths {
                    let path = match path.first().map(String::as_str) {
                        Some("crate") | Some("self") => path[1..].to_vec(),
                        _ => path,
                    };
                    if let Some(name) = alias.or_else(|| path.last().cloned()) {
                        self.walk.reexports.push((name, path));
                    }
                }
                continue;
            }
            self.reference(module_path);
        }
    }

    /// At a path start (`crate::`, `super::`, `self::`), records what it
    /// names; steps over one token otherwise. Blocks opened here are walked
    /// by the caller's loop, whose `}` handling relies on them being balanced,
    /// so braces that are not module blocks are stepped over as a group.
    fn reference(&mut self, module_path: &[String]) {
        let after_sep = self.at > 0 && self.tokens[self.at - 1].0 == Token::PathSep;
        let line = self.line();
        let start: Option<Vec<String>> = if after_sep {
            None
        } else if self.ident(0, "crate") && self.peek(1) == Some(&Token::PathSep) {
            self.at += 2;
            Some(Vec::new())
        } else if self.ident(0, "self") && self.peek(1) == Some(&Token::PathSep) {
            self.at += 2;
            Some(module_path.to_vec())
        } else if self.ident(0, "super") && self.peek(1) == Some(&Token::PathSep) {
            let mut base = module_path.to_vec();
            while self.ident(0, "super") && self.peek(1) == Some(&Token::PathSep) {
                base.pop();
                self.at += 2;
            }
            Some(base)
        } else {
            None
        };
        match start {
            Some(base) => {
                let mut paths = Vec::new();
                self.use_tree(Vec::new(), &mut paths);
                for (path, _) in paths {
                    let mut full = base.clone();
                    full.extend(path);
                    self.walk.references.push((full, line));
                }
            }
            None => {
                if self.punct(0, '{') {
                    // A block that is not a module: walk inside it for paths.
                    self.at += 1;
                    self.block(module_path);
                } else {
                    self.at += 1;
                }
            }
        }
    }

    /// Walks a non-module block up to and past its closing `}`.
    fn block(&mut self, module_path: &[String]) {
        while let Some(token) = self.peek(0) {
            if token == &Token::Punct('}') {
                self.at += 1;
                return;
            }
            self.reference(module_path);
        }
    }

    /// Reads a use tree (`a::b`, `a::{b, c::d}`, `a as x`, `*`) at the
    /// cursor: each full path with its alias. Stops at anything else.
    fn use_tree(&mut self, prefix: Vec<String>, out: &mut Vec<(Vec<String>, Option<String>)>) {
        let mut path = prefix;
        loop {
            match self.peek(0).cloned() {
                Some(Token::Ident(word)) => {
                    path.push(word);
                    self.at += 1;
                    if self.peek(0) == Some(&Token::PathSep) {
                        self.at += 1;
                        continue;
                    }
                    let mut alias = None;
                    if self.ident(0, "as") {
                        if let Some(Token::Ident(name)) = self.peek(1).cloned() {
                            alias = Some(name);
                            self.at += 2;
                        }
                    }
                    out.push((path, alias));
                    return;
                }
                Some(Token::Punct('{')) => {
                    self.at += 1;
                    loop {
                        match self.peek(0) {
                            None => return,
                            Some(Token::Punct('}')) => {
                                self.at += 1;
                                return;
                            }
                            Some(Token::Punct(',')) => self.at += 1,
                            Some(Token::Ident(w)) if w == "self" => {
                                self.at += 1;
                                out.push((path.clone(), None));
                            }
                            Some(Token::Ident(_)) | Some(Token::Punct('{')) => {
                                self.use_tree(path.clone(), out);
                            }
                            Some(_) => self.at += 1,
                        }
                    }
                }
                Some(Token::Punct('*')) => {
                    self.at += 1;
                    out.push((path, None));
                    return;
                }
                _ => {
                    if !path.is_empty() {
                        out.push((path, None));
                    }
                    return;
                }
            }
        }
    }

    /// Reads a bracketed group (`[…]`, at its opening bracket) and returns
    /// the tokens inside.
    fn group(&mut self) -> Vec<Token> {
        let mut depth = 0usize;
        let mut inside = Vec::new();
        while let Some(token) = self.peek(0).cloned() {
            self.at += 1;
            match token {
                Token::Punct('[') | Token::Punct('(') | Token::Punct('{') => {
                    depth += 1;
                    if depth == 1 {
                        continue;
                    }
                }
                Token::Punct(']') | Token::Punct(')') | Token::Punct('}') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return inside;
                    }
                }
                _ => {}
            }
            inside.push(token);
        }
        inside
    }

    /// Steps over one item: up to a `;` outside brackets, or past the `}`
    /// that closes its body.
    fn skip_item(&mut self) {
        let mut depth = 0usize;
        while let Some(token) = self.peek(0).cloned() {
            self.at += 1;
            match token {
                Token::Punct('(') | Token::Punct('[') | Token::Punct('{') => depth += 1,
                Token::Punct(')') | Token::Punct(']') => depth = depth.saturating_sub(1),
                Token::Punct('}') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return;
                    }
                }
                Token::Punct(';') if depth == 0 => return,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workspace in a temporary folder: `files` are `(path, contents)`;
    /// each crate's `Cargo.toml` is written from its folder name.
    fn workspace(crates: &[(&str, &[(&str, &str)])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temporary directory");
        let members: Vec<String> = crates
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        let manifest = format!("[workspace]\nmembers = [{}]\n", members.join(", "));
        std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
        for (name, files) in crates {
            let root = dir.path().join(name);
            std::fs::create_dir_all(&root).unwrap();
            let manifest = format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\n");
            std::fs::write(root.join("Cargo.toml"), manifest).unwrap();
            for (path, text) in *files {
                let path = root.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
        }
        dir
    }

    fn graph(files: &[(&str, &str)]) -> ModuleGraph {
        let dir = workspace(&[("alpha", files)]);
        let mut graphs = crate_graphs(&dir.path().join("alpha")).unwrap();
        assert_eq!(graphs.len(), 1);
        graphs.remove(0)
    }

    fn edges(graph: &ModuleGraph) -> Vec<(&str, &str)> {
        graph
            .edges
            .keys()
            .map(|(from, to)| (from.as_str(), to.as_str()))
            .collect()
    }

    const NO_RULES: &[Rule] = &[];

    #[test]
    fn a_cycle_fails_naming_its_modules_and_where_each_edge_is() {
        let dir = workspace(&[(
            "alpha",
            &[
                ("src/lib.rs", "mod a;\nmod b;\nmod c;\n"),
                ("src/a.rs", "use crate::b::B;\npub struct A;\n"),
                (
                    "src/b.rs",
                    "pub struct B;\nfn f() -> crate::c::C { todo!() }\n",
                ),
                ("src/c.rs", "pub struct C(crate::a::A);\n"),
            ],
        )]);
        let problems = check_workspace(dir.path(), NO_RULES).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        let problem = &problems[0];
        assert!(problem.contains("crate `alpha`"), "{problem}");
        assert!(
            problem.contains("module cycle a -> b -> c -> a"),
            "{problem}"
        );
        assert!(problem.contains("a -> b: alpha/src/a.rs:1"), "{problem}");
        assert!(problem.contains("b -> c: alpha/src/b.rs:2"), "{problem}");
        assert!(problem.contains("c -> a: alpha/src/c.rs:1"), "{problem}");
    }

    #[test]
    fn a_dag_passes() {
        let dir = workspace(&[(
            "alpha",
            &[
                (
                    "src/lib.rs",
                    "pub mod a;\npub mod b;\npub mod c;\npub use a::A;\n",
                ),
                (
                    "src/a.rs",
                    "use crate::{b::B, c};\npub struct A(B, c::C);\n",
                ),
                ("src/b.rs", "use super::c::C;\npub struct B(C);\n"),
                ("src/c.rs", "pub struct C;\n"),
                ("src/main.rs", "mod cli;\nfn main() { alpha::A; }\n"),
                ("src/cli.rs", "pub fn run() {}\n"),
            ],
        )]);
        assert_eq!(check_workspace(dir.path(), NO_RULES), Ok(()));
    }

    #[test]
    fn every_kind_of_path_makes_an_edge() {
        let graph = graph(&[
            (
                "src/lib.rs",
                "mod a;\nmod b;\nmod c;\nmod d;\nmod e;\nmod f;\nuse e::Thing as Renamed;\npub use f::{Other};\n",
            ),
            // Grouped, nested and `self` imports.
            ("src/a.rs", "use crate::{b::{self, X}, c::Y};\n"),
            // `super::` from a file submodule two levels down.
            ("src/b.rs", "mod inner;\n"),
            ("src/b/inner.rs", "mod deeper;\n"),
            ("src/b/inner/deeper.rs", "fn f() { super::super::super::c::go(); }\n"),
            // An expression path, and items the root imports.
            ("src/c.rs", "fn f() -> u32 { crate::d::N + crate::Renamed::M + crate::Other::K }\n"),
            ("src/d.rs", "pub const N: u32 = 1;\n"),
            ("src/e.rs", "pub struct Thing;\n"),
            ("src/f/mod.rs", "pub struct Other;\n"),
        ]);
        assert_eq!(
            edges(&graph),
            [
                ("a", "b"),
                ("a", "c"),
                ("b", "c"),
                ("c", "d"),
                ("c", "e"),
                ("c", "f")
            ]
        );
    }

    #[test]
    fn test_code_comments_and_strings_make_no_edge() {
        let graph = graph(&[
            ("src/lib.rs", "mod a;\nmod b;\n"),
            (
                "src/a.rs",
                "// crate::b::X\n/* crate::b::Y /* nested */ crate::b::Z */\n\
                 const S: &str = \"crate::b::X\";\nconst R: &str = r#\"crate::b::\"#;\n\
                 const C: char = '\"'; fn f<'a>(x: &'a str) {}\n\
                 #[cfg(test)]\nmod tests {\n    use crate::b::X;\n}\n\
                 #[cfg(test)]\nmod more;\n\
                 #[cfg(test)]\nuse crate::b::Y;\n",
            ),
            ("src/a/more.rs", "use crate::b::Z;\n"),
            (
                "src/b.rs",
                "pub fn g() { let _ = \"}\"; }\npub fn h() { crate::a::f(\"\"); }\n",
            ),
        ]);
        assert_eq!(edges(&graph), [("b", "a")]);
    }

    #[test]
    fn a_path_attribute_is_followed_and_counts_for_its_module() {
        let graph = graph(&[
            ("src/lib.rs", "mod a;\nmod b;\n"),
            ("src/a.rs", "#[path = \"a_extra.rs\"]\nmod extra;\n"),
            ("src/a_extra.rs", "use crate::b::B;\n"),
            ("src/b.rs", "pub struct B;\n"),
        ]);
        assert_eq!(graph.modules, BTreeSet::from(["a".into(), "b".into()]));
        assert_eq!(edges(&graph), [("a", "b")]);
    }

    #[test]
    fn inline_modules_shift_super() {
        let graph = graph(&[
            ("src/lib.rs", "mod a;\nmod b;\n"),
            // `super` inside `mod inner` is `a` itself: no edge; two are the root.
            ("src/a.rs", "mod inner {\n    use super::Local;\n    use super::super::b::B;\n}\nstruct Local;\n"),
            ("src/b.rs", "pub struct B;\n"),
        ]);
        assert_eq!(edges(&graph), [("a", "b")]);
    }

    const LAYERS: &[Rule] = &[
        Rule {
            krate: "frontend-core",
            module: "query",
            must_not_import: &["http"],
        },
        Rule {
            krate: "frontend-core",
            module: "cluster",
            must_not_import: &["query", "http"],
        },
    ];

    #[test]
    fn layers_depending_only_downward_pass() {
        let dir = workspace(&[(
            "frontend-core",
            &[
                (
                    "src/lib.rs",
                    "pub mod cluster;\npub mod http;\npub mod query;\n",
                ),
                ("src/http.rs", "mod router;\n"),
                (
                    "src/http/router.rs",
                    "use crate::query::Root;\nuse crate::cluster::Topology;\n",
                ),
                (
                    "src/query.rs",
                    "pub struct Root(crate::cluster::Topology);\n",
                ),
                ("src/cluster.rs", "pub struct Topology;\n"),
            ],
        )]);
        assert_eq!(check_workspace(dir.path(), LAYERS), Ok(()));
    }

    #[test]
    fn a_layer_violation_fails_without_a_cycle() {
        let dir = workspace(&[(
            "frontend-core",
            &[
                (
                    "src/lib.rs",
                    "pub mod cluster;\npub mod http;\npub mod query;\n",
                ),
                ("src/http.rs", "pub struct ApiError;\n"),
                ("src/query.rs", "mod root;\n"),
                (
                    "src/query/root.rs",
                    "\nfn f() -> crate::http::ApiError { todo!() }\n",
                ),
                ("src/cluster.rs", "pub struct Topology;\n"),
            ],
        )]);
        let problems = check_workspace(dir.path(), LAYERS).unwrap_err();
        assert_eq!(
            problems,
            [
                "crate `frontend-core`: layer violation: `query` must not import `http`, \
              but does at frontend-core/src/query/root.rs:2"
            ]
        );
    }

    #[test]
    fn a_rule_for_a_missing_crate_or_module_fails() {
        let dir = workspace(&[(
            "frontend-core",
            &[("src/lib.rs", "pub mod query;\n"), ("src/query.rs", "")],
        )]);
        let rules = &[
            LAYERS[0],
            Rule {
                krate: "nowhere",
                module: "x",
                must_not_import: &["y"],
            },
        ];
        let problems = check_workspace(dir.path(), rules).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("`nowhere`: no such crate"),
            "{problems:#?}"
        );
        let dir = workspace(&[("frontend-core", &[("src/lib.rs", "")])]);
        let problems = check_workspace(dir.path(), &LAYERS[..1]).unwrap_err();
        assert!(
            problems[0].contains("no top-level module `query`"),
            "{problems:#?}"
        );
    }
}
