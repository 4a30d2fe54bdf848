//! Well-formedness of KIR before a backend translates it, so that no backend ever indexes out
//! of range or hands its code generator mismatched types (LLVM's C API does not check and may
//! crash; Cranelift's verifier panics).
//!
//! Owns the typing rules every backend accepts. They are the module docs of `kir` plus a few
//! lenient extensions that have one obvious meaning: `Not`/`And`/`Or` on integers are bitwise,
//! `Abs` on integers wraps (`|MIN| = MIN`), `Floor`/`Ceil`/`RoundEven` on integers are the
//! identity, `IsNan` on integers is false, `Min`/`Max`/comparisons on `Bool` order
//! `false < true`, `Bitcast` to the same type is the identity. Rejected: `Fail { code: 0 }`
//! (0 means success), `Alloc` of a non-heap buffer, `Alloc` or `Parallel` inside `Parallel`,
//! `Arg(i)` with `i >= n_args`, variables of type `F16`/`BF16`, dims that are not `I64`, and
//! (by [`check`]) every construct of the GPU dialect.
//!
//! Invariant established: every `Var`/`Buf` index is in range and every expression has a
//! type per [`kir::Func::ty`], so `Func::ty`, `Func::var` and `Func::buf` cannot panic later.

use std::cell::Cell;

use crate::schedule::kir::{self, BinOp, Buf, BufDecl, BufKind, Expr, Func, Stmt, Ty, UnOp, Var};

/// Checks `f` for a CPU backend; the error says what is wrong (a backend wraps it with the
/// kernel's name). Each construct of the GPU dialect (`kir` module docs) is rejected by its
/// kind.
pub fn check(f: &Func) -> Result<(), String> {
    check_with(f, false)
}

/// Checks `f` for the NVPTX backend: [`check`]'s rules, plus the GPU dialect's (`kir` module
/// docs): block parallels have one thread count, a positive multiple of 32, for the whole
/// kernel, and nest in no parallel loop (nor one in them); the thread variable is `I64`, never
/// set and read only inside block parallels; barriers are only inside block parallels; shared
/// buffers are used only inside block parallels; no `Fail` inside a block parallel; tensor-core
/// products only inside block parallels. (That barriers sit at block-uniform control flow is
/// the schedule's promise; it is not checked.)
pub fn check_gpu(f: &Func) -> Result<(), String> {
    check_with(f, true)
}

/// The error for construct `what` of the GPU dialect in a kernel for a CPU backend.
fn cpu_dialect(what: &str) -> String {
    format!("{what} belongs to the GPU dialect, which only the NVPTX backend runs")
}

fn check_with(f: &Func, gpu_dialect: bool) -> Result<(), String> {
    if let Some(t) = f.thread {
        if !gpu_dialect {
            return Err(cpu_dialect("the thread-index variable"));
        }
        let d = f.vars.get(t.0 as usize).ok_or_else(|| format!("thread variable {} out of range", t.0))?;
        if d.ty != Ty::I64 {
            return Err("the thread variable is not i64".into());
        }
    }
    for (i, v) in f.vars.iter().enumerate() {
        if matches!(v.ty, Ty::F16 | Ty::BF16) {
            return Err(format!("variable {i} ('{}') has memory-only type {}", v.name, v.ty));
        }
    }
    for (i, b) in f.bufs.iter().enumerate() {
        match b.kind {
            BufKind::Arg(a) if a >= f.n_args => return Err(format!("buffer {i} ('{}') is argument {a} of {}", b.name, f.n_args)),
            BufKind::Shared(_) if !gpu_dialect => return Err(cpu_dialect(&format!("shared buffer '{}'", b.name))),
            _ => {}
        }
    }
    let cx = Cx { f, gpu_dialect, in_block: Cell::new(false), threads: Cell::new(None) };
    for &d in &f.dims {
        if cx.var(d)? != Ty::I64 {
            return Err(format!("dim variable {} is not i64", d.0));
        }
    }
    for &p in &f.params {
        cx.var(p)?;
    }
    cx.block(&f.body, false)
}

struct Cx<'a> {
    f: &'a Func,
    /// The GPU dialect is allowed ([`check_gpu`]).
    gpu_dialect: bool,
    /// Inside a block parallel (GPU dialect).
    in_block: Cell<bool>,
    /// The threads per block of the block parallels seen so far.
    threads: Cell<Option<u32>>,
}

