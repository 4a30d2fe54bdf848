//! KIR-building helpers shared by every backend's unit tests (`backend::llvm::tests`,
//! `backend::cranelift::tests`, `backend::nvptx::tests*`): a function builder, expression and
//! statement constructors, raw buffer pointers, a packed-entry call, and one small kernel.

use std::ffi::c_void;

use crate::backend::llvm::PackedFn;
use crate::schedule::kir::*;

/// A KIR function under construction.
pub(crate) struct K(pub(crate) Func);

impl K {
    pub(crate) fn new(name: &str) -> K {
        K(Func {
            name: name.into(),
            vars: vec![],
            bufs: vec![],
            dims: vec![],
            params: vec![],
            n_args: 0,
            sites: vec![],
            thread: None,
            body: vec![],
        })
    }
    pub(crate) fn var(&mut self, name: &str, ty: Ty) -> Var {
        self.0.vars.push(VarDecl { name: name.into(), ty });
        Var(self.0.vars.len() as u32 - 1)
    }
    fn buf(&mut self, name: &str, elem: Ty, kind: BufKind) -> Buf {
        self.0.bufs.push(BufDecl { name: name.into(), elem, kind });
        Buf(self.0.bufs.len() as u32 - 1)
    }
    pub(crate) fn arg(&mut self, name: &str, elem: Ty) -> Buf {
        self.0.n_args += 1;
        self.buf(name, elem, BufKind::Arg(self.0.n_args - 1))
    }
    pub(crate) fn heap(&mut self, name: &str, elem: Ty) -> Buf {
        self.buf(name, elem, BufKind::Heap)
    }
    pub(crate) fn stack(&mut self, name: &str, elem: Ty, n: u32) -> Buf {
        self.buf(name, elem, BufKind::Stack(n))
    }
    /// A shared buffer (GPU dialect).
    pub(crate) fn shared(&mut self, name: &str, elem: Ty, n: u32) -> Buf {
        self.buf(name, elem, BufKind::Shared(n))
    }
    /// The thread-index variable (GPU dialect), declared on first use.
    pub(crate) fn thread(&mut self) -> Var {
        match self.0.thread {
            Some(t) => t,
            None => {
                let t = self.var("thread", Ty::I64);
                self.0.thread = Some(t);
                t
            }
        }
    }
    pub(crate) fn dim(&mut self, name: &str) -> Var {
        let v = self.var(name, Ty::I64);
        self.0.dims.push(v);
        v
    }
    pub(crate) fn param(&mut self, name: &str, ty: Ty) -> Var {
        let v = self.var(name, ty);
        self.0.params.push(v);
        v
    }
    pub(crate) fn body(mut self, body: Block) -> Func {
        self.0.body = body;
        self.0
    }
}

pub(crate) fn i(v: i64) -> Expr {
    Expr::Const(Const::I64(v))
}
pub(crate) fn f32c(v: f32) -> Expr {
    Expr::Const(Const::F32(v))
}
pub(crate) fn v(x: Var) -> Expr {
    Expr::Var(x)
}
pub(crate) fn ld(b: Buf, index: Expr) -> Expr {
    Expr::Load { buf: b, index: Box::new(index) }
}
pub(crate) fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
    Expr::Binary { op, a: Box::new(a), b: Box::new(b), reassoc: false }
}
pub(crate) fn re(op: BinOp, a: Expr, b: Expr) -> Expr {
    Expr::Binary { op, a: Box::new(a), b: Box::new(b), reassoc: true }
}
pub(crate) fn un(op: UnOp, x: Expr) -> Expr {
    Expr::Unary { op, x: Box::new(x) }
}
pub(crate) fn cast(to: Ty, x: Expr) -> Expr {
    Expr::Cast { to, x: Box::new(x) }
}
pub(crate) fn sel(c: Expr, a: Expr, b: Expr) -> Expr {
    Expr::Select { c: Box::new(c), a: Box::new(a), b: Box::new(b) }
}
pub(crate) fn set(var: Var, value: Expr) -> Stmt {
    Stmt::Set { var, value }
}
pub(crate) fn st(buf: Buf, index: Expr, value: Expr) -> Stmt {
    Stmt::Store { buf, index, value }
}
pub(crate) fn for_(var: Var, lo: Expr, hi: Expr, body: Block) -> Stmt {
    Stmt::For { var, lo, hi, body }
}
pub(crate) fn par(var: Var, n: Expr, body: Block) -> Stmt {
    Stmt::Parallel { var, n, body }
}
/// A block parallel of `threads` threads per block (GPU dialect).
pub(crate) fn bpar(var: Var, n: Expr, threads: u32, body: Block) -> Stmt {
    Stmt::BlockParallel { var, n, threads, body }
}
pub(crate) fn if_(cond: Expr, then: Block, els: Block) -> Stmt {
    Stmt::If { cond, then, els }
}

pub(crate) fn p<T>(x: &mut [T]) -> *mut c_void {
    x.as_mut_ptr().cast()
}

/// Calls a packed entry.
pub(crate) fn call(f: PackedFn, bufs: &[*mut c_void], dims: &[i64], params: &[u64]) -> i32 {
    // SAFETY: the tests pass buffers of the sizes their kernels index.
    unsafe { f(bufs.as_ptr(), dims.as_ptr(), params.as_ptr()) }
}

/// `out[i] = op(a[i], b[i])` for `i < n`, elements of type `t`.
pub(crate) fn elementwise(t: Ty, op: BinOp) -> Func {
    let mut k = K::new("ew");
    let (a, b, o) = (k.arg("a", t), k.arg("b", t), k.arg("o", t));
    let n = k.dim("n");
    let iv = k.var("i", Ty::I64);
    k.body(vec![for_(iv, i(0), v(n), vec![st(o, v(iv), bin(op, ld(a, v(iv)), ld(b, v(iv))))])])
}

/// `o[j] = f(a[j], b[j])` for `j < n`: operands of type `ta`, results of type `to`.
pub(crate) fn map2(ta: Ty, to: Ty, f: impl FnOnce(Expr, Expr) -> Expr) -> Func {
    let mut k = K::new("map2");
    let (a, b, o) = (k.arg("a", ta), k.arg("b", ta), k.arg("o", to));
    let n = k.dim("n");
    let j = k.var("j", Ty::I64);
    k.body(vec![for_(j, i(0), v(n), vec![st(o, v(j), f(ld(a, v(j)), ld(b, v(j))))])])
}
