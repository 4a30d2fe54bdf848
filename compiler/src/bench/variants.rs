//! `tfmc bench --variants`: every attention-family kernel of `lib/` at one shape (B=1, H=4,
//! P=M=1024, E=F=64 unless `--dims` says otherwise), tfmc against the PyTorch-eager form of the
//! same formula (`bench/torch_ref.py`, kinds `v_*`), row by row in one torch process.
//!
//! Columns: the variant, the plan the CPU schedule chose (short form; the full plan lines are
//! listed under the table), tfmc ms, torch ms, the ratio torch / tfmc (> 1: tfmc faster),
//! GFLOP/s from the optimized cascade's flop estimate at the row's shape (`tfmc explain`'s
//! "after"), and that as a percentage of sdpa's GFLOP/s in the same run.
//!
//! Each row's tfmc side runs in a child process ([`super::variant_side`]): compile, one warm-up
//! call, then timed calls within `budget_s`; a warm-up call that exceeds the budget is stopped
//! (the child is killed) and the row says `> budget`, so a variant that is very slow today does
//! not hang the run. Kernels that are not timed are listed with the reason ([`NOT_TIMED`]).

use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::table::{fmt_ms, table_aligned};
use super::torch::{JsonScalar, TorchOutcome, TorchSession, parse_flat_object, torch_available};
use super::variant_side::{Step, measure};
use super::{PoolGuard, TorchMode, default_threads, lib_dir};

/// The sizes of a variants run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VariantDims {
    /// Batch.
    pub b: usize,
    /// Query heads (grouped-query rows use `H / 4` kv heads).
    pub h: usize,
    /// Query length.
    pub p: usize,
    /// Key length.
    pub m: usize,
    /// Head dim of Q and K.
    pub e: usize,
    /// Head dim of V.
    pub f: usize,
}

impl Default for VariantDims {
    fn default() -> VariantDims {
        VariantDims { b: 1, h: 4, p: 1024, m: 1024, e: 64, f: 64 }
    }
}

/// One row: a `lib/` kernel and the `bench/torch_ref.py` kind computing the same formula.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    /// Row name.
    pub name: &'static str,
    /// The `lib/` file.
    pub file: &'static str,
    /// The kernel in it.
    pub kernel: &'static str,
    /// The torch kind.
    pub torch: &'static str,
}

const fn v(name: &'static str, file: &'static str, kernel: &'static str, torch: &'static str) -> Variant {
    Variant { name, file, kernel, torch }
}

/// The timed rows, sdpa first (its GFLOP/s is the yardstick).
pub const VARIANTS: &[Variant] = &[
    v("sdpa", "sdpa.tfm", "sdpa", "v_sdpa"),
    v("causal", "causal.tfm", "causal", "v_causal"),
    v("window", "window.tfm", "window", "v_window"),
    v("alibi", "alibi.tfm", "alibi", "v_alibi"),
    v("softcap", "softcap.tfm", "softcap", "v_softcap"),
    v("gqa", "gqa.tfm", "gqa", "v_gqa"),
    v("mqa", "gqa.tfm", "mqa", "v_mqa"),
    v("l2", "l2.tfm", "l2_attention", "v_l2"),
    v("linear", "linear.tfm", "linear", "v_linear"),
    v("linear_causal", "linear.tfm", "linear_causal", "v_linear_causal"),
    v("retnet", "retnet.tfm", "retention_parallel", "v_retnet"),
    v("sigmoid", "sigmoid.tfm", "sigmoid_attention", "v_sigmoid"),
    v("sigmoid_causal", "sigmoid.tfm", "sigmoid_causal", "v_sigmoid_causal"),
    v("diff", "diff.tfm", "diff_attention", "v_diff"),
    v("softmax_one", "quiet.tfm", "softmax_one", "v_softmax_one"),
    v("sink_causal", "quiet.tfm", "sink_causal", "v_sink_causal"),
    v("sink_window", "quiet.tfm", "sink_window", "v_sink_window"),
    v("flow", "flow.tfm", "flow_attention", "v_flow"),
    v("graph", "graph.tfm", "graph_attention", "v_graph"),
    v("pattention", "tokenformer.tfm", "pattention", "v_pattention"),
    v("stick", "stick.tfm", "stick_breaking", "v_stick"),
];

