//! `tfmc bench --tiers`: the two JIT tiers side by side, for issue 7's targets (Cranelift
//! compiles a kernel in < 50 ms, ≥ 20× faster than LLVM O3, and its code runs within 3× of
//! LLVM's).
//!
//! 1. Compile time of every kernel of every `lib/` file: the shared front part (lowering,
//!    optimization, scheduling — the same for both tiers) and each backend's code generation
//!    up to callable machine code, the median of `compile_iters` runs each.
//! 2. Run time of the design's shapes (design.md §4) compiled by each tier, measured exactly as
//!    the main table measures tfmc (`bench_tfmc`: seeded inputs, warm-up, median of calls).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use super::table::{fmt_ms, table};
use super::tfmc_side::{bench_tfmc, median};
use super::{BenchOptions, PoolGuard, default_threads, lib_dir, select};
use crate::driver::{CompileOptions, Target, prepare, with_jit};

/// One kernel's compile times, ms (medians).
#[derive(Clone, Debug)]
pub struct CompileTimes {
    /// `file/kernel`.
    pub name: String,
    /// Lowering + optimization + scheduling.
    pub prepare_ms: f64,
    /// LLVM code generation at O3.
    pub llvm_ms: f64,
    /// Cranelift code generation.
    pub cranelift_ms: f64,
}

/// Times the compilation of every kernel in `lib` (see the module docs), `iters` runs each.
pub fn compile_times(lib: &Path, iters: usize) -> Result<Vec<CompileTimes>, String> {
    let mut files: Vec<_> = std::fs::read_dir(lib)
        .map_err(|e| format!("cannot read '{}': {e}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tfm"))
        .collect();
    files.sort();
    let opts = CompileOptions::default();
    let mut out = Vec::new();
    for path in files {
        let program = crate::load(&path).map_err(|d| format!("{}: does not check:\n{d}", path.display()))?;
        let file = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        for k in &program.kernels {
            let name = format!("{file}/{}", k.name);
            let mut prep = Vec::new();
            let mut prepared = None;
            for _ in 0..iters {
                let t = Instant::now();
                prepared = Some(prepare(&program, &k.name, &opts, &Target::host_llvm()).map_err(|e| format!("{name}: {e}"))?);
                prep.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let Some(prepared) = prepared else { continue };
            // Both tiers compile the CPU schedule's KIR, prepared once above.
            let time = |target: Target| -> Result<f64, String> {
                let mut v = Vec::new();
                for _ in 0..iters {
                    let t = Instant::now();
                    with_jit(&target, std::slice::from_ref(&prepared), |_| ()).map_err(|e| format!("{name}: {e}"))?;
                    v.push(t.elapsed().as_secs_f64() * 1e3);
                }
                Ok(median(v))
            };
            let llvm_ms = time(Target::host_llvm())?;
            let cranelift_ms = time(Target::cranelift())?;
            out.push(CompileTimes { name, prepare_ms: median(prep), llvm_ms, cranelift_ms });
        }
    }
    Ok(out)
}

/// Runs both tables and returns the report.
pub fn run_tiers(opts: &BenchOptions, compile_iters: usize) -> Result<String, String> {
    let threads = opts.threads.unwrap_or_else(default_threads);
    if threads == 0 || threads > tfmc_runtime::parallel::MAX_THREADS {
        return Err(format!("--threads must be in 1..={}", tfmc_runtime::parallel::MAX_THREADS));
    }
    let selected = select(opts.shapes.as_deref())?;
    let lib = lib_dir();
    let mut report = String::new();
    let _ =
        writeln!(report, "threads: {threads}; compile times: median of {compile_iters}; run times: median of up to {} calls", opts.iters);

    eprintln!("bench: compile times of every lib kernel ...");
    let times = compile_times(&lib, compile_iters.max(1))?;
    let f = |x: f64| format!("{x:.1}");
    let rows: Vec<Vec<String>> = times
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                f(t.prepare_ms),
                f(t.llvm_ms),
                f(t.cranelift_ms),
                format!("{:.0}x", t.llvm_ms / t.cranelift_ms.max(1e-9)),
                f(t.prepare_ms + t.cranelift_ms),
                format!("{:.1}x", (t.prepare_ms + t.llvm_ms) / (t.prepare_ms + t.cranelift_ms).max(1e-9)),
            ]
        })
        .collect();
    report.push('\n');
    report
        .push_str(&table(&["kernel", "front ms", "llvm O3 ms", "cranelift ms", "codegen speedup", "total cl ms", "total speedup"], &rows));
    let worst = times.iter().map(|t| t.cranelift_ms).fold(0.0, f64::max);
    let min_ratio = times.iter().map(|t| t.llvm_ms / t.cranelift_ms.max(1e-9)).fold(f64::INFINITY, f64::min);
    let _ = writeln!(
        report,
        "front = lowering + egg optimization + schedule (shared by both tiers); codegen = KIR to callable machine code.\n\
         slowest Cranelift codegen: {worst:.1} ms; smallest codegen speedup over LLVM O3: {min_ratio:.0}x"
    );

    let guard = PoolGuard(tfmc_runtime::parallel::num_threads());
    tfmc_runtime::parallel::set_num_threads(threads);
    let mut rows = Vec::new();
    for s in &selected {
        let mut cell = |target: Target| match bench_tfmc(s, opts.iters, &lib, &target) {
            Ok(r) => {
                eprintln!("bench: {}: {} {} ms", s.name, target.name(), fmt_ms(r.median_ms));
                Some(r.median_ms)
            }
            Err(e) => {
                let _ = writeln!(report, "{}: {} failed: {e}", s.name, target.name());
                None
            }
        };
        let l = cell(Target::host_llvm());
        let c = cell(Target::cranelift());
        let dash = || "-".to_string();
        rows.push(vec![
            s.name.to_string(),
            l.map_or_else(dash, fmt_ms),
            c.map_or_else(dash, fmt_ms),
            match (l, c) {
                (Some(l), Some(c)) if l > 0.0 => format!("{:.2}x", c / l),
                _ => dash(),
            },
        ]);
    }
    drop(guard);
    report.push('\n');
    report.push_str(&table(&["shape", "llvm ms", "cranelift ms", "cranelift / llvm"], &rows));
    Ok(report)
}
