//! Building a [`kir::Func`]: declaring variables and buffers, and emitting statements into a
//! stack of open frames (loop bodies, `if` arms, parallel bodies), so lowering code can
//! write straight-line "open a loop, emit, close it" code.
//!
//! Invariant: frames close in the reverse order they opened ([`Builder::close_to`] checks
//! the mark); [`Builder::finish`] closes every open frame.

use super::kir::{BinOp, Block, Buf, BufDecl, BufKind, Const, Expr, FailKind, Func, Stmt, Ty, UnOp, Var, VarDecl, fail_code};

/// What an open frame becomes when it closes.
enum Frame {
    /// The function body.
    Root,
    /// `for var in lo..hi`.
    For { var: Var, lo: Expr, hi: Expr },
    /// `parallel var in 0..n`.
    Parallel { var: Var, n: Expr },
    /// `block_parallel var in 0..n` of `threads` threads.
    BlockParallel { var: Var, n: Expr, threads: u32 },
    /// The `then` arm of `if cond`.
    Then { cond: Expr },
    /// The `else` arm, after `then`.
    Else { cond: Expr, then: Block },
}

/// A function under construction.
pub(crate) struct Builder {
    /// The function so far (its `body` is filled by [`Builder::finish`]).
    pub f: Func,
    frames: Vec<(Frame, Block)>,
    /// Depth of the innermost open `Parallel` (or block parallel) frame, if any.
    parallel_depth: Option<usize>,
}

/// A position in the frame stack to close back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark(usize);

impl Builder {
    /// An empty function called `name` with `n_args` argument buffers.
    pub fn new(name: &str) -> Builder {
        let f = Func {
            name: name.to_string(),
            vars: Vec::new(),
            bufs: Vec::new(),
            dims: Vec::new(),
            params: Vec::new(),
            n_args: 0,
            sites: Vec::new(),
            thread: None,
            body: Vec::new(),
        };
        Builder { f, frames: vec![(Frame::Root, Vec::new())], parallel_depth: None }
    }

    /// A new variable.
    pub fn var(&mut self, name: &str, ty: Ty) -> Var {
        self.f.vars.push(VarDecl { name: name.to_string(), ty: ty.value() });
        Var(self.f.vars.len() as u32 - 1)
    }

    /// The kernel's thread-index variable ([`Func::thread`], GPU dialect), declared on first
    /// use (displayed as `gpu:thread`): a kernel has one however many block parallels read it.
    pub fn thread_var(&mut self) -> Var {
        match self.f.thread {
            Some(v) => v,
            None => {
                let v = self.var("gpu:thread", Ty::I64);
                self.f.thread = Some(v);
                v
            }
        }
    }

    /// A new variable set to `value` here.
    pub fn let_(&mut self, name: &str, value: Expr) -> Var {
        let ty = self.f.ty(&value);
        let v = self.var(name, ty);
        self.set(v, value);
        v
    }

    /// A new buffer.
    pub fn buf(&mut self, name: &str, elem: Ty, kind: BufKind) -> Buf {
        if let BufKind::Arg(i) = kind {
            self.f.n_args = self.f.n_args.max(i + 1);
        }
        self.f.bufs.push(BufDecl { name: name.to_string(), elem, kind });
        Buf(self.f.bufs.len() as u32 - 1)
    }

    /// A new failure site described by `what`; returns its index.
    pub fn site(&mut self, what: String) -> u32 {
        if let Some(i) = self.f.sites.iter().position(|s| *s == what) {
            return i as u32;
        }
        self.f.sites.push(what);
        self.f.sites.len() as u32 - 1
    }

    /// The type of `e`.
    pub fn ty(&self, e: &Expr) -> Ty {
        self.f.ty(e)
    }

    /// The element type `buf` stores (`F16`/`BF16` load as `F32` values).
    pub fn elem(&self, buf: Buf) -> Ty {
        self.f.bufs[buf.0 as usize].elem
    }

    /// Appends a statement to the innermost frame.
    pub fn emit(&mut self, s: Stmt) {
        // There is always the root frame.
        if let Some((_, b)) = self.frames.last_mut() {
            b.push(s);
        }
    }

