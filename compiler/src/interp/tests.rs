//! Interpreter semantics on small programs: filters and absence, `0 / 0`, integer division,
//! scans, user reductions, kernel calls, short-circuiting, and run-time errors. Binding
//! errors and the printer are tested in `tests_errors.rs`.

use std::collections::BTreeMap;

use tfmc_runtime::{DType, Scalar, Tensor, TensorData};

use super::run;
use crate::hir::Program;
use crate::semantics::RunError;

pub(super) fn load(src: &str) -> Program {
    crate::load_str("t.tfm", src).unwrap_or_else(|d| panic!("does not check:\n{d}"))
}

pub(super) fn f32t(shape: &[usize], data: &[f64]) -> Tensor {
    Tensor::from_f64(DType::F32, shape.to_vec(), data.to_vec()).expect("f32 tensor")
}

pub(super) fn i64t(shape: &[usize], data: &[i64]) -> Tensor {
    Tensor::new(DType::I64, shape.to_vec(), TensorData::I(data.to_vec())).expect("i64 tensor")
}

pub(super) fn exec(
    p: &Program,
    kernel: &str,
    inputs: &[(&str, Tensor)],
    params: &[(&str, Scalar)],
) -> Result<BTreeMap<String, Tensor>, RunError> {
    let inputs = inputs.iter().map(|(n, t)| (n.to_string(), t.clone())).collect();
    let params = params.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    run(p, kernel, &inputs, &params)
}

/// Runs and returns output `out` as f64 values.
fn out(p: &Program, kernel: &str, inputs: &[(&str, Tensor)], params: &[(&str, Scalar)], out: &str) -> Vec<f64> {
    let outs = exec(p, kernel, inputs, params).unwrap_or_else(|e| panic!("{e}"));
    outs[out].to_f64_vec()
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "element {i}: got {g}, want {w} (all: {got:?})");
    }
}

#[test]
fn statement_mask_flows_into_max_exp_and_sum() {
    let p = load(
        "kernel k(S: f32[P, M]) -> (O: f32[P, M], G: f32[P], D: f32[P]) {
            T[p, m] = S[p, m] where m <= p
            G[p]    = max[m](T[p, m])
            O[p, m] = exp(T[p, m] - G[p])
            D[p]    = sum[m](O[p, m])
        }",
    );
    let s = f32t(&[2, 2], &[1.0, 5.0, 2.0, 3.0]);
    let outs = exec(&p, "k", &[("S", s)], &[]).unwrap();
    // Row 0 sees only m = 0 (5.0 is masked out of the max); O[0, 1] does not exist: 0.
    assert_close(&outs["G"].to_f64_vec(), &[1.0, 3.0]);
    assert_close(&outs["O"].to_f64_vec(), &[1.0, 0.0, (-1.0f64).exp(), 1.0]);
    assert_close(&outs["D"].to_f64_vec(), &[1.0, 1.0 + (-1.0f64).exp()]);
}

#[test]
fn a_filter_reading_a_missing_point_does_not_hold() {
    let p = load(
        "kernel k(X: f32[P]) -> (O: f32[P], S: f32[]) {
            T[p] = X[p] where p > 0
            O[p] = X[p] + 1.0 where T[p] > 0.0 || T[p] <= 0.0
            S[]  = sum[p](T[p])
        }",
    );
    let outs = exec(&p, "k", &[("X", f32t(&[3], &[5.0, 6.0, 7.0]))], &[]).unwrap();
    assert_close(&outs["O"].to_f64_vec(), &[0.0, 7.0, 8.0]);
    assert_close(&outs["S"].to_f64_vec(), &[13.0]);
}

#[test]
fn fully_masked_softmax_row_is_zero() {
    let p = load(
        "kernel k(S: f32[P, M], V: f32[M, F]) -> (O: f32[P, F], G: f32[P]) where m < p {
            G[p]    = max[m](S[p, m])
            N[p, m] = exp(S[p, m] - G[p])
            D[p]    = sum[m](N[p, m])
            O[p, f] = sum[m](N[p, m] * V[m, f]) / D[p]
        }",
    );
    let s = f32t(&[2, 2], &[0.5, 1.0, 2.0, 7.0]);
    let v = f32t(&[2, 1], &[3.0, 4.0]);
    let outs = exec(&p, "k", &[("S", s), ("V", v)], &[]).unwrap();
    // Row 0 has no m < 0: G = -inf, D = 0, numerator 0, and 0 / 0 = 0.
    assert_eq!(outs["G"].to_f64_vec()[0], f64::NEG_INFINITY);
    assert_close(&outs["O"].to_f64_vec(), &[0.0, 3.0]);
}

