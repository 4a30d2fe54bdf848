//! `tfmc explain`: the cascade before and after optimization, the rules that fired, passes
//! over each reduced index, estimated flops and bytes for given dims, and egg's statistics.
//!
//! Estimates: each term is evaluated once over the index space it depends on (free indices;
//! bounded reductions by their trip count at a typical point). Flops count arithmetic and
//! functions as 1 and a fused online-softmax step (rescale and accumulate) as 3; bytes count every element read from a
//! tensor (4 bytes for f32) plus, in the cascade as written, every local written once.

use super::cost::Sizes;
use super::inline::free_names;
use super::{Options, Report};
use crate::ir::lang::Tfm;
use crate::ir::print::print_cascade;
use crate::ir::{Cascade, Def, Role};
use egg::{Id, Language, RecExpr};
use std::collections::BTreeSet;
use std::fmt::Write;

/// Estimated work of a cascade.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Estimate {
    /// Floating-point (and integer) operations.
    pub flops: f64,
    /// Bytes read from and written to tensors.
    pub bytes: f64,
}

/// Estimates `c`'s work with `sizes`.
pub fn estimate(c: &Cascade, sizes: &Sizes) -> Estimate {
    let mut est = Estimate::default();
    for &ix in &c.order {
        let n = &c.graph[ix];
        let exprs: Vec<&RecExpr<Tfm>> = match &n.def {
            Def::Input => continue,
            Def::Expr(e) => vec![e],
            Def::Scan { init, body, .. } => vec![init, body],
        };
        let lhs: f64 = n.indices.iter().map(|i| sizes.index.get(i).copied().unwrap_or(1.0)).product();
        for e in exprs {
            let root = Id::from(e.as_ref().len() - 1);
            let mut seen = BTreeSet::new();
            walk(e, root, sizes, c, &mut est, &mut seen);
        }
        if !matches!(n.role, Role::Input(_)) {
            est.bytes += lhs * bytes_of(n.dtype);
        }
    }
    est
}

fn bytes_of(d: crate::hir::DType) -> f64 {
    match d {
        crate::hir::DType::F16 | crate::hir::DType::BF16 => 2.0,
        crate::hir::DType::F64 | crate::hir::DType::I64 => 8.0,
        crate::hir::DType::Bool => 1.0,
        _ => 4.0,
    }
}

fn points(e: &RecExpr<Tfm>, id: Id, sizes: &Sizes) -> f64 {
    let mut free = BTreeSet::new();
    free_names(e, id, &mut free);
    free.iter().map(|s| sizes.index.get(s).copied().unwrap_or(1.0).max(1.0)).product()
}

fn walk(e: &RecExpr<Tfm>, id: Id, sizes: &Sizes, c: &Cascade, est: &mut Estimate, seen: &mut BTreeSet<Id>) {
    if !seen.insert(id) {
        return; // a shared subterm is computed once
    }
    let node = &e[id];
    for &ch in node.children() {
        walk(e, ch, sizes, c, est, seen);
    }
    let mut pts = points(e, id, sizes);
    if let Some([i, lo, hi, _]) = node.reduction_head() {
        let name = match &e[i] {
            Tfm::Symbol(s) => s.as_str().to_string(),
            _ => String::new(),
        };
        let full = sizes.index.get(&name).copied().unwrap_or(1.0).max(1.0);
        let trip = (eval(e, lo, sizes), eval(e, hi, sizes));
        let trip = match trip {
            (Some(l), Some(h)) => (h - l).clamp(0.0, full),
            _ => full,
        };
        pts *= trip.max(1.0);
    }
    match node {
        Tfm::Read(ch) => {
            let dt = match &e[ch[0]] {
                Tfm::Symbol(s) => c.node(s.as_str()).map_or(4.0, |n| bytes_of(n.dtype)),
                _ => 4.0,
            };
            est.bytes += pts * dt;
        }
        Tfm::Const(_) | Tfm::Symbol(_) | Tfm::Idx(_) | Tfm::Dim(_) | Tfm::Param(_) | Tfm::Prev(_) => {}
        Tfm::Osm(_) => est.flops += 3.0 * pts,
        _ => est.flops += pts,
    }
}

/// Integer value of a bound term with free indices at mid-range.
fn eval(e: &RecExpr<Tfm>, id: Id, sizes: &Sizes) -> Option<f64> {
    let sym = |c: Id| match &e[c] {
        Tfm::Symbol(s) => Some(s.as_str().to_string()),
        _ => None,
    };
    Some(match &e[id] {
        Tfm::Const(k) => k.as_f64(),
        Tfm::Dim(s) => *sizes.dims.get(&sym(*s)?)?,
        Tfm::Param(s) => *sizes.params.get(&sym(*s)?)?,
        Tfm::Idx(s) => (sizes.index.get(&sym(*s)?)? / 2.0).floor(),
        Tfm::Add([a, b]) => eval(e, *a, sizes)? + eval(e, *b, sizes)?,
        Tfm::Sub([a, b]) => eval(e, *a, sizes)? - eval(e, *b, sizes)?,
        Tfm::Mul([a, b]) => eval(e, *a, sizes)? * eval(e, *b, sizes)?,
        Tfm::Cast([_, a]) => eval(e, *a, sizes)?,
        Tfm::Call(ch) if ch.len() == 3 => {
            let (a, b) = (eval(e, ch[1], sizes)?, eval(e, ch[2], sizes)?);
            match sym(ch[0])?.as_str() {
                "min" => a.min(b),
                "max" => a.max(b),
                _ => return None,
            }
        }
        _ => return None,
    })
}

