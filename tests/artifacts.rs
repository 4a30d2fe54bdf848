//! `tfmc build` end to end, through the library function the CLI calls
//! (`tfmc::driver::build` for the host's LLVM target): a good build writes the library and its C header, the library
//! opens with `tfmc_runtime::Artifact::open` and its `block` kernel (lib/model.tfm: RMSNorm,
//! projections, causal attention — kernels composed across files) matches the interpreter; a
//! failed build leaves nothing at the output path (nor temp files beside it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tfmc::driver::{CompileOptions, Target};

use tfmc_conformance::{Tol, build, compare, load_lib};
use tfmc_runtime::{Artifact, Scalar};

/// fp32 kernel against the f64 interpreter, relative to the output's magnitude.
const TOL: Tol = Tol::rel(1e-4);

/// A fresh directory under Cargo's per-target temp dir, removed when dropped. Each test uses
/// its own, so no library path is loaded twice in one process (see `Artifact` docs).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("artifacts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    /// The names of the entries in the directory, sorted.
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read scratch dir")
            .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn model_block_artifact_matches_the_interpreter() {
    let scratch = Scratch::new("model");
    let program = load_lib("model.tfm");
    let lib = scratch.0.join("libmodel.so");
    build(&program, &lib, &CompileOptions::default()).unwrap_or_else(|e| panic!("build: {e}"));

    let artifact = Artifact::open(&lib).unwrap_or_else(|e| panic!("open {}: {e}", lib.display()));
    let mut names: Vec<&str> = artifact.kernel_names();
    names.sort_unstable();
    let mut want_names: Vec<&str> = program.kernels.iter().map(|k| k.name.as_str()).collect();
    want_names.sort_unstable();
    assert_eq!(names, want_names, "every kernel of the program (used files included) is exported");
    assert!(names.contains(&"block") && names.contains(&"rmsnorm") && names.contains(&"causal"), "{names:?}");

    let block = artifact.kernel("block").unwrap();
    let dims: BTreeMap<String, usize> =
        [("B", 2), ("T", 5), ("D", 6), ("H", 2), ("E", 3)].into_iter().map(|(n, s)| (n.to_string(), s)).collect();
    let params: BTreeMap<String, Scalar> = BTreeMap::new();
    for seed in [1, 2] {
        let inputs = tfmc::inputs::random_inputs(&program, "block", &dims, seed).unwrap();
        let want = tfmc::interp::run_exact(&program, "block", &inputs, &params).unwrap();
        let got = block.run(&inputs, &params).unwrap_or_else(|e| panic!("run block: {e}"));
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
        for (name, w) in &want {
            let g = &got[name];
            assert_eq!(g.shape(), w.shape(), "output {name} shape");
            assert_eq!(g.shape(), &[2, 5, 6], "output {name} shape");
            if let Some(m) = compare(&g.to_f64_vec(), &w.to_f64_vec(), TOL) {
                panic!("block (seed {seed}) output {name}: {m}");
            }
        }
    }
}

#[test]
fn good_build_writes_library_and_header() {
    let scratch = Scratch::new("good");
    let lib = scratch.0.join("libsdpa.so");
    build(&load_lib("sdpa.tfm"), &lib, &CompileOptions::default()).unwrap_or_else(|e| panic!("build: {e}"));
    assert_eq!(scratch.entries(), ["libsdpa.h", "libsdpa.so"], "exactly the library and its header");
    let header = std::fs::read_to_string(scratch.0.join("libsdpa.h")).unwrap();
    assert!(header.contains("int32_t tfmc_sdpa(") && header.contains("int32_t tfmc_sdpa_packed("), "{header}");
    let artifact = Artifact::open(&lib).unwrap_or_else(|e| panic!("open: {e}"));
    assert_eq!(artifact.kernel_names(), ["sdpa"]);
}

#[test]
fn failed_build_unknown_param_leaves_nothing() {
    let scratch = Scratch::new("bad-param");
    let lib = scratch.0.join("libsdpa.so");
    let opts =
        CompileOptions { params: [("no_such_param".to_string(), Scalar::F(1.0))].into_iter().collect(), ..CompileOptions::default() };
    let err = build(&load_lib("sdpa.tfm"), &lib, &opts).expect_err("an unknown param must fail the build");
    assert!(err.to_string().contains("unknown param 'no_such_param'"), "{err}");
    assert!(!lib.exists(), "{} exists after a failed build", lib.display());
    assert!(scratch.entries().is_empty(), "left behind: {:?}", scratch.entries());
}

