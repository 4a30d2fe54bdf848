//! Runs the Python package's pytest suite (`python/tests/test_*.py`) from `cargo test`, against
//! the native module this build just made (not whatever is installed in the venv): the Python
//! sources (`python/tfmc/`) and `target/<profile>/deps/lib_tfmc.so` (as `_tfmc.abi3.so`; `cargo
//! test` updates the module there, not the copy in `target/<profile>/`) are linked
//! into a temporary package directory put first on `PYTHONPATH`. Reference results come from
//! the `tfmc` CLI of the same build (`TFMC_BIN`).
//!
//! Python is the project venv's (`.venv/bin/python`, made by `./setup.sh` with numpy, pytest
//! and torch). Without a venv or pytest the test prints a `SKIP:` line and passes; any pytest
//! failure (or no test collected) fails it with pytest's output.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("python/ has a parent").to_path_buf()
}

/// `target/<profile>/`, where cargo put this test binary's `deps/` and the cdylib.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf()
}

#[cfg(unix)]
fn link(from: &Path, to: &Path) {
    std::os::unix::fs::symlink(from, to).unwrap_or_else(|e| panic!("symlink {} -> {}: {e}", to.display(), from.display()));
}

#[test]
fn pytest_suite() {
    let root = root();
    let python = root.join(".venv/bin/python");
    if !python.is_file() {
        println!("SKIP: no {} (run ./setup.sh): the Python tests did not run", python.display());
        return;
    }
    let probe = Command::new(&python).args(["-c", "import pytest, numpy"]).output().expect("run the venv's python");
    if !probe.status.success() {
        println!("SKIP: the venv lacks pytest or numpy (run ./setup.sh): {}", String::from_utf8_lossy(&probe.stderr).trim());
        return;
    }
    let exe = std::env::current_exe().expect("test executable path");
    let module = exe.parent().expect("target/<profile>/deps").join("lib_tfmc.so");
    assert!(module.is_file(), "{} is missing: cargo did not build the tfmc-python cdylib", module.display());

    let stage = tempfile::tempdir().expect("temporary directory");
    let pkg = stage.path().join("tfmc");
    std::fs::create_dir(&pkg).expect("create the staged package");
    for entry in std::fs::read_dir(root.join("python/tfmc")).expect("python/tfmc") {
        let p = entry.expect("dir entry").path();
        if p.extension().is_some_and(|e| e == "py" || e == "pyi" || e == "typed") {
            link(&p, &pkg.join(p.file_name().expect("file name")));
        }
    }
    link(&module, &pkg.join("_tfmc.abi3.so"));

    let tfmc_bin = profile_dir().join("tfmc");
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "python/tests"])
        .current_dir(&root)
        .env("PYTHONPATH", stage.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("TFMC_ROOT", &root);
    if tfmc_bin.is_file() {
        cmd.env("TFMC_BIN", &tfmc_bin);
    }
    let out = cmd.output().expect("run pytest");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // pytest's summary, for the log (`cargo test -- --nocapture` shows everything).
    println!("{text}");
    assert!(out.status.success(), "pytest failed (exit {:?}):\n{text}", out.status.code());
}
