//! The IR interpreter against the HIR interpreter: every kernel of `lib/` lowered and run on
//! random inputs at several shapes (size 1, odd sizes, the optimizer's test shape), small
//! programs for the corners (absence, integer semantics, overflow, scans, user reductions,
//! errors), and the fused `osm` node against the naive softmax·V cascade.

use std::collections::BTreeMap;

use egg::RecExpr;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tfmc_runtime::{DType, Scalar, Tensor, TensorData};

use super::run_cascade;
use crate::interp::{run, run_exact};
use crate::ir::lang::Tfm;
use crate::ir::{Cascade, Def, lower::lower, verify::verify};
use crate::semantics::RunError;
use crate::testing::lib_programs;

/// Asserts `got` has the outputs of `want`, elementwise within `rel` of the larger of the
/// element's magnitude and 1 (NaN equals NaN); returns the largest relative difference.
fn assert_same(what: &str, got: &BTreeMap<String, Tensor>, want: &BTreeMap<String, Tensor>, rel: f64) -> f64 {
    let names = |m: &BTreeMap<String, Tensor>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{what}: output names");
    let mut worst = 0.0f64;
    for (name, w) in want {
        let g = &got[name];
        assert_eq!((g.dtype(), g.shape()), (w.dtype(), w.shape()), "{what}: output {name}");
        for (i, (a, b)) in g.to_f64_vec().into_iter().zip(w.to_f64_vec()).enumerate() {
            if a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) {
                continue;
            }
            let d = (a - b).abs() / b.abs().max(1.0);
            worst = worst.max(d);
            assert!(d <= rel, "{what}: {name}[{i}] is {a}, the HIR interpreter gives {b}");
        }
    }
    worst
}

/// Asserts two runs failed the same way (same variant; the location may differ).
fn assert_same_error(what: &str, got: &RunError, want: &RunError) {
    let strip = |e: &RunError| match e {
        RunError::OutOfRange { tensor, axis, value, size, .. } => format!("oob {tensor} {axis} {value} {size}"),
        RunError::Overflow { what, .. } => format!("overflow {what}"),
        other => format!("{:?}", std::mem::discriminant(other)),
    };
    assert_eq!(strip(got), strip(want), "{what}: got `{got}`, the HIR interpreter says `{want}`");
}

/// Runs `kernel` both ways and compares: the largest relative difference when both succeed,
/// the (same) error when both fail.
fn compare(
    what: &str,
    program: &crate::Program,
    kernel: &str,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
) -> Result<f64, RunError> {
    let c = lower(program, kernel).unwrap_or_else(|e| panic!("{what}: {e}"));
    verify(&c).unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = run_exact(program, kernel, inputs, params);
    let got = run_cascade(&c, program, inputs, params, true);
    match (got, want) {
        (Ok(g), Ok(w)) => Ok(assert_same(what, &g, &w, 1e-12)),
        (Err(g), Err(w)) => {
            assert_same_error(what, &g, &w);
            Err(g)
        }
        (g, w) => panic!("{what}: IR gives {g:?}, the HIR interpreter {w:?}"),
    }
}

/// Sizes for the symbolic dims of the lib kernels, and cu_seqlens offsets for `varlen`.
struct Shape {
    dims: &'static [(&'static str, usize)],
    offsets: &'static [i64],
}

const SHAPES: [Shape; 3] = [
    Shape {
        dims: &[
            ("B", 1),
            ("H", 1),
            ("G", 1),
            ("P", 1),
            ("M", 1),
            ("E", 1),
            ("F", 1),
            ("T", 1),
            ("D", 1),
            ("N", 1),
            ("S1", 2),
            ("NB", 1),
            ("PS", 1),
            ("MP", 1),
        ],
        offsets: &[0, 1],
    },
    Shape {
        dims: &[
            ("B", 1),
            ("H", 3),
            ("G", 3),
            ("P", 5),
            ("M", 7),
            ("E", 3),
            ("F", 5),
            ("T", 7),
            ("D", 5),
            ("N", 3),
            ("S1", 4),
            ("NB", 5),
            ("PS", 3),
            ("MP", 2),
        ],
        offsets: &[0, 3, 3, 7],
    },
    Shape {
        dims: &[
            ("B", 2),
            ("H", 2),
            ("G", 1),
            ("P", 13),
            ("M", 13),
            ("E", 5),
            ("F", 5),
            ("T", 13),
            ("D", 5),
            ("N", 3),
            ("S1", 5),
            ("NB", 6),
            ("PS", 4),
            ("MP", 3),
        ],
        offsets: &[0, 4, 4, 9, 13],
    },
];

