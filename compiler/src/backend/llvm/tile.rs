//! Tile products (`kir::TileProduct`) on a CPU, with the tile in vector registers.
//!
//! The tile's `n` columns are cut into vectors of `W = vector_bits / 32` lanes, and the vectors
//! into *panels* of `p` vectors such that the panel's accumulators, a row of `B` and one
//! broadcast element of `A` (at `a0 + i·lda + k·ka`) fit the register file: `m·p + p + 1 <= R` (`R` = 32 registers with
//! AVX-512, 16 otherwise), so `6 × 64` on AVX-512 (24 `zmm` accumulators), `6 × 16` per panel
//! on AVX2. Per panel whose columns are all valid (`j0 + p·W <= min(cols, n)`, checked at run
//! time): the accumulators start from `init` (vector loads of `C`, times the broadcast row
//! scale), then for each `k` the panel's vectors of `B` row `k` are loaded once and every row
//! `i` adds `A[i][k]` (broadcast) times them with `llvm.fma` (for a squared difference, the
//! difference `d = A[i][k] - B[k][..]` and `fma(d, d, acc)`); then the rows are stored. The
//! accumulators are allocas of vector type in the function's entry block, which SROA promotes
//! to registers. A panel with missing columns (the tile's tail) runs its full vectors one at a
//! time (a loop over their count) and the scalar expansion for the last partial vector, so
//! nothing past `cols` is read or written; a constant `cols` covering the tile needs no tail
//! code.

use inkwell::IntPredicate as IP;
use inkwell::types::{BasicTypeEnum, VectorType};
use inkwell::values::{BasicValue, BasicValueEnum, FloatMathValue, FloatValue, IntValue, PointerValue, VectorValue};

use super::LlvmError;
use super::codegen::{Cg, FnCx, float, int};
use crate::schedule::kir::{TileInit, TileOp, TileProduct};

/// The tile's operands as LLVM values.
struct Operands<'ctx> {
    a: PointerValue<'ctx>,
    a0: IntValue<'ctx>,
    lda: IntValue<'ctx>,
    /// `A`'s stride along the sum, when not 1 (a key-major tile).
    ka: Option<IntValue<'ctx>>,
    b: PointerValue<'ctx>,
    b0: IntValue<'ctx>,
    ldb: IntValue<'ctx>,
    c: PointerValue<'ctx>,
    c0: IntValue<'ctx>,
    ldc: IntValue<'ctx>,
    k: IntValue<'ctx>,
    /// Valid columns: `min(cols, n)`.
    cols: IntValue<'ctx>,
    /// The scale buffer and row 0's index, for [`TileInit::Scale`].
    scale: Option<(PointerValue<'ctx>, IntValue<'ctx>)>,
}

