//! The layering rule of `src/lib.rs`, checked over the source: each top-level module imports only
//! the modules below it. Read from the text of `use crate::…` and `crate::…` paths (comments left
//! out), so a new import that points upward fails here before it settles in.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// What each module may import (besides itself and `proto`'s generated types where named). The
/// order is the one `src/lib.rs` documents: domain and telemetry at the bottom, the binary's
/// commands at the top.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("telemetry", &[]),
    ("audit", &["domain"]),
    ("auth", &["domain"]),
    ("cache", &["domain", "telemetry"]),
    ("store", &["domain", "telemetry", "audit"]),
    (
        "worker",
        &["domain", "telemetry", "audit", "cache", "store"],
    ),
    (
        "service",
        &["domain", "telemetry", "audit", "cache", "store"],
    ),
    (
        "api",
        &["domain", "telemetry", "audit", "auth", "service", "proto"],
    ),
    ("http", &["domain", "telemetry", "auth", "service"]),
    ("admin", &["domain", "telemetry", "cache"]),
    // config reads the settings types of the modules it configures: the audit log's signer, and
    // the Redis topology and key layout (`cache::Topology`, `cache::layout::Keys`).
    ("config", &["domain", "telemetry", "audit", "auth", "cache"]),
    (
        "startup",
        &[
            "domain",
            "telemetry",
            "audit",
            "auth",
            "cache",
            "store",
            "worker",
            "service",
            "api",
            "http",
            "admin",
            "config",
            "proto",
        ],
    ),
    (
        "cli",
        &[
            "domain",
            "telemetry",
            "audit",
            "auth",
            "service",
            "config",
            "proto",
        ],
    ),
];

/// The top-level modules a source text names through `crate::`.
fn imports(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::b, c, d::{e, f}}`: the first name of each item at the top level.
            let (mut depth, mut item_start) = (0usize, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[i..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphabetic() || c == '_') => {
                        let name: String = group[i..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        found.insert(name);
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, into: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// What each module of `src/` imports, by module.
fn imports_by_module(src: &Path) -> BTreeMap<String, BTreeSet<(String, String)>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut by_module: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let module = relative.iter().next().unwrap().to_string_lossy();
        let module = module.trim_end_matches(".rs").to_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        for name in imports(&text) {
            by_module
                .entry(module.clone())
                .or_default()
                .insert((name, relative.display().to_string()));
        }
    }
    by_module
}

/// The imports that break the rule, as "file imports module".
fn violations(src: &Path) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, names) in imports_by_module(src) {
        // lib.rs declares the modules and main.rs is the binary: both sit above every layer.
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(may) = allowed.get(module.as_str()) else {
            wrong.push(format!("{module} is not in the layering table: place it"));
            continue;
        };
        for (name, file) in names {
            if name != module && name != "self" && name != "super" && !may.contains(&name.as_str())
            {
                wrong.push(format!("src/{file} imports crate::{name}"));
            }
        }
    }
    wrong
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let wrong = violations(&src);
    assert!(
        wrong.is_empty(),
        "imports against the layering rule:\n{}",
        wrong.join("\n")
    );
}

/// The check itself fails on an upward import: a copy of `src/` with one added to the store.
#[test]
fn an_upward_import_is_caught() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let copy = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    sources(&src, &mut files);
    for file in files {
        let to = copy.path().join(file.strip_prefix(&src).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&file, &to).unwrap();
    }
    let store = copy.path().join("store/mod.rs");
    let text = std::fs::read_to_string(&store).unwrap();
    std::fs::write(
        &store,
        format!("use crate::{{domain::Millis, service::Suppressions}};\n{text}"),
    )
    .unwrap();
    assert_eq!(
        violations(copy.path()),
        ["src/store/mod.rs imports crate::service"]
    );
}

#[test]
fn imports_are_read_from_groups_and_paths_but_not_comments() {
    let text = "use crate::{a::b, c, d::{e, f}};\nlet x = crate::g::h();\n// crate::i\n";
    let names: Vec<_> = imports(text).into_iter().collect();
    assert_eq!(names, ["a", "c", "d", "g"]);
}
