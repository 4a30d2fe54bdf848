//! Timing one row of `tfmc bench --variants` on tfmc: compile the `lib/` kernel once, make its
//! inputs from its signature, one warm-up call, then the median of timed calls within the row's
//! budget. Runs in a child process (`tfmc bench --variant-child NAME`, see [`child_main`]) so that
//! the parent can stop a call that exceeds the budget; the same steps run in-process when there
//! is no `tfmc` executable to start (unit tests).
//!
//! The child reports on stdout, one flat JSON object a line, as each step finishes:
//! `{"compiled": S, "plan": "...", "flops": F}`, then `{"warm_ms": X}`, then
//! `{"median_ms": Y, "iters": N, "non_finite": B}` (or `{"error": "..."}` at any point).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tfmc_runtime::DType;
use tfmc_runtime::call::{alloc_outputs, bind_dims, call_native};
use tfmc_runtime::native::NativeTensor;

use super::SEED;
use super::torch::json_escape;
use super::variants::{Variant, VariantDims};
use crate::driver::{CompileOptions, Target, prepare, with_jit};
use crate::hir::{Extent, Kernel};

/// One step of a row's measurement, as the child reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Compiled: seconds, the schedule's plan lines, the optimized cascade's flop estimate.
    Compiled { seconds: f64, plan: Vec<String>, flops: f64 },
    /// The warm-up call took this long (ms).
    Warm(f64),
    /// The timed calls: median ms, count, and whether the output held NaN or infinity.
    Timed { median_ms: f64, iters: usize, non_finite: bool },
}

/// The size of dim `name` in a variants run: `G` (kv heads) is `H / 4`, `T` (tokens) is `P`;
/// for Pattention, `N` (parameter tokens) is `M` and `D` (model dim) is `E`.
pub fn dim_size(name: &str, d: &VariantDims) -> Option<usize> {
    Some(match name {
        "B" => d.b,
        "H" => d.h,
        "G" => (d.h / 4).max(1),
        "P" | "T" => d.p,
        "M" | "N" => d.m,
        "E" | "D" => d.e,
        "F" => d.f,
        _ => return None,
    })
}

/// Seeded inputs of `kernel` in argument order: floats uniform `[-1, 1)`, bools fair coins,
/// and RetNet's decay `Gamma[h] = 1 - 2^(-5 - h)` (as `bench/torch_ref.py` makes them).
pub fn make_inputs(kernel: &Kernel, d: &VariantDims) -> Result<Vec<NativeTensor>, String> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut out = Vec::new();
    for &id in &kernel.inputs {
        let t = &kernel.tensors[id.index()];
        let shape = t
            .shape
            .iter()
            .map(|e| match e {
                Extent::Const(n) => usize::try_from(*n).map_err(|_| format!("{}: negative extent", t.name)),
                Extent::Dim(dim) => {
                    let name = &kernel.dims[dim.index()].name;
                    dim_size(name, d).ok_or_else(|| format!("{}: no size for dim '{name}' in a variants run", kernel.name))
                }
            })
            .collect::<Result<Vec<usize>, String>>()?;
        let dtype = match t.dtype {
            crate::hir::DType::F32 => DType::F32,
            crate::hir::DType::Bool => DType::Bool,
            other => return Err(format!("{}: input {} is {other:?}; the variants run makes f32 and bool inputs", kernel.name, t.name)),
        };
        let mut x = NativeTensor::zeros(dtype, shape.clone()).map_err(|e| format!("cannot allocate {} {shape:?}: {e}", t.name))?;
        if let Some(data) = x.as_f32_mut() {
            if t.name == "Gamma" {
                data.iter_mut().enumerate().for_each(|(h, g)| *g = 1.0 - 2f32.powi(-5 - h as i32));
            } else {
                data.iter_mut().for_each(|v| *v = rng.random::<f32>() * 2.0 - 1.0);
            }
        } else if let Some(bytes) = x.as_bool_bytes_mut() {
            bytes.iter_mut().for_each(|v| *v = u8::from(rng.random_bool(0.5)));
        }
        out.push(x);
    }
    Ok(out)
}

