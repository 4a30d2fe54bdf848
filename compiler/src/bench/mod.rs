//! `tfmc bench`: the design's benchmark shapes (design.md §4) compiled by tfmc and timed side
//! by side with PyTorch's CPU `scaled_dot_product_attention`, against the machine's measured
//! FMA peak.
//!
//! One [`run`] does, in order:
//! 1. [`measure_peak`]: a timed tight loop of independent FMAs (AVX-512 or AVX2 intrinsics
//!    behind runtime detection, 16 independent accumulators, one loop per thread), giving the
//!    fp32 GFLOP/s the kernels are compared to. Elsewhere a scalar loop gives an estimate.
//!    [`measure_bandwidth`]: memory read bandwidth, the ceiling for decode.
//! 2. For each selected [`Shape`], in the design's order: the `lib/` kernel is loaded,
//!    prepared and JIT-compiled once (compile time reported separately), the inputs are seeded
//!    uniform `[-1, 1)`, one warm-up call, then the median of `iters` calls through the runtime's native call path (fewer
//!    calls when they would take more than [`BUDGET_S`]). Outputs are checked for NaN/inf.
//! 3. PyTorch: `bench/torch_ref.py` (embedded in the binary, run with `python3 -c`, one process
//!    for the whole run) times the same shape right after tfmc, with the same thread count and
//!    iteration rule; see [`TorchMode`].
//! 4. A plain-text table: tfmc ms, torch ms, speedup (torch / tfmc), GFLOP/s, % of peak, GB/s
//!    for decode, compile time.
//!
//! `tfmc bench --tiers` ([`run_tiers`]) compares the two JIT tiers instead: compile time of
//! every `lib/` kernel and run time of the shapes, LLVM O3 against Cranelift.
//!
//! `tfmc bench --variants` ([`run_variants`], `variants.rs`) times every attention-family
//! `lib/` kernel at one shape against the PyTorch-eager form of the same formula, with the plan
//! the schedule chose and GFLOP/s from the optimized cascade's flop estimate; each row's tfmc
//! side runs in a child process (`variant_side.rs`) so that a call over the row's budget is
//! stopped instead of hanging the run.
//!
//! FLOPs are `4·b·h·e·pairs`, where pairs counts exactly the `(p, m)` points the kernel's
//! filter keeps (`p·m` for sdpa and decode, `p(p+1)/2` for causal, the band for window); the
//! softmax's exp and divisions are not counted. Decode bandwidth is K+V bytes per call.
//!
//! Thread count: `--threads N`, else one per available core (2 on the design's reference
//! machine). The tfmc pool (`tfmc_runtime::parallel`), the peak and bandwidth loops and
//! PyTorch all use the same N; the pool size in force before the run is restored afterwards.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

mod machine;
mod table;
mod tfmc_side;
mod tiers;
mod torch;
mod variant_side;
mod variants;

pub use machine::{Peak, measure_bandwidth, measure_peak};
use table::*;
pub use tfmc_side::{TfmcResult, bench_tfmc};
pub use tiers::{CompileTimes, compile_times, run_tiers};
pub use torch::TorchResult;
use torch::*;
pub use variant_side::child_main as variant_child_main;
pub use variants::{NOT_TIMED, VARIANTS, Variant, VariantDims, VariantOptions, run_variants, short_plan};

/// Wall-clock budget for the timed calls of one shape (per side), in seconds: the number of
/// calls is cut so that `calls × warm-up time` stays within it (at least one call).
pub const BUDGET_S: f64 = 10.0;

/// Threads used when `--threads` is not given: one per available core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(tfmc_runtime::parallel::MAX_THREADS)
}

/// The PyTorch reference script (also usable by hand: `python3 bench/torch_ref.py --example`).
pub(super) const TORCH_SCRIPT: &str = include_str!("../../../bench/torch_ref.py");

/// Seed of the random inputs (tfmc and PyTorch draw their own, from the same seed).
pub(super) const SEED: u64 = 0x7f3c;

/// What to do about the PyTorch reference column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TorchMode {
    /// Run it if `python3 -c 'import torch'` works, else say how to install it and skip it.
    #[default]
    Auto,
    /// Do not run it.
    Skip,
    /// Install PyTorch with pip (CPU wheel index first, then the default index), then run it.
    Install,
}

/// Options of one benchmark run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Shape names to run (see [`shapes`]); `None`: all of them.
    pub shapes: Option<Vec<String>>,
    /// Timed calls per shape (after one warm-up), cut to fit [`BUDGET_S`].
    pub iters: usize,
    /// The PyTorch reference column.
    pub torch: TorchMode,
    /// Threads for tfmc, PyTorch and the peak loop; `None`: [`default_threads`].
    pub threads: Option<usize>,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions { shapes: None, iters: 5, torch: TorchMode::Auto, threads: None }
    }
}