/// Random inputs for `kernel` at `shape` (valid offsets for `Off`).
fn inputs_for(program: &crate::Program, kernel: &str, shape: &Shape, seed: u64) -> BTreeMap<String, Tensor> {
    let (_, k) = program.kernel(kernel).expect("kernel");
    let dims: BTreeMap<String, usize> =
        shape.dims.iter().filter(|(n, _)| k.dims.iter().any(|d| d.name == *n)).map(|(n, s)| (n.to_string(), *s)).collect();
    let mut inputs = crate::inputs::random_inputs(program, kernel, &dims, seed).unwrap_or_else(|e| panic!("{kernel}: {e}"));
    crate::testing::valid_block_table(&mut inputs);
    if kernel == "varlen_causal" {
        let off = Tensor::new(DType::I32, vec![shape.offsets.len()], TensorData::I(shape.offsets.to_vec())).expect("offsets");
        inputs.insert("Off".to_string(), off);
    }
    inputs
}

/// The defaults, and for `window` a window smaller than the sequence and the empty window.
fn param_sets(program: &crate::Program) -> Vec<BTreeMap<String, Scalar>> {
    let mut sets = vec![BTreeMap::new()];
    if program.param("W").is_some() {
        sets.push(BTreeMap::from([("W".to_string(), Scalar::I(3))]));
        sets.push(BTreeMap::from([("W".to_string(), Scalar::I(0))]));
    }
    sets
}

#[test]
fn every_lib_kernel_matches_the_hir_interpreter() {
    let (mut runs, mut worst) = (0, 0.0f64);
    for (file, program) in lib_programs() {
        for k in &program.kernels {
            for (s, shape) in SHAPES.iter().enumerate() {
                let inputs = inputs_for(&program, &k.name, shape, 17 + s as u64);
                for params in &param_sets(&program) {
                    let what = format!("{file}: {} at shape {s} with {params:?}", k.name);
                    worst = worst.max(compare(&what, &program, &k.name, &inputs, params).unwrap_or_else(|e| panic!("{what}: {e}")));
                    runs += 1;
                }
            }
        }
    }
    assert!(runs >= 18 * SHAPES.len(), "expected the whole standard library, ran {runs}");
    assert!(worst <= 1e-12, "largest relative difference {worst}");
}

/// End to end: the optimizer's output (fused, `osm`, bounds from filters) on the same inputs.
#[test]
fn every_optimized_lib_kernel_matches_the_hir_interpreter() {
    let mut runs = 0;
    for (file, program) in lib_programs() {
        for k in &program.kernels {
            let c = lower(&program, &k.name).expect("lowers");
            let (opt, _) =
                crate::optimize::optimize(&c, &crate::optimize::Options::default()).unwrap_or_else(|e| panic!("{file}: {}: {e}", k.name));
            for (s, shape) in SHAPES.iter().enumerate() {
                let inputs = inputs_for(&program, &k.name, shape, 29 + s as u64);
                for params in &param_sets(&program) {
                    let what = format!("{file}: optimized {} at shape {s} with {params:?}", k.name);
                    let want = run_exact(&program, &k.name, &inputs, params).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let got = run_cascade(&opt, &program, &inputs, params, true).unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_same(&what, &got, &want, 1e-12);
                    runs += 1;
                }
            }
        }
    }
    assert!(runs >= 18 * SHAPES.len(), "expected the whole standard library, ran {runs}");
}

#[test]
fn rounded_outputs_match_interp_run() {
    for (file, program) in lib_programs() {
        for k in &program.kernels {
            let inputs = inputs_for(&program, &k.name, &SHAPES[1], 5);
            let c = lower(&program, &k.name).expect("lowers");
            let got = run_cascade(&c, &program, &inputs, &BTreeMap::new(), false).expect("runs");
            let want = run(&program, &k.name, &inputs, &BTreeMap::new()).expect("runs");
            // Rounded to f32, the two may differ only where f64 values straddle a rounding edge.
            assert_same(&format!("{file}: {}", k.name), &got, &want, 1e-6);
        }
    }
}

