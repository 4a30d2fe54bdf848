//! Tests of the Cranelift backend on hand-written KIR, run through its JIT: buffers of every
//! element type, reductions, parallel loops, stack and heap buffers, failures, params, the ABI
//! and errors. Re-exports the shared KIR-building helpers (`backend::test_kir`) for the other
//! test modules (`tests_ops`, `tests_vec`), beside this backend's `jit`/`jit_with`.

use super::*;
use crate::schedule::kir::*;

pub(super) use crate::backend::test_kir::*;

/// JIT-compiles `f` as `k` with default options and runs `body` with its packed entry.
pub(super) fn jit<R>(f: &Func, body: impl FnOnce(PackedFn) -> R) -> R {
    jit_with(f, &CraneliftOptions::default(), body)
}

pub(super) fn jit_with<R>(f: &Func, opts: &CraneliftOptions, body: impl FnOnce(PackedFn) -> R) -> R {
    let r = with_jit(&[Export::new(f, "k")], opts, |j| body(j.entry("k").expect("entry k")));
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Both option sets the vectorizer tests compare.
pub(super) const SIMD_AND_SCALAR: [CraneliftOptions; 2] =
    [CraneliftOptions { opt_level: OptLevel::Speed, simd: true }, CraneliftOptions { opt_level: OptLevel::Speed, simd: false }];

#[test]
fn vector_add_every_element_type() {
    let n = 37usize;
    for opts in SIMD_AND_SCALAR {
        let mut a: Vec<f32> = (0..n).map(|x| x as f32 * 0.5).collect();
        let mut b: Vec<f32> = (0..n).map(|x| 1.0 - x as f32).collect();
        let mut o = vec![0f32; n];
        jit_with(&elementwise(Ty::F32, BinOp::Add), &opts, |f| {
            assert_eq!(call(f, &[p(&mut a), p(&mut b), p(&mut o)], &[n as i64], &[]), 0)
        });
        assert!(o.iter().zip(a.iter().zip(&b)).all(|(o, (a, b))| *o == a + b));
        let mut a: Vec<i32> = (0..n as i32).map(|x| (x * 1000).wrapping_add(i32::MAX - 5)).collect();
        let mut b: Vec<i32> = (0..n as i32).collect();
        let mut o = vec![0i32; n];
        jit_with(&elementwise(Ty::I32, BinOp::Add), &opts, |f| {
            assert_eq!(call(f, &[p(&mut a), p(&mut b), p(&mut o)], &[n as i64], &[]), 0)
        });
        assert!(o.iter().zip(a.iter().zip(&b)).all(|(o, (a, b))| *o == a.wrapping_add(*b)));
        let mut a: Vec<i64> = (0..n as i64).map(|x| x * (1 << 40)).collect();
        let mut b: Vec<i64> = (0..n as i64).map(|x| -x).collect();
        let mut o = vec![0i64; n];
        jit_with(&elementwise(Ty::I64, BinOp::Sub), &opts, |f| {
            assert_eq!(call(f, &[p(&mut a), p(&mut b), p(&mut o)], &[n as i64], &[]), 0)
        });
        assert!(o.iter().zip(a.iter().zip(&b)).all(|(o, (a, b))| *o == a - b));
        let mut a: Vec<f64> = (0..n).map(|x| x as f64 / 3.0).collect();
        let mut b: Vec<f64> = (0..n).map(|x| x as f64 + 0.25).collect();
        let mut o = vec![0f64; n];
        jit_with(&elementwise(Ty::F64, BinOp::Div), &opts, |f| {
            assert_eq!(call(f, &[p(&mut a), p(&mut b), p(&mut o)], &[n as i64], &[]), 0)
        });
        assert!(o.iter().zip(a.iter().zip(&b)).all(|(o, (a, b))| *o == a / b));
        // Bool (or), one byte each; any non-zero byte reads as true.
        let mut a: Vec<u8> = (0..n).map(|x| (x % 2) as u8 * 7).collect();
        let mut b: Vec<u8> = (0..n).map(|x| (x % 3 == 0) as u8).collect();
        let mut o = vec![7u8; n];
        jit_with(&elementwise(Ty::Bool, BinOp::Or), &opts, |f| {
            assert_eq!(call(f, &[p(&mut a), p(&mut b), p(&mut o)], &[n as i64], &[]), 0)
        });
        assert!(o.iter().zip(a.iter().zip(&b)).all(|(o, (a, b))| *o == u8::from(*a != 0 || *b != 0)));
        let mut a: Vec<::half::f16> = (0..n).map(|x| ::half::f16::from_f32(x as f32 * 0.37 - 3.0)).collect();
        let mut b: Vec<::half::f16> = (0..n).map(|x| ::half::f16::from_f32(x as f32 * 1e-3)).collect();
        let mut o = vec![::half::f16::ZERO; n];
        jit_with(&elementwise(Ty::F16, BinOp::Add), &opts, |f| {
            assert_eq!(call(f, &[p(&mut a), p(&mut b), p(&mut o)], &[n as i64], &[]), 0)
        });
        assert!(o.iter().zip(a.iter().zip(&b)).all(|(o, (a, b))| *o == ::half::f16::from_f32(a.to_f32() + b.to_f32())));
        let mut a: Vec<::half::bf16> = (0..n).map(|x| ::half::bf16::from_f32(x as f32 * 0.37 - 3.0)).collect();
        let mut b: Vec<::half::bf16> = (0..n).map(|x| ::half::bf16::from_f32(x as f32 * 1e-3)).collect();
        let mut o = vec![::half::bf16::ZERO; n];
        jit_with(&elementwise(Ty::BF16, BinOp::Mul), &opts, |f| {
            assert_eq!(call(f, &[p(&mut a), p(&mut b), p(&mut o)], &[n as i64], &[]), 0)
        });
        assert!(o.iter().zip(a.iter().zip(&b)).all(|(o, (a, b))| *o == ::half::bf16::from_f32(a.to_f32() * b.to_f32())));
    }
}

#[test]
fn reassoc_sum() {
    let mut k = K::new("sum");
    let (x, o) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32));
    let n = k.dim("n");
    let (iv, acc) = (k.var("i", Ty::I64), k.var("acc", Ty::F32));
    let f =
        k.body(vec![set(acc, f32c(0.0)), for_(iv, i(0), v(n), vec![set(acc, re(BinOp::Add, v(acc), ld(x, v(iv))))]), st(o, i(0), v(acc))]);
    let len = 10_007;
    let mut xs: Vec<f32> = (0..len).map(|j| ((j * 7919) % 1000) as f32 * 1e-3).collect();
    let want: f64 = xs.iter().map(|&x| f64::from(x)).sum();
    let mut o = [0f32];
    jit(&f, |e| assert_eq!(call(e, &[p(&mut xs), p(&mut o)], &[len as i64], &[]), 0));
    assert!((f64::from(o[0]) - want).abs() < 1e-3 * want, "{} vs {want}", o[0]);
    let clif = emit_clif(&[Export::new(&f, "sum")], &CraneliftOptions::default()).unwrap();
    assert!(clif.contains("f32x4"), "the reduction should vectorize:\n{clif}");
    let clif = emit_clif(&[Export::new(&f, "sum")], &CraneliftOptions { simd: false, ..Default::default() }).unwrap();
    assert!(!clif.contains("f32x4"), "simd: false stays scalar:\n{clif}");
}