impl Cx<'_> {
    fn var(&self, v: Var) -> Result<Ty, String> {
        self.f.vars.get(v.0 as usize).map(|d| d.ty).ok_or_else(|| format!("variable {} out of range", v.0))
    }

    fn buf(&self, b: Buf) -> Result<&BufDecl, String> {
        self.f.bufs.get(b.0 as usize).ok_or_else(|| format!("buffer {} out of range", b.0))
    }

    /// A shared buffer is only used inside a block parallel.
    fn shared_ok(&self, b: Buf) -> Result<(), String> {
        let d = self.buf(b)?;
        if matches!(d.kind, BufKind::Shared(_)) && !self.in_block.get() {
            return Err(format!("shared buffer '{}' used outside a block parallel", d.name));
        }
        Ok(())
    }

    /// The thread variable is never set (nor a loop's variable; a product's results are `F32`).
    fn not_thread(&self, v: Var) -> Result<(), String> {
        if self.f.thread == Some(v) {
            return Err("the thread variable is set".into());
        }
        Ok(())
    }

    /// Construct `what` of the GPU dialect: an error unless allowed.
    fn dialect(&self, what: &str) -> Result<(), String> {
        if self.gpu_dialect { Ok(()) } else { Err(cpu_dialect(what)) }
    }

    fn expect(&self, e: &Expr, want: Ty, what: &str) -> Result<(), String> {
        let t = self.ty(e)?;
        if t == want { Ok(()) } else { Err(format!("{what} has type {t}, expected {want}")) }
    }

    fn block(&self, b: &[Stmt], in_par: bool) -> Result<(), String> {
        b.iter().try_for_each(|s| self.stmt(s, in_par))
    }

    fn stmt(&self, s: &Stmt, in_par: bool) -> Result<(), String> {
        match s {
            Stmt::Set { var, value } => {
                let t = self.var(*var)?;
                self.not_thread(*var)?;
                self.expect(value, t, &format!("the value set to variable {}", var.0))
            }
            Stmt::Store { buf, index, value } => {
                let d = self.buf(*buf)?;
                self.shared_ok(*buf)?;
                self.expect(index, Ty::I64, "a store index")?;
                self.expect(value, d.elem.value(), &format!("the value stored to '{}'", d.name))
            }
            Stmt::For { var, lo, hi, body } => {
                if self.var(*var)? != Ty::I64 {
                    return Err(format!("loop variable {} is not i64", var.0));
                }
                self.not_thread(*var)?;
                self.expect(lo, Ty::I64, "a loop start")?;
                self.expect(hi, Ty::I64, "a loop end")?;
                self.block(body, in_par)
            }
            Stmt::Parallel { var, n, body } => {
                if in_par {
                    return Err("a parallel loop inside a parallel loop".into());
                }
                if self.var(*var)? != Ty::I64 {
                    return Err(format!("parallel loop variable {} is not i64", var.0));
                }
                self.not_thread(*var)?;
                self.expect(n, Ty::I64, "a parallel loop's count")?;
                self.block(body, true)
            }
            Stmt::BlockParallel { var, n, threads, body } => {
                self.dialect("a block parallel")?;
                if in_par {
                    return Err("a block parallel inside a parallel loop".into());
                }
                if *threads == 0 || threads % 32 != 0 {
                    return Err(format!("a block parallel of {threads} threads, not a positive multiple of 32"));
                }
                if let Some(t) = self.threads.get().filter(|t| t != threads) {
                    return Err(format!("block parallels of {t} and {threads} threads in one kernel"));
                }
                self.threads.set(Some(*threads));
                if self.var(*var)? != Ty::I64 {
                    return Err(format!("block parallel variable {} is not i64", var.0));
                }
                self.not_thread(*var)?;
                self.expect(n, Ty::I64, "a block parallel's count")?;
                self.in_block.set(true);
                let r = self.block(body, true);
                self.in_block.set(false);
                r
            }
            Stmt::If { cond, then, els } => {
                self.expect(cond, Ty::Bool, "an if condition")?;
                self.block(then, in_par)?;
                self.block(els, in_par)
            }
            Stmt::Alloc { buf, len, .. } => {
                let d = self.buf(*buf)?;
                if d.kind != BufKind::Heap {
                    return Err(format!("alloc of non-heap buffer '{}'", d.name));
                }
                if in_par {
                    return Err(format!("alloc of '{}' inside a parallel loop", d.name));
                }
                self.expect(len, Ty::I64, "an allocation length")
            }
            Stmt::Barrier => {
                self.dialect("a barrier")?;
                if !self.in_block.get() {
                    return Err("a barrier outside a block parallel".into());
                }
                Ok(())
            }
            Stmt::TileProduct(t) => {
                if !(1..=kir::TILE_MAX_ROWS).contains(&t.m) || !(1..=kir::TILE_MAX_COLS).contains(&t.n) {
                    return Err(format!(
                        "a tile product of {}x{} (rows 1..={}, columns 1..={})",
                        t.m,
                        t.n,
                        kir::TILE_MAX_ROWS,
                        kir::TILE_MAX_COLS
                    ));
                }
                for e in t.exprs() {
                    self.expect(e, Ty::I64, "a tile product's index or size")?;
                }
                for b in t.bufs() {
                    let d = self.buf(b)?;
                    if d.elem != Ty::F32 {
                        return Err(format!("tile product buffer '{}' holds {}, not f32", d.name, d.elem));
                    }
                    if matches!(d.kind, BufKind::Shared(_)) {
                        return Err(format!("tile product buffer '{}' is shared memory", d.name));
                    }
                }
                if t.c == t.a || t.c == t.b {
                    return Err("a tile product whose C is also an input".into());
                }
                Ok(())
            }
            Stmt::Mma(m) => {
                self.dialect("a tensor-core product")?;
                if !self.in_block.get() {
                    return Err("a tensor-core product outside a block parallel".into());
                }
                if m.a.len() != 8 || m.b.len() != 4 || m.c.len() != 4 || m.d.len() != 4 {
                    return Err("a tensor-core product without 8 A, 4 B, 4 C and 4 D elements per thread".into());
                }
                for e in m.operands() {
                    self.expect(e, Ty::F32, "a tensor-core operand")?;
                }
                for &d in &m.d {
                    if self.var(d)? != Ty::F32 {
                        return Err(format!("tensor-core result variable {} is not f32", d.0));
                    }
                }
                Ok(())
            }
            Stmt::Fail { code } => {
                if *code == 0 {
                    return Err("fail with code 0 (which means success)".into());
                }
                if self.in_block.get() {
                    return Err("a failure inside a block parallel (a thread leaving early strands the block's barriers)".into());
                }
                Ok(())
            }
        }
    }

    fn ty(&self, e: &Expr) -> Result<Ty, String> {
        Ok(match e {
            Expr::Const(c) => c.ty(),
            Expr::Var(v) => {
                if self.f.thread == Some(*v) && !self.in_block.get() {
                    return Err("the thread variable is read outside a block parallel".into());
                }
                self.var(*v)?
            }
            Expr::Load { buf, index } => {
                self.shared_ok(*buf)?;
                let d = self.buf(*buf)?;
                self.expect(index, Ty::I64, "a load index")?;
                d.elem.value()
            }
            Expr::Unary { op, x } => {
                let t = self.ty(x)?;
                unary(*op, t).ok_or_else(|| format!("{op:?} on {t}"))?
            }
            Expr::Binary { op, a, b, .. } => {
                let (ta, tb) = (self.ty(a)?, self.ty(b)?);
                if ta != tb {
                    return Err(format!("{op:?} on {ta} and {tb}"));
                }
                binary(*op, ta).ok_or_else(|| format!("{op:?} on {ta}"))?
            }
            Expr::Select { c, a, b } => {
                self.expect(c, Ty::Bool, "a select condition")?;
                let (ta, tb) = (self.ty(a)?, self.ty(b)?);
                if ta != tb {
                    return Err(format!("select of {ta} and {tb}"));
                }
                ta
            }
            Expr::Cast { to, x } => {
                self.ty(x)?;
                if matches!(to, Ty::F16 | Ty::BF16) {
                    return Err(format!("cast to memory-only type {to}"));
                }
                *to
            }
            Expr::Bitcast { to, x } => {
                let t = self.ty(x)?;
                let ok = t == *to || matches!((t, *to), (Ty::I32, Ty::F32) | (Ty::F32, Ty::I32) | (Ty::I64, Ty::F64) | (Ty::F64, Ty::I64));
                if !ok {
                    return Err(format!("bitcast of {t} to {to}"));
                }
                *to
            }
        })
    }
}

