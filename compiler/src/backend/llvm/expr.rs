//! Expressions → LLVM values, per the `kir` module docs. Owns the float semantics:
//! - every float instruction carries `contract`; a `Binary` with `reassoc` carries
//!   `reassoc | contract` (FP reductions only vectorize with it), and a reassociable `Min`/`Max`
//!   also `nsz` (the sign of a zero result is either: without it the vectorized reduction
//!   orders -0 below +0 with two more instructions per vector); never `nnan`/`ninf`/`afn`, so
//!   NaN and infinities behave per IEEE;
//! - math: `llvm.{sqrt,fabs,floor,ceil,roundeven,exp,exp2,log,log2,sin,cos,pow}`; libm calls
//!   for `tanh log1p expm1 erf atan2` (`f` suffix for `F32`); with [`MathLib::Libdevice`]
//!   (GPU code) `exp exp2 log log2 sin cos pow`, float `Rem` and the libm functions are
//!   libdevice calls `__nv_{name}[f]` instead (the GPU has no exact instruction for them);
//!   `Min`/`Max` are `llvm.minimum/maximum` (NaN-propagating) on floats, `llvm.smin/smax` on
//!   integers;
//! - comparisons are ordered except `Ne` (`une`); float → int casts are `llvm.fptosi.sat`
//!   (NaN → 0); number → `Bool` is `!= 0` (`une 0.0` for floats: NaN → true).
//!
//! Memory: loads/stores go through [`Cg::load_elem`]/[`Cg::store_elem`] with natural
//! alignment; `Bool` is a byte (`!= 0` on load, 0/1 on store), `F16`/`BF16` convert to and from
//! `F32` (see [`super::half`]).

use inkwell::values::FastMathFlags;
use inkwell::values::{BasicValue, BasicValueEnum, FloatValue, IntValue};
use inkwell::{FloatPredicate as FP, IntPredicate as IP};

use super::codegen::{Cg, FnCx, MathLib, float, int};
use super::{LlvmError, types};
use crate::schedule::kir::{BinOp, Buf, Const, Expr, Ty, UnOp};