#[test]
fn float_zero_by_zero_is_zero_but_other_divisions_are_ieee() {
    let p = load("kernel k(X: f32[N], Y: f32[N]) -> O: f32[N] { O[n] = X[n] / Y[n] }");
    let x = f32t(&[3], &[0.0, 1.0, -1.0]);
    let y = f32t(&[3], &[0.0, 0.0, 0.0]);
    let o = out(&p, "k", &[("X", x), ("Y", y)], &[], "O");
    assert_eq!(o, vec![0.0, f64::INFINITY, f64::NEG_INFINITY]);
}

#[test]
fn integer_division_and_modulo_round_toward_negative_infinity() {
    let p = load(
        "kernel k(A: i64[N], B: i64[N]) -> (Q: i64[N], R: i64[N]) {
            Q[n] = A[n] / B[n]
            R[n] = A[n] % B[n]
        }",
    );
    let a = i64t(&[4], &[-7, 7, -7, 6]);
    let b = i64t(&[4], &[2, -2, -2, 3]);
    let outs = exec(&p, "k", &[("A", a.clone()), ("B", b)], &[]).unwrap();
    assert_eq!(outs["Q"].to_f64_vec(), vec![-4.0, -4.0, 3.0, 2.0]);
    assert_eq!(outs["R"].to_f64_vec(), vec![1.0, -1.0, -1.0, 0.0]);

    let zero = i64t(&[4], &[1, 1, 0, 1]);
    let err = exec(&p, "k", &[("A", a), ("B", zero)], &[]).unwrap_err();
    assert_eq!(err.to_string(), "integer division by zero (at t.tfm:2:20)");
}

#[test]
fn integer_overflow_is_an_error_not_a_wrap() {
    let p = load("kernel k(A: i64[N]) -> S: i64[] { S[] = sum[n](A[n]) }");
    let a = i64t(&[2], &[i64::MAX, 1]);
    let err = exec(&p, "k", &[("A", a)], &[]).unwrap_err();
    assert!(err.to_string().starts_with("i64 overflow in 9223372036854775807 + 1 (at t.tfm:1:"), "{err}");
}

#[test]
fn running_sum_scan_matches_closed_form() {
    let p = load("kernel k(X: f32[T]) -> C: f32[T] { C[t] = scan[t, init = 0.0](C[t - 1] + X[t]) }");
    let x: Vec<f64> = (0..6).map(|i| i as f64 + 1.0).collect();
    let c = out(&p, "k", &[("X", f32t(&[6], &x))], &[], "C");
    let want: Vec<f64> = (1..=6).map(|n| (n * (n + 1) / 2) as f64).collect();
    assert_close(&c, &want);
}

#[test]
fn scan_init_may_use_the_other_indices() {
    let p = load(
        "kernel k(X: f32[B, T]) -> C: f32[B, T] {
            C[b, t] = scan[t, init = 10.0 * f32(b)](C[b, t - 1] + X[b, t])
        }",
    );
    let c = out(&p, "k", &[("X", f32t(&[2, 3], &[1.0; 6]))], &[], "C");
    assert_close(&c, &[1.0, 2.0, 3.0, 11.0, 12.0, 13.0]);
}

#[test]
fn scan_with_offset_two_reads_init_for_the_first_two_points() {
    let p = load(
        "kernel k(X: f32[T]) -> F: f32[T] {
            F[t] = scan[t, init = 1.0](F[t - 1] + F[t - 2] + 0.0 * X[t])
        }",
    );
    let f = out(&p, "k", &[("X", f32t(&[6], &[0.0; 6]))], &[], "F");
    assert_close(&f, &[2.0, 3.0, 5.0, 8.0, 13.0, 21.0]);
}

const LSE: &str = "
/// (running max, sum of exp) — the online-softmax pair.
reduction lse(mx: f32, l: f32) {
    identity = (-inf, 0.0)
    combine(a, b) {
        let m = max(a.mx, b.mx)
        (m, a.l * exp(a.mx - m) + b.l * exp(b.mx - m))
    }
}
reduction amax(x: f32) {
    identity = -inf
    combine(a, b) { max(a.x, b.x) }
}
";

