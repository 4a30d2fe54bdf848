//! The optimizer: equality saturation over a fused cascade. Steps, each verified:
//! 1. [`inline::inline_locals`] — fusion: every local expression is substituted into its
//!    readers, so each output (and scan body) is one term;
//! 2. all those terms go into one e-graph (common subterms are shared), the [`rules`] run to
//!    saturation or until the node/iteration/time limits;
//! 3. each term is extracted by [`cost::WorkCost`] (work over each term's index space, with a
//!    penalty for extra passes) and the cascade is rebuilt around the extracted terms;
//! 4. [`outline::outline`] materializes every reduction the fused terms would evaluate
//!    repeatedly (inside loops it does not read), so the work as scheduled
//!    ([`work::estimate`]) is each reduction's once per point of its own indices.
//!
//! The report says which rules fired (and how often), egg's statistics and stop reason (so a
//! hit limit is visible), passes over each index before and after, and estimated cost.

pub mod analysis;
pub mod cost;
pub mod explain;
pub mod inline;
pub mod key_scan;
pub mod normalize;
pub mod outline;
pub mod passes;
pub mod prefix;
pub mod rules;
pub mod split;
pub mod work;

use crate::ir::lang::Tfm;
use crate::ir::verify::{VerifyError, verify};
use crate::ir::{Cascade, Def, Size};
use analysis::{FreeIndices, Graph};
use egg::{Extractor, Id, RecExpr, Runner};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Limits and the sizes the cost model assumes.
#[derive(Clone, Debug)]
pub struct Options {
    /// Maximum e-nodes.
    pub node_limit: usize,
    /// Maximum saturation iterations.
    pub iter_limit: usize,
    /// Maximum time.
    pub time_limit: Duration,
    /// Sizes of symbolic dims for the cost model (missing ones default to `default_dim`).
    pub dims: BTreeMap<String, i64>,
    /// Size assumed for dims not in `dims`.
    pub default_dim: i64,
    /// Param values for the cost model (missing ones use defaults, else 64).
    pub params: BTreeMap<String, f64>,
    /// Only run the rules with these names (all when `None`); for testing one rule at a time.
    pub only_rules: Option<Vec<String>>,
    /// Split every reduction over this index into chunks of this many points (decode).
    pub split: Option<(String, i64)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            node_limit: 20_000,
            iter_limit: 60,
            time_limit: Duration::from_secs(5),
            dims: default_dims(),
            default_dim: 256,
            params: BTreeMap::new(),
            only_rules: None,
            split: None,
        }
    }
}

impl Options {
    /// Default options with the param defaults of `program` for the cost model.
    pub fn for_program(program: &crate::Program) -> Options {
        let mut o = Options::default();
        for p in &program.params {
            if let Some(l) = p.default {
                let v = match l {
                    crate::hir::Lit::Int(i) => i as f64,
                    crate::hir::Lit::Float(x) => x,
                    crate::hir::Lit::Bool(b) => f64::from(u8::from(b)),
                };
                o.params.insert(p.name.clone(), v);
            }
        }
        o
    }
}

/// Sizes the cost model assumes when none are given: design.md's benchmark shapes for the
/// conventional dim names (batch 1, 8 heads, 4096-long sequences, head size 64).
pub fn default_dims() -> BTreeMap<String, i64> {
    let mut d = BTreeMap::new();
    for (k, v) in [("B", 1), ("H", 8), ("G", 2), ("P", 4096), ("M", 4096), ("T", 4096), ("E", 64), ("F", 64), ("D", 512), ("N", 16)] {
        d.insert(k.to_string(), v);
    }
    d
}

/// What the optimizer did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Times each rule was applied (rules that never fired are absent).
    pub rules_fired: BTreeMap<String, usize>,
    /// Saturation iterations run.
    pub iterations: usize,
    /// E-nodes at the end.
    pub enodes: usize,
    /// E-classes at the end.
    pub eclasses: usize,
    /// Why saturation stopped (`Saturated`, or which limit was hit).
    pub stop_reason: String,
    /// True if a limit stopped saturation (the result is still sound, maybe not optimal).
    pub hit_limit: bool,
    /// Passes over each reduced index in the cascade as written.
    pub passes_before: BTreeMap<String, usize>,
    /// Passes over each reduced index after optimization.
    pub passes_after: BTreeMap<String, usize>,
    /// Estimated cost of the fused terms before rewriting.
    pub cost_before: f64,
    /// Estimated cost after.
    pub cost_after: f64,
}

