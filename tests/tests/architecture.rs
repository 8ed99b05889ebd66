//! The workspace's structure, checked: inside every crate no two modules import each other
//! (directly or through others). A module is a source file (`a/b.rs` or `a/b/mod.rs` is
//! `a::b`); an edge is a `crate::…` or `super::…` path (each item of a `{…}` group its own) in its code (comments and
//! `#[cfg(test)] mod tests` blocks left out) to another module that is neither its ancestor nor
//! its descendant — a parent declares its children and children may use their parent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use vcuda_tests::toolchain::workspace_root;

type Module = Vec<String>;

/// Every `.rs` file under `src` (binaries' own trees and `tests.rs` files left out), by module path.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "bin") {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap_or(&p).with_extension("");
            let mut m: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if m.last()
                .is_some_and(|l| l == "tests" || l.ends_with("_tests"))
            {
                continue;
            }
            if m.last().is_some_and(|l| l == "mod") {
                m.pop();
            }
            if m == ["lib"] || m == ["main"] {
                m.clear();
            }
            out.insert(m, p);
        }
    }
    out
}

/// The source without comments and without `#[cfg(test)]` modules.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut skip_depth: Option<i32> = None;
    let mut depth = 0i32;
    let mut pending_test = false;
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let trimmed = code.trim();
        if skip_depth.is_none() && trimmed.starts_with("#[cfg(test)]") {
            pending_test = true;
            continue;
        }
        let opens = code.matches('{').count() as i32;
        let closes = code.matches('}').count() as i32;
        if pending_test {
            pending_test = false;
            if trimmed.starts_with("mod ") && opens > 0 {
                skip_depth = Some(depth);
                depth += opens - closes;
                continue;
            }
        }
        depth += opens - closes;
        if let Some(d) = skip_depth {
            if depth <= d {
                skip_depth = None;
            }
            continue;
        }
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// `crate::a::{b, c::d}` and `super::x` paths of `text`, as segment lists with their root.
fn paths(text: &str) -> Vec<(bool, Vec<String>)> {
    let mut out = Vec::new();
    let bytes: Vec<char> = text.chars().collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let (is_crate, skip) = if rest.starts_with("crate::") {
            (true, 7)
        } else if rest.starts_with("super::") {
            (false, 7)
        } else {
            i += 1;
            continue;
        };
        if i > 0 && ident(bytes[i - 1]) {
            i += 1;
            continue;
        }
        // Collect `seg::seg::…`; at a `{`, one path per top-level item (first segment only).
        let mut j = i + skip;
        let mut segs = Vec::new();
        if !is_crate {
            segs.push("super".to_string());
        }
        loop {
            if bytes.get(j) == Some(&'{') {
                let mut d = 0;
                let mut item = String::new();
                let mut items = Vec::new();
                while let Some(&c) = bytes.get(j) {
                    match c {
                        '{' => {
                            d += 1;
                            if d > 1 {
                                item.push(c);
                            }
                        }
                        '}' => {
                            d -= 1;
                            if d == 0 {
                                items.push(std::mem::take(&mut item));
                                break;
                            }
                            item.push(c);
                        }
                        ',' if d == 1 => items.push(std::mem::take(&mut item)),
                        _ => item.push(c),
                    }
                    j += 1;
                }
                for it in items {
                    let mut p = segs.clone();
                    for seg in it.trim().split("::") {
                        let seg = seg.trim();
                        if seg.is_empty() || !seg.chars().all(ident) {
                            break;
                        }
                        p.push(seg.to_string());
                    }
                    out.push((is_crate, p));
                }
                break;
            }
            let start = j;
            while bytes.get(j).is_some_and(|&c| ident(c)) {
                j += 1;
            }
            if j == start {
                out.push((is_crate, segs));
                break;
            }
            segs.push(bytes[start..j].iter().collect());
            if bytes.get(j) == Some(&':') && bytes.get(j + 1) == Some(&':') {
                j += 2;
            } else {
                out.push((is_crate, segs));
                break;
            }
        }
        i = j.max(i + 1);
    }
    out
}