fn human(x: f64) -> String {
    let units = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, u) in units {
        if x >= scale {
            return format!("{:.2}{u}", x / scale);
        }
    }
    format!("{x:.0}")
}

/// The full `explain` text.
pub fn render(docs: &[String], before: &Cascade, after: &Cascade, report: &Report, opts: &Options) -> String {
    let sizes = super::sizes_for(before, opts);
    let mut s = String::new();
    let _ = writeln!(s, "kernel {}", before.name);
    for d in docs {
        let _ = writeln!(s, "  /// {d}");
    }
    let _ = writeln!(s, "\n== before (the cascade as written) ==");
    s.push_str(&print_cascade(before));
    let _ = writeln!(s, "\n== after (optimized) ==");
    s.push_str(&print_cascade(after));
    let _ = writeln!(s, "\n== rules fired ==");
    if report.rules_fired.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for (rule, n) in &report.rules_fired {
        let _ = writeln!(s, "  {rule:<36} {n}");
    }
    let _ = writeln!(s, "\n== passes over each reduced index ==");
    let _ = writeln!(s, "  {:<8} {:>6} {:>6}", "index", "before", "after");
    let mut names: BTreeSet<&String> = report.passes_before.keys().collect();
    names.extend(report.passes_after.keys());
    for i in names {
        let b = report.passes_before.get(i).copied().unwrap_or(0);
        let a = report.passes_after.get(i).copied().unwrap_or(0);
        let _ = writeln!(s, "  {i:<8} {b:>6} {a:>6}");
    }
    let dims: Vec<String> = before.dims.iter().map(|d| format!("{d}={}", sizes.dims.get(d).copied().unwrap_or(0.0))).collect();
    let (eb, ea) = (estimate(before, &sizes), estimate(after, &sizes));
    let _ = writeln!(s, "\n== estimate for {} ==", dims.join(", "));
    let _ = writeln!(s, "  {:<8} {:>12} {:>12} {:>8}", "", "before", "after", "ratio");
    let ratio = |b: f64, a: f64| if a > 0.0 { format!("{:.2}x", b / a) } else { "-".to_string() };
    let _ = writeln!(s, "  {:<8} {:>12} {:>12} {:>8}", "flops", human(eb.flops), human(ea.flops), ratio(eb.flops, ea.flops));
    let _ = writeln!(s, "  {:<8} {:>12} {:>12} {:>8}", "bytes", human(eb.bytes), human(ea.bytes), ratio(eb.bytes, ea.bytes));
    let _ = writeln!(
        s,
        "\n== egg ==\n  {} iterations, {} e-nodes, {} e-classes; stopped: {}{}",
        report.iterations,
        report.enodes,
        report.eclasses,
        report.stop_reason,
        if report.hit_limit { " (a limit was hit: the result is sound but may not be the best)" } else { "" }
    );
    s
}

/// Why a kernel cannot be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Lowering failed.
    #[error(transparent)]
    Lower(#[from] crate::ir::lower::LowerError),
    /// The IR verifier failed (a compiler bug).
    #[error(transparent)]
    Verify(#[from] crate::ir::verify::VerifyError),
    /// `--split` names no index of the kernel.
    #[error(transparent)]
    Split(#[from] super::split::UnknownIndex),
}

/// Lowers, optimizes and renders kernel `name` of `program`.
pub fn explain(program: &crate::Program, name: &str, opts: &Options) -> Result<String, ExplainError> {
    let before = crate::ir::lower::lower(program, name)?;
    if let Some((index, _)) = &opts.split {
        super::split::check_index(&before, index)?;
    }
    let (after, report) = super::optimize(&before, opts)?;
    let docs = program.kernel(name).map(|(_, k)| k.docs.clone()).unwrap_or_default();
    let mut text = render(&docs, &before, &after, &report, opts);
    // The CPU schedule chosen for the optimized cascade (`tfmc build --emit=kir` shows it whole).
    let sched = crate::schedule::ScheduleOptions::default();
    text.push_str("\n== schedule (cpu) ==\n");
    match crate::schedule::schedule(program, &after, &sched) {
        Ok(s) => {
            for line in &s.plan {
                text.push_str(&format!("  {line}\n"));
            }
        }
        Err(e) => text.push_str(&format!("  not schedulable: {e}\n")),
    }
    Ok(text)
}
