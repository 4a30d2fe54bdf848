//! The GPU path of every standard-library kernel, without a GPU:
//! - PTX for sm_80 and sm_90 assembled by `ptxas` (sizes and assembly times printed; a failure
//!   prints the kept PTX file's path and ptxas's output), PTX artifacts with their manifest
//!   line, and `ptxas -v` registers / local memory of sdpa's entries under both schedules;
//! - every kernel of `lib/` and `tests/ok/` run through the CPU emulation of the launch protocol
//!   (`backend::nvptx::emu` + the runtime's driver) against the interpreter on several shapes
//!   (size 1, odd sizes), ±1e4 logits, fully masked rows, and failures inside segments
//!   reported exactly as on the CPU;
//! - sdpa on a CUDA device where there is one (`SKIP: no CUDA device` otherwise).
//!
//! `ptxas` comes from `TFMC_PTXAS`, else the `.venv` that `./setup.sh` creates (searched from
//! this crate's directory upwards), else `PATH`. Without it the assembling tests print
//! `SKIP: ptxas not found` and pass, unless `CI` is set (CI installs it, so there it fails).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tfmc::Program;
use tfmc::backend::Export;
use tfmc::backend::nvptx::emu::with_emulator;
use tfmc::backend::nvptx::{self, NvptxOptions};
use tfmc::driver::{self, CompileError, CompileOptions, DEFAULT_SM, Prepared, Target};
use tfmc_runtime::{RuntimeError, Scalar, Tensor};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `.tfm` files directly in `dir`, sorted.
fn tfm_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tfm"))
        .collect();
    v.sort();
    v
}

fn load(path: &Path) -> Program {
    tfmc::load(path).unwrap_or_else(|d| panic!("{} does not check:\n{d}", path.display()))
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

fn ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// `ptxas`: see the module docs.
fn find_ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TFMC_PTXAS") {
        return Some(PathBuf::from(p));
    }
    for dir in Path::new(env!("CARGO_MANIFEST_DIR")).ancestors() {
        let Ok(rd) = std::fs::read_dir(dir.join(".venv/lib")) else {
            continue;
        };
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path().join("site-packages/nvidia/cuda_nvcc/bin/ptxas"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return Some(p);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("ptxas")).find(|p| p.is_file())
}

/// `ptxas` and libdevice (the PTX of kernels with libm functions needs it), or `None` after
/// printing why the test is skipped; in CI a missing tool fails the test.
fn toolchain_or_skip() -> Option<PathBuf> {
    let Some(ptxas) = find_ptxas() else {
        assert!(!ci(), "ptxas not found in CI (./setup.sh installs it; or set TFMC_PTXAS)");
        eprintln!("SKIP: ptxas not found");
        return None;
    };
    if let Err(tried) = nvptx::libdevice::find() {
        assert!(!ci(), "libdevice not found in CI (./setup.sh installs it); tried {tried:?}");
        eprintln!("SKIP: libdevice not found");
        return None;
    }
    Some(ptxas)
}

/// Where PTX files are kept (for reproducing a ptxas failure).
fn out_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ptx");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `ptxas -arch=sm_{sm} [-v] path`; panics with the path and ptxas's output on failure.
fn assemble(ptxas: &Path, path: &Path, sm: u32, verbose: bool) -> (String, Duration) {
    let t = Instant::now();
    let mut cmd = Command::new(ptxas);
    cmd.arg(format!("-arch=sm_{sm}"));
    if verbose {
        cmd.arg("-v");
    }
    let out = cmd.arg(path).arg("-o").arg("/dev/null").output().unwrap_or_else(|e| panic!("cannot run {}: {e}", ptxas.display()));
    let dt = t.elapsed();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ptxas -arch=sm_{sm} failed on {} (kept for reproducing):\n{log}", path.display());
    (log, dt)
}

fn ptx_of(k: &Prepared, sm: u32) -> String {
    let e = Export::new(&k.scheduled.func, k.manifest.symbol.clone());
    nvptx::emit_ptx(&[e], &NvptxOptions { sm, ..Default::default() }).unwrap_or_else(|e| panic!("{}: {e}", k.manifest.name))
}