/// `o[i] = 2 * i + c` for `i < n` in parallel.
fn parallel_fill() -> Func {
    let mut k = K::new("pfill");
    let o = k.arg("o", Ty::I64);
    let n = k.dim("n");
    let c = k.param("c", Ty::I64);
    let iv = k.var("i", Ty::I64);
    k.body(vec![par(iv, v(n), vec![st(o, v(iv), bin(BinOp::Add, bin(BinOp::Mul, i(2), v(iv)), v(c)))])])
}

#[test]
fn parallel_disjoint_stores() {
    let f = parallel_fill();
    jit(&f, |e| {
        for n in [0usize, 1, 1000, 100_003] {
            let mut o = vec![-1i64; n + 1];
            assert_eq!(call(e, &[p(&mut o)], &[n as i64], &[5]), 0);
            assert!((0..n).all(|j| o[j] == 2 * j as i64 + 5));
            assert_eq!(o[n], -1, "n = {n}: no store past the end");
        }
    });
}

#[test]
fn nested_for_in_parallel_with_stack_buffer_and_private_writes() {
    // For each row r < rows: t = r (a captured variable overwritten per iteration),
    // s[j] = x[r*m + j] * 2 (j < m), then o[r] = Σ_j s[j] + t - r.
    let mut k = K::new("rows");
    let (x, o) = (k.arg("x", Ty::F64), k.arg("o", Ty::F64));
    let (rows, m) = (k.dim("rows"), k.dim("m"));
    let s = k.stack("s", Ty::F64, 16);
    let (r, j, acc, t) = (k.var("r", Ty::I64), k.var("j", Ty::I64), k.var("acc", Ty::F64), k.var("t", Ty::I64));
    let at = bin(BinOp::Add, bin(BinOp::Mul, v(r), v(m)), v(j));
    let f = k.body(vec![
        set(t, i(0)),
        par(
            r,
            v(rows),
            vec![
                set(t, bin(BinOp::Add, v(t), v(r))),
                for_(j, i(0), v(m), vec![st(s, v(j), bin(BinOp::Mul, ld(x, at), Expr::Const(Const::F64(2.0))))]),
                set(acc, Expr::Const(Const::F64(0.0))),
                for_(j, i(0), v(m), vec![set(acc, bin(BinOp::Add, v(acc), ld(s, v(j))))]),
                st(o, v(r), bin(BinOp::Add, v(acc), cast(Ty::F64, bin(BinOp::Sub, v(t), v(r))))),
            ],
        ),
    ]);
    let (nr, nm) = (300usize, 13usize);
    let mut xs: Vec<f64> = (0..nr * nm).map(|q| q as f64).collect();
    let mut out = vec![0f64; nr];
    jit(&f, |e| assert_eq!(call(e, &[p(&mut xs), p(&mut out)], &[nr as i64, nm as i64], &[]), 0));
    for (row, got) in out.iter().enumerate() {
        let want: f64 = (0..nm).map(|q| 2.0 * (row * nm + q) as f64).sum();
        assert_eq!(*got, want, "row {row}");
    }
}