/// Optimizes `c` (which must verify); returns the optimized cascade and the report.
///
/// The optimizer never raises the order of work: when the result would cost more as
/// scheduled ([`work::Estimate::cost`] at the options' sizes: flops plus the traffic of the
/// locals it materializes) than the cascade as written, the cascade is optimized again without
/// fusing its locals (each statement rewritten on its own) and the cheaper of the two is
/// returned; the report says so in its stop reason.
pub fn optimize(c: &Cascade, opts: &Options) -> Result<(Cascade, Report), VerifyError> {
    let none = BTreeSet::new();
    let (out, report) = optimize_as(c, opts, Some(&none))?;
    let sizes = sizes_for(c, opts);
    let before = work::estimate(c, &sizes).cost();
    let after = work::estimate(&out, &sizes).cost();
    if after <= before * (1.0 + WORK_SLACK) {
        return Ok((out, report));
    }
    // Fusing all but the contractions that several statements read (each reader would
    // recompute one), then nothing.
    let shared = inline::shared_contractions(c);
    if !shared.is_empty() {
        let (partial, mut report2) = optimize_as(c, opts, Some(&shared))?;
        let cost = work::estimate(&partial, &sizes).cost();
        if cost <= before * (1.0 + WORK_SLACK) {
            let kept: Vec<&str> = shared.iter().map(String::as_str).collect();
            report2.stop_reason = format!(
                "{}; fusing every local would do more work ({after:.3e} > {before:.3e} as written): fused all but {}",
                report2.stop_reason,
                kept.join(", ")
            );
            return Ok((partial, report2));
        }
    }
    let (unfused, mut report2) = optimize_as(c, opts, None)?;
    if work::estimate(&unfused, &sizes).cost() < after {
        report2.stop_reason =
            format!("{}; fusing the locals would do more work ({after:.3e} > {before:.3e} as written): not fused", report2.stop_reason);
        return Ok((unfused, report2));
    }
    Ok((out, report))
}

/// Relative slack of the never-more-work check (rounding of the estimates).
const WORK_SLACK: f64 = 0.01;

