//! Expression evaluation: reads, scan look-backs, operators, reductions.
//!
//! An expression evaluates at the point given by the index environment ([`Env::idx`]) to a
//! value, or to [`Flow::Absent`] when it reads a point that does not exist (the caller decides
//! what that point's scope does), or to [`Flow::Error`]. Reductions bind their indices in the
//! environment (saving and restoring outer values), check their filters per point, and skip
//! points whose filter is false or absent or whose body is absent. User-reduction states and
//! combine operands live on [`Env::stack`]; [`Env::base`] is where the running combine's
//! locals start. Nothing here allocates per point once the stack has grown.

use tfm_dsl::Span;
use tfmc_runtime::Scalar;

use super::Frame;
use crate::hir::{BinOp, DType, Expr, ExprKind, IndexId, Reduce, ReduceOp, ReductionId, TensorId};
use crate::semantics::RunError;
use crate::semantics::error::Flow;
use crate::semantics::ops::{self, OpError, lit_value};
use crate::semantics::store::Buf;

/// Mutable evaluation state of one kernel invocation.
pub(super) struct Env {
    /// Current value of every index, by `IndexId`.
    pub idx: Vec<i64>,
    /// User-reduction states, operands and lets.
    pub stack: Vec<Scalar>,
    /// Start of the running combine's locals on `stack`.
    pub base: usize,
    /// Outer values of indices rebound by nested reductions.
    saved: Vec<i64>,
}

impl Env {
    /// An environment for a kernel with `n` indices.
    pub fn new(n: usize) -> Env {
        Env { idx: vec![0; n], stack: Vec::new(), base: 0, saved: Vec::new() }
    }
}

/// The scan statement being executed: its partly written target and the current point.
pub(super) struct Scan<'b> {
    /// The scan's target.
    pub tensor: TensorId,
    /// Its buffer, written up to the current point.
    pub target: &'b Buf<'b>,
    /// Flat offset of the current point in `target`.
    pub flat: usize,
    /// Stride of the scanned index in `target`.
    pub stride: usize,
    /// Current value of the scanned index.
    pub t: i64,
    /// Value of a look-back before the start.
    pub init: &'b Expr,
}

/// Evaluates expressions of one kernel invocation.
pub(super) struct Eval<'b, 'a> {
    /// The invocation.
    pub frame: &'b Frame<'a>,
    /// The running scan, if the statement is one.
    pub scan: Option<Scan<'b>>,
}

impl Eval<'_, '_> {
    /// A run-time error from a scalar operation at `span`.
    fn op_err(&self, e: OpError, span: Span) -> Flow {
        let loc = self.frame.loc(span);
        Flow::from(e.at(loc))
    }

    fn internal(&self, what: &str, span: Span) -> Flow {
        Flow::from(RunError::Internal { what: what.to_string(), loc: self.frame.loc(span) })
    }

    /// The value of `e`, where absence is an error described by `what` (for expressions
    /// that read no tensors, or whose absence has no meaning).
    pub fn value(&self, e: &Expr, env: &mut Env, what: &str) -> Result<Scalar, RunError> {
        match self.expr(e, env) {
            Ok(v) => Ok(v),
            Err(Flow::Absent) => Err(RunError::Absent { what: what.to_string(), loc: self.frame.loc(e.span) }),
            Err(Flow::Error(e)) => Err(*e),
        }
    }

    /// True if all `filters` hold; a filter that is absent does not hold.
    pub fn holds(&self, filters: &[Expr], env: &mut Env) -> Result<bool, RunError> {
        for f in filters {
            match self.expr(f, env) {
                Ok(v) if v.as_bool() => {}
                Ok(_) | Err(Flow::Absent) => return Ok(false),
                Err(Flow::Error(e)) => return Err(*e),
            }
        }
        Ok(true)
    }

