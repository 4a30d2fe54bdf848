//! The backends' shared test suite: every `lib/` kernel and every golden program
//! (`tests/ok/*.tfm`) on each compiled backend against the f64 interpreter, with the same
//! seeded random inputs of several shapes — size 1, odd sizes that are not multiples of any
//! tile, and larger ones — and fp32 tolerances scaled by the output's magnitude; plus the
//! numerically hard cases (±1e4 logits, fully masked rows) and regressions. Inputs where the
//! interpreter fails must fail on the backend too.
//!
//! The suite is written once ([`suite!`]) and instantiated per backend (a module each:
//! `llvm::…`, `cranelift::…`, `gpu_emulation::…`, `cuda::…`), so a new backend gets every test by one line.

use std::collections::BTreeMap;

use tfmc::driver::{CompileOptions, Target};
use tfmc_conformance::{Tol, compare, load_lib, repo_root, tfm_files};
use tfmc_runtime::{Scalar, Tensor};

/// Runs `kernel` of `program` compiled for `target`, with the heap's uninitialized buffers
/// poisoned.
fn run_on(
    target: &Target,
    program: &tfmc::Program,
    kernel: &str,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
) -> Result<BTreeMap<String, Tensor>, String> {
    // Buffers the plans claim to write before reading come NaN-filled: a plan that reads one
    // first shows as a mismatch.
    tfmc_runtime::heap::set_poison(true);
    tfmc::driver::run(program, kernel, inputs, params, &CompileOptions::default(), target).map(|r| r.outputs).map_err(|e| e.to_string())
}

/// False (after printing a SKIP line) when `backend` needs a CUDA device and there is none.
fn available(target: &Target, test: &str) -> bool {
    if matches!(target, Target::Cuda(_)) && tfmc_runtime::cuda::device_count().unwrap_or(0) == 0 {
        eprintln!("SKIP: no CUDA device ({test})");
        return false;
    }
    true
}

/// fp32 against f64: relative to the output's magnitude.
const TOL: Tol = Tol::rel(2e-4);

