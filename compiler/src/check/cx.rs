//! The checking context of one kernel (or one user reduction): what names mean, which
//! indices are bound, where pending filters attach, and the diagnostics found so far.
//!
//! Invariant: a `Reported` error means a diagnostic was pushed to `diags`; callers abandon
//! the current statement and go on with the next, so one mistake gives one message.

use super::globals::Globals;
use crate::hir::{DimId, DimInfo, Extent, IndexId, IndexInfo, ParamId, TensorId, TensorInfo};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tfm_dsl::ast;
use tfm_dsl::{Diagnostic, Span};

/// `1 dimension`, `2 dimensions`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else if word.ends_with('x') {
        format!("{n} {}ices", &word[..word.len() - 2])
    } else {
        format!("{n} {word}s")
    }
}

/// `1 value was`, `2 values were`.
pub fn plural_verb(n: usize, word: &str) -> String {
    format!("{} {}", plural(n, word), if n == 1 { "was" } else { "were" })
}

/// Marker: the error has been reported as a diagnostic.
#[derive(Clone, Copy, Debug)]
pub struct Reported;

/// Result of a checking step.
pub type CResult<T> = Result<T, Reported>;

/// A filter conjunct waiting to be attached to the outermost scope binding all its indices.
#[derive(Clone, Debug)]
pub struct Pending<'a> {
    /// The conjunct as written.
    pub ast: &'a ast::Expr,
    /// Names of the indices it mentions.
    pub indices: BTreeSet<String>,
    /// True for a kernel-level filter (silently skipped where it does not apply).
    pub from_kernel: bool,
    /// Set once attached somewhere.
    pub used: bool,
    /// True while attached to an enclosing scope (so inner scopes do not repeat it).
    pub active: bool,
}

/// The recurrence being checked, if any.
#[derive(Clone, Debug)]
pub struct ScanCx {
    /// The tensor being defined.
    pub target: TensorId,
    /// Its name.
    pub name: String,
    /// The scanned index.
    pub index: IndexId,
    /// The left-hand indices in order.
    pub lhs: Vec<IndexId>,
    /// The type look-back reads have.
    pub dtype: crate::hir::DType,
}

/// What a `let`/operand name means inside a user reduction's combine.
#[derive(Clone, Debug)]
pub enum LocalName {
    /// A state operand (`a`): field `i` is local `base + i`.
    Operand { base: usize },
    /// A `let`: local slot and its dtype.
    Let { slot: usize, dtype: crate::hir::DType },
}

/// Checking state of one kernel.
pub struct Cx<'g, 'a> {
    /// Program-wide names.
    pub g: &'g Globals,
    /// Diagnostics found so far.
    pub diags: &'g mut Vec<Diagnostic>,
    /// Symbolic dims.
    pub dims: Vec<DimInfo>,
    /// Dims by name.
    pub dim_by_name: HashMap<String, DimId>,
    /// Dims some input has on its own (not only inside a product): the ones binding can size.
    pub direct_dims: BTreeSet<DimId>,
    /// Tensors.
    pub tensors: Vec<TensorInfo>,
    /// Tensors by name.
    pub tensor_by_name: HashMap<String, TensorId>,
    /// Whether each tensor has been defined (inputs are defined from the start).
    pub defined: Vec<bool>,
    /// Whether each tensor has been read.
    pub read: Vec<bool>,
    /// Index variables.
    pub indices: Vec<IndexInfo>,
    /// Indices by name.
    pub index_by_name: HashMap<String, IndexId>,
    /// `index x: D` declarations.
    pub index_decls: BTreeMap<String, (Extent, Span)>,
    /// Declared indices that have been used.
    pub index_decl_used: BTreeSet<String>,
    /// Params read.
    pub params_used: BTreeSet<ParamId>,
    /// Currently bound indices, outermost first.
    pub bound: Vec<IndexId>,
    /// The scan being checked.
    pub scan: Option<ScanCx>,
    /// Filters of the current statement not yet attached.
    pub pending: Vec<Pending<'a>>,
    /// Locals of a user reduction's combine.
    pub locals: HashMap<String, LocalName>,
    /// Field names and dtypes of the reduction being checked (for `a.field`).
    pub fields: Vec<(String, crate::hir::DType)>,
    /// The kernel body, for inferring index ranges from uses.
    pub body: &'a [ast::Stmt],
    /// Every name the kernel uses as an index somewhere (left-hand sides, reductions,
    /// declarations): a lower-case name outside this set is unknown, not an unbound index.
    pub index_universe: BTreeSet<String>,
}

impl<'g, 'a> Cx<'g, 'a> {
    /// An empty context.
    pub fn new(g: &'g Globals, diags: &'g mut Vec<Diagnostic>, body: &'a [ast::Stmt]) -> Self {
        Cx {
            g,
            diags,
            dims: Vec::new(),
            dim_by_name: HashMap::new(),
            direct_dims: BTreeSet::new(),
            tensors: Vec::new(),
            tensor_by_name: HashMap::new(),
            defined: Vec::new(),
            read: Vec::new(),
            indices: Vec::new(),
            index_by_name: HashMap::new(),
            index_decls: BTreeMap::new(),
            index_decl_used: BTreeSet::new(),
            params_used: BTreeSet::new(),
            bound: Vec::new(),
            scan: None,
            pending: Vec::new(),
            locals: HashMap::new(),
            fields: Vec::new(),
            body,
            index_universe: BTreeSet::new(),
        }
    }

