//! Test helpers shared by the compiler's unit tests: the standard library (`lib/`), loaded,
//! and random inputs made valid where a kernel indexes one input by another's values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tfmc_runtime::{Tensor, TensorData};

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

/// Makes a paged kernel's block table valid: `Tbl`'s entries (random small integers) become
/// page numbers of `Kp` (`mod NB`, its first dim), so a gather reads a page that exists.
pub fn valid_block_table(inputs: &mut BTreeMap<String, Tensor>) {
    let (Some(tbl), Some(kp)) = (inputs.get("Tbl"), inputs.get("Kp")) else { return };
    let nb = kp.shape().first().copied().unwrap_or(0).max(1) as i64;
    let TensorData::I(v) = tbl.data() else { return };
    let v = v.iter().map(|x| x.rem_euclid(nb)).collect();
    // Same dtype and shape as the random table, new values.
    let t = Tensor::new(tbl.dtype(), tbl.shape().to_vec(), TensorData::I(v)).expect("block table");
    inputs.insert("Tbl".to_string(), t);
}