/// Allocates `h` (len n), fills `h[j] = j`, reads it in a parallel loop into `o[j] = h[j] * 3`,
/// and stores `Σ h` into `o[n]`.
fn heap_kernel() -> Func {
    let mut k = K::new("heap");
    let o = k.arg("o", Ty::I64);
    let n = k.dim("n");
    let h = k.heap("h", Ty::I64);
    let (j, acc) = (k.var("j", Ty::I64), k.var("acc", Ty::I64));
    k.body(vec![
        Stmt::Alloc { buf: h, len: v(n), zeroed: true },
        set(acc, i(0)),
        for_(j, i(0), v(n), vec![st(h, v(j), v(j))]),
        par(j, v(n), vec![st(o, v(j), bin(BinOp::Mul, ld(h, v(j)), i(3)))]),
        for_(j, i(0), v(n), vec![set(acc, bin(BinOp::Add, v(acc), ld(h, v(j))))]),
        st(o, v(n), v(acc)),
    ])
}

#[test]
fn heap_alloc_use_and_free() {
    let f = heap_kernel();
    jit(&f, |e| {
        for round in 0..2000 {
            let n = (round % 7) * 100 + round % 3;
            let mut o = vec![0i64; n + 1];
            assert_eq!(call(e, &[p(&mut o)], &[n as i64], &[]), 0);
            assert!((0..n).all(|q| o[q] == 3 * q as i64));
            assert_eq!(o[n], (n * n.saturating_sub(1) / 2) as i64);
        }
    });
}

#[test]
fn heap_alloc_failures() {
    let mut k = K::new("oom");
    let len = k.param("len", Ty::I64);
    let h = k.heap("h", Ty::F64);
    let h2 = k.heap("h2", Ty::I32);
    let f = k.body(vec![
        Stmt::Alloc { buf: h2, len: i(10), zeroed: true },
        Stmt::Alloc { buf: h, len: v(len), zeroed: true },
        st(h, i(0), Expr::Const(Const::F64(1.0))),
        // Allocating again frees the first block.
        Stmt::Alloc { buf: h, len: i(3), zeroed: true },
    ]);
    let oom = fail_code(FailKind::OutOfMemory, 0) as i32;
    jit(&f, |e| {
        assert_eq!(call(e, &[], &[], &[5]), 0);
        assert_eq!(call(e, &[], &[], &[(-1i64) as u64]), oom);
        assert_eq!(call(e, &[], &[], &[(i64::MAX / 4) as u64]), oom, "byte size overflows");
        assert_eq!(call(e, &[], &[], &[(1i64 << 58) as u64]), oom, "calloc fails");
        assert_eq!(call(e, &[], &[], &[0]), 0, "an empty buffer is fine");
    });
}

