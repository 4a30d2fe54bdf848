//! Dtype rules of the language: promotion (`join`), implicit conversion, and literal
//! adaptation. See docs/language.md, "Types".
//!
//! The one definition of which dtype an operator computes in: the checker types the HIR with
//! these rules and the IR evaluator re-infers the dtypes of a rewritten cascade with the same
//! rules, so a rewrite cannot change where `i32` overflows or which identity an empty `max`
//! has.
//!
//! A *weak* type is the type of an unannotated literal (or an expression of literals only):
//! it adapts to the other operand instead of widening it (`x * 2.0` keeps `x`'s f16).

use crate::hir::{DType, Lit};

/// A dtype plus whether it came from literals only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ty {
    /// The dtype.
    pub dtype: DType,
    /// True if only literals contributed (so it adapts to the other operand).
    pub weak: bool,
}

impl Ty {
    /// A strong type.
    pub fn strong(dtype: DType) -> Ty {
        Ty { dtype, weak: false }
    }
}

fn rank(d: DType) -> u8 {
    match d {
        DType::Bool => 0,
        DType::I32 => 1,
        DType::I64 => 2,
        DType::F16 | DType::BF16 => 3,
        DType::F32 => 4,
        DType::F64 => 5,
    }
}

/// The common type of two numeric operands, or `None` if one is `bool`.
pub fn join(a: Ty, b: Ty) -> Option<Ty> {
    if a.dtype == DType::Bool || b.dtype == DType::Bool {
        return (a.dtype == b.dtype).then_some(Ty { dtype: DType::Bool, weak: a.weak && b.weak });
    }
    let weak = a.weak && b.weak;
    if a.dtype == b.dtype {
        return Some(Ty { dtype: a.dtype, weak });
    }
    // A weak operand adapts to a strong one of the same kind (int/int, float/float), and a
    // weak int adapts to a strong float.
    let (s, w) = match (a.weak, b.weak) {
        (false, true) => (a, b),
        (true, false) => (b, a),
        _ => return Some(Ty { dtype: wider(a.dtype, b.dtype), weak }),
    };
    if s.dtype.is_float() || (s.dtype.is_int() && w.dtype.is_int()) {
        return Some(Ty { dtype: s.dtype, weak: false });
    }
    // Strong int with weak float: the float literal needs a float type.
    Some(Ty { dtype: DType::F32, weak: false })
}

/// The wider of two numeric dtypes (f16 with bf16 gives f32).
pub fn wider(a: DType, b: DType) -> DType {
    if matches!((a, b), (DType::F16, DType::BF16) | (DType::BF16, DType::F16)) {
        return DType::F32;
    }
    if rank(a) >= rank(b) { a } else { b }
}

/// True if a value of `from` may be stored where `to` is expected without a cast:
/// same type, widening, any integer into any float, or a weak literal into any numeric type
/// of its kind (weak ints also into floats).
pub fn converts_implicitly(from: Ty, to: DType) -> bool {
    if from.dtype == to {
        return true;
    }
    if from.dtype == DType::Bool || to == DType::Bool {
        return false;
    }
    if from.weak {
        return to.is_float() || from.dtype.is_int();
    }
    if from.dtype.is_int() {
        return to.is_float() || rank(to) >= rank(from.dtype);
    }
    to.is_float() && wider(from.dtype, to) == to
}

/// A literal converted to `to` (float→int truncates toward zero, saturating).
pub fn convert_lit(l: Lit, to: DType) -> Lit {
    match (l, to) {
        (Lit::Int(i), d) if d.is_float() => Lit::Float(i as f64),
        (Lit::Int(i), DType::Bool) => Lit::Bool(i != 0),
        (Lit::Float(f), d) if d.is_int() => Lit::Int(f as i64),
        (Lit::Float(f), DType::Bool) => Lit::Bool(f != 0.0),
        (Lit::Bool(b), d) if d.is_float() => Lit::Float(if b { 1.0 } else { 0.0 }),
        (Lit::Bool(b), d) if d.is_int() => Lit::Int(b as i64),
        (l, _) => l,
    }
}

/// True if literal `l` of dtype `d` has no value of `d`: a finite float that rounds to
/// infinity in `d` (`1e39` as f32, `70000.0` as f16), or an integer beyond `i32` as `i32`.
/// Infinities, NaN and values that round to zero are representable.
pub fn lit_out_of_range(l: Lit, d: DType) -> bool {
    match l {
        Lit::Float(x) => d.is_float() && x.is_finite() && !d.round_f64(x).is_finite(),
        Lit::Int(i) => d == DType::I32 && i32::try_from(i).is_err(),
        Lit::Bool(_) => false,
    }
}

/// The largest finite value of float dtype `d`, as written in messages.
pub fn max_finite(d: DType) -> &'static str {
    match d {
        DType::F16 => "65504",
        DType::BF16 => "3.3895314e38",
        DType::F32 => "3.4028235e38",
        _ => "1.7976931348623157e308",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_ranges() {
        assert!(lit_out_of_range(Lit::Float(1e39), DType::F32));
        assert!(lit_out_of_range(Lit::Float(-1e39), DType::F32));
        assert!(!lit_out_of_range(Lit::Float(1e39), DType::F64));
        assert!(!lit_out_of_range(Lit::Float(3.4028235e38), DType::F32));
        assert!(lit_out_of_range(Lit::Float(70000.0), DType::F16));
        assert!(!lit_out_of_range(Lit::Float(70000.0), DType::BF16));
        assert!(!lit_out_of_range(Lit::Float(f64::NEG_INFINITY), DType::F16));
        assert!(!lit_out_of_range(Lit::Float(1e-60), DType::F32));
        assert!(lit_out_of_range(Lit::Int(1 << 31), DType::I32));
        assert!(!lit_out_of_range(Lit::Int(-(1 << 31)), DType::I32));
        assert!(!lit_out_of_range(Lit::Int(i64::MIN), DType::I64));
    }

    #[test]
    fn literals_adapt() {
        let f16 = Ty::strong(DType::F16);
        let wf = Ty { dtype: DType::F32, weak: true };
        let wi = Ty { dtype: DType::I64, weak: true };
        assert_eq!(join(f16, wf), Some(f16));
        assert_eq!(join(Ty::strong(DType::I32), wi), Some(Ty::strong(DType::I32)));
        assert_eq!(join(Ty::strong(DType::I64), wf), Some(Ty::strong(DType::F32)));
        assert_eq!(join(Ty::strong(DType::F16), Ty::strong(DType::BF16)), Some(Ty::strong(DType::F32)));
        assert_eq!(join(Ty::strong(DType::Bool), f16), None);
    }

    #[test]
    fn implicit_conversions() {
        assert!(converts_implicitly(Ty::strong(DType::F32), DType::F64));
        assert!(!converts_implicitly(Ty::strong(DType::F32), DType::F16));
        assert!(converts_implicitly(Ty::strong(DType::I64), DType::F16));
        assert!(converts_implicitly(Ty { dtype: DType::F32, weak: true }, DType::F16));
        assert!(!converts_implicitly(Ty::strong(DType::Bool), DType::F32));
    }
}
