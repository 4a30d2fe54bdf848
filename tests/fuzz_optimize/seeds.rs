//! The seed programs: every file of `lib/` and `tests/ok/` that checks, its `use` lines
//! inlined so a mutation or a minimized finding is one self-contained text. Paths are relative
//! to the repository root ([`repo`]).

use crate::compare::load;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tfmc::hir::Program;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn tfm_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == "tfm"));
    v.sort();
    v
}

/// The file's text with every `use "x"` line replaced by the text of `x` (once).
fn inlined(path: &Path, seen: &mut Vec<PathBuf>) -> String {
    let Ok(text) = std::fs::read_to_string(path) else { return String::new() };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = String::new();
    for line in text.lines() {
        let used = line.trim().strip_prefix("use \"").and_then(|r| r.strip_suffix('"'));
        match used.map(|u| dir.join(u)).and_then(|p| std::fs::canonicalize(p).ok()) {
            Some(p) if seen.contains(&p) => {}
            Some(p) => {
                seen.push(p.clone());
                out.push_str(&inlined(&p, seen));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

pub struct Seed {
    pub name: String,
    pub text: String,
    pub program: Program,
}

/// Every file of `lib/` and `tests/ok/` that checks, with its uses inlined.
pub fn seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut v = Vec::new();
        for dir in ["lib", "tests/ok"] {
            for p in tfm_files(&repo().join(dir)) {
                let text = inlined(&p, &mut Vec::new());
                if let Some(program) = load(&text) {
                    v.push(Seed { name: format!("{dir}/{}", p.file_name().unwrap_or_default().to_string_lossy()), text, program });
                }
            }
        }
        assert!(v.len() >= 12, "lib/ files should check");
        v
    })
}
