//! Tests of the LLVM backend on hand-written KIR, run through the JIT: buffers of every
//! element type, reductions, parallel loops, stack and heap buffers, failures and the ABI.
//! Re-exports the shared KIR-building helpers (`backend::test_kir`) for the other test modules
//! (`tests_ops`, `tests_aot`), beside this backend's `jit`/`jit_with`.

use super::*;
use crate::schedule::kir::*;

pub(crate) use crate::backend::test_kir::*;

/// JIT-compiles `f` as `k` with default options and runs `body` with its packed entry.
pub(crate) fn jit<R>(f: &Func, body: impl FnOnce(PackedFn) -> R) -> R {
    jit_with(f, &TargetOptions::default(), body)
}

pub(crate) fn jit_with<R>(f: &Func, opts: &TargetOptions, body: impl FnOnce(PackedFn) -> R) -> R {
    let r = with_jit(&[Export::new(f, "k")], opts, |j| body(j.entry("k").expect("entry k")));
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn vector_add_every_element_type() {
    let n = 37usize;
    // f32
    let mut a: Vec<f32> = (0..n).map(|x| x as f32 * 0.5).collect();
    let mut b: Vec<f32> = (0..n).map(|x| 1.0 - x as f32).collect();
    let mut o = vec![0f32; n];
    jit(&elementwise(Ty::F32, BinOp::Add), |f| assert_eq!(call(f, &[p(&mut a), p(&mut b), p(&mut o)], &[n as i64], &[]), 0));
    assert!(o.iter().zip(a.iter().zip(&b)).all(|(o, (a, b))| *o == a + b));
    // i32 (wrapping)
    let mut a: Vec<i32> = (0..n as i32).map(|x| (x * 1000).wrapping_add(i32::MAX - 5)).collect();
    let mut b: Vec<i32> = (0..n as i32).collect();
    let mut o = vec![0i32; n];
    jit(&elementwise(Ty::I32, BinOp::Add), |f| assert_eq!(call(f, &[p(&mut a), p(&mut b), p(&mut o)], &[n as i64], &[]), 0));
    assert!(o.iter().zip(a.iter().zip(&b)).all(|(o, (a, b))| *o == a.wrapping_add(*b)));
    // bool (or), one byte each
    let mut a: Vec<u8> = (0..n).map(|x| (x % 2) as u8).collect();
    let mut b: Vec<u8> = (0..n).map(|x| (x % 3 == 0) as u8).collect();
    let mut o = vec![7u8; n];
    jit(&elementwise(Ty::Bool, BinOp::Or), |f| assert_eq!(call(f, &[p(&mut a), p(&mut b), p(&mut o)], &[n as i64], &[]), 0));
    assert!(o.iter().zip(a.iter().zip(&b)).all(|(o, (a, b))| *o == (a | b)));
    // f16 and bf16, native and integer conversions
    for opts in [TargetOptions::default(), TargetOptions { cpu: Some("x86-64".into()), ..Default::default() }] {
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
    let add = Expr::Binary { op: BinOp::Add, a: Box::new(v(acc)), b: Box::new(ld(x, v(iv))), reassoc: true };
    let f = k.body(vec![set(acc, Expr::Const(Const::F32(0.0))), for_(iv, i(0), v(n), vec![set(acc, add)]), st(o, i(0), v(acc))]);
    let len = 10_007;
    let mut xs: Vec<f32> = (0..len).map(|j| ((j * 7919) % 1000) as f32 * 1e-3).collect();
    let want: f64 = xs.iter().map(|&x| f64::from(x)).sum();
    let mut o = [0f32];
    jit(&f, |e| assert_eq!(call(e, &[p(&mut xs), p(&mut o)], &[len as i64], &[]), 0));
    assert!((f64::from(o[0]) - want).abs() < 1e-3 * want, "{} vs {want}", o[0]);
    let ir = emit_llvm(&[Export::new(&f, "sum")], &TargetOptions::default()).unwrap();
    assert!(ir.contains("fadd reassoc contract <"), "the reduction should vectorize:\n{ir}");
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
        for n in [0usize, 1, 1000] {
            let mut o = vec![-1i64; n + 1];
            assert_eq!(call(e, &[p(&mut o)], &[n as i64], &[5]), 0);
            assert!((0..n).all(|j| o[j] == 2 * j as i64 + 5));
            assert_eq!(o[n], -1, "n = {n}: no store past the end");
        }
    });
}

