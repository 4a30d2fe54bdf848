//! NVPTX backend tests on hand-written KIR and the standard library: the spine transform
//! (wrapping, liveness, rejections), the PTX text (entries, launch bounds, atomics, thread
//! registers, targets), libdevice linking and the errors.

use std::path::PathBuf;

use super::spine::{SpineError, count_parallel, make_spine_memory_free};
use super::*;
use crate::backend::test_kir::{K, bin, cast, for_, i, ld, par, set, st, un, v};
use crate::schedule::kir::*;

fn f32c(x: f32) -> Expr {
    Expr::Const(Const::F32(x))
}

fn if_(cond: Expr, then: Block, els: Block) -> Stmt {
    Stmt::If { cond, then, els }
}

/// A kernel with a spine (pure sets, a rank-0 store, a heap buffer) and two parallel loops:
/// `t[j] = x[j] * 2` into a heap buffer, then `o[j] = t[j] + o0` with `o0 = x[0]` stored by
/// the spine into `s[0]`.
fn mixed() -> Func {
    let mut k = K::new("mixed");
    let (x, s, o) = (k.arg("x", Ty::F32), k.arg("s", Ty::F32), k.arg("o", Ty::F32));
    let t = k.heap("t", Ty::F32);
    let n = k.dim("n");
    let (m, j, j2) = (k.var("m", Ty::I64), k.var("j", Ty::I64), k.var("j2", Ty::I64));
    k.body(vec![
        set(m, bin(BinOp::Max, v(n), i(1))),
        st(s, i(0), ld(x, i(0))),
        Stmt::Alloc { buf: t, len: v(m), zeroed: true },
        par(j, v(n), vec![st(t, v(j), bin(BinOp::Mul, ld(x, v(j)), f32c(2.0)))]),
        par(j2, v(n), vec![st(o, v(j2), bin(BinOp::Add, ld(t, v(j2)), ld(s, i(0))))]),
    ])
}

#[test]
fn spine_wraps_each_memory_run_in_a_one_iteration_parallel_loop() {
    let f = mixed();
    let g = make_spine_memory_free(&f).unwrap();
    assert_eq!(g.vars.len(), f.vars.len() + 1);
    let it = Var(f.vars.len() as u32);
    assert_eq!(g.vars[it.0 as usize].name, "spine.it");
    assert_eq!(g.body[0], f.body[0], "a pure set stays in the spine");
    assert_eq!(g.body[1], Stmt::Parallel { var: it, n: i(1), body: vec![f.body[1].clone()] });
    assert_eq!(g.body[2..], f.body[2..], "alloc and parallel loops are kept");
    assert_eq!(count_parallel(&g.body), 3);
    crate::schedule::validate::check(&g).unwrap();
    // Nothing to wrap: unchanged, no new variable.
    let mut k = K::new("pure");
    let o = k.arg("o", Ty::F32);
    let n = k.dim("n");
    let j = k.var("j", Ty::I64);
    let f = k.body(vec![par(j, v(n), vec![st(o, v(j), f32c(1.0))])]);
    assert_eq!(make_spine_memory_free(&f).unwrap(), f);
}