#[test]
fn every_lib_and_golden_kernel_assembles_for_sm80_and_sm90() {
    let Some(ptxas) = toolchain_or_skip() else { return };
    let opts = CompileOptions::default();
    let mut rows = Vec::new();
    let mut files = tfm_files(&root().join("lib"));
    files.extend(tfm_files(&root().join("tests/ok")));
    for path in files {
        let program = load(&path);
        for k in &program.kernels {
            let prep = driver::prepare(&program, &k.name, &opts, &Target::cuda(DEFAULT_SM))
                .unwrap_or_else(|e| panic!("{}/{}: {e}", stem(&path), k.name));
            let launch = prep.manifest.gpu.clone().unwrap();
            for sm in [80, 90] {
                let t = Instant::now();
                let ptx = ptx_of(&prep, sm);
                let emit = t.elapsed();
                assert!(ptx.contains(&format!(".target sm_{sm}")));
                let symbol = &prep.manifest.symbol;
                let entries = std::iter::once(format!("{symbol}_prep")).chain((0..launch.segments).map(|s| format!("{symbol}_seg{s}")));
                for e in entries {
                    assert!(ptx.contains(&format!(".visible .entry {e}(")), "{}: no entry {e}", k.name);
                }
                let file = out_dir().join(format!("{}_{}_sm{sm}.ptx", stem(&path), k.name));
                std::fs::write(&file, &ptx).unwrap();
                let (_, dt) = assemble(&ptxas, &file, sm, false);
                let name = format!("{}/{}", stem(&path), k.name);
                rows.push((name, sm, ptx.len(), launch.segments, emit, dt));
            }
        }
    }
    eprintln!("{:<34} {:>4} {:>9} {:>5} {:>9} {:>9}", "kernel", "sm", "PTX bytes", "segs", "emit ms", "ptxas ms");
    for (name, sm, bytes, segs, emit, dt) in &rows {
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        eprintln!("{name:<34} {sm:>4} {bytes:>9} {segs:>5} {:>9.1} {:>9.1}", ms(emit), ms(dt));
    }
    assert!(rows.len() >= 2 * 25, "only {} kernel/arch pairs", rows.len());
}

/// F16 and BF16 buffers (loads widen, stores round) assemble for the oldest and newest
/// architectures tried: LLVM's `half` for F16 (native conversions, or `f16` arithmetic where
/// it narrows `f32` code exactly), integer code for BF16.
#[test]
fn half_and_bfloat_buffers_assemble() {
    use tfmc::schedule::kir::{BinOp, Buf, BufDecl, BufKind, Const, Expr, Func, Stmt, Ty, Var, VarDecl};
    let Some(ptxas) = toolchain_or_skip() else { return };
    let buf = |name: &str, elem: Ty, i: usize| BufDecl { name: name.into(), elem, kind: BufKind::Arg(i) };
    let ld = |b: u32| Expr::Load { buf: Buf(b), index: Box::new(Expr::Var(Var(1))) };
    let times3 = |x: Expr| Expr::Binary { op: BinOp::Mul, a: Box::new(x), b: Box::new(Expr::Const(Const::F32(3.0))), reassoc: false };
    let f = Func {
        name: "h".into(),
        vars: vec![VarDecl { name: "n".into(), ty: Ty::I64 }, VarDecl { name: "j".into(), ty: Ty::I64 }],
        bufs: vec![buf("x16", Ty::F16, 0), buf("xb", Ty::BF16, 1), buf("o16", Ty::F16, 2), buf("ob", Ty::BF16, 3)],
        dims: vec![Var(0)],
        params: vec![],
        n_args: 4,
        sites: vec![],
        thread: None,
        body: vec![Stmt::Parallel {
            var: Var(1),
            n: Expr::Var(Var(0)),
            body: vec![
                Stmt::Store { buf: Buf(2), index: Expr::Var(Var(1)), value: times3(ld(0)) },
                Stmt::Store { buf: Buf(3), index: Expr::Var(Var(1)), value: times3(ld(1)) },
            ],
        }],
    };
    for sm in [70, 80, 90] {
        let ptx = nvptx::emit_ptx(&[Export::new(&f, "h")], &NvptxOptions { sm, ..Default::default() }).unwrap();
        assert!(ptx.contains("ld.global.b16") && ptx.contains("st.global.b16"), "{ptx}");
        let file = out_dir().join(format!("half_sm{sm}.ptx"));
        std::fs::write(&file, &ptx).unwrap();
        assemble(&ptxas, &file, sm, false);
    }
}