    /// Evaluates `e` at the current point.
    pub fn expr(&self, e: &Expr, env: &mut Env) -> Result<Scalar, Flow> {
        match &e.kind {
            ExprKind::Lit(l) => Ok(lit_value(*l, e.dtype)),
            ExprKind::Index(i) => env.idx.get(i.index()).map(|&v| Scalar::I(v)).ok_or_else(|| self.internal("unknown index", e.span)),
            ExprKind::Dim(d) => self.frame.dims.get(d.index()).map(|&v| Scalar::I(v)).ok_or_else(|| self.internal("unknown dim", e.span)),
            ExprKind::Param(p) => self.frame.params.get(p.index()).copied().ok_or_else(|| self.internal("unknown param", e.span)),
            ExprKind::Read { tensor, subs } => self.read(*tensor, subs, env, e.span),
            ExprKind::ScanPrev { tensor, offset } => self.scan_prev(*tensor, *offset, env, e.span),
            ExprKind::Local(i) => env.stack.get(env.base + i).copied().ok_or_else(|| self.internal("local outside a combine", e.span)),
            ExprKind::Unary(op, a) => {
                let v = self.expr(a, env)?;
                ops::unary(*op, a.dtype, v).map_err(|err| self.op_err(err, e.span))
            }
            ExprKind::Binary(BinOp::And, a, b) => {
                if self.expr(a, env)?.as_bool() {
                    self.expr(b, env)
                } else {
                    Ok(Scalar::B(false))
                }
            }
            ExprKind::Binary(BinOp::Or, a, b) => {
                if self.expr(a, env)?.as_bool() {
                    Ok(Scalar::B(true))
                } else {
                    self.expr(b, env)
                }
            }
            ExprKind::Binary(op, a, b) => {
                let x = self.expr(a, env)?;
                let y = self.expr(b, env)?;
                ops::binary(*op, a.dtype, x, y).map_err(|err| self.op_err(err, e.span))
            }
            ExprKind::If(c, a, b) => {
                if self.expr(c, env)?.as_bool() {
                    self.expr(a, env)
                } else {
                    self.expr(b, env)
                }
            }
            ExprKind::Call(f, args) => {
                let x = match args.first() {
                    Some(a) => self.expr(a, env)?,
                    None => return Err(self.internal("function call without arguments", e.span)),
                };
                let y = match args.get(1) {
                    Some(b) => self.expr(b, env)?,
                    None => x,
                };
                ops::func(*f, e.dtype, x, y).map_err(|err| self.op_err(err, e.span))
            }
            ExprKind::Cast(a) => {
                let v = self.expr(a, env)?;
                ops::cast(v, e.dtype).map_err(|err| self.op_err(err, e.span))
            }
            ExprKind::Reduce(r) => match r.op {
                ReduceOp::User(id) => {
                    let start = self.user_reduce(id, r, env)?;
                    let v = env.stack.get(start).copied().ok_or_else(|| self.internal("empty reduction state", e.span))?;
                    env.stack.truncate(start);
                    Ok(v)
                }
                op => Ok(self.builtin_reduce(op, r, e.dtype, env, e.span)?),
            },
        }
    }

    /// `tensor[subs]`: checks every subscript against its dimension.
    fn read(&self, tensor: TensorId, subs: &[Expr], env: &mut Env, span: Span) -> Result<Scalar, Flow> {
        let Some(buf) = self.frame.bufs.get(tensor.index()).and_then(Option::as_ref) else {
            return Err(self.internal("tensor read before it is defined", span));
        };
        if subs.len() != buf.shape.len() {
            return Err(self.internal("wrong number of subscripts", span));
        }
        let mut flat = 0usize;
        for (axis, s) in subs.iter().enumerate() {
            let v = self.expr(s, env)?.as_i64();
            let size = buf.shape[axis];
            if v < 0 || v as u64 >= size as u64 {
                return Err(Flow::from(RunError::OutOfRange {
                    tensor: self.frame.kernel.tensors[tensor.index()].name.clone(),
                    axis,
                    value: v,
                    size,
                    loc: self.frame.loc(s.span),
                }));
            }
            flat += v as usize * buf.strides[axis];
        }
        buf.get(flat).ok_or(Flow::Absent)
    }

