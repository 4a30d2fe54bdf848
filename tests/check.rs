//! Golden diagnostics of the checker (and parser, and loader).
//!
//! - `tests/check/*.tfm`: each file is a small program with exactly one mistake, described by
//!   its leading `//` line. Each must be rejected; its rendered diagnostics are compared with
//!   the insta snapshot `tests/snapshots/check/<file stem>.snap`, so messages are reviewed
//!   like code. `tests/check/aux/` holds files those cases `use` (not cases themselves).
//! - `tests/ok/*.tfm` and `lib/*.tfm`: valid programs that must check without errors.
//!
//! Bless after an intended change of a message:
//! `INSTA_UPDATE=always cargo test -p tfmc-conformance --test check`, then read the diff.
//! File paths in the snapshots are relative to the workspace root (`tests/check/...`).

use std::path::{Path, PathBuf};

/// Cases the checker wrongly accepts today (known gaps, reported to the checker's owner).
/// Their snapshot records the acceptance; when the checker starts rejecting one, remove it
/// from this list and bless its new diagnostics.
const KNOWN_ACCEPTED: &[&str] = &[];

/// What a snapshot says for a case that was (wrongly) accepted.
const ACCEPTED: &str = "(accepted: no diagnostics; this is a known checker gap, see KNOWN_ACCEPTED in tests/check.rs)";

/// The workspace root, canonical (so that it matches the paths `use` produces).
fn root() -> PathBuf {
    let r = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::canonicalize(&r).unwrap_or(r)
}

/// The `.tfm` files directly in `dir` (relative to the workspace root), sorted.
fn tfm_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "tfm"))
        .collect();
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem().expect("file stem").to_string_lossy().into_owned()
}

/// Rendered diagnostics with machine-dependent path prefixes removed.
fn relative(text: &str) -> String {
    let mut out = text.to_string();
    let r = root();
    let mut prefixes = vec![format!("{}/", r.display())];
    let raw = format!("{}/", Path::new(env!("CARGO_MANIFEST_DIR")).join("..").display());
    prefixes.push(raw);
    for p in prefixes {
        out = out.replace(&p, "");
    }
    out
}

/// The first line of a case: its `//` description.
fn description(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("// "), "{}: a case starts with a `// what is wrong` line", path.display());
    first.trim_start_matches("// ").to_string()
}

/// Loads `path` and returns its rendered diagnostics (`None` when it checks).
fn diagnose(path: &Path) -> Option<(String, tfmc::Diagnostics)> {
    // Used files are named relative to the working directory: make that the repo root (every
    // test in this binary wants the same directory, so parallel tests agree).
    std::env::set_current_dir(root()).expect("repo root exists");
    match tfmc::load(path) {
        Ok(_) => None,
        Err(d) => Some((relative(&d.render()), d)),
    }
}

#[test]
fn check_cases_fail_with_golden_diagnostics() {
    let cases = tfm_files("tests/check");
    assert!(cases.len() >= 40, "expected at least 40 cases in tests/check, found {}", cases.len());
    let mut failed = Vec::new();
    for path in &cases {
        let name = stem(path);
        let desc = description(path);
        let rendered = match diagnose(path) {
            Some((text, diags)) => {
                assert!(diags.has_errors(), "{name}: rejected without an error");
                if KNOWN_ACCEPTED.contains(&name.as_str()) {
                    failed.push(format!("{name}: now rejected; remove it from KNOWN_ACCEPTED and bless"));
                }
                text
            }
            None => {
                if !KNOWN_ACCEPTED.contains(&name.as_str()) {
                    failed.push(format!("{name}: accepted, but it is wrong ({desc})"));
                }
                ACCEPTED.to_string()
            }
        };
        let snap = std::panic::catch_unwind(|| {
            insta::with_settings!({
                snapshot_path => "snapshots/check",
                prepend_module_to_snapshot => false,
                omit_expression => true,
                description => desc.as_str(),
            }, {
                insta::assert_snapshot!(name.as_str(), rendered);
            });
        });
        if snap.is_err() {
            failed.push(format!("{name}: diagnostics differ from the snapshot (see above)"));
        }
    }
    assert!(failed.is_empty(), "{} case(s) failed:\n{}", failed.len(), failed.join("\n"));
}

/// Every snapshot belongs to a case (a renamed or deleted case leaves none behind).
#[test]
fn every_snapshot_has_a_case() {
    let names: Vec<String> = tfm_files("tests/check").iter().map(|p| stem(p)).collect();
    let dir = root().join("tests/snapshots/check");
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for e in entries {
        let p = e.expect("directory entry").path();
        let file = p.file_name().expect("file name").to_string_lossy().into_owned();
        let Some(case) = file.strip_suffix(".snap") else { continue };
        assert!(names.iter().any(|n| n == case), "snapshot {file} has no tests/check/{case}.tfm; delete it");
    }
}

/// Diagnostics follow the house style: lowercase headline without a trailing period, and a
/// primary span (errors about unreadable files name the file in the message instead).
#[test]
fn check_diagnostics_follow_the_style() {
    for path in tfm_files("tests/check") {
        let Some((_, diags)) = diagnose(&path) else { continue };
        for d in &diags.items {
            let name = stem(&path);
            assert!(!d.message.ends_with('.'), "{name}: message ends with a period: {:?}", d.message);
            assert!(!d.message.starts_with(|c: char| c.is_ascii_uppercase()), "{name}: message starts upper-case: {:?}", d.message);
            assert!(d.primary.is_some() || d.message.contains("cannot read"), "{name}: no primary span: {:?}", d.message);
            for h in &d.hints {
                assert!(!h.ends_with('.'), "{name}: hint ends with a period: {h:?}");
            }
        }
    }
}

fn assert_checks(path: &Path, allow_warnings: bool) {
    match tfmc::load_with_warnings(path) {
        Ok((program, warnings)) => {
            if !allow_warnings && !warnings.is_empty() {
                let text = relative(&tfm_dsl::diagnostic::render_all(&warnings, &program.sources));
                panic!("{} checks but warns:\n{text}", path.display());
            }
        }
        Err(d) => panic!("{} does not check:\n{}", path.display(), relative(&d.render())),
    }
}

#[test]
fn ok_programs_check_without_warnings() {
    let files = tfm_files("tests/ok");
    assert!(files.len() >= 9, "expected the valid programs of tests/ok, found {}", files.len());
    for f in files {
        assert_checks(&f, false);
    }
}

#[test]
fn lib_programs_check() {
    let files = tfm_files("lib");
    assert!(!files.is_empty(), "lib/ has no .tfm files");
    for f in files {
        assert_checks(&f, true);
    }
}

/// Every complete kernel the tutorial and the README show (a ```tfm block with a `kernel`
/// item) checks as written; fragments (a single statement shown to explain an error) are not
/// programs and are skipped.
#[test]
fn documented_kernels_check() {
    let mut checked = 0;
    for doc in ["docs/tutorial.md", "README.md"] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap_or_else(|e| panic!("cannot read {doc}: {e}"));
        for (i, block) in text.split("```tfm\n").skip(1).enumerate() {
            let code = block.split("```").next().unwrap_or_default();
            if !code.contains("kernel ") {
                continue;
            }
            if let Err(d) = tfmc::load_str(&format!("{doc} block {i}"), code) {
                panic!("{doc}: tfm block {i} does not check:\n{}", d.render());
            }
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} documented kernels found");
}
