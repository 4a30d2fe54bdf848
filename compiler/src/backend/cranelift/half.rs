//! 16-bit float conversions with integer operations, bit for bit those of the LLVM backend's
//! integer path (`backend/llvm/half.rs`): loads are exact; stores round to nearest even,
//! overflow to infinity and keep NaN a quiet NaN of the same sign (`F16`: `0x7e00 | sign`;
//! `BF16`: the high half with the quiet bit set). The 16-bit patterns travel in the low half of
//! an `i32` (`uload16`/`istore16`).

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};

use super::func::Fx;

impl Fx<'_, '_> {
    fn bits_to_f32(&mut self, x: Value) -> Value {
        self.b.ins().bitcast(types::F32, MemFlagsData::new(), x)
    }

    fn f32_to_bits(&mut self, x: Value) -> Value {
        self.b.ins().bitcast(types::I32, MemFlagsData::new(), x)
    }

    /// bfloat16 bits (zero-extended `i32`) → `f32` (exact).
    pub(super) fn bf16_to_f32(&mut self, h: Value) -> Value {
        let w = self.b.ins().ishl_imm_s(h, 16);
        self.bits_to_f32(w)
    }

    /// `f32` → bfloat16 bits (in an `i32`), rounding to nearest even; NaN → quiet NaN.
    pub(super) fn f32_to_bf16(&mut self, x: Value) -> Value {
        let u = self.f32_to_bits(x);
        let hi = self.ins().ushr_imm_s(u, 16);
        let odd = self.ins().band_imm_s(hi, 1);
        let r = self.ins().iadd_imm_s(u, 0x7fff);
        let r = self.ins().iadd(r, odd);
        let r = self.ins().ushr_imm_s(r, 16);
        let nan = self.ins().bor_imm_s(hi, 0x40);
        let is_nan = self.ins().fcmp(FloatCC::Unordered, x, x);
        self.ins().select(is_nan, nan, r)
    }

    /// IEEE half bits (zero-extended `i32`) → `f32` (exact, subnormals included).
    pub(super) fn f16_to_f32(&mut self, h: Value) -> Value {
        let sign = self.ins().band_imm_s(h, 0x8000);
        let sign = self.ins().ishl_imm_s(sign, 16);
        // Exponent and mantissa moved to float position, exponent rebiased by 127 - 15.
        let o = self.ins().band_imm_s(h, 0x7fff);
        let o = self.ins().ishl_imm_s(o, 13);
        let exp = self.ins().band_imm_s(o, 0x0f80_0000);
        let normal = self.ins().iadd_imm_s(o, 112 << 23);
        // Inf/NaN: exponent all ones → rebias once more to 255.
        let infnan = self.ins().iadd_imm_s(normal, 112 << 23);
        // Subnormal: (mantissa as a normal with exponent 2^-14) - 2^-14, exact.
        let sub = self.ins().iadd_imm_s(normal, 1 << 23);
        let sub = self.bits_to_f32(sub);
        let k = self.ins().f32const(2f32.powi(-14));
        let sub = self.ins().fsub(sub, k);
        let sub = self.f32_to_bits(sub);
        let is_infnan = self.ins().icmp_imm_s(IntCC::Equal, exp, 0x0f80_0000);
        let is_sub = self.ins().icmp_imm_s(IntCC::Equal, exp, 0);
        let v = self.ins().select(is_sub, sub, normal);
        let v = self.ins().select(is_infnan, infnan, v);
        let v = self.ins().bor(v, sign);
        self.bits_to_f32(v)
    }

    /// `f32` → IEEE half bits (in an `i32`), rounding to nearest even; overflow → ±inf;
    /// NaN → quiet NaN.
    pub(super) fn f32_to_f16(&mut self, x: Value) -> Value {
        let u = self.f32_to_bits(x);
        let sign = self.ins().band_imm_s(u, 0x8000_0000u32 as i64);
        let a = self.ins().bxor(u, sign);
        // |x| >= 65520 (2^16 - 2^4, rounds to inf) or inf/NaN.
        let big = self.ins().icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, a, (127 + 16) << 23);
        let is_nan = self.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, a, 255 << 23);
        let qnan = self.iconst(types::I32, 0x7e00);
        let inf = self.iconst(types::I32, 0x7c00);
        let inf = self.ins().select(is_nan, qnan, inf);
        // Subnormal or zero result (|x| < 2^-14): adding 0.5 aligns the mantissa so that the
        // FPU's round-to-nearest-even does the rounding.
        let magic: i64 = ((127 - 15) + (23 - 10) + 1) << 23;
        let small = self.ins().icmp_imm_s(IntCC::UnsignedLessThan, a, 113 << 23);
        let af = self.bits_to_f32(a);
        let mk = self.iconst(types::I32, magic);
        let mf = self.bits_to_f32(mk);
        let s = self.ins().fadd(af, mf);
        let s = self.f32_to_bits(s);
        let s = self.ins().iadd_imm_s(s, -magic);
        // Normal: rebias, round to nearest even on the 13 dropped bits.
        let odd = self.ins().ushr_imm_s(a, 13);
        let odd = self.ins().band_imm_s(odd, 1);
        let n = self.ins().iadd_imm_s(a, i64::from((15u32.wrapping_sub(127) << 23).wrapping_add(0xfff)));
        let n = self.ins().iadd(n, odd);
        let n = self.ins().ushr_imm_s(n, 13);
        let v = self.ins().select(small, s, n);
        let v = self.ins().select(big, inf, v);
        let sign16 = self.ins().ushr_imm_s(sign, 16);
        self.ins().bor(v, sign16)
    }
}
