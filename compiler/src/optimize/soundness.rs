//! Soundness: every rewrite is checked end to end by interpreting the cascade before and
//! after optimization (`ir::eval`) and comparing with the HIR oracle (`interp::run_exact`) on
//! random inputs — several shapes (size 1, odd sizes), logits around ±1e4, fully masked rows —
//! with magnitude-scaled tolerances (f64 math; the rewrites reassociate sums).

use super::{Options, optimize};
use crate::inputs::random_inputs;
use crate::ir::eval::run_cascade;
use crate::ir::lower::lower;
use crate::testing::{lib, lib_programs};
use std::collections::BTreeMap;
use tfmc_runtime::{DType, Scalar, Tensor, TensorData};

/// Relative difference scaled by the larger magnitude of the expected tensor (at least 1e-300).
fn assert_close(what: &str, got: &Tensor, want: &Tensor, rtol: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let scale = w.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-300);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = (a - b).abs() <= rtol * scale.max(b.abs()) || (a.is_nan() && b.is_nan());
        assert!(ok, "{what}: element {i}: optimized {a} vs oracle {b} (scale {scale})");
    }
}

/// Inputs for `kernel` with every dim set by `size(dim)`; `Off` (cu_seqlens) made valid.
fn inputs_for(program: &crate::Program, kernel: &str, size: impl Fn(&str) -> usize, seed: u64) -> BTreeMap<String, Tensor> {
    let (_, k) = program.kernel(kernel).expect("kernel exists");
    let dims: BTreeMap<String, usize> = k.free_dims().map(|d| (d.name.clone(), size(&d.name))).collect();
    let mut inputs = random_inputs(program, kernel, &dims, seed).expect("random inputs");
    crate::testing::valid_block_table(&mut inputs);
    if let Some(off) = inputs.get("Off") {
        let n = off.len();
        let total = dims.get("T").copied().unwrap_or(0) as i64;
        // Sequences of lengths 1, 0, then the rest spread evenly; last offset is T.
        let mut v: Vec<i64> = (0..n as i64).map(|i| (i * total) / (n as i64 - 1).max(1)).collect();
        if let Some(last) = v.last_mut() {
            *last = total;
        }
        inputs.insert("Off".into(), Tensor::new(DType::I32, vec![n], TensorData::I(v)).expect("offsets"));
    }
    inputs
}

fn check(
    program: &crate::Program,
    kernel: &str,
    opts: &Options,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
    what: &str,
) {
    let oracle = crate::interp::run_exact(program, kernel, inputs, params).unwrap_or_else(|e| panic!("{what}: oracle: {e}"));
    let before = lower(program, kernel).expect("lowers");
    let (after, _) = optimize(&before, opts).expect("optimizes");
    let got_before = run_cascade(&before, program, inputs, params, true).unwrap_or_else(|e| panic!("{what}: unoptimized: {e}"));
    let got_after = run_cascade(&after, program, inputs, params, true).unwrap_or_else(|e| panic!("{what}: optimized: {e}"));
    for (name, want) in &oracle {
        assert_close(&format!("{what} {name} (unoptimized IR)"), &got_before[name], want, 1e-12);
        assert_close(&format!("{what} {name} (optimized)"), &got_after[name], want, 1e-9);
    }
}

/// Every kernel of every lib file, on three shapes: all ones, odd sizes, and a larger one.
#[test]
fn optimized_equals_unoptimized_on_every_lib_kernel() {
    let shapes: [&dyn Fn(&str) -> usize; 3] = [
        &|_| 1,
        &|d| match d {
            "P" | "M" | "T" => 7,
            "S1" => 4,
            "H" => 4,
            "G" => 2,
            _ => 3,
        },
        &|d| match d {
            "P" | "M" | "T" => 13,
            "S1" => 5,
            "H" => 2,
            "G" => 1,
            _ => 5,
        },
    ];
    let mut n = 0;
    for (_, program) in lib_programs() {
        let opts = Options::for_program(&program);
        for k in &program.kernels {
            for (s, shape) in shapes.iter().enumerate() {
                let inputs = inputs_for(&program, &k.name, shape, 7 + s as u64);
                check(&program, &k.name, &opts, &inputs, &BTreeMap::new(), &format!("{} shape {s}", k.name));
                n += 1;
            }
        }
    }
    assert!(n >= 51, "ran {n} cases");
}

/// Logits around ±1e4 (Q scaled): the online softmax stays finite and equal.
#[test]
fn huge_logits_stay_finite_and_equal() {
    for (file, kernel) in [("sdpa.tfm", "sdpa"), ("causal.tfm", "causal"), ("window.tfm", "window"), ("alibi.tfm", "alibi")] {
        let program = lib(file);
        let mut inputs = inputs_for(&program, kernel, |d| if d == "P" || d == "M" { 9 } else { 3 }, 11);
        let q = inputs["Q"].clone();
        let scaled: Vec<f64> = q.to_f64_vec().iter().map(|x| x * 3e4).collect();
        inputs.insert("Q".into(), Tensor::from_f64(DType::F32, q.shape().to_vec(), scaled).expect("f32"));
        check(&program, kernel, &Options::for_program(&program), &inputs, &BTreeMap::new(), &format!("{kernel} ±1e4"));
        let out = run_cascade(
            &optimize(&lower(&program, kernel).expect("lowers"), &Options::for_program(&program)).expect("opt").0,
            &program,
            &inputs,
            &BTreeMap::new(),
            true,
        )
        .expect("runs");
        assert!(out["O"].to_f64_vec().iter().all(|x| x.is_finite()), "{kernel}: non-finite output");
    }
}

