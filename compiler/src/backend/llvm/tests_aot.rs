//! Tests of the outputs other than the JIT (shared libraries, IR and assembly text) and of the
//! errors: target options, symbols and ill-formed KIR.

use super::tests::*;
use super::*;
use crate::schedule::kir::{self, *};

/// `o[i] = x[i] * s` in parallel, with a heap scratch buffer (exercises the C runtime's pool,
/// calloc/free and the libm link).
fn scale() -> kir::Func {
    let mut k = K::new("scale");
    let (x, o) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32));
    let n = k.dim("n");
    let s = k.param("s", Ty::F32);
    let h = k.heap("h", Ty::F32);
    let j = k.var("j", Ty::I64);
    k.body(vec![
        Stmt::Alloc { buf: h, len: v(n), zeroed: true },
        par(j, v(n), vec![st(h, v(j), un(UnOp::Tanh, bin(BinOp::Mul, ld(x, v(j)), v(s))))]),
        for_(j, i(0), v(n), vec![st(o, v(j), ld(h, v(j)))]),
    ])
}

#[test]
fn shared_library_builds_loads_and_runs() {
    let f = scale();
    let exports = [Export::new(&f, "tfm_scale")];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scale.so");
    let json = r#"{"format":"tfmc-artifact","version":1}"#;
    build_shared_library(&exports, json, &TargetOptions::default(), &out).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let payload = tfmc_runtime::aot::unseal(&bytes).expect("sealed");
    assert!(payload.windows(json.len()).any(|w| w == json.as_bytes()), "manifest embedded");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["scale.so"], "no temporary files left");

    // SAFETY: a library we just built; its initializers are the C runtime's (none run code).
    let lib = unsafe { libloading::Library::new(&out) }.unwrap();
    // SAFETY: the packed entry's signature is PackedFn.
    let entry: libloading::Symbol<'_, PackedFn> = unsafe { lib.get(b"tfm_scale_packed") }.unwrap();
    let n = 5000;
    let mut x: Vec<f32> = (0..n).map(|q| q as f32 * 1e-3 - 2.0).collect();
    let mut o = vec![0f32; n];
    assert_eq!(call(*entry, &[p(&mut x), p(&mut o)], &[n as i64], &[0.5f64.to_bits()]), 0);
    for (a, b) in x.iter().zip(&o) {
        assert!((b - (a * 0.5).tanh()).abs() <= 2.0 * f32::EPSILON, "{a}: {b}");
    }
    assert_eq!(call(*entry, &[p(&mut x), p(&mut o)], &[-1], &[0]), fail_code(FailKind::BadDims, 0) as i32);
    // SAFETY: the manifest globals' types.
    let len: libloading::Symbol<'_, *const u64> = unsafe { lib.get(b"tfmc_manifest_len") }.unwrap();
    // SAFETY: tfmc_manifest_len is an initialized constant u64.
    assert_eq!(unsafe { **len }, json.len() as u64);
    type Typed = unsafe extern "C" fn(*const f32, *mut f32, i64, f32) -> i32;
    // SAFETY: the typed entry's C signature for this KIR.
    let typed: libloading::Symbol<'_, Typed> = unsafe { lib.get(b"tfm_scale") }.unwrap();
    let mut o2 = vec![0f32; n];
    // SAFETY: buffers of n elements.
    assert_eq!(unsafe { typed(x.as_ptr(), o2.as_mut_ptr(), n as i64, 0.5) }, 0);
    assert_eq!(o, o2);

    // A failed build leaves nothing at `out`, not even a previous artifact's temporaries.
    let bad = dir.path().join("bad.so");
    let opts = TargetOptions { cpu: Some("no-such-cpu".into()), ..Default::default() };
    let err = build_shared_library(&exports, json, &opts, &bad).unwrap_err();
    assert_eq!(err.to_string(), "unknown target cpu 'no-such-cpu'");
    assert!(!bad.exists());
    let clash = [Export::new(&f, "a"), Export::new(&f, "a")];
    assert!(build_shared_library(&clash, json, &TargetOptions::default(), &bad).is_err());
    assert!(!bad.exists());
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["scale.so"]);
}