#[test]
fn fail_at_kernel_level_and_in_parallel() {
    let code = fail_code(FailKind::Absent, 3);
    let mut k = K::new("fail");
    let o = k.arg("o", Ty::I32);
    let n = k.dim("n");
    let bad = k.param("bad", Ty::I64);
    let h = k.heap("h", Ty::I32);
    let iv = k.var("i", Ty::I64);
    let f = k.body(vec![
        Stmt::Alloc { buf: h, len: i(4), zeroed: true },
        st(o, i(0), Expr::Const(Const::I32(11))),
        if_(bin(BinOp::Lt, v(bad), i(0)), vec![Stmt::Fail { code }], vec![]),
        par(
            iv,
            v(n),
            vec![
                st(h, i(0), Expr::Const(Const::I32(0))),
                if_(bin(BinOp::Eq, v(iv), v(bad)), vec![Stmt::Fail { code: code + 256 }], vec![]),
                st(o, bin(BinOp::Add, v(iv), i(1)), Expr::Const(Const::I32(1))),
            ],
        ),
        st(o, i(0), Expr::Const(Const::I32(22))),
    ]);
    let n = 1000;
    jit(&f, |e| {
        let mut o = vec![0i32; n + 1];
        assert_eq!(call(e, &[p(&mut o)], &[n as i64], &[(-1i64) as u64]), code as i32);
        assert_eq!(o[0], 11, "stores before the failure happen");
        assert_eq!(call(e, &[p(&mut o)], &[n as i64], &[500]), (code + 256) as i32);
        assert_eq!(o[0], 11, "nothing after a failed parallel loop runs");
        assert_eq!(call(e, &[p(&mut o)], &[n as i64], &[n as u64]), 0);
        assert_eq!(o[0], 22);
    });
}

#[test]
fn first_failure_wins_across_parallel_iterations() {
    // Every iteration fails with its own code: the kernel returns one of them, and the
    // same one it stored first (a code never overwritten by a later failure).
    let mut k = K::new("many");
    let n = k.dim("n");
    let iv = k.var("i", Ty::I64);
    let f = k.body(vec![par(
        iv,
        v(n),
        vec![if_(bin(BinOp::Lt, v(iv), i(1000)), vec![Stmt::Fail { code: 0x107 }], vec![]), Stmt::Fail { code: 0x207 }],
    )]);
    jit(&f, |e| {
        for n in [1i64, 7, 5000] {
            let r = call(e, &[], &[n], &[]);
            assert!(r == 0x107 || r == 0x207, "n = {n}: {r:#x}");
        }
        assert_eq!(call(e, &[], &[0], &[]), 0);
    });
}

/// A NULL buffer, `bufs`, `dims` or `params` pointer is refused before anything runs, as by
/// the LLVM entry (the C ABI's contract: the header says pointers must be non-NULL).
#[test]
fn null_pointers_are_refused() {
    let f = parallel_fill();
    jit(&f, |e| {
        let null = fail_code(FailKind::NullPointer, 0) as i32;
        let mut o = vec![0i64; 4];
        assert_eq!(call(e, &[std::ptr::null_mut()], &[4], &[0]), null);
        let (bufs, dims, params) = ([p(&mut o)], [4i64], [0u64]);
        // SAFETY: the entry checks its pointers before using them.
        unsafe {
            assert_eq!(e(std::ptr::null(), dims.as_ptr(), params.as_ptr()), null);
            assert_eq!(e(bufs.as_ptr(), std::ptr::null(), params.as_ptr()), null);
            assert_eq!(e(bufs.as_ptr(), dims.as_ptr(), std::ptr::null()), null);
        }
        assert_eq!(o, [0; 4]);
        assert_eq!(call(e, &[p(&mut o)], &[4], &[0]), 0);
    });
}

/// A negative dim names the site of its own check (site j for dim j, the schedule's
/// prologue), the first negative one when several are: not always site 0 (dim 0's).
#[test]
fn negative_dim_names_its_site() {
    let mut k = K::new("two_dims");
    let (_n, _m) = (k.dim("n"), k.dim("m"));
    let f = k.body(vec![]);
    jit(&f, |e| {
        assert_eq!(call(e, &[], &[3, -1], &[]), fail_code(FailKind::BadDims, 1) as i32);
        assert_eq!(call(e, &[], &[-2, -1], &[]), fail_code(FailKind::BadDims, 0) as i32);
        assert_eq!(call(e, &[], &[3, 4], &[]), 0);
    });
}