#[test]
fn spine_wraps_consecutive_memory_statements_together_and_recurses_into_ifs() {
    let mut k = K::new("k");
    let o = k.arg("o", Ty::F32);
    let n = k.dim("n");
    let (j, q) = (k.var("j", Ty::I64), k.var("q", Ty::I64));
    let body = vec![
        st(o, i(0), f32c(1.0)),
        for_(q, i(1), i(3), vec![st(o, v(q), f32c(2.0))]),
        if_(
            bin(BinOp::Gt, v(n), i(4)),
            vec![st(o, i(3), f32c(3.0)), par(j, v(n), vec![st(o, v(j), f32c(4.0))])],
            vec![if_(bin(BinOp::Lt, v(n), i(0)), vec![Stmt::Fail { code: 7 }], vec![])],
        ),
    ];
    let f = k.body(body.clone());
    let g = make_spine_memory_free(&f).unwrap();
    let it = Var(f.vars.len() as u32);
    assert_eq!(g.body.len(), 2);
    assert_eq!(g.body[0], Stmt::Parallel { var: it, n: i(1), body: body[..2].to_vec() });
    let Stmt::If { then, els, .. } = &g.body[1] else { panic!("the if around the parallel loop is kept: {:?}", g.body[1]) };
    assert!(matches!(&then[0], Stmt::Parallel { var, .. } if *var == it));
    assert!(matches!(&then[1], Stmt::Parallel { var, .. } if *var == j));
    assert_eq!(els, &vec![if_(bin(BinOp::Lt, v(n), i(0)), vec![Stmt::Fail { code: 7 }], vec![])]);
    assert_eq!(count_parallel(&g.body), 3);
}

#[test]
fn spine_rejects_a_variable_read_after_the_wrapped_code_that_sets_it() {
    let mut k = K::new("k");
    let (x, o) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32));
    let n = k.dim("n");
    let (a, j) = (k.var("a", Ty::F32), k.var("j", Ty::I64));
    let f = k.body(vec![set(a, ld(x, i(0))), par(j, v(n), vec![st(o, v(j), v(a))])]);
    let e = make_spine_memory_free(&f).unwrap_err();
    assert_eq!(e, SpineError::Escapes { var: "a".into() });
    assert!(e.to_string().contains("variable 'a' is set by code that reads or writes memory"), "{e}");
}

/// The generic plan's rank-0 results: an accumulator set by a loop over memory, a
/// memory-free statement, then the store that reads the accumulator. The run takes the
/// statements up to that store into one wrapper, so the accumulator never leaves it.
#[test]
fn spine_extends_a_run_to_the_reader_of_what_it_sets() {
    let mut k = K::new("k");
    let (x, o) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32));
    let n = k.dim("n");
    let (acc, acc2, q, j) = (k.var("acc", Ty::F32), k.var("acc2", Ty::F32), k.var("q", Ty::I64), k.var("j", Ty::I64));
    let f = k.body(vec![
        set(acc, f32c(0.0)),
        for_(q, i(0), v(n), vec![set(acc, bin(BinOp::Add, v(acc), ld(x, v(q))))]),
        set(acc2, f32c(2.0)),
        st(o, i(0), bin(BinOp::Mul, v(acc), v(acc2))),
        par(j, v(n), vec![st(o, v(j), f32c(1.0))]),
    ]);
    let g = make_spine_memory_free(&f).unwrap();
    // One wrapper (the loop, the memory-free set and the store) and the parallel loop.
    assert_eq!(count_parallel(&g.body), 2);
    let Stmt::Parallel { body, .. } = &g.body[1] else { panic!("not wrapped: {:?}", g.body) };
    assert_eq!(body.len(), 3, "{body:?}");
    // A reader after a parallel loop cannot be reached: still an error.
    let mut k = K::new("k");
    let (x, o) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32));
    let n = k.dim("n");
    let (a, j) = (k.var("a", Ty::F32), k.var("j", Ty::I64));
    let f = k.body(vec![set(a, ld(x, i(0))), par(j, v(n), vec![st(o, v(j), f32c(0.0))]), st(o, i(0), v(a))]);
    assert_eq!(make_spine_memory_free(&f).unwrap_err(), SpineError::Escapes { var: "a".into() });
}

#[test]
fn spine_accepts_a_variable_that_is_set_again_before_it_is_read() {
    let mut k = K::new("k");
    let (x, o) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32));
    let n = k.dim("n");
    let (a, j, q) = (k.var("a", Ty::F32), k.var("j", Ty::I64), k.var("q", Ty::I64));
    let f = k.body(vec![
        set(a, ld(x, i(0))),
        st(o, i(0), v(a)),
        // `a` and `q` are set again (also in the loop: its head re-sets `q`) before any read.
        set(a, f32c(2.0)),
        for_(q, i(0), v(n), vec![set(a, bin(BinOp::Add, v(a), f32c(1.0)))]),
        par(j, v(n), vec![st(o, v(j), v(a))]),
    ]);
    let g = make_spine_memory_free(&f).unwrap();
    assert_eq!(count_parallel(&g.body), 2);
}

