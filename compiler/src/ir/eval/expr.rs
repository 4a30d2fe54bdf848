//! Evaluating compiled [`Op`]s at one point of a node's index space, recursively by `Id`
//! (expression depth is bounded by the parser, and the whole run is on `crate::with_stack`).
//!
//! A value is `Ok`, [`Flow::Absent`] (it read a point that does not exist, or a `where`
//! failed: the innermost scope point does not exist) or [`Flow::Error`]. Reductions bind their
//! index in [`Env::idx`] (saving the outer value of a shadowed index and restoring it after),
//! evaluate their bounds in the enclosing scope, and skip points whose filter is false or
//! absent or whose body is absent. Nothing here allocates per point: user-reduction states
//! live on [`Env::stack`], which only grows to the deepest nesting once.

use std::collections::HashMap;

use egg::Id;
use tfmc_runtime::Scalar;

use super::compile::{Head, Op};
use crate::hir::{DType, Program, ReduceOp};
use crate::semantics::RunError;
use crate::semantics::error::Flow;
use crate::semantics::ops::{self, OpError};
use crate::semantics::reduction::Combine;
use crate::semantics::store::Buf as Store;

/// Mutable evaluation state: index values by slot, the user-reduction stack, and the memo of
/// the node being run.
pub(super) struct Env {
    /// Current value of every index, by slot.
    pub idx: Vec<i64>,
    /// User-reduction states, lifted points and `let`s.
    pub stack: Vec<Scalar>,
    /// Per op of the node being run: `Some(slots)` for a reduction whose value depends only
    /// on those indices ([`memo_slots`]), `None` for any other op.
    pub memo_slots: Vec<Option<Vec<usize>>>,
    /// Per op: its value (or absence) at each point of its free indices computed so far (at
    /// most [`MEMO_MAX`] points; forgotten past that).
    pub memo: Vec<HashMap<Vec<i64>, Option<Scalar>>>,
}

/// The most points one op's memo keeps before it starts over.
const MEMO_MAX: usize = 1 << 20;

/// The reductions of `ops` whose value is a function of the indices they read (their free
/// indices; not a scan's look-back), so a value computed at one point of those indices serves
/// every later evaluation at the same point: a row's normaliser inside the loop over the output
/// column, a `max` nested in a `sum` over the same index, a logit's dot product inside the sum
/// over keys evaluated again for every output column. So the evaluator does each reduction's
/// work once per point of its free indices, as the compiled kernels (hoisting, tiled plans)
/// and the cost model do.
pub(super) fn memo_slots(ops: &[Op]) -> Vec<Option<Vec<usize>>> {
    let mut free: Vec<Option<Vec<usize>>> = Vec::with_capacity(ops.len());
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let union = |ids: &[Id], free: &[Option<Vec<usize>>]| -> Option<Vec<usize>> {
            let mut v: Vec<usize> = Vec::new();
            for &c in ids {
                v.extend(free[usize::from(c)].as_ref()?);
            }
            v.sort_unstable();
            v.dedup();
            Some(v)
        };
        let (f, memo) = match op {
            Op::Idx(s) => (Some(vec![*s]), false),
            Op::Prev { .. } => (None, false),
            Op::Reduce { head, .. } | Op::URed { head, .. } | Op::Osm { head, .. } => {
                let kids = super::compile::children(op);
                let inner = union(&kids[2..], &free).map(|v| v.into_iter().filter(|&s| s != head.slot).collect::<Vec<_>>());
                let outer = union(&kids[..2], &free);
                let f = match (inner, outer) {
                    (Some(mut a), Some(b)) => {
                        a.extend(b);
                        a.sort_unstable();
                        a.dedup();
                        Some(a)
                    }
                    _ => None,
                };
                (f, true)
            }
            op => (union(&super::compile::children(op), &free), false),
        };
        out.push(if memo { f.clone() } else { None });
        free.push(f);
    }
    out
}

/// The scan being executed: its partly written target and the current point.
pub(super) struct ScanPoint<'s> {
    /// The scan's target, written up to the current point.
    pub target: &'s Store<'s>,
    /// Flat offset of the current point.
    pub flat: usize,
    /// Stride of the scanned index in the target.
    pub stride: usize,
    /// Current value of the scanned index.
    pub t: i64,
    /// The compiled `init`, evaluated at the current point for a look-back before the start.
    pub init: &'s [Op],
}