#[test]
fn target_options_resolve_and_reject() {
    for table in [super::cpus::X86_CPUS, super::cpus::X86_FEATURES] {
        assert!(table.windows(2).all(|w| w[0] < w[1]), "sorted for binary_search");
    }
    let host = resolve_target(&TargetOptions::default()).unwrap();
    assert!(!host.cpu.is_empty() && !host.triple.is_empty());
    assert!(host.features.iter().all(|f| !f.starts_with('+') && !f.starts_with('-')));
    let t = resolve_target(&TargetOptions {
        cpu: Some("x86-64-v3".into()),
        features: Some("+avx2,fma,-avx512f,+avx512f".into()),
        opt_level: 2,
    })
    .unwrap();
    // What x86-64-v3 implies, plus avx512f.
    let v3 = "avx avx2 avx512f bmi bmi2 cx16 f16c fma fxsr lzcnt movbe popcnt sse sse2 sse3 sse4.1 sse4.2 ssse3 xsave";
    assert_eq!((t.cpu.as_str(), t.features.join(" ")), ("x86-64-v3", v3.to_string()));
    // A named CPU records the features it implies, so the runtime can refuse it on an older
    // machine; a disabled feature is left out.
    let named = resolve_target(&TargetOptions { cpu: Some("znver4".into()), ..Default::default() }).unwrap();
    assert!(["avx2", "avx512f", "avx512bw", "fma"].iter().all(|f| named.features.iter().any(|g| g == f)), "{:?}", named.features);
    let less = resolve_target(&TargetOptions { cpu: Some("znver4".into()), features: Some("-avx512f".into()), opt_level: 3 }).unwrap();
    assert!(!less.features.iter().any(|f| f == "avx512f") && less.features.iter().any(|f| f == "avx2"));
    let old = resolve_target(&TargetOptions { cpu: Some("x86-64".into()), ..Default::default() }).unwrap();
    assert!(old.features.iter().any(|f| f == "sse2") && !old.features.iter().any(|f| f == "avx"));
    // The generated table has one entry per CPU name, in the same order.
    let names: Vec<&str> = super::cpu_features::X86_CPU_FEATURES.iter().map(|(c, _)| *c).collect();
    assert_eq!(names, super::cpus::X86_CPUS);
    let err = |o: TargetOptions| resolve_target(&o).unwrap_err().to_string();
    assert_eq!(err(TargetOptions { cpu: Some("foo".into()), ..Default::default() }), "unknown target cpu 'foo'");
    assert_eq!(err(TargetOptions { features: Some("+avx2,+bogus".into()), ..Default::default() }), "unknown target feature 'bogus'");
    assert_eq!(err(TargetOptions { opt_level: 4, ..Default::default() }), "optimization level 4 is out of range (0..=3)");
}

#[test]
fn every_opt_level_compiles_and_runs() {
    let f = elementwise(Ty::F64, BinOp::Sub);
    for opt_level in 0..=3 {
        let mut a = [1.0f64, 2.0, 3.0];
        let mut b = [0.5f64, 0.25, 4.0];
        let mut o = [0f64; 3];
        jit_with(&f, &TargetOptions { opt_level, ..Default::default() }, |e| {
            assert_eq!(call(e, &[p(&mut a), p(&mut b), p(&mut o)], &[3], &[]), 0)
        });
        assert_eq!(o, [0.5, 1.75, -1.0]);
    }
}

#[test]
fn emitted_text() {
    let f = elementwise(Ty::F32, BinOp::Add);
    let ex = [Export::new(&f, "vadd")];
    let ir = emit_llvm(&ex, &TargetOptions::default()).unwrap();
    assert!(ir.contains(" i32 @vadd_packed(ptr") && ir.contains(" i32 @vadd(ptr"), "{ir}");
    assert!(ir.contains("x float>"), "the loop vectorizes:\n{ir}");
    assert!(ir.contains("\"target-cpu\""), "{ir}");
    let asm = emit_asm(&ex, &TargetOptions::default()).unwrap();
    assert!(asm.contains("vadd_packed:"), "{asm}");
    let pf = emit_llvm(&[Export::new(&scale(), "s")], &TargetOptions { opt_level: 0, ..Default::default() }).unwrap();
    assert!(pf.contains("@tfmc_parallel_for") && pf.contains("noalias"), "{pf}");
}