impl<'ctx> Cg<'ctx, '_> {
    /// Marks float instruction `v` `contract` (plus `reassoc` if asked, and `nsz` for a
    /// reassociable min/max: `minmax`). Constant-folded values are not instructions and need
    /// no flags.
    fn fmf(&self, v: BasicValueEnum<'ctx>, reassoc: bool, minmax: bool) -> BasicValueEnum<'ctx> {
        let inst = match v {
            BasicValueEnum::FloatValue(x) => x.as_instruction(),
            _ => None,
        };
        if let Some(i) = inst
            && i.can_use_fast_math_flags()
        {
            let mut flags = FastMathFlags::AllowContract;
            if reassoc {
                flags |= FastMathFlags::AllowReassoc;
                if minmax {
                    flags |= FastMathFlags::NoSignedZeros;
                }
            }
            // Cannot fail: checked by can_use_fast_math_flags.
            let _ = i.set_fast_math_flags(flags);
        }
        v
    }

    /// `x` of type `t` as an `i1` (`!= 0`; NaN is true).
    fn truthy(&self, x: BasicValueEnum<'ctx>, t: Ty) -> Result<IntValue<'ctx>, LlvmError> {
        Ok(match t {
            Ty::Bool => int(x)?,
            _ if t.is_float() => {
                let x = float(x)?;
                self.b.build_float_compare(FP::UNE, x, x.get_type().const_zero(), "")?
            }
            _ => {
                let x = int(x)?;
                self.b.build_int_compare(IP::NE, x, x.get_type().const_zero(), "")?
            }
        })
    }

    /// Loads element `index` of buffer `buf` as a value.
    pub(crate) fn load_elem(&self, fx: &mut FnCx<'ctx>, buf: Buf, index: IntValue<'ctx>) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let elem = self.func.buf(buf).elem;
        let base = self.buf_ptr(fx, buf)?;
        let mty = types::memory(self.cx, elem, self.native_f16);
        let p = self.gep(mty, base, index)?;
        let v = self.b.build_load(mty, p, "")?;
        if let Some(i) = v.as_instruction_value() {
            i.set_alignment(elem.size() as u32).map_err(|e| LlvmError::Internal(e.to_string()))?;
        }
        Ok(match elem {
            Ty::Bool => self.truthy(v, Ty::I32)?.into(),
            Ty::F16 if self.native_f16 => self.b.build_float_ext(float(v)?, self.cx.f32_type(), "")?.into(),
            Ty::F16 => self.f16_to_f32(int(v)?)?.into(),
            Ty::BF16 => self.bf16_to_f32(int(v)?)?.into(),
            _ => v,
        })
    }

    /// Stores value `x` into element `index` of buffer `buf`.
    pub(crate) fn store_elem(
        &self,
        fx: &mut FnCx<'ctx>,
        buf: Buf,
        index: IntValue<'ctx>,
        x: BasicValueEnum<'ctx>,
    ) -> Result<(), LlvmError> {
        let elem = self.func.buf(buf).elem;
        let base = self.buf_ptr(fx, buf)?;
        let mty = types::memory(self.cx, elem, self.native_f16);
        let p = self.gep(mty, base, index)?;
        let v: BasicValueEnum<'ctx> = match elem {
            Ty::Bool => self.b.build_int_z_extend(int(x)?, self.cx.i8_type(), "")?.into(),
            Ty::F16 if self.native_f16 => self.b.build_float_trunc(float(x)?, self.cx.f16_type(), "")?.into(),
            Ty::F16 => self.f32_to_f16(float(x)?)?.into(),
            Ty::BF16 => self.f32_to_bf16(float(x)?)?.into(),
            _ => x,
        };
        let st = self.b.build_store(p, v)?;
        st.set_alignment(elem.size() as u32).map_err(|e| LlvmError::Internal(e.to_string()))?;
        Ok(())
    }

    /// Lowers `e`.
    pub(crate) fn expr(&self, fx: &mut FnCx<'ctx>, e: &Expr) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let cx = self.cx;
        Ok(match e {
            Expr::Const(c) => match *c {
                Const::Bool(v) => cx.bool_type().const_int(u64::from(v), false).into(),
                Const::I32(v) => cx.i32_type().const_int(v as u64, true).into(),
                Const::I64(v) => cx.i64_type().const_int(v as u64, true).into(),
                Const::F32(v) => cx.f32_type().const_float(f64::from(v)).into(),
                Const::F64(v) => cx.f64_type().const_float(v).into(),
            },
            Expr::Var(v) => self.load_var(fx, *v)?,
            Expr::Load { buf, index } => {
                let i = int(self.expr(fx, index)?)?;
                self.load_elem(fx, *buf, i)?
            }
            Expr::Unary { op, x } => {
                let t = self.func.ty(x);
                let v = self.expr(fx, x)?;
                self.unary(*op, t, v)?
            }
            Expr::Binary { op, a, b, reassoc } => {
                let t = self.func.ty(a);
                let va = self.expr(fx, a)?;
                let vb = self.expr(fx, b)?;
                let r = self.binary(*op, t, va, vb)?;
                self.fmf(r, *reassoc, matches!(op, BinOp::Min | BinOp::Max))
            }
            Expr::Select { c, a, b } => {
                let c = int(self.expr(fx, c)?)?;
                let va = self.expr(fx, a)?;
                let vb = self.expr(fx, b)?;
                self.b.build_select(c, va, vb, "")?
            }
            Expr::Cast { to, x } => {
                let from = self.func.ty(x);
                let v = self.expr(fx, x)?;
                self.cast(from, *to, v)?
            }
            Expr::Bitcast { to, x } => {
                let v = self.expr(fx, x)?;
                if self.func.ty(x) == *to { v } else { self.b.build_bit_cast(v, types::value(cx, *to), "")? }
            }
        })
    }

    /// Calls intrinsic `name` overloaded on `v`'s type, flagged `contract`.
    fn math(&self, name: &str, args: &[BasicValueEnum<'ctx>]) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let f = self.intrinsic(name, &[args[0].get_type()])?;
        let args: Vec<_> = args.iter().map(|&a| a.into()).collect();
        Ok(self.fmf(self.call(f, &args)?, false, false))
    }

    /// Calls libm `name` (`namef` for `F32`) on float `args`; with [`MathLib::Libdevice`],
    /// libdevice's `__nv_name` (`__nv_namef`).
    fn libm(&self, name: &str, args: &[BasicValueEnum<'ctx>]) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let ty = args[0].get_type();
        let f32 = ty == self.cx.f32_type().into();
        let prefix = match self.math {
            MathLib::Libm => "",
            MathLib::Libdevice => "__nv_",
        };
        let full = if f32 { format!("{prefix}{name}f") } else { format!("{prefix}{name}") };
        let params: Vec<_> = args.iter().map(|a| a.get_type().into()).collect();
        let f = self.extern_fn(&full, Some(ty), &params);
        let args: Vec<_> = args.iter().map(|&a| a.into()).collect();
        Ok(self.fmf(self.call(f, &args)?, false, false))
    }

    /// A math function LLVM has an intrinsic for: the intrinsic on the host, libdevice's
    /// function (see [`Cg::libm`]) on a device, which has no instruction for it.
    fn transcendental(&self, intrinsic: &str, name: &str, args: &[BasicValueEnum<'ctx>]) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        match self.math {
            MathLib::Libm => self.math(intrinsic, args),
            MathLib::Libdevice => self.libm(name, args),
        }
    }

    fn unary(&self, op: UnOp, t: Ty, v: BasicValueEnum<'ctx>) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        use UnOp::*;
        let b = &self.b;
        let fl = t.is_float();
        Ok(match op {
            Neg if fl => self.fmf(b.build_float_neg(float(v)?, "")?.into(), false, false),
            Neg => b.build_int_neg(int(v)?, "")?.into(),
            Not => b.build_not(int(v)?, "")?.into(),
            Abs if fl => self.math("llvm.fabs", &[v])?,
            Abs => {
                let f = self.intrinsic("llvm.abs", &[v.get_type()])?;
                self.call(f, &[v.into(), self.cx.bool_type().const_zero().into()])?
            }
            Floor | Ceil | RoundEven if !fl => v,
            Floor => self.math("llvm.floor", &[v])?,
            Ceil => self.math("llvm.ceil", &[v])?,
            RoundEven => self.math("llvm.roundeven", &[v])?,
            Sqrt => self.math("llvm.sqrt", &[v])?,
            Exp => self.transcendental("llvm.exp", "exp", &[v])?,
            Exp2 => self.transcendental("llvm.exp2", "exp2", &[v])?,
            Log => self.transcendental("llvm.log", "log", &[v])?,
            Log2 => self.transcendental("llvm.log2", "log2", &[v])?,
            Sin => self.transcendental("llvm.sin", "sin", &[v])?,
            Cos => self.transcendental("llvm.cos", "cos", &[v])?,
            Log1p => self.libm("log1p", &[v])?,
            Expm1 => self.libm("expm1", &[v])?,
            Tanh => self.libm("tanh", &[v])?,
            Erf => self.libm("erf", &[v])?,
            IsNan if fl => {
                let x = float(v)?;
                b.build_float_compare(FP::UNO, x, x, "")?.into()
            }
            IsNan => self.cx.bool_type().const_zero().into(),
        })
    }

    fn overflow(&self, name: &str, a: BasicValueEnum<'ctx>, b: BasicValueEnum<'ctx>) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let f = self.intrinsic(name, &[a.get_type()])?;
        let r = self.call(f, &[a.into(), b.into()])?.into_struct_value();
        Ok(self.b.build_extract_value(r, 1, "")?)
    }

    fn binary(&self, op: BinOp, t: Ty, va: BasicValueEnum<'ctx>, vb: BasicValueEnum<'ctx>) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        use BinOp::*;
        let b = &self.b;
        if t.is_float() {
            let (x, y) = (float(va)?, float(vb)?);
            let cmp = |p| -> Result<BasicValueEnum<'ctx>, LlvmError> { Ok(b.build_float_compare(p, x, y, "")?.into()) };
            return Ok(match op {
                Add => b.build_float_add(x, y, "")?.into(),
                Sub => b.build_float_sub(x, y, "")?.into(),
                Mul => b.build_float_mul(x, y, "")?.into(),
                Div => b.build_float_div(x, y, "")?.into(),
                // The GPU target expands `frem` as a - trunc(a / b) * b, which is not C's exact
                // fmod.
                Rem if self.math == MathLib::Libdevice => self.libm("fmod", &[va, vb])?,
                Rem => b.build_float_rem(x, y, "")?.into(),
                Min => self.math("llvm.minimum", &[va, vb])?,
                Max => self.math("llvm.maximum", &[va, vb])?,
                Pow => self.transcendental("llvm.pow", "pow", &[va, vb])?,
                Atan2 => self.libm("atan2", &[va, vb])?,
                Lt => cmp(FP::OLT)?,
                Le => cmp(FP::OLE)?,
                Gt => cmp(FP::OGT)?,
                Ge => cmp(FP::OGE)?,
                Eq => cmp(FP::OEQ)?,
                Ne => cmp(FP::UNE)?,
                And | Or | Shl | AddOverflows | SubOverflows | MulOverflows => {
                    return Err(LlvmError::Internal(format!("{op:?} on a float")));
                }
            });
        }
        let (x, y) = (int(va)?, int(vb)?);
        // Bool orders false < true: unsigned; integers are signed.
        let bool_ = t == Ty::Bool;
        let pick = |s: IP, u: IP| if bool_ { u } else { s };
        let name = |s: &'static str, u: &'static str| if bool_ { u } else { s };
        let cmp = |p| -> Result<BasicValueEnum<'ctx>, LlvmError> { Ok(b.build_int_compare(p, x, y, "")?.into()) };
        Ok(match op {
            Add => b.build_int_add(x, y, "")?.into(),
            Sub => b.build_int_sub(x, y, "")?.into(),
            Mul => b.build_int_mul(x, y, "")?.into(),
            Div => b.build_int_signed_div(x, y, "")?.into(),
            Rem => b.build_int_signed_rem(x, y, "")?.into(),
            Min => self.call(self.intrinsic(name("llvm.smin", "llvm.umin"), &[va.get_type()])?, &[va.into(), vb.into()])?,
            Max => self.call(self.intrinsic(name("llvm.smax", "llvm.umax"), &[va.get_type()])?, &[va.into(), vb.into()])?,
            Lt => cmp(pick(IP::SLT, IP::ULT))?,
            Le => cmp(pick(IP::SLE, IP::ULE))?,
            Gt => cmp(pick(IP::SGT, IP::UGT))?,
            Ge => cmp(pick(IP::SGE, IP::UGE))?,
            Eq => cmp(IP::EQ)?,
            Ne => cmp(IP::NE)?,
            And => b.build_and(x, y, "")?.into(),
            Or => b.build_or(x, y, "")?.into(),
            Shl => b.build_left_shift(x, y, "")?.into(),
            AddOverflows => self.overflow("llvm.sadd.with.overflow", va, vb)?,
            SubOverflows => self.overflow("llvm.ssub.with.overflow", va, vb)?,
            MulOverflows => self.overflow("llvm.smul.with.overflow", va, vb)?,
            Pow | Atan2 => return Err(LlvmError::Internal(format!("{op:?} on an integer"))),
        })
    }

    /// Numeric conversion of `v` from `from` to `to` (both value types).
    pub(crate) fn cast(&self, from: Ty, to: Ty, v: BasicValueEnum<'ctx>) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let b = &self.b;
        let dst = types::value(self.cx, to);
        if from == to {
            return Ok(v);
        }
        if to == Ty::Bool {
            return Ok(self.truthy(v, from)?.into());
        }
        Ok(match (from.is_float(), to.is_float()) {
            (true, true) => {
                let x: FloatValue<'ctx> = float(v)?;
                let r = if to == Ty::F64 {
                    b.build_float_ext(x, dst.into_float_type(), "")?
                } else {
                    b.build_float_trunc(x, dst.into_float_type(), "")?
                };
                self.fmf(r.into(), false, false)
            }
            (true, false) => {
                let f = self.intrinsic("llvm.fptosi.sat", &[dst, v.get_type()])?;
                self.call(f, &[v.into()])?
            }
            (false, true) if from == Ty::Bool => b.build_unsigned_int_to_float(int(v)?, dst.into_float_type(), "")?.into(),
            (false, true) => b.build_signed_int_to_float(int(v)?, dst.into_float_type(), "")?.into(),
            (false, false) if from == Ty::Bool => b.build_int_z_extend(int(v)?, dst.into_int_type(), "")?.into(),
            (false, false) => {
                let (x, d) = (int(v)?, dst.into_int_type());
                if d.get_bit_width() > x.get_type().get_bit_width() {
                    b.build_int_s_extend(x, d, "")?.into()
                } else {
                    b.build_int_truncate(x, d, "")?.into()
                }
            }
        })
    }
}
