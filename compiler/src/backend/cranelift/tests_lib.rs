//! Every `lib/` kernel compiled by the Cranelift JIT against the f64 interpreter
//! (`interp::run_exact`) on seeded random inputs of several shapes — size 1, odd sizes that are
//! not multiples of any tile or of the vector width, and larger ones — with the tolerance rule
//! of `tests/backends.rs` (fp32 error relative to the output's magnitude). Inputs where the
//! interpreter fails must fail on the backend too. Also: which loops of the attention kernels
//! vectorize, and (ignored by default) the compile- and run-time measurements against LLVM.

use std::collections::BTreeMap;
use std::time::Instant;

use tfmc_runtime::{Scalar, Tensor};

use super::*;
use crate::driver::{CompileOptions, Prepared, Target};

/// The CPU schedule's prepared kernel (the Cranelift target's).
fn prepare(program: &crate::Program, name: &str, opts: &CompileOptions) -> Result<Prepared, crate::driver::CompileError> {
    crate::driver::prepare(program, name, opts, &Target::cranelift())
}

/// fp32 against f64, relative to the output's magnitude.
const RTOL: f64 = 2e-4;

/// Runs kernel `k` (prepared) through this backend on named inputs.
fn run_prepared(
    k: &Prepared,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
    opts: &CraneliftOptions,
) -> Result<BTreeMap<String, Tensor>, String> {
    let ex = [Export::new(&k.scheduled.func, k.manifest.symbol.clone())];
    with_jit(&ex, opts, |jit| {
        let entry = jit.entry(&k.manifest.symbol).ok_or("no entry")?;
        // SAFETY: the entry was compiled from this manifest's kernel, with the packed ABI.
        unsafe { tfmc_runtime::call::call(entry, &k.manifest, inputs, params) }.map_err(|e| e.to_string())
    })
    .map_err(|e| e.to_string())?
}

/// The worst element of `got` vs `want` beyond `rtol * max(|want_i|, max_j |want_j|)`.
fn mismatch(got: &[f64], want: &[f64], rtol: f64) -> Option<String> {
    let magnitude = want.iter().fold(0.0f64, |a, w| a.max(w.abs()));
    let mut worst: Option<(usize, f64)> = None;
    for (q, (&g, &w)) in got.iter().zip(want).enumerate() {
        let allowed = rtol * w.abs().max(magnitude);
        let bad = if g == w || (g.is_nan() && w.is_nan()) {
            0.0
        } else if !g.is_finite() || allowed == 0.0 {
            f64::INFINITY
        } else {
            (g - w).abs() / allowed
        };
        if bad > 1.0 && worst.is_none_or(|(_, b)| bad > b) {
            worst = Some((q, bad));
        }
    }
    worst.map(|(q, r)| format!("element {q}: got {:e}, want {:e} ({r:.2e} × tolerance)", got[q], want[q]))
}

fn check(what: &str, got: &BTreeMap<String, Tensor>, want: &BTreeMap<String, Tensor>) {
    for (name, w) in want {
        let g = &got[name];
        assert_eq!(g.shape(), w.shape(), "{what}: {name} shape");
        // A half-precision output is rounded to its format: half an ulp (2^-11, bf16 2^-8)
        // of the magnitude on top of the fp32 tolerance (as tests/backends.rs).
        let rtol = match g.dtype() {
            tfmc_runtime::DType::F16 => RTOL + 4.9e-4,
            tfmc_runtime::DType::BF16 => RTOL + 3.9e-3,
            _ => RTOL,
        };
        if let Some(m) = mismatch(&g.to_f64_vec(), &w.to_f64_vec(), rtol) {
            panic!("{what}: output {name}: {m}");
        }
    }
}

