//! Binding and run-time errors as the user sees them, and the checked-program printer.

use tfmc_runtime::{DType, Scalar, Tensor};

use super::tests::{exec, f32t, load};

const SDPA: &str = "kernel sdpa(Q: f32[P, E], K: f32[M, E], V: f32[M, F]) -> (O: f32[P, F]) {
    S[p, m] = sum[e](Q[p, e] * K[m, e])
    O[p, f] = sum[m](S[p, m] * V[m, f])
}";

fn err(inputs: &[(&str, Tensor)]) -> String {
    exec(&load(SDPA), "sdpa", inputs, &[]).unwrap_err().to_string()
}

fn z(shape: &[usize]) -> Tensor {
    Tensor::zeros(DType::F32, shape.to_vec())
}

#[test]
fn missing_input_names_it_and_its_type() {
    assert_eq!(err(&[("Q", z(&[2, 3])), ("K", z(&[4, 3]))]), "missing input 'V' of kernel 'sdpa' (expected f32[M, F])");
}

#[test]
fn extra_input_lists_the_expected_names() {
    assert_eq!(
        err(&[("Q", z(&[2, 3])), ("K", z(&[4, 3])), ("V", z(&[4, 5])), ("W", z(&[1]))]),
        "unexpected input 'W' for kernel 'sdpa'; its inputs are Q, K, V"
    );
}

#[test]
fn wrong_dtype_and_rank() {
    let q64 = Tensor::zeros(DType::F64, vec![2, 3]);
    assert_eq!(err(&[("Q", q64), ("K", z(&[4, 3])), ("V", z(&[4, 5]))]), "input 'Q' has dtype f64, kernel 'sdpa' expects f32");
    assert_eq!(
        err(&[("Q", z(&[2, 3, 1])), ("K", z(&[4, 3])), ("V", z(&[4, 5]))]),
        "input 'Q' has rank 3 (shape [2, 3, 1]), kernel 'sdpa' expects rank 2 (f32[P, E])"
    );
}

#[test]
fn symbolic_dim_conflict_names_both_places() {
    assert_eq!(err(&[("Q", z(&[2, 3])), ("K", z(&[5, 3])), ("V", z(&[7, 5]))]), "dimension M is 5 from K (dim 0) but 7 from V (dim 0)");
}

#[test]
fn fixed_dim_mismatch() {
    let p = load("kernel k(X: f32[N, 4]) -> O: f32[N] { O[n] = sum[j](X[n, j]) index j: 4 }");
    let e = exec(&p, "k", &[("X", z(&[2, 3]))], &[]).unwrap_err();
    assert_eq!(e.to_string(), "dimension 1 of input 'X' is 3, kernel 'k' expects 4 (f32[N, 4])");
}

#[test]
fn unknown_kernel_lists_the_kernels() {
    let e = exec(&load(SDPA), "sdp", &[], &[]).unwrap_err();
    assert_eq!(e.to_string(), "unknown kernel 'sdp'; kernels: sdpa");
}

#[test]
fn param_errors() {
    let p = load(
        "param W: i64
        param Eps: f32 = 1e-3
        kernel k(X: f32[N]) -> O: f32[N] { O[n] = X[n] + f32(W) }",
    );
    let x = || vec![("X", f32t(&[1], &[1.0]))];
    let e = |params: &[(&str, Scalar)]| exec(&p, "k", &x(), params).unwrap_err().to_string();
    assert_eq!(e(&[]), "param 'W' has no default and kernel 'k' reads it; set it with --param W=VALUE");
    assert_eq!(e(&[("V", Scalar::I(1))]), "unknown param 'V'; params: W, Eps");
    assert_eq!(e(&[("W", Scalar::F(1.5))]), "param 'W' is i64; 1.5 is not a valid i64");
    assert_eq!(e(&[("Eps", Scalar::B(true)), ("W", Scalar::I(1))]), "param 'Eps' is f32; true is not a valid f32");
    let ok = exec(&p, "k", &x(), &[("W", Scalar::F(2.0))]).unwrap();
    assert_eq!(ok["O"].to_f64_vec(), vec![3.0]);
}

