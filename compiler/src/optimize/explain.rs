//! `tfmc explain`: the cascade before and after optimization, the rules that fired, passes
//! over each reduced index, estimated flops and bytes for given dims, and egg's statistics.
//!
//! Estimates: each term counted as often as the schedule evaluates it — once per point of the
//! loops around it up to the innermost one it reads (a subterm is hoisted out of the node's
//! inner loop and out of reductions it does not depend on, never out of the parallel loops;
//! a reduction the tiled plans take runs its keys outside the output column), so a term
//! fused where it is recomputed per output column costs that many times. Bounded reductions
//! by their trip count at a typical point. Flops count arithmetic and
//! functions as 1 and a fused online-softmax step (rescale and accumulate) as 3; bytes count every element read from a
//! tensor (4 bytes for f32) plus, in the cascade as written, every local written once.

use super::cost::Sizes;
pub use super::work::Estimate;
use super::{Options, Report};
use crate::ir::Cascade;
use crate::ir::print::print_cascade;
use std::collections::BTreeSet;
use std::fmt::Write;

/// Estimates `c`'s work with `sizes`, as the schedule runs it (see the module docs and
/// [`super::work`]).
pub fn estimate(c: &Cascade, sizes: &Sizes) -> Estimate {
    super::work::estimate(c, sizes)
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
    let named = before.dims.iter().chain(before.products.iter().map(|p| &p.name));
    let dims: Vec<String> = named.map(|d| format!("{d}={}", sizes.dims.get(d).copied().unwrap_or(0.0))).collect();
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
