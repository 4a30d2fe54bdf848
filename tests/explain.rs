//! Golden tests of `tfmc explain` for every kernel of every `lib/` file: the optimized
//! cascade, the rules that fired, passes before/after, estimates and egg statistics. A change
//! in a rule or the cost model shows up as a reviewed snapshot diff. Bless with
//! `INSTA_UPDATE=always cargo test -p tfmc-conformance --test explain`.

use std::path::Path;

#[test]
fn explain_every_lib_kernel() {
    std::env::set_current_dir(tfmc_conformance::repo_root()).expect("repo root exists");
    let files = tfmc_conformance::tfm_files(Path::new("lib"));
    let mut n = 0;
    for path in files {
        let program = tfmc::load(&path).unwrap_or_else(|d| panic!("{} does not check:\n{d}", path.display()));
        let opts = tfmc::optimize::Options::for_program(&program);
        for k in &program.kernels {
            // Kernels from `use`d files are explained with their own file.
            if program.sources.get(k.span.file).name != path.display().to_string() {
                continue;
            }
            let text = tfmc::optimize::explain::explain(&program, &k.name, &opts)
                .unwrap_or_else(|e| panic!("{}: {}: {e}", path.display(), k.name));
            insta::with_settings!({snapshot_path => "snapshots/explain", prepend_module_to_snapshot => false}, {
                insta::assert_snapshot!(format!("explain_{}", k.name), text);
            });
            n += 1;
        }
    }
    assert!(n >= 17, "expected every lib kernel, explained {n}");
}