    /// `var = value`.
    pub fn set(&mut self, var: Var, value: Expr) {
        self.emit(Stmt::Set { var, value });
    }

    /// `buf[index] = value`.
    pub fn store(&mut self, buf: Buf, index: Expr, value: Expr) {
        self.emit(Stmt::Store { buf, index, value });
    }

    /// `if cond { fail }`.
    pub fn fail_if(&mut self, cond: Expr, kind: FailKind, what: String) {
        if cond == Expr::Const(Const::Bool(false)) {
            return;
        }
        let site = self.site(what);
        self.emit(Stmt::If { cond, then: vec![Stmt::Fail { code: fail_code(kind, site) }], els: Vec::new() });
    }

    /// The current depth, to close back to.
    pub fn mark(&self) -> Mark {
        Mark(self.frames.len())
    }

    /// True while inside a `Parallel` (or block parallel) frame.
    pub fn in_parallel(&self) -> bool {
        self.parallel_depth.is_some()
    }

    /// Opens `for var in lo..hi`; returns the loop variable.
    pub fn open_for(&mut self, name: &str, lo: Expr, hi: Expr) -> Var {
        let var = self.var(name, Ty::I64);
        self.frames.push((Frame::For { var, lo, hi }, Vec::new()));
        var
    }

    /// Opens `parallel var in 0..n` (or a plain `for` when already inside one).
    pub fn open_parallel(&mut self, name: &str, n: Expr) -> Var {
        if self.in_parallel() {
            return self.open_for(name, Expr::Const(Const::I64(0)), n);
        }
        let var = self.var(name, Ty::I64);
        self.frames.push((Frame::Parallel { var, n }, Vec::new()));
        self.parallel_depth = Some(self.frames.len());
        var
    }

    /// Opens a block parallel of `threads` threads per block over `0..n` blocks (GPU dialect);
    /// returns the block variable (displayed as `gpu:block`). Block parallels do not nest in
    /// parallel loops (`validate::check_gpu` rejects one opened inside a `Parallel` frame).
    pub fn open_block_parallel(&mut self, n: Expr, threads: u32) -> Var {
        let var = self.var("gpu:block", Ty::I64);
        self.frames.push((Frame::BlockParallel { var, n, threads }, Vec::new()));
        if !self.in_parallel() {
            self.parallel_depth = Some(self.frames.len());
        }
        var
    }

    /// A barrier of the block's threads (GPU dialect).
    pub fn barrier(&mut self) {
        self.emit(Stmt::Barrier);
    }

    /// Opens `if cond`.
    pub fn open_if(&mut self, cond: Expr) {
        self.frames.push((Frame::Then { cond }, Vec::new()));
    }

    /// Switches the innermost `if` frame to its `else` arm.
    pub fn open_else(&mut self) {
        if let Some((Frame::Then { .. }, _)) = self.frames.last()
            && let Some((Frame::Then { cond }, then)) = self.frames.pop()
        {
            self.frames.push((Frame::Else { cond, then }, Vec::new()));
        }
    }

    /// Closes the innermost frame.
    pub fn close(&mut self) {
        if self.frames.len() <= 1 {
            return;
        }
        let Some((frame, block)) = self.frames.pop() else { return };
        if self.parallel_depth == Some(self.frames.len() + 1) {
            self.parallel_depth = None;
        }
        let s = match frame {
            Frame::Root => return,
            Frame::For { var, lo, hi } => Stmt::For { var, lo, hi, body: block },
            Frame::Parallel { var, n } => Stmt::Parallel { var, n, body: block },
            Frame::BlockParallel { var, n, threads } => Stmt::BlockParallel { var, n, threads, body: block },
            Frame::Then { cond } => Stmt::If { cond, then: block, els: Vec::new() },
            Frame::Else { cond, then } => Stmt::If { cond, then, els: block },
        };
        self.emit(s);
    }

    /// Closes frames until the depth is `m`.
    pub fn close_to(&mut self, m: Mark) {
        while self.frames.len() > m.0.max(1) {
            self.close();
        }
    }

    /// Closes everything and returns the function.
    pub fn finish(mut self) -> Func {
        self.close_to(Mark(1));
        let body = self.frames.pop().map(|(_, b)| b).unwrap_or_default();
        self.f.body = body;
        self.f
    }
}

