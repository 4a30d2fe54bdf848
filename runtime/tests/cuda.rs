//! The CUDA runtime (feature `cuda`) with a hand-written PTX artifact that follows the launch
//! protocol (`tfmc_vadd`: prep writes the segment count, seg0 does `O[i] = A[i] + B[i]`, or
//! fails through an atomic CAS when the `fail` param is set).
//!
//! Without a GPU the no-device paths are tested for real and the GPU tests print
//! `SKIP: no CUDA device` and pass. The PTX is also checked with `ptxas` when one is found
//! (`$PTXAS`, or the workspace's `.venv` from `nvidia-cuda-nvcc-cu12`).
#![cfg(feature = "cuda")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tfmc_runtime::cuda::{CudaArtifact, CudaDevice, device_count};
use tfmc_runtime::manifest::{
    DimSpec, FORMAT_NAME, FORMAT_VERSION, FailKind, GpuLaunch, KernelManifest, Manifest, ParamSpec, ParamValue, Target, TensorSpec,
    ptx_with_manifest,
};
use tfmc_runtime::{ArtifactError, DType, RuntimeError, Scalar, Tensor, write_npz};

/// `tfmc_vadd(A f32[N], B f32[N]) -> O f32[N]`, param `fail: bool`; no heap, one segment.
const VADD_PTX: &str = r#".version 8.0
.target sm_80
.address_size 64

.visible .entry tfmc_vadd_prep(
	.param .u64 bufs, .param .u64 dims, .param .u64 params, .param .u64 heap, .param .u64 status)
{
	.reg .pred %p<2>;
	.reg .b64 %rd<6>;
	ld.param.u64 %rd1, [dims];
	cvta.to.global.u64 %rd1, %rd1;
	ld.param.u64 %rd2, [status];
	cvta.to.global.u64 %rd2, %rd2;
	ld.global.u64 %rd3, [%rd1];
	setp.lt.s64 %p1, %rd3, 0;
	@%p1 bra $L_bad_dims;
	// status[1 + H + 0] = N (H = 0)
	st.global.u64 [%rd2+8], %rd3;
	ret;
$L_bad_dims:
	mov.u64 %rd4, 6;
	st.global.u64 [%rd2], %rd4;
	ret;
}

.visible .entry tfmc_vadd_seg0(
	.param .u64 bufs, .param .u64 dims, .param .u64 params, .param .u64 heap, .param .u64 status)
{
	.reg .pred %p<3>;
	.reg .b32 %r<5>;
	.reg .f32 %f<4>;
	.reg .b64 %rd<24>;
	ld.param.u64 %rd1, [bufs];
	cvta.to.global.u64 %rd1, %rd1;
	ld.param.u64 %rd2, [dims];
	cvta.to.global.u64 %rd2, %rd2;
	ld.param.u64 %rd3, [params];
	cvta.to.global.u64 %rd3, %rd3;
	ld.param.u64 %rd4, [status];
	cvta.to.global.u64 %rd4, %rd4;
	ld.global.u64 %rd5, [%rd1];
	cvta.to.global.u64 %rd5, %rd5;
	ld.global.u64 %rd6, [%rd1+8];
	cvta.to.global.u64 %rd6, %rd6;
	ld.global.u64 %rd7, [%rd1+16];
	cvta.to.global.u64 %rd7, %rd7;
	ld.global.u64 %rd8, [%rd2];
	ld.global.u64 %rd9, [%rd3];
	mov.u32 %r1, %ctaid.x;
	mov.u32 %r2, %ntid.x;
	mov.u32 %r3, %tid.x;
	mov.u32 %r4, %nctaid.x;
	mul.wide.u32 %rd10, %r1, %r2;
	cvt.u64.u32 %rd11, %r3;
	add.s64 %rd10, %rd10, %rd11;
	mul.wide.u32 %rd12, %r4, %r2;
$L_loop:
	setp.ge.s64 %p1, %rd10, %rd8;
	@%p1 bra $L_done;
	setp.ne.s64 %p2, %rd9, 0;
	@%p2 bra $L_fail;
	shl.b64 %rd13, %rd10, 2;
	add.s64 %rd14, %rd5, %rd13;
	add.s64 %rd15, %rd6, %rd13;
	add.s64 %rd16, %rd7, %rd13;
	ld.global.f32 %f1, [%rd14];
	ld.global.f32 %f2, [%rd15];
	add.rn.f32 %f3, %f1, %f2;
	st.global.f32 [%rd16], %f3;
	add.s64 %rd10, %rd10, %rd12;
	bra $L_loop;
$L_fail:
	// status[0]: CAS 0 -> Overflow | site 1 << 8
	mov.u64 %rd17, 0;
	mov.u64 %rd18, 259;
	atom.global.cas.b64 %rd19, [%rd4], %rd17, %rd18;
$L_done:
	ret;
}
"#;

fn spec(name: &str) -> TensorSpec {
    TensorSpec { name: name.into(), dtype: "f32".into(), shape: vec![DimSpec::Dim("N".into())] }
}