#[test]
fn cuda_artifacts_of_every_lib_file_assemble_and_carry_their_manifest() {
    let Some(ptxas) = toolchain_or_skip() else { return };
    let opts = CompileOptions::default();
    for path in tfm_files(&root().join("lib")) {
        let program = load(&path);
        let out = out_dir().join(format!("{}.ptx", stem(&path)));
        let kernels = driver::build(&program, &out, &opts, &Target::cuda(90)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(&out).unwrap();
        let m = tfmc_runtime::manifest::manifest_from_ptx(&text).unwrap();
        assert_eq!(m.target.kind, "cuda");
        assert_eq!(m.target.triple, "nvptx64-nvidia-cuda");
        assert_eq!(m.target.cpu, "sm_90");
        assert_eq!(m.target.features, vec!["ptx80".to_string()]);
        let names: Vec<&str> = m.kernels.iter().map(|k| k.name.as_str()).collect();
        let want: Vec<&str> = program.kernels.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, want);
        for (k, p) in m.kernels.iter().zip(&kernels) {
            assert_eq!(k, &p.manifest, "the artifact's manifest is the prepared kernels'");
            assert_eq!(k.gpu.as_ref().unwrap().block, nvptx::BLOCK);
        }
        assemble(&ptxas, &out, 90, false);
    }
}

/// `(entry, registers, stack frame bytes)` per entry of a `ptxas -v` log.
fn resources(log: &str) -> Vec<(String, u32, u32)> {
    let mut out: Vec<(String, u32, u32)> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            out.push((rest.split('\'').next().unwrap_or("").to_string(), 0, 0));
        } else if let Some(last) = out.last_mut() {
            let num_before = |word: &str| line.split(word).next().and_then(|s| s.split_whitespace().last()).and_then(|n| n.parse().ok());
            if line.contains("bytes stack frame") {
                last.2 = num_before(" bytes stack frame").unwrap_or(0);
            }
            if line.contains("Used ") && line.contains(" registers") {
                last.1 = line.split("Used ").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0);
            }
        }
    }
    out.sort();
    out
}

/// The schedule choice for GPUs, measured: sdpa's entries under the generic plan (what
/// `driver::prepare` uses for a CUDA target) need far less local memory per thread than under the CPU's tiled
/// attention plan.
#[test]
fn sdpa_registers_and_local_memory_per_entry() {
    let Some(ptxas) = toolchain_or_skip() else { return };
    let program = load(&root().join("lib/sdpa.tfm"));
    let generic = driver::prepare(&program, "sdpa", &CompileOptions::default(), &Target::cuda(DEFAULT_SM)).unwrap();
    let tiled = driver::prepare(&program, "sdpa", &CompileOptions::default(), &Target::host_llvm()).unwrap();
    let mut worst = Vec::new();
    for (plan, k) in [("generic", &generic), ("tiled", &tiled)] {
        let file = out_dir().join(format!("sdpa_{plan}_sm90.ptx"));
        std::fs::write(&file, ptx_of(k, 90)).unwrap();
        let (log, _) = assemble(&ptxas, &file, 90, true);
        let res = resources(&log);
        assert!(!res.is_empty(), "no entries in ptxas -v output:\n{log}");
        for (entry, regs, stack) in &res {
            eprintln!("sdpa {plan:<8} {entry:<16} {regs:>4} registers {stack:>7} bytes stack frame");
        }
        worst.push(res.iter().map(|r| r.2).max().unwrap_or(0));
    }
    assert!(worst[0] < worst[1], "generic plan local memory {} vs tiled {}", worst[0], worst[1]);
}