impl<'ctx> Cg<'ctx, '_> {
    /// Lowers tile product `t` (see the module docs).
    pub(crate) fn tile_product(&mut self, fx: &mut FnCx<'ctx>, t: &TileProduct) -> Result<(), LlvmError> {
        let i64t = self.cx.i64_type();
        let ix = |cg: &Self, fx: &mut FnCx<'ctx>, e| -> Result<IntValue<'ctx>, LlvmError> { int(cg.expr(fx, e)?) };
        let cols = ix(self, fx, &t.cols)?;
        let n = i64t.const_int(u64::from(t.n), false);
        let less = self.b.build_int_compare(IP::SLT, cols, n, "")?;
        let cols = self.b.build_select(less, cols, n, "cols")?.into_int_value();
        let scale = match &t.init {
            TileInit::Scale { buf, at } => Some((self.buf_ptr(fx, *buf)?, ix(self, fx, at)?)),
            _ => None,
        };
        let ops = Operands {
            a: self.buf_ptr(fx, t.a)?,
            a0: ix(self, fx, &t.a0)?,
            lda: ix(self, fx, &t.lda)?,
            ka: if t.ka == crate::schedule::kir::Expr::Const(crate::schedule::kir::Const::I64(1)) {
                None
            } else {
                Some(ix(self, fx, &t.ka)?)
            },
            b: self.buf_ptr(fx, t.b)?,
            b0: ix(self, fx, &t.b0)?,
            ldb: ix(self, fx, &t.ldb)?,
            c: self.buf_ptr(fx, t.c)?,
            c0: ix(self, fx, &t.c0)?,
            ldc: ix(self, fx, &t.ldc)?,
            k: ix(self, fx, &t.k)?,
            cols,
            scale,
        };
        let w = (self.vector_bits / 32).max(1);
        let regs = if self.vector_bits >= 512 { 32 } else { 16 };
        let per_panel = ((regs - 1) / (t.m + 1)).max(1);
        let vectors = t.n.div_ceil(w);
        let mut v0 = 0;
        // A constant `cols` covering the tile (the attention plan's key blocks): every panel
        // is full, so no run-time tail code at all.
        let all_valid = matches!(t.cols, crate::schedule::kir::Expr::Const(crate::schedule::kir::Const::I64(c)) if c >= i64::from(t.n))
            && t.n.is_multiple_of(w);
        while v0 < vectors {
            let p = per_panel.min(vectors - v0);
            let (j0, j1) = (u64::from(v0 * w), u64::from((v0 + p) * w));
            let j0v = i64t.const_int(j0, false);
            if all_valid {
                self.vector_panel(fx, t, &ops, j0v, p, w)?;
                v0 += p;
                continue;
            }
            // A full panel at run time: `p` vectors. Else its full vectors one at a time (a loop
            // over the count), then the scalar expansion of the last partial vector.
            let full = self.b.build_int_compare(IP::SGE, ops.cols, i64t.const_int(j1, false), "full")?;
            let (bv, bs, after) = (
                self.cx.append_basic_block(fx.f, "tile.vector"),
                self.cx.append_basic_block(fx.f, "tile.tail"),
                self.cx.append_basic_block(fx.f, "tile.next"),
            );
            self.b.build_conditional_branch(full, bv, bs)?;
            self.b.position_at_end(bv);
            self.vector_panel(fx, t, &ops, j0v, p, w)?;
            self.b.build_unconditional_branch(after)?;
            self.b.position_at_end(bs);
            let wv = i64t.const_int(u64::from(w), false);
            let left = self.b.build_int_sub(ops.cols, j0v, "left")?;
            let left = self.b.build_select(self.b.build_int_compare(IP::SGT, left, i64t.const_zero(), "")?, left, i64t.const_zero(), "")?;
            let nfull = self.b.build_int_signed_div(left.into_int_value(), wv, "nfull")?;
            self.counted_loop(fx, i64t.const_zero(), nfull, |cg, fx, v| {
                let jv = cg.b.build_int_add(j0v, cg.b.build_int_mul(v, wv, "")?, "")?;
                cg.vector_panel(fx, t, &ops, jv, 1, w)
            })?;
            let js = self.b.build_int_add(j0v, self.b.build_int_mul(nfull, wv, "")?, "")?;
            self.scalar_columns(fx, t, &ops, js, j1)?;
            self.b.build_unconditional_branch(after)?;
            self.b.position_at_end(after);
            v0 += p;
        }
        Ok(())
    }

    /// `p` vectors of `w` lanes from column `j0`, every column valid.
    fn vector_panel(
        &mut self,
        fx: &mut FnCx<'ctx>,
        t: &TileProduct,
        ops: &Operands<'ctx>,
        j0: IntValue<'ctx>,
        p: u32,
        w: u32,
    ) -> Result<(), LlvmError> {
        let f32t = self.cx.f32_type();
        let vt = f32t.vec_type(w);
        let fma = self.intrinsic("llvm.fma", &[BasicTypeEnum::VectorType(vt)])?;
        let i64t = self.cx.i64_type();
        let col = |cg: &Self, v: u32| -> Result<IntValue<'ctx>, LlvmError> {
            match v {
                0 => Ok(j0),
                _ => Ok(cg.b.build_int_add(j0, i64t.const_int(u64::from(v * w), false), "")?),
            }
        };
        let mut accs = Vec::with_capacity((t.m * p) as usize);
        for i in 0..t.m {
            let crow = self.row_index(ops.c0, ops.ldc, i)?;
            let alpha = match self.row_scale(ops, i)? {
                Some(x) => Some(self.splat(vt, x)?),
                None => None,
            };
            for v in 0..p {
                let slot = self.alloca(fx, vt, "tile.acc")?;
                let start: VectorValue<'ctx> = match &t.init {
                    TileInit::Zero => vt.const_zero(),
                    TileInit::Load | TileInit::Scale { .. } => {
                        let idx = self.b.build_int_add(crow, col(self, v)?, "")?;
                        let c = self.load_vector(vt, ops.c, idx)?;
                        match alpha {
                            Some(a) => self.b.build_float_mul(a, c, "")?,
                            None => c,
                        }
                    }
                };
                self.b.build_store(slot, start)?;
                accs.push(slot);
            }
        }
        self.counted_loop(fx, i64t.const_zero(), ops.k, |cg, _fx, kk| {
            let brow = cg.row_index_dyn(ops.b0, ops.ldb, kk)?;
            let ak = cg.a_offset(ops, kk)?;
            let mut bvs = Vec::with_capacity(p as usize);
            for v in 0..p {
                let idx = cg.b.build_int_add(brow, col(cg, v)?, "")?;
                bvs.push(cg.load_vector(vt, ops.b, idx)?);
            }
            for i in 0..t.m {
                let arow = cg.row_index(ops.a0, ops.lda, i)?;
                let idx = cg.b.build_int_add(arow, ak, "")?;
                let a = cg.b.build_load(f32t, cg.gep(f32t.into(), ops.a, idx)?, "a")?;
                let a = cg.splat(vt, float(a)?)?;
                for (v, bv) in bvs.iter().enumerate() {
                    let slot = accs[(i * p) as usize + v];
                    let acc = cg.b.build_load(vt, slot, "acc")?;
                    let (x, y) = cg.fma_operands(t.op, a, *bv)?;
                    let r = cg.call(fma, &[x.into(), y.into(), acc.into()])?;
                    cg.b.build_store(slot, r)?;
                }
            }
            Ok(())
        })?;
        for i in 0..t.m {
            let crow = self.row_index(ops.c0, ops.ldc, i)?;
            for v in 0..p {
                let acc = self.b.build_load(vt, accs[(i * p + v) as usize], "acc")?;
                let idx = self.b.build_int_add(crow, col(self, v)?, "")?;
                let st = self.b.build_store(self.gep(f32t.into(), ops.c, idx)?, acc)?;
                st.set_alignment(4).map_err(|e| LlvmError::Internal(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Columns `j0 .. min(j1, cols)` one at a time (the scalar expansion).
    fn scalar_columns(
        &mut self,
        fx: &mut FnCx<'ctx>,
        t: &TileProduct,
        ops: &Operands<'ctx>,
        j0: IntValue<'ctx>,
        j1: u64,
    ) -> Result<(), LlvmError> {
        let f32t = self.cx.f32_type();
        let i64t = self.cx.i64_type();
        let fma = self.intrinsic("llvm.fma", &[BasicTypeEnum::FloatType(f32t)])?;
        let j1 = i64t.const_int(j1, false);
        let lt = self.b.build_int_compare(IP::SLT, ops.cols, j1, "")?;
        let hi = self.b.build_select(lt, ops.cols, j1, "")?.into_int_value();
        let acc = self.alloca(fx, f32t, "tile.acc")?;
        for i in 0..t.m {
            let alpha = self.row_scale(ops, i)?;
            self.counted_loop(fx, j0, hi, |cg, fx, j| {
                let crow = cg.row_index(ops.c0, ops.ldc, i)?;
                let cidx = cg.b.build_int_add(crow, j, "")?;
                let cptr = cg.gep(f32t.into(), ops.c, cidx)?;
                let start: FloatValue<'ctx> = match (&t.init, alpha) {
                    (TileInit::Zero, _) => f32t.const_zero(),
                    (_, None) => float(cg.b.build_load(f32t, cptr, "c")?)?,
                    (_, Some(alpha)) => {
                        let c = float(cg.b.build_load(f32t, cptr, "c")?)?;
                        cg.b.build_float_mul(alpha, c, "")?
                    }
                };
                cg.b.build_store(acc, start)?;
                cg.counted_loop(fx, i64t.const_zero(), ops.k, |cg, _fx, kk| {
                    let arow = cg.row_index(ops.a0, ops.lda, i)?;
                    let aidx = cg.b.build_int_add(arow, cg.a_offset(ops, kk)?, "")?;
                    let a = cg.b.build_load(f32t, cg.gep(f32t.into(), ops.a, aidx)?, "a")?;
                    let brow = cg.row_index_dyn(ops.b0, ops.ldb, kk)?;
                    let bidx = cg.b.build_int_add(brow, j, "")?;
                    let b = cg.b.build_load(f32t, cg.gep(f32t.into(), ops.b, bidx)?, "b")?;
                    let s = cg.b.build_load(f32t, acc, "acc")?;
                    let (x, y) = cg.fma_operands(t.op, float(a)?, float(b)?)?;
                    let r = cg.call(fma, &[x.into(), y.into(), s.into()])?;
                    cg.b.build_store(acc, r)?;
                    Ok(())
                })?;
                let s = cg.b.build_load(f32t, acc, "acc")?;
                cg.b.build_store(cptr, s)?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// `A`'s offset along the sum at `kk` (`kk·ka`).
    fn a_offset(&self, ops: &Operands<'ctx>, kk: IntValue<'ctx>) -> Result<IntValue<'ctx>, LlvmError> {
        Ok(match ops.ka {
            Some(ka) => self.b.build_int_mul(kk, ka, "")?,
            None => kk,
        })
    }

    /// Row `i`'s scale `scale[at + i]` for [`TileInit::Scale`] (loaded once per row), else
    /// `None`.
    fn row_scale(&self, ops: &Operands<'ctx>, i: u32) -> Result<Option<FloatValue<'ctx>>, LlvmError> {
        let Some((s, at)) = ops.scale else { return Ok(None) };
        let f32t = self.cx.f32_type();
        let idx = self.b.build_int_add(at, self.cx.i64_type().const_int(u64::from(i), false), "")?;
        Ok(Some(float(self.b.build_load(f32t, self.gep(f32t.into(), s, idx)?, "alpha")?)?))
    }

    /// `base + i·ld` for a constant row `i`.
    fn row_index(&self, base: IntValue<'ctx>, ld: IntValue<'ctx>, i: u32) -> Result<IntValue<'ctx>, LlvmError> {
        let i = self.cx.i64_type().const_int(u64::from(i), false);
        self.row_index_dyn(base, ld, i)
    }

    /// `base + i·ld`.
    fn row_index_dyn(&self, base: IntValue<'ctx>, ld: IntValue<'ctx>, i: IntValue<'ctx>) -> Result<IntValue<'ctx>, LlvmError> {
        let off = self.b.build_int_nsw_mul(i, ld, "")?;
        Ok(self.b.build_int_nsw_add(base, off, "")?)
    }

    /// An unaligned vector load of `vt` from element `idx` of an `f32` buffer.
    fn load_vector(&self, vt: VectorType<'ctx>, base: PointerValue<'ctx>, idx: IntValue<'ctx>) -> Result<VectorValue<'ctx>, LlvmError> {
        let p = self.gep(self.cx.f32_type().into(), base, idx)?;
        let v = self.b.build_load(vt, p, "")?;
        if let Some(inst) = v.as_instruction_value() {
            inst.set_alignment(4).map_err(|e| LlvmError::Internal(e.to_string()))?;
        }
        match v {
            BasicValueEnum::VectorValue(v) => Ok(v),
            _ => Err(LlvmError::Internal("a vector load gave a non-vector".into())),
        }
    }

    /// The two factors `fma` multiplies for one term of `op` from `a = A[i][k]` and
    /// `b = B[k][j]` (scalars or vectors): `a`, `b`; or `d`, `d` with `d = a - b`.
    fn fma_operands<T: FloatMathValue<'ctx> + Copy>(&self, op: TileOp, a: T, b: T) -> Result<(T, T), LlvmError> {
        match op {
            TileOp::Mul => Ok((a, b)),
            TileOp::SquaredDifference => {
                let d = self.b.build_float_sub(a, b, "d")?;
                Ok((d, d))
            }
        }
    }

    /// `x` in every lane of `vt`.
    fn splat(&self, vt: VectorType<'ctx>, x: FloatValue<'ctx>) -> Result<VectorValue<'ctx>, LlvmError> {
        let i32t = self.cx.i32_type();
        let undef = vt.get_undef();
        let one = self.b.build_insert_element(undef, x, i32t.const_zero(), "")?;
        let mask = i32t.vec_type(vt.get_size()).const_zero();
        Ok(self.b.build_shuffle_vector(one, undef, mask, "splat")?)
    }
}
