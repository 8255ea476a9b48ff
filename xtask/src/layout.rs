//! `cargo xtask layout`: the module graph of every crate, from its `use crate::…`,
//! `crate::…` and `super::…` paths, checked for cycles between sibling modules (crates cannot
//! form cycles: cargo refuses them). Test modules are left out: they may use anything.
//! Runs in `cargo test` (as a unit test of xtask) and in `cargo xtask test`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};

/// A module path inside its crate (`["dataplane", "kernel"]`; the root is empty).
type ModPath = Vec<String>;

/// The modules of one crate and the paths each one names.
struct CrateGraph {
    name: String,
    modules: BTreeSet<ModPath>,
    refs: Vec<(ModPath, ModPath)>,
}

fn module_of(src: &Path, file: &Path) -> Option<ModPath> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    let last = parts.last()?.clone();
    if last == "mod" || last == "lib" || last == "main" {
        parts.pop();
    }
    if parts.iter().any(|p| p == "tests" || p == "bin") {
        return None;
    }
    Some(parts)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code outside `#[cfg(test)] mod … { … }` blocks, comments stripped.
fn non_test_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            // Skip the item that follows, to its closing brace (or `;`).
            let mut depth = 0i32;
            let mut opened = false;
            for l in lines.by_ref() {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                if l.contains('{') {
                    opened = true;
                }
                if (opened && depth <= 0) || (!opened && l.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        let code = match t.find("//") {
            Some(0) => "",
            _ => line.split(" //").next().unwrap_or(line),
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Expands a use tree (`a::{b::C, d}`) into its paths.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    if let Some(i) = tree.find('{') {
        let prefix: Vec<String> = tree[..i]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let inner = &tree[i + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut items = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (j, ch) in inner.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..j]);
                    start = j + 1;
                }
                _ => {}
            }
        }
        items.push(&inner[start..]);
        let mut out = Vec::new();
        for it in items.into_iter().filter(|s| !s.trim().is_empty()) {
            for mut p in expand(it) {
                let mut full = prefix.clone();
                full.append(&mut p);
                out.push(full);
            }
        }
        out
    } else {
        vec![
            tree.split(" as ")
                .next()
                .unwrap_or(tree)
                .split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "self")
                .map(String::from)
                .collect(),
        ]
    }
}

/// Every `crate::`/`super::` path a module's code names, as absolute paths.
fn references(module: &ModPath, code: &str) -> Vec<ModPath> {
    let mut out = Vec::new();
    let resolve = |p: Vec<String>| -> Option<ModPath> {
        let first = p.first()?.as_str();
        match first {
            "crate" => Some(p[1..].to_vec()),
            "super" => {
                let mut base = module.clone();
                let mut rest = &p[..];
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                Some(base)
            }
            _ => None,
        }
    };
    // `use` declarations, whole (they may span lines).
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        let after = &rest[i + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            rest = after;
            continue;
        }
        let end = after.find(';').unwrap_or(after.len());
        for p in expand(&after[..end]) {
            if let Some(abs) = resolve(p) {
                out.push(abs);
            }
        }
        rest = &after[end..];
    }
    // Paths in code: crate::a::b, super::c.
    for start in ["crate::", "super::"] {
        let mut s = code;
        while let Some(i) = s.find(start) {
            let tail = &s[i..];
            let path: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let p: Vec<String> = path
                .split("::")
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect();
            if let Some(abs) = resolve(p) {
                out.push(abs);
            }
            s = &s[i + start.len()..];
        }
    }
    out
}

fn crate_graph(dir: &Path) -> Option<CrateGraph> {
    let src = dir.join("src");
    if !src.is_dir() {
        return None;
    }
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules = BTreeSet::new();
    let mut refs = Vec::new();
    // Names the crate root re-exports (`pub use agent::{Agent, RunOptions}`): a module naming
    // `crate::Agent` depends on `agent`.
    let mut reexports: BTreeMap<String, ModPath> = BTreeMap::new();
    for root in ["lib.rs", "main.rs"] {
        let text = fs::read_to_string(src.join(root)).unwrap_or_default();
        let code = non_test_code(&text);
        let mut rest = code.as_str();
        while let Some(i) = rest.find("pub use ") {
            let after = &rest[i + 8..];
            let end = after.find(';').unwrap_or(after.len());
            for p in expand(&after[..end]) {
                if let Some((name, path)) = p.split_last()
                    && !path.is_empty()
                {
                    reexports.insert(name.clone(), path.to_vec());
                }
            }
            rest = &after[end..];
        }
    }
    for f in &files {
        let Some(m) = module_of(&src, f) else {
            continue;
        };
        modules.insert(m.clone());
        let text = fs::read_to_string(f).unwrap_or_default();
        for mut r in references(&m, &non_test_code(&text)) {
            if let Some(path) = r.first().and_then(|n| reexports.get(n)) {
                let mut full = path.clone();
                full.extend(r.drain(1..));
                r = full;
            }
            refs.push((m.clone(), r));
        }
    }
    Some(CrateGraph {
        name: dir.file_name()?.to_string_lossy().into_owned(),
        modules,
        refs,
    })
}

