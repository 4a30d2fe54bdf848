//! The checker: parsed files → [`hir::Program`], or diagnostics.
//!
//! Order: gather every item of every loaded file (names are global, so items may be used
//! before they are written), check params, then user reductions, then kernels — each kernel
//! after the kernels it calls (a recursive call is an error). Within a kernel, checking stops
//! at the first error so one mistake gives one message; other kernels are still checked.

mod cx;
mod expr;
mod globals;
mod infer;
mod kernel;
mod laws;
pub mod limits;
mod literals;
mod reduction;
pub mod types;

use crate::hir::{self, Kernel, KernelId, Lit, Param, ParamId, Program, Stmt};
use cx::Cx;
use globals::Globals;
use std::collections::{BTreeSet, HashMap};
use tfm_dsl::ast::{self, Item};
use tfm_dsl::{Diagnostic, Diagnostics, FileId, SourceMap, Span};

/// Checks parsed files (the entry file and everything it uses). Warnings are returned with
/// the program; any error fails the whole check.
pub fn check_program(sources: SourceMap, files: &[(FileId, ast::File)]) -> Result<(Program, Vec<Diagnostic>), Diagnostics> {
    let mut diags = Vec::new();
    let mut g = Globals::default();
    let mut kernels_ast: Vec<&ast::KernelItem> = Vec::new();
    let mut reductions_ast: Vec<&ast::ReductionItem> = Vec::new();
    let mut seen: HashMap<String, Span> = HashMap::new();
    for (_, f) in files {
        for item in &f.items {
            let Some(name) = globals::item_name(item) else { continue };
            if globals::is_builtin(&name.name) {
                diags.push(
                    Diagnostic::error(format!("'{}' is a built-in name", name.name), name.span, "reserved")
                        .with_hint("choose another name"),
                );
                continue;
            }
            if let Some(prev) = seen.get(&name.name) {
                diags.push(
                    Diagnostic::error(format!("'{}' is defined twice", name.name), name.span, "second definition")
                        .with_label(*prev, "first defined here")
                        .with_hint("names of kernels, params and reductions are shared by all files a program uses"),
                );
                continue;
            }
            seen.insert(name.name.clone(), name.span);
            match item {
                Item::Param(p) => {
                    if let Some(param) = check_param(p, &mut diags) {
                        g.param_by_name.insert(param.name.clone(), ParamId(g.params.len() as u32));
                        g.params.push(param);
                    }
                }
                Item::Reduction(r) => {
                    let id = hir::ReductionId(reductions_ast.len() as u32);
                    g.reduction_by_name.insert(r.name.name.clone(), (id, r.fields.iter().map(|f| f.dtype).collect()));
                    reductions_ast.push(r);
                }
                Item::Kernel(k) => {
                    g.kernel_by_name.insert(k.name.name.clone(), kernels_ast.len());
                    kernels_ast.push(k);
                }
                Item::Use(_) => {}
            }
        }
    }
    let reductions: Vec<hir::Reduction> = reductions_ast.iter().filter_map(|r| reduction::check(&g, &mut diags, r)).collect();
    for r in &reductions {
        diags.extend(r.identity.iter().chain(&r.lets).chain(&r.result).find_map(literals::first_in_expr));
    }
    let n = kernels_ast.len();
    let mut state = KernelState { done: vec![None; n], in_progress: BTreeSet::new(), height: vec![0; n], size: vec![0; n] };
    for i in 0..kernels_ast.len() {
        check_kernel_rec(&g, &kernels_ast, i, &mut state, &mut diags);
    }
    let (errors, warnings): (Vec<_>, Vec<_>) = diags.into_iter().partition(Diagnostic::is_error);
    if !errors.is_empty() {
        let mut items = errors;
        items.extend(warnings);
        return Err(Diagnostics { items, sources });
    }
    // Every kernel was checked without error, so each slot holds a kernel.
    let kernels: Vec<Kernel> = state.done.into_iter().map(|k| k.flatten().expect("checked kernel")).collect();
    let program = Program { sources, params: g.params, reductions, kernels };
    let law_errors = laws::check_laws(&program);
    if !law_errors.is_empty() {
        let mut items = law_errors;
        items.extend(warnings);
        return Err(Diagnostics { items, sources: program.sources });
    }
    Ok((program, warnings))
}