    /// The scan target `offset` steps back along the scanned index, or `init` before the start.
    fn scan_prev(&self, tensor: TensorId, offset: i64, env: &mut Env, span: Span) -> Result<Scalar, Flow> {
        let Some(sc) = &self.scan else { return Err(self.internal("look-back outside a scan", span)) };
        if sc.tensor != tensor || offset < 1 {
            return Err(self.internal("look-back to another tensor or forward", span));
        }
        if sc.t < offset {
            return self.expr(sc.init, env);
        }
        // sc.t >= offset, so this stays inside the current row of the target.
        let flat = sc.flat - offset as usize * sc.stride;
        sc.target.get(flat).ok_or(Flow::Absent)
    }

    /// Runs `f` at every point of `indices` (row-major), restoring their outer values after.
    fn for_each(&self, indices: &[IndexId], env: &mut Env, mut f: impl FnMut(&mut Env) -> Result<(), RunError>) -> Result<(), RunError> {
        let extent = |i: IndexId| self.frame.index_extent(i);
        let saved_at = env.saved.len();
        for &i in indices {
            env.saved.push(env.idx[i.index()]);
        }
        let restore = |env: &mut Env| {
            for (k, &i) in indices.iter().enumerate() {
                env.idx[i.index()] = env.saved[saved_at + k];
            }
            env.saved.truncate(saved_at);
        };
        if indices.iter().any(|&i| extent(i) <= 0) {
            restore(env);
            return Ok(());
        }
        for &i in indices {
            env.idx[i.index()] = 0;
        }
        'points: loop {
            f(env)?;
            for &i in indices.iter().rev() {
                env.idx[i.index()] += 1;
                if env.idx[i.index()] < extent(i) {
                    continue 'points;
                }
                env.idx[i.index()] = 0;
            }
            break;
        }
        restore(env);
        Ok(())
    }

    /// A built-in reduction of result dtype `d`.
    fn builtin_reduce(&self, op: ReduceOp, r: &Reduce, d: DType, env: &mut Env, span: Span) -> Result<Scalar, RunError> {
        let Some(body) = r.body.first() else {
            return Err(RunError::Internal { what: "reduction without body".to_string(), loc: self.frame.loc(span) });
        };
        let mut acc = ops::identity(op, d);
        self.for_each(&r.indices, env, |env| {
            if !self.holds(&r.filters, env)? {
                return Ok(());
            }
            match self.expr(body, env) {
                Ok(x) => {
                    acc = ops::combine(op, d, acc, x).map_err(|err| *self.op_err(err, span).into_error())?;
                    Ok(())
                }
                Err(Flow::Absent) => Ok(()),
                Err(Flow::Error(e)) => Err(*e),
            }
        })?;
        Ok(acc)
    }

    /// A user reduction: leaves the final state (one value per field) on top of the stack and
    /// returns where it starts.
    pub fn user_reduce(&self, id: ReductionId, r: &Reduce, env: &mut Env) -> Result<usize, RunError> {
        let program = self.frame.program;
        let Some(red) = program.reductions.get(id.index()) else {
            return Err(RunError::Internal { what: "unknown reduction".to_string(), loc: String::new() });
        };
        let n = red.fields.len();
        let start = env.stack.len();
        for e in &red.identity {
            let v = self.value(e, env, "identity")?;
            env.stack.push(v);
        }
        self.for_each(&r.indices, env, |env| {
            if !self.holds(&r.filters, env)? {
                return Ok(());
            }
            let x = env.stack.len();
            for e in &r.body {
                match self.expr(e, env) {
                    Ok(v) => env.stack.push(v),
                    Err(Flow::Absent) => {
                        env.stack.truncate(x);
                        return Ok(());
                    }
                    Err(Flow::Error(e)) => return Err(*e),
                }
            }
            // Combine: locals are [acc fields, x fields, lets...] starting at `start`.
            let outer = env.base;
            env.base = start;
            for e in &red.lets {
                let v = self.value(e, env, "let")?;
                env.stack.push(v);
            }
            let res = env.stack.len();
            for e in &red.result {
                let v = self.value(e, env, "combine")?;
                env.stack.push(v);
            }
            for k in 0..n {
                env.stack[start + k] = env.stack[res + k];
            }
            env.stack.truncate(start + n);
            env.base = outer;
            Ok(())
        })?;
        Ok(start)
    }
}
