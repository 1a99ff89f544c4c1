//! No crate's modules depend on each other in a cycle: within each crate, the modules under one
//! parent (the crate root, or a module with children) form a directed graph by their `crate::`
//! and `super::` paths, and that graph has no cycle. A cycle means two modules cannot be read,
//! tested or moved apart; shared pieces belong in a leaf module both use.
//!
//! The graph is read from the source text: the paths in code (comments and `#[cfg(test)] mod
//! tests` blocks left out) to modules that are files or directories of the same crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module, as the path of names below its crate root (`["merge_batch", "sql"]`).
type ModulePath = Vec<String>;

/// The workspace's crates with library or binary sources: every `crates/*/src`, and the
/// end-to-end test kit.
fn source_roots() -> Vec<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut roots: Vec<PathBuf> = std::fs::read_dir(workspace.join("crates"))
        .expect("the crates directory")
        .map(|entry| entry.expect("a crate directory").path().join("src"))
        .filter(|src| src.is_dir())
        .collect();
    roots.push(workspace.join("tests/e2e/src"));
    roots.sort();
    roots
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a source entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; `lib.rs` and `main.rs` are the root.
fn module_of(src: &Path, file: &Path) -> ModulePath {
    let relative = file.strip_prefix(src).expect("a file under src");
    let mut names: ModulePath = relative
        .with_extension("")
        .iter()
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    if matches!(
        names.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        names.pop();
    }
    names
}

fn is_module(src: &Path, module: &[String]) -> bool {
    let path: PathBuf = module.iter().collect();
    let path = src.join(path);
    path.is_dir() || path.with_extension("rs").is_file()
}

/// The file's code: without comment lines and without its unit-test module.
fn code_of(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names of each path that starts with `prefix` (`crate::` or `super::`) in the code, up to
/// the first that is not followed by `::`.
fn paths_after<'a>(code: &'a str, prefix: &'a str) -> impl Iterator<Item = Vec<&'a str>> + 'a {
    code.match_indices(prefix).filter_map(move |(at, _)| {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            return None; // inside a longer path: counted from its start
        }
        let mut names = Vec::new();
        for segment in code[at + prefix.len()..].split("::") {
            let end = segment
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(segment.len());
            if end > 0 {
                names.push(&segment[..end]);
            }
            if end < segment.len() || end == 0 {
                break;
            }
        }
        Some(names)
    })
}

/// Edges between sibling modules: `from` uses `to`, both children of the same parent.
fn sibling_edges(src: &Path) -> BTreeSet<(ModulePath, ModulePath)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut edges = BTreeSet::new();
    for file in files {
        let module = module_of(src, &file);
        let code = code_of(&std::fs::read_to_string(&file).expect("a readable source file"));
        let mut targets: Vec<ModulePath> = paths_after(&code, "crate::")
            .map(|names| names.iter().map(|name| (*name).to_owned()).collect())
            .collect();
        if let Some((_, parent)) = module.split_last() {
            targets.extend(paths_after(&code, "super::").map(|names| {
                let mut target = parent.to_vec();
                for name in names {
                    if name == "super" {
                        target.pop();
                    } else {
                        target.push(name.to_owned());
                    }
                }
                target
            }));
        }
        for target in targets {
            // The two modules' ancestors up to where they part: those are the siblings.
            let shared = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if shared >= module.len() || shared >= target.len() {
                continue; // a module's own items, its children or its ancestors
            }
            let from = module[..=shared].to_vec();
            let to = target[..=shared].to_vec();
            if is_module(src, &to) {
                edges.insert((from, to));
            }
        }
    }
    edges
}

/// One cycle in the graph, if there is any.
fn find_cycle(edges: &BTreeSet<(ModulePath, ModulePath)>) -> Option<Vec<ModulePath>> {
    let mut graph: BTreeMap<&ModulePath, Vec<&ModulePath>> = BTreeMap::new();
    for (from, to) in edges {
        graph.entry(from).or_default().push(to);
    }
    let mut done = BTreeSet::new();
    for &start in graph.keys() {
        let mut stack = vec![start];
        if let Some(cycle) = walk(&graph, &mut stack, &mut done) {
            return Some(cycle);
        }
    }
    None
}

fn walk<'a>(
    graph: &BTreeMap<&'a ModulePath, Vec<&'a ModulePath>>,
    stack: &mut Vec<&'a ModulePath>,
    done: &mut BTreeSet<&'a ModulePath>,
) -> Option<Vec<ModulePath>> {
    let node = *stack.last().expect("a node being walked");
    if done.contains(node) {
        return None;
    }
    for &next in graph.get(node).into_iter().flatten() {
        if let Some(at) = stack.iter().position(|&on| on == next) {
            let mut cycle: Vec<ModulePath> = stack[at..].iter().map(|&m| m.clone()).collect();
            cycle.push(next.clone());
            return Some(cycle);
        }
        stack.push(next);
        let cycle = walk(graph, stack, done);
        stack.pop();
        if cycle.is_some() {
            return cycle;
        }
    }
    done.insert(node);
    None
}

#[test]
fn no_crate_has_a_module_cycle() {
    let mut cycles = Vec::new();
    for src in source_roots() {
        if let Some(cycle) = find_cycle(&sibling_edges(&src)) {
            let names: Vec<String> = cycle.iter().map(|module| module.join("::")).collect();
            cycles.push(format!("{}: {}", src.display(), names.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_check_finds_a_cycle_and_names_it() {
    let src = Path::new(env!("CARGO_TARGET_TMPDIR")).join("module-cycle/src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(src.join("merge")).expect("a scratch crate");
    let files = [
        ("lib.rs", "mod merge;\nmod outbox;\nmod queries;\n"),
        ("merge/mod.rs", "mod plan;\nuse crate::outbox::Row;\n"),
        (
            "merge/plan.rs",
            "use super::super::queries::load; // the parent's sibling\n",
        ),
        (
            "outbox.rs",
            "// crate::queries only in a comment\nuse crate::queries::{a, b};\n",
        ),
        ("queries.rs", "pub fn load() { crate::merge::apply(); }\n"),
    ];
    for (name, text) in files {
        std::fs::write(src.join(name), text).expect("a scratch file");
    }
    let cycle = find_cycle(&sibling_edges(&src)).expect("merge -> outbox -> queries -> merge");
    let names: Vec<String> = cycle.iter().map(|module| module.join("::")).collect();
    assert_eq!(names, ["merge", "outbox", "queries", "merge"]);

    std::fs::write(src.join("queries.rs"), "pub fn load() {}\n").expect("the cycle broken");
    assert_eq!(find_cycle(&sibling_edges(&src)), None);
}