fn load(src: &str) -> crate::Program {
    crate::load_str("t.tfm", src).unwrap_or_else(|d| panic!("does not check:\n{d}"))
}

fn tensor(dtype: DType, shape: &[usize], data: TensorData) -> Tensor {
    Tensor::new(dtype, shape.to_vec(), data).expect("tensor")
}

fn named(inputs: Vec<(&str, Tensor)>) -> BTreeMap<String, Tensor> {
    inputs.into_iter().map(|(n, t)| (n.to_string(), t)).collect()
}

#[test]
fn absence_filters_and_integer_semantics_match() {
    let p = load(
        "kernel k(S: f32[P, M], X: i64[P], Y: i32[P]) -> (O: f32[P, M], G: f32[P], D: f32[P], Q: i64[P], R: i64[P], Z: f32[P], C: i32[P], Mn: i32[P])
            where m <= p
        {
            T[p, m] = S[p, m] where m > 0
            G[p]    = max[m](T[p, m])
            O[p, m] = exp(T[p, m] - G[p])
            D[p]    = sum[m](O[p, m]) / sum[m where m > p](O[p, m])
            Q[p]    = X[p] / (X[p] - 2) where X[p] != 2
            R[p]    = (0 - X[p]) % 3 + i64(f32(X[p]) % -2.5)
            Z[p]    = if p > 0 && T[p, p - 1] > 0.0 then T[p, p - 1] else f32(p) / 0.0
            C[p]    = i32(f32(Y[p]) * 1.5) + Y[p] / 2
            Mn[p]   = min[q where q < p](Y[q])
            index q: P
        }",
    );
    let s = tensor(DType::F32, &[4, 4], TensorData::F((0..16).map(|i| (i as f64 * 0.37).sin()).collect()));
    let x = tensor(DType::I64, &[4], TensorData::I(vec![-7, 2, 5, 0]));
    let y = tensor(DType::I32, &[4], TensorData::I(vec![-3, 7, i64::from(i32::MAX / 2), 1]));
    let worst = compare("small", &p, "k", &named(vec![("S", s), ("X", x), ("Y", y)]), &BTreeMap::new());
    assert_eq!(worst.expect("runs"), 0.0);
}

#[test]
fn overflow_and_out_of_range_errors_match() {
    let p = load(
        "kernel ovf(Y: i32[P]) -> (O: i32[P]) { O[p] = Y[p] * Y[p] }
         kernel oob(X: f32[P]) -> (O: f32[P]) { O[p] = X[p + 1] }
         kernel div(X: i64[P]) -> (O: i64[P]) { O[p] = 1 / X[p] }",
    );
    let y = tensor(DType::I32, &[2], TensorData::I(vec![3, 70000]));
    let e = compare("i32 overflow", &p, "ovf", &named(vec![("Y", y)]), &BTreeMap::new()).expect_err("i32 overflow");
    assert!(e.to_string().contains("IR node 'O' of cascade"), "{e}");
    let x = tensor(DType::F32, &[3], TensorData::F(vec![1.0, 2.0, 3.0]));
    let e = compare("out of range", &p, "oob", &named(vec![("X", x)]), &BTreeMap::new()).expect_err("out of range");
    assert!(e.to_string().contains("IR node 'O' of cascade"), "{e}");
    let x = tensor(DType::I64, &[2], TensorData::I(vec![1, 0]));
    let e = compare("division by zero", &p, "div", &named(vec![("X", x)]), &BTreeMap::new()).expect_err("division by zero");
    assert!(e.to_string().contains("IR node 'O' of cascade"), "{e}");
}

