//! Emitting a loop [`super::vectorize::plan`] accepted: `for var in lo..hi` becomes
//! - for a small body ([`Plan::unroll`] > 1: the memory-bound loops, where loop overhead
//!   matters), a vector loop unrolled 4 times (16 iterations per trip, as 4 copies of the body,
//!   each on 4 lanes) over `lo..lo + floor(n / 16) * 16`,
//! - a vector loop of 4 iterations per trip over the whole vectors left,
//! - the scalar loop for the remainder (`n mod 4` iterations),
//!
//! where `n = max(hi - lo, 0)`; loops a constant trip count proves empty are not emitted, and
//! a small body with a constant trip count of at most 64 runs its vector iterations as
//! straight-line code (no loop).
//!
//! Lane values ([`VV`]): uniform values stay scalars (computed as in scalar code and splatted
//! where they meet vectors); affine `I64` values are a lane-0 scalar plus a constant (the
//! unrolled copy's offset, folded into load and store offsets); varying values are
//! `f32x4`/`i32x4`, a `Bool` lane an `i32` mask (all ones for true). Loads and stores at
//! affine indices are one unaligned 16-byte access at the lane-0 element; loads at strided
//! indices (lane `k` at `base + k × stride`) are four scalar loads. A comparison of an
//! affine value with a uniform one compares the exact lane values in two `i64x2` halves and
//! packs the two masks with one shuffle. Operations without a vector form run lane by lane
//! through the scalar lowering (`super::expr`), so every lane computes exactly what the
//! scalar loop would.
//!
//! Reductions: each accumulator gets one vector variable per unrolled copy (independent
//! chains), all lanes the operation's identity (`-0.0` for `+`, `1` for `*`, `±inf` / the
//! integer extremes for min/max, all ones / zero for and/or), updated lane-wise (the 4-lane
//! loop continues copy 0's); after the vector loops the copies are combined lane-wise
//! (`((c0 ⊕ c1) ⊕ c2) ⊕ c3`) and the 4 lanes folded into the scalar accumulator in lane order
//! (`acc ⊕ l0 ⊕ l1 ⊕ l2 ⊕ l3`), then the scalar remainder continues from it. Temporaries are set to their last lane after each vector loop,
//! so code after the loop sees what the scalar loop would have left.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::Variable;

use super::CraneliftError;
use super::expr::{contraction, float_cc, int_cc};
use super::func::{Fx, mem};
use super::vectorize::{LANES, Plan, acc_operand};

/// The most vector iterations a constant trip count is emitted as straight-line code (small
/// bodies only): 16 × 4 lanes covers the attention tile's 64-key loops.
const MAX_STRAIGHT: i64 = 16;

use crate::schedule::kir::{BinOp, Block, Expr, Stmt, Ty, UnOp, Var};

/// A value in vector code (see the module docs).
#[derive(Clone, Copy, Debug)]
enum VV {
    /// The same scalar in every lane.
    Uni(Value),
    /// `I64`: lane `k` holds this scalar `+` the constant `+ k`.
    Aff(Value, i64),
    /// `I64`: lane `k` holds the first scalar `+ k ×` the second.
    Str(Value, Value),
    /// One value per lane.
    Vec(Value),
}

/// The vector type of lanes of type `t` (`Bool` lanes are `i32` masks).
fn vec_ty(t: Ty) -> Type {
    match t {
        Ty::F32 => types::F32X4,
        _ => types::I32X4,
    }
}

/// Vector variables of one loop: lane values of temporaries, accumulators.
struct VEnv {
    vals: HashMap<Var, VV>,
    accs: HashMap<Var, Variable>,
}