#[test]
fn spine_rejects_what_the_protocol_cannot_express() {
    let mut k = K::new("k");
    let (x, o) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32));
    let t = k.heap("t", Ty::F32);
    let n = k.dim("n");
    let (j, q) = (k.var("j", Ty::I64), k.var("q", Ty::I64));
    let inner = par(j, v(n), vec![st(o, v(j), f32c(1.0))]);
    let in_loop = k.0.clone();
    let mut in_loop = K(in_loop).body(vec![for_(q, i(0), i(2), vec![inner.clone()])]);
    in_loop.name = "in_loop".into();
    assert_eq!(make_spine_memory_free(&in_loop).unwrap_err(), SpineError::ParallelInLoop { var: "q".into() });
    let cond = K(k.0.clone()).body(vec![if_(bin(BinOp::Gt, ld(x, i(0)), f32c(0.0)), vec![inner.clone()], vec![])]);
    assert_eq!(make_spine_memory_free(&cond).unwrap_err(), SpineError::MemoryCondition);
    let alloc = K(k.0.clone()).body(vec![if_(
        bin(BinOp::Gt, v(n), i(0)),
        vec![st(o, i(0), f32c(1.0)), Stmt::Alloc { buf: t, len: v(n), zeroed: true }],
        vec![],
    )]);
    assert_eq!(make_spine_memory_free(&alloc).unwrap_err(), SpineError::AllocInMemoryCode { buf: "t".into() });
}

/// Every kernel of `lib/` and `tests/ok/`, under both schedules: the spine transform succeeds
/// and keeps the KIR valid (the schedule never sets a variable in memory code that the spine
/// reads later, nor puts a parallel loop in a sequential one).
#[test]
fn spine_accepts_every_library_and_golden_kernel_under_both_schedules() {
    let mut programs = crate::testing::lib_programs();
    let ok = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/ok");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&ok).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "tfm")).collect();
    files.sort();
    for p in files {
        programs.push((p.display().to_string(), crate::load(&p).unwrap()));
    }
    let mut n = 0;
    let mut wrapped = 0;
    for (file, program) in &programs {
        for attention in [false, true] {
            for k in &program.kernels {
                let mut opts = crate::driver::CompileOptions::default();
                opts.schedule.attention = attention;
                let Ok(prep) = crate::driver::prepare(program, &k.name, &opts, &crate::driver::Target::host_llvm()) else {
                    // A kernel needing a param without a default is not compiled anywhere.
                    continue;
                };
                let f = &prep.scheduled.func;
                let g = make_spine_memory_free(f).unwrap_or_else(|e| panic!("{file}/{}: {e}", k.name));
                crate::schedule::validate::check(&g).unwrap_or_else(|e| panic!("{file}/{}: {e}", k.name));
                wrapped += usize::from(g.vars.len() > f.vars.len());
                n += 1;
            }
        }
    }
    assert!(n >= 40, "only {n} kernels");
    assert!(wrapped > 0, "no kernel had spine code to wrap");
}

fn ptx(f: &Func, opts: &NvptxOptions) -> Result<String, NvptxError> {
    emit_ptx(&[Export::new(f, "k")], opts)
}