/// A window of 0 masks every key: every output row is 0, before and after.
#[test]
fn fully_masked_rows_give_zero() {
    let program = lib("window.tfm");
    let inputs = inputs_for(&program, "window", |d| if d == "P" || d == "M" { 6 } else { 2 }, 3);
    let params: BTreeMap<String, Scalar> = [("W".to_string(), Scalar::I(0))].into();
    check(&program, "window", &Options::for_program(&program), &inputs, &params, "window W=0");
    let (after, _) = optimize(&lower(&program, "window").expect("lowers"), &Options::for_program(&program)).expect("opt");
    let out = run_cascade(&after, &program, &inputs, &params, true).expect("runs");
    assert!(out["O"].to_f64_vec().iter().all(|x| *x == 0.0));
}

/// Inlined calls keep the HIR's call semantics: arguments and results are dense tensors
/// (points that do not exist read as 0), also when the callee filters.
#[test]
fn inlined_calls_pass_and_return_dense_tensors() {
    let text = r#"
        kernel callee(X: f32[N]) -> (Y: f32[N]) {
            Y[p] = X[p] where p > 0
        }
        kernel caller(X: f32[N]) -> (O: f32[], Z: f32[N]) {
            Y = callee(X)
            O[] = sum[n](Y[n] + 1.0)
            Xm[n] = X[n] where n < 2
            Z = callee(Xm)
        }
    "#;
    let program = crate::load_str("calls.tfm", text).expect("checks");
    for size in [1usize, 3, 6] {
        let inputs = inputs_for(&program, "caller", |_| size, 21);
        check(&program, "caller", &Options::for_program(&program), &inputs, &BTreeMap::new(), &format!("dense calls n={size}"));
    }
}

/// Each rule alone, on a program where it fires: it fires, and the result is unchanged.
#[test]
fn each_rule_alone_is_sound() {
    const PROGRAMS: &str = r#"
        kernel hoist(S: f32[P, M], V: f32[M, F]) -> (O: f32[P, F]) {
            N[p, m] = exp(S[p, m])
            D[p] = sum[m](N[p, m])
            A[p, m] = N[p, m] / D[p]
            O[p, f] = sum[m](V[m, f] * (N[p, m] / D[p])) + sum[m](A[p, m])
        }
        kernel assoc(A: f32[N], B: f32[N], C: f32[N]) -> (O: f32[N]) {
            O[n] = A[n] * (B[n] * C[n]) + (A[n] * B[n]) * C[n]
        }
        kernel contract(A: f32[P, E], B: f32[M, E], V: f32[M, F]) -> (O: f32[P, F]) {
            O[p, f] = sum[m](sum[e](A[p, e] * B[m, e]) * V[m, f])
        }
        kernel difference(A: f32[P, M], B: f32[P, M], V: f32[M, F]) -> (O: f32[P, F]) {
            O[p, f] = sum[m]((A[p, m] - B[p, m]) * V[m, f])
        }
        kernel sinklast(S: f32[P, M], V: f32[M, F], C: f32[P]) -> (O: f32[P, F]) {
            G[p] = max[m](S[p, m])
            N[p, m] = exp(S[p, m] - G[p])
            O[p, f] = sum[m](N[p, m] * V[m, f]) / (sum[m](N[p, m]) + exp(C[p] - G[p]))
        }
        kernel onelast(S: f32[P, M], V: f32[M, F]) -> (O: f32[P, F]) {
            G[p] = max[m](S[p, m])
            N[p, m] = exp(S[p, m] - G[p])
            O[p, f] = sum[m](N[p, m] * V[m, f]) / (sum[m](N[p, m]) + exp(-G[p]))
        }
    "#;
    let text = PROGRAMS;
    let program = crate::load_str("rules.tfm", text).expect("checks");
    let sdpa = lib("sdpa.tfm");
    let quiet = lib("quiet.tfm");
    // (rule under test, rules it needs to reach its pattern, program, kernel)
    let cases: [(&str, &[&str], &crate::Program, &str); 14] = [
        ("hoist-div-right", &[], &program, "hoist"),
        ("hoist-div", &[], &program, "hoist"),
        ("mul-comm", &[], &program, "contract"),
        ("mul-assoc-left", &[], &program, "assoc"),
        ("mul-assoc-right", &[], &program, "assoc"),
        ("mul-into-sum", &["mul-comm"], &program, "contract"),
        ("sum-swap", &["mul-comm", "mul-into-sum"], &program, "contract"),
        ("online-softmax", &[], &sdpa, "sdpa"),
        ("mul-over-difference", &[], &program, "difference"),
        ("sum-of-difference", &["mul-over-difference"], &program, "difference"),
        ("online-softmax-sink", &[], &quiet, "sink_causal"),
        ("online-softmax-sink-last", &[], &program, "sinklast"),
        ("online-softmax-one", &[], &quiet, "softmax_one"),
        ("online-softmax-one-last", &[], &program, "onelast"),
    ];
    for (rule, needs, prog, kernel) in cases {
        let mut opts = Options::for_program(prog);
        opts.only_rules = Some(std::iter::once(rule).chain(needs.iter().copied()).map(String::from).collect());
        let (_, report) = optimize(&lower(prog, kernel).expect("lowers"), &opts).expect("opt");
        assert!(report.rules_fired.contains_key(rule), "{rule} did not fire on {kernel}: {report:?}");
        for (s, size) in [1usize, 5, 8].into_iter().enumerate() {
            let inputs = inputs_for(prog, kernel, |_| size, 100 + s as u64);
            check(prog, kernel, &opts, &inputs, &BTreeMap::new(), &format!("rule {rule} size {size}"));
        }
    }
    // mul-out-of-sum fires once sums are swapped and the product regrouped (the linear
    // attention path).
    let mut opts = Options::for_program(&program);
    opts.only_rules =
        Some(["mul-into-sum", "mul-out-of-sum", "mul-comm", "mul-assoc-left", "mul-assoc-right", "sum-swap"].map(String::from).to_vec());
    let (_, report) = optimize(&lower(&program, "contract").expect("lowers"), &opts).expect("opt");
    assert!(report.rules_fired.contains_key("mul-out-of-sum"), "{report:?}");
    let inputs = inputs_for(&program, "contract", |_| 4, 5);
    check(&program, "contract", &opts, &inputs, &BTreeMap::new(), "rule mul-out-of-sum");
}