/// The `lib/` kernels without a row, and why.
pub const NOT_TIMED: &[(&str, &str)] = &[
    ("linear_causal_scan", "recurrent form of linear_causal (same function)"),
    ("retention_recurrent", "recurrent form of retnet (same function)"),
    ("varlen_causal", "packed sequences with offsets (causal inside each)"),
    ("paged_decode", "decode over a paged KV cache: the standard table's paged-4k row"),
    ("sdpa_bf16", "bf16/f16 inputs; this table is fp32"),
    ("causal_bf16", "bf16/f16 inputs; this table is fp32"),
    ("sdpa_f16", "bf16/f16 inputs; this table is fp32"),
    ("selective_scan", "Mamba's state-space scan, not attention"),
    ("rmsnorm", "a model block, not attention"),
    ("block", "a model block (calls causal), not one attention"),
];

/// Options of a variants run.
#[derive(Clone, Debug)]
pub struct VariantOptions {
    /// Row names to run; `None`: all of [`VARIANTS`].
    pub only: Option<Vec<String>>,
    /// The sizes.
    pub dims: VariantDims,
    /// Timed calls per row (after one warm-up), cut to fit `budget_s`.
    pub iters: usize,
    /// Seconds per row and side: a warm-up call above it is stopped and the row not timed.
    pub budget_s: f64,
    /// The PyTorch column.
    pub torch: TorchMode,
    /// Threads for both sides; `None`: [`default_threads`].
    pub threads: Option<usize>,
    /// The `tfmc` executable to run each row in (`tfmc bench --variant-child`); `None`: in this
    /// process, without a way to stop a slow call.
    pub exe: Option<PathBuf>,
}

/// What one row's tfmc side gave.
#[derive(Clone, Debug, Default)]
struct Row {
    plan: Vec<String>,
    flops: Option<f64>,
    compile_s: Option<f64>,
    warm_ms: Option<f64>,
    median_ms: Option<f64>,
    iters: usize,
    note: Option<String>,
}

impl Row {
    fn apply(&mut self, s: Step) {
        match s {
            Step::Compiled { seconds, plan, flops } => {
                self.compile_s = Some(seconds);
                self.plan = plan;
                self.flops = Some(flops);
            }
            Step::Warm(ms) => self.warm_ms = Some(ms),
            Step::Timed { median_ms, iters, non_finite } => {
                self.median_ms = Some(median_ms);
                self.iters = iters;
                if non_finite {
                    self.note = Some("NaN or infinity in the output".to_string());
                }
            }
        }
    }
}

/// A row's PyTorch side: median ms and calls, or the error.
type TorchTiming = Result<(f64, usize), String>;

/// Parses a child's line into a step (`Err` for an `{"error": ...}` line).
pub(super) fn parse_step(obj: &std::collections::BTreeMap<String, JsonScalar>) -> Option<Result<Step, String>> {
    let num = |k: &str| match obj.get(k) {
        Some(JsonScalar::Num(x)) => Some(*x),
        _ => None,
    };
    if let Some(JsonScalar::Str(e)) = obj.get("error") {
        return Some(Err(e.clone()));
    }
    if let (Some(seconds), Some(JsonScalar::Str(plan))) = (num("compiled"), obj.get("plan")) {
        let plan = plan.lines().map(str::to_string).collect();
        return Some(Ok(Step::Compiled { seconds, plan, flops: num("flops").unwrap_or(0.0) }));
    }
    if let Some(ms) = num("warm_ms") {
        return Some(Ok(Step::Warm(ms)));
    }
    let median_ms = num("median_ms")?;
    let non_finite = matches!(obj.get("non_finite"), Some(JsonScalar::Bool(true)));
    Some(Ok(Step::Timed { median_ms, iters: num("iters").unwrap_or(0.0) as usize, non_finite }))
}