    /// Pushes a diagnostic and returns the marker.
    pub fn err(&mut self, d: Diagnostic) -> Reported {
        self.diags.push(d);
        Reported
    }

    /// The display name of an extent.
    pub fn extent_name(&self, e: Extent) -> String {
        match e {
            Extent::Dim(d) => self.dims[d.index()].name.clone(),
            Extent::Const(n) => n.to_string(),
        }
    }

    /// The `[B, H, P]` form of a shape.
    pub fn shape_text(&self, shape: &[Extent]) -> String {
        let parts: Vec<String> = shape.iter().map(|e| self.extent_name(*e)).collect();
        format!("[{}]", parts.join(", "))
    }

    /// The clash error for `name` written at `span` when it already means something (see
    /// [`Self::meaning_of`]): `here` labels the new use, `before` the earlier definition.
    pub fn clash(&self, name: &str, span: Span, here: &str, before: &str) -> Option<Diagnostic> {
        let (what, prev) = self.meaning_of(name)?;
        let d = Diagnostic::error(format!("'{name}' is already {what}"), span, here);
        Some(match prev {
            Some(p) => d.with_label(p, before),
            None => d,
        })
    }

    /// What a name already means in this kernel, for clash messages.
    pub fn meaning_of(&self, name: &str) -> Option<(&'static str, Option<Span>)> {
        if let Some(t) = self.tensor_by_name.get(name) {
            return Some(("a tensor", Some(self.tensors[t.index()].span)));
        }
        if let Some(d) = self.dim_by_name.get(name) {
            return Some(("a dimension", Some(self.dims[d.index()].span)));
        }
        if let Some((_, p)) = self.g.param(name) {
            return Some(("a param", Some(p.span)));
        }
        None
    }

    /// The diagnostic for a name that means nothing here, listing what is in scope.
    pub fn unknown_name_diag(&self, name: &str, span: Span) -> Diagnostic {
        let mut params: Vec<&str> = self.g.param_by_name.keys().map(String::as_str).collect();
        params.sort_unstable();
        let dims: Vec<&str> = self.dims.iter().map(|d| d.name.as_str()).collect();
        let list = |v: &[&str]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        let mut d = Diagnostic::error(format!("unknown name '{name}'"), span, "not a tensor, dimension, param or index");
        let similar = params
            .iter()
            .chain(&dims)
            .copied()
            .chain(self.tensor_by_name.keys().map(String::as_str))
            .find(|c| c.eq_ignore_ascii_case(name));
        if let Some(c) = similar {
            d = d.with_hint(format!("did you mean '{c}'? names are case-sensitive"));
        }
        d.with_hint(format!("params: {}; dimensions: {}; indices in scope: {}", list(&params), list(&dims), self.bound_names()))
    }

    /// True if `name` is currently bound as an index.
    pub fn is_bound(&self, name: &str) -> bool {
        self.index_by_name.get(name).is_some_and(|i| self.bound.contains(i))
    }

    /// Names of the bound indices, for hints.
    pub fn bound_names(&self) -> String {
        if self.bound.is_empty() {
            return "none".to_string();
        }
        let names: Vec<&str> = self.bound.iter().map(|i| self.indices[i.index()].name.as_str()).collect();
        names.join(", ")
    }

    /// The id of index `name`, resolving its range on first use.
    pub fn index_id(&mut self, name: &ast::Ident) -> CResult<IndexId> {
        if let Some(id) = self.index_by_name.get(&name.name) {
            return Ok(*id);
        }
        if let Some((what, prev)) = self.meaning_of(&name.name) {
            let mut d = Diagnostic::error(format!("'{}' is {what}, not an index", name.name), name.span, "used as an index here")
                .with_hint("indices are lower-case names that range over a dimension, like `p` over `P`");
            if let Some(s) = prev {
                d = d.with_label(s, "defined here");
            }
            return Err(self.err(d));
        }
        let extent = self.infer_range(name)?;
        let id = IndexId(self.indices.len() as u32);
        self.indices.push(IndexInfo { name: name.name.clone(), extent, span: name.span });
        self.index_by_name.insert(name.name.clone(), id);
        Ok(id)
    }

    fn infer_range(&mut self, name: &ast::Ident) -> CResult<Extent> {
        if let Some((e, _)) = self.index_decls.get(&name.name) {
            self.index_decl_used.insert(name.name.clone());
            return Ok(*e);
        }
        let mut cap = name.name.clone();
        if let Some(first) = cap.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        if let Some(d) = self.dim_by_name.get(&cap) {
            return Ok(Extent::Dim(*d));
        }
        if let Some(e) = super::infer::range_from_uses(self, &name.name) {
            return Ok(e);
        }
        let dims: Vec<&str> = self.dims.iter().map(|d| d.name.as_str()).collect();
        Err(self.err(Diagnostic::error(format!("cannot infer the range of index '{}'", name.name), name.span, "range unknown").with_hint(
            format!(
                "declare it in the kernel body, e.g. `index {}: {}` (dims: {})",
                name.name,
                dims.first().copied().unwrap_or("N"),
                if dims.is_empty() { "none".to_string() } else { dims.join(", ") }
            ),
        )))
    }
}