/// Which attention a shape runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Non-causal softmax attention (`lib/sdpa.tfm`).
    Sdpa,
    /// Causal softmax attention, `m <= p` (`lib/causal.tfm`).
    Causal,
    /// Causal sliding window, `m <= p && p - m < W` (`lib/window.tfm`).
    Window,
    /// One query row against a long KV cache: sdpa with `p = 1`.
    Decode,
    /// Causal linear attention, elu+1 feature map, quadratic form (`lib/linear.tfm`).
    Linear,
    /// Grouped-query attention, 4 query heads per key/value head (`lib/gqa.tfm`).
    Gqa,
    /// Causal attention with ALiBi biases (`lib/alibi.tfm`).
    Alibi,
    /// Soft-capped logits, cap 30 (`lib/softcap.tfm`).
    Softcap,
    /// One decode step per sequence over a paged KV cache (`lib/paged.tfm`): `b` sequences of
    /// `m` tokens in shuffled pages of [`PAGE`] tokens, 4 query heads per kv head.
    Paged,
}

/// Tokens per page of [`Kind::Paged`] (vLLM's default block size).
pub const PAGE: usize = 16;

impl Kind {
    /// The `lib/` file and kernel name.
    pub fn kernel(self) -> (&'static str, &'static str) {
        match self {
            Kind::Sdpa | Kind::Decode => ("sdpa.tfm", "sdpa"),
            Kind::Causal => ("causal.tfm", "causal"),
            Kind::Window => ("window.tfm", "window"),
            Kind::Linear => ("linear.tfm", "linear_causal"),
            Kind::Gqa => ("gqa.tfm", "gqa"),
            Kind::Alibi => ("alibi.tfm", "alibi"),
            Kind::Softcap => ("softcap.tfm", "softcap"),
            Kind::Paged => ("paged.tfm", "paged_decode"),
        }
    }

    /// The name `bench/torch_ref.py` knows it by.
    fn torch_name(self) -> &'static str {
        match self {
            Kind::Sdpa => "sdpa",
            Kind::Causal => "causal",
            Kind::Window => "window",
            Kind::Decode => "decode",
            Kind::Linear => "linear",
            Kind::Gqa => "gqa",
            Kind::Alibi => "alibi",
            Kind::Softcap => "softcap",
            Kind::Paged => "paged",
        }
    }
}

/// One benchmark shape: fp32 `Q[b, h, p, e]`, `K[b, h, m, e]`, `V[b, h, m, e]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Its name in design.md §4.
    pub name: &'static str,
    /// The attention it runs.
    pub kind: Kind,
    /// Batch.
    pub b: usize,
    /// Heads.
    pub h: usize,
    /// Query length.
    pub p: usize,
    /// Key length.
    pub m: usize,
    /// Head dim (of Q/K and of V).
    pub e: usize,
    /// Window size (the `W` param) for [`Kind::Window`], else 0.
    pub w: usize,
}

impl Shape {
    /// The `(p, m)` pairs the kernel's filter keeps, per batch and head.
    pub fn pairs(&self) -> u64 {
        let (p, m, w) = (self.p as u64, self.m as u64, self.w as u64);
        match self.kind {
            Kind::Sdpa | Kind::Decode | Kind::Gqa | Kind::Softcap | Kind::Paged => p * m,
            // Query row r sees keys 0..=min(r, m-1).
            Kind::Causal | Kind::Linear | Kind::Alibi => (0..p).map(|r| (r + 1).min(m)).sum(),
            // Keys r-w+1 ..= r, clipped to 0..m.
            Kind::Window => (0..p)
                .map(|r| {
                    let hi = r.min(m.saturating_sub(1));
                    let lo = (r + 1).saturating_sub(w);
                    if m == 0 || lo > hi { 0 } else { hi - lo + 1 }
                })
                .sum(),
        }
    }

    /// FLOPs of one call: `4·b·h·e·pairs` (Q·K and N·V, two FLOPs per multiply-add).
    pub fn flops(&self) -> f64 {
        4.0 * (self.b * self.h * self.e) as f64 * self.pairs() as f64
    }

    /// Key/value heads: `h / 4` for grouped-query attention (and the paged cache), else `h`.
    pub fn kv_heads(&self) -> usize {
        if matches!(self.kind, Kind::Gqa | Kind::Paged) { (self.h / 4).max(1) } else { self.h }
    }

    /// Bytes of K and V (what decode must stream once per call).
    pub fn kv_bytes(&self) -> f64 {
        2.0 * (self.b * self.kv_heads() * self.m * self.e * 4) as f64
    }
}