/// [`optimize`] fusing the locals into their readers first (all but those in `fuse`), or
/// not (`None`).
fn optimize_as(c: &Cascade, opts: &Options, fuse: Option<&BTreeSet<String>>) -> Result<(Cascade, Report), VerifyError> {
    verify(c)?;
    let mut report = Report { passes_before: passes::passes_as_written(c), ..Report::default() };
    let mut fused = match fuse {
        Some(keep) => inline::inline_locals_but(c, keep),
        None => c.clone(),
    };
    map_exprs(&mut fused, normalize::float_filters);
    verify(&fused)?;
    let sizes = sizes_for(c, opts);

    // Every term of the fused cascade goes into one e-graph.
    let tensors = fused.graph.node_weights().map(|n| (n.name.clone(), n.dtype)).collect();
    let mut egraph = Graph::new(FreeIndices { tensors });
    let mut roots: Vec<(petgraph::graph::NodeIndex, usize, Id)> = Vec::new();
    for &ix in &fused.order {
        for (k, e) in exprs(&fused.graph[ix].def).into_iter().enumerate() {
            roots.push((ix, k, egraph.add_expr(e)));
        }
    }
    egraph.rebuild();
    report.cost_before = {
        let ex = Extractor::new(&egraph, cost::WorkCost { egraph: &egraph, sizes: &sizes });
        // Before any rewrite each class holds the written term, so this is its cost.
        roots.iter().map(|(_, _, root)| ex.find_best_cost(*root)).sum::<f64>()
    };
    let runner: Runner<Tfm, FreeIndices> = Runner::default()
        .with_egraph(egraph)
        .with_node_limit(opts.node_limit)
        .with_iter_limit(opts.iter_limit)
        .with_time_limit(opts.time_limit)
        .run(
            &rules::all()
                .into_iter()
                .filter(|r| opts.only_rules.as_ref().is_none_or(|only| only.iter().any(|n| n == r.name.as_str())))
                .collect::<Vec<_>>(),
        );
    for it in &runner.iterations {
        for (rule, n) in &it.applied {
            *report.rules_fired.entry(rule.to_string()).or_insert(0) += n;
        }
    }
    report.iterations = runner.iterations.len();
    report.enodes = runner.egraph.total_number_of_nodes();
    report.eclasses = runner.egraph.number_of_classes();
    let stop = runner.stop_reason.clone();
    report.hit_limit = !matches!(stop, Some(egg::StopReason::Saturated));
    report.stop_reason = match stop {
        Some(egg::StopReason::Saturated) => "saturated".to_string(),
        Some(egg::StopReason::IterationLimit(n)) => format!("iteration limit ({n}) hit"),
        Some(egg::StopReason::NodeLimit(n)) => format!("e-node limit ({n}) hit"),
        Some(egg::StopReason::TimeLimit(t)) => format!("time limit ({t:.1} s) hit"),
        Some(egg::StopReason::Other(s)) => s,
        None => "not run".to_string(),
    };

    let egraph = &runner.egraph;
    let extractor = Extractor::new(egraph, cost::WorkCost { egraph, sizes: &sizes });
    let mut out = fused.clone();
    let mut total = 0.0;
    let mut extracted: BTreeMap<(petgraph::graph::NodeIndex, usize), RecExpr<Tfm>> = BTreeMap::new();
    for (ix, k, root) in roots {
        let (cost, best) = extractor.find_best(egraph.find(root));
        total += cost;
        extracted.insert((ix, k), best);
    }
    report.cost_after = total;
    for &ix in &fused.order {
        let node = &mut out.graph[ix];
        node.def = match &node.def {
            Def::Input => Def::Input,
            Def::Expr(_) => Def::Expr(extracted[&(ix, 0)].clone()),
            Def::Scan { index, .. } => {
                Def::Scan { index: index.clone(), init: extracted[&(ix, 0)].clone(), body: extracted[&(ix, 1)].clone() }
            }
        };
    }
    out.relink();
    out = outline::outline(&out, &sizes);
    map_exprs(&mut out, normalize::filters_to_bounds);
    out = prefix::prefix_scans(&out);
    out = key_scan::key_scans(&out);
    if let Some((index, chunk)) = &opts.split {
        out = split::split(&out, index, *chunk);
    }
    out.relink();
    verify(&out)?;
    report.passes_after = passes::passes_fused(&out);
    Ok((out, report))
}

/// Applies `f` to every expression of every node.
fn map_exprs(c: &mut Cascade, f: impl Fn(&RecExpr<Tfm>) -> RecExpr<Tfm>) {
    for ix in c.graph.node_indices().collect::<Vec<_>>() {
        let node = &mut c.graph[ix];
        node.def = match &node.def {
            Def::Input => Def::Input,
            Def::Expr(e) => Def::Expr(f(e)),
            Def::Scan { index, init, body } => Def::Scan { index: index.clone(), init: f(init), body: f(body) },
        };
    }
}

fn exprs(def: &Def) -> Vec<&RecExpr<Tfm>> {
    match def {
        Def::Input => vec![],
        Def::Expr(e) => vec![e],
        Def::Scan { init, body, .. } => vec![init, body],
    }
}

/// Concrete sizes for the cost model.
pub(crate) fn sizes_for(c: &Cascade, opts: &Options) -> cost::Sizes {
    let mut s = cost::Sizes::default();
    for d in &c.dims {
        let v = opts.dims.get(d).copied().unwrap_or(opts.default_dim);
        s.dims.insert(d.clone(), v as f64);
    }
    for p in &c.products {
        let v = p.size(|f| opts.dims.get(f).copied().or(Some(opts.default_dim))).unwrap_or(i64::MAX);
        s.dims.insert(p.name.clone(), v as f64);
    }
    for (name, size) in &c.ranges {
        let v = match size {
            Size::Dim(d) => s.dims.get(d).copied().unwrap_or(opts.default_dim as f64),
            Size::Fixed(n) => *n as f64,
        };
        s.index.insert(name.clone(), v);
    }
    for (k, v) in &opts.params {
        s.params.insert(k.clone(), *v);
    }
    s
}

#[cfg(test)]
mod soundness;
#[cfg(test)]
mod tests;