fn check_param(p: &ast::ParamItem, diags: &mut Vec<Diagnostic>) -> Option<Param> {
    if matches!(p.dtype, hir::DType::F16 | hir::DType::BF16) {
        diags.push(
            Diagnostic::error(format!("param '{}' cannot be {}", p.name.name, p.dtype), p.dtype_span, "unsupported param type")
                .with_hint("params are i32, i64, f32, f64 or bool; convert where it is used"),
        );
        // Still declare it (as f32) so its uses do not cascade into more errors.
        return Some(Param { name: p.name.name.clone(), dtype: hir::DType::F32, default: None, docs: p.docs.clone(), span: p.span });
    }
    let default = match p.default {
        None => None,
        Some((lit, span)) => {
            let ok = match lit {
                Lit::Int(_) => p.dtype != hir::DType::Bool,
                Lit::Float(_) => p.dtype.is_float(),
                Lit::Bool(_) => p.dtype == hir::DType::Bool,
            };
            if !ok {
                let what = match lit {
                    Lit::Int(_) => "an integer",
                    Lit::Float(_) => "a float",
                    Lit::Bool(_) => "a bool",
                };
                diags.push(
                    Diagnostic::error(format!("param '{}' is {} but its default is {what}", p.name.name, p.dtype), span, "wrong default")
                        .with_label(p.dtype_span, "declared type"),
                );
                // Still declare it (without default) so its uses do not cascade.
                None
            } else if let (Lit::Int(i), hir::DType::I32) = (lit, p.dtype)
                && i32::try_from(i).is_err()
            {
                // Caught here, not by a backend's manifest or the artifact loader.
                diags.push(
                    Diagnostic::error(
                        format!("param '{}' is i32 but its default {i} does not fit", p.name.name),
                        span,
                        "out of range for i32",
                    )
                    .with_label(p.dtype_span, "declared type")
                    .with_hint("i32 holds -2147483648 to 2147483647; declare the param i64 for more"),
                );
                None
            } else {
                let value = crate::semantics::types::convert_lit(lit, p.dtype);
                if let Lit::Float(x) = value
                    && crate::semantics::types::lit_out_of_range(value, p.dtype)
                {
                    diags.push(
                        Diagnostic::error(
                            format!("param '{}' is {} but its default is out of range", p.name.name, p.dtype),
                            span,
                            format!("{x:e} rounds to infinity in {}", p.dtype),
                        )
                        .with_label(p.dtype_span, "declared type")
                        .with_hint(format!(
                            "the largest finite {} is {}; write `inf` for infinity",
                            p.dtype,
                            crate::semantics::types::max_finite(p.dtype)
                        )),
                    );
                    return Some(Param { name: p.name.name.clone(), dtype: p.dtype, default: None, docs: p.docs.clone(), span: p.span });
                }
                Some(value)
            }
        }
    };
    Some(Param { name: p.name.name.clone(), dtype: p.dtype, default, docs: p.docs.clone(), span: p.span })
}

struct KernelState {
    done: Vec<Option<Option<Kernel>>>,
    /// Kernels whose callees are being checked (the current call chain).
    in_progress: BTreeSet<usize>,
    /// Levels of calls below each checked kernel.
    height: Vec<usize>,
    /// Each checked kernel's size with its calls inlined ([`limits`]).
    size: Vec<u64>,
}