#[test]
fn lse_pair_equals_log_sum_exp() {
    let p = load(&format!(
        "{LSE}
        kernel stats(S: f32[P, M]) -> (G: f32[P], L: f32[P], Z: f32[P], A: f32[P]) {{
            G[p], L[p] = lse[m](S[p, m], 1.0)
            Z[p] = G[p] + log(L[p])
            A[p] = amax[m where m > 0](S[p, m])
        }}"
    ));
    let s = [0.5, -1.25, 3.0, 2.0, 0.0, -4.0, 1.5, 1.5];
    let outs = exec(&p, "stats", &[("S", f32t(&[2, 4], &s))], &[]).unwrap();
    let rows: Vec<&[f64]> = s.chunks(4).collect();
    let lse: Vec<f64> = rows.iter().map(|r| r.iter().map(|x| x.exp()).sum::<f64>().ln()).collect();
    let mx: Vec<f64> = rows.iter().map(|r| r.iter().copied().fold(f64::NEG_INFINITY, f64::max)).collect();
    let mx_tail: Vec<f64> = rows.iter().map(|r| r[1..].iter().copied().fold(f64::NEG_INFINITY, f64::max)).collect();
    assert_close(&outs["Z"].to_f64_vec(), &lse);
    assert_close(&outs["G"].to_f64_vec(), &mx);
    assert_close(&outs["A"].to_f64_vec(), &mx_tail);
}

#[test]
fn kernel_call_with_param_override_and_masked_argument() {
    let p = load(
        "param Sc: f32 = 1.0
        kernel scale(X: f32[N]) -> Y: f32[N] { Y[n] = X[n] * Sc }
        kernel outer(X: f32[N]) -> Y: f32[N] {
            Xm[n] = X[n] where n > 0
            A = scale(Xm, Sc = 2.0)
            Y[n] = A[n] + Sc
        }",
    );
    let x = f32t(&[3], &[1.0, 2.0, 3.0]);
    // The masked point Xm[0] is passed as 0; the override applies inside the call only.
    assert_close(&out(&p, "outer", &[("X", x.clone())], &[], "Y"), &[1.0, 5.0, 7.0]);
    assert_close(&out(&p, "outer", &[("X", x.clone())], &[("Sc", Scalar::I(3))], "Y"), &[3.0, 7.0, 9.0]);
    assert_close(&out(&p, "scale", &[("X", x)], &[("Sc", Scalar::F(0.5))], "Y"), &[0.5, 1.0, 1.5]);
}

#[test]
fn out_of_range_subscript_names_tensor_position_and_place() {
    let p = load(
        "kernel k(X: f32[N, P]) -> O: f32[N, P] {
            O[n, p] = X[n, p + 1]
        }",
    );
    let err = exec(&p, "k", &[("X", f32t(&[1, 4], &[1.0; 4]))], &[]).unwrap_err();
    assert_eq!(err.to_string(), "subscript 1 of 'X' is 4, outside 0..4 (at t.tfm:2:28)");
}

#[test]
fn filters_guard_subscripts_and_and_short_circuits() {
    let p = load(
        "kernel k(X: f32[P]) -> (O: f32[P], C: f32[P]) {
            O[p] = X[p + 1] where p + 1 < P
            C[p] = if p + 1 < P && X[p + 1] > 0.0 then 1.0 else -1.0
        }",
    );
    let outs = exec(&p, "k", &[("X", f32t(&[3], &[5.0, 6.0, -7.0]))], &[]).unwrap();
    assert_close(&outs["O"].to_f64_vec(), &[6.0, -7.0, 0.0]);
    assert_close(&outs["C"].to_f64_vec(), &[1.0, -1.0, -1.0]);
}

#[test]
fn floats_are_not_rounded_inside_the_interpreter() {
    // 1 + 2^-20 is an f32 but not an f16: the f16 local keeps it (the oracle is f64), and
    // only writing the f16 output rounds.
    let p = load(
        "kernel k(X: f32[N]) -> (O: f32[N], H: f16[N]) {
            T[n] = f16(X[n])
            O[n] = f32(T[n])
            H[n] = T[n]
        }",
    );
    let x = 1.0 + 2f64.powi(-20);
    let outs = exec(&p, "k", &[("X", f32t(&[1], &[x]))], &[]).unwrap();
    assert_eq!(outs["O"].to_f64_vec(), vec![x]);
    assert_eq!(outs["H"].to_f64_vec(), vec![1.0]);
    assert_eq!(outs["H"].dtype(), DType::F16);
}
