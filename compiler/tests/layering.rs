//! The layering rules of the source tree, checked by reading the files (no build of anything):
//!
//! - `ir/` and `schedule/` never import `interp` or `check`: the reference interpreter and the
//!   checker are what they are tested against, so the shared rules (scalar ops, dtype
//!   promotion, literals, run-time errors, the value store) come from `semantics/` instead.
//!   Test files (`tests.rs`, `tests_*.rs`, `*_tests.rs`) and inline `#[cfg(test)]` modules may
//!   use the oracle; comments (doc links to the oracle's specification) are not imports.
//! - The LLVM core (`backend/llvm/`) does not name the NVPTX backend (`nvptx::`): the GPU
//!   backend builds on the core, not the other way round.
//! - The schedule's plans form no import circle: the attention plan files import each other
//!   only in the order of [`ATTENTION_ORDER`] (each names only files before it), and neither
//!   they nor the shared analyses (`schedule/common.rs`) name the generic plan
//!   (`schedule/nodes.rs`), which dispatches to them.
//! - The runtime does not depend on LLVM (`inkwell`, `llvm-sys`): it is carried to machines
//!   without it.
//!
//! A violation names the file and line and states the rule.

use std::path::{Path, PathBuf};

/// The crate's `src/` directory.
fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no Rust files under {}", dir.display());
    out
}

/// True for files that only hold tests (`tests.rs`, `tests_*.rs`, `*_tests.rs`).
fn is_test_file(path: &Path) -> bool {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    stem == "tests" || stem.starts_with("tests_") || stem.ends_with("_tests")
}

/// The line without its comment (`//`, `///`, `//!` to the end of the line).
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |k| &line[..k])
}

/// The non-test code lines of a file, numbered from 1, comments removed: scanning stops at an
/// inline `#[cfg(test)] mod name {`, and a `#[cfg(test)]` item of one line (`use`, `mod x;`)
/// is skipped.
fn non_test_lines(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut k = 0;
    while k < lines.len() {
        let line = code(lines[k]).trim();
        if line == "#[cfg(test)]" {
            let next = lines.get(k + 1).map_or("", |l| code(l).trim());
            let is_mod = next.starts_with("mod ") || next.starts_with("pub mod ") || next.starts_with("pub(crate) mod ");
            if is_mod && next.ends_with('{') {
                break;
            }
            if next.ends_with(';') {
                k += 2;
                continue;
            }
        }
        out.push((k + 1, code(lines[k]).to_string()));
        k += 1;
    }
    out
}