#[test]
fn scans_and_user_reductions_match() {
    let p = load(
        "/// (running max, sum of exp)
        reduction lse(mx: f32, l: f32) {
            identity = (-inf, 0.0)
            combine(a, b) {
                let m = max(a.mx, b.mx)
                (m, a.l * exp(a.mx - m) + b.l * exp(b.mx - m))
            }
        }
        reduction amax(v: f32) {
            identity = (-inf)
            combine(a, b) { (max(a.v, b.v)) }
        }
        kernel k(S: f32[P, M], X: f32[P, T]) -> (G: f32[P], L: f32[P], A: f32[P], C: f32[P, T], F: f32[P, T]) {
            G[p], L[p] = lse[m where m != p](S[p, m], 1.0)
            A[p]       = amax[m where m > p](S[p, m]) + 1.0
            C[p, t]    = scan[t, init = f32(p)](C[p, t - 1] * 0.5 + X[p, t])
            Hf[p, t]   = X[p, t] where t % 2 == 0
            F[p, t]    = scan[t, init = 1.0](F[p, t - 2] + Hf[p, t])
        }",
    );
    let mut rng = StdRng::seed_from_u64(3);
    let mut f = |n: usize| TensorData::F((0..n).map(|_| rng.random_range(-2.0..2.0)).collect());
    let inputs = named(vec![("S", tensor(DType::F32, &[3, 3], f(9))), ("X", tensor(DType::F32, &[3, 6], f(18)))]);
    compare("scans and user reductions", &p, "k", &inputs, &BTreeMap::new()).expect("runs");
}

/// The naive masked softmax·V cascade; `O` is replaced by an `osm` node in the tests.
const NAIVE: &str = "kernel attn(S: f32[P, M], V: f32[M, F], Mk: bool[P, M]) -> (O: f32[P, F]) {
    G[p]    = max[m where Mk[p, m]](S[p, m])
    N[p, m] = exp(S[p, m] - G[p]) where Mk[p, m]
    D[p]    = sum[m](N[p, m])
    O[p, f] = sum[m](N[p, m] * V[m, f]) / D[p]
}";

/// The naive cascade with `O` defined by the s-expression `osm`.
fn with_output(program: &crate::Program, osm: &str) -> Cascade {
    let mut c = lower(program, "attn").expect("lowers");
    let e: RecExpr<Tfm> = osm.parse().expect("s-expression");
    let ix = c.graph.node_indices().find(|&i| c.graph[i].name == "O").expect("O");
    c.graph[ix].def = Def::Expr(e);
    c.relink();
    verify(&c).expect("verifies");
    c
}

const OSM: &str = "(osm m 0 (dim M) (read Mk (idx p) (idx m)) (read S (idx p) (idx m)) (read V (idx m) (idx f)))";

/// Runs the `osm` cascade and the naive kernel (HIR) on the same data.
fn osm_vs_naive(s: Vec<f64>, mask: Vec<bool>, (p, m, f): (usize, usize, usize)) -> (Vec<f64>, Vec<f64>) {
    let program = load(NAIVE);
    let mut rng = StdRng::seed_from_u64(11);
    let v: Vec<f64> = (0..m * f).map(|_| rng.random_range(-1.0..1.0)).collect();
    let inputs = named(vec![
        ("S", tensor(DType::F32, &[p, m], TensorData::F(s))),
        ("V", tensor(DType::F32, &[m, f], TensorData::F(v))),
        ("Mk", tensor(DType::Bool, &[p, m], TensorData::B(mask))),
    ]);
    let none = BTreeMap::new();
    let got = run_cascade(&with_output(&program, OSM), &program, &inputs, &none, true).expect("osm runs");
    let want = run_exact(&program, "attn", &inputs, &none).expect("naive runs");
    (got["O"].to_f64_vec(), want["O"].to_f64_vec())
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "element {i}: osm {a}, naive {b}\nosm:   {got:?}\nnaive: {want:?}");
    }
}

fn logits(n: usize, scale: f64, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| scale * rng.random_range(-1.0..1.0)).collect()
}

#[test]
fn osm_equals_the_naive_cascade_on_random_data() {
    for (seed, (p, m, f)) in [(1, (1, 1, 1)), (2, (5, 7, 3)), (3, (13, 13, 5))] {
        let (got, want) = osm_vs_naive(logits(p * m, 3.0, seed), vec![true; p * m], (p, m, f));
        assert_close(&got, &want);
    }
}

#[test]
fn osm_is_stable_on_large_logits() {
    let (p, m, f) = (4, 9, 3);
    let (got, want) = osm_vs_naive(logits(p * m, 1e4, 4), vec![true; p * m], (p, m, f));
    assert!(got.iter().all(|x| x.is_finite()), "{got:?}");
    assert_close(&got, &want);
}

