//! Conversions between the language's dtype ([`tfm_dsl::ast::DType`]) and the runtime's
//! ([`tfmc_runtime::DType`]).
//!
//! The two enums have the same seven variants with the same meaning and names; the front end
//! cannot depend on the runtime (nor the reverse), so the mapping lives here. Both functions
//! are total and inverse to each other.

use tfm_dsl::ast::DType as Lang;
use tfmc_runtime::DType as Rt;

/// The runtime dtype of a language dtype.
pub fn to_runtime(d: Lang) -> Rt {
    match d {
        Lang::F16 => Rt::F16,
        Lang::BF16 => Rt::BF16,
        Lang::F32 => Rt::F32,
        Lang::F64 => Rt::F64,
        Lang::I32 => Rt::I32,
        Lang::I64 => Rt::I64,
        Lang::Bool => Rt::Bool,
    }
}

/// The language dtype of a runtime dtype.
pub fn from_runtime(d: Rt) -> Lang {
    match d {
        Rt::F16 => Lang::F16,
        Rt::BF16 => Lang::BF16,
        Rt::F32 => Lang::F32,
        Rt::F64 => Lang::F64,
        Rt::I32 => Lang::I32,
        Rt::I64 => Lang::I64,
        Rt::Bool => Lang::Bool,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_names() {
        for d in Rt::ALL {
            let l = from_runtime(d);
            assert_eq!(to_runtime(l), d);
            assert_eq!(l.name(), d.name());
        }
    }
}
