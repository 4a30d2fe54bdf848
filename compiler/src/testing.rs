//! Test helpers shared by the compiler's unit tests: the standard library (`lib/`), loaded.

use std::path::{Path, PathBuf};

fn lib_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lib")
}

/// Every `lib/*.tfm` file, sorted by name, with its checked program.
pub fn lib_programs() -> Vec<(String, crate::Program)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(lib_dir())
        .expect("lib/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "tfm"))
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.display().to_string(), crate::load(&p).expect("lib file checks"))).collect()
}

/// The checked program of `lib/<file>`.
pub fn lib(file: &str) -> crate::Program {
    crate::load(&lib_dir().join(file)).expect("lib file checks")
}

/// The checked program of source `text` (a test's own kernel).
pub fn load(text: &str) -> crate::Program {
    crate::load_str("test.tfm", text).unwrap_or_else(|d| panic!("test source does not check:\n{d}"))
}