/// Evaluates the ops of one node.
pub(super) struct Eval<'s> {
    /// The program (user reductions' combines).
    pub program: &'s Program,
    /// Param values by `ParamId` (for user reductions' combines).
    pub params: &'s [Scalar],
    /// Every tensor defined so far, by slot.
    pub stores: &'s [Option<Store<'s>>],
    /// Tensor names by slot (for error messages).
    pub names: &'s [String],
    /// Where errors happen (`IR node 'S' of cascade 'sdpa'`).
    pub loc: &'s str,
    /// The running scan, when the node is one.
    pub scan: Option<ScanPoint<'s>>,
}

fn root(ops: &[Op]) -> Id {
    Id::from(ops.len().saturating_sub(1))
}

impl Eval<'_> {
    fn op_err(&self, e: OpError) -> Flow {
        let loc = self.loc.to_string();
        Flow::from(e.at(loc))
    }

    fn internal(&self, what: &str) -> Flow {
        Flow::from(super::internal(what, self.loc))
    }

    /// The value of the root of `ops` at the current point.
    pub fn root(&self, ops: &[Op], env: &mut Env) -> Result<Scalar, Flow> {
        self.eval(ops, root(ops), env)
    }

    /// True if the filter at `id` holds; an absent filter does not hold.
    fn holds(&self, ops: &[Op], id: Id, env: &mut Env) -> Result<bool, Box<RunError>> {
        match self.eval(ops, id, env) {
            Ok(v) => Ok(v.as_bool()),
            Err(Flow::Absent) => Ok(false),
            Err(Flow::Error(e)) => Err(e),
        }
    }

    /// Evaluates the op at `id`.
    pub fn eval(&self, ops: &[Op], id: Id, env: &mut Env) -> Result<Scalar, Flow> {
        match &ops[usize::from(id)] {
            Op::Sym(s) => Err(self.internal(&format!("symbol '{s}' used as a value"))),
            Op::Const(v) => Ok(*v),
            Op::Idx(slot) => Ok(Scalar::I(env.idx[*slot])),
            Op::Read { tensor, subs } => self.read(ops, *tensor, subs, env),
            Op::Unary { op, d, a } => {
                let x = self.eval(ops, *a, env)?;
                ops::unary(*op, *d, x).map_err(|e| self.op_err(e))
            }
            Op::Binary { op, d, a, b } => {
                let x = self.eval(ops, *a, env)?;
                let y = self.eval(ops, *b, env)?;
                ops::binary(*op, *d, x, y).map_err(|e| self.op_err(e))
            }
            Op::And(a, b) => {
                if self.eval(ops, *a, env)?.as_bool() {
                    self.eval(ops, *b, env)
                } else {
                    Ok(Scalar::B(false))
                }
            }
            Op::Or(a, b) => {
                if self.eval(ops, *a, env)?.as_bool() {
                    Ok(Scalar::B(true))
                } else {
                    self.eval(ops, *b, env)
                }
            }
            Op::If(c, a, b) => {
                if self.eval(ops, *c, env)?.as_bool() {
                    self.eval(ops, *a, env)
                } else {
                    self.eval(ops, *b, env)
                }
            }
            Op::Call { f, d, x, y } => {
                let x = self.eval(ops, *x, env)?;
                let y = match y {
                    Some(y) => self.eval(ops, *y, env)?,
                    None => x,
                };
                ops::func(*f, *d, x, y).map_err(|e| self.op_err(e))
            }
            Op::Cast { to, x } => {
                let v = self.eval(ops, *x, env)?;
                ops::cast(v, *to).map_err(|e| self.op_err(e))
            }
            Op::Dense { x, d } => match self.eval(ops, *x, env) {
                Err(Flow::Absent) => Ok(crate::semantics::ops::zero(*d)),
                other => other,
            },
            Op::Where { filter, x } => {
                if self.holds(ops, *filter, env).map_err(Flow::Error)? {
                    self.eval(ops, *x, env)
                } else {
                    Err(Flow::Absent)
                }
            }
            Op::Reduce { .. } | Op::URed { .. } | Op::Osm { .. } => self.memoized(ops, id, env),
            Op::Prev { back } => self.prev(*back, env),
            Op::Dim(_) | Op::Param { .. } => Err(self.internal("a symbolic dim or param in the interpreter")),
        }
    }

    /// A reduction, from the memo when its free indices have not moved since it was last
    /// computed (see [`memo_slots`]); errors are not remembered (they end the run).
    fn memoized(&self, ops: &[Op], id: Id, env: &mut Env) -> Result<Scalar, Flow> {
        let i = usize::from(id);
        let key: Option<Vec<i64>> = env.memo_slots.get(i).and_then(Option::as_ref).map(|slots| slots.iter().map(|&s| env.idx[s]).collect());
        if let Some(k) = &key
            && let Some(value) = env.memo.get(i).and_then(|m| m.get(k))
        {
            return value.ok_or(Flow::Absent);
        }
        let value = match &ops[i] {
            Op::Reduce { op, d, head, body } => self.reduce(ops, *op, *d, head, *body, env),
            Op::URed { red, field, identity, head, bodies } => self.ured(ops, *red, *field, identity, head, bodies, env),
            Op::Osm { head, s, v, sink } => self.osm(ops, head, *s, *v, *sink, env),
            _ => return Err(self.internal("a memoized op that is not a reduction")),
        };
        if let Some(k) = key
            && let Some(memo) = env.memo.get_mut(i)
        {
            if memo.len() >= MEMO_MAX {
                memo.clear();
            }
            match &value {
                Ok(v) => {
                    memo.insert(k, Some(*v));
                }
                Err(Flow::Absent) => {
                    memo.insert(k, None);
                }
                Err(Flow::Error(_)) => {}
            }
        }
        value
    }

    /// `tensor[subs]`: every subscript checked against its dimension, in order.
    fn read(&self, ops: &[Op], tensor: usize, subs: &[Id], env: &mut Env) -> Result<Scalar, Flow> {
        let Some(st) = self.stores.get(tensor).and_then(Option::as_ref) else {
            return Err(self.internal("tensor read before it is defined"));
        };
        let mut flat = 0usize;
        for (axis, &s) in subs.iter().enumerate() {
            let v = self.eval(ops, s, env)?.as_i64();
            let size = st.shape[axis];
            if v < 0 || v as u64 >= size as u64 {
                return Err(Flow::from(RunError::OutOfRange {
                    tensor: self.names[tensor].clone(),
                    axis,
                    value: v,
                    size,
                    loc: self.loc.to_string(),
                }));
            }
            flat += v as usize * st.strides[axis];
        }
        st.get(flat).ok_or(Flow::Absent)
    }

    /// The scan target `back` steps back along the scanned index, or `init` before the start.
    fn prev(&self, back: i64, env: &mut Env) -> Result<Scalar, Flow> {
        let Some(sc) = &self.scan else { return Err(self.internal("`prev` outside a scan")) };
        if sc.t < back {
            // `init` is evaluated without the scan: it may not look back itself.
            let plain = Eval { scan: None, ..*self };
            return plain.root(sc.init, env);
        }
        // sc.t >= back, so this stays inside the current row of the target.
        sc.target.get(sc.flat - back as usize * sc.stride).ok_or(Flow::Absent)
    }

    /// Runs `f` at every point of the head's range where its filter holds, with the index
    /// bound (the outer value of the slot is restored after). An absent bound makes the
    /// range empty (as a filter reading that point would); a bound outside the index's
    /// declared range is an error.
    fn each(&self, ops: &[Op], head: &Head, env: &mut Env, mut f: impl FnMut(&mut Env) -> Result<(), Box<RunError>>) -> Result<(), Flow> {
        let bound = |id: Id, env: &mut Env| match self.eval(ops, id, env) {
            Ok(v) => Ok(Some(v.as_i64())),
            Err(Flow::Absent) => Ok(None),
            Err(e) => Err(e),
        };
        let (Some(lo), Some(hi)) = (bound(head.lo, env)?, bound(head.hi, env)?) else { return Ok(()) };
        if lo < hi && (lo < 0 || head.range.is_some_and(|r| hi > r)) {
            let range = head.range.map_or("its range".to_string(), |r| format!("0..{r}"));
            return Err(self.internal(&format!("reduction over '{}' runs over {lo}..{hi}, outside {range}", head.name)));
        }
        let saved = env.idx[head.slot];
        let mut run = || {
            for i in lo..hi {
                env.idx[head.slot] = i;
                if self.holds(ops, head.filter, env)? {
                    f(env)?;
                }
            }
            Ok(())
        };
        let r = run();
        env.idx[head.slot] = saved;
        r.map_err(Flow::Error)
    }

    /// A built-in reduction of dtype `d`.
    fn reduce(&self, ops: &[Op], op: ReduceOp, d: DType, head: &Head, body: Id, env: &mut Env) -> Result<Scalar, Flow> {
        let mut acc = ops::identity(op, d);
        self.each(ops, head, env, |env| match self.eval(ops, body, env) {
            Ok(x) => {
                acc = ops::combine(op, d, acc, x).map_err(|e| self.op_err(e).into_error())?;
                Ok(())
            }
            Err(Flow::Absent) => Ok(()),
            Err(Flow::Error(e)) => Err(e),
        })?;
        Ok(acc)
    }

    /// The one-pass online softmax `Σ_I softmax_I(s) · v`: a running max `mx`, normalizer
    /// `l` and weighted sum `o`, rescaled by `exp(mx - mx')` whenever the max grows. While the
    /// max is still `-inf` the scale is 1 and a point adds nothing; the result is `o / l` with
    /// `0 / 0 = 0` (no point: 0). To be an exact rewrite of the naive cascade, a row whose
    /// points all have `-inf` logits is NaN, as `exp(-inf - max) = exp(-inf + inf)` is there.
    /// With a sink `c` (`osmz`, evaluated before the points, outside the reduction) the
    /// denominator is `l + exp(c - max)`, the written `exp(c - G) + Σ exp(s - G)`.
    fn osm(&self, ops: &[Op], head: &Head, s: Id, v: Id, sink: Option<Id>, env: &mut Env) -> Result<Scalar, Flow> {
        let c = match sink {
            Some(c) => Some(self.eval(ops, c, env)?.as_f64()),
            None => None,
        };
        let (mut mx, mut l, mut o) = (f64::NEG_INFINITY, 0.0f64, 0.0f64);
        let mut any = false;
        self.each(ops, head, env, |env| {
            let point = |env: &mut Env| -> Result<(f64, f64), Flow> {
                let sv = self.eval(ops, s, env)?.as_f64();
                let vv = self.eval(ops, v, env)?.as_f64();
                Ok((sv, vv))
            };
            let (sv, vv) = match point(env) {
                Ok(p) => p,
                Err(Flow::Absent) => return Ok(()),
                Err(Flow::Error(e)) => return Err(e),
            };
            any = true;
            let m = ops::fmax(mx, sv);
            let (scale, w) = if m == f64::NEG_INFINITY { (1.0, 0.0) } else { ((mx - m).exp(), (sv - m).exp()) };
            l = l * scale + w;
            o = o * scale + w * vv;
            mx = m;
            Ok(())
        })?;
        if any && mx == f64::NEG_INFINITY {
            return Ok(Scalar::F(f64::NAN));
        }
        let l = match c {
            Some(c) => l + (c - mx).exp(),
            None => l,
        };
        Ok(Scalar::F(ops::fdiv(o, l)))
    }

    /// Field `field` of user reduction `red`: the identity folded with `combine(acc, lift)`
    /// over the points in order, a point skipped when any of its lifted values is absent.
    #[allow(clippy::too_many_arguments)]
    fn ured(
        &self,
        ops: &[Op],
        red: usize,
        field: usize,
        identity: &[Scalar],
        head: &Head,
        bodies: &[Id],
        env: &mut Env,
    ) -> Result<Scalar, Flow> {
        let Some(r) = self.program.reductions.get(red) else { return Err(self.internal("unknown reduction")) };
        let start = env.stack.len();
        env.stack.extend_from_slice(identity);
        let res = self.each(ops, head, env, |env| {
            let x = env.stack.len();
            for &b in bodies {
                match self.eval(ops, b, env) {
                    Ok(v) => env.stack.push(v),
                    Err(Flow::Absent) => {
                        env.stack.truncate(x);
                        return Ok(());
                    }
                    Err(Flow::Error(e)) => return Err(e),
                }
            }
            Combine { program: self.program, params: self.params }.apply(r, start, &mut env.stack)
        });
        let v = env.stack.get(start + field).copied();
        env.stack.truncate(start);
        res?;
        v.ok_or_else(|| self.internal("empty reduction state"))
    }
}