fn vadd_manifest(cpu: &str, segments: u32) -> Manifest {
    Manifest {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        compiler_version: "test".into(),
        target: Target { kind: "cuda".into(), triple: "nvptx64-nvidia-cuda".into(), cpu: cpu.into(), features: vec!["ptx80".into()] },
        kernels: vec![KernelManifest {
            name: "vadd".into(),
            symbol: "tfmc_vadd".into(),
            doc: "Adds two vectors.".into(),
            inputs: vec![spec("A"), spec("B")],
            outputs: vec![spec("O")],
            dims: vec!["N".into()],
            params: vec![ParamSpec { name: "fail".into(), dtype: "bool".into(), default: ParamValue::Bool(false) }],
            sites: vec!["prologue".into(), "A[i] + B[i] at vadd.tfm:2:9".into()],
            gpu: Some(GpuLaunch { block: 128, heap_elem_bytes: vec![], segments }),
        }],
    }
}

/// Writes the vadd artifact (for `cpu`, claiming `segments` segments) into `dir`.
fn write_artifact(dir: &Path, cpu: &str, segments: u32) -> PathBuf {
    let path = dir.join(format!("vadd_{cpu}_{segments}.ptx"));
    let text = ptx_with_manifest(VADD_PTX, &vadd_manifest(cpu, segments));
    std::fs::write(&path, text).unwrap();
    path
}

fn inputs(n: usize) -> BTreeMap<String, Tensor> {
    let a: Vec<f64> = (0..n).map(|i| i as f64 * 0.5).collect();
    let b: Vec<f64> = (0..n).map(|i| 1.0 - i as f64).collect();
    BTreeMap::from([
        ("A".into(), Tensor::from_f64(DType::F32, vec![n], a).unwrap()),
        ("B".into(), Tensor::from_f64(DType::F32, vec![n], b).unwrap()),
    ])
}

/// `A + B` for [`inputs`], in f32.
fn expected(n: usize) -> Vec<f64> {
    (0..n).map(|i| f64::from((i as f64 * 0.5) as f32 + (1.0 - i as f64) as f32)).collect()
}

/// True when a CUDA device is usable; prints the skip line otherwise.
fn have_gpu() -> bool {
    match device_count() {
        Ok(n) if n > 0 => true,
        Ok(_) => {
            println!("SKIP: no CUDA device (the driver reports zero devices)");
            false
        }
        Err(e) => {
            println!("SKIP: no CUDA device ({e})");
            false
        }
    }
}

fn runner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tfmc-cuda-run"))
}

#[test]
fn no_device_is_an_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_artifact(dir.path(), "sm_80", 1);
    // An ordinal no machine has: "no device" whether or not a GPU is present.
    let err = CudaDevice::from_ptx_on(VADD_PTX, 9999).unwrap_err();
    assert!(err.is_no_device(), "{err}");
    assert!(err.to_string().starts_with("no CUDA device found: "), "{err}");
    let err = CudaArtifact::open_on(&path, 9999).unwrap_err();
    assert!(err.is_no_device(), "{err}");
    assert!(err.to_string().contains("no CUDA device found: "), "{err}");
    assert!(err.to_string().contains("vadd_sm_80_1.ptx"), "{err}");
    if device_count().is_err() {
        // This machine has no driver: every way in says so.
        let err = CudaDevice::from_ptx(VADD_PTX).unwrap_err();
        assert!(matches!(err, RuntimeError::NoCudaDevice(_)), "{err}");
        let err = CudaArtifact::open(&path).unwrap_err();
        assert!(err.is_no_device(), "{err}");
        println!("no driver: {err}");
    }
}

#[test]
fn runner_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_artifact(dir.path(), "sm_80", 1);
    let out = runner().arg(&path).args(["--kernel", "vadd", "--device", "9999"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no CUDA device found"), "{stderr}");
    if device_count().is_err() {
        let out = runner().arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("no CUDA device found: the CUDA driver library (libcuda.so) cannot be loaded"), "{stderr}");
    }
    // A missing file: an error naming it, exit 1.
    let out = runner().arg(dir.path().join("missing.ptx")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing.ptx': cannot read it"), "{stderr}");
    // Not an artifact: exit 1.
    let bad = dir.path().join("plain.ptx");
    std::fs::write(&bad, VADD_PTX).unwrap();
    let out = runner().arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a tfmc PTX artifact"), "{stderr}");
    // Bad command lines: exit 64 with the usage.
    for args in [
        vec![],
        vec!["a.ptx", "--iters"],
        vec!["a.ptx", "--param", "x"],
        vec!["a.ptx", "--param", "x=maybe"],
        vec!["a.ptx", "--rtol", "1e-3"],
        vec!["a.ptx", "--bogus"],
        vec!["a.ptx", "b.ptx"],
    ] {
        let out = runner().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains("usage: tfmc-cuda-run"), "{stderr}");
    }
    let out = runner().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("usage: tfmc-cuda-run"));
}