/// The optimized cascade's flop estimate for `kernel` at `dims` (`tfmc explain`'s "after").
fn flops(program: &crate::Program, kernel: &str, d: &VariantDims) -> Result<f64, String> {
    let lowered = crate::ir::lower::lower(program, kernel).map_err(|e| e.to_string())?;
    let mut opts = crate::optimize::Options::for_program(program);
    for name in &lowered.dims {
        if let Some(n) = dim_size(name, d) {
            opts.dims.insert(name.clone(), i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    let (optimized, _) = crate::optimize::optimize(&lowered, &opts).map_err(|e| e.to_string())?;
    let sizes = crate::optimize::sizes_for(&optimized, &opts);
    Ok(crate::optimize::explain::estimate(&optimized, &sizes).flops)
}

/// Measures `v` at `dims`, calling `report` after each [`Step`]: compile, warm-up call, then up
/// to `iters` timed calls, cut so that they fit `budget_s` after the warm-up (none when the
/// warm-up alone exceeds it).
pub fn measure(v: &Variant, d: &VariantDims, iters: usize, budget_s: f64, lib: &Path, report: &mut dyn FnMut(Step)) -> Result<(), String> {
    let path = lib.join(v.file);
    let program = crate::load(&path).map_err(|e| format!("{}: does not check:\n{e}", path.display()))?;
    let (_, kernel) = program.kernel(v.kernel).ok_or_else(|| format!("{}: no kernel '{}'", path.display(), v.kernel))?;
    let inputs = make_inputs(kernel, d)?;
    let target = Target::host_llvm();
    let start = Instant::now();
    let prepared = prepare(&program, v.kernel, &CompileOptions::default(), &target).map_err(|e| format!("{}: {e}", v.kernel))?;
    let flops = flops(&program, v.kernel, d)?;
    let manifest = &prepared.manifest;
    let symbol = manifest.symbol.clone();
    let params = BTreeMap::new();
    with_jit(&target, std::slice::from_ref(&prepared), |lookup| -> Result<(), String> {
        report(Step::Compiled { seconds: start.elapsed().as_secs_f64(), plan: prepared.scheduled.plan.clone(), flops });
        let entry = lookup(&symbol).ok_or_else(|| format!("the JIT has no symbol '{symbol}'"))?;
        let refs: Vec<&NativeTensor> = inputs.iter().collect();
        let shapes: Vec<&[usize]> = refs.iter().map(|t| t.shape()).collect();
        let dims = bind_dims(manifest, &shapes).map_err(|e| e.to_string())?;
        let mut outputs = alloc_outputs(manifest, &dims).map_err(|e| e.to_string())?;
        let mut call = || -> Result<Duration, String> {
            let t = Instant::now();
            // SAFETY: `entry` is the packed entry JIT-compiled from `prepared`, whose manifest
            // entry is `manifest`; `call_native` checks every buffer against it.
            unsafe { call_native(entry, manifest, &refs, &mut outputs, &params) }.map_err(|e| e.to_string())?;
            Ok(t.elapsed())
        };
        let warm = call()?;
        report(Step::Warm(warm.as_secs_f64() * 1e3));
        if warm.as_secs_f64() > budget_s {
            return Ok(());
        }
        let per = warm.as_secs_f64();
        let n = if per > 0.0 { iters.min((budget_s / per).floor() as usize).max(1) } else { iters };
        let times = (0..n).map(|_| call().map(|t| t.as_secs_f64() * 1e3)).collect::<Result<Vec<_>, _>>()?;
        let non_finite = outputs.iter().any(|o| o.as_f32().is_some_and(|x| x.iter().any(|v| !v.is_finite())));
        report(Step::Timed { median_ms: super::tfmc_side::median(times), iters: n, non_finite });
        Ok(())
    })
    .map_err(|e| format!("{}: {e}", v.kernel))?
}

/// The JSON line the child prints for a step.
pub fn step_line(s: &Step) -> String {
    match s {
        Step::Compiled { seconds, plan, flops } => {
            format!("{{\"compiled\": {seconds}, \"plan\": \"{}\", \"flops\": {flops}}}", json_escape(&plan.join("\n")))
        }
        Step::Warm(ms) => format!("{{\"warm_ms\": {ms}}}"),
        Step::Timed { median_ms, iters, non_finite } => {
            format!("{{\"median_ms\": {median_ms}, \"iters\": {iters}, \"non_finite\": {non_finite}}}")
        }
    }
}

/// `tfmc bench --variant-child NAME`: measures one row and prints its steps on stdout (see the
/// module docs); an error is printed as `{"error": ...}`.
pub fn child_main(name: &str, d: &VariantDims, iters: usize, budget_s: f64, threads: usize) -> Result<(), String> {
    let v = super::variants::VARIANTS.iter().find(|v| v.name == name).ok_or_else(|| format!("unknown variant '{name}'"))?;
    tfmc_runtime::parallel::set_num_threads(threads);
    let mut stdout = std::io::stdout();
    let mut print = |line: String| {
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    };
    if let Err(e) = measure(v, d, iters, budget_s, &super::lib_dir(), &mut |s| print(step_line(&s))) {
        print(format!("{{\"error\": \"{}\"}}", json_escape(&e)));
    }
    Ok(())
}
