//! Loading fake artifacts built from hand-written C (`cc` required): running kernels, every
//! call-validation error, and every way a file can be rejected.

mod common;

use std::collections::BTreeMap;

use common::*;
use tfmc_runtime::manifest::FailKind;
use tfmc_runtime::{Artifact, ArtifactError, DType, NativeTensor, RuntimeError, Scalar, Tensor};

fn f32_tensor(v: &[f64]) -> Tensor {
    Tensor::from_f64(DType::F32, vec![v.len()], v.to_vec()).unwrap()
}

fn inputs(pairs: &[(&str, Tensor)]) -> BTreeMap<String, Tensor> {
    pairs.iter().map(|(n, t)| (n.to_string(), t.clone())).collect()
}

fn no_params() -> BTreeMap<String, Scalar> {
    BTreeMap::new()
}

fn open_err(path: &std::path::Path) -> ArtifactError {
    let e = Artifact::open(path).expect_err("open should fail");
    let text = e.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    e
}

#[test]
fn loads_and_runs() {
    let a = Artifact::open(good_lib()).unwrap();
    assert_eq!(a.kernel_names(), ["add", "count"]);
    assert_eq!(a.manifest().kernels[0], add_kernel());
    let k = a.kernel("add").unwrap();
    assert_eq!(k.manifest().name, "add");

    // Native buffers.
    let x = NativeTensor::from_f32(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let y = NativeTensor::from_f32(vec![4], vec![10.0, 20.0, 30.0, 40.0]).unwrap();
    let mut out = k.alloc_outputs(&[&x, &y]).unwrap();
    k.run_native(&[&x, &y], &mut out, &no_params()).unwrap();
    assert_eq!(out[0].as_f32().unwrap(), [11.0, 22.0, 33.0, 44.0]);

    // By name, with a param.
    let ins = inputs(&[("A", f32_tensor(&[1.0, 2.0])), ("B", f32_tensor(&[0.5, 0.25]))]);
    let params = BTreeMap::from([("scale".to_string(), Scalar::F(2.0))]);
    let outs = k.run(&ins, &params).unwrap();
    assert_eq!(outs.keys().collect::<Vec<_>>(), ["O"]);
    assert_eq!(outs["O"].to_f64_vec(), [3.0, 4.5]);
    // An integer is accepted for a float param.
    let params = BTreeMap::from([("scale".to_string(), Scalar::I(3))]);
    assert_eq!(k.run(&ins, &params).unwrap()["O"].to_f64_vec(), [4.5, 6.75]);

    // Empty tensors.
    let ins = inputs(&[("A", f32_tensor(&[])), ("B", f32_tensor(&[]))]);
    assert!(k.run(&ins, &no_params()).unwrap()["O"].is_empty());
}

#[test]
fn call_errors() {
    let a = Artifact::open(good_lib()).unwrap();
    let k = a.kernel("add").unwrap();
    let two = f32_tensor(&[1.0, 2.0]);
    let three = f32_tensor(&[1.0, 2.0, 3.0]);

    let e = k.run(&inputs(&[("A", two.clone()), ("B", three.clone())]), &no_params());
    let e = e.unwrap_err();
    assert!(matches!(e, RuntimeError::DimMismatch { .. }), "{e:?}");
    assert_eq!(e.to_string(), "input 'B' of kernel 'add': dimension 0 (N) is 3, but input 'A' gives N = 2");

    let bad_rank = Tensor::zeros(DType::F32, vec![2, 1]);
    let e = k.run(&inputs(&[("A", two.clone()), ("B", bad_rank)]), &no_params());
    let text = e.unwrap_err().to_string();
    assert!(text.contains("input 'B'") && text.contains("f32[N]"), "{text}");

    let ints = Tensor::zeros(DType::I32, vec![2]);
    let e = k.run(&inputs(&[("A", two.clone()), ("B", ints)]), &no_params());
    let e = e.unwrap_err();
    assert!(matches!(e, RuntimeError::DType { expected: DType::F32, got: DType::I32, .. }));
    assert_eq!(e.to_string(), "input 'B' of kernel 'add' must be f32, got i32");

    let e = k.run(&inputs(&[("A", two.clone())]), &no_params()).unwrap_err();
    assert_eq!(e.to_string(), "kernel 'add' needs input 'B' of type f32[N]");

    let e = k.run(&inputs(&[("A", two.clone()), ("B", two.clone()), ("Z", two.clone())]), &no_params());
    assert_eq!(e.unwrap_err().to_string(), "kernel 'add' has no input 'Z'; its inputs are A, B");

    let ab = inputs(&[("A", two.clone()), ("B", two.clone())]);
    let e = k.run(&ab, &BTreeMap::from([("sclae".to_string(), Scalar::F(1.0))]));
    assert_eq!(e.unwrap_err().to_string(), "kernel 'add' has no param 'sclae'; its params are fail, scale");
    let e = k.run(&ab, &BTreeMap::from([("fail".to_string(), Scalar::I(1))]));
    assert!(matches!(e, Err(RuntimeError::ParamType { .. })));

    let e = a.kernel("mul").unwrap_err();
    assert_eq!(e.to_string(), "no kernel 'mul'; the artifact has: add, count");

    // Output buffers of the wrong shape or dtype.
    let x = NativeTensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
    let mut wrong = vec![NativeTensor::zeros(DType::F32, vec![3]).unwrap()];
    let e = k.run_native(&[&x, &x], &mut wrong, &no_params());
    assert!(matches!(e, Err(RuntimeError::OutputShape { .. })));
    let mut wrong = vec![NativeTensor::zeros(DType::F64, vec![2]).unwrap()];
    let e = k.run_native(&[&x, &x], &mut wrong, &no_params());
    assert!(matches!(e, Err(RuntimeError::DType { .. })));
    let e = k.run_native(&[&x], &mut [], &no_params());
    assert!(matches!(e, Err(RuntimeError::InputCount { expected: 2, got: 1, .. })));
}

#[test]
fn kernel_failure_code() {
    let a = Artifact::open(good_lib()).unwrap();
    let k = a.kernel("add").unwrap();
    let ab = inputs(&[("A", f32_tensor(&[1.0])), ("B", f32_tensor(&[2.0]))]);
    let e = k.run(&ab, &BTreeMap::from([("fail".to_string(), Scalar::B(true))])).unwrap_err();
    match &e {
        RuntimeError::Kernel { kernel, kind, site } => {
            assert_eq!(kernel, "add");
            assert_eq!(*kind, FailKind::Overflow);
            assert_eq!(site, "A[i] + B[i] at add.tfm:2:9");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.to_string(), "kernel 'add' failed: integer overflow at A[i] + B[i] at add.tfm:2:9");
}

#[test]
fn damaged_files() {
    let good = std::fs::read(good_lib()).unwrap();

    let truncated = write("truncated.so", &good[..good.len() / 2]);
    assert!(matches!(open_err(&truncated).root(), ArtifactError::NotSealed));

    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    let flipped = write("flipped.so", &flipped);
    assert!(matches!(open_err(&flipped).root(), ArtifactError::Checksum { .. }));

    let unsealed = write("unsealed.so", &good[..good.len() - tfmc_runtime::aot::TRAILER_LEN]);
    assert!(matches!(open_err(&unsealed).root(), ArtifactError::NotSealed));

    let garbage = write("garbage.so", b"this is not an ELF file at all, just text");
    assert!(matches!(open_err(&garbage).root(), ArtifactError::NotSealed));
    tfmc_runtime::aot::seal(&garbage).unwrap();
    assert!(matches!(open_err(&garbage).root(), ArtifactError::Elf(_)));

    let missing = dir().join("does-not-exist.so");
    assert!(matches!(open_err(&missing).root(), ArtifactError::Io(_)));
}

#[test]
fn wrong_version() {
    let mut m = manifest(vec![add_kernel()]);
    m.version = 999;
    let lib = build_lib("v999", Some(&m.to_json()), "");
    let e = open_err(&lib);
    assert!(matches!(e.root(), ArtifactError::Version { found: 999, expected: 1 }), "{e:?}");
    // A future format that no longer fits the schema is still a version error.
    let lib = build_lib("v999b", Some(r#"{"format": "tfmc-artifact", "version": 999}"#), "");
    assert!(matches!(open_err(&lib).root(), ArtifactError::Version { found: 999, .. }));
}

#[test]
fn bad_manifests() {
    let lib = build_lib("nomanifest", None, "");
    assert!(matches!(open_err(&lib).root(), ArtifactError::NoManifest { .. }));

    let lib = build_lib("notjson", Some("{ not json"), "");
    assert!(matches!(open_err(&lib).root(), ArtifactError::Json(_)));

    let mut m = manifest(vec![add_kernel()]);
    m.format = "something-else".into();
    let lib = build_lib("format", Some(&m.to_json()), "");
    assert!(matches!(open_err(&lib).root(), ArtifactError::Format { .. }));

    let mut m = manifest(vec![add_kernel()]);
    m.kernels[0].inputs[0].dtype = "f128".into();
    let lib = build_lib("baddtype", Some(&m.to_json()), "");
    assert!(matches!(open_err(&lib).root(), ArtifactError::InvalidManifest(_)));

    let mut m = manifest(vec![add_kernel()]);
    m.target.kind = "cuda".into();
    let lib = build_lib("cuda", Some(&m.to_json()), "");
    assert!(matches!(open_err(&lib).root(), ArtifactError::TargetKind { .. }));

    let mut m = manifest(vec![add_kernel()]);
    let other = if std::env::consts::ARCH == "aarch64" { "x86_64" } else { "aarch64" };
    m.target.triple = format!("{other}-unknown-linux-gnu");
    let lib = build_lib("arch", Some(&m.to_json()), "");
    assert!(matches!(open_err(&lib).root(), ArtifactError::Arch { .. }));

    let mut ghost = add_kernel();
    ghost.name = "ghost".into();
    ghost.symbol = "tfmc_ghost".into();
    let m = manifest(vec![add_kernel(), ghost]);
    let lib = build_lib("ghost", Some(&m.to_json()), "");
    let e = open_err(&lib);
    assert!(e.to_string().contains("missing symbol 'tfmc_ghost_packed' (kernel 'ghost')"), "{e}");
}

#[test]
fn cpu_features() {
    // Features this runtime cannot test are ignored; ones the CPU has pass.
    let mut m = manifest(vec![add_kernel()]);
    m.target.features = vec!["made-up-feature".into(), "+another-one".into()];
    if std::env::consts::ARCH == "x86_64" {
        m.target.features.push("sse2".into());
    }
    let lib = build_lib("features_ok", Some(&m.to_json()), "");
    Artifact::open(&lib).unwrap();

    // A testable feature this CPU lacks is an error (deterministic given the CPU; the table
    // logic itself is unit-tested with a fake detector in `features`).
    let candidates = ["avx512fp16", "avx512vp2intersect", "avx512bf16", "sse4a", "avx512f"];
    let Some(lacking) = candidates.iter().find(|f| tfmc_runtime::features::host_has_feature(f) == Some(false)) else {
        eprintln!("note: this CPU has every candidate feature; missing-feature load not exercised");
        return;
    };
    let mut m = manifest(vec![add_kernel()]);
    m.target.features = vec!["made-up-feature".into(), lacking.to_string()];
    let lib = build_lib("features_missing", Some(&m.to_json()), "");
    match open_err(&lib).root() {
        ArtifactError::MissingFeatures { features } => assert_eq!(features, &[*lacking]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn header_of_the_test_manifest_compiles() {
    let m = manifest(vec![add_kernel(), count_kernel()]);
    let h = write("model.h", tfmc_runtime::manifest::c_header(&m, "MODEL_H").as_bytes());
    let c = write("use_header.c", format!("#include \"{}\"\n#include \"{}\"\n", h.display(), h.display()).as_bytes());
    cc(&["-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", c.to_str().unwrap()]);
}

#[test]
fn corrupted_payloads_never_panic() {
    // Re-sealed after damage, so the checksum passes and the ELF and JSON parsers see it.
    // (`read_manifest` only: loading a malformed ELF is the loader's business, and a sealed
    // artifact is trusted not to be one, see `artifact`'s module docs.)
    let sealed = std::fs::read(good_lib()).unwrap();
    let payload = tfmc_runtime::aot::unseal(&sealed).unwrap().to_vec();
    let reseal = |p: &[u8]| {
        let mut v = p.to_vec();
        v.extend_from_slice(&tfmc_runtime::aot::trailer(p));
        v
    };
    let read = tfmc_runtime::artifact::read_manifest;
    assert!(read(&reseal(&payload)).is_ok());
    let step = (payload.len() / 300).max(1);
    for cut in (0..payload.len()).step_by(step) {
        let _ = read(&reseal(&payload[..cut]));
    }
    // A cheap deterministic generator (xorshift) for positions and values.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..2000 {
        let mut p = payload.clone();
        for _ in 0..1 + next() % 4 {
            // Mostly the ELF header and the section/symbol tables near the end.
            let len = p.len() as u64;
            let at = match next() % 3 {
                0 => next() % len.min(256),
                1 => len - 1 - next() % len.min(4096),
                _ => next() % len,
            } as usize;
            p[at] = next() as u8;
        }
        let _ = read(&reseal(&p));
    }
}