fn related(a: &Module, b: &Module) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Import edges between the modules of one crate.
fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mods = modules(src);
    let mut g: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, file) in &mods {
        let text = code(&std::fs::read_to_string(file).unwrap_or_default());
        for (is_crate, segs) in paths(&text) {
            let mut path: Module = if is_crate {
                Vec::new()
            } else {
                m[..m.len().saturating_sub(1)].to_vec()
            };
            for s in segs {
                if s == "super" {
                    path.pop();
                } else {
                    path.push(s);
                }
            }
            let target = (0..=path.len())
                .rev()
                .map(|k| path[..k].to_vec())
                .find(|p| mods.contains_key(p))
                .unwrap_or_default();
            if !related(m, &target) {
                g.entry(m.clone()).or_default().insert(target);
            }
        }
    }
    g
}

/// Strongly connected components with more than one module.
fn cycles(g: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    // Kosaraju: order by finish time, then walk the reversed graph.
    let nodes: BTreeSet<Module> = g.keys().chain(g.values().flatten()).cloned().collect();
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for n in &nodes {
        if seen.contains(n) {
            continue;
        }
        let mut stack = vec![(n.clone(), false)];
        while let Some((v, done)) = stack.pop() {
            if done {
                order.push(v);
                continue;
            }
            if !seen.insert(v.clone()) {
                continue;
            }
            stack.push((v.clone(), true));
            for w in g.get(&v).into_iter().flatten() {
                if !seen.contains(w) {
                    stack.push((w.clone(), false));
                }
            }
        }
    }
    let mut rev: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (a, bs) in g {
        for b in bs {
            rev.entry(b.clone()).or_default().insert(a.clone());
        }
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for v in order.iter().rev() {
        if assigned.contains(v) {
            continue;
        }
        let mut comp = Vec::new();
        let mut stack = vec![v.clone()];
        while let Some(x) = stack.pop() {
            if !assigned.insert(x.clone()) {
                continue;
            }
            for w in rev.get(&x).into_iter().flatten() {
                if !assigned.contains(w) {
                    stack.push(w.clone());
                }
            }
            comp.push(x);
        }
        if comp.len() > 1 {
            out.push(comp);
        }
    }
    out
}

#[test]
fn no_crate_has_modules_that_import_each_other() {
    let root = workspace_root();
    let mut crates = Vec::new();
    for e in std::fs::read_dir(root).expect("workspace root").flatten() {
        let src = e.path().join("src");
        if e.path().join("Cargo.toml").is_file() && src.is_dir() {
            crates.push(src);
        }
    }
    assert!(crates.len() >= 9, "found only {} crates", crates.len());
    let mut problems = Vec::new();
    for src in &crates {
        for comp in cycles(&graph(src)) {
            let names: Vec<String> = comp.iter().map(|m| m.join("::")).collect();
            problems.push(format!("{}: {}", src.display(), names.join(" ↔ ")));
        }
    }
    assert!(
        problems.is_empty(),
        "import circles:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_a_circle() {
    let dir = std::env::temp_dir().join(format!("vcuda-arch-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(
        src.join("a/mod.rs"),
        "mod c;\nuse crate::b::X; // crate::z in a comment\n",
    )
    .unwrap();
    std::fs::write(src.join("a/c.rs"), "use super::super::b;\n").unwrap();
    std::fs::write(
        src.join("b.rs"),
        "pub struct X;\nuse crate::{a::c, b};\n#[cfg(test)]\nmod tests {\n    use crate::a;\n}\n",
    )
    .unwrap();
    let g = graph(&src);
    let mut found = cycles(&g);
    std::fs::remove_dir_all(&dir).ok();
    for c in &mut found {
        c.sort();
    }
    // b → a::c → b is a circle; a → b is not part of it (b uses `a` only in its tests, and
    // `crate::z` only in a comment).
    let m = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Module>();
    assert_eq!(found, vec![vec![m(&["a", "c"]), m(&["b"])]], "{g:?}");
}