#[test]
fn ptx_has_the_protocol_entries() {
    let text = ptx(&mixed(), &NvptxOptions::default()).unwrap();
    assert!(text.contains(".version 8.0"), "{text}");
    assert!(text.contains(".target sm_90"));
    assert!(text.contains(".address_size 64"));
    for e in ["k_prep", "k_seg0", "k_seg1", "k_seg2"] {
        assert!(text.contains(&format!(".visible .entry {e}(")), "entry {e} missing:\n{text}");
    }
    assert!(!text.contains("k_seg3"));
    assert_eq!(text.matches(".maxntid 128").count(), 3, "segments are bounded to BLOCK threads");
    assert_eq!(text.matches(".maxntid 1\n").count(), 1, "prep runs on one thread");
    // Five u64 parameters per entry.
    assert!(text.contains("k_prep_param_4"));
    assert!(!text.contains("k_prep_param_5"));
    // Grid-stride loop over thread coordinates; global loads and stores; no calls left.
    for s in ["%tid.x", "%ntid.x", "%ctaid.x", "%nctaid.x", "ld.global", "st.global"] {
        assert!(text.contains(s), "{s} missing");
    }
    assert!(!text.contains("call"), "everything is inlined:\n{text}");
    // The outlined `.body` functions are internal and inlined away.
    assert!(!text.contains(".body"));
}

#[test]
fn ptx_failures_use_a_64_bit_compare_and_swap_in_segments() {
    let mut k = K::new("k");
    let (x, o) = (k.arg("x", Ty::I64), k.arg("o", Ty::I64));
    let n = k.dim("n");
    let j = k.var("j", Ty::I64);
    let code = fail_code(FailKind::OutOfRange, 0);
    let f =
        k.body(vec![par(j, v(n), vec![if_(bin(BinOp::Ge, ld(x, v(j)), v(n)), vec![Stmt::Fail { code }], vec![st(o, v(j), ld(x, v(j)))])])]);
    let text = ptx(&f, &NvptxOptions::default()).unwrap();
    assert!(text.contains("atom.relaxed.sys.global.cas.b64"), "{text}");
    assert!(text.contains(&format!(", 0, {code};")), "the code is swapped in for 0:\n{text}");
}

#[test]
fn ptx_targets_the_requested_architecture() {
    let text = ptx(&mixed(), &NvptxOptions { sm: 80, ..Default::default() }).unwrap();
    assert!(text.contains(".target sm_80"));
    let text = ptx(&mixed(), &NvptxOptions { sm: 120, ..Default::default() }).unwrap();
    assert!(text.contains(".target sm_120") && text.contains(".version 8.7"));
    let e = ptx(&mixed(), &NvptxOptions { sm: 60, ..Default::default() }).unwrap_err();
    assert!(matches!(e, NvptxError::Arch { sm: 60 }));
    assert!(e.to_string().starts_with("unsupported GPU architecture sm_60; supported: sm_70, sm_72"), "{e}");
    let e = ptx(&mixed(), &NvptxOptions { opt_level: 4, ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("optimization level 4"), "{e}");
}

/// `o[j] = tanh(x[j]) + x[j] % 0.75` (f32) and `erf` in f64: libdevice functions.
fn libm_kernel() -> Func {
    let mut k = K::new("gelu");
    let (x, o) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32));
    let (y, p) = (k.arg("y", Ty::F64), k.arg("p", Ty::F64));
    let n = k.dim("n");
    let j = k.var("j", Ty::I64);
    k.body(vec![par(
        j,
        v(n),
        vec![
            st(o, v(j), bin(BinOp::Add, un(UnOp::Tanh, ld(x, v(j))), bin(BinOp::Rem, ld(x, v(j)), f32c(0.75)))),
            st(p, v(j), un(UnOp::Erf, ld(y, v(j)))),
        ],
    )])
}

#[test]
fn libdevice_functions_are_linked_and_inlined() {
    if libdevice::find().is_err() {
        eprintln!("SKIP: libdevice not found (run ./setup.sh)");
        assert!(std::env::var_os("CI").is_none(), "CI must have libdevice (./setup.sh installs it)");
        return;
    }
    let text = ptx(&libm_kernel(), &NvptxOptions::default()).unwrap();
    assert!(!text.contains("__nv_"), "libdevice calls are inlined:\n{text}");
    assert!(!text.contains("__nvvm_reflect"), "NVVMReflect folded the queries");
    assert!(!text.contains(".func"), "no out-of-line functions remain");
    // libdevice's constant tables are internal (`.global` without `.visible`), if any remain.
    assert!(!text.contains(".visible .global"));
}

