//! `cargo xtask imports`: the module graph of each crate, from its `use` trees and
//! `crate::`/`super::` paths, and every import cycle in it. Part of `lint`: imports
//! run one way. Test modules (`#[cfg(test)] mod ... { }`) are left out: they may
//! borrow fixtures from anywhere.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use crate::util;

/// The crates checked, by their source folders.
const CRATES: [&str; 3] = [
    "portwatch/src",
    "portwatch-ebpf/src",
    "portwatch-common/src",
];

/// Module path (`kernel::load`, `` for the root) -> modules it imports.
type Graph = BTreeMap<String, BTreeSet<String>>;

pub fn check(verbose: bool) -> Result<()> {
    let root = util::workspace_root();
    let mut failures = Vec::new();
    for dir in CRATES {
        let graph = crate_graph(&root.join(dir))?;
        if verbose {
            eprintln!("{dir}:");
            for (module, imports) in &graph {
                let imports: Vec<&str> = imports.iter().map(|m| display(m)).collect();
                eprintln!("  {} -> {}", display(module), imports.join(", "));
            }
        }
        for cycle in cycles(&graph) {
            let names: Vec<&str> = cycle.iter().map(|m| display(m)).collect();
            failures.push(format!("{dir}: import cycle among {}", names.join(", ")));
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    eprintln!("imports: no cycle in {}", CRATES.join(", "));
    Ok(())
}

fn display(module: &str) -> &str {
    if module.is_empty() {
        "crate"
    } else {
        module
    }
}

/// Every `.rs` file below `src`, by module path.
fn modules(src: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.insert(module_path(src, &path), path);
            }
        }
    }
    Ok(out)
}

fn module_path(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn crate_graph(src: &Path) -> Result<Graph> {
    let modules = modules(src)?;
    let known: BTreeSet<&str> = modules.keys().map(String::as_str).collect();
    let mut graph = Graph::new();
    for (module, file) in &modules {
        let text = fs::read_to_string(file)?;
        let code = without_tests(&without_comments(&text));
        let mut edges = BTreeSet::new();
        for path in paths(&code) {
            // An item of an ancestor module counts as a dependency on it too.
            if let Some(target) = resolve(module, &path, &known) {
                if target != *module {
                    edges.insert(target);
                }
            }
        }
        graph.insert(module.clone(), edges);
    }
    Ok(graph)
}

/// The source without `//` comments (doc comments included) and string literals'
/// contents, so neither is read as a path.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_string = false;
        let mut prev = '\0';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if in_string {
                if c == '"' && prev != '\\' {
                    in_string = false;
                    out.push('"');
                }
                prev = if prev == '\\' && c == '\\' { '\0' } else { c };
                continue;
            }
            if c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' {
                in_string = true;
            }
            out.push(c);
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// The source without `#[cfg(test)]` items (a module with its braces, or one
/// item up to its end).
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = ["#[cfg(test)]", "#[cfg(all(test"]
        .iter()
        .filter_map(|marker| rest.find(marker))
        .min()
    {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        // The item ends at its closing brace (or at a `;` before any brace).
        let open = after.find('{');
        let semi = after.find(';');
        let end = match (open, semi) {
            (Some(o), Some(s)) if s < o => s + 1,
            (Some(o), _) => matching_brace(after, o).map_or(after.len(), |c| c + 1),
            (None, Some(s)) => s + 1,
            (None, None) => after.len(),
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn matching_brace(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Every path the code names that starts at `crate`, `super` or `self`: the
/// leaves of `use` trees, and paths written inline.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let boundary = at == 0 || !is_ident_char(rest[..at].chars().last().unwrap_or(' '));
        let after = &rest[at + 4..];
        match after.find(';') {
            Some(end) if boundary => {
                expand_use(&after[..end], &mut Vec::new(), &mut found);
                rest = &after[end..];
            }
            _ => rest = after,
        }
    }
    for start in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            let boundary = at == 0 || !is_ident_char(rest[..at].chars().last().unwrap_or(' '));
            let tail = &rest[at..];
            if boundary {
                let end = tail
                    .find(|c: char| !(is_ident_char(c) || c == ':'))
                    .unwrap_or(tail.len());
                // `crate::{` opens a use tree, read above.
                let path = split_path(&tail[..end]);
                if path.len() > 1 {
                    found.push(path);
                }
            }
            rest = &tail[start.len()..];
        }
    }
    found.sort();
    found.dedup();
    found
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn split_path(text: &str) -> Vec<String> {
    text.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The leaves of one use tree, `a::{b, c::{d}}`, with `prefix` before them.
fn expand_use(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let mut path = prefix.clone();
        let plain = tree.split(" as ").next().unwrap_or(tree);
        path.extend(split_path(plain));
        out.push(path);
        return;
    };
    let depth_before = prefix.len();
    prefix.extend(split_path(&tree[..open]));
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand_use(&inner[start..i], prefix, out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !inner[start..].trim().is_empty() {
        expand_use(&inner[start..], prefix, out);
    }
    prefix.truncate(depth_before);
}

/// The module a path lands in: the longest prefix that is a module of the crate.
fn resolve(module: &str, path: &[String], known: &BTreeSet<&str>) -> Option<String> {
    let mut base: Vec<String> = match path.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("self") => split_path(module),
        Some("super") => split_path(module),
        // A path relative to this module, through a child module: `use json::X`.
        Some(first) if known.contains(child(module, first).as_str()) => split_path(module),
        _ => return None,
    };
    let relative = !matches!(path[0].as_str(), "crate" | "self" | "super");
    let mut rest = if relative { path } else { &path[1..] };
    if path[0] == "super" {
        base.pop();
        while rest.first().map(String::as_str) == Some("super") {
            base.pop();
            rest = &rest[1..];
        }
    }
    let mut best = base.join("::");
    for part in rest {
        if part == "self" || part == "*" {
            break;
        }
        base.push(part.clone());
        let candidate = base.join("::");
        if known.contains(candidate.as_str()) {
            best = candidate;
        } else {
            break;
        }
    }
    known.contains(best.as_str()).then_some(best)
}

