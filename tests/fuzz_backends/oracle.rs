//! One case on every backend against the oracle (`interp::run_exact`, f64, the program as
//! written), and the verdict per backend ([`run_case`]): they agree when both fail, or both run
//! and every output element is within the tolerance ([`tolerance`]: 1e-3 of the output's
//! largest finite magnitude, the output format's rounding, and f32 rounding — or the narrowest
//! format's, for locals stored in f16/bf16 — of the largest magnitude the computation holds);
//! NaN equals NaN, infinities equal by sign. A disagreement is allowed,
//! not a finding, when `docs/language.md` allows it:
//! - the backend reports out of memory (it may, where the interpreter runs);
//! - the f64 computation leaves the f32 range: a stored value whose square over- or
//!   underflows (above about 1.8e19 or below 1.1e-19; above 256 for kernels with `f16`
//!   tensors), since the terms of a statement are not seen (`rsqrt(x · x)` of x = 1e-30 is
//!   1e30 in f64 and inf in f32), or, for inputs not drawn from [-1, 1), a non-NaN oracle
//!   value that the backend makes inf or NaN (a term within a statement overflowing f32, such
//!   as `exp(100) · 0`): float math runs in the dtype's own precision;
//! - for inputs not drawn from [-1, 1), every differing element is an exact 0 on one side:
//!   a cancellation to zero in f32 that f64 resolves (`elu(x) + 1` of x = -17 is 0 in f32,
//!   then `0 / 0 = 0`), the discontinuity `docs/language.md` describes;
//! - the backend agrees with the *optimized* cascade evaluated in f64 (`ir::eval::run_cascade`)
//!   and that one differs from the oracle, or the case has ±inf inputs or a zero dim and the
//!   optimized cascade differs from the oracle (non-finite values under reassociation are
//!   unspecified): the optimizer's business (`fuzz_optimize`), since every backend runs the
//!   optimized cascade.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, OnceLock};

use crate::cases::{Case, Style, make_inputs};
use crate::compiled::{Outputs, backends, compiled, panic_text};
use tfmc::hir::Program;
use tfmc_runtime::{DType, Scalar, Tensor};

/// What kind of disagreement; minimization keeps the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Preparing, compiling or running panicked.
    Panic,
    /// One side failed (a compile error included), the other ran.
    Failure,
    /// Values differ.
    Value,
}

/// A disagreement of one backend with the oracle on one case.
#[derive(Clone, Debug)]
pub struct Finding {
    pub backend: &'static str,
    pub kind: Kind,
    /// What the first difference looks like (`oracle finite, backend NaN`), for deduplication.
    pub sig: String,
    pub detail: String,
}