/// Dim sizes tried for every kernel (names not listed get the `other` size).
fn dim_sets() -> Vec<BTreeMap<&'static str, usize>> {
    let mk = |v: &[(&'static str, usize)]| v.iter().copied().collect::<BTreeMap<_, _>>();
    vec![
        mk(&[("B", 1), ("H", 1), ("P", 1), ("M", 1), ("T", 1), ("E", 1), ("F", 1), ("D", 1), ("N", 1), ("S1", 2)]),
        mk(&[("B", 1), ("H", 2), ("P", 7), ("M", 7), ("T", 7), ("E", 3), ("F", 5), ("D", 5), ("N", 3), ("S1", 3)]),
        mk(&[("B", 2), ("H", 3), ("P", 13), ("M", 29), ("T", 13), ("E", 8), ("F", 6), ("D", 6), ("N", 4), ("S1", 4)]),
        mk(&[("B", 1), ("H", 2), ("P", 129), ("M", 129), ("T", 129), ("E", 16), ("F", 16), ("D", 16), ("N", 4), ("S1", 5)]),
    ]
}

fn as_f64(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec()
}

/// Compares every output of `got` with `want` (from the interpreter).
fn check(what: &str, got: &BTreeMap<String, Tensor>, want: &BTreeMap<String, Tensor>) {
    for (name, w) in want {
        let g = &got[name];
        assert_eq!(g.shape(), w.shape(), "{what}: {name} shape");
        // A half-precision output is rounded to its format: half an ulp (2^-11, bf16 2^-8)
        // of the magnitude on top of the fp32 tolerance.
        let tol = match g.dtype() {
            tfmc_runtime::DType::F16 => Tol::rel(2e-4 + 4.9e-4),
            tfmc_runtime::DType::BF16 => Tol::rel(2e-4 + 3.9e-3),
            _ => TOL,
        };
        if let Some(m) = compare(&as_f64(g), &as_f64(w), tol) {
            panic!("{what}: output {name}: {m}");
        }
    }
}

/// `t` with every element multiplied by `k`.
fn scaled(t: &Tensor, k: f64) -> Tensor {
    let v: Vec<f64> = t.to_f64_vec().iter().map(|x| x * k).collect();
    Tensor::from_f64(t.dtype(), t.shape().to_vec(), v).unwrap()
}

fn attention_inputs(program: &tfmc::Program, kernel: &str, p: usize, m: usize, seed: u64) -> BTreeMap<String, Tensor> {
    let d: BTreeMap<String, usize> =
        [("B", 1), ("H", 2), ("P", p), ("M", m), ("E", 8), ("F", 5)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
    tfmc::inputs::random_inputs(program, kernel, &d, seed).unwrap()
}

/// The inline `f32` math of the schedule (`exp` without a float → integer conversion, `tanh`
/// through `expm1`, `sigmoid`, `elu`, `erf` and `gelu` through `erfc`) against the f64 interpreter, element by element, at the
/// edges of their ranges: ±0, tiny, the clamps of `exp` (-87.34, -86, 88.72), large, ±inf, NaN.
fn inline_math_at_the_edges(backend: &Target) {
    let program = tfmc::load_str(
        "math.tfm",
        "kernel k(X: f32[N]) -> (E: f32[N], T: f32[N], S: f32[N], L: f32[N], R: f32[N], U: f32[N]) {\n    E[n] = exp(X[n])\n    \
         T[n] = tanh(X[n])\n    S[n] = sigmoid(X[n])\n    L[n] = elu(X[n])\n    R[n] = erf(X[n])\n    U[n] = gelu(X[n])\n}\n",
    )
    .unwrap();
    let mut xs = vec![
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        1e-6,
        -1e-6,
        0.01,
        0.1,
        -0.1,
        0.124,
        0.126,
        0.25,
        0.5,
        0.4999,
        -0.5,
        0.7,
        -0.7072,
        3.0,
        -3.0,
        -7.0,
        -12.0,
        -13.5,
        1.0,
        -1.0,
        2.0,
        8.9,
        9.0,
        9.1,
        -9.5,
        20.0,
        -20.0,
        -80.0,
        -85.9,
        -86.0,
        -86.1,
        -87.0,
        -87.3,
        -87.4,
        -100.0,
        80.0,
        88.0,
        88.7,
        88.72,
        88.73,
        100.0,
        1e30,
        -1e30,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    // A sweep of [-90, 90] that hits every rounding of n = round(x·log2 e).
    xs.extend((0..1801).map(|i| -90.0 + 0.1 * f64::from(i) + 0.0123));
    let n = xs.len();
    let (got, want) = elementwise_on(backend, &program, &xs);
    for name in ["E", "T", "S", "L", "R", "U"] {
        let (g, w) = (got[name].to_f64_vec(), want[name].to_f64_vec());
        for i in 0..n {
            // The f64 result rounded to the f32 output (above f32's range: inf).
            let (g, w) = (g[i], w[i] as f32 as f64);
            // A few f32 ulps relative, or absolute where the result is at the bottom of f32;
            // erf/gelu's tail is two `exp`s and a fit: about 2e-6 relative there.
            let rel = if matches!(name, "R" | "U") { 4e-6 } else { 1e-6 };
            let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= rel * w.abs() + 1e-37;
            assert!(ok, "{}: {name}({}) = {g}, want {w}", backend.name(), xs[i]);
        }
    }
    pow_at_the_edges(backend);
    log_at_the_edges(backend);
}

/// Kernel `k` of `program` on `X = xs` (f32) on `backend` and in the f64 interpreter.
fn elementwise_on(backend: &Target, program: &tfmc::Program, xs: &[f64]) -> (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>) {
    let x = Tensor::from_f64(tfmc_runtime::DType::F32, vec![xs.len()], xs.to_vec()).unwrap();
    let inputs: BTreeMap<String, Tensor> = [("X".to_string(), x)].into();
    let params = BTreeMap::new();
    let want = tfmc::interp::run_exact(program, "k", &inputs, &params).unwrap();
    let got = run_on(backend, program, "k", &inputs, &params).unwrap();
    (got, want)
}

/// The inline `f32` logarithms (`log`, `log2`, `log1p`: bits split into `2^k · m`, Cephes'
/// polynomial) and `softplus` (`max(x, 0) + log1p(e^-|x|)`) against the interpreter at the
/// edges: ±0, subnormals, the smallest normal, the `√½` and `√2` boundaries of the mantissa
/// split, 1 ± 1 ulp, `log1p` of tiny, -1 and below, the largest float, ±inf, NaN; then a sweep
/// of `e^[-100, 88]` and of `[-100, 100]`.
fn log_at_the_edges(backend: &Target) {
    let program = tfmc::load_str(
        "log.tfm",
        "kernel k(X: f32[N]) -> (A: f32[N], B: f32[N], C: f32[N], D: f32[N]) {\n    A[n] = log(X[n])\n    \
         B[n] = log2(X[n])\n    C[n] = log1p(X[n])\n    D[n] = softplus(X[n])\n}\n",
    )
    .unwrap();
    let mut xs = vec![
        0.0,
        -0.0,
        1e-45,
        1e-40,
        1.1754942e-38,
        1.1754944e-38,
        1e-30,
        1e-10,
        -1e-10,
        1e-7,
        -1e-7,
        5.9604645e-8,
        -5.9604645e-8,
        0.5,
        0.70710677,
        f64::from(std::f32::consts::FRAC_1_SQRT_2),
        0.75,
        1.0,
        1.0000001,
        0.99999994,
        f64::from(std::f32::consts::SQRT_2),
        1.4142137,
        2.0,
        3.0,
        10.0,
        1e10,
        1e30,
        3.4028235e38,
        -0.5,
        -0.99999994,
        -1.0,
        -1.5,
        -20.0,
        20.0,
        -87.0,
        88.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    xs.extend((0..1881).map(|i| (-100.0 + 0.1 * f64::from(i) + 0.0123).exp()));
    xs.extend((0..2001).map(|i| -100.0 + 0.1 * f64::from(i) + 0.0077));
    let n = xs.len();
    let (got, want) = elementwise_on(backend, &program, &xs);
    for name in ["A", "B", "C", "D"] {
        let (g, w) = (got[name].to_f64_vec(), want[name].to_f64_vec());
        for i in 0..n {
            let (g, w) = (g[i], w[i] as f32 as f64);
            // softplus far below 0 is `exp`'s: off by at most 1e-37 absolute where it clamps.
            let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-6 * w.abs() + 1e-37;
            assert!(ok, "{}: {name}({}) = {g}, want {w}", backend.name(), xs[i]);
        }
    }
}

/// The inline `f32` `pow` (`2^(b·log2|a|)`, the logarithm in `f64`) against the interpreter's
/// `f64` `powf` on every pair of edge bases and exponents: zeros of both signs, ±1, negative
/// bases to odd, even and non-integer exponents, results that overflow or reach the
/// subnormals, infinities and NaN (IEEE `pow`'s special cases), and a decay `0.9^k` far out.
fn pow_at_the_edges(backend: &Target) {
    let program = tfmc::load_str("pow.tfm", "kernel k(X: f32[N], Y: f32[N]) -> (Z: f32[N]) { Z[n] = pow(X[n], Y[n]) }").unwrap();
    let inf = f64::INFINITY;
    let bases = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 0.9, 0.999, 1e-30, -1e-30, 1e30, 3.7, -3.7, 10.0, inf, -inf, f64::NAN];
    let exps =
        [0.0, -0.0, 1.0, -1.0, 2.0, 3.0, -3.0, 0.5, -0.5, 2.5, 7.0, 100.0, -100.0, 1023.5, 1024.0, 1e10, -1e10, 0.1, inf, -inf, f64::NAN];
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for &a in &bases {
        for &b in &exps {
            xs.push(a);
            ys.push(b);
        }
    }
    for k in 0..600 {
        xs.push(0.9);
        ys.push(f64::from(k));
    }
    let n = xs.len();
    let t = |v: &[f64]| Tensor::from_f64(tfmc_runtime::DType::F32, vec![n], v.to_vec()).unwrap();
    let inputs: BTreeMap<String, Tensor> = [("X".to_string(), t(&xs)), ("Y".to_string(), t(&ys))].into();
    let params = BTreeMap::new();
    let want = tfmc::interp::run_exact(&program, "k", &inputs, &params).unwrap();
    let got = run_on(backend, &program, "k", &inputs, &params).unwrap();
    let (g, w) = (got["Z"].to_f64_vec(), want["Z"].to_f64_vec());
    for i in 0..n {
        let (g, w) = (g[i], w[i] as f32 as f64);
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-6 * w.abs() + 1e-37;
        assert!(ok, "{}: pow({}, {}) = {g}, want {w}", backend.name(), xs[i], ys[i]);
        // The sign of a zero or an infinity too.
        assert!(
            g.is_nan() || w.is_nan() || g.is_sign_negative() == w.is_sign_negative(),
            "{}: pow({}, {}) = {g}, want {w}",
            backend.name(),
            xs[i],
            ys[i]
        );
    }
}

/// Attention on shapes that are multiples of no tile (rows, keys, head sizes): rows and keys
/// of 1, 5, 63, 65, 129, 257, 1000 and `E`, `F` of 1, 17, 80, 128, 256 (the CPU plan's
/// micro-tiles of 6 rows, 256-key blocks of 64-key products and 64-column chunks of `f`, the
/// packed variant from 16 rows), on plain, causal, grouped-query and biased kernels; then
/// ALiBi with eight heads over 600 keys, whose bias (-300 at the far keys of head 0) moves a
/// row's max by far more than `exp`'s range between blocks. The GPU emulation runs the
/// smaller half (it emulates one thread at a time).
fn attention_on_shapes_off_every_tile(backend: &Target) {
    let shapes: &[(usize, usize, usize, usize)] = &[
        (5, 1000, 80, 80),
        (1000, 5, 1, 1),
        (129, 65, 17, 256),
        (63, 129, 128, 17),
        (65, 63, 256, 128),
        (300, 200, 64, 80),
        (40, 257, 16, 64),
    ];
    let shapes = if backend.gpu().is_some() { &shapes[..3] } else { shapes };
    for (file, kernel) in [("sdpa.tfm", "sdpa"), ("causal.tfm", "causal"), ("gqa.tfm", "gqa"), ("alibi.tfm", "alibi")] {
        let program = load_lib(file);
        for (seed, &(p, m, e, f)) in shapes.iter().enumerate() {
            let (_, k) = program.kernel(kernel).expect("the kernel");
            let d: BTreeMap<String, usize> = [("B", 1), ("H", 2), ("G", 1), ("P", p), ("M", m), ("E", e), ("F", f)]
                .iter()
                .filter(|(n, _)| k.dims.iter().any(|dim| dim.name == *n))
                .map(|(n, v)| (n.to_string(), *v))
                .collect();
            let inputs = tfmc::inputs::random_inputs(&program, kernel, &d, 40 + seed as u64).unwrap();
            let params = BTreeMap::new();
            let want = tfmc::interp::run_exact(&program, kernel, &inputs, &params).unwrap();
            let got = run_on(backend, &program, kernel, &inputs, &params).unwrap();
            check(&format!("{} {kernel} P={p} M={m} E={e} F={f}", backend.name()), &got, &want);
        }
    }
    let program = load_lib("alibi.tfm");
    let n = if backend.gpu().is_some() { 200 } else { 600 };
    let d: BTreeMap<String, usize> =
        [("B", 1), ("H", 8), ("P", n), ("M", n), ("E", 8), ("F", 8)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let inputs = tfmc::inputs::random_inputs(&program, "alibi", &d, 47).unwrap();
    let want = tfmc::interp::run_exact(&program, "alibi", &inputs, &BTreeMap::new()).unwrap();
    let got = run_on(backend, &program, "alibi", &inputs, &BTreeMap::new()).unwrap();
    check(&format!("{} alibi H=8 P=M={n}", backend.name()), &got, &want);
}

/// An output with missing points read by a later statement: the reader's points there are
/// missing too (written as 0), not computed from the 0 the output holds.
fn partial_output_read_by_a_later_statement(backend: &Target) {
    let program = tfmc::load_str(
        "partial.tfm",
        "kernel k(X: f32[N]) -> (A: f32[N], B: f32[N]) {\n    A[n] = X[n] where n > 0\n    B[n] = A[n] + 1.0\n}\n",
    )
    .unwrap();
    let d: BTreeMap<String, usize> = [("N".to_string(), 5)].into();
    let inputs = tfmc::inputs::random_inputs(&program, "k", &d, 1).unwrap();
    let params = BTreeMap::new();
    let want = tfmc::interp::run_exact(&program, "k", &inputs, &params).unwrap();
    assert_eq!(want["B"].to_f64_vec()[0], 0.0, "the interpreter's B is missing (0) at n = 0");
    let got = run_on(backend, &program, "k", &inputs, &params).unwrap();
    check("partial output", &got, &want);
}

/// Integer functions inside a user reduction's `combine` (here `abs`, whose compiled form
/// once was negation).
fn integer_functions_in_a_user_combine(backend: &Target) {
    let program = tfmc::load_str(
        "isum.tfm",
        "reduction isum(v: i32) {\n    identity = (0)\n    combine(a, b) {\n        (a.v + b.v + abs(a.v - a.v + 1) - 1)\n    }\n}\n\
         kernel k(X: i32[P, M]) -> (Y: i32[P]) {\n    Y[p] = isum[m](X[p, m])\n}\n",
    )
    .unwrap();
    let d: BTreeMap<String, usize> = [("P".to_string(), 3), ("M".to_string(), 5)].into();
    let inputs = tfmc::inputs::random_inputs(&program, "k", &d, 2).unwrap();
    let params = BTreeMap::new();
    let want = tfmc::interp::run_exact(&program, "k", &inputs, &params).unwrap();
    let got = run_on(backend, &program, "k", &inputs, &params).unwrap();
    assert_eq!(got["Y"].to_f64_vec(), want["Y"].to_f64_vec());
}

/// Logits of ±1e4 (softmax saturates; the online max must keep it finite) on the softmax
/// kernels, and rows with no point (window W = 0: every row fully masked, output 0).
fn large_logits_and_fully_masked_rows(backend: &Target) {
    for (file, kernel) in
        [("sdpa.tfm", "sdpa"), ("causal.tfm", "causal"), ("window.tfm", "window"), ("alibi.tfm", "alibi"), ("softcap.tfm", "softcap")]
    {
        let program = load_lib(file);
        for (p, m) in [(1, 1), (9, 9), (37, 70)] {
            let mut inputs = attention_inputs(&program, kernel, p, m, 3);
            // |q·k| up to ~1e4 · E after scaling both by 1e2 (E = 8: logits ~ ±1e4).
            for name in ["Q", "K"] {
                let t = scaled(&inputs[name], 100.0);
                inputs.insert(name.to_string(), t);
            }
            let params = BTreeMap::new();
            let want = tfmc::interp::run_exact(&program, kernel, &inputs, &params).unwrap();
            let got = run_on(backend, &program, kernel, &inputs, &params).unwrap();
            check(&format!("{kernel} ±1e4 logits p={p} m={m}"), &got, &want);
        }
    }
    let program = load_lib("window.tfm");
    let inputs = attention_inputs(&program, "window", 11, 11, 5);
    let params: BTreeMap<String, tfmc_runtime::Scalar> = [("W".to_string(), tfmc_runtime::Scalar::I(0))].into();
    let got = run_on(backend, &program, "window", &inputs, &params).unwrap();
    assert!(got["O"].to_f64_vec().iter().all(|x| *x == 0.0), "fully masked rows must be 0");
}

/// The variants of issue 18 (`sigmoid.tfm`, `diff.tfm`, `quiet.tfm`, `flow.tfm`, `graph.tfm`,
/// `tokenformer.tfm`, `l2.tfm`, `stick.tfm`)
/// on rows and keys off every tile (1, 19, 37, 37 × 70), with logits of ±1e4 (Q and K scaled by
/// 1e2), and fully masked rows: `sink_window` with W = 0 (every row) and a graph node with no
/// edge. Flow attention runs with E = F = 2 and up to 19 rows only (issue 18: its compiled code is far above the
/// interpreter's order of work today).
fn variants_on_odd_shapes_large_logits_and_masked_rows(backend: &Target) {
    let kernels = [
        ("sigmoid.tfm", "sigmoid_attention"),
        ("sigmoid.tfm", "sigmoid_causal"),
        ("diff.tfm", "diff_attention"),
        ("quiet.tfm", "softmax_one"),
        ("quiet.tfm", "sink_causal"),
        ("quiet.tfm", "sink_window"),
        ("graph.tfm", "graph_attention"),
        ("flow.tfm", "flow_attention"),
        ("l2.tfm", "l2_attention"),
        ("stick.tfm", "stick_breaking"),
    ];
    let params = BTreeMap::new();
    for (file, kernel) in kernels {
        let program = load_lib(file);
        let flow = kernel == "flow_attention";
        let (e, f) = (8, 5);
        let shapes: &[(usize, usize)] = &[(1, 1), (19, 19), (37, 37), (37, 70)];
        for (seed, &(p, m)) in shapes.iter().enumerate() {
            for scale in [1.0f64, 100.0] {
                let d: BTreeMap<String, usize> =
                    [("B", 1), ("H", 2), ("P", p), ("M", m), ("E", e), ("F", f)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
                let mut inputs = tfmc::inputs::random_inputs(&program, kernel, &d, 60 + seed as u64).unwrap();
                let scale = if flow { scale.min(30.0) } else { scale };
                for name in ["Q", "K", "Q1", "Q2", "K1", "K2"] {
                    if let Some(t) = inputs.get(name) {
                        let t = scaled(t, scale);
                        inputs.insert(name.to_string(), t);
                    }
                }
                if let Some(adj) = inputs.get("Adj") {
                    // Node 0 has no neighbour.
                    let a = adj.to_f64_vec().iter().enumerate().map(|(i, &x)| i >= m && x != 0.0).collect();
                    let t = Tensor::new(adj.dtype(), adj.shape().to_vec(), tfmc_runtime::TensorData::B(a)).unwrap();
                    inputs.insert("Adj".to_string(), t);
                }
                let want = tfmc::interp::run_exact(&program, kernel, &inputs, &params).unwrap();
                let got = run_on(backend, &program, kernel, &inputs, &params).unwrap();
                let what = format!("{} {kernel} P={p} M={m} x{scale}", backend.name());
                let max_apart = matches!(kernel, "softmax_one" | "sink_causal" | "sink_window");
                if (matches!(kernel, "diff_attention" | "l2_attention" | "stick_breaking") || max_apart) && scale > 1.0 {
                    // Logits of 1e4 carry f32 rounding of ~1e-3 (absolute), which moves the
                    // near-maximal weights: for the difference of two saturated softmaxes, for
                    // L2's distances (logits of ~3e4 summed in f32), for stick-breaking's
                    // log-weights (sums of softplus of such logits), and for a normaliser with
                    // a sink term, whose row max is a tensor of its own (its logits rounded
                    // apart from the ones the weights use).
                    let (g, w) = (got["O"].to_f64_vec(), want["O"].to_f64_vec());
                    if let Some(m) = compare(&g, &w, Tol::rel(2e-3)) {
                        panic!("{what}: output O: {m}");
                    }
                } else {
                    check(&what, &got, &want);
                }
                if kernel == "graph_attention" {
                    assert!(got["O"].to_f64_vec()[..f].iter().all(|x| *x == 0.0), "a node with no edge must give 0");
                }
            }
        }
    }
    // Distances as users spell them (tests/ok/distance_attention.tfm), on the packed tile.
    let program = tfmc::load(&repo_root().join("tests/ok/distance_attention.tfm")).unwrap_or_else(|d| panic!("{}", d.render()));
    for kernel in ["rbf_attention", "causal_l2", "gauss_smoother", "sigmoid_distance_causal"] {
        for (seed, (p, m)) in [(19, 19), (37, 70)].into_iter().enumerate() {
            for scale in [1.0, 100.0] {
                let d: BTreeMap<String, usize> =
                    [("B", 1), ("H", 2), ("P", p), ("M", m), ("E", 8), ("F", 5)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
                let mut inputs = tfmc::inputs::random_inputs(&program, kernel, &d, 90 + seed as u64).unwrap();
                for name in ["Q", "K"] {
                    let t = scaled(&inputs[name], scale);
                    inputs.insert(name.to_string(), t);
                }
                let want = tfmc::interp::run_exact(&program, kernel, &inputs, &params).unwrap();
                let got = run_on(backend, &program, kernel, &inputs, &params).unwrap();
                check(&format!("{} {kernel} P={p} M={m} x{scale}", backend.name()), &got, &want);
            }
        }
    }
    // Pattention (tokenformer.tfm): T tokens against N parameter tokens.
    let program = load_lib("tokenformer.tfm");
    for (seed, (t, n)) in [(1, 1), (19, 19), (37, 70), (70, 37)].into_iter().enumerate() {
        for scale in [1.0, 100.0] {
            let d: BTreeMap<String, usize> =
                [("B", 2), ("T", t), ("D", 8), ("N", n), ("F", 5)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
            let mut inputs = tfmc::inputs::random_inputs(&program, "pattention", &d, 80 + seed as u64).unwrap();
            let x = scaled(&inputs["X"], scale);
            inputs.insert("X".to_string(), x);
            let want = tfmc::interp::run_exact(&program, "pattention", &inputs, &params).unwrap();
            let got = run_on(backend, &program, "pattention", &inputs, &params).unwrap();
            check(&format!("{} pattention T={t} N={n} x{scale}", backend.name()), &got, &want);
        }
    }
    let program = load_lib("quiet.tfm");
    let inputs = attention_inputs(&program, "sink_window", 11, 11, 5);
    let params: BTreeMap<String, tfmc_runtime::Scalar> = [("W".to_string(), tfmc_runtime::Scalar::I(0))].into();
    let got = run_on(backend, &program, "sink_window", &inputs, &params).unwrap();
    assert!(got["O"].to_f64_vec().iter().all(|x| *x == 0.0), "sink_window W=0: fully masked rows must be 0");
}

/// `paged_decode` (`lib/paged.tfm`): K/V gathered through block tables with −1 past each
/// sequence (never read), lengths 0, 1, partial and full pages, GQA, logits up to ±1e4.
fn paged_decode_on_shapes_and_large_logits(backend: &Target) {
    let program = load_lib("paged.tfm");
    let params = BTreeMap::new();
    // Groups of 2 (packed values never: fewer rows than a tile product), 8 (tile products
    // over packed values), 17 (above GROUP_MAX: one row per tile), 1 (MHA) and 3.
    let cases: [([usize; 6], &[usize]); 7] = [
        ([1, 1, 1, 1, 1, 1], &[1]),
        ([2, 1, 3, 5, 4, 3], &[5, 0, 12, 1]),
        ([4, 2, 8, 6, 16, 5], &[80, 33, 17]),
        ([8, 8, 64, 64, 16, 20], &[300, 257]),
        ([16, 2, 32, 24, 16, 6], &[90, 5]),
        ([34, 2, 8, 8, 4, 4], &[13, 16]),
        ([6, 2, 8, 5, 4, 4], &[11, 3]),
    ];
    for (i, (sizes, lens)) in cases.into_iter().enumerate() {
        for scale in [1.0, 100.0] {
            let mut rng: rand::rngs::StdRng = rand::SeedableRng::seed_from_u64(70 + i as u64);
            let case = tfmc_conformance::paged::paged_case(&mut rng, sizes, lens, scale);
            let inputs = case.inputs().0;
            let want = tfmc::interp::run_exact(&program, "paged_decode", &inputs, &params).unwrap();
            let got = run_on(backend, &program, "paged_decode", &inputs, &params).unwrap();
            check(&format!("{} paged_decode {sizes:?} lens {lens:?} x{scale}", backend.name()), &got, &want);
        }
    }
}

/// Every lib file built as a shared library (AOT), opened with the runtime, every kernel run
/// and compared with the interpreter.
#[test]
fn lib_kernels_as_aot_artifacts_match_the_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    let opts = CompileOptions::default();
    let mut checked = 0;
    for path in tfm_files(&repo_root().join("lib")) {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let program = load_lib(&file);
        let out = dir.path().join(format!("lib{}.so", file.trim_end_matches(".tfm")));
        tfmc::driver::build(&program, &out, &opts, &Target::host_llvm()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(out.with_extension("h").exists());
        let art = tfmc_runtime::Artifact::open(&out).unwrap_or_else(|e| panic!("{file}: {e}"));
        for k in &program.kernels {
            let dims = &dim_sets()[1];
            let d: BTreeMap<String, usize> =
                k.free_dims().map(|x| (x.name.clone(), dims.get(x.name.as_str()).copied().unwrap_or(3))).collect();
            let inputs = tfmc::inputs::random_inputs(&program, &k.name, &d, 11).unwrap();
            let params = BTreeMap::new();
            let want = tfmc::interp::run_exact(&program, &k.name, &inputs, &params);
            let got = art.kernel(&k.name).unwrap().run(&inputs, &params);
            match (want, got) {
                (Ok(w), Ok(g)) => {
                    check(&format!("AOT {file}/{}", k.name), &g, &w);
                    checked += 1;
                }
                (Err(_), Err(_)) => {}
                (w, g) => panic!("AOT {file}/{}: interpreter {:?} vs artifact {:?}", k.name, w.err(), g.err()),
            }
        }
    }
    assert!(checked >= 15, "only {checked} kernels compared");
}

/// Runs `kernel` on `backend` and the interpreter with the same inputs (one seeded set per
/// dim set) and compares; returns how many runs were compared (both failing counts as agreeing).
fn compare_kernel(
    backend: &Target,
    what: &str,
    program: &tfmc::Program,
    kernel: &tfmc::hir::Kernel,
    sets: &[BTreeMap<&'static str, usize>],
) -> usize {
    let mut checked = 0;
    for (i, dims) in sets.iter().enumerate() {
        let d: BTreeMap<String, usize> =
            kernel.free_dims().map(|dim| (dim.name.clone(), dims.get(dim.name.as_str()).copied().unwrap_or(3))).collect();
        let inputs = tfmc::inputs::random_inputs(program, &kernel.name, &d, 7 + i as u64).unwrap();
        let params = BTreeMap::new();
        let want = tfmc::interp::run_exact(program, &kernel.name, &inputs, &params);
        let got = run_on(backend, program, &kernel.name, &inputs, &params);
        let at = format!("{} {what}/{} dims {d:?}", backend.name(), kernel.name);
        match (want, got) {
            (Ok(want), Ok(got)) => {
                check(&at, &got, &want);
                checked += 1;
            }
            (Err(_), Err(_)) => {}
            (Ok(_), Err(e)) => panic!("{at}: the backend fails: {e}"),
            (Err(e), Ok(_)) => panic!("{at}: the interpreter fails ({e}) but the backend does not"),
        }
    }
    checked
}

fn lib_kernels_match_the_interpreter(backend: &Target, sets: &[BTreeMap<&'static str, usize>]) {
    let mut checked = 0;
    for path in tfm_files(&repo_root().join("lib")) {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let program = load_lib(&file);
        for k in &program.kernels {
            checked += compare_kernel(backend, &file, &program, k, sets);
        }
    }
    eprintln!("{checked} kernel runs compared");
    assert!(checked >= 25 * sets.len(), "only {checked} runs compared");
}

/// The golden programs of `tests/ok` (every language feature the checker accepts there:
/// casts, masks, scans, index arithmetic, calls, rank 0, `use`).
fn golden_programs_match_the_interpreter(backend: &Target) {
    let mut checked = 0;
    for path in tfm_files(&repo_root().join("tests/ok")) {
        let program = tfmc::load(&path).unwrap_or_else(|d| panic!("{}", d.render()));
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        for k in &program.kernels {
            checked += compare_kernel(backend, &file, &program, k, &dim_sets()[..3]);
        }
    }
    eprintln!("{checked} golden runs compared");
    assert!(checked >= 20, "only {checked} runs compared");
}

/// The suite, instantiated for one backend.
macro_rules! suite {
    ($name:ident, $backend:expr, $sets:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn lib_kernels_match_the_interpreter() {
                if available(&$backend, "lib kernels") {
                    super::lib_kernels_match_the_interpreter(&$backend, $sets);
                }
            }

            #[test]
            fn golden_programs_match_the_interpreter() {
                if available(&$backend, "golden programs") {
                    super::golden_programs_match_the_interpreter(&$backend);
                }
            }

            #[test]
            fn large_logits_and_fully_masked_rows() {
                if available(&$backend, "large logits") {
                    super::large_logits_and_fully_masked_rows(&$backend);
                }
            }

            #[test]
            fn partial_output_read_by_a_later_statement() {
                if available(&$backend, "partial output") {
                    super::partial_output_read_by_a_later_statement(&$backend);
                }
            }

            #[test]
            fn integer_functions_in_a_user_combine() {
                if available(&$backend, "user combine") {
                    super::integer_functions_in_a_user_combine(&$backend);
                }
            }

            #[test]
            fn attention_on_shapes_off_every_tile() {
                if available(&$backend, "attention shapes") {
                    super::attention_on_shapes_off_every_tile(&$backend);
                }
            }

            #[test]
            fn variants_on_odd_shapes_large_logits_and_masked_rows() {
                if available(&$backend, "variants") {
                    super::variants_on_odd_shapes_large_logits_and_masked_rows(&$backend);
                }
            }

            #[test]
            fn paged_decode_on_shapes_and_large_logits() {
                if available(&$backend, "paged decode") {
                    super::paged_decode_on_shapes_and_large_logits(&$backend);
                }
            }

            #[test]
            fn inline_math_at_the_edges() {
                if available(&$backend, "inline math") {
                    super::inline_math_at_the_edges(&$backend);
                }
            }
        }
    };
}

suite!(llvm, Target::host_llvm(), &dim_sets());
suite!(cranelift, Target::cranelift(), &dim_sets());
// The emulation runs one GPU thread at a time: the three smaller shape sets.
suite!(gpu_emulation, Target::gpu_emu(), &dim_sets()[..3]);
suite!(cuda, Target::cuda(tfmc::driver::DEFAULT_SM), &dim_sets());
