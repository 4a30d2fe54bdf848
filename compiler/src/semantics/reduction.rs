//! User reductions evaluated on given states, outside any kernel: a reduction's identity, its
//! `let`s and its combine, on literals, params and the combine's locals.
//!
//! The one definition of what applying a user reduction's `combine` means outside the
//! interpreter's own loops: the IR evaluator folds `ured` with it, and the checker's
//! randomized law check (identity, associativity) calls it on random states.
//!
//! Invariant: the expressions evaluated read no tensors, indices or reductions (the checker
//! only allows literals, params and the combine's locals there); anything else is reported as
//! [`RunError::Internal`], never a panic. Locals are `[acc fields, x fields, lets]`.

use tfm_dsl::Span;
use tfmc_runtime::Scalar;

use super::ops::{self, OpError, lit_value};
use super::{RunError, location};
use crate::hir::{BinOp, Expr, ExprKind, Program, Reduction, ReductionId};

/// Evaluates user reductions' expressions with the program's param values.
pub(crate) struct Combine<'p> {
    /// The program (for locating errors).
    pub program: &'p Program,
    /// Param values by `ParamId`.
    pub params: &'p [Scalar],
}

impl Combine<'_> {
    /// `combine(acc, x)` with `acc` at `stack[start..start + n]` and `x` right after it;
    /// leaves the new state at `start` and the stack at `start + n`.
    pub(crate) fn apply(&self, r: &Reduction, start: usize, stack: &mut Vec<Scalar>) -> Result<(), Box<RunError>> {
        let n = r.fields.len();
        for e in &r.lets {
            let v = self.local(e, &stack[start..])?;
            stack.push(v);
        }
        let res = stack.len();
        for e in &r.result {
            let v = self.local(e, &stack[start..])?;
            stack.push(v);
        }
        for k in 0..n {
            stack[start + k] = stack[res + k];
        }
        stack.truncate(start + n);
        Ok(())
    }

    /// A combine expression (literals, params, locals, operators, functions, casts) with
    /// `locals` = [acc fields, x fields, lets], evaluated as the HIR interpreter evaluates it inside a kernel.
    pub(crate) fn local(&self, e: &Expr, locals: &[Scalar]) -> Result<Scalar, Box<RunError>> {
        let err = |x: OpError, span: Span| -> Box<RunError> { Box::new(x.at(location(self.program, span))) };
        let bad =
            |what: &str| -> Box<RunError> { Box::new(RunError::Internal { what: what.to_string(), loc: location(self.program, e.span) }) };
        Ok(match &e.kind {
            ExprKind::Lit(l) => lit_value(*l, e.dtype),
            ExprKind::Param(p) => self.params.get(p.index()).copied().ok_or_else(|| bad("unknown param"))?,
            ExprKind::Local(i) => locals.get(*i).copied().ok_or_else(|| bad("local outside a combine"))?,
            ExprKind::Unary(op, a) => ops::unary(*op, a.dtype, self.local(a, locals)?).map_err(|x| err(x, e.span))?,
            ExprKind::Binary(BinOp::And, a, b) => {
                if self.local(a, locals)?.as_bool() {
                    self.local(b, locals)?
                } else {
                    Scalar::B(false)
                }
            }
            ExprKind::Binary(BinOp::Or, a, b) => {
                if self.local(a, locals)?.as_bool() {
                    Scalar::B(true)
                } else {
                    self.local(b, locals)?
                }
            }
            ExprKind::Binary(op, a, b) => {
                let x = self.local(a, locals)?;
                let y = self.local(b, locals)?;
                ops::binary(*op, a.dtype, x, y).map_err(|x| err(x, e.span))?
            }
            ExprKind::If(c, a, b) => {
                if self.local(c, locals)?.as_bool() {
                    self.local(a, locals)?
                } else {
                    self.local(b, locals)?
                }
            }
            ExprKind::Call(f, args) => {
                let x = match args.first() {
                    Some(a) => self.local(a, locals)?,
                    None => return Err(bad("function call without arguments")),
                };
                let y = match args.get(1) {
                    Some(b) => self.local(b, locals)?,
                    None => x,
                };
                ops::func(*f, e.dtype, x, y).map_err(|x| err(x, e.span))?
            }
            ExprKind::Cast(a) => ops::cast(self.local(a, locals)?, e.dtype).map_err(|x| err(x, e.span))?,
            _ => return Err(bad("a combine reads a tensor, an index or a reduction")),
        })
    }
}

/// The identity state of reduction `id` (params by `ParamId`).
pub fn reduction_identity(program: &Program, id: ReductionId, params: &[Scalar]) -> Result<Vec<Scalar>, RunError> {
    let red = &program.reductions[id.index()];
    let c = Combine { program, params };
    red.identity.iter().map(|e| c.local(e, &[]).map_err(|e| *e)).collect()
}

/// `combine(a, b)` of reduction `id`; `a` and `b` have one value per field.
pub fn reduction_combine(
    program: &Program,
    id: ReductionId,
    params: &[Scalar],
    a: &[Scalar],
    b: &[Scalar],
) -> Result<Vec<Scalar>, RunError> {
    let red = &program.reductions[id.index()];
    let mut stack = [a, b].concat();
    Combine { program, params }.apply(red, 0, &mut stack).map_err(|e| *e)?;
    Ok(stack)
}