#[test]
fn a_missing_libdevice_is_an_error_naming_the_function_and_the_fix() {
    let bad = PathBuf::from("/nonexistent/libdevice.10.bc");
    let opts = NvptxOptions { libdevice: Some(bad.clone()), ..Default::default() };
    let e = ptx(&libm_kernel(), &opts).unwrap_err();
    let NvptxError::NoLibdevice { kernel, function, searched } = &e else { panic!("{e}") };
    assert_eq!((kernel.as_str(), function.as_str()), ("gelu", "__nv_tanhf"));
    assert_eq!(searched, &vec![bad]);
    let msg = e.to_string();
    assert!(msg.contains("./setup.sh") && msg.contains("TFMC_LIBDEVICE"), "{msg}");
    // Kernels without such functions never look for it.
    ptx(&mixed(), &opts).unwrap();
}

#[test]
fn launch_info_counts_segments_and_heap_buffers() {
    let info = launch_info(&mixed()).unwrap();
    assert_eq!(info, LaunchInfo { block: BLOCK, heap_elem_bytes: vec![4], segments: 3 });
}

#[test]
fn invalid_kir_and_unexpressible_spines_are_errors() {
    let mut k = K::new("k");
    let o = k.arg("o", Ty::F32);
    let f = k.body(vec![Stmt::Fail { code: 0 }, st(o, i(0), f32c(1.0))]);
    let e = ptx(&f, &NvptxOptions::default()).unwrap_err();
    assert!(e.to_string().contains("invalid KIR in kernel 'k'"), "{e}");
    let mut k = K::new("k");
    let (x, o) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32));
    let (a, j) = (k.var("a", Ty::F32), k.var("j", Ty::I64));
    let f = k.body(vec![set(a, ld(x, i(0))), par(j, i(4), vec![st(o, v(j), v(a))])]);
    let e = ptx(&f, &NvptxOptions::default()).unwrap_err();
    assert!(e.to_string().starts_with("kernel 'k' cannot be compiled for a GPU: variable 'a'"), "{e}");
    let e = emit_ptx(&[Export::new(&f, "a b")], &NvptxOptions::default()).unwrap_err();
    assert!(e.to_string().contains("invalid export symbol 'a b'"), "{e}");
}

/// `ptxas` from the `.venv` `./setup.sh` makes (or `TFMC_PTXAS`), if there is one.
pub(super) fn ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TFMC_PTXAS") {
        return Some(PathBuf::from(p));
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().find_map(|d| {
        let rd = std::fs::read_dir(d.join(".venv/lib")).ok()?;
        rd.filter_map(|e| e.ok()).map(|e| e.path().join("site-packages/nvidia/cuda_nvcc/bin/ptxas")).find(|p| p.is_file())
    })
}