/// Runs one row's tfmc side in a child process, stopping it when a step overruns.
fn run_child(exe: &Path, v: &Variant, o: &VariantOptions, threads: usize) -> Row {
    let d = o.dims;
    let mut row = Row::default();
    let dims = format!("B={},H={},P={},M={},E={},F={}", d.b, d.h, d.p, d.m, d.e, d.f);
    let spawned = Command::new(exe)
        .args(["bench", "--variant-child", v.name, "--dims", &dims, "--iters", &o.iters.to_string()])
        .args(["--budget-s", &o.budget_s.to_string(), "--threads", &threads.to_string()])
        .env("TFMC_LIB", lib_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            row.note = Some(format!("cannot start {}: {e}", exe.display()));
            return row;
        }
    };
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        row.note = Some("no pipe to the child".to_string());
        return row;
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Compiling may take a while; a call gets the budget; the timed calls fit in it (plus slack).
    let budget = Duration::from_secs_f64(o.budget_s.max(0.001));
    let mut deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => match parse_flat_object(&line).as_ref().and_then(parse_step) {
                Some(Ok(step)) => {
                    let done = matches!(step, Step::Timed { .. });
                    let over = matches!(step, Step::Warm(ms) if ms > o.budget_s * 1e3);
                    row.apply(step);
                    if done || over {
                        if over {
                            row.note = Some(format!("> budget: one call took {:.1} s", row.warm_ms.unwrap_or(0.0) / 1e3));
                        }
                        break;
                    }
                    deadline = Instant::now() + if row.warm_ms.is_some() { 2 * budget + Duration::from_secs(5) } else { budget };
                }
                Some(Err(e)) => {
                    row.note = Some(e);
                    break;
                }
                None => {}
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                row.note = Some(match (row.compile_s, row.warm_ms) {
                    (None, _) => "> budget: compiling took over 300 s".to_string(),
                    (Some(_), None) => format!("> budget: one call took over {} s (stopped)", o.budget_s),
                    (Some(_), Some(_)) => "> budget: the timed calls overran (stopped)".to_string(),
                });
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if row.median_ms.is_none() && row.note.is_none() {
                    row.note = Some("the child exited without a result".to_string());
                }
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    row
}

/// One row's tfmc side in this process.
fn run_here(v: &Variant, o: &VariantOptions) -> Row {
    let mut row = Row::default();
    if let Err(e) = measure(v, &o.dims, o.iters, o.budget_s, &lib_dir(), &mut |s| row.apply(s)) {
        row.note = Some(e);
    }
    if row.median_ms.is_none() && row.note.is_none() && row.warm_ms.is_some() {
        row.note = Some(format!("> budget: one call took {:.1} s", row.warm_ms.unwrap_or(0.0) / 1e3));
    }
    row
}

/// A short name for a plan: per line, `scan` for a sequential scan, `generic` for the
/// row-parallel loop nest (`parallel (b, h, p), inner loop f`), else the description up to its
/// first `(`, `:` or `,`; deduplicated, joined by ` + `.
pub fn short_plan(plan: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for line in plan {
        let desc = line.split_once(": ").map_or(line.as_str(), |(_, d)| d);
        let cut = desc.find(['(', ':', ',']).unwrap_or(desc.len());
        let short = if desc.contains("sequential scan") {
            "scan".to_string()
        } else if desc.starts_with("parallel (") {
            "generic".to_string()
        } else {
            desc[..cut].trim().to_string()
        };
        if !short.is_empty() && !parts.contains(&short) {
            parts.push(short);
        }
    }
    parts.join(" + ")
}