#[test]
fn osm_of_a_fully_filtered_row_is_zero() {
    let (p, m, f) = (4, 6, 3);
    let mut rng = StdRng::seed_from_u64(5);
    let mut mask: Vec<bool> = (0..p * m).map(|_| rng.random_bool(0.5)).collect();
    mask[..m].iter_mut().for_each(|x| *x = false); // row 0: no key
    mask[2 * m..3 * m].iter_mut().enumerate().for_each(|(j, x)| *x = j == 4); // row 2: one key
    let (got, want) = osm_vs_naive(logits(p * m, 2.0, 6), mask, (p, m, f));
    assert_eq!(&got[..f], &[0.0; 3]);
    assert_close(&got, &want);
}

#[test]
fn osm_with_minus_infinity_logits() {
    let (p, m, f) = (3, 5, 2);
    let mut s = logits(p * m, 2.0, 7);
    let ninf = f64::NEG_INFINITY;
    // Row 0: -inf first, then finite; row 1: some -inf among finite ones.
    s[0] = ninf;
    s[m + 1] = ninf;
    s[m + 4] = ninf;
    let (got, want) = osm_vs_naive(s.clone(), vec![true; p * m], (p, m, f));
    assert_close(&got, &want);
    // Row 2: every logit -inf. The naive cascade computes exp(-inf - -inf) = NaN there, and
    // `osm` reproduces it (it is an exact rewrite); a row with no point at all is 0 in both.
    s[2 * m..].iter_mut().for_each(|x| *x = ninf);
    let (got, want) = osm_vs_naive(s, vec![true; p * m], (p, m, f));
    assert_close(&got[..2 * f], &want[..2 * f]);
    assert!(got[2 * f..].iter().all(|x| x.is_nan()), "osm: {got:?}");
    assert!(want[2 * f..].iter().all(|x| x.is_nan()), "naive: {want:?}");
}

#[test]
fn reduction_bounds_restrict_and_are_checked() {
    let program = load(NAIVE);
    let mut rng = StdRng::seed_from_u64(8);
    let (p, m, f) = (3, 5, 2);
    let mut g = |n: usize| TensorData::F((0..n).map(|_| rng.random_range(-1.0..1.0)).collect());
    let inputs = named(vec![
        ("S", tensor(DType::F32, &[p, m], g(p * m))),
        ("V", tensor(DType::F32, &[m, f], g(m * f))),
        ("Mk", tensor(DType::Bool, &[p, m], TensorData::B((0..p * m).map(|i| i % m >= 1 && i % m <= i / m + 1).collect()))),
    ]);
    let none = BTreeMap::new();
    // Bounds 1..p+2 with no filter equal the mask 1 <= m <= p + 1 (m = 5 never occurs, p < 3).
    let bounded = "(osm m 1 (+ (idx p) 2) true (read S (idx p) (idx m)) (read V (idx m) (idx f)))";
    let got = run_cascade(&with_output(&program, bounded), &program, &inputs, &none, true).expect("runs");
    let want = run_exact(&program, "attn", &inputs, &none).expect("runs");
    assert_close(&got["O"].to_f64_vec(), &want["O"].to_f64_vec());
    // A bound past the index's range is an error, not a silent clamp.
    let past = "(sum m 0 (+ (dim M) 1) true (read V (idx m) (idx f)))";
    let err = run_cascade(&with_output(&program, past), &program, &inputs, &none, true).expect_err("out of range");
    assert!(err.to_string().contains("outside 0..5"), "{err}");
}

#[test]
fn shadowed_index_is_restored() {
    // An inner reduction over `m` inside an outer one over `m`: the inner binds its own `m`
    // and the outer value is visible again afterwards.
    let program = load(NAIVE);
    let inputs = named(vec![
        ("S", tensor(DType::F32, &[1, 3], TensorData::F(vec![1.0, 2.0, 3.0]))),
        ("V", tensor(DType::F32, &[3, 1], TensorData::F(vec![10.0, 20.0, 30.0]))),
        ("Mk", tensor(DType::Bool, &[1, 3], TensorData::B(vec![true; 3]))),
    ]);
    // Σ_m (Σ_m S[p, m]) * V[m, f] = 6 * 60
    let e = "(sum m 0 (dim M) true (* (sum m 0 (dim M) true (read S (idx p) (idx m))) (read V (idx m) (idx f))))";
    let got = run_cascade(&with_output(&program, e), &program, &inputs, &BTreeMap::new(), true).expect("runs");
    assert_eq!(got["O"].to_f64_vec(), vec![360.0]);
}