/// The result type of `op` on `t`, if allowed.
fn unary(op: UnOp, t: Ty) -> Option<Ty> {
    use UnOp::*;
    let ok = match op {
        Neg => t.is_int() || t.is_float(),
        Not => t == Ty::Bool || t.is_int(),
        Abs | Floor | Ceil | RoundEven => t.is_int() || t.is_float(),
        Sqrt | Exp | Exp2 | Log | Log2 | Log1p | Expm1 | Tanh | Erf | Sin | Cos => t.is_float(),
        IsNan => return (t.is_int() || t.is_float()).then_some(Ty::Bool),
    };
    ok.then_some(t)
}

/// The result type of `op` on two operands of type `t`, if allowed.
fn binary(op: BinOp, t: Ty) -> Option<Ty> {
    use BinOp::*;
    let num = t.is_int() || t.is_float();
    let ok = match op {
        Add | Sub | Mul | Div | Rem => num,
        Min | Max => num || t == Ty::Bool,
        Pow | Atan2 => t.is_float(),
        Lt | Le | Gt | Ge | Eq | Ne => return Some(Ty::Bool),
        And | Or => t == Ty::Bool || t.is_int(),
        Shl => t.is_int(),
        AddOverflows | SubOverflows | MulOverflows => return t.is_int().then_some(Ty::Bool),
    };
    ok.then_some(t)
}