/// How one backend did on one case.
#[derive(Debug)]
pub enum Verdict {
    Agree,
    /// A difference the language allows (`oom`, `range`, `optimizer`).
    Allowed(&'static str),
    Finding(Finding),
}

/// Counts of verdicts per backend and kind of verdict, for the campaign's report.
pub fn tally() -> &'static Mutex<BTreeMap<(&'static str, String), usize>> {
    static T: OnceLock<Mutex<BTreeMap<(&'static str, String), usize>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

fn count(backend: &'static str, what: &str) {
    *tally().lock().unwrap_or_else(|e| e.into_inner()).entry((backend, what.to_string())).or_insert(0) += 1;
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

/// The largest and smallest nonzero finite magnitudes among `inputs` and every tensor the
/// lowered cascade computes (locals turned into outputs), in f64.
fn magnitudes(program: &Program, kernel: &str, inputs: &BTreeMap<String, Tensor>, params: &BTreeMap<String, Scalar>) -> (f64, f64) {
    let computed = catch_unwind(AssertUnwindSafe(|| {
        let mut all = tfmc::ir::lower::lower(program, kernel).ok()?;
        let mut k = all.outputs().len();
        for ix in all.graph.node_indices().collect::<Vec<_>>() {
            if matches!(all.graph[ix].role, tfmc::ir::Role::Local) {
                all.graph[ix].role = tfmc::ir::Role::Output(k);
                k += 1;
            }
        }
        tfmc::ir::eval::run_cascade(&all, program, inputs, params, true).ok()
    }))
    .ok()
    .flatten()
    .unwrap_or_default();
    let xs = inputs.values().chain(computed.values()).filter(|t| t.dtype().is_float()).flat_map(Tensor::to_f64_vec);
    xs.filter(|x| x.is_finite() && *x != 0.0).fold((0.0, f64::INFINITY), |(hi, lo), x| (hi.max(x.abs()), lo.min(x.abs())))
}

/// Whether f64 values of these magnitudes fit the precision the kernel computes in.
fn in_range(program: &Program, kernel: &str, (hi, lo): (f64, f64)) -> bool {
    let Some((_, k)) = program.kernel(kernel) else { return true };
    let dtypes: Vec<DType> = k.tensors.iter().map(|t| t.dtype).filter(|d| d.is_float()).collect();
    if dtypes.iter().all(|d| *d == DType::F64) {
        return true;
    }
    // Values are stored, not the terms within a statement: a product of two of them must
    // stay in range, so the bounds are the square roots of the format's.
    let max: f64 = if dtypes.contains(&DType::F16) { 65504.0 } else { f64::from(f32::MAX) };
    hi <= max.sqrt() && lo >= f64::from(f32::MIN_POSITIVE).sqrt()
}

/// The rounding unit of an output format.
fn unit(d: DType) -> f64 {
    match d {
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
        DType::F64 => f64::EPSILON,
        _ => f64::from(f32::EPSILON),
    }
}

/// How much more than f32's the kernel's locals may round: locals of a half format are
/// stored in it (`1 + y²` of 1.0019 is 1.0 in bf16, and `log` of it 0), so the slack for the
/// largest magnitude computed is 4 units of the narrowest float format instead of 16 of f32's.
fn storage_factor(program: &Program, kernel: &str) -> f64 {
    let narrowest = program
        .kernel(kernel)
        .map_or(0.0, |(_, k)| k.tensors.iter().filter(|t| t.dtype.is_float()).map(|t| unit(t.dtype)).fold(0.0, f64::max));
    (4.0 * narrowest / (16.0 * f64::from(f32::EPSILON))).max(1.0)
}

/// The tolerance of element `w` of an output of format `d` whose largest finite magnitude is
/// `scale`, in a computation whose largest magnitude is `mag`.
pub fn tolerance(d: DType, w: f64, scale: f64, mag: f64) -> f64 {
    (1e-3 + unit(d)) * scale + 4.0 * unit(d) * w.abs() + 16.0 * f64::from(f32::EPSILON) * mag * scale.max(1.0)
}

/// How `got` differs from `want` (see [`differ`]).
struct Diff {
    kind: Kind,
    /// What the first difference looks like (`oracle finite, backend NaN`).
    sig: String,
    detail: String,
    /// Every differing element is finite on both sides and an exact 0 on one (a cancellation
    /// to zero).
    zero_side: bool,
}

fn diff(kind: Kind, sig: &str, detail: String) -> Option<Diff> {
    Some(Diff { kind, sig: sig.to_string(), detail, zero_side: false })
}

/// `None` when `got` agrees with `want`; else how they differ.
fn differ(want: &Outputs, got: &Outputs, mag: f64) -> Option<Diff> {
    let (w, g) = match (want, got) {
        (Err(_), Err(_)) => return None,
        (Ok(_), Err(e)) => return diff(Kind::Failure, "backend fails", format!("  oracle runs, backend fails: {e}\n")),
        (Err(e), Ok(_)) => return diff(Kind::Failure, "oracle fails", format!("  oracle fails ({e}), backend runs\n")),
        (Ok(w), Ok(g)) => (w, g),
    };
    let (mut detail, mut sig, mut zero_side) = (String::new(), String::new(), true);
    for (name, wt) in w {
        let Some(gt) = g.get(name) else { return diff(Kind::Failure, "missing output", format!("  no output '{name}'\n")) };
        if gt.shape() != wt.shape() {
            return diff(Kind::Failure, "shape", format!("  '{name}': shape {:?} vs {:?}\n", gt.shape(), wt.shape()));
        }
        let d = gt.dtype();
        // The oracle's f64 result rounded to the output's format (above its range: inf).
        let wv = if d.is_float() {
            Tensor::from_f64(d, wt.shape().to_vec(), wt.to_f64_vec()).map_or_else(|_| wt.to_f64_vec(), |t| t.to_f64_vec())
        } else {
            wt.to_f64_vec()
        };
        let gv = gt.to_f64_vec();
        let scale = wv.iter().filter(|x| x.is_finite()).fold(0f64, |m, x| m.max(x.abs()));
        let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= tolerance(d, b, scale, mag);
        let bad: Vec<usize> = (0..wv.len()).filter(|&i| !same(gv[i], wv[i])).collect();
        zero_side &= bad.iter().all(|&i| gv[i].is_finite() && wv[i].is_finite() && (gv[i] == 0.0 || wv[i] == 0.0));
        for &i in bad.iter().take(4) {
            let _ = writeln!(detail, "  {name}[{i}] (flat, shape {:?}): backend {:?}, oracle {:?}", wt.shape(), gv[i], wv[i]);
        }
        if let Some(&i) = bad.first() {
            if sig.is_empty() {
                sig = format!("oracle {}, backend {}", class(wv[i]), class(gv[i]));
            }
            let _ = writeln!(detail, "  {} of {} elements of '{name}' differ (scale {scale:e})", bad.len(), wv.len());
        }
    }
    (!detail.is_empty()).then_some(Diff { kind: Kind::Value, sig, detail, zero_side })
}

/// The optimized cascade (as every backend runs it) evaluated in f64.
fn optimized_f64(program: &Program, case: &Case, inputs: &BTreeMap<String, Tensor>) -> Outputs {
    catch_unwind(AssertUnwindSafe(|| {
        let lowered = tfmc::ir::lower::lower(program, &case.kernel).map_err(|e| e.to_string())?;
        let opts = tfmc::optimize::Options { split: case.split.clone(), ..tfmc::optimize::Options::for_program(program) };
        let (opt, _) = tfmc::optimize::optimize(&lowered, &opts).map_err(|e| e.to_string())?;
        tfmc::ir::eval::run_cascade(&opt, program, inputs, &case.params, true).map_err(|e| e.to_string())
    }))
    .unwrap_or_else(|p| Err(panic_text(&*p)))
}

/// Runs `case` of `program` (whose text is `text`) on the oracle and on every backend whose
/// name `only` accepts; `None` when the case cannot be built or the oracle panics (not the
/// backends' concern).
pub fn run_case(text: &str, program: &Program, case: &Case, only: &dyn Fn(&str) -> bool) -> Option<Vec<Verdict>> {
    let inputs = make_inputs(program, case)?;
    let want: Outputs = catch_unwind(AssertUnwindSafe(|| tfmc::interp::run_exact(program, &case.kernel, &inputs, &case.params)))
        .ok()?
        .map_err(|e| e.to_string());
    let mut context: Option<(f64, bool, Outputs)> = None;
    let mut verdicts = Vec::new();
    for (backend, target) in backends() {
        if !only(backend) {
            continue;
        }
        let c = compiled(text, program, &case.kernel, &case.split, &target);
        let got = c.run(&inputs, &case.params);
        let verdict = match &got {
            Err(e) if e.starts_with("panicked") => {
                let at = if c.compile_error().is_some() { "compiling" } else { "running" };
                Verdict::Finding(Finding { backend, kind: Kind::Panic, sig: format!("{at} panicked"), detail: format!("  {e}\n") })
            }
            _ if differ(&want, &got, 0.0).is_none() => Verdict::Agree,
            Err(e) if e.contains("out of memory") => Verdict::Allowed("oom"),
            _ => {
                let (mag, ok, opt) = context.get_or_insert_with(|| {
                    let m = magnitudes(program, &case.kernel, &inputs, &case.params);
                    (m.0 * storage_factor(program, &case.kernel), in_range(program, &case.kernel, m), optimized_f64(program, case, &inputs))
                });
                // Large, extreme or infinite inputs: f32 arithmetic inside a statement may
                // overflow or cancel where f64 does not.
                let wide = case.style != Style::Unit;
                let non_finite_case = case.style == Style::Inf || case.dims.values().any(|&n| n == 0);
                match differ(&want, &got, *mag) {
                    None => Verdict::Agree,
                    Some(_) if differ(opt, &got, *mag).is_none() && differ(&want, opt, *mag).is_some() => Verdict::Allowed("optimizer"),
                    Some(_) if non_finite_case && differ(&want, opt, *mag).is_some() => Verdict::Allowed("optimizer"),
                    Some(d) if d.kind == Kind::Value && !*ok => Verdict::Allowed("range"),
                    Some(d) if d.kind == Kind::Value && wide && !d.sig.ends_with("backend finite") && !d.sig.starts_with("oracle NaN") => {
                        Verdict::Allowed("range")
                    }
                    Some(d) if d.kind == Kind::Value && wide && d.zero_side => Verdict::Allowed("cancellation"),
                    Some(Diff { kind, sig, mut detail, .. }) => {
                        let _ = writeln!(
                            detail,
                            "  largest magnitude computed (times the storage factor): {mag:e}; optimized cascade in f64: {}",
                            match opt {
                                Ok(_) if differ(&want, opt, *mag).is_none() => "agrees with the oracle".to_string(),
                                Ok(_) => "differs from the oracle and the backend".to_string(),
                                Err(e) => format!("fails: {e}"),
                            }
                        );
                        if let Some(e) = c.compile_error() {
                            let _ = writeln!(detail, "  (the kernel did not compile: {e})");
                        }
                        Verdict::Finding(Finding { backend, kind, sig, detail })
                    }
                }
            }
        };
        count(
            backend,
            match &verdict {
                Verdict::Agree => "agree",
                Verdict::Allowed(why) => why,
                Verdict::Finding(_) => "finding",
            },
        );
        verdicts.push(verdict);
    }
    Some(verdicts)
}
