//! Code generators: each translates [`crate::schedule::kir`] (the scheduled loop nest) into
//! something that runs. [`llvm`]: CPU machine code through LLVM (in-process JIT, assembly,
//! and AOT shared libraries).
//!
//! Owns what every backend shares: the [`Export`] (a kernel and its C symbol), the rules for
//! export symbols ([`check_symbols`]), and the host symbols JIT code links against (`host`).
//! Every backend checks its input with [`crate::schedule::validate::check`] first.

pub mod cranelift;
pub(crate) mod host;
pub mod llvm;
pub mod nvptx;
#[cfg(test)]
pub(crate) mod test_kir;
#[cfg(test)]
mod tests_tile;

use std::collections::HashSet;

use crate::schedule::kir;

/// An exported kernel: its KIR and its C symbol (typed entry `symbol`, packed entry
/// `{symbol}_packed`). The typed entry's C parameter types follow from the KIR: a pointer per
/// argument buffer, `int64_t` per dim, and per param variable `int64_t`/`int32_t`/`bool`/
/// `float`/`double` by its type.
#[derive(Clone, Debug)]
pub struct Export<'a> {
    /// The kernel.
    pub func: &'a kir::Func,
    /// Its C symbol.
    pub symbol: String,
}

impl<'a> Export<'a> {
    /// The export of `func` as `symbol`.
    pub fn new(func: &'a kir::Func, symbol: impl Into<String>) -> Export<'a> {
        Export { func, symbol: symbol.into() }
    }
}

/// External names the backends themselves declare or link: an export may not take them.
const RESERVED: &[&str] = &[
    "tfmc_parallel_for",
    "tfmc_set_num_threads",
    "tfmc_get_num_threads",
    "tfmc_calloc",
    "tfmc_malloc",
    "tfmc_free",
    "tfmc_heap_trim",
    "tfmc_manifest",
    "tfmc_manifest_len",
    "calloc",
    "malloc",
    "free",
    "main",
];

/// Checks that every symbol is a C identifier, not reserved (by the runtime, the C library or
/// the math functions JIT code links), and that no two exports' entry names (`s`,
/// `s_packed`) clash. The error is the offending symbol and why.
pub fn check_symbols(exports: &[Export<'_>]) -> Result<(), (String, &'static str)> {
    let mut seen = HashSet::new();
    for e in exports {
        let s = e.symbol.as_str();
        let bad = |reason| Err((s.to_string(), reason));
        let mut chars = s.chars();
        let ident =
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return bad("not a C identifier");
        }
        if RESERVED.contains(&s) || host::LIBM_NAMES.contains(&s) || s.starts_with("__") {
            return bad("reserved by the runtime or the C library");
        }
        for name in [s.to_string(), format!("{s}_packed")] {
            if !seen.insert(name) {
                return bad("exported twice (or clashes with another export's `_packed` entry)");
            }
        }
    }
    Ok(())
}