/// Assembles `text` for `sm_{sm}` with [`ptxas`] where it is installed (kept as
/// `target/tmp/{stem}.ptx`; a failure names that file and shows ptxas's output).
pub(super) fn assemble_if_installed(text: &str, stem: &str, sm: u32) {
    let Some(ptxas) = ptxas() else { return };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{stem}.ptx"));
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(ptxas).arg(format!("-arch=sm_{sm}")).arg(&file).arg("-o").arg("/dev/null").output().unwrap();
    assert!(out.status.success(), "ptxas failed on {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
}

/// Every KIR operation on every type it allows, in one kernel: NVPTX selects all of them
/// (LLVM aborts the process on an operation it cannot select, so this must never reach it),
/// no external function is left in the PTX, and ptxas accepts it where it is installed.
#[test]
fn every_kir_operation_lowers_to_ptx() {
    use BinOp::*;
    use UnOp::*;
    let mut k = K::new("ops");
    let n = k.dim("n");
    let j = k.var("j", Ty::I64);
    let mut body = Vec::new();
    for t in [Ty::I32, Ty::I64, Ty::F32, Ty::F64, Ty::Bool] {
        let x = k.arg(&format!("x{t}"), t);
        let o = k.arg(&format!("o{t}"), t);
        let b = k.arg(&format!("b{t}"), Ty::Bool);
        let xv = || ld(x, v(j));
        let mut vals: Vec<Expr> = Vec::new();
        let mut preds: Vec<Expr> = Vec::new();
        for op in [Neg, Not, Abs, Sqrt, Floor, Ceil, RoundEven, Exp, Exp2, Log, Log2, Log1p, Expm1, Tanh, Erf, Sin, Cos, IsNan] {
            let ok = match op {
                Neg | Abs | Floor | Ceil | RoundEven => t != Ty::Bool,
                Not => t == Ty::Bool || t.is_int(),
                IsNan => t != Ty::Bool,
                _ => t.is_float(),
            };
            if ok {
                let e = un(op, xv());
                if op == IsNan { preds.push(e) } else { vals.push(e) }
            }
        }
        for op in
            [Add, Sub, Mul, Div, Rem, Min, Max, Pow, Atan2, Lt, Le, Gt, Ge, Eq, Ne, And, Or, Shl, AddOverflows, SubOverflows, MulOverflows]
        {
            let ok = match op {
                Add | Sub | Mul | Div | Rem => t != Ty::Bool,
                Min | Max | Lt | Le | Gt | Ge | Eq | Ne => true,
                Pow | Atan2 => t.is_float(),
                And | Or => t == Ty::Bool || t.is_int(),
                Shl | AddOverflows | SubOverflows | MulOverflows => t.is_int(),
            };
            if ok {
                let e = bin(op, xv(), ld(x, bin(Sub, v(n), i(1))));
                if op.is_predicate() { preds.push(e) } else { vals.push(e) }
            }
        }
        for to in [Ty::I32, Ty::I64, Ty::F32, Ty::F64, Ty::Bool] {
            vals.push(cast(t, cast(to, xv())));
        }
        let bits = match t {
            Ty::I32 => Some(Ty::F32),
            Ty::F32 => Some(Ty::I32),
            Ty::I64 => Some(Ty::F64),
            Ty::F64 => Some(Ty::I64),
            _ => None,
        };
        if let Some(to) = bits {
            let bc = Expr::Bitcast { to, x: Box::new(xv()) };
            vals.push(Expr::Bitcast { to: t, x: Box::new(bc) });
        }
        for (q, e) in vals.into_iter().enumerate() {
            body.push(st(o, bin(Add, v(j), i(q as i64)), e));
        }
        for (q, e) in preds.into_iter().enumerate() {
            let sel = Expr::Select { c: Box::new(e), a: Box::new(Expr::Const(Const::Bool(true))), b: Box::new(ld(b, v(j))) };
            body.push(st(b, bin(Add, v(j), i(q as i64)), sel));
        }
    }
    let f = k.body(vec![par(j, v(n), body)]);
    crate::schedule::validate::check(&f).unwrap();
    if libdevice::find().is_err() {
        eprintln!("SKIP: libdevice not found (run ./setup.sh)");
        assert!(std::env::var_os("CI").is_none(), "CI must have libdevice (./setup.sh installs it)");
        return;
    }
    for sm in [70, 90] {
        let text = ptx(&f, &NvptxOptions { sm, ..Default::default() }).unwrap();
        // libdevice's slow paths may stay functions (`.func`), but nothing is external.
        assert!(!text.contains(".extern"), "no external functions:\n{text}");
        assert!(!text.contains("__nv_") && !text.contains("__nvvm_reflect"));
        assemble_if_installed(&text, &format!("nvptx_ops_sm{sm}"), sm);
    }
}
