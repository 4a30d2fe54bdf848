//! Program-wide names: params, user reductions and kernels, gathered from every loaded file
//! before any kernel is checked (so items may be used before they are written).
//!
//! Invariant: names are unique across params, reductions, kernels, built-in reductions and
//! built-in functions; a clash is reported once, with both places.

use crate::hir::{DType, Func, Param, ParamId, ReductionId};
use std::collections::HashMap;
use tfm_dsl::ast;

/// Names visible everywhere.
#[derive(Default)]
pub struct Globals {
    /// Checked params.
    pub params: Vec<Param>,
    /// Params by name.
    pub param_by_name: HashMap<String, ParamId>,
    /// User reductions by name: id and field dtypes (filled before bodies are checked).
    pub reduction_by_name: HashMap<String, (ReductionId, Vec<DType>)>,
    /// Kernels by name: index into the program's kernel list.
    pub kernel_by_name: HashMap<String, usize>,
}

impl Globals {
    /// The param called `name`.
    pub fn param(&self, name: &str) -> Option<(ParamId, &Param)> {
        self.param_by_name.get(name).map(|id| (*id, &self.params[id.index()]))
    }
}

/// Built-in reduction names.
pub const BUILTIN_REDUCTIONS: [&str; 4] = ["sum", "prod", "max", "min"];

/// True if `name` is a built-in function or reduction (items may not take these names).
pub fn is_builtin(name: &str) -> bool {
    BUILTIN_REDUCTIONS.contains(&name) || Func::from_name(name).is_some()
}

/// Item name and span, for clash messages.
pub fn item_name(item: &ast::Item) -> Option<&ast::Ident> {
    match item {
        ast::Item::Use(_) => None,
        ast::Item::Param(p) => Some(&p.name),
        ast::Item::Reduction(r) => Some(&r.name),
        ast::Item::Kernel(k) => Some(&k.name),
    }
}