/// Shorthands for building expressions.
pub(crate) mod e {
    use super::*;

    /// An `i64` constant.
    pub fn i64(v: i64) -> Expr {
        Expr::Const(Const::I64(v))
    }

    /// A `bool` constant.
    pub fn bool(v: bool) -> Expr {
        Expr::Const(Const::Bool(v))
    }

    /// A constant of value type `ty` from an `f64` (ints truncate; bool is `!= 0`).
    pub fn num(ty: Ty, v: f64) -> Expr {
        Expr::Const(match ty.value() {
            Ty::Bool => Const::Bool(v != 0.0),
            Ty::I32 => Const::I32(v as i32),
            Ty::I64 => Const::I64(v as i64),
            Ty::F64 => Const::F64(v),
            _ => Const::F32(v as f32),
        })
    }

    /// A variable's value.
    pub fn var(v: Var) -> Expr {
        Expr::Var(v)
    }

    /// `buf[index]`.
    pub fn load(buf: Buf, index: Expr) -> Expr {
        Expr::Load { buf, index: Box::new(index) }
    }

    /// `op(x)`.
    pub fn un(op: UnOp, x: Expr) -> Expr {
        Expr::Unary { op, x: Box::new(x) }
    }

    /// `a op b`, with constant folding of `i64` `+ - *` and of `&&`/`||` on constants.
    pub fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
        use BinOp::*;
        match (op, &a, &b) {
            (Add, Expr::Const(Const::I64(x)), Expr::Const(Const::I64(y))) if x.checked_add(*y).is_some() => return i64(x + y),
            (Sub, Expr::Const(Const::I64(x)), Expr::Const(Const::I64(y))) if x.checked_sub(*y).is_some() => return i64(x - y),
            (Mul, Expr::Const(Const::I64(x)), Expr::Const(Const::I64(y))) if x.checked_mul(*y).is_some() => return i64(x * y),
            (Add, _, Expr::Const(Const::I64(0))) | (Sub, _, Expr::Const(Const::I64(0))) => return a,
            (Add, Expr::Const(Const::I64(0)), _) => return b,
            (Mul, _, Expr::Const(Const::I64(1))) => return a,
            (Mul, Expr::Const(Const::I64(1)), _) => return b,
            (Mul, _, Expr::Const(Const::I64(0))) | (Mul, Expr::Const(Const::I64(0)), _) => return i64(0),
            (And, Expr::Const(Const::Bool(true)), _) => return b,
            (And, _, Expr::Const(Const::Bool(true))) => return a,
            (And, Expr::Const(Const::Bool(false)), _) | (And, _, Expr::Const(Const::Bool(false))) => return bool(false),
            (Or, Expr::Const(Const::Bool(false)), _) => return b,
            (Or, _, Expr::Const(Const::Bool(false))) => return a,
            (Or, Expr::Const(Const::Bool(true)), _) | (Or, _, Expr::Const(Const::Bool(true))) => return bool(true),
            _ => {}
        }
        Expr::Binary { op, a: Box::new(a), b: Box::new(b), reassoc: false }
    }

    /// `a op b` that may be reassociated (a reduction accumulator).
    pub fn acc(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary { op, a: Box::new(a), b: Box::new(b), reassoc: true }
    }

    /// `a + b`.
    pub fn add(a: Expr, b: Expr) -> Expr {
        bin(BinOp::Add, a, b)
    }

    /// `a - b`.
    pub fn sub(a: Expr, b: Expr) -> Expr {
        bin(BinOp::Sub, a, b)
    }

    /// `a * b`.
    pub fn mul(a: Expr, b: Expr) -> Expr {
        bin(BinOp::Mul, a, b)
    }

    /// `if c then a else b` (both evaluated).
    pub fn select(c: Expr, a: Expr, b: Expr) -> Expr {
        match c {
            Expr::Const(Const::Bool(true)) => a,
            Expr::Const(Const::Bool(false)) => b,
            c => Expr::Select { c: Box::new(c), a: Box::new(a), b: Box::new(b) },
        }
    }

    /// Conversion to `to`.
    pub fn cast(to: Ty, x: Expr) -> Expr {
        Expr::Cast { to: to.value(), x: Box::new(x) }
    }
}
