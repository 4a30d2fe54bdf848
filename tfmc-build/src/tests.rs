//! Unit tests of tfmc-build: the artifact and header are written, directives name every used
//! file and the artifact's environment variable, params reach the manifest, and each kind of
//! failure is an [`Error`] with readable text. Small programs, so the builds stay fast.

use std::path::{Path, PathBuf};

use super::*;

/// A scale kernel using a helper file (two files, one param).
const MAIN: &str = "use \"helper.tfm\"\n\n/// Multiplier.\nparam alpha: f32 = 2.0\n\n/// Y = alpha * double(X).\nkernel scale(X: f32[N]) -> (Y: f32[N]) {\n    D = double(X)\n    Y[n] = D[n] * alpha\n}\n";
const HELPER: &str = "/// Y = 2 X.\nkernel double(X: f32[N]) -> (Y: f32[N]) {\n    Y[n] = X[n] * 2.0\n}\n";

/// Writes the two-file program into a fresh directory; returns (dir, main path).
fn program() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.tfm"), MAIN).unwrap();
    std::fs::write(dir.path().join("helper.tfm"), HELPER).unwrap();
    let main = dir.path().join("main.tfm");
    (dir, main)
}

fn run(b: &Build) -> (Result<PathBuf, Error>, Vec<String>) {
    let mut d = Vec::new();
    let r = b.compile_to(&mut d);
    (r, d)
}

fn canon(p: &Path) -> String {
    std::fs::canonicalize(p).unwrap().display().to_string()
}

#[test]
fn env_var_names_are_identifiers() {
    assert_eq!(env_var_name("sdpa"), "TFMC_ARTIFACT_SDPA");
    assert_eq!(env_var_name("my-model_2"), "TFMC_ARTIFACT_MY_MODEL_2");
}

#[test]
fn builds_library_header_and_directives() {
    let (dir, main) = program();
    let out = dir.path().join("out");
    let (r, d) = run(&Build::new(&main).out_dir(&out).param("alpha", 3.0f32).cargo_metadata(false));
    let lib = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lib, out.join("libmain.so"));
    assert!(lib.is_file());
    assert!(out.join("libmain.h").is_file());
    let header = std::fs::read_to_string(out.join("libmain.h")).unwrap();
    assert!(header.contains("tfmc_scale("), "{header}");
    assert!(d.contains(&format!("rerun-if-changed={}", canon(&main))), "{d:?}");
    assert!(d.contains(&format!("rerun-if-changed={}", canon(&dir.path().join("helper.tfm")))), "{d:?}");
    assert_eq!(d.last().unwrap(), &format!("rustc-env=TFMC_ARTIFACT_MAIN={}", lib.display()));

    // The param value is the manifest default, and the artifact runs.
    let a = tfmc_runtime::Artifact::open(&lib).unwrap();
    let k = a.kernel("scale").unwrap();
    assert_eq!(k.manifest().params[0].default, tfmc_runtime::manifest::ParamValue::Float(3.0));
    let x = tfmc_runtime::NativeTensor::from_f32(vec![3], vec![1.0, -2.0, 0.5]).unwrap();
    let mut outs = k.alloc_outputs(&[&x]).unwrap();
    k.run_native(&[&x], &mut outs, &Default::default()).unwrap();
    assert_eq!(outs[0].as_f32().unwrap(), &[6.0, -12.0, 3.0]);
}

#[test]
fn name_option_renames_library_and_variable() {
    let (dir, main) = program();
    let (r, d) = run(&Build::new(&main).out_dir(dir.path()).name("scaler").opt_level(0).cargo_metadata(false));
    let lib = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lib, dir.path().join("libscaler.so"));
    assert!(d.last().unwrap().starts_with("rustc-env=TFMC_ARTIFACT_SCALER="), "{d:?}");
}

#[test]
fn warnings_become_cargo_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("w.tfm");
    std::fs::write(&f, "kernel w(X: f32[N]) -> (Y: f32[N]) {\n    Z[n] = X[n]\n    Y[n] = X[n]\n}\n").unwrap();
    let (r, d) = run(&Build::new(&f).out_dir(dir.path()).cargo_metadata(false));
    r.unwrap_or_else(|e| panic!("{e}"));
    assert!(d.iter().any(|l| l.starts_with("warning=") && l.contains("never used")), "{d:?}");
}

#[test]
fn a_program_that_does_not_check_is_reported_with_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.tfm");
    std::fs::write(&f, "kernel bad(Q: f32[P, E]) -> (O: f32[P]) {\n    O[p] = Q[p, e] * 2.0\n}\n").unwrap();
    let out = dir.path().join("out");
    let (r, d) = run(&Build::new(&f).out_dir(&out).cargo_metadata(false));
    let e = r.unwrap_err();
    assert!(matches!(e, Error::Check { .. }));
    let text = e.to_string();
    assert!(text.contains("does not check") && text.contains("error: ") && text.contains("bad.tfm:2:"), "{text}");
    // The file is still watched, and nothing was written.
    assert_eq!(d, vec![format!("rerun-if-changed={}", canon(&f))]);
    assert!(!out.join("libbad.so").exists());
}

#[test]
fn a_missing_file_is_a_check_error_and_watched() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("nope.tfm");
    let (r, d) = run(&Build::new(&f).out_dir(dir.path()).cargo_metadata(false));
    assert!(matches!(r, Err(Error::Check { .. })));
    assert_eq!(d, vec![format!("rerun-if-changed={}", f.display())]);
}

#[test]
fn an_unknown_param_fails_and_writes_nothing() {
    let (dir, main) = program();
    let (r, _) = run(&Build::new(&main).out_dir(dir.path()).param("beta", 1).cargo_metadata(false));
    let e = r.unwrap_err();
    assert!(matches!(e, Error::Compile { .. }));
    assert!(e.to_string().contains("unknown param 'beta'"), "{e}");
    assert!(!dir.path().join("libmain.so").exists());
    assert!(!dir.path().join("libmain.h").exists());
}

#[test]
fn an_unknown_cpu_fails() {
    let (dir, main) = program();
    let (r, _) = run(&Build::new(&main).out_dir(dir.path()).target_cpu("no-such-cpu").cargo_metadata(false));
    let e = r.unwrap_err();
    // Unknown CPU names are only rejected on x86 hosts (see tfmc's target resolution).
    if cfg!(target_arch = "x86_64") {
        assert!(e.to_string().contains("no-such-cpu"), "{e}");
    }
}

#[test]
fn bad_names_and_missing_out_dir_are_config_errors() {
    let (_dir, main) = program();
    let (r, _) = run(&Build::new(&main).name("a b").out_dir("/nonexistent").cargo_metadata(false));
    assert!(matches!(r, Err(Error::Config(m)) if m.contains("'a b'")));
    if std::env::var_os("OUT_DIR").is_none() {
        let (r, _) = run(&Build::new(&main).cargo_metadata(false));
        assert!(matches!(r, Err(Error::Config(m)) if m.contains("OUT_DIR")));
    }
}

#[test]
fn one_name_per_build_script() {
    let (dir, main) = program();
    // With directives on (as in a build script), a second artifact with the same variable
    // name is refused; `dup` is used by no other test.
    let b = Build::new(&main).out_dir(dir.path()).name("dup").opt_level(0);
    let (r, _) = run(&b);
    r.unwrap_or_else(|e| panic!("{e}"));
    let (r, _) = run(&b.clone().name("DUP"));
    assert!(matches!(r, Err(Error::Config(m)) if m.contains("TFMC_ARTIFACT_DUP")));
}
