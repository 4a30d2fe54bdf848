//! 16-bit float conversions done with integer operations (branch-free, so they vectorize):
//! `BF16` always, `F16` when the target has no native conversion (F16C). Loads are exact;
//! stores round to nearest even, overflow to infinity, and keep NaN a (quiet) NaN of the same
//! sign. With F16C, `F16` uses LLVM's `half` with `fpext`/`fptrunc` instead (same results up
//! to NaN payload bits), which avoids libcalls the JIT could not resolve.

use inkwell::IntPredicate as P;
use inkwell::values::{FloatValue, IntValue};

use super::LlvmError;
use super::codegen::{Cg, float, int};

impl<'ctx> Cg<'ctx, '_> {
    fn k32(&self, v: u32) -> IntValue<'ctx> {
        self.cx.i32_type().const_int(u64::from(v), false)
    }

    fn bits_to_f32(&self, x: IntValue<'ctx>) -> Result<FloatValue<'ctx>, LlvmError> {
        float(self.b.build_bit_cast(x, self.cx.f32_type(), "")?)
    }

    fn f32_to_bits(&self, x: FloatValue<'ctx>) -> Result<IntValue<'ctx>, LlvmError> {
        int(self.b.build_bit_cast(x, self.cx.i32_type(), "")?)
    }

    /// bfloat16 bits (`i16`) → `float` (exact).
    pub(super) fn bf16_to_f32(&self, h: IntValue<'ctx>) -> Result<FloatValue<'ctx>, LlvmError> {
        let b = &self.b;
        let w = b.build_int_z_extend(h, self.cx.i32_type(), "")?;
        let w = b.build_left_shift(w, self.k32(16), "")?;
        self.bits_to_f32(w)
    }

    /// `float` → bfloat16 bits, rounding to nearest even; NaN → quiet NaN.
    pub(super) fn f32_to_bf16(&self, x: FloatValue<'ctx>) -> Result<IntValue<'ctx>, LlvmError> {
        let b = &self.b;
        let u = self.f32_to_bits(x)?;
        let hi = b.build_right_shift(u, self.k32(16), false, "")?;
        let odd = b.build_and(hi, self.k32(1), "")?;
        let r = b.build_int_add(u, self.k32(0x7fff), "")?;
        let r = b.build_int_add(r, odd, "")?;
        let r = b.build_right_shift(r, self.k32(16), false, "")?;
        let nan = b.build_or(hi, self.k32(0x40), "")?;
        let is_nan = b.build_float_compare(inkwell::FloatPredicate::UNO, x, x, "")?;
        let v = int(b.build_select(is_nan, nan, r, "")?)?;
        Ok(b.build_int_truncate(v, self.cx.i16_type(), "")?)
    }

    /// IEEE half bits (`i16`) → `float` (exact, subnormals included).
    pub(super) fn f16_to_f32(&self, h: IntValue<'ctx>) -> Result<FloatValue<'ctx>, LlvmError> {
        let b = &self.b;
        let h = b.build_int_z_extend(h, self.cx.i32_type(), "")?;
        let sign = b.build_and(h, self.k32(0x8000), "")?;
        let sign = b.build_left_shift(sign, self.k32(16), "")?;
        // Exponent and mantissa moved to float position, exponent rebiased by 127 - 15.
        let o = b.build_and(h, self.k32(0x7fff), "")?;
        let o = b.build_left_shift(o, self.k32(13), "")?;
        let exp = b.build_and(o, self.k32(0x0f80_0000), "")?;
        let normal = b.build_int_add(o, self.k32(112 << 23), "")?;
        // Inf/NaN: exponent all ones → rebias once more to 255.
        let infnan = b.build_int_add(normal, self.k32(112 << 23), "")?;
        // Subnormal: (mantissa as a normal with exponent 2^-14) - 2^-14, exact.
        let sub = b.build_int_add(normal, self.k32(1 << 23), "")?;
        let sub = b.build_float_sub(self.bits_to_f32(sub)?, self.cx.f32_type().const_float(2f64.powi(-14)), "")?;
        let sub = self.f32_to_bits(sub)?;
        let is_infnan = b.build_int_compare(P::EQ, exp, self.k32(0x0f80_0000), "")?;
        let is_sub = b.build_int_compare(P::EQ, exp, self.k32(0), "")?;
        let v = int(b.build_select(is_sub, sub, normal, "")?)?;
        let v = int(b.build_select(is_infnan, infnan, v, "")?)?;
        let v = b.build_or(v, sign, "")?;
        self.bits_to_f32(v)
    }

    /// `float` → IEEE half bits, rounding to nearest even; overflow → ±inf; NaN → quiet NaN.
    pub(super) fn f32_to_f16(&self, x: FloatValue<'ctx>) -> Result<IntValue<'ctx>, LlvmError> {
        let b = &self.b;
        let u = self.f32_to_bits(x)?;
        let sign = b.build_and(u, self.k32(0x8000_0000), "")?;
        let a = b.build_xor(u, sign, "")?;
        // |x| >= 65520 (2^16 - 2^4, rounds to inf) or inf/NaN.
        let big = b.build_int_compare(P::UGE, a, self.k32((127 + 16) << 23), "")?;
        let is_nan = b.build_int_compare(P::UGT, a, self.k32(255 << 23), "")?;
        let inf = int(b.build_select(is_nan, self.k32(0x7e00), self.k32(0x7c00), "")?)?;
        // Subnormal or zero result (|x| < 2^-14): adding 0.5 aligns the mantissa so that the
        // FPU's round-to-nearest-even does the rounding.
        let magic = ((127 - 15) + (23 - 10) + 1) << 23;
        let small = b.build_int_compare(P::ULT, a, self.k32(113 << 23), "")?;
        let s = b.build_float_add(self.bits_to_f32(a)?, self.bits_to_f32(self.k32(magic))?, "")?;
        let s = b.build_int_sub(self.f32_to_bits(s)?, self.k32(magic), "")?;
        // Normal: rebias, round to nearest even on the 13 dropped bits.
        let odd = b.build_right_shift(a, self.k32(13), false, "")?;
        let odd = b.build_and(odd, self.k32(1), "")?;
        let n = b.build_int_add(a, self.k32(((15u32.wrapping_sub(127)) << 23).wrapping_add(0xfff)), "")?;
        let n = b.build_int_add(n, odd, "")?;
        let n = b.build_right_shift(n, self.k32(13), false, "")?;
        let v = int(b.build_select(small, s, n, "")?)?;
        let v = int(b.build_select(big, inf, v, "")?)?;
        let sign16 = b.build_right_shift(sign, self.k32(16), false, "")?;
        let v = b.build_or(v, sign16, "")?;
        Ok(b.build_int_truncate(v, self.cx.i16_type(), "")?)
    }
}