/// Runs the variants benchmark and returns its report.
pub fn run_variants(o: &VariantOptions) -> Result<String, String> {
    if o.iters == 0 {
        return Err("--iters must be at least 1".to_string());
    }
    if o.budget_s.is_nan() || o.budget_s <= 0.0 {
        return Err("--budget-s must be positive".to_string());
    }
    let d = o.dims;
    if [d.b, d.h, d.p, d.m, d.e, d.f].contains(&0) {
        return Err("every dim of a variants run must be at least 1".to_string());
    }
    let threads = o.threads.unwrap_or_else(default_threads);
    if threads == 0 || threads > tfmc_runtime::parallel::MAX_THREADS {
        return Err(format!("--threads must be in 1..={}", tfmc_runtime::parallel::MAX_THREADS));
    }
    let rows: Vec<&Variant> = match &o.only {
        None => VARIANTS.iter().collect(),
        Some(names) => {
            let known: Vec<&str> = VARIANTS.iter().map(|v| v.name).collect();
            if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
                return Err(format!("unknown variant '{bad}'; variants: {}", known.join(", ")));
            }
            VARIANTS.iter().filter(|v| names.iter().any(|n| n == v.name)).collect()
        }
    };
    let mut report = String::new();
    let _ = writeln!(
        report,
        "variants: B={} H={} P={} M={} E={} F={}, fp32, {threads} threads, budget {} s a row",
        d.b, d.h, d.p, d.m, d.e, d.f, o.budget_s
    );
    let mut torch = match o.torch {
        TorchMode::Skip => {
            let _ = writeln!(report, "PyTorch: skipped (--torch skip)");
            None
        }
        _ if !torch_available() => {
            let _ = writeln!(report, "PyTorch not installed: reference column skipped");
            None
        }
        _ => TorchSession::start_reported(&mut report, o.iters, threads, |v| {
            format!("PyTorch: {v}, eager ops (the same formula as each lib kernel)")
        }),
    };
    let guard = PoolGuard(tfmc_runtime::parallel::num_threads());
    tfmc_runtime::parallel::set_num_threads(threads);
    let mut results: Vec<(Row, Option<TorchTiming>)> = Vec::new();
    for v in &rows {
        let row = match &o.exe {
            Some(exe) => run_child(exe, v, o, threads),
            None => run_here(v, o),
        };
        eprintln!(
            "bench: {}: tfmc {}",
            v.name,
            row.median_ms.map_or_else(|| row.note.clone().unwrap_or_default(), |ms| format!("{} ms", fmt_ms(ms)))
        );
        let reference = torch.as_mut().map(|t| {
            let item = format!(
                "{{\"name\": \"{}\", \"kind\": \"{}\", \"b\": {}, \"h\": {}, \"p\": {}, \"m\": {}, \"e\": {}, \"f\": {}, \"w\": 0}}",
                v.name, v.torch, d.b, d.h, d.p, d.m, d.e, d.f
            );
            match t.bench_item(v.name, &item, o.budget_s) {
                Ok(TorchOutcome::Ok(r)) => Ok((r.median_ms, r.iters)),
                Ok(TorchOutcome::Failed(e)) => Err(e),
                Err(e) => Err(e),
            }
        });
        if let Some(Ok((ms, _))) = &reference {
            eprintln!("bench: {}: torch {} ms", v.name, fmt_ms(*ms));
        }
        results.push((row, reference));
    }
    drop(guard);
    drop(torch);

    let gflops = |r: &Row| match (r.flops, r.median_ms) {
        (Some(f), Some(ms)) if ms > 0.0 => Some(f / (ms * 1e-3) / 1e9),
        _ => None,
    };
    let sdpa = rows.iter().zip(&results).find(|(v, _)| v.name == "sdpa").and_then(|(_, (r, _))| gflops(r));
    let dash = || "-".to_string();
    let header = ["variant", "plan", "tfmc ms", "torch ms", "torch/tfmc", "GFLOP/s", "% sdpa", "compile s", "note"];
    let mut lines: Vec<Vec<String>> = rows
        .iter()
        .zip(&results)
        .map(|(v, (r, t))| {
            let torch_ms = t.as_ref().and_then(|t| t.as_ref().ok()).map(|&(ms, _)| ms);
            let g = gflops(r);
            let mut note = r.note.clone().unwrap_or_default();
            if let Some(Err(e)) = t {
                note = if note.is_empty() { format!("torch: {e}") } else { format!("{note}; torch: {e}") };
            }
            vec![
                v.name.to_string(),
                if r.plan.is_empty() { dash() } else { short_plan(&r.plan) },
                r.median_ms.map_or_else(dash, fmt_ms),
                torch_ms.map_or_else(dash, fmt_ms),
                match (r.median_ms, torch_ms) {
                    (Some(a), Some(b)) if a > 0.0 => format!("{:.2}x", b / a),
                    _ => dash(),
                },
                g.map_or_else(dash, |g| format!("{g:.1}")),
                match (g, sdpa) {
                    (Some(g), Some(s)) if s > 0.0 => format!("{:.0}%", 100.0 * g / s),
                    _ => dash(),
                },
                r.compile_s.map_or_else(dash, |s| format!("{s:.2}")),
                note,
            ]
        })
        .collect();
    for (kernel, why) in NOT_TIMED {
        let mut l = vec![kernel.to_string()];
        l.extend(std::iter::repeat_n(dash(), header.len() - 2));
        l.push(format!("not timed: {why}"));
        lines.push(l);
    }
    report.push('\n');
    report.push_str(&table_aligned(&header, &lines, &[0, 1, header.len() - 1]));
    let _ = writeln!(
        report,
        "\ntorch/tfmc > 1: tfmc faster; GFLOP/s = the optimized cascade's flop estimate at this shape / tfmc time; \
         % sdpa = of sdpa's GFLOP/s in this run{}",
        sdpa.map_or_else(String::new, |s| format!(" (sdpa: {s:.1} GFLOP/s, 50% = {:.1})", s / 2.0))
    );
    report.push_str("\nplans (CPU schedule):\n");
    for (v, (r, _)) in rows.iter().zip(&results) {
        if !r.plan.is_empty() {
            let _ = writeln!(report, "  {}: {}", v.name, r.plan.join("; "));
        }
    }
    Ok(report)
}
