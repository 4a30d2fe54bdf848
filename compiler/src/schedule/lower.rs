//! Lowering one definition's compiled ops ([`Op`], from `ir::eval::compile` in symbolic mode)
//! to KIR at the current point of a loop nest, with exactly the interpreter's semantics.
//!
//! Absence is control flow: lowering an op that may have no point (a `where`, a read of a
//! partial tensor) opens an `if present` frame, and everything after it — up to the store
//! or accumulation that consumes the value — is emitted inside that frame, so an absent
//! value simply skips it. [`Cx::scoped`] evaluates a sub-expression into a variable plus a
//! presence flag and closes its frames again (for `dense`, lazy `if`, short-circuit `&&`,
//! filters and bounds). Errors (subscript out of range, integer overflow, division by zero)
//! are `Fail` statements on the failing path only, as the interpreter raises them only for
//! values it computes. Checks whose condition an interval analysis proves false are left out
//! (every dim is at most [`MAX_DIM`], enforced on entry).

pub(crate) use crate::ir::eval::compile::children;
use std::collections::HashMap;

use egg::Id;

use super::ScheduleError;
use super::build::{Builder, e};
use super::kir::{BinOp as K, Buf, Const, Expr, FailKind, Ty, UnOp as KU, Var};
use crate::hir::{DType, Program};
use crate::ir::Size;
use crate::ir::eval::compile::{Head, Op};

/// The largest dim a kernel accepts (checked on entry), so index arithmetic on in-range
/// indices provably fits `i64` in common cases.
pub(crate) const MAX_DIM: i64 = crate::bind::MAX_DIM;

/// A tensor of the cascade as the generated code sees it.
#[derive(Clone, Debug)]
pub(crate) struct TensorInfo {
    /// Its name.
    pub name: String,
    /// Its elements.
    pub buf: Buf,
    /// One byte per element, 1 where a point exists (partial locals only).
    pub present: Option<Buf>,
    /// Declared dimension sizes (to elide subscript checks of plain indices).
    pub sizes: Vec<Size>,
    /// Dimension sizes at run time (`I64`).
    pub shape: Vec<Expr>,
    /// Row-major strides (`I64`).
    pub strides: Vec<Expr>,
}

/// The scan being lowered: `prev` reads its own buffer.
#[derive(Clone, Debug)]
pub(crate) struct ScanCx {
    /// Slot of the scan's tensor.
    pub tensor: usize,
    /// Flat offset of the current point.
    pub flat: Expr,
    /// Stride of the scanned axis.
    pub stride: Expr,
    /// Current value of the scanned index.
    pub t: Expr,
    /// The value stored one step back, when the scanned axis is the innermost loop (a step
    /// back is the previous iteration): a variable the node sets after each store, so `prev
    /// 1` reads a register instead of the store it just made (a loop-carried store → load
    /// through memory cost a scan ~2× its add).
    pub carry: Option<Var>,
}

/// A bound index: its variable and the interval of its values.
#[derive(Clone, Debug)]
pub(crate) struct IdxVar {
    /// The variable.
    pub var: Var,
    /// Its range's name, when it runs over a whole declared range.
    pub range: Option<Size>,
}

/// Index bindings replaced by [`Cx::bind_flat`], for [`Cx::restore`].
pub(crate) type Saved = Vec<(usize, Option<IdxVar>)>;

/// One definition's ops and dtypes.
#[derive(Clone, Copy)]
pub(crate) struct Def<'o> {
    /// Ops, children first; the root is last.
    pub ops: &'o [Op],
    /// Dtype of each op.
    pub tys: &'o [DType],
}

impl Def<'_> {
    /// The root op's id.
    pub fn root(&self) -> Id {
        Id::from(self.ops.len().saturating_sub(1))
    }

    fn op(&self, id: Id) -> &Op {
        &self.ops[usize::from(id)]
    }
}

/// The lowering context of one kernel.
pub(crate) struct Cx<'a> {
    /// The function being built.
    pub b: Builder,
    /// The checked program (functions, reductions, params).
    pub program: &'a Program,
    /// Dim variables by name.
    pub dims: HashMap<String, Var>,
    /// Param variables by `ParamId` index.
    pub params: HashMap<usize, Var>,
    /// Every tensor, by compile slot (position in the cascade's order).
    pub tensors: Vec<TensorInfo>,
    /// Bound index variables, by compile slot.
    pub idx: Vec<Option<IdxVar>>,
    /// Index ranges of the cascade, by index name.
    pub ranges: HashMap<String, Size>,
    /// Intervals known for variables (index and dim variables).
    pub intervals: HashMap<Var, (i128, i128)>,
    /// The scan being lowered, if any.
    pub scan: Option<ScanCx>,
    /// `IR node 'O' of cascade 'sdpa'`, for failure sites.
    pub loc: String,
    /// Compiled `init` of the scan being lowered.
    pub scan_init: Option<(Vec<Op>, Vec<DType>)>,
    /// Ops of the definition being lowered whose value is already computed (the attention
    /// plan's dot-product tile): lowering one of them gives the expression instead.
    pub subst: Vec<(Id, Expr)>,
    /// The target is a CPU (the generic plan may exchange a column reduction's loops there:
    /// `columns`).
    pub cpu: bool,
}