/// The half-precision kernels of `lib/half.tfm` run on tensor cores from sm_80 on: their PTX
/// carries `mma.sync...m16n8k16` in their input format and assembles (registers and stack
/// frame per entry printed: the block parallels specialized for E = F = 64 and 128 keep their
/// fragments in registers); for sm_75 the schedule leaves tensor cores out and the PTX
/// assembles too.
#[test]
fn half_kernels_use_tensor_cores_from_sm80() {
    let Some(ptxas) = toolchain_or_skip() else { return };
    let program = load(&root().join("lib/half.tfm"));
    for k in &program.kernels {
        let inst = if k.name.ends_with("_bf16") {
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
        } else {
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
        };
        for sm in [75, 80, 90] {
            let prep = driver::prepare(&program, &k.name, &CompileOptions::default(), &Target::cuda(sm)).unwrap();
            let ptx = ptx_of(&prep, sm);
            assert_eq!(ptx.contains(inst), sm >= 80, "{} sm_{sm}: {inst}", k.name);
            let file = out_dir().join(format!("{}_sm{sm}.ptx", k.name));
            std::fs::write(&file, &ptx).unwrap();
            let (log, _) = assemble(&ptxas, &file, sm, true);
            for (entry, regs, stack) in resources(&log) {
                eprintln!("{:<12} sm_{sm} {entry:<24} {regs:>4} registers {stack:>7} bytes stack frame", k.name);
            }
        }
    }
}

/// fp32 results against the f64 interpreter: `|got - want| <= rtol * max(|want|, max |want|)`
/// with `rtol` = 2e-4, plus half an ulp of the format (2^-11, bf16 2^-8) for half-precision
/// outputs (rounded when stored), as the shared backend suite.
fn check(what: &str, got: &BTreeMap<String, Tensor>, want: &BTreeMap<String, Tensor>) {
    for (name, w) in want {
        let g = &got[name];
        assert_eq!(g.shape(), w.shape(), "{what}: {name} shape");
        let rtol = match g.dtype() {
            tfmc_runtime::DType::F16 => 2e-4 + 4.9e-4,
            tfmc_runtime::DType::BF16 => 2e-4 + 3.9e-3,
            _ => 2e-4,
        };
        let (g, w) = (g.to_f64_vec(), w.to_f64_vec());
        let mag = w.iter().fold(0.0f64, |a, x| a.max(x.abs()));
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            let ok = a == b || (a - b).abs() <= rtol * b.abs().max(mag);
            assert!(ok, "{what}: output {name}[{i}] = {a:e}, want {b:e} (magnitude {mag:e})");
        }
    }
}