#[test]
fn failed_build_ill_typed_param_leaves_nothing() {
    // window's W is an i64 param: a float value does not fit.
    let scratch = Scratch::new("bad-type");
    let lib = scratch.0.join("libwindow.so");
    let opts = CompileOptions { params: [("W".to_string(), Scalar::F(1.5))].into_iter().collect(), ..CompileOptions::default() };
    let err = build(&load_lib("window.tfm"), &lib, &opts).expect_err("a float value for an i64 param must fail");
    assert!(err.to_string().contains("'W'"), "{err}");
    assert!(scratch.entries().is_empty(), "left behind: {:?}", scratch.entries());
}

#[test]
fn failed_build_into_missing_directory_leaves_nothing() {
    let scratch = Scratch::new("no-dir");
    let lib = scratch.0.join("missing").join("libsdpa.so");
    assert!(build(&load_lib("sdpa.tfm"), &lib, &CompileOptions::default()).is_err());
    assert!(!lib.exists());
    assert!(scratch.entries().is_empty(), "left behind: {:?}", scratch.entries());
}

/// A CPU name whose code this machine cannot run (it lacks a feature the CPU implies that the
/// runtime can test), with that feature; `None` on a machine that has them all.
fn newer_cpu() -> Option<(&'static str, &'static str)> {
    [
        ("diamondrapids", "avx512fp16"),
        ("sapphirerapids", "avx512fp16"),
        ("znver4", "avx512bf16"),
        ("x86-64-v4", "avx512f"),
        ("x86-64-v3", "avx2"),
    ]
    .into_iter()
    .find(|(_, f)| tfmc_runtime::features::host_has_feature(f) == Some(false))
}

/// `--target-cpu` records the features the CPU implies, so an artifact for a newer CPU is
/// refused when opened instead of dying with SIGILL at its first call.
#[test]
fn artifact_for_a_newer_cpu_is_refused() {
    let Some((cpu, feature)) = newer_cpu() else {
        eprintln!("SKIP: this machine has every feature of the newest CPUs");
        return;
    };
    let scratch = Scratch::new("newer-cpu");
    let lib = scratch.0.join("libscale.so");
    let target = Target::Llvm(tfmc::backend::llvm::TargetOptions { cpu: Some(cpu.to_string()), features: None, opt_level: 1 });
    tfmc::driver::build(&load_lib("sdpa.tfm"), &lib, &CompileOptions::default(), &target).unwrap_or_else(|e| panic!("build: {e}"));
    let err = Artifact::open(&lib).err().unwrap_or_else(|| panic!("an artifact for {cpu} opened on a machine without {feature}"));
    assert!(err.to_string().contains("needs CPU features this machine lacks") && err.to_string().contains(feature), "{err}");
}

#[test]
fn build_param_becomes_the_manifest_default() {
    let scratch = Scratch::new("param");
    let lib = scratch.0.join("libwindow.so");
    let opts = CompileOptions { params: [("W".to_string(), Scalar::I(3))].into_iter().collect(), ..CompileOptions::default() };
    build(&load_lib("window.tfm"), &lib, &opts).unwrap_or_else(|e| panic!("build: {e}"));
    let artifact = Artifact::open(&lib).unwrap_or_else(|e| panic!("open: {e}"));
    let k = artifact.kernel("window").unwrap();
    let w = k.manifest().params.iter().find(|p| p.name == "W").expect("param W");
    assert_eq!(w.default, tfmc_runtime::manifest::ParamValue::Int(3));
}

/// Artifact files are read with a size cap, and only regular files: `/dev/zero` (endless) is
/// refused at once, by the CPU loader and by the PTX loader (`CudaArtifact`, before any device
/// is looked for), instead of being read until memory runs out.
#[test]
fn endless_or_special_artifact_files_are_refused() {
    let refused = |e: Option<tfmc_runtime::ArtifactError>, what: &str| e.unwrap_or_else(|| panic!("{what}")).to_string();
    let dev_zero = std::path::Path::new("/dev/zero");
    if !dev_zero.exists() {
        eprintln!("SKIP: no /dev/zero");
        return;
    }
    let e = refused(tfmc_runtime::Artifact::open(dev_zero).err(), "/dev/zero is no artifact");
    assert!(e.contains("not a regular file"), "{e}");
    let e = refused(tfmc_runtime::cuda::CudaArtifact::open(dev_zero).err(), "/dev/zero is no PTX artifact");
    assert!(e.contains("not a regular file"), "{e}");
    // A (sparse) file one byte over the cap is refused before it is read.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.ptx");
    std::fs::File::create(&big).unwrap().set_len(tfmc_runtime::artifact::MAX_ARTIFACT_BYTES + 1).unwrap();
    let e = refused(tfmc_runtime::Artifact::open(&big).err(), "too large");
    assert!(e.contains("the limit for an artifact"), "{e}");
    let e = refused(tfmc_runtime::cuda::CudaArtifact::open(&big).err(), "too large");
    assert!(e.contains("the limit for an artifact"), "{e}");
}