/// The KIR value type computing dtype `d`.
pub(crate) fn vty(d: DType) -> Ty {
    Ty::from_dtype(d).value()
}

impl Cx<'_> {
    /// Reports a broken invariant.
    pub fn internal(&self, what: &str) -> ScheduleError {
        ScheduleError::Internal { what: what.to_string(), loc: self.loc.clone() }
    }

    /// Per tensor slot, whether it may miss points: tensors with a presence buffer are exactly
    /// those (the `partial` argument of `common::may_absent`).
    pub fn partial(&self) -> Vec<bool> {
        self.tensors.iter().map(|t| t.present.is_some()).collect()
    }

    /// Binds index slot `slot` to `iv`, returning what it was bound to. Every index variable
    /// lies in `0..=MAX_DIM` (node indices and reduction indices stay inside their ranges),
    /// which the interval analysis learns here.
    pub fn bind(&mut self, slot: usize, iv: IdxVar) -> Option<IdxVar> {
        self.intervals.insert(iv.var, (0, MAX_DIM as i128));
        if self.idx.len() <= slot {
            self.idx.resize(slot + 1, None);
        }
        self.idx[slot].replace(iv)
    }

    /// Restores a slot's previous binding.
    pub fn unbind(&mut self, slot: usize, old: Option<IdxVar>) {
        if let Some(s) = self.idx.get_mut(slot) {
            *s = old;
        }
    }

    /// Binds the indices `axes` — (slot, name, extent, declared range), outermost first — to
    /// the row-major decomposition of `flat` over their extents (the iteration variable of a
    /// parallel loop over their product). Returns each axis' value, in `axes` order, and the
    /// bindings they replaced, for [`Cx::restore`].
    pub fn bind_flat(&mut self, flat: Expr, axes: &[(usize, &str, Expr, Size)]) -> (Vec<Expr>, Saved) {
        let mut vals = vec![e::i64(0); axes.len()];
        let mut saved = Vec::with_capacity(axes.len());
        let mut rest = flat;
        for (i, (slot, name, extent, range)) in axes.iter().enumerate().rev() {
            let x = if i == 0 { rest.clone() } else { e::bin(K::Rem, rest.clone(), extent.clone()) };
            let v = self.b.let_(name, x);
            rest = e::bin(K::Div, rest, extent.clone());
            vals[i] = e::var(v);
            saved.push((*slot, self.bind(*slot, IdxVar { var: v, range: Some(range.clone()) })));
        }
        (vals, saved)
    }

    /// Restores bindings saved by [`Cx::bind_flat`] (or collected the same way).
    pub fn restore(&mut self, saved: Saved) {
        for (slot, old) in saved.into_iter().rev() {
            self.unbind(slot, old);
        }
    }

    /// The size of `s` as an `I64` expression.
    pub fn size(&self, s: &Size) -> Result<Expr, ScheduleError> {
        match s {
            Size::Fixed(n) => Ok(e::i64((*n).max(0))),
            Size::Dim(d) => self.dims.get(d).map(|v| e::var(*v)).ok_or_else(|| self.internal(&format!("unknown dim '{d}'"))),
        }
    }

    /// The interval of an integer expression, if the analysis knows one.
    pub fn interval(&self, x: &Expr) -> Option<(i128, i128)> {
        match x {
            Expr::Const(Const::I64(v)) => Some((*v as i128, *v as i128)),
            Expr::Const(Const::I32(v)) => Some((*v as i128, *v as i128)),
            Expr::Var(v) => self.intervals.get(v).copied(),
            Expr::Cast { to, x } if to.is_int() => self.interval(x),
            Expr::Binary { op, a, b, .. } => {
                let (a0, a1) = self.interval(a)?;
                let (b0, b1) = self.interval(b)?;
                match op {
                    K::Add => Some((a0 + b0, a1 + b1)),
                    K::Sub => Some((a0 - b1, a1 - b0)),
                    K::Mul => {
                        let c = [a0 * b0, a0 * b1, a1 * b0, a1 * b1];
                        Some((*c.iter().min()?, *c.iter().max()?))
                    }
                    K::Min => Some((a0.min(b0), a1.min(b1))),
                    K::Max => Some((a0.max(b0), a1.max(b1))),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// True if `x` provably lies in `lo..=hi`.
    pub fn within(&self, x: &Expr, lo: i128, hi: i128) -> bool {
        self.interval(x).is_some_and(|(a, b)| a >= lo && b <= hi)
    }

    /// Evaluates `id` into a fresh variable and a presence flag (`None`: always present),
    /// closing any frames it opened.
    pub fn scoped(&mut self, d: Def<'_>, id: Id, want: Ty) -> Result<(Var, Option<Var>), ScheduleError> {
        let mark = self.b.mark();
        let val = self.b.var("t", want);
        // Only needed when something opens a frame; set before evaluating.
        let pres = self.b.var("present", Ty::Bool);
        self.b.set(pres, e::bool(false));
        self.b.set(val, e::num(want, 0.0));
        let inner = self.b.mark();
        let x = self.lower_as(d, id, want)?;
        self.b.set(val, x);
        let opened = self.b.mark() != inner;
        self.b.set(pres, e::bool(true));
        self.b.close_to(mark);
        Ok((val, opened.then_some(pres)))
    }

    /// Evaluates `id` as a filter: absent counts as false.
    pub fn holds(&mut self, d: Def<'_>, id: Id) -> Result<Expr, ScheduleError> {
        if let Op::Const(v) = d.op(id) {
            return Ok(e::bool(v.as_bool()));
        }
        // The variable keeps its initial false where the filter is absent.
        let (v, _) = self.scoped(d, id, Ty::Bool)?;
        Ok(e::var(v))
    }

    /// Lowers `id` converted to `want` (literals take the wanted type directly).
    pub fn lower_as(&mut self, d: Def<'_>, id: Id, want: Ty) -> Result<Expr, ScheduleError> {
        let want = want.value();
        if let Op::Const(v) = d.op(id) {
            return Ok(super::reduce::scalar(want, *v));
        }
        let x = self.lower(d, id)?;
        let have = self.b.ty(&x);
        Ok(if have == want { x } else { e::cast(want, x) })
    }

    /// Lowers `id`, opening `if present` frames for values that may be absent.
    pub fn lower(&mut self, d: Def<'_>, id: Id) -> Result<Expr, ScheduleError> {
        if let Some((_, x)) = self.subst.iter().find(|(i, _)| *i == id) {
            return Ok(x.clone());
        }
        let ty = vty(d.tys[usize::from(id)]);
        match d.op(id).clone() {
            Op::Sym(s) => Err(self.internal(&format!("symbol '{s}' used as a value"))),
            Op::Const(_) => self.lower_as(d, id, ty),
            Op::Idx(slot) => match self.idx.get(slot).and_then(Clone::clone) {
                Some(iv) => Ok(e::var(iv.var)),
                None => Err(self.internal("an index used outside its scope")),
            },
            Op::Dim(name) => self.size(&Size::Dim(name.as_str().to_string())),
            Op::Param { id: p, .. } => {
                self.params.get(&p).map(|v| e::var(*v)).ok_or_else(|| self.internal("a param the kernel does not take"))
            }
            Op::Read { tensor, subs } => self.read(d, tensor, &subs),
            Op::Unary { op, d: dt, a } => self.unary(d, op, dt, a),
            Op::Binary { op, d: dt, a, b } => self.binary(d, op, dt, a, b),
            Op::And(a, b) | Op::Or(a, b) => {
                let is_and = matches!(d.op(id), Op::And(..));
                let x = self.lower_as(d, a, Ty::Bool)?;
                let res = self.b.let_("sc", e::bool(!is_and));
                let pres = self.b.let_("sc.present", e::bool(true));
                self.b.open_if(if is_and { x } else { e::un(KU::Not, x) });
                let (v, p) = self.scoped(d, b, Ty::Bool)?;
                self.b.set(res, e::var(v));
                if let Some(p) = p {
                    self.b.set(pres, e::var(p));
                }
                self.b.close();
                self.b.open_if(e::var(pres));
                Ok(e::var(res))
            }
            Op::If(c, a, b) => {
                let cv = self.lower_as(d, c, Ty::Bool)?;
                let res = self.b.var("if", ty);
                let pres = self.b.let_("if.present", e::bool(true));
                self.b.open_if(cv);
                let (va, pa) = self.scoped(d, a, ty)?;
                self.b.set(res, e::var(va));
                if let Some(p) = pa {
                    self.b.set(pres, e::var(p));
                }
                self.b.open_else();
                let (vb, pb) = self.scoped(d, b, ty)?;
                self.b.set(res, e::var(vb));
                if let Some(p) = pb {
                    self.b.set(pres, e::var(p));
                }
                self.b.close();
                if pa.is_some() || pb.is_some() {
                    self.b.open_if(e::var(pres));
                }
                Ok(e::var(res))
            }
            Op::Call { f, d: dt, x, y } => self.call(d, f, dt, x, y),
            Op::Cast { to, x } => self.cast(d, to, x),
            Op::Dense { x, d: dt } => {
                let (v, _) = self.scoped(d, x, vty(dt))?;
                Ok(e::var(v))
            }
            Op::Where { filter, x } => {
                let ok = self.holds(d, filter)?;
                if ok != e::bool(true) {
                    self.b.open_if(ok);
                }
                self.lower(d, x)
            }
            Op::Reduce { op, d: dt, head, body } => self.reduce(d, op, dt, &head, body),
            Op::URed { red, field, identity, head, bodies } => self.ured(d, red, field, &identity, &head, &bodies),
            Op::Osm { head, s, v, sink } => self.osm(d, ty, &head, s, v, sink),
            Op::Prev { back } => self.prev(back, ty),
        }
    }

    /// `tensor[subs]`, each subscript checked against its dimension unless provably inside.
    fn read(&mut self, d: Def<'_>, tensor: usize, subs: &[Id]) -> Result<Expr, ScheduleError> {
        let Some(t) = self.tensors.get(tensor).cloned() else { return Err(self.internal("a read of an unknown tensor")) };
        if t.shape.len() != subs.len() {
            return Err(self.internal(&format!("'{}' read with {} subscripts", t.name, subs.len())));
        }
        let mut flat = e::i64(0);
        for (axis, &s) in subs.iter().enumerate() {
            let x = self.lower_as(d, s, Ty::I64)?;
            if !self.in_dim(d, s, &x, &t, axis) {
                let out = e::bin(K::Or, e::bin(K::Lt, x.clone(), e::i64(0)), e::bin(K::Ge, x.clone(), t.shape[axis].clone()));
                let what = format!("subscript {axis} of '{}' outside its dimension (in {})", t.name, self.loc);
                self.b.fail_if(out, FailKind::OutOfRange, what);
            }
            flat = e::add(flat, e::mul(x, t.strides[axis].clone()));
        }
        if let Some(p) = t.present {
            let flat_v = self.b.let_("at", flat);
            self.b.open_if(e::bin(K::Ne, e::cast(Ty::I32, e::load(p, e::var(flat_v))), Expr::Const(Const::I32(0))));
            return Ok(e::load(t.buf, e::var(flat_v)));
        }
        Ok(e::load(t.buf, flat))
    }

    /// True if subscript `x` (op `s`) of `t`'s axis provably lies in its dimension.
    fn in_dim(&self, d: Def<'_>, s: Id, x: &Expr, t: &TensorInfo, axis: usize) -> bool {
        if let Op::Idx(slot) = d.op(s)
            && let Some(Some(iv)) = self.idx.get(*slot)
            && iv.range.as_ref() == t.sizes.get(axis)
        {
            return true;
        }
        match t.sizes.get(axis) {
            Some(Size::Fixed(n)) => self.within(x, 0, *n as i128 - 1),
            Some(Size::Dim(dim)) => self.reversed_index(d, s, dim, t.sizes.get(axis)),
            _ => false,
        }
    }

    /// True if `s` is `(D - 1) - i` for a bound index `i` over `D` itself: the same range
    /// walked backwards (`optimize::key_scan`'s read of a suffix scan).
    fn reversed_index(&self, d: Def<'_>, s: Id, dim: &str, size: Option<&Size>) -> bool {
        matches!(reversed(d, s), Some((n, slot))
            if n.as_str() == dim && matches!(self.idx.get(slot), Some(Some(iv)) if iv.range.as_ref() == size))
    }

    /// The scan's own value `back` steps back, or its `init` before the start.
    fn prev(&mut self, back: i64, ty: Ty) -> Result<Expr, ScheduleError> {
        let Some(sc) = self.scan.clone() else { return Err(self.internal("`prev` outside a scan")) };
        let Some((init_ops, init_tys)) = self.scan_init.clone() else { return Err(self.internal("a scan without init")) };
        let t = self.tensors[sc.tensor].clone();
        let res = self.b.var("prev", ty);
        let pres = self.b.let_("prev.present", e::bool(true));
        self.b.open_if(e::bin(K::Lt, sc.t.clone(), e::i64(back)));
        // `init` is evaluated without the scan: it may not look back itself.
        let saved = self.scan.take();
        let init = Def { ops: &init_ops, tys: &init_tys };
        let (v, p) = self.scoped(init, init.root(), ty)?;
        self.scan = saved;
        self.b.set(res, e::var(v));
        if let Some(p) = p {
            self.b.set(pres, e::var(p));
        }
        self.b.open_else();
        let at = e::sub(sc.flat.clone(), e::mul(e::i64(back), sc.stride.clone()));
        let val = match sc.carry {
            Some(carry) if back == 1 && t.present.is_none() => e::var(carry),
            _ => e::load(t.buf, at.clone()),
        };
        let val = if self.b.ty(&val) == ty { val } else { e::cast(ty, val) };
        self.b.set(res, val);
        if let Some(pb) = t.present {
            self.b.set(pres, e::bin(K::Ne, e::cast(Ty::I32, e::load(pb, at)), Expr::Const(Const::I32(0))));
        }
        self.b.close();
        self.b.open_if(e::var(pres));
        Ok(e::var(res))
    }

    /// Evaluates a reduction head's bounds (absent → empty) and checks the range lies in the
    /// index's declared range; returns `(lo, hi)` variables.
    pub fn bounds(&mut self, d: Def<'_>, head: &Head) -> Result<(Var, Var), ScheduleError> {
        let (lo, lp) = self.scoped(d, head.lo, Ty::I64)?;
        let (hi, hp) = self.scoped(d, head.hi, Ty::I64)?;
        let present = match (lp, hp) {
            (None, None) => None,
            (a, b) => Some(e::bin(K::And, a.map_or(e::bool(true), e::var), b.map_or(e::bool(true), e::var))),
        };
        if let Some(p) = present {
            // An absent bound gives an empty range.
            self.b.set(hi, e::select(p, e::var(hi), e::var(lo)));
        }
        let range = self.ranges.get(head.name.as_str()).cloned();
        let (lo_x, hi_x) = (e::var(lo), e::var(hi));
        let mut bad = e::bin(K::Lt, lo_x.clone(), e::i64(0));
        if let Some(r) = &range {
            let r = self.size(r)?;
            bad = e::bin(K::Or, bad, e::bin(K::Gt, hi_x.clone(), r));
        }
        let what = format!("reduction over '{}' outside its range (in {})", head.name, self.loc);
        self.b.fail_if(e::bin(K::And, e::bin(K::Lt, lo_x, hi_x), bad), FailKind::Internal, what);
        Ok((lo, hi))
    }

    /// Opens `for I in lo..hi` with the head's index bound and its filter checked; returns
    /// the saved binding for [`Cx::close_head`].
    pub fn open_head(&mut self, d: Def<'_>, head: &Head, lo: Var, hi: Var) -> Result<Option<IdxVar>, ScheduleError> {
        let var = self.b.open_for(head.name.as_str(), e::var(lo), e::var(hi));
        // `bounds` failed unless a non-empty range lies inside the declared one.
        let range = self.ranges.get(head.name.as_str()).cloned();
        let old = self.bind(head.slot, IdxVar { var, range });
        let ok = self.holds(d, head.filter)?;
        if ok != e::bool(true) {
            self.b.open_if(ok);
        }
        Ok(old)
    }

    /// Closes what [`Cx::open_head`] opened (call after [`Builder::close_to`] the loop).
    pub fn close_head(&mut self, head: &Head, old: Option<IdxVar>) {
        self.unbind(head.slot, old);
    }
}

/// `Some((D, slot))` if op `s` of `d` is `(D - 1) - i`, `i` the index in `slot`: a range walked
/// backwards (`optimize::key_scan`'s read of a suffix scan).
pub(super) fn reversed(d: Def<'_>, s: Id) -> Option<(egg::Symbol, usize)> {
    use crate::hir::BinOp as B;
    let Op::Binary { op: B::Sub, a, b, .. } = d.op(s) else { return None };
    let Op::Binary { op: B::Sub, a: top, b: one, .. } = d.op(*a) else { return None };
    match (d.op(*top), d.op(*one), d.op(*b)) {
        (Op::Dim(n), Op::Const(tfmc_runtime::Scalar::I(1)), Op::Idx(slot)) => Some((*n, *slot)),
        _ => None,
    }
}