/// Dim sizes tried for every kernel (names not listed get 3): size 1, odd sizes, a few more.
fn dim_sets() -> Vec<BTreeMap<&'static str, usize>> {
    let mk = |v: &[(&'static str, usize)]| v.iter().copied().collect::<BTreeMap<_, _>>();
    vec![
        mk(&[("B", 1), ("H", 1), ("G", 1), ("P", 1), ("M", 1), ("T", 1), ("E", 1), ("F", 1), ("D", 1), ("N", 1), ("S1", 2)]),
        mk(&[("B", 1), ("H", 2), ("G", 1), ("P", 7), ("M", 7), ("T", 7), ("E", 3), ("F", 5), ("D", 5), ("N", 3), ("S1", 3)]),
        mk(&[("B", 2), ("H", 3), ("G", 3), ("P", 13), ("M", 29), ("T", 13), ("E", 8), ("F", 6), ("D", 6), ("N", 4), ("S1", 4)]),
    ]
}

/// Inputs and params of one run.
type Case = (BTreeMap<String, Tensor>, BTreeMap<String, Scalar>);

/// Runs `program`'s kernel `name` (compiled once for the emulation) on every input set and
/// compares with the interpreter; returns (runs compared, (segments launched, threads)).
fn emulate_against_interpreter(what: &str, program: &Program, name: &str, cases: &[Case]) -> (usize, (u64, u64)) {
    let k = driver::prepare(program, name, &CompileOptions::default(), &Target::cuda(DEFAULT_SM)).unwrap_or_else(|e| panic!("{what}: {e}"));
    let ex = [Export::new(&k.scheduled.func, k.manifest.symbol.clone())];
    with_emulator(&ex, |dev| {
        let mut compared = 0;
        for (inputs, params) in cases {
            let want = tfmc::interp::run_exact(program, name, inputs, params);
            let got = tfmc_runtime::gpu::run(dev, &k.manifest, inputs, params);
            let shapes: Vec<_> = inputs.iter().map(|(n, t)| (n.clone(), t.shape().to_vec())).collect();
            match (want, got) {
                (Ok(w), Ok(g)) => {
                    check(&format!("{what} {shapes:?}"), &g, &w);
                    compared += 1;
                }
                (Err(_), Err(_)) => {}
                (Ok(_), Err(e)) => panic!("{what} {shapes:?}: the emulation fails: {e}"),
                (Err(e), Ok(_)) => panic!("{what} {shapes:?}: the interpreter fails ({e}) but the emulation does not"),
            }
        }
        assert_eq!(dev.live_allocations(), 0, "{what}: device memory leaked");
        (compared, (dev.stats().segments, dev.stats().threads))
    })
    .unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[test]
fn lib_and_golden_kernels_on_the_emulator_match_the_interpreter() {
    let mut files = tfm_files(&root().join("lib"));
    files.extend(tfm_files(&root().join("tests/ok")));
    let (mut kernels, mut runs, mut segs, mut threads) = (0, 0, 0, 0);
    for path in &files {
        let program = load(path);
        for k in &program.kernels {
            let cases: Vec<_> = dim_sets()
                .iter()
                .enumerate()
                .map(|(i, dims)| {
                    let d: BTreeMap<String, usize> =
                        k.free_dims().map(|x| (x.name.clone(), dims.get(x.name.as_str()).copied().unwrap_or(3))).collect();
                    (tfmc::inputs::random_inputs(&program, &k.name, &d, 7 + i as u64).unwrap(), BTreeMap::new())
                })
                .collect();
            let what = format!("{}/{}", stem(path), k.name);
            let (n, (s, t)) = emulate_against_interpreter(&what, &program, &k.name, &cases);
            kernels += 1;
            runs += n;
            segs += s;
            threads += t;
        }
    }
    eprintln!(
        "emulation coverage: {kernels} kernels of {} files, {runs} runs compared with the interpreter, {segs} segment launches, {threads} emulated threads",
        files.len()
    );
    assert!(runs > 60, "only {runs} runs compared");
}

fn attention_inputs(program: &Program, kernel: &str, p: usize, m: usize, seed: u64) -> BTreeMap<String, Tensor> {
    let d: BTreeMap<String, usize> =
        [("B", 1), ("H", 2), ("P", p), ("M", m), ("E", 8), ("F", 5)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
    tfmc::inputs::random_inputs(program, kernel, &d, seed).unwrap()
}

fn scaled(t: &Tensor, k: f64) -> Tensor {
    let v: Vec<f64> = t.to_f64_vec().iter().map(|x| x * k).collect();
    Tensor::from_f64(t.dtype(), t.shape().to_vec(), v).unwrap()
}

/// Logits of ±1e4 (the online max keeps softmax finite) and rows with no key (window W = 0:
/// every row fully masked, output 0).
#[test]
fn large_logits_and_fully_masked_rows_on_the_emulator() {
    for (file, kernel) in [("sdpa", "sdpa"), ("causal", "causal"), ("window", "window"), ("alibi", "alibi"), ("softcap", "softcap")] {
        let program = load(&root().join(format!("lib/{file}.tfm")));
        let cases: Vec<_> = [(1, 1), (9, 9), (37, 70)]
            .iter()
            .map(|&(p, m)| {
                let mut inputs = attention_inputs(&program, kernel, p, m, 3);
                for name in ["Q", "K"] {
                    let t = scaled(&inputs[name], 100.0);
                    inputs.insert(name.to_string(), t);
                }
                (inputs, BTreeMap::new())
            })
            .collect();
        let (n, _) = emulate_against_interpreter(&format!("{kernel} ±1e4 logits"), &program, kernel, &cases);
        assert_eq!(n, 3);
    }
    let program = load(&root().join("lib/window.tfm"));
    let inputs = attention_inputs(&program, "window", 11, 11, 5);
    let params: BTreeMap<String, Scalar> = [("W".to_string(), Scalar::I(0))].into();
    let got = driver::run(&program, "window", &inputs, &params, &CompileOptions::default(), &Target::gpu_emu()).map(|r| r.outputs).unwrap();
    let o = got["O"].to_f64_vec();
    assert!(!o.is_empty() && o.iter().all(|x| *x == 0.0), "fully masked rows must be 0");
    emulate_against_interpreter("window W=0", &program, "window", &[(inputs, params)]);
}

fn f32s(v: &[f64]) -> Tensor {
    Tensor::from_f64(tfmc_runtime::DType::F32, vec![v.len()], v.to_vec()).unwrap()
}

fn i32s(v: &[i64]) -> Tensor {
    Tensor::new(tfmc_runtime::DType::I32, vec![v.len()], tfmc_runtime::TensorData::I(v.to_vec())).unwrap()
}

/// A subscript out of range inside a segment (a gather through an index tensor) fails with
/// the CPU path's error, kind and site; so does a failure of a golden kernel (`gqa` with a head
/// count the kv heads do not divide).
#[test]
fn failures_inside_segments_are_the_cpu_errors() {
    let program = tfmc::load_str("gather.tfm", "kernel g(X: f32[N], I: i32[M]) -> (Y: f32[M]) {\n    Y[m] = X[I[m]] * 2.0\n}\n").unwrap();
    let opts = CompileOptions::default();
    let params = BTreeMap::new();
    let x = f32s(&[1.0, 2.0, 3.0]);
    let ok: BTreeMap<String, Tensor> = [("X".into(), x.clone()), ("I".into(), i32s(&[2, 0, 1, 2]))].into();
    let got = driver::run(&program, "g", &ok, &params, &opts, &Target::gpu_emu()).map(|r| r.outputs).unwrap();
    assert_eq!(got["Y"].to_f64_vec(), vec![6.0, 2.0, 4.0, 6.0]);
    for bad in [[0, 3, 1, 2], [0, 1, 2, -1]] {
        let inputs: BTreeMap<String, Tensor> = [("X".into(), x.clone()), ("I".into(), i32s(&bad))].into();
        let gpu_err = driver::run(&program, "g", &inputs, &params, &opts, &Target::gpu_emu()).map(|r| r.outputs).unwrap_err();
        let cpu_err = driver::run(&program, "g", &inputs, &params, &opts, &Target::host_llvm()).map(|r| r.outputs).unwrap_err();
        assert_eq!(gpu_err.to_string(), cpu_err.to_string());
        assert!(
            matches!(&gpu_err, CompileError::Runtime(RuntimeError::Kernel { kind: tfmc_runtime::manifest::FailKind::OutOfRange, .. })),
            "{gpu_err}"
        );
        assert!(gpu_err.to_string().contains("subscript out of range"), "{gpu_err}");
    }
    let program = load(&root().join("tests/ok/gqa_index_arithmetic.tfm"));
    let d: BTreeMap<String, usize> =
        [("B", 1), ("H", 3), ("G", 2), ("P", 4), ("M", 5), ("E", 2), ("F", 2)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let inputs = tfmc::inputs::random_inputs(&program, "gqa", &d, 1).unwrap();
    let gpu_err = driver::run(&program, "gqa", &inputs, &params, &opts, &Target::gpu_emu()).map(|r| r.outputs).unwrap_err();
    let cpu_err = driver::run(&program, "gqa", &inputs, &params, &opts, &Target::host_llvm()).map(|r| r.outputs).unwrap_err();
    assert_eq!(gpu_err.to_string(), cpu_err.to_string());
    assert!(tfmc::interp::run_exact(&program, "gqa", &inputs, &params).is_err());
}

/// sdpa on the first CUDA device against the interpreter; `SKIP: no CUDA device` without one.
#[test]
fn sdpa_on_a_cuda_device_matches_the_interpreter() {
    let program = load(&root().join("lib/sdpa.tfm"));
    let opts = CompileOptions::default();
    let params = BTreeMap::new();
    for (i, (p, m)) in [(1, 1), (37, 70), (129, 257)].into_iter().enumerate() {
        let inputs = attention_inputs(&program, "sdpa", p, m, 21 + i as u64);
        let got = match driver::run(&program, "sdpa", &inputs, &params, &opts, &Target::cuda(DEFAULT_SM)).map(|r| r.outputs) {
            Err(CompileError::Runtime(e)) if e.is_no_device() => {
                eprintln!("SKIP: no CUDA device ({e})");
                return;
            }
            r => r.unwrap_or_else(|e| panic!("sdpa p={p} m={m} on the GPU: {e}")),
        };
        let want = tfmc::interp::run_exact(&program, "sdpa", &inputs, &params).unwrap();
        check(&format!("sdpa on the GPU p={p} m={m}"), &got, &want);
    }
}
