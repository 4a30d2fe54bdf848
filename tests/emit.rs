//! Golden tests for every `lib/` file of the checked program (`tfmc check --emit=checked`)
//! and of the IR (`--emit=ir`: each kernel lowered to a cascade, calls inlined): a change in
//! name resolution, typing (explicit casts), filter attachment or lowering shows up as a
//! snapshot diff to review. Bless with `INSTA_UPDATE=always cargo test -p tfmc-conformance --test emit`.

use std::path::{Path, PathBuf};

/// `lib/*.tfm`, sorted, relative to the repo root (made the working directory).
fn lib_files() -> Vec<PathBuf> {
    std::env::set_current_dir(tfmc_conformance::repo_root()).expect("repo root exists");
    let files = tfmc_conformance::tfm_files(Path::new("lib"));
    assert!(files.len() >= 12, "expected the whole standard library, found {files:?}");
    files
}

#[test]
fn checked_program_of_every_lib_file() {
    for path in lib_files() {
        let program = tfmc::load(&path).unwrap_or_else(|d| panic!("{} does not check:\n{d}", path.display()));
        let text = tfmc::hir::print::print_program(&program);
        let name = path.file_stem().expect("file name").to_string_lossy().to_string();
        insta::with_settings!({snapshot_path => "snapshots/emit", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(format!("checked_{name}"), text);
        });
    }
}

#[test]
fn ir_of_every_lib_kernel() {
    for path in lib_files() {
        let program = tfmc::load(&path).unwrap_or_else(|d| panic!("{} does not check:\n{d}", path.display()));
        let mut text = String::new();
        for k in &program.kernels {
            let c = tfmc::ir::lower::lower(&program, &k.name).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            tfmc::ir::verify::verify(&c).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            text.push_str(&tfmc::ir::print::print_cascade(&c));
        }
        let name = path.file_stem().expect("file name").to_string_lossy().to_string();
        insta::with_settings!({snapshot_path => "snapshots/emit", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(format!("ir_{name}"), text);
        });
    }
}
