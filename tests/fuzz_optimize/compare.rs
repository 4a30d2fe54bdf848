//! The pipeline under test and the oracle comparison: a kernel lowered and optimized once
//! ([`prepare`], cached; panics and verifier errors become findings), one case of it run
//! against `interp::run_exact` ([`run_case`]), and the tolerance — [`RTOL`] of the output's
//! largest finite magnitude plus 64 ε of the largest value computed ([`magnitude`]). Assumes
//! nothing about the programs beyond that they check; a kernel the IR cannot express is skipped.

use crate::cases::{Case, make_inputs};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};
use tfmc::hir::Program;
use tfmc::ir::Cascade;
use tfmc::optimize::{Options, optimize};
use tfmc::semantics::RunError;
use tfmc_runtime::{Scalar, Tensor};

/// Relative tolerance, scaled by the output's largest finite magnitude (rewrites reassociate).
const RTOL: f64 = 1e-9;

/// A kernel lowered and optimized once (cached by its lowered IR text).
pub struct Prepared {
    lowered: Cascade,
    /// The optimized cascade, or why `optimize` failed (verifier error or panic).
    optimized: Result<Cascade, String>,
    pub rules: String,
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

/// The optimizer's options for `case`: the program's, with the case's split.
pub fn options(program: &Program, case: &Case) -> Options {
    Options { split: case.split.clone(), ..Options::for_program(program) }
}

/// Lowers and optimizes `kernel` with `opts`; `None` when
/// the IR cannot express it (not the optimizer's concern).
pub fn prepare(program: &Program, kernel: &str, opts: &Options) -> Option<Arc<Prepared>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Prepared>>>> = OnceLock::new();
    let lowered = match catch_unwind(AssertUnwindSafe(|| tfmc::ir::lower::lower(program, kernel))) {
        Ok(Ok(c)) => c,
        Ok(Err(_)) => return None,
        Err(p) => {
            let lowered = Cascade {
                name: kernel.to_string(),
                dims: vec![],
                products: vec![],
                ranges: vec![],
                graph: Default::default(),
                order: vec![],
            };
            let optimized = Err(format!("lower panicked: {}", panic_text(&*p)));
            return Some(Arc::new(Prepared { lowered, optimized, rules: String::new() }));
        }
    };
    let key = format!("{}{:?}{:?}{:?}", tfmc::ir::print::print_cascade(&lowered), opts.params, opts.only_rules, opts.split);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(p) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Some(p.clone());
    }
    let (optimized, rules) = match catch_unwind(AssertUnwindSafe(|| optimize(&lowered, opts))) {
        Ok(Ok((c, report))) => (Ok(c), report.rules_fired.keys().cloned().collect::<Vec<_>>().join(" ")),
        Ok(Err(e)) => (Err(format!("optimize returned a verifier error: {e}")), String::new()),
        Err(p) => (Err(format!("optimize panicked: {}", panic_text(&*p))), String::new()),
    };
    let p = Arc::new(Prepared { lowered, optimized, rules });
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() > 4000 {
        cache.clear();
    }
    cache.insert(key, p.clone());
    Some(p)
}

/// What kind of discrepancy; minimization keeps the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `optimize` (or `lower`) panicked or returned a verifier error.
    Optimize,
    /// One side failed, the other ran.
    Failure,
    /// Values differ.
    Value,
}

#[derive(Debug)]
pub struct Finding {
    pub kind: Kind,
    /// What the first difference looks like (`oracle NaN, optimized finite`), for deduplication.
    pub sig: String,
    pub detail: String,
}

fn finding(kind: Kind, sig: &str, detail: String) -> Option<Finding> {
    Some(Finding { kind, sig: sig.to_string(), detail })
}

/// `NaN`, `inf` or `finite`.
fn class(x: f64) -> &'static str {
    if x.is_nan() {
        "NaN"
    } else if x.is_infinite() {
        "inf"
    } else {
        "finite"
    }
}

type Outputs = Result<BTreeMap<String, Tensor>, RunError>;

fn quiet<T>(f: impl FnOnce() -> Result<T, RunError>) -> Result<Result<T, RunError>, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_text(&*p))
}

/// Equal, both NaN, or finite and within `tol`.
fn same(a: f64, b: f64, tol: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= tol
}

/// The largest finite magnitude among the inputs and every tensor the unoptimized IR computes
/// (locals turned into outputs): reassociating terms of that size loses `f64::EPSILON` of it,
/// and softmax turns an absolute logit error into a relative output error.
fn magnitude(prep: &Prepared, program: &Program, inputs: &BTreeMap<String, Tensor>, params: &BTreeMap<String, Scalar>) -> f64 {
    let mut all = prep.lowered.clone();
    let mut k = all.outputs().len();
    for ix in all.graph.node_indices().collect::<Vec<_>>() {
        if matches!(all.graph[ix].role, tfmc::ir::Role::Local) {
            all.graph[ix].role = tfmc::ir::Role::Output(k);
            k += 1;
        }
    }
    let computed = quiet(|| tfmc::ir::eval::run_cascade(&all, program, inputs, params, true)).ok().and_then(Result::ok).unwrap_or_default();
    inputs.values().chain(computed.values()).flat_map(Tensor::to_f64_vec).filter(|x| x.is_finite()).fold(0.0, |m, x| m.max(x.abs()))
}