#[test]
fn nested_for_in_parallel_with_stack_buffer() {
    // For each row r < rows: s[j] = x[r*m + j] * 2 (j < m), then o[r] = Σ_j s[j].
    let mut k = K::new("rows");
    let (x, o) = (k.arg("x", Ty::F64), k.arg("o", Ty::F64));
    let (rows, m) = (k.dim("rows"), k.dim("m"));
    let s = k.stack("s", Ty::F64, 16);
    let (r, j, acc) = (k.var("r", Ty::I64), k.var("j", Ty::I64), k.var("acc", Ty::F64));
    let at = bin(BinOp::Add, bin(BinOp::Mul, v(r), v(m)), v(j));
    let f = k.body(vec![par(
        r,
        v(rows),
        vec![
            for_(j, i(0), v(m), vec![st(s, v(j), bin(BinOp::Mul, ld(x, at), Expr::Const(Const::F64(2.0))))]),
            set(acc, Expr::Const(Const::F64(0.0))),
            for_(j, i(0), v(m), vec![set(acc, bin(BinOp::Add, v(acc), ld(s, v(j))))]),
            st(o, v(r), v(acc)),
        ],
    )]);
    let (nr, nm) = (300usize, 13usize);
    let mut xs: Vec<f64> = (0..nr * nm).map(|q| q as f64).collect();
    let mut out = vec![0f64; nr];
    jit(&f, |e| assert_eq!(call(e, &[p(&mut xs), p(&mut out)], &[nr as i64, nm as i64], &[]), 0));
    for (row, got) in out.iter().enumerate() {
        let want: f64 = (0..nm).map(|q| 2.0 * (row * nm + q) as f64).sum();
        assert_eq!(*got, want);
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
    ]);
    let oom = fail_code(FailKind::OutOfMemory, 0) as i32;
    jit(&f, |e| {
        assert_eq!(call(e, &[], &[], &[5]), 0);
        assert_eq!(call(e, &[], &[], &[(-1i64) as u64]), oom);
        assert_eq!(call(e, &[], &[], &[(i64::MAX / 4) as u64]), oom, "byte size overflows");
        assert_eq!(call(e, &[], &[], &[(1i64 << 58) as u64]), oom, "calloc fails");
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
        Stmt::If { cond: bin(BinOp::Lt, v(bad), i(0)), then: vec![Stmt::Fail { code }], els: vec![] },
        par(
            iv,
            v(n),
            vec![
                Stmt::If { cond: bin(BinOp::Eq, v(iv), v(bad)), then: vec![Stmt::Fail { code: code + 256 }], els: vec![] },
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

/// A NULL buffer, `bufs`, `dims` or `params` pointer is refused before anything runs (the C
/// ABI's contract: the header says pointers must be non-NULL).
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
    let want = [-(1i64 << 40) as f64, -7.0, 1.0, 1.5, -2.25, 9.0];
    let slots = [(-(1i64 << 40)) as u64, (-7i64) as u64, 3, 1.5f64.to_bits(), (-2.25f64).to_bits()];
    with_jit(&[Export::new(&f, "params")], &TargetOptions::default(), |j| {
        let mut out = [0f64; 6];
        assert_eq!(call(j.entry("params").unwrap(), &[p(&mut out)], &[9], &slots), 0);
        assert_eq!(out, want);
        type Typed = unsafe extern "C" fn(*mut f64, i64, i64, i32, bool, f32, f64) -> i32;
        // SAFETY: the typed entry of this KIR has exactly this C signature.
        let typed: Typed = unsafe { std::mem::transmute(j.typed_entry("params").unwrap()) };
        let mut out = [0f64; 6];
        // SAFETY: `out` has the 6 elements the kernel writes.
        assert_eq!(unsafe { typed(out.as_mut_ptr(), 9, -(1i64 << 40), -7, true, 1.5, -2.25) }, 0);
        assert_eq!(out, want);
        // SAFETY: as above; a negative dim is refused before anything is stored.
        assert_eq!(unsafe { typed(out.as_mut_ptr(), -1, 0, 0, false, 0.0, 0.0) }, 6);
    })
    .unwrap();
}