fn child(module: &str, name: &str) -> String {
    if module.is_empty() {
        name.to_string()
    } else {
        format!("{module}::{name}")
    }
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> Graph {
        edges
            .iter()
            .map(|(m, to)| (m.to_string(), to.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    #[test]
    fn use_trees_and_inline_paths_are_read() {
        let code = "use super::{a::{B, c}, d as e};\nuse crate::x::Y;\nfn f() { crate::z::g(); }";
        let got = paths(code);
        assert!(got.contains(&split_path("super::a::B")));
        assert!(got.contains(&split_path("super::a::c")));
        assert!(got.contains(&split_path("super::d")));
        assert!(got.contains(&split_path("crate::x::Y")));
        assert!(got.contains(&split_path("crate::z::g")));
    }

    #[test]
    fn paths_resolve_to_the_deepest_module() {
        let known: BTreeSet<&str> = ["", "event", "event::model", "kernel"].into();
        let r = |m: &str, p: &str| resolve(m, &split_path(p), &known);
        assert_eq!(
            r("kernel", "crate::event::model::Role"),
            Some("event::model".into())
        );
        assert_eq!(
            r("event::decode", "super::model::X"),
            Some("event::model".into())
        );
        assert_eq!(r("event::decode", "super::Thing"), Some("event".into()));
        assert_eq!(r("kernel", "crate::nowhere::X"), Some("".into()));
        assert_eq!(r("event", "model::Role"), Some("event::model".into()));
        assert_eq!(r("event", "std::fmt"), None);
    }

    #[test]
    fn test_modules_and_comments_are_left_out() {
        let code =
            "use crate::a::X; // crate::b::Y\n#[cfg(test)]\nmod tests { use crate::c::Z; }\n";
        let got = paths(&without_tests(&without_comments(code)));
        assert_eq!(got, vec![split_path("crate::a::X")]);
    }

    #[test]
    fn cycles_are_found_and_chains_are_not() {
        let chain = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &[])]);
        assert!(cycles(&chain).is_empty());
        let cyclic = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]);
        assert_eq!(
            cycles(&cyclic),
            vec![vec!["a".to_string(), "b".into(), "c".into()]]
        );
    }
}