/// Split reduction for decode: p = 1 over a long m, chunk sizes 1, 8 and more than m, with
/// bounds (causal, window), masked rows and huge logits; the split cascade equals the oracle.
#[test]
fn split_reduction_is_sound() {
    for (file, kernel) in
        [("sdpa.tfm", "sdpa"), ("causal.tfm", "causal"), ("window.tfm", "window"), ("gqa.tfm", "gqa"), ("linear.tfm", "linear")]
    {
        let program = lib(file);
        for chunk in [1, 8, 64] {
            let mut opts = Options::for_program(&program);
            opts.split = Some(("m".to_string(), chunk));
            let (after, _) = optimize(&lower(&program, kernel).expect("lowers"), &opts).expect("optimizes");
            assert!(after.range("m.chunk").is_some(), "{kernel}: not split");
            for (p, m) in [(1, 37), (3, 8), (1, 1)] {
                let inputs = inputs_for(
                    &program,
                    kernel,
                    |d| match d {
                        "P" => p,
                        "M" => m,
                        "H" => 2,
                        "G" => 1,
                        _ => 3,
                    },
                    5,
                );
                let windows: Vec<BTreeMap<String, Scalar>> = if kernel == "window" {
                    vec![[("W".to_string(), Scalar::I(0))].into(), [("W".to_string(), Scalar::I(5))].into()]
                } else {
                    vec![BTreeMap::new()]
                };
                for params in windows {
                    check(&program, kernel, &opts, &inputs, &params, &format!("{kernel} split {chunk} p={p} m={m} {params:?}"));
                }
                let mut big = inputs.clone();
                let q = big["Q"].clone();
                let scaled: Vec<f64> = q.to_f64_vec().iter().map(|x| x * 3e4).collect();
                big.insert("Q".into(), Tensor::from_f64(DType::F32, q.shape().to_vec(), scaled).expect("f32"));
                check(&program, kernel, &opts, &big, &BTreeMap::new(), &format!("{kernel} split {chunk} ±1e4"));
            }
        }
    }
}

/// `Σ n/d = (Σ n)/d` holds for reals only: integer `/` floors, so it must not fire on ints.
#[test]
fn integer_division_is_not_hoisted() {
    let text = r#"
        kernel q(N: i64[P, M], D: i64[P]) -> (O: i64[P]) {
            O[p] = sum[m](N[p, m] / D[p]) where D[p] != 0
        }
    "#;
    let program = crate::load_str("ints.tfm", text).expect("checks");
    let (_, report) = optimize(&lower(&program, "q").expect("lowers"), &Options::for_program(&program)).expect("opt");
    assert!(!report.rules_fired.contains_key("hoist-div"), "{report:?}");
    let inputs: BTreeMap<String, Tensor> = [
        ("N".to_string(), Tensor::new(DType::I64, vec![2, 3], TensorData::I(vec![1, 1, 1, 5, -7, 3])).expect("N")),
        ("D".to_string(), Tensor::new(DType::I64, vec![2], TensorData::I(vec![2, 3])).expect("D")),
    ]
    .into();
    check(&program, "q", &Options::for_program(&program), &inputs, &BTreeMap::new(), "integer hoist");
}