impl<'k> Fx<'_, 'k> {
    /// Emits `for var in lo..hi { body }` as planned (see the module docs); `known` is the
    /// trip count when the bounds are constants.
    pub(super) fn vector_loop(
        &mut self,
        var: Var,
        (lo, hi): (Value, Value),
        known: Option<i64>,
        body: &'k Block,
        plan: &Plan,
    ) -> Result<(), CraneliftError> {
        // v16 = lo + floor(n / (4 u)) * 4 u, v4 = lo + floor(n / 4) * 4, with n = max(hi - lo, 0).
        let unroll = plan.unroll;
        let diff = self.b.ins().isub(hi, lo);
        let pos = self.b.ins().icmp(IntCC::SignedGreaterThan, hi, lo);
        let zero = self.iconst(types::I64, 0);
        let mut ends = [lo; 2];
        for (end, w) in ends.iter_mut().zip([LANES * unroll, LANES]) {
            let whole = self.b.ins().band_imm_s(diff, -w);
            let count = self.b.ins().select(pos, whole, zero);
            *end = self.b.ins().iadd(lo, count);
        }
        let [v16, v4] = ends;
        let mut accs = Vec::with_capacity(plan.accs.len());
        for acc in &plan.accs {
            let vt = vec_ty(acc.ty);
            let id = self.identity(acc.op, acc.ty);
            let v = self.b.ins().splat(vt, id);
            let mut copies = Vec::with_capacity(unroll as usize);
            for _ in 0..unroll {
                let var = self.b.declare_var(vt);
                self.def_variable(var, v)?;
                copies.push(var);
            }
            accs.push(copies);
        }
        let n = known.map(|n| n.max(0));
        if let Some(n) = n
            && unroll > 1
            && n <= MAX_STRAIGHT * LANES
        {
            // A short constant trip count: the vector iterations as straight-line code.
            if n >= LANES {
                let env = self.body_copies(var, lo, 0..n / LANES, body, plan, &accs)?;
                self.set_temps(&env, plan)?;
            }
        } else {
            self.vector_loops(var, [lo, v16, v4], n, body, plan, &accs)?;
        }
        for (acc, copies) in plan.accs.iter().zip(&accs) {
            let mut v = None;
            for &copy in copies {
                let c = self.use_variable(copy)?;
                v = Some(match v {
                    None => c,
                    Some(v) => self.vbin(acc.op, acc.ty, v, c)?,
                });
            }
            let v = v.ok_or_else(|| self.internal("an accumulator without copies"))?;
            let mut r = self.use_var(acc.var)?;
            for k in 0..LANES as u8 {
                let lane = self.lane(v, acc.ty, k);
                r = self.binary(acc.op, acc.ty, r, lane)?;
            }
            self.def_var(acc.var, r)?;
        }
        if n.is_some_and(|n| n % LANES == 0) {
            return Ok(());
        }
        self.counted_loop(v4, hi, 1, |fx, i| {
            fx.def_var(var, i)?;
            fx.stmts(body)
        })
    }

    /// The unrolled vector loop over `lo..v16` (when the body is small) and the 4-lane loop
    /// over the whole vectors left, up to `v4`; loops the constant trip count `n` proves empty
    /// are left out.
    fn vector_loops(
        &mut self,
        var: Var,
        [lo, v16, v4]: [Value; 3],
        n: Option<i64>,
        body: &Block,
        plan: &Plan,
        accs: &[Vec<Variable>],
    ) -> Result<(), CraneliftError> {
        let unroll = plan.unroll;
        let single_lo = if unroll > 1 {
            if n.is_none_or(|n| n >= LANES * unroll) {
                self.vector_trips(var, (lo, v16), unroll, body, plan, accs)?;
            }
            v16
        } else {
            lo
        };
        if n.is_none_or(|n| n % (LANES * unroll) >= LANES || unroll == 1 && n >= LANES) {
            self.vector_trips(var, (single_lo, v4), 1, body, plan, accs)?;
        }
        Ok(())
    }

    /// A vector loop over `lo..hi` (a multiple of `4 * copies` apart), `copies` copies of the
    /// body per trip; accumulator `a`'s copy `k` is `accs[a][k]`.
    fn vector_trips(
        &mut self,
        var: Var,
        (lo, hi): (Value, Value),
        copies: i64,
        body: &Block,
        plan: &Plan,
        accs: &[Vec<Variable>],
    ) -> Result<(), CraneliftError> {
        let ctr = self.b.declare_var(types::I64);
        self.def_variable(ctr, lo)?;
        let bb = self.block();
        let done = self.block();
        let after = self.block();
        let go = self.b.ins().icmp(IntCC::SignedLessThan, lo, hi);
        self.b.ins().brif(go, bb, &[], after, &[]);
        self.b.switch_to_block(bb);
        let i = self.use_variable(ctr)?;
        let env = self.body_copies(var, i, 0..copies, body, plan, accs)?;
        let next = self.b.ins().iadd_imm_s(i, copies * LANES);
        self.def_variable(ctr, next)?;
        let more = self.b.ins().icmp(IntCC::SignedLessThan, next, hi);
        self.b.ins().brif(more, bb, &[], done, &[]);
        self.b.seal_block(bb);
        self.b.seal_block(done);
        self.b.switch_to_block(done);
        self.set_temps(&env, plan)?;
        self.b.ins().jump(after, &[]);
        self.b.seal_block(after);
        self.b.switch_to_block(after);
        Ok(())
    }

    /// Emits copies `ks` of the body, copy `k` on iterations `i + 4k ..= i + 4k + 3` with
    /// accumulator copy `k mod unroll`; returns the last copy's lane values.
    fn body_copies(
        &mut self,
        var: Var,
        i: Value,
        ks: std::ops::Range<i64>,
        body: &Block,
        plan: &Plan,
        accs: &[Vec<Variable>],
    ) -> Result<VEnv, CraneliftError> {
        let mut env = VEnv { vals: HashMap::new(), accs: HashMap::new() };
        for k in ks {
            env.vals.clear();
            env.vals.insert(var, VV::Aff(i, k * LANES));
            for (acc, vars) in plan.accs.iter().zip(accs) {
                let copy = vars.get((k % plan.unroll) as usize).ok_or_else(|| self.internal("an accumulator without its copy"))?;
                env.accs.insert(acc.var, *copy);
            }
            for s in body {
                self.vstmt(&mut env, s)?;
            }
        }
        Ok(env)
    }

    /// Sets every temporary to its last lane in `env` (what the scalar loop leaves).
    fn set_temps(&mut self, env: &VEnv, plan: &Plan) -> Result<(), CraneliftError> {
        for &t in &plan.temps {
            let last = match env.vals.get(&t) {
                Some(VV::Uni(x)) => *x,
                Some(VV::Aff(x, off)) => self.b.ins().iadd_imm_s(*x, off + LANES - 1),
                Some(VV::Str(x, s)) => {
                    let d = self.b.ins().imul_imm_s(*s, LANES - 1);
                    self.b.ins().iadd(*x, d)
                }
                Some(VV::Vec(x)) => self.lane(*x, self.f.var(t).ty, LANES as u8 - 1),
                None => return Err(self.internal("a temporary of a vector loop without a value")),
            };
            self.def_var(t, last)?;
        }
        Ok(())
    }

    /// Lane `k` of vector `v` with lanes of type `t`, as a scalar (`Bool`: `i8` 0/1).
    fn lane(&mut self, v: Value, t: Ty, k: u8) -> Value {
        let x = self.b.ins().extractlane(v, k);
        if t == Ty::Bool { self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0) } else { x }
    }

    /// The identity of reduction `op` on `t` (a scalar; `Bool` as an `i32` mask lane).
    fn identity(&mut self, op: BinOp, t: Ty) -> Value {
        use BinOp::*;
        match (t, op) {
            (Ty::F32, Add) => self.b.ins().f32const(-0.0),
            (Ty::F32, Mul) => self.b.ins().f32const(1.0),
            (Ty::F32, Min) => self.b.ins().f32const(f32::INFINITY),
            (Ty::F32, _) => self.b.ins().f32const(f32::NEG_INFINITY),
            (Ty::Bool, And | Min) => self.iconst(types::I32, -1),
            (Ty::Bool, _) => self.iconst(types::I32, 0),
            (_, Mul) => self.iconst(types::I32, 1),
            (_, Min) => self.iconst(types::I32, i64::from(i32::MAX)),
            (_, Max) => self.iconst(types::I32, i64::from(i32::MIN)),
            (_, And) => self.iconst(types::I32, -1),
            _ => self.iconst(types::I32, 0),
        }
    }

    fn vstmt(&mut self, env: &mut VEnv, s: &Stmt) -> Result<(), CraneliftError> {
        match s {
            Stmt::Set { var, value } => {
                if let Some(&acc) = env.accs.get(var) {
                    if acc_operand(*var, value).is_none() {
                        return Err(self.internal("an accumulator update without its accumulator"));
                    }
                    let t = self.f.var(*var).ty;
                    let v = self.vexpr(env, value)?;
                    let v = self.as_vector(v, t)?;
                    return self.def_variable(acc, v);
                }
                let v = self.vexpr(env, value)?;
                env.vals.insert(*var, v);
                Ok(())
            }
            Stmt::Store { buf, index, value } => {
                let VV::Aff(i, off) = self.vexpr(env, index)? else {
                    return Err(self.internal("a vector store at a non-affine index"));
                };
                let t = self.f.buf(*buf).elem;
                let v = self.vexpr(env, value)?;
                let v = self.as_vector(v, t)?;
                let (a, off) = self.vaddr(*buf, i, off)?;
                self.b.ins().store(mem(), v, a, off);
                Ok(())
            }
            _ => Err(self.internal("a vector loop body that is not straight-line")),
        }
    }

    /// `v` (of lane type `t`) as a vector: uniform values are splatted.
    fn as_vector(&mut self, v: VV, t: Ty) -> Result<Value, CraneliftError> {
        Ok(match v {
            VV::Vec(x) => x,
            VV::Uni(x) if t == Ty::Bool => {
                let w = self.b.ins().uextend(types::I32, x);
                let m = self.b.ins().ineg(w);
                self.b.ins().splat(types::I32X4, m)
            }
            VV::Uni(x) => self.b.ins().splat(vec_ty(t), x),
            VV::Aff(..) | VV::Str(..) => return Err(self.internal("an i64 lane value used as a vector")),
        })
    }

    /// The address of element `i + off` of `buf`, as a base and a byte offset (folded into the
    /// access when it fits).
    fn vaddr(&mut self, buf: crate::schedule::kir::Buf, i: Value, off: i64) -> Result<(Value, i32), CraneliftError> {
        let bytes = off * self.f.buf(buf).elem.size() as i64;
        match i32::try_from(bytes) {
            Ok(b) => Ok((self.addr(buf, i)?, b)),
            Err(_) => {
                let i = self.b.ins().iadd_imm_s(i, off);
                Ok((self.addr(buf, i)?, 0))
            }
        }
    }

    /// Elements `x + k × s` (`k < 4`) of `buf`, loaded one by one into a vector.
    fn gather(&mut self, buf: crate::schedule::kir::Buf, x: Value, s: Value) -> Result<Value, CraneliftError> {
        let ty = super::func::clif_ty(self.f.buf(buf).elem);
        let mut v = None;
        let mut i = x;
        for k in 0..LANES as u8 {
            if k > 0 {
                i = self.b.ins().iadd(i, s);
            }
            let a = self.addr(buf, i)?;
            let e = self.b.ins().load(ty, mem(), a, 0);
            v = Some(match v {
                None => self.b.ins().scalar_to_vector(vec_ty(self.f.buf(buf).elem), e),
                Some(v) => self.b.ins().insertlane(v, e, k),
            });
        }
        v.ok_or_else(|| self.internal("a gather of no lanes"))
    }

    /// A 128-bit constant of type `ty` from little-endian bytes.
    fn vconst(&mut self, ty: Type, bytes: Vec<u8>) -> Value {
        let c = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
        self.b.ins().vconst(ty, c)
    }

    fn vconst_i64(&mut self, lanes: [i64; 2]) -> Value {
        let bytes = lanes.iter().flat_map(|l| l.to_le_bytes()).collect();
        self.vconst(types::I64X2, bytes)
    }

    /// Lowers `e` in the vector body.
    fn vexpr(&mut self, env: &VEnv, e: &Expr) -> Result<VV, CraneliftError> {
        let f = self.f;
        Ok(match e {
            Expr::Const(c) => VV::Uni(self.constant(*c)),
            Expr::Var(v) => {
                if let Some(&x) = env.vals.get(v) {
                    x
                } else if let Some(&acc) = env.accs.get(v) {
                    VV::Vec(self.use_variable(acc)?)
                } else {
                    VV::Uni(self.use_var(*v)?)
                }
            }
            Expr::Load { buf, index } => match self.vexpr(env, index)? {
                VV::Uni(i) => VV::Uni(self.load_elem(*buf, i)?),
                VV::Aff(i, off) => {
                    let (a, off) = self.vaddr(*buf, i, off)?;
                    VV::Vec(self.b.ins().load(vec_ty(f.buf(*buf).elem), mem(), a, off))
                }
                VV::Str(x, s) => VV::Vec(self.gather(*buf, x, s)?),
                VV::Vec(_) => return Err(self.internal("a data-dependent gather in a vector loop")),
            },
            Expr::Unary { op, x } => {
                let t = f.ty(x);
                match self.vexpr(env, x)? {
                    VV::Uni(v) => VV::Uni(self.unary(*op, t, v)?),
                    VV::Vec(v) => VV::Vec(self.vunary(*op, t, v)?),
                    VV::Aff(..) | VV::Str(..) => return Err(self.internal("a unary operation on an i64 lane value")),
                }
            }
            Expr::Binary { op, a, b, .. } => {
                let t = f.ty(a);
                if self.cx.fma
                    && let Some(m) = contraction(f, e)
                {
                    let (x, y, z) = (self.vexpr(env, m.x)?, self.vexpr(env, m.y)?, self.vexpr(env, m.z)?);
                    if let (VV::Uni(x), VV::Uni(y), VV::Uni(z)) = (x, y, z) {
                        return Ok(VV::Uni(self.mul_add(x, y, z, m.neg_xy, m.neg_z)));
                    }
                    let (x, y, z) = (self.as_vector(x, t)?, self.as_vector(y, t)?, self.as_vector(z, t)?);
                    return Ok(VV::Vec(self.mul_add(x, y, z, m.neg_xy, m.neg_z)));
                }
                let va = self.vexpr(env, a)?;
                let vb = self.vexpr(env, b)?;
                self.vbinary(*op, t, va, vb)?
            }
            Expr::Select { c, a, b } => {
                let t = f.ty(a);
                let (vc, va, vb) = (self.vexpr(env, c)?, self.vexpr(env, a)?, self.vexpr(env, b)?);
                match (vc, va, vb) {
                    (VV::Uni(c), VV::Uni(x), VV::Uni(y)) => VV::Uni(self.b.ins().select(c, x, y)),
                    (VV::Uni(c), x, y) => {
                        let (x, y) = (self.as_vector(x, t)?, self.as_vector(y, t)?);
                        VV::Vec(self.b.ins().select(c, x, y))
                    }
                    (c, x, y) => {
                        let m = self.as_vector(c, Ty::Bool)?;
                        let (x, y) = (self.as_vector(x, t)?, self.as_vector(y, t)?);
                        let m = if t == Ty::F32 { self.b.ins().bitcast(types::F32X4, MemFlagsData::new(), m) } else { m };
                        VV::Vec(self.b.ins().bitselect(m, x, y))
                    }
                }
            }
            Expr::Cast { to, x } => {
                let from = f.ty(x);
                match self.vexpr(env, x)? {
                    VV::Uni(v) => VV::Uni(self.cast(from, *to, v)?),
                    v @ (VV::Aff(..) | VV::Str(..)) if *to == Ty::I64 => v,
                    VV::Str(..) => return Err(self.internal("a cast of a strided value")),
                    VV::Aff(v, off) => {
                        let v = self.b.ins().iadd_imm_s(v, off);
                        // Truncation commutes with + k: lane k of i32(base + k) is i32(base) + k.
                        let low = self.b.ins().ireduce(types::I32, v);
                        let s = self.b.ins().splat(types::I32X4, low);
                        let iota = (0..4i32).flat_map(|k| k.to_le_bytes()).collect();
                        let iota = self.vconst(types::I32X4, iota);
                        VV::Vec(self.b.ins().iadd(s, iota))
                    }
                    VV::Vec(v) => VV::Vec(self.vcast(from, *to, v)?),
                }
            }
            Expr::Bitcast { to, x } => match self.vexpr(env, x)? {
                VV::Vec(v) if f.ty(x) != *to => VV::Vec(self.b.ins().bitcast(vec_ty(*to), MemFlagsData::new(), v)),
                VV::Uni(v) if f.ty(x) != *to => VV::Uni(self.b.ins().bitcast(super::func::clif_ty(*to), MemFlagsData::new(), v)),
                v => v,
            },
        })
    }

    /// `op` on lane values of operand type `t`.
    fn vbinary(&mut self, op: BinOp, t: Ty, a: VV, b: VV) -> Result<VV, CraneliftError> {
        use BinOp::*;
        Ok(match (a, b, op) {
            (VV::Uni(x), VV::Uni(y), _) => VV::Uni(self.binary(op, t, x, y)?),
            (VV::Aff(x, o), VV::Uni(y), Add) | (VV::Uni(y), VV::Aff(x, o), Add) => VV::Aff(self.b.ins().iadd(x, y), o),
            (VV::Aff(x, o), VV::Uni(y), Sub) => VV::Aff(self.b.ins().isub(x, y), o),
            (VV::Aff(x, ox), VV::Aff(y, oy), Sub) => {
                let d = self.b.ins().isub(x, y);
                VV::Uni(self.b.ins().iadd_imm_s(d, ox - oy))
            }
            (VV::Aff(x, o), VV::Uni(y), Mul) | (VV::Uni(y), VV::Aff(x, o), Mul) => {
                let first = self.b.ins().iadd_imm_s(x, o);
                VV::Str(self.b.ins().imul(first, y), y)
            }
            (VV::Str(x, s), VV::Uni(y), Mul) | (VV::Uni(y), VV::Str(x, s), Mul) => {
                VV::Str(self.b.ins().imul(x, y), self.b.ins().imul(s, y))
            }
            (VV::Str(x, s), VV::Uni(y), Add) | (VV::Uni(y), VV::Str(x, s), Add) => VV::Str(self.b.ins().iadd(x, y), s),
            (VV::Str(x, s), VV::Uni(y), Sub) => VV::Str(self.b.ins().isub(x, y), s),
            (VV::Aff(..), VV::Uni(_), _) | (VV::Uni(_), VV::Aff(..), _) => {
                let cc = int_cc(op, false).ok_or_else(|| self.internal(format!("{op:?} of an i64 lane value")))?;
                VV::Vec(self.affine_mask(cc, a, b)?)
            }
            (VV::Aff(..) | VV::Str(..), _, _) | (_, VV::Aff(..) | VV::Str(..), _) => {
                return Err(self.internal(format!("{op:?} of i64 lane values")));
            }
            (x, VV::Uni(y), Shl) => {
                let x = self.as_vector(x, t)?;
                VV::Vec(self.b.ins().ishl(x, y))
            }
            (x, y, _) => {
                let (x, y) = (self.as_vector(x, t)?, self.as_vector(y, t)?);
                VV::Vec(self.vbin(op, t, x, y)?)
            }
        })
    }

    /// `op` on two vectors of lane type `t`.
    fn vbin(&mut self, op: BinOp, t: Ty, a: Value, b: Value) -> Result<Value, CraneliftError> {
        use BinOp::*;
        let ins = self.b.ins();
        Ok(match t {
            Ty::F32 => match op {
                Add => ins.fadd(a, b),
                Sub => ins.fsub(a, b),
                Mul => ins.fmul(a, b),
                Div => ins.fdiv(a, b),
                Min => ins.fmin(a, b),
                Max => ins.fmax(a, b),
                _ => match float_cc(op) {
                    Some(cc) => ins.fcmp(cc, a, b),
                    None => self.per_lane(t, t, &[a, b], |fx, l| fx.binary(op, t, l[0], l[1]))?,
                },
            },
            Ty::Bool => match op {
                And | Min => ins.band(a, b),
                Or | Max => ins.bor(a, b),
                _ => match int_cc(op, true) {
                    Some(cc) => ins.icmp(cc, a, b),
                    None => return Err(self.internal(format!("{op:?} on bool lanes"))),
                },
            },
            _ => match op {
                Add => ins.iadd(a, b),
                Sub => ins.isub(a, b),
                Mul => ins.imul(a, b),
                Min => ins.smin(a, b),
                Max => ins.smax(a, b),
                And => ins.band(a, b),
                Or => ins.bor(a, b),
                _ => match int_cc(op, false) {
                    Some(cc) => ins.icmp(cc, a, b),
                    None => {
                        let out = if op.is_predicate() { Ty::Bool } else { t };
                        self.per_lane(t, out, &[a, b], |fx, l| fx.binary(op, t, l[0], l[1]))?
                    }
                },
            },
        })
    }

    /// `op` on a vector of lane type `t`.
    fn vunary(&mut self, op: UnOp, t: Ty, v: Value) -> Result<Value, CraneliftError> {
        use UnOp::*;
        let ins = self.b.ins();
        Ok(match (t, op) {
            (Ty::F32, Neg) => ins.fneg(v),
            (Ty::F32, Abs) => ins.fabs(v),
            (Ty::F32, Sqrt) => ins.sqrt(v),
            (Ty::F32, Floor) => ins.floor(v),
            (Ty::F32, Ceil) => ins.ceil(v),
            (Ty::F32, RoundEven) => ins.nearest(v),
            (Ty::F32, IsNan) => ins.fcmp(FloatCC::Unordered, v, v),
            (Ty::F32, _) => self.per_lane(t, t, &[v], |fx, l| fx.unary(op, t, l[0]))?,
            (Ty::Bool, Not) => ins.bnot(v),
            (_, Neg) => ins.ineg(v),
            (_, Abs) => ins.iabs(v),
            (_, Not) => ins.bnot(v),
            (_, Floor | Ceil | RoundEven) => v,
            (_, IsNan) => self.vconst(types::I32X4, vec![0; 16]),
            _ => return Err(self.internal(format!("{op:?} on {t} lanes"))),
        })
    }

    /// Numeric conversion of a vector from lane type `from` to `to`.
    fn vcast(&mut self, from: Ty, to: Ty, v: Value) -> Result<Value, CraneliftError> {
        let ins = self.b.ins();
        Ok(match (from, to) {
            _ if from == to => v,
            (Ty::F32, Ty::I32) => ins.fcvt_to_sint_sat(types::I32X4, v),
            (Ty::I32, Ty::F32) => ins.fcvt_from_sint(types::F32X4, v),
            (Ty::Bool, Ty::F32) => {
                let one = ins.f32const(1.0);
                let one = self.b.ins().splat(types::F32X4, one);
                let m = self.b.ins().bitcast(types::F32X4, MemFlagsData::new(), v);
                self.b.ins().band(m, one)
            }
            (Ty::Bool, Ty::I32) => {
                let one = self.iconst(types::I32, 1);
                let one = self.b.ins().splat(types::I32X4, one);
                self.b.ins().band(v, one)
            }
            (Ty::F32, Ty::Bool) => {
                let z = ins.f32const(0.0);
                let z = self.b.ins().splat(types::F32X4, z);
                self.b.ins().fcmp(FloatCC::NotEqual, v, z)
            }
            (Ty::I32, Ty::Bool) => {
                let z = self.vconst(types::I32X4, vec![0; 16]);
                self.b.ins().icmp(IntCC::NotEqual, v, z)
            }
            _ => return Err(self.internal(format!("a vector cast from {from} to {to}"))),
        })
    }

    /// The lane mask of `a cc b` where one side is affine and the other uniform (`I64`): the
    /// exact lane values in two `i64x2` halves, compared, packed into one `i32x4` mask.
    fn affine_mask(&mut self, cc: IntCC, a: VV, b: VV) -> Result<Value, CraneliftError> {
        let lo = self.affine_half(cc, a, b, 0)?;
        let hi = self.affine_half(cc, a, b, 2)?;
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        let lo = self.b.ins().bitcast(types::I8X16, le, lo);
        let hi = self.b.ins().bitcast(types::I8X16, le, hi);
        // The low 32 bits of each 64-bit mask: i32 lanes 0 and 2 of each half.
        let pick = vec![0u8, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27];
        let imm = self.b.func.dfg.immediates.push(ConstantData::from(pick));
        let m = self.b.ins().shuffle(lo, hi, imm);
        Ok(self.b.ins().bitcast(types::I32X4, le, m))
    }

    /// `a cc b` on lanes `first` and `first + 1` (an `i64x2` mask).
    fn affine_half(&mut self, cc: IntCC, a: VV, b: VV, first: i64) -> Result<Value, CraneliftError> {
        let x = self.i64_lanes(a, first)?;
        let y = self.i64_lanes(b, first)?;
        Ok(self.b.ins().icmp(cc, x, y))
    }

    /// Lanes `first` and `first + 1` of a uniform or affine `I64` value.
    fn i64_lanes(&mut self, v: VV, first: i64) -> Result<Value, CraneliftError> {
        match v {
            VV::Uni(x) => Ok(self.b.ins().splat(types::I64X2, x)),
            VV::Aff(x, o) => {
                let s = self.b.ins().splat(types::I64X2, x);
                let off = self.vconst_i64([o + first, o + first + 1]);
                Ok(self.b.ins().iadd(s, off))
            }
            VV::Vec(_) | VV::Str(..) => Err(self.internal("an affine comparison with a vector")),
        }
    }

    /// Computes `op` lane by lane through the scalar lowering: `args` are vectors of lane type
    /// `t`, the result has lane type `out`.
    fn per_lane(
        &mut self,
        t: Ty,
        out: Ty,
        args: &[Value],
        op: impl Fn(&mut Self, &[Value]) -> Result<Value, CraneliftError>,
    ) -> Result<Value, CraneliftError> {
        let mut acc = None;
        for k in 0..LANES as u8 {
            let lanes: Vec<Value> = args.iter().map(|&v| self.lane(v, t, k)).collect();
            let mut r = op(self, &lanes)?;
            if out == Ty::Bool {
                let w = self.b.ins().uextend(types::I32, r);
                r = self.b.ins().ineg(w);
            }
            acc = Some(match acc {
                None => self.b.ins().splat(vec_ty(out), r),
                Some(v) => self.b.ins().insertlane(v, r, k),
            });
        }
        acc.ok_or_else(|| self.internal("a vector of no lanes"))
    }
}