/// The benchmark shapes of design.md §4, in order.
pub fn shapes() -> Vec<Shape> {
    let s = |name, kind, b, h, p, m, e, w| Shape { name, kind, b, h, p, m, e, w };
    vec![
        s("sdpa-512", Kind::Sdpa, 1, 8, 512, 512, 64, 0),
        s("sdpa-1k", Kind::Sdpa, 1, 8, 1024, 1024, 64, 0),
        s("sdpa-4k", Kind::Sdpa, 1, 8, 4096, 4096, 64, 0),
        s("batch", Kind::Sdpa, 4, 16, 256, 256, 64, 0),
        s("causal-1k", Kind::Causal, 1, 8, 1024, 1024, 64, 0),
        s("causal-4k", Kind::Causal, 1, 8, 4096, 4096, 64, 0),
        s("window-4k", Kind::Window, 1, 8, 4096, 4096, 64, 256),
        s("decode-4k", Kind::Decode, 1, 32, 1, 4096, 128, 0),
        s("decode-32k", Kind::Decode, 1, 32, 1, 32768, 128, 0),
        s("paged-4k", Kind::Paged, 4, 32, 1, 4096, 128, 0),
        s("linear-4k", Kind::Linear, 1, 8, 4096, 4096, 64, 0),
        s("sdpa-1k-e80", Kind::Sdpa, 1, 8, 1024, 1024, 80, 0),
        s("sdpa-1k-e128", Kind::Sdpa, 1, 8, 1024, 1024, 128, 0),
        s("sdpa-1k-e256", Kind::Sdpa, 1, 8, 1024, 1024, 256, 0),
        s("gqa-1k", Kind::Gqa, 1, 16, 1024, 1024, 64, 0),
        s("alibi-1k", Kind::Alibi, 1, 8, 1024, 1024, 64, 0),
        s("softcap-1k", Kind::Softcap, 1, 8, 1024, 1024, 64, 0),
    ]
}

/// The directory of the `.tfm` standard library: `$TFMC_LIB`, else `lib/` in the current
/// directory, else `lib/` beside this crate (`CARGO_MANIFEST_DIR/../lib`).
pub fn lib_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TFMC_LIB").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let here = PathBuf::from("lib");
    if here.join("sdpa.tfm").is_file() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("lib")
}

/// The selected shapes, in the design's order; unknown names are an error.
fn select(names: Option<&[String]>) -> Result<Vec<Shape>, String> {
    let all = shapes();
    let Some(names) = names else { return Ok(all) };
    let known: Vec<&str> = all.iter().map(|s| s.name).collect();
    for n in names {
        if !known.contains(&n.as_str()) {
            return Err(format!("unknown shape '{n}'; shapes: {}", known.join(", ")));
        }
    }
    let picked: Vec<Shape> = all.into_iter().filter(|s| names.iter().any(|n| n == s.name)).collect();
    if picked.is_empty() {
        return Err(format!("no shapes selected; shapes: {}", known.join(", ")));
    }
    Ok(picked)
}

/// Restores the tfmc pool size when dropped.
struct PoolGuard(usize);

impl Drop for PoolGuard {
    fn drop(&mut self) {
        tfmc_runtime::parallel::set_num_threads(self.0);
    }
}

