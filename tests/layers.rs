//! The library's modules import one way (issue 10, section 3; DESIGN.md, "Layers"): no two
//! top-level modules of `src/` use each other, directly or through others. The one knot kept on
//! purpose is inside the leaves: `error` names typed ids and `SessionStatus` in its variants,
//! and their parsers return `Error`; those three count as one node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The leaves that may use each other (one node of the graph).
const LEAVES: [&str; 3] = ["error", "ids", "session"];

/// Every `.rs` file of a top-level module: `src/NAME.rs`, or all files under `src/NAME/`.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(src).expect("read src/") {
        let p = e.expect("a directory entry").path();
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.is_dir() {
            let mut files = Vec::new();
            let mut todo = vec![p.clone()];
            while let Some(d) = todo.pop() {
                for e in std::fs::read_dir(&d).expect("read a module folder") {
                    let f = e.expect("a directory entry").path();
                    if f.is_dir() {
                        todo.push(f);
                    } else if f.extension().is_some_and(|x| x == "rs") {
                        files.push(f);
                    }
                }
            }
            out.insert(name, files);
        } else if p.extension().is_some_and(|x| x == "rs") && name != "lib" {
            out.insert(name, vec![p]);
        }
    }
    out
}

/// The top-level modules a file's code names through `crate::` (a path, or a `use crate::{..}`
/// group), ignoring comments and the unit-test module at the end of a file.
fn references(text: &str) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]\nmod ")
        .next()
        .unwrap_or("")
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each comma-separated item at depth 0 of the group.
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        out.insert(ident(&group[j..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

fn node(m: &str) -> String {
    if LEAVES.contains(&m) {
        "leaves".into()
    } else {
        m.into()
    }
}

/// The graph of top-level modules (the leaves merged into one node).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, files) in &mods {
        let from = node(name);
        let set = edges.entry(from.clone()).or_default();
        for f in files {
            let text = std::fs::read_to_string(f).expect("read a source file");
            for r in references(&text) {
                if mods.contains_key(&r) && node(&r) != from {
                    set.insert(node(&r));
                }
            }
        }
    }
    edges
}

#[test]
fn top_level_modules_import_one_way() {
    let edges = graph();
    // The check sees the edges it must (so a parser that finds nothing cannot pass).
    assert!(edges["store"].contains("backend"), "{edges:?}");
    assert!(edges["store"].contains("config"), "{edges:?}");
    assert!(edges["config"].contains("backend"), "{edges:?}");
    assert!(edges["backend"].contains("leaves"), "{edges:?}");
    // Depth-first search: a module met again while on the stack closes a cycle.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Result<(), String> {
        if done.contains(m) {
            return Ok(());
        }
        if let Some(at) = stack.iter().position(|s| s == m) {
            return Err(format!("{} -> {m}", stack[at..].join(" -> ")));
        }
        stack.push(m.to_string());
        for next in edges.get(m).into_iter().flatten() {
            visit(next, edges, stack, done)?;
        }
        stack.pop();
        done.insert(m.to_string());
        Ok(())
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Err(cycle) = visit(m, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle {cycle}: move what both need below both (DESIGN.md, \"Layers\")");
        }
    }
}

#[test]
fn the_reference_parser_reads_paths_and_groups() {
    let text = "use crate::a::B;\nuse crate::{c::D, e, f::{g, h}};\n// crate::comment\nfn x() { crate::i::j(); }\n#[cfg(test)]\nmod tests { use crate::k; }\n";
    let got: Vec<String> = references(text).into_iter().collect();
    assert_eq!(got, ["a", "c", "e", "f", "i"]);
}
