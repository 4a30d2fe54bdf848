//! Golden tests of the checked program (`tfmc check --emit=checked`) for every `lib/` file:
//! a change in name resolution, typing (explicit casts) or filter attachment shows up as a
//! snapshot diff to review. Bless with `INSTA_UPDATE=always cargo test -p tfmc-conformance --test emit`.

use std::path::Path;

#[test]
fn checked_program_of_every_lib_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&root).expect("repo root exists");
    let mut files: Vec<_> = std::fs::read_dir("lib")
        .expect("lib/ exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "tfm"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "expected the whole standard library, found {files:?}");
    for path in files {
        let program = tfmc::load(&path).unwrap_or_else(|d| panic!("{} does not check:\n{d}", path.display()));
        let text = tfmc::hir::print::print_program(&program);
        let name = path.file_stem().expect("file name").to_string_lossy().to_string();
        insta::with_settings!({snapshot_path => "snapshots/emit", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(format!("checked_{name}"), text);
        });
    }
}