#[test]
fn negative_dim_is_bad_dims() {
    let f = parallel_fill();
    jit(&f, |e| {
        let mut o = vec![0i64; 4];
        assert_eq!(call(e, &[p(&mut o)], &[-3], &[0]), fail_code(FailKind::BadDims, 0) as i32);
        assert_eq!(o, [0; 4]);
    });
}

#[test]
fn params_of_every_type() {
    let mut k = K::new("params");
    let o = k.arg("o", Ty::F64);
    let n = k.dim("n");
    let a = k.param("a", Ty::I64);
    let b = k.param("b", Ty::I32);
    let c = k.param("c", Ty::Bool);
    let d = k.param("d", Ty::F32);
    let e = k.param("e", Ty::F64);
    let f = k.body(vec![
        st(o, i(0), cast(Ty::F64, v(a))),
        st(o, i(1), cast(Ty::F64, v(b))),
        st(o, i(2), cast(Ty::F64, v(c))),
        st(o, i(3), cast(Ty::F64, v(d))),
        st(o, i(4), v(e)),
        st(o, i(5), cast(Ty::F64, v(n))),
    ]);
    let slots = [(-(1i64 << 40)) as u64, (-7i64 + (1 << 32)) as u64, 3, 1.5f64.to_bits(), (-2.25f64).to_bits()];
    let mut out = [0f64; 6];
    jit(&f, |e| assert_eq!(call(e, &[p(&mut out)], &[9], &slots), 0));
    assert_eq!(out, [-(1i64 << 40) as f64, -7.0, 1.0, 1.5, -2.25, 9.0]);
}

#[test]
fn several_exports_in_one_module() {
    let (a, b) = (elementwise(Ty::F32, BinOp::Mul), parallel_fill());
    with_jit(&[Export::new(&a, "mul"), Export::new(&b, "fill")], &CraneliftOptions::default(), |j| {
        let (mut x, mut y, mut o) = (vec![2f32; 5], vec![3f32; 5], vec![0f32; 5]);
        assert_eq!(call(j.entry("mul").unwrap(), &[p(&mut x), p(&mut y), p(&mut o)], &[5], &[]), 0);
        assert_eq!(o, [6.0; 5]);
        let mut o = vec![0i64; 3];
        assert_eq!(call(j.entry("fill").unwrap(), &[p(&mut o)], &[3], &[1]), 0);
        assert_eq!(o, [1, 3, 5]);
        assert!(j.entry("nope").is_none());
    })
    .unwrap();
}

#[test]
fn opt_level_none_compiles_the_same_kernel() {
    let f = heap_kernel();
    let opts = CraneliftOptions { opt_level: OptLevel::None, simd: true };
    jit_with(&f, &opts, |e| {
        let mut o = vec![0i64; 11];
        assert_eq!(call(e, &[p(&mut o)], &[10], &[]), 0);
        assert_eq!(o[10], 45);
        assert_eq!(o[..10], (0..10).map(|q| 3 * q).collect::<Vec<i64>>());
    });
}

#[test]
fn invalid_kir_and_symbols_are_errors() {
    let mut k = K::new("bad");
    let o = k.arg("o", Ty::F32);
    let f = k.body(vec![st(o, i(0), i(1))]);
    let err = with_jit(&[Export::new(&f, "bad")], &CraneliftOptions::default(), |_| ()).unwrap_err();
    assert!(matches!(&err, CraneliftError::InvalidKir { kernel, .. } if kernel == "bad"), "{err}");
    assert!(err.to_string().contains("expected f32"), "{err}");
    let g = elementwise(Ty::F32, BinOp::Add);
    for sym in ["expf", "2x", "tfmc_parallel_for", "calloc"] {
        let err = emit_clif(&[Export::new(&g, sym)], &CraneliftOptions::default()).unwrap_err();
        assert!(matches!(err, CraneliftError::Symbol { .. }), "{sym}: {err}");
    }
    let err = emit_clif(&[Export::new(&g, "a"), Export::new(&g, "a")], &CraneliftOptions::default()).unwrap_err();
    assert!(matches!(err, CraneliftError::Symbol { .. }), "{err}");
    let mut k = K::new("huge");
    let o = k.arg("o", Ty::F64);
    let s = k.stack("s", Ty::F64, u32::MAX);
    let f = k.body(vec![st(s, i(0), Expr::Const(Const::F64(1.0))), st(o, i(0), ld(s, i(0)))]);
    let err = emit_clif(&[Export::new(&f, "huge")], &CraneliftOptions::default()).unwrap_err();
    assert!(matches!(err, CraneliftError::StackBuffer { .. }), "{err}");
}

