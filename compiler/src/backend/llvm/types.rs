//! KIR types → LLVM types. Owns the three representations of a [`Ty`]:
//! - value (SSA registers, variables): `Bool` = `i1`, `I32`/`I64`, `F32` = `float`,
//!   `F64` = `double` (`F16`/`BF16` values are `F32`);
//! - memory (buffer elements): `Bool` = `i8` holding 0/1, `F16` = `half` when the target
//!   converts natively (F16C) else `i16` bits, `BF16` = `i16` bits (converted in [`super::half`]);
//! - ABI: the packed entry's 8-byte param slot (`i64` for integers and `Bool`, `double` for
//!   floats) and the typed wrapper's C parameter type (`bool` = `i1 zeroext`).

use inkwell::context::Context;
use inkwell::types::BasicTypeEnum;

use crate::schedule::kir::Ty;

/// The register type of values of `t`.
pub(crate) fn value<'ctx>(cx: &'ctx Context, t: Ty) -> BasicTypeEnum<'ctx> {
    match t.value() {
        Ty::Bool => cx.bool_type().into(),
        Ty::I32 => cx.i32_type().into(),
        Ty::I64 => cx.i64_type().into(),
        Ty::F64 => cx.f64_type().into(),
        // value() maps F16/BF16 to F32.
        Ty::F32 | Ty::F16 | Ty::BF16 => cx.f32_type().into(),
    }
}

/// The in-memory type of a buffer element of type `t`.
pub(crate) fn memory<'ctx>(cx: &'ctx Context, t: Ty, native_f16: bool) -> BasicTypeEnum<'ctx> {
    match t {
        Ty::Bool => cx.i8_type().into(),
        Ty::F16 if native_f16 => cx.f16_type().into(),
        Ty::F16 | Ty::BF16 => cx.i16_type().into(),
        t => value(cx, t),
    }
}

/// The type of a packed-ABI param slot holding a value of type `t`.
pub(crate) fn slot<'ctx>(cx: &'ctx Context, t: Ty) -> BasicTypeEnum<'ctx> {
    if t.is_float() { cx.f64_type().into() } else { cx.i64_type().into() }
}