#[test]
fn bad_symbols_and_bad_kir_are_errors() {
    let f = elementwise(Ty::I32, BinOp::Add);
    let o = TargetOptions::default();
    for s in ["", "1x", "a-b", "free", "tfmc_parallel_for", "expf", "__x"] {
        let e = emit_llvm(&[Export::new(&f, s)], &o).unwrap_err();
        assert!(matches!(e, LlvmError::Symbol { .. }), "{s}: {e}");
    }
    let e = emit_llvm(&[Export::new(&f, "a_packed"), Export::new(&f, "a")], &o).unwrap_err();
    assert!(matches!(e, LlvmError::Symbol { .. }), "{e}");

    let bad = |body: Block| {
        let mut k = K::new("bad");
        let x = k.arg("x", Ty::F32);
        let h = k.heap("h", Ty::F32);
        let n = k.var("n", Ty::I64);
        let mut f = k.body(body);
        // Stand-ins for references in the bodies below.
        let _ = (x, h, n);
        f.vars.push(VarDecl { name: "f".into(), ty: Ty::F32 });
        f
    };
    let (x, h, n, fv) = (Buf(0), Buf(1), Var(0), Var(1));
    let cases: Vec<(Block, &str)> = vec![
        (vec![set(n, Expr::Const(Const::F32(1.0)))], "has type f32, expected i64"),
        (vec![st(x, i(0), i(1))], "expected f32"),
        (vec![st(x, Expr::Const(Const::I32(0)), ld(x, i(0)))], "store index"),
        (vec![set(fv, bin(BinOp::Add, ld(x, i(0)), Expr::Const(Const::F64(1.0))))], "Add on f32 and f64"),
        (vec![set(fv, bin(BinOp::Shl, ld(x, i(0)), ld(x, i(0))))], "Shl on f32"),
        (vec![st(Buf(9), i(0), ld(x, i(0)))], "buffer 9 out of range"),
        (vec![set(Var(7), i(0))], "variable 7 out of range"),
        (vec![par(n, i(4), vec![par(n, i(2), vec![])])], "parallel loop inside a parallel loop"),
        (vec![par(n, i(4), vec![Stmt::Alloc { buf: h, len: i(1), zeroed: true }])], "inside a parallel loop"),
        (vec![Stmt::Alloc { buf: x, len: i(1), zeroed: true }], "non-heap"),
        (vec![Stmt::Fail { code: 0 }], "code 0"),
        (vec![set(fv, cast(Ty::F16, ld(x, i(0))))], "memory-only"),
        (vec![set(n, Expr::Bitcast { to: Ty::I64, x: Box::new(ld(x, i(0))) })], "bitcast of f32 to i64"),
    ];
    for (body, want) in cases {
        let e = emit_llvm(&[Export::new(&bad(body.clone()), "k")], &o).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, LlvmError::InvalidKir { .. }) && msg.contains(want), "{body:?}: {msg}");
    }
}

#[test]
fn two_exports_share_a_module() {
    let (add, fill) = (elementwise(Ty::I64, BinOp::Add), scale());
    let ex = [Export::new(&add, "add"), Export::new(&fill, "fill")];
    with_jit(&ex, &TargetOptions::default(), |j| {
        let (mut a, mut b, mut o) = ([1i64, 2], [10i64, 20], [0i64; 2]);
        assert_eq!(call(j.entry("add").unwrap(), &[p(&mut a), p(&mut b), p(&mut o)], &[2], &[]), 0);
        assert_eq!(o, [11, 22]);
        let (mut x, mut y) = ([0.5f32, -1.0], [0f32; 2]);
        assert_eq!(call(j.entry("fill").unwrap(), &[p(&mut x), p(&mut y)], &[2], &[2f64.to_bits()]), 0);
        assert_eq!(y, [1f32.tanh(), (-2f32).tanh()]);
        assert!(j.entry("nope").is_none());
    })
    .unwrap();
}
