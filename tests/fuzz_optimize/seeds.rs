//! The seed programs: every file of `lib/` and `tests/ok/` that checks, its `use` lines
//! inlined so a mutation or a minimized finding is one self-contained text. Paths are relative
//! to the repository root ([`repo`]). Also [`load`], the fuzzers' way to check a text.

use std::sync::OnceLock;
use tfmc::hir::Program;

use tfmc_conformance::inline_uses;
pub use tfmc_conformance::{repo_root as repo, tfm_files};

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
                let text = inline_uses(&p, &mut Vec::new());
                if let Some(program) = load(&text) {
                    v.push(Seed { name: format!("{dir}/{}", p.file_name().unwrap_or_default().to_string_lossy()), text, program });
                }
            }
        }
        assert!(v.len() >= 12, "lib/ files should check");
        v
    })
}

/// Loads `text`, never panicking (front-end panics are `fuzz_check`'s business).
pub fn load(text: &str) -> Option<Program> {
    std::panic::catch_unwind(|| tfmc::load_str("fuzz.tfm", text)).ok()?.ok()
}