#[test]
fn resolve_params_fills_unused_params_without_default_with_zero() {
    let p = load(
        "param W: i64
        param On: bool = true
        kernel k(X: f32[N]) -> O: f32[N] { O[n] = X[n] }",
    );
    let (_, k) = p.kernel("k").unwrap();
    let v = crate::bind::resolve_params(&p, k, &Default::default()).unwrap();
    assert_eq!(v, vec![Scalar::I(0), Scalar::B(true)]);
}

#[test]
fn output_shape_resolves_dims() {
    let p = load(SDPA);
    let (_, k) = p.kernel("sdpa").unwrap();
    let inputs = [("Q", z(&[2, 3])), ("K", z(&[4, 3])), ("V", z(&[4, 5]))];
    let inputs = inputs.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
    let b = crate::bind::bind(k, &inputs).unwrap();
    assert_eq!(crate::bind::output_shape(k, &b, k.outputs[0]), vec![2, 5]);
}

#[test]
fn printer_shows_names_casts_filters_scans_and_reductions() {
    let p = load(
        "param W: i64 = 2
        reduction lse(mx: f32, l: f32) {
            identity = (-inf, 0.0)
            combine(a, b) {
                let m = max(a.mx, b.mx)
                (m, a.l * exp(a.mx - m) + b.l * exp(b.mx - m))
            }
        }
        kernel k(S: f32[P, M]) -> (G: f32[P], L: f32[P], C: f32[P]) where m <= p && p - m < W {
            G[p], L[p] = lse[m](S[p, m], 1.0)
            C[p] = scan[p, init = 0.0](C[p - 1] + G[p] * rsqrt(M))
        }
        kernel outer(S: f32[P, M]) -> (C: f32[P]) {
            G, L, C = k(S, W = 3)
        }",
    );
    let text = crate::hir::print::print_program(&p);
    let want = "\
param W: i64 = 2

reduction lse(mx: f32, l: f32)
    identity = (-inf, 0.0)
    combine(a, b)
        let0 = max(a.mx, b.mx)
        result (let0, a.l * exp(a.mx - let0) + b.l * exp(b.mx - let0))

kernel k
    dims P, M
    input  S: f32[P, M]
    output G: f32[P]
    output L: f32[P]
    output C: f32[P]
    index p: P, m: M
    params W
    {
        G[p], L[p] = lse[m where m <= p && p - m < W](S[p, m], 1.0)
        C[p] = scan[p, init = 0.0](C[p - 1] + G[p] * rsqrt(f32(M)))
    }

kernel outer
    dims P, M
    input  S: f32[P, M]
    output C: f32[P]
    local  G: f32[P]
    local  L: f32[P]
    params W
    {
        G, L, C = k(S, W = 3)
    }
";
    assert_eq!(text, want, "got:\n{text}");
}

/// A local too large for memory is a clear error naming it (the interpreter used to abort
/// with "memory allocation of N bytes failed"): inputs with an empty axis are tiny, the
/// scores `S[p, m]` are not. The same holds for the IR evaluator (`--optimized`).
#[test]
fn local_too_large_for_memory_is_an_error() {
    let big = 1usize << 18; // S: 2^36 elements, 576 GiB with presence flags
    let inputs = [("Q", z(&[big, 0])), ("K", z(&[big, 0])), ("V", z(&[big, 0]))];
    let e = err(&inputs);
    assert!(e.starts_with("tensor 'S' of shape [262144, 262144] is too large: "), "{e}");
    // A size whose byte count overflows.
    let huge = 1usize << 33;
    let e = err(&[("Q", z(&[huge, 0])), ("K", z(&[huge, 0])), ("V", z(&[huge, 0]))]);
    assert_eq!(e, format!("tensor 'S' of shape [{huge}, {huge}] is too large: its size in bytes overflows"));
    let program = load(SDPA);
    let c = crate::ir::lower::lower(&program, "sdpa").expect("lowers");
    let named = inputs.iter().map(|(n, t)| (n.to_string(), t.clone())).collect();
    let e = crate::ir::eval::run_cascade(&c, &program, &named, &Default::default(), false).unwrap_err().to_string();
    assert!(e.starts_with("tensor 'S' of shape [262144, 262144] is too large: "), "{e}");
}