/// Dim sizes tried for every kernel (names not listed get 3).
fn dim_sets() -> Vec<BTreeMap<&'static str, usize>> {
    let mk = |v: &[(&'static str, usize)]| v.iter().copied().collect::<BTreeMap<_, _>>();
    vec![
        mk(&[("B", 1), ("H", 1), ("P", 1), ("M", 1), ("T", 1), ("E", 1), ("F", 1), ("D", 1), ("N", 1), ("S1", 2)]),
        mk(&[("B", 1), ("H", 2), ("P", 7), ("M", 7), ("T", 7), ("E", 3), ("F", 5), ("D", 5), ("N", 3), ("S1", 3)]),
        mk(&[("B", 2), ("H", 3), ("P", 19), ("M", 29), ("T", 13), ("E", 9), ("F", 6), ("D", 6), ("N", 5), ("S1", 4)]),
        mk(&[("B", 1), ("H", 2), ("P", 67), ("M", 131), ("T", 67), ("E", 16), ("F", 13), ("D", 16), ("N", 4), ("S1", 5)]),
    ]
}

#[test]
fn lib_kernels_match_the_interpreter() {
    let opts = CraneliftOptions::default();
    let mut compared = 0;
    for (file, program) in crate::testing::lib_programs() {
        for k in &program.kernels {
            let prepared = prepare(&program, &k.name, &CompileOptions::default()).unwrap_or_else(|e| panic!("{file}/{}: {e}", k.name));
            for (s, dims) in dim_sets().iter().enumerate() {
                let d: BTreeMap<String, usize> =
                    k.free_dims().map(|x| (x.name.clone(), dims.get(x.name.as_str()).copied().unwrap_or(3))).collect();
                let inputs = crate::inputs::random_inputs(&program, &k.name, &d, 7 + s as u64).unwrap();
                let params = BTreeMap::new();
                let want = crate::interp::run_exact(&program, &k.name, &inputs, &params);
                let got = run_prepared(&prepared, &inputs, &params, &opts);
                let what = format!("{file}/{} dims {d:?}", k.name);
                match (want, got) {
                    (Ok(want), Ok(got)) => {
                        check(&what, &got, &want);
                        compared += 1;
                    }
                    (Err(_), Err(_)) => {}
                    (Ok(_), Err(e)) => panic!("{what}: the backend fails: {e}"),
                    (Err(e), Ok(_)) => panic!("{what}: the interpreter fails ({e}) but the backend does not"),
                }
            }
        }
    }
    assert!(compared > 40, "only {compared} runs compared");
}

#[test]
fn large_logits_and_fully_masked_rows() {
    let opts = CraneliftOptions::default();
    for (file, kernel) in [("sdpa.tfm", "sdpa"), ("causal.tfm", "causal"), ("window.tfm", "window")] {
        let program = crate::testing::lib(file);
        let prepared = prepare(&program, kernel, &CompileOptions::default()).unwrap();
        for (p, m) in [(1, 1), (17, 9), (37, 70)] {
            let d: BTreeMap<String, usize> =
                [("B", 1), ("H", 2), ("P", p), ("M", m), ("E", 8), ("F", 5)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
            let mut inputs = crate::inputs::random_inputs(&program, kernel, &d, 3).unwrap();
            for name in ["Q", "K"] {
                let t = &inputs[name];
                let scaled: Vec<f64> = t.to_f64_vec().iter().map(|x| x * 100.0).collect();
                let t = Tensor::from_f64(t.dtype(), t.shape().to_vec(), scaled).unwrap();
                inputs.insert(name.to_string(), t);
            }
            let params = BTreeMap::new();
            let want = crate::interp::run_exact(&program, kernel, &inputs, &params).unwrap();
            let got = run_prepared(&prepared, &inputs, &params, &opts).unwrap();
            check(&format!("{kernel} ±1e4 logits p={p} m={m}"), &got, &want);
        }
    }
    let program = crate::testing::lib("window.tfm");
    let prepared = prepare(&program, "window", &CompileOptions::default()).unwrap();
    let d: BTreeMap<String, usize> =
        [("B", 1), ("H", 2), ("P", 11), ("M", 11), ("E", 8), ("F", 5)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let inputs = crate::inputs::random_inputs(&program, "window", &d, 5).unwrap();
    let params: BTreeMap<String, Scalar> = [("W".to_string(), Scalar::I(0))].into();
    let got = run_prepared(&prepared, &inputs, &params, &opts).unwrap();
    assert!(got["O"].to_f64_vec().iter().all(|x| *x == 0.0), "fully masked rows must be 0");
}

/// The vectorizer's verdict on every innermost loop of `kernel` in `file`.
fn report(file: &str, kernel: &str) -> Vec<LoopReport> {
    let program = crate::testing::lib(file);
    let k = prepare(&program, kernel, &CompileOptions::default()).unwrap();
    vector_report(&k.scheduled.func)
}

#[test]
fn attention_tile_hot_loops_vectorize() {
    for (file, kernel) in [("sdpa.tfm", "sdpa"), ("causal.tfm", "causal")] {
        let r = report(file, kernel);
        let vec: Vec<&str> = r.iter().filter(|l| l.scalar_because.is_none()).map(|l| l.var.split('%').next().unwrap_or("")).collect();
        // The tiled plan's hot loops, in order: O.s = O.s + a * Kᵀ (j), the masking loop (j),
        // the acc rescale (f), the exp loop (j), P·V (f), the output (f).
        let want = ["j", "j", "f", "j", "f", "f"];
        let mut it = vec.iter();
        for w in want {
            assert!(it.any(|v| *v == w), "{kernel}: no vectorized '{w}' loop in order; report: {r:#?}");
        }
    }
    // Linear attention's `φ(K)ᵀ·V` step: its weights `φ(K[m, e])` (rows `e`) are computed keys
    // outer, rows inner into a key-major tile; the interior blocks' loop (the first that stores
    // the tile) vectorizes, as do the value panel and the output loops. (The bookkeeping loops
    // over a tile's rows, with i64 bounds, and the masked edge blocks, which unmasked linear
    // attention never runs, may stay scalar.)
    let r = report("linear.tfm", "linear");
    let fill = r.iter().find(|l| l.stores.iter().any(|b| b == "O.keep0.s")).unwrap_or_else(|| panic!("no weight fill loop: {r:#?}"));
    assert!(fill.scalar_because.is_none(), "{r:#?}");
    let outputs: Vec<&LoopReport> = r.iter().filter(|l| l.stores.iter().any(|b| b == "O" || b == "O.keep0")).collect();
    assert!(!outputs.is_empty() && outputs.iter().all(|l| l.scalar_because.is_none()), "{r:#?}");
}

/// Median of 5 wall-clock measurements of `f`, in milliseconds.
fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..5)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[2]
}

/// Compile time of every lib kernel (median of 5, `Instant` around `with_jit`) on Cranelift
/// and on LLVM O3, the vectorized loops of sdpa/causal/linear, and their run times (sdpa and causal at
/// b=1, h=8, p=m=512, e=64; linear smaller) on both (outputs compared). A measurement: run with
/// `cargo test --release -p tfmc --lib cranelift::tests_lib::measure -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement (compile and run times), not a check: run it by hand in release"]
fn measure_compile_and_run_time_against_llvm() {
    let cl = CraneliftOptions::default();
    let llvm_opts = crate::backend::llvm::TargetOptions::default();
    println!("{:<28} {:>10} {:>10} {:>8}", "kernel", "cranelift", "llvm O3", "ratio");
    for (file, program) in crate::testing::lib_programs() {
        for k in &program.kernels {
            let pk = prepare(&program, &k.name, &CompileOptions::default()).unwrap();
            let ex = [Export::new(&pk.scheduled.func, pk.manifest.symbol.clone())];
            let c = median_ms(|| with_jit(&ex, &cl, |j| assert!(j.entry(&ex[0].symbol).is_some())).unwrap());
            let l = median_ms(|| crate::backend::llvm::with_jit(&ex, &llvm_opts, |j| assert!(j.entry(&ex[0].symbol).is_some())).unwrap());
            let name = format!("{}/{}", file.rsplit('/').next().unwrap_or(&file), k.name);
            println!("{name:<28} {c:>8.2}ms {l:>8.2}ms {:>7.1}x", l / c);
        }
    }
    let reported = [
        ("sdpa.tfm", "sdpa"),
        ("causal.tfm", "causal"),
        ("linear.tfm", "linear"),
        ("linear.tfm", "linear_causal"),
        ("linear.tfm", "linear_causal_scan"),
    ];
    for (file, kernel) in reported {
        for l in report(file, kernel) {
            println!("{kernel} loop {}: {}", l.var, l.scalar_because.as_deref().unwrap_or("vectorized"));
        }
    }
    let big = [("B", 1), ("H", 8), ("P", 512), ("M", 512), ("E", 64), ("F", 64)];
    run_time_against_llvm("sdpa.tfm", "sdpa", &big);
    run_time_against_llvm("causal.tfm", "causal", &big);
    // linear's generic plan is O(P·F·E·M): a smaller shape.
    run_time_against_llvm("linear.tfm", "linear", &[("B", 1), ("H", 2), ("P", 128), ("M", 128), ("E", 32), ("F", 32)]);
}

/// Run time of `kernel` at `dims` on Cranelift (with and without SIMD) and LLVM (median of 5
/// bare entry calls, inputs bound once); the outputs must agree.
fn run_time_against_llvm(file: &str, kernel: &str, dims: &[(&str, usize)]) {
    let cl = CraneliftOptions::default();
    let llvm_opts = crate::backend::llvm::TargetOptions::default();
    let program = crate::testing::lib(file);
    let pk = prepare(&program, kernel, &CompileOptions::default()).unwrap();
    let d: BTreeMap<String, usize> = dims.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let inputs = crate::inputs::random_inputs(&program, kernel, &d, 1).unwrap();
    let params = BTreeMap::new();
    let ex = [Export::new(&pk.scheduled.func, pk.manifest.symbol.clone())];
    // Inputs bound once; each timed call is the bare packed entry.
    let run = |entry: PackedFn| {
        let mut b = tfmc_runtime::call::bind_call(&pk.manifest, &inputs, &params).unwrap();
        let mut bufs: Vec<*mut std::ffi::c_void> = b.inputs.iter().map(|t| t.as_ptr().cast_mut().cast()).collect();
        bufs.extend(b.outputs.iter_mut().map(|t| t.as_mut_ptr().cast()));
        let ms = median_ms(|| {
            // SAFETY: the buffers were bound against this kernel's manifest.
            let code = unsafe { entry(bufs.as_ptr(), b.dims.as_ptr(), b.params.as_ptr()) };
            assert_eq!(code, 0);
        });
        let out: BTreeMap<String, Tensor> = [("O".to_string(), b.outputs[0].to_tensor().unwrap())].into();
        (ms, out)
    };
    let (c_ms, c_out) = with_jit(&ex, &cl, |j| run(j.entry(&ex[0].symbol).unwrap())).unwrap();
    let (l_ms, l_out) = crate::backend::llvm::with_jit(&ex, &llvm_opts, |j| run(j.entry(&ex[0].symbol).unwrap())).unwrap();
    let scalar = CraneliftOptions { simd: false, ..Default::default() };
    let (s_ms, _) = with_jit(&ex, &scalar, |j| run(j.entry(&ex[0].symbol).unwrap())).unwrap();
    println!("{kernel} {dims:?}: cranelift {c_ms:.2} ms (scalar {s_ms:.2} ms), llvm {l_ms:.2} ms, ratio {:.2}", c_ms / l_ms);
    check(&format!("{kernel}: cranelift vs llvm"), &c_out, &l_out);
}