#[test]
fn emit_clif_shows_every_function() {
    let f = heap_kernel();
    let clif = emit_clif(&[Export::new(&f, "heap")], &CraneliftOptions::default()).unwrap();
    // The packed entry and the one parallel body, calling the runtime and the C library.
    assert_eq!(clif.matches("\nfunction ").count() + usize::from(clif.starts_with("function ")), 2, "{clif}");
    for needle in ["call fn", "atomic_load", "stack_addr", "return"] {
        assert!(clif.contains(needle), "no '{needle}' in:\n{clif}");
    }
}

#[test]
fn parallel_bodies_capture_what_an_iteration_may_read_first() {
    // t is written on even iterations only, acc inside a loop before the iteration sets it:
    // both must start every iteration from the kernel's values; u is written first (never
    // captured, and never read from the kernel).
    let mut k = K::new("capture");
    let o = k.arg("o", Ty::I64);
    let n = k.dim("n");
    let [iv, j, t, acc, u] = ["i", "j", "t", "acc", "u"].map(|name| k.var(name, Ty::I64));
    let f = k.body(vec![
        set(t, i(5)),
        set(acc, i(100)),
        par(
            iv,
            v(n),
            vec![
                set(u, bin(BinOp::Mul, v(iv), i(2))),
                if_(bin(BinOp::Eq, bin(BinOp::Rem, v(iv), i(2)), i(0)), vec![set(t, v(iv))], vec![]),
                for_(j, i(0), i(3), vec![set(acc, bin(BinOp::Add, v(acc), v(u)))]),
                st(o, v(iv), bin(BinOp::Add, bin(BinOp::Mul, v(t), i(1000)), v(acc))),
            ],
        ),
    ]);
    let live = super::outline::live_in(
        iv,
        match &f.body[2] {
            Stmt::Parallel { body, .. } => body,
            _ => unreachable!("the third statement is the parallel loop"),
        },
    );
    assert_eq!(live.into_iter().collect::<Vec<_>>(), [t, acc], "t and acc are live in, u is not");
    let n = 101;
    let mut out = vec![0i64; n];
    jit(&f, |e| assert_eq!(call(e, &[p(&mut out)], &[n as i64], &[]), 0));
    for (q, got) in out.iter().enumerate() {
        let t = if q % 2 == 0 { q as i64 } else { 5 };
        assert_eq!(*got, t * 1000 + 100 + 6 * q as i64, "iteration {q}");
    }
}

/// A small kernel with every statement kind (alloc, if, fail, parallel, for, set, store, an
/// F16 load), as CLIF: a golden test of the translation. No vector loops and no multiply-add,
/// so the text does not depend on the host's features; bless with `INSTA_UPDATE=always`.
#[test]
fn clif_golden() {
    let mut k = K::new("golden");
    let (x, o) = (k.arg("x", Ty::F16), k.arg("o", Ty::F32));
    let n = k.dim("n");
    let h = k.heap("h", Ty::F32);
    let (iv, acc) = (k.var("i", Ty::I64), k.var("acc", Ty::F32));
    let f = k.body(vec![
        Stmt::Alloc { buf: h, len: v(n), zeroed: true },
        if_(bin(BinOp::Gt, v(n), i(100)), vec![Stmt::Fail { code: 0x105 }], vec![]),
        par(iv, v(n), vec![st(h, v(iv), un(UnOp::Abs, ld(x, v(iv))))]),
        set(acc, f32c(f32::NEG_INFINITY)),
        for_(iv, i(0), v(n), vec![set(acc, bin(BinOp::Max, v(acc), ld(h, v(iv))))]),
        st(o, i(0), v(acc)),
    ]);
    let opts = CraneliftOptions { simd: false, ..Default::default() };
    let clif = emit_clif(&[Export::new(&f, "golden")], &opts).unwrap();
    insta::with_settings!({prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("clif_golden", clif);
    });
    // And it runs: max |x| over n halves.
    let mut xs: Vec<::half::f16> = [-3.5f32, 2.0, 0.25].iter().map(|&q| ::half::f16::from_f32(q)).collect();
    let mut out = [0f32];
    jit_with(&f, &opts, |e| {
        assert_eq!(call(e, &[p(&mut xs), p(&mut out)], &[3], &[]), 0);
        assert_eq!(call(e, &[p(&mut xs), p(&mut out)], &[101], &[]), 0x105);
    });
    assert_eq!(out, [3.5]);
}