#[test]
fn vadd_on_the_gpu() {
    if !have_gpu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_artifact(dir.path(), "sm_80", 1);
    let mut art = CudaArtifact::open(&path).unwrap();
    assert_eq!(art.kernel_names(), ["vadd"]);
    println!("device: {} {:?}", art.device().name(), art.device().compute_capability());
    // Empty (no segment launched), one partial block, many blocks.
    for n in [0, 1, 1000, 3_000_001] {
        let out = art.kernel("vadd").unwrap().run(&inputs(n), &BTreeMap::new()).unwrap();
        assert_eq!(out["O"].shape(), [n]);
        assert_eq!(out["O"].to_f64_vec(), expected(n), "n = {n}");
    }
    // A failure from the segment's CAS maps to the manifest's site.
    let params = BTreeMap::from([("fail".to_string(), Scalar::B(true))]);
    let err = art.kernel("vadd").unwrap().run(&inputs(300), &params).unwrap_err();
    assert!(matches!(&err, RuntimeError::Kernel { kind: FailKind::Overflow, site, .. } if site == "A[i] + B[i] at vadd.tfm:2:9"), "{err}");
    // The same checks as the CPU path.
    let err = art.kernel("vadd").unwrap().run(&BTreeMap::new(), &BTreeMap::new()).unwrap_err();
    assert_eq!(err.to_string(), "kernel 'vadd' needs input 'A' of type f32[N]");
    // Repeated launches with resident inputs.
    let mut p = art.kernel("vadd").unwrap().prepare(&inputs(1 << 20), &BTreeMap::new()).unwrap();
    let times = p.time(5).unwrap();
    assert_eq!(times.len(), 5);
    println!("vadd 2^20: {times:?}");
    assert_eq!(p.outputs().unwrap()["O"].to_f64_vec(), expected(1 << 20));
}

#[test]
fn gpu_artifact_errors() {
    if !have_gpu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let future = write_artifact(dir.path(), "sm_999", 1);
    let err = CudaArtifact::open(&future).unwrap_err();
    assert!(matches!(err.root(), ArtifactError::ComputeCapability { .. }), "{err}");
    let missing = write_artifact(dir.path(), "sm_80", 2);
    let err = CudaArtifact::open(&missing).unwrap_err();
    assert!(matches!(err.root(), ArtifactError::MissingSymbol { symbol, .. } if symbol == "tfmc_vadd_seg1"), "{err}");
    let err = CudaDevice::from_ptx("this is not PTX").unwrap_err();
    assert!(matches!(err, RuntimeError::DeviceOp { .. }), "{err}");
    println!("refused PTX: {err}");
}

#[test]
fn runner_on_the_gpu() {
    if !have_gpu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_artifact(dir.path(), "sm_80", 1);
    let ins = dir.path().join("in.npz");
    write_npz(&ins, &inputs(4096)).unwrap();
    let good = dir.path().join("ref.npz");
    let o = Tensor::from_f64(DType::F32, vec![4096], expected(4096)).unwrap();
    write_npz(&good, &BTreeMap::from([("O".to_string(), o.clone())])).unwrap();
    let out_path = dir.path().join("out.npz");
    let out = runner()
        .arg(&path)
        .args(["--kernel", "vadd", "--inputs"])
        .arg(&ins)
        .arg("--expect")
        .arg(&good)
        .arg("--out")
        .arg(&out_path)
        .args(["--iters", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("output O: f32 [4096]"), "{stdout}");
    assert!(stdout.contains("PASS") && stdout.contains("5 launches: median"), "{stdout}");
    assert_eq!(tfmc_runtime::read_npz(&out_path).unwrap()["O"], o);
    let mut wrong = o;
    wrong.set(7, Scalar::F(1e3));
    let bad = dir.path().join("bad.npz");
    write_npz(&bad, &BTreeMap::from([("O".to_string(), wrong)])).unwrap();
    let out = runner().arg(&path).arg("--inputs").arg(&ins).arg("--expect").arg(&bad).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
}

/// `ptxas` from `$PTXAS` or the workspace's `.venv`, if there is one.
fn find_ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PTXAS") {
        return Some(p.into());
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
    std::fs::read_dir(lib).ok()?.flatten().find_map(|d| {
        let p = d.path().join("site-packages/nvidia/cuda_nvcc/bin/ptxas");
        p.is_file().then_some(p)
    })
}

#[test]
fn hand_written_ptx_assembles() {
    let Some(ptxas) = find_ptxas() else {
        println!("SKIP: no ptxas (set PTXAS or install nvidia-cuda-nvcc-cu12 into .venv)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = write_artifact(dir.path(), "sm_80", 1);
    for arch in ["sm_80", "sm_90"] {
        let out =
            Command::new(&ptxas).arg(format!("-arch={arch}")).arg(&path).arg("-o").arg(dir.path().join("vadd.cubin")).output().unwrap();
        assert!(out.status.success(), "ptxas -arch={arch} {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
}