/// Edges between sibling modules: for `a::b` naming `a::c::X`, the edge `b -> c` under `a`.
fn sibling_edges(g: &CrateGraph) -> BTreeMap<ModPath, BTreeSet<(String, String)>> {
    let mut edges: BTreeMap<ModPath, BTreeSet<(String, String)>> = BTreeMap::new();
    for (from, to) in &g.refs {
        // The longest prefix of `to` that is a module.
        let mut target = to.clone();
        while !target.is_empty() && !g.modules.contains(&target) {
            target.pop();
        }
        let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
        // A module naming its ancestor or descendant is nesting, not a sibling edge.
        if common == from.len() || common == target.len() {
            continue;
        }
        edges
            .entry(from[..common].to_vec())
            .or_default()
            .insert((from[common].clone(), target[common].clone()));
    }
    edges
}

/// Every set of modules that import each other in a circle (the strongly connected
/// components of more than one module), each sorted.
fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = edges
        .iter()
        .flat_map(|(a, b)| [a, b])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Reachability by repeated expansion: n is in m's component if each reaches the other.
    let reach = |from: &String| -> BTreeSet<&String> {
        let mut seen: BTreeSet<&String> = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(n) = todo.pop() {
            for (_, b) in edges.iter().filter(|(a, _)| a == n) {
                if seen.insert(b) {
                    todo.push(b);
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<&String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: BTreeSet<Vec<String>> = BTreeSet::new();
    for n in &nodes {
        let comp: Vec<String> = nodes
            .iter()
            .filter(|m| reaches[*n].contains(*m) && reaches[*m].contains(*n))
            .map(|m| m.to_string())
            .collect();
        if comp.len() > 1 {
            out.insert(comp);
        }
    }
    out.into_iter().collect()
}

/// Checks every crate of the workspace; with `print`, shows each crate's module graph.
pub fn check(root: &Path, print: bool) -> Result<()> {
    let mut problems = Vec::new();
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    dirs.sort();
    for dir in dirs {
        let Some(g) = crate_graph(&dir) else { continue };
        let edges = sibling_edges(&g);
        if print {
            println!("{}: {} modules", g.name, g.modules.len());
            for (parent, es) in &edges {
                let at = if parent.is_empty() {
                    "crate".to_string()
                } else {
                    parent.join("::")
                };
                for (a, b) in es {
                    println!("  {at}: {a} -> {b}");
                }
            }
        }
        for (parent, es) in &edges {
            for c in cycles(es) {
                problems.push(format!(
                    "{}: import cycle under {}: {} import each other",
                    g.name,
                    if parent.is_empty() {
                        "the crate root".to_string()
                    } else {
                        parent.join("::")
                    },
                    c.join(", ")
                ));
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    println!("xtask: no import cycles between modules");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_trees_expand() {
        assert_eq!(
            expand("crate::{a::B, c::{d, e::F}, g}"),
            vec![
                vec!["crate", "a", "B"],
                vec!["crate", "c", "d"],
                vec!["crate", "c", "e", "F"],
                vec!["crate", "g"]
            ]
        );
    }

    #[test]
    fn a_cycle_is_found() {
        let e: BTreeSet<(String, String)> = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
            .iter()
            .map(|(x, y)| (x.to_string(), y.to_string()))
            .collect();
        assert_eq!(
            cycles(&e),
            vec![vec!["a".to_string(), "b".into(), "c".into()]]
        );
        let acyclic: BTreeSet<(String, String)> = [("a", "b"), ("b", "c"), ("a", "c")]
            .iter()
            .map(|(x, y)| (x.to_string(), y.to_string()))
            .collect();
        assert!(cycles(&acyclic).is_empty());
    }

    /// The workspace itself has no module cycles.
    #[test]
    fn the_workspace_has_no_import_cycles() {
        check(&crate::util::workspace_root(), false).unwrap();
    }
}