fn check_kernel_rec(g: &Globals, ks: &[&ast::KernelItem], i: usize, st: &mut KernelState, diags: &mut Vec<Diagnostic>) {
    if st.done[i].is_some() {
        return;
    }
    st.in_progress.insert(i);
    let k = ks[i];
    let fail = |st: &mut KernelState, diags: &mut Vec<Diagnostic>, d: Diagnostic| {
        diags.push(d);
        st.in_progress.remove(&i);
        st.done[i] = Some(None);
    };
    let (mut height, mut size) = (0, limits::own_size(k));
    // Check callees first.
    for s in &k.body {
        if let ast::Stmt::Call(c) = s
            && let Some(&j) = g.kernel_by_name.get(&c.callee.name)
        {
            if st.in_progress.contains(&j) {
                let d = Diagnostic::error(
                    format!("kernel '{}' calls itself (through '{}')", k.name.name, c.callee.name),
                    c.callee.span,
                    "recursive call",
                )
                .with_hint("kernels cannot be recursive; write the recurrence with `scan`");
                return fail(st, diags, d);
            }
            // The chain being checked is already as deep as allowed (this also bounds the
            // recursion here); otherwise the callee's own height decides, below.
            let depth = if st.done[j].is_none() && st.in_progress.len() > limits::MAX_CALL_DEPTH {
                st.in_progress.len()
            } else {
                check_kernel_rec(g, ks, j, st, diags);
                if matches!(st.done[j], Some(None)) {
                    continue; // reported; this kernel fails quietly at the call
                }
                st.height[j] + 1
            };
            if depth > limits::MAX_CALL_DEPTH {
                let d = Diagnostic::error(
                    format!("kernel calls nest more than {} levels deep", limits::MAX_CALL_DEPTH),
                    c.callee.span,
                    format!("'{}' calls '{}' here, {depth} or more levels of calls deep", k.name.name, c.callee.name),
                )
                .with_hint(format!("at most {} levels of kernel calls are allowed", limits::MAX_CALL_DEPTH));
                return fail(st, diags, d);
            }
            height = height.max(depth);
            size = size.saturating_add(st.size[j]);
            if size > limits::MAX_INLINED_NODES {
                let d = Diagnostic::error(
                    format!("kernel '{}' is too large with its calls inlined", k.name.name),
                    c.callee.span,
                    format!("with this call, more than {} expression nodes", limits::MAX_INLINED_NODES),
                )
                .with_note(format!("'{}' alone is {} expression nodes with its own calls inlined", c.callee.name, st.size[j]))
                .with_hint("every call inlines a copy of the callee: call a kernel once and pass its outputs on");
                return fail(st, diags, d);
            }
        }
    }
    st.height[i] = height;
    st.size[i] = size;
    let mut checked = check_kernel(g, k, &st.done, diags);
    if let Some(d) = checked.as_ref().and_then(literals::first_in_kernel) {
        diags.push(d);
        checked = None;
    }
    st.in_progress.remove(&i);
    st.done[i] = Some(checked);
}

