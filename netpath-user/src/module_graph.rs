//! Keeps the library's modules free of import cycles. A module is a
//! top-level file (`src/state.rs`) or directory (`src/network/`); its
//! dependencies are every `crate::NAME` its source mentions, in `use` lines
//! (grouped ones too: `use crate::{a, b::c}`) and in paths. The test builds
//! that graph from the source text and fails naming the cycle it finds.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// Source text without `//` comments (doc comments included), so prose that
/// mentions a module does not count as a dependency.
fn strip_comments(text: &str) -> String {
    text.lines().map(|l| l.split_once("//").map_or(l, |(code, _)| code)).collect::<Vec<_>>().join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// Top-level module names that `text` refers to through `crate::`.
pub fn dependencies(text: &str) -> BTreeSet<String> {
    let text = strip_comments(text);
    let mut deps = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(pos) = rest.find("crate::") {
        rest = &rest[pos + "crate::".len()..];
        let after = rest.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            // The first path segment of each item at the group's top level.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphanumeric() || c == '_') => {
                        item_start = false;
                        let name = ident_at(&group[i..]);
                        if name != "self" {
                            deps.insert(name.to_string());
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident_at(after);
            if !name.is_empty() {
                deps.insert(name.to_string());
            }
        }
    }
    deps
}

fn read_tree(path: &Path, out: &mut String) {
    if path.is_dir() {
        let mut entries: Vec<_> =
            fs::read_dir(path).expect("readable source dir").flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            read_tree(&p, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push_str(&fs::read_to_string(path).expect("readable source file"));
        out.push('\n');
    }
}

/// The module graph of the crate whose sources are in `src`.
pub fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules = BTreeMap::new();
    for entry in fs::read_dir(src).expect("readable src").flatten() {
        let path = entry.path();
        let name = match path.file_stem().and_then(|s| s.to_str()) {
            Some(n) if path.is_dir() || path.extension().is_some_and(|e| e == "rs") => n.to_string(),
            _ => continue,
        };
        if name == "lib" || name == "main" {
            continue;
        }
        let mut text = String::new();
        read_tree(&path, &mut text);
        let mut deps = dependencies(&text);
        deps.remove(&name);
        modules.entry(name).or_insert_with(BTreeSet::new).extend(deps);
    }
    modules
}

/// A cycle of `graph`, as the modules along it (first repeated last).
pub fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| n == node).expect("open nodes are on the path");
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(dep, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph.keys().find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_form_of_crate_path() {
        let text = "use crate::{\n    config::{Config, X},\n    state::{self, Network},\n    teardown,\n};\n\
                    use crate::link::Mac; // crate::commented\nfn f() { crate::dns::ensure(); }";
        let deps: Vec<String> = dependencies(text).into_iter().collect();
        assert_eq!(deps, ["config", "dns", "link", "state", "teardown"]);
    }

    #[test]
    fn finds_a_cycle_and_accepts_a_dag() {
        let edge = |a: &str, b: &[&str]| (a.to_string(), b.iter().map(|s| s.to_string()).collect());
        let dag = BTreeMap::from([edge("a", &["b", "c"]), edge("b", &["c"]), edge("c", &[])]);
        assert_eq!(find_cycle(&dag), None);
        let cyclic = BTreeMap::from([edge("a", &["b"]), edge("b", &["c"]), edge("c", &["a"])]);
        assert_eq!(find_cycle(&cyclic).unwrap(), ["a", "b", "c", "a"]);
    }

    #[test]
    fn library_modules_have_no_import_cycle() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let graph = graph(&src);
        assert!(graph.contains_key("state") && graph.contains_key("network"), "read the sources: {graph:?}");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("import cycle between modules: {}", cycle.join(" -> "));
        }
    }
}