/// Runs the benchmark (see the module docs) and returns the report: peak, PyTorch status,
/// the table and any warnings. Progress goes to stderr as shapes finish.
pub fn run(opts: &BenchOptions) -> Result<String, String> {
    if opts.iters == 0 {
        return Err("--iters must be at least 1".to_string());
    }
    let threads = opts.threads.unwrap_or_else(default_threads);
    if threads == 0 || threads > tfmc_runtime::parallel::MAX_THREADS {
        return Err(format!("--threads must be in 1..={}", tfmc_runtime::parallel::MAX_THREADS));
    }
    let selected = select(opts.shapes.as_deref())?;
    let lib = lib_dir();
    if !lib.join("sdpa.tfm").is_file() {
        return Err(format!("cannot find the .tfm library at '{}' (set TFMC_LIB to the lib/ directory)", lib.display()));
    }
    let mut report = String::new();
    let mut notes: Vec<String> = Vec::new();

    let peak = measure_peak(threads);
    let nthreads = if threads == 1 { "1 thread".to_string() } else { format!("{threads} threads") };
    let _ = writeln!(report, "threads: {threads}");
    let _ = writeln!(report, "FMA peak ({}, {nthreads}): {:.0} GFLOP/s", peak.method, peak.gflops);
    eprintln!("bench: FMA peak ({}, {nthreads}): {:.0} GFLOP/s", peak.method, peak.gflops);
    if let Some(bw) = measure_bandwidth(threads) {
        let _ = writeln!(report, "memory read bandwidth ({nthreads}): {bw:.1} GB/s");
        eprintln!("bench: memory read bandwidth ({nthreads}): {bw:.1} GB/s");
    }

    let mut torch = match opts.torch {
        TorchMode::Skip => {
            let _ = writeln!(report, "PyTorch: skipped (--torch skip)");
            None
        }
        TorchMode::Auto if !torch_available() => {
            let msg = "PyTorch not installed: reference column skipped (tfmc bench --torch install installs it)";
            let _ = writeln!(report, "{msg}");
            eprintln!("bench: {msg}");
            None
        }
        TorchMode::Auto | TorchMode::Install => {
            if opts.torch == TorchMode::Install && !torch_available() {
                install_torch()?;
                if !torch_available() {
                    return Err("torch was installed but `python3 -c 'import torch'` still fails".to_string());
                }
            }
            TorchSession::start_reported(&mut report, opts.iters, threads, |v| {
                format!("PyTorch: {v}, fp32, {nthreads}, scaled_dot_product_attention (linear: cumsum form)")
            })
        }
    };

    // Per shape: tfmc, then PyTorch (one process for all shapes), so that both sides are
    // timed close together under the same machine load but never at the same time.
    let guard = PoolGuard(tfmc_runtime::parallel::num_threads());
    tfmc_runtime::parallel::set_num_threads(threads);
    let mut tfmc: BTreeMap<&str, TfmcResult> = BTreeMap::new();
    let mut reference: BTreeMap<&str, TorchResult> = BTreeMap::new();
    for s in &selected {
        match bench_tfmc(s, opts.iters, &lib, &crate::driver::Target::host_llvm()) {
            Ok(r) => {
                eprintln!("bench: {}: tfmc {} ms (median of {}, compile {:.2} s)", s.name, fmt_ms(r.median_ms), r.iters, r.compile_s);
                if r.non_finite {
                    notes.push(format!("warning: {}: the tfmc output holds NaN or infinity on random inputs", s.name));
                }
                tfmc.insert(s.name, r);
            }
            Err(e) => {
                eprintln!("bench: {}: tfmc failed: {e}", s.name);
                notes.push(format!("{}: tfmc failed: {e}", s.name));
            }
        }
        let Some(session) = torch.as_mut() else {
            continue;
        };
        match session.bench(s) {
            Ok(TorchOutcome::Ok(r)) => {
                eprintln!("bench: {}: torch {} ms (median of {})", s.name, fmt_ms(r.median_ms), r.iters);
                reference.insert(s.name, r);
            }
            Ok(TorchOutcome::Failed(e)) => notes.push(format!("{}: PyTorch failed: {e}", s.name)),
            Err(e) => {
                notes.push(format!("PyTorch reference stopped at {}: {e}", s.name));
                torch = None;
            }
        }
    }
    drop(guard);
    drop(torch);

    let header = ["shape", "tfmc ms", "torch ms", "speedup", "GFLOP/s", "% peak", "GB/s", "compile s", "iters"];
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = selected
        .iter()
        .map(|s| {
            let t = tfmc.get(s.name);
            let r = reference.get(s.name);
            let gflops = t.map(|t| s.flops() / (t.median_ms * 1e-3) / 1e9);
            let iters = match (t, r) {
                (Some(t), Some(r)) => format!("{}/{}", t.iters, r.iters),
                (Some(t), None) => t.iters.to_string(),
                (None, Some(r)) => format!("-/{}", r.iters),
                (None, None) => dash(),
            };
            vec![
                s.name.to_string(),
                t.map_or_else(dash, |t| fmt_ms(t.median_ms)),
                r.map_or_else(dash, |r| fmt_ms(r.median_ms)),
                match (t, r) {
                    (Some(t), Some(r)) if t.median_ms > 0.0 => {
                        format!("{:.2}x", r.median_ms / t.median_ms)
                    }
                    _ => dash(),
                },
                gflops.map_or_else(dash, |g| format!("{g:.1}")),
                gflops.filter(|_| peak.gflops > 0.0).map_or_else(dash, |g| format!("{:.1}%", 100.0 * g / peak.gflops)),
                match (s.kind, t) {
                    (Kind::Decode | Kind::Paged, Some(t)) => {
                        format!("{:.1}", s.kv_bytes() / (t.median_ms * 1e-3) / 1e9)
                    }
                    _ => dash(),
                },
                t.map_or_else(dash, |t| format!("{:.2}", t.compile_s)),
                iters,
            ]
        })
        .collect();
    report.push('\n');
    report.push_str(&table(&header, &rows));
    report.push_str(
        "\nspeedup = torch ms / tfmc ms; GFLOP/s = 4·b·h·e·(unmasked (p, m) pairs) / tfmc time; \
         GB/s (decode) = K+V bytes / tfmc time; iters = timed calls tfmc/torch (median reported)\n",
    );
    for n in &notes {
        let _ = writeln!(report, "{n}");
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