/// True if `text` names the module path `prefix` (`crate::interp`) as a whole segment.
fn names_path(text: &str, prefix: &str) -> bool {
    text.match_indices(prefix).any(|(k, _)| {
        let after = text[k + prefix.len()..].chars().next();
        !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The top-level modules a grouped `use crate::{a, b::c, ...};` starting on line `k` names.
fn grouped_crate_modules(lines: &[(usize, String)], k: usize) -> Vec<String> {
    let Some(start) = lines[k].1.find("crate::{") else { return Vec::new() };
    let mut text = lines[k].1[start + "crate::{".len()..].to_string();
    let mut j = k + 1;
    while !text.contains(';') && j < lines.len() {
        text.push_str(&lines[j].1);
        j += 1;
    }
    let mut out = Vec::new();
    let (mut depth, mut item) = (0usize, String::new());
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(item.trim().split("::").next().unwrap_or("").to_string());
                item.clear();
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    out.push(item.trim().split("::").next().unwrap_or("").to_string());
    out
}

#[test]
fn ir_and_schedule_import_neither_the_interpreter_nor_the_checker() {
    let mut bad = Vec::new();
    for dir in ["ir", "schedule"] {
        for path in rust_files(&src().join(dir)) {
            if is_test_file(&path) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let lines = non_test_lines(&text);
            for (k, (number, line)) in lines.iter().enumerate() {
                let grouped = grouped_crate_modules(&lines, k);
                let named = ["crate::interp", "crate::check"].into_iter().find(|p| names_path(line, p)).map(str::to_string);
                let named = named.or_else(|| grouped.iter().find(|m| *m == "interp" || *m == "check").map(|m| format!("crate::{m}")));
                if let Some(what) = named {
                    let rel = path.strip_prefix(src()).unwrap_or(&path);
                    bad.push(format!("src/{}:{number}: names {what}: {}", rel.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "ir/ and schedule/ never import interp or check: the oracle and the checker are what they are tested against \
         (take shared rules from crate::semantics):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_llvm_core_does_not_name_nvptx() {
    let mut bad = Vec::new();
    for path in rust_files(&src().join("backend").join("llvm")) {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        for (k, line) in text.lines().enumerate() {
            if code(line).contains("nvptx::") {
                let rel = path.strip_prefix(src()).unwrap_or(&path);
                bad.push(format!("src/{}:{}: {}", rel.display(), k + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "backend/llvm/ never names nvptx: the GPU backend builds on the LLVM core, not the other way round:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_runtime_does_not_depend_on_llvm() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("runtime").join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let llvm = |name: &str| name == "inkwell" || name == "llvm-sys";
    let mut bad = Vec::new();
    for (k, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let named = if let Some(header) = line.strip_prefix('[') {
            // `[dependencies.inkwell]`, `[target.'cfg(..)'.dev-dependencies.llvm-sys]`
            header.trim_end_matches(']').rsplit('.').next().is_some_and(llvm)
        } else if let Some((key, value)) = line.split_once('=') {
            // `inkwell = ..`, `inkwell.workspace = true`, `x = { package = "llvm-sys" }`
            let key = key.trim().trim_matches('"');
            llvm(key.split('.').next().unwrap_or(key)) || value.contains("\"inkwell\"") || value.contains("\"llvm-sys\"")
        } else {
            false
        };
        if named {
            bad.push(format!("runtime/Cargo.toml:{}: {}", k + 1, raw.trim()));
        }
    }
    assert!(
        bad.is_empty(),
        "the runtime never depends on LLVM (inkwell, llvm-sys): it is carried to machines without it:\n{}",
        bad.join("\n")
    );
}

/// The attention plan files, in the only order they may import each other: a file names
/// (`super::x`) only files before it. `mod.rs` declares and dispatches to them all.
const ATTENTION_ORDER: &[&str] = &["analysis", "site", "dialect", "split_k", "cpu", "tensor_core", "gpu", "mod"];

#[test]
fn the_schedule_plans_have_no_import_circle() {
    let dir = src().join("schedule/attention");
    let mut bad = Vec::new();
    let files = rust_files(&dir);
    for path in &files {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
        let Some(me) = ATTENTION_ORDER.iter().position(|f| *f == stem) else {
            bad.push(format!("{}: not in ATTENTION_ORDER (add it where its imports put it)", path.display()));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        for (n, line) in non_test_lines(&text) {
            if names_path(&line, "nodes") {
                bad.push(format!("{}:{n}: names the generic plan (nodes): {}", path.display(), line.trim()));
            }
            for (k, other) in ATTENTION_ORDER.iter().enumerate() {
                let named = line.contains(&format!("super::{other}::")) || line.contains(&format!("super::{other};"));
                if named && k >= me && stem != "mod" {
                    bad.push(format!("{}:{n}: names `{other}`, which comes after it: {}", path.display(), line.trim()));
                }
            }
        }
    }
    let common = src().join("schedule/common.rs");
    let text = std::fs::read_to_string(&common).unwrap_or_else(|e| panic!("reading {}: {e}", common.display()));
    for (n, line) in non_test_lines(&text) {
        if names_path(&line, "nodes") || names_path(&line, "attention") {
            bad.push(format!("{}:{n}: the shared analyses name a plan: {}", common.display(), line.trim()));
        }
    }
    assert!(
        bad.is_empty(),
        "the schedule's plan files import each other in one order (no circle): analysis, site, dialect, split_k, cpu, tensor_core, gpu; none names nodes.rs:\n{}",
        bad.join("\n")
    );
}