fn check_kernel(g: &Globals, k: &ast::KernelItem, done: &[Option<Option<Kernel>>], diags: &mut Vec<Diagnostic>) -> Option<Kernel> {
    let before = diags.len();
    let mut cx = Cx::new(g, diags, &k.body);
    let (inputs, outputs) = cx.signature(k);
    if cx.diags.len() > before {
        return None;
    }
    // `index` declarations apply to the whole kernel.
    for s in &k.body {
        if let ast::Stmt::Index { name, range, span } = s {
            if let Some(d) = cx.clash(&name.name, name.span, "declared as an index here", "defined here") {
                cx.err(d);
                return None;
            }
            if let Some((_, prev)) = cx.index_decls.get(&name.name) {
                let prev = *prev;
                cx.err(
                    Diagnostic::error(format!("index '{}' is declared twice", name.name), name.span, "second declaration")
                        .with_label(prev, "first declared here"),
                );
                return None;
            }
            if let ast::Dim::Fixed(n, s) = range
                && *n < 0
            {
                cx.err(Diagnostic::error("index range out of range", *s, "too large"));
                return None;
            }
            let extent = cx.dim_extent(range, false)?;
            cx.index_decls.insert(name.name.clone(), (extent, *span));
        }
    }
    cx.index_universe = infer::binder_names(&k.body);
    cx.index_universe.extend(cx.index_decls.keys().cloned());
    let kfilters: Vec<&ast::Expr> = k.filter.as_ref().map(kernel::conjuncts).unwrap_or_default();
    let mut kfilter_used = vec![false; kfilters.len()];
    let mut stmts = Vec::new();
    for s in &k.body {
        match s {
            ast::Stmt::Index { .. } => {}
            ast::Stmt::Assign(a) => {
                let Ok(x) = cx.assign(a, &kfilters) else { return None };
                for p in cx.pending.iter().filter(|p| p.from_kernel && p.used) {
                    if let Some(j) = kfilters.iter().position(|f| std::ptr::eq(*f, p.ast)) {
                        kfilter_used[j] = true;
                    }
                }
                stmts.push(Stmt::Assign(x));
            }
            ast::Stmt::Call(c) => {
                let Some(&j) = g.kernel_by_name.get(&c.callee.name) else {
                    let mut names: Vec<&str> = g.kernel_by_name.keys().map(String::as_str).collect();
                    names.sort_unstable();
                    cx.err(
                        Diagnostic::error(format!("unknown kernel '{}'", c.callee.name), c.callee.span, "not a kernel")
                            .with_hint(format!("kernels: {}", names.join(", "))),
                    );
                    return None;
                };
                // A callee that failed to check was reported already.
                let Some(Some(callee)) = &done[j] else { return None };
                let Ok(x) = cx.call(c, callee, KernelId(j as u32)) else { return None };
                stmts.push(Stmt::Call(x));
            }
        }
    }
    for &o in &outputs {
        if !cx.defined[o.index()] {
            let info = &cx.tensors[o.index()];
            let d = Diagnostic::error(format!("output '{}' is never defined", info.name), k.name.span, "kernel ends without defining it")
                .with_label(info.span, "declared here")
                .with_hint(format!("add a statement `{}[...] = ...`", info.name));
            cx.err(d);
            return None;
        }
    }
    for (name, (_, span)) in cx.index_decls.clone() {
        if !cx.index_decl_used.contains(&name) && !cx.index_by_name.contains_key(&name) {
            cx.err(
                Diagnostic::error(format!("index '{name}' is declared but never used"), span, "unused declaration")
                    .with_hint("remove the declaration"),
            );
            return None;
        }
    }
    for (f, used) in kfilters.iter().zip(&kfilter_used) {
        let mut names = BTreeSet::new();
        infer::index_names(&cx, f, &mut names);
        if let Some(unknown) = names.iter().find(|n| !cx.index_universe.contains(*n))
            && let Some(span) = infer::find_name(f, unknown)
        {
            let d = cx.unknown_name_diag(unknown, span);
            cx.err(d);
            return None;
        }
        if !used {
            cx.err(
                Diagnostic::error("this kernel filter applies to no statement", f.span, "never applies")
                    .with_hint("a kernel filter restricts each statement (or reduction) that binds all of its indices"),
            );
            return None;
        }
    }
    for (t, info) in cx.tensors.iter().enumerate() {
        if info.role == hir::Role::Local && !cx.read[t] {
            let d = Diagnostic::warning(format!("tensor '{}' is never used", info.name), info.span, "defined here")
                .with_hint("remove it, or make it an output");
            cx.diags.push(d);
        }
    }
    let Cx { dims, tensors, indices, params_used, .. } = cx;
    Some(Kernel {
        name: k.name.name.clone(),
        docs: k.docs.clone(),
        dims,
        tensors,
        indices,
        inputs,
        outputs,
        params_used: params_used.into_iter().collect(),
        stmts,
        span: k.span,
        name_span: k.name.span,
    })
}