/// `None` when `got` agrees with `want`; else what differs (first elements, with `mid`, the
/// unoptimized IR's outputs, beside them for diagnosis). Finite values agree within
/// `RTOL · scale + 64 ε · mag · max(scale, 1)` (`scale` the output's largest finite magnitude,
/// `mag` the computation's, see [`magnitude`]).
fn compare(want: &Outputs, got: &Outputs, mid: &Outputs, mag: f64) -> Option<Finding> {
    let (w, g) = match (want, got) {
        (Err(_), Err(_)) => return None,
        (Ok(_), Err(e)) => return finding(Kind::Failure, "optimized fails", format!("  oracle runs, optimized fails: {e}\n")),
        (Err(e), Ok(_)) => return finding(Kind::Failure, "oracle fails", format!("  oracle fails ({e}), optimized runs\n")),
        (Ok(w), Ok(g)) => (w, g),
    };
    let (mut detail, mut sig) = (String::new(), String::new());
    for (name, wt) in w {
        let Some(gt) = g.get(name) else {
            return finding(Kind::Failure, "missing output", format!("  optimized has no output '{name}'\n"));
        };
        if gt.shape() != wt.shape() {
            return finding(Kind::Failure, "shape", format!("  '{name}': shape {:?} vs {:?}\n", gt.shape(), wt.shape()));
        }
        let (wv, gv) = (wt.to_f64_vec(), gt.to_f64_vec());
        let mv = mid.as_ref().ok().and_then(|m| m.get(name)).map(Tensor::to_f64_vec);
        let scale = wv.iter().filter(|x| x.is_finite()).fold(1e-300f64, |m, x| m.max(x.abs()));
        let tol = RTOL * scale + 64.0 * f64::EPSILON * mag * scale.max(1.0);
        let bad: Vec<usize> = (0..wv.len()).filter(|&i| !same(gv[i], wv[i], tol)).collect();
        for &i in bad.iter().take(4) {
            let m = mv.as_ref().map_or("?".to_string(), |m| format!("{:?}", m[i]));
            let _ = writeln!(
                detail,
                "  {name}[{i}] (flat, shape {:?}): optimized {:?}, oracle {:?}, unoptimized IR {m}",
                wt.shape(),
                gv[i],
                wv[i]
            );
        }
        if let Some(&i) = bad.first()
            && sig.is_empty()
        {
            sig = format!("oracle {}, optimized {}", class(wv[i]), class(gv[i]));
        }
        if !bad.is_empty() {
            let _ = writeln!(detail, "  {} of {} elements of '{name}' differ (scale {scale:e})", bad.len(), wv.len());
        }
    }
    (!detail.is_empty()).then_some(Finding { kind: Kind::Value, sig, detail })
}

/// Runs one case of a prepared kernel against the oracle; `None` when they agree or the case
/// cannot be built.
pub fn run_case(program: &Program, prep: &Prepared, case: &Case) -> Option<Finding> {
    let opt = match &prep.optimized {
        Ok(c) => c,
        Err(e) => return finding(Kind::Optimize, e.split(':').next().unwrap_or(""), format!("  {e}\n")),
    };
    let inputs = make_inputs(program, case)?;
    let panicked = |what: &str, p: String| finding(Kind::Optimize, &format!("{what} panicked"), format!("  {what} panicked: {p}\n"));
    let want = match quiet(|| tfmc::interp::run_exact(program, &case.kernel, &inputs, &case.params)) {
        Ok(w) => w,
        Err(p) => return panicked("the oracle", p),
    };
    let got = match quiet(|| tfmc::ir::eval::run_cascade(opt, program, &inputs, &case.params, true)) {
        Ok(g) => g,
        Err(p) => return panicked("run_cascade (optimized)", p),
    };
    compare(&want, &got, &Ok(BTreeMap::new()), 0.0)?;
    let mag = magnitude(prep, program, &inputs, &case.params);
    let mid = quiet(|| tfmc::ir::eval::run_cascade(&prep.lowered, program, &inputs, &case.params, true))
        .unwrap_or_else(|p| Err(RunError::Internal { what: p, loc: String::new() }));
    let mut f = compare(&want, &got, &mid, mag)?;
    let _ = writeln!(f.detail, "  largest magnitude computed: {mag:e}");
    let mid_text = match &mid {
        Ok(_) if compare(&want, &mid, &mid, mag).is_none() => "agrees with the oracle".to_string(),
        Ok(_) => "also differs from the oracle".to_string(),
        Err(e) => format!("fails: {e}"),
    };
    let _ = write!(f.detail, "  unoptimized IR {mid_text}\n  rules fired: {}\n", prep.rules);
    Some(f)
}
