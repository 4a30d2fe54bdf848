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
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tfmc_runtime::call::{alloc_outputs, bind_dims, call_native};
use tfmc_runtime::native::NativeTensor;
use tfmc_runtime::{DType, Scalar};

use crate::backend::llvm::{Export, with_jit};
use crate::compile::{CompileOptions, prepare};

/// Wall-clock budget for the timed calls of one shape (per side), in seconds: the number of
/// calls is cut so that `calls × warm-up time` stays within it (at least one call).
pub const BUDGET_S: f64 = 10.0;

/// Threads used when `--threads` is not given: one per available core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(tfmc_runtime::parallel::MAX_THREADS)
}

/// The PyTorch reference script (also usable by hand: `python3 bench/torch_ref.py --example`).
const TORCH_SCRIPT: &str = include_str!("../../bench/torch_ref.py");

/// Seed of the random inputs (tfmc and PyTorch draw their own, from the same seed).
const SEED: u64 = 0x7f3c;

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
        BenchOptions {
            shapes: None,
            iters: 5,
            torch: TorchMode::Auto,
            threads: None,
        }
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
}

impl Kind {
    /// The `lib/` file and kernel name.
    pub fn kernel(self) -> (&'static str, &'static str) {
        match self {
            Kind::Sdpa | Kind::Decode => ("sdpa.tfm", "sdpa"),
            Kind::Causal => ("causal.tfm", "causal"),
            Kind::Window => ("window.tfm", "window"),
            Kind::Linear => ("linear.tfm", "linear_causal"),
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
            Kind::Sdpa | Kind::Decode => p * m,
            // Query row r sees keys 0..=min(r, m-1).
            Kind::Causal | Kind::Linear => (0..p).map(|r| (r + 1).min(m)).sum(),
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

    /// Bytes of K and V (what decode must stream once per call).
    pub fn kv_bytes(&self) -> f64 {
        2.0 * (self.b * self.h * self.m * self.e * 4) as f64
    }
}

/// The benchmark shapes of design.md §4, in order.
pub fn shapes() -> Vec<Shape> {
    let s = |name, kind, b, h, p, m, e, w| Shape {
        name,
        kind,
        b,
        h,
        p,
        m,
        e,
        w,
    };
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
        s("linear-4k", Kind::Linear, 1, 8, 4096, 4096, 64, 0),
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

/// The measured FMA peak.
#[derive(Clone, Debug)]
pub struct Peak {
    /// fp32 GFLOP/s over all threads.
    pub gflops: f64,
    /// How it was measured (`AVX-512`, `AVX2`, `scalar estimate`).
    pub method: &'static str,
    /// Threads used.
    pub threads: usize,
}

#[cfg(target_arch = "x86_64")]
mod fma {
    //! Tight loops of 16 independent FMA chains (`acc = acc * a + b`, converging to
    //! `b / (1 - a)`, so values stay normal), enough to cover FMA latency × ports.
    use std::arch::x86_64::*;

    macro_rules! fma_loop {
        ($name:ident, $feat:literal, $ty:ty, $set1:ident, $fmadd:ident, $add:ident, $store:ident, $lanes:expr) => {
            /// Runs `iters` rounds of 16 independent vector FMAs; returns a sum of the
            /// accumulators (so the loop cannot be removed).
            #[target_feature(enable = $feat)]
            pub fn $name(iters: u64) -> f32 {
                let a = $set1(0.999_999);
                let b = $set1(1e-7);
                let (mut x0, mut x1, mut x2, mut x3) =
                    ($set1(1.0), $set1(1.1), $set1(1.2), $set1(1.3));
                let (mut x4, mut x5, mut x6, mut x7) =
                    ($set1(1.4), $set1(1.5), $set1(1.6), $set1(1.7));
                let (mut x8, mut x9, mut x10, mut x11) =
                    ($set1(1.8), $set1(1.9), $set1(2.0), $set1(2.1));
                let (mut x12, mut x13, mut x14, mut x15) =
                    ($set1(2.2), $set1(2.3), $set1(2.4), $set1(2.5));
                for _ in 0..iters {
                    x0 = $fmadd(x0, a, b);
                    x1 = $fmadd(x1, a, b);
                    x2 = $fmadd(x2, a, b);
                    x3 = $fmadd(x3, a, b);
                    x4 = $fmadd(x4, a, b);
                    x5 = $fmadd(x5, a, b);
                    x6 = $fmadd(x6, a, b);
                    x7 = $fmadd(x7, a, b);
                    x8 = $fmadd(x8, a, b);
                    x9 = $fmadd(x9, a, b);
                    x10 = $fmadd(x10, a, b);
                    x11 = $fmadd(x11, a, b);
                    x12 = $fmadd(x12, a, b);
                    x13 = $fmadd(x13, a, b);
                    x14 = $fmadd(x14, a, b);
                    x15 = $fmadd(x15, a, b);
                }
                let s = $add(
                    $add($add(x0, x1), $add(x2, x3)),
                    $add($add(x4, x5), $add(x6, x7)),
                );
                let t = $add(
                    $add($add(x8, x9), $add(x10, x11)),
                    $add($add(x12, x13), $add(x14, x15)),
                );
                let mut out = [0f32; $lanes];
                // SAFETY: `out` holds exactly one vector of f32 lanes; unaligned store.
                unsafe { $store(out.as_mut_ptr(), $add(s, t)) };
                out.iter().sum()
            }
        };
    }

    fma_loop!(
        avx512,
        "avx512f",
        __m512,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps,
        _mm512_storeu_ps,
        16
    );
    fma_loop!(
        avx2,
        "avx2,fma",
        __m256,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        _mm256_storeu_ps,
        8
    );
}

/// The scalar fallback: 16 independent multiply-add chains (an estimate: the compiler may or
/// may not fuse or vectorize them).
fn scalar_loop(iters: u64) -> f32 {
    let (a, b) = (
        std::hint::black_box(0.999_999f32),
        std::hint::black_box(1e-7f32),
    );
    let mut x = [1.0f32; 16];
    for _ in 0..iters {
        for v in x.iter_mut() {
            *v = *v * a + b;
        }
    }
    x.iter().sum()
}

/// A loop of FLOP count `flops_per_iter · iters`, and its name.
type FmaLoop = (fn(u64) -> f32, f64, &'static str);

/// The best FMA loop this CPU runs.
fn pick_loop() -> FmaLoop {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is available, which is all `fma::avx512` requires.
            return (|n| unsafe { fma::avx512(n) }, 2.0 * 16.0 * 16.0, "AVX-512");
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA are available, which is all `fma::avx2` requires.
            return (|n| unsafe { fma::avx2(n) }, 2.0 * 16.0 * 8.0, "AVX2");
        }
    }
    (scalar_loop, 2.0 * 16.0, "scalar estimate")
}

/// Measures the fp32 FMA peak on `threads` threads: each runs the same independent FMA loop
/// (sized for about 0.3 s); GFLOP/s = FLOPs of all threads / wall time, best of 3 rounds.
pub fn measure_peak(threads: usize) -> Peak {
    let threads = threads.max(1);
    let (f, flops_per_iter, method) = pick_loop();
    // Calibrate on one thread.
    let mut iters: u64 = 1 << 16;
    loop {
        let t = Instant::now();
        std::hint::black_box(f(std::hint::black_box(iters)));
        let dt = t.elapsed().as_secs_f64();
        if dt > 0.03 || iters >= 1 << 40 {
            iters = ((iters as f64) * 0.3 / dt.max(1e-9)).clamp(1.0, (1u64 << 40) as f64) as u64;
            break;
        }
        iters *= 4;
    }
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| std::hint::black_box(f(std::hint::black_box(iters))));
            }
        });
        let dt = start.elapsed().as_secs_f64().max(1e-9);
        best = best.max(flops_per_iter * iters as f64 * threads as f64 / dt / 1e9);
    }
    Peak {
        gflops: best,
        method,
        threads,
    }
}

/// Bytes per thread streamed by [`measure_bandwidth`] (far beyond any cache of the machines
/// this runs on, L3 included, so the loop reads DRAM).
const BANDWIDTH_BYTES_PER_THREAD: usize = 512 << 20;

/// Measures memory read bandwidth on `threads` threads, in GB/s: each thread sums its own
/// [`BANDWIDTH_BYTES_PER_THREAD`] buffer (integer adds, which the compiler vectorizes), best of
/// 5 rounds after a first touch. The reference for decode, which streams K and V once per call.
/// `None` when the buffers cannot be allocated.
pub fn measure_bandwidth(threads: usize) -> Option<f64> {
    let threads = threads.max(1);
    let words = BANDWIDTH_BYTES_PER_THREAD / 8;
    let mut bufs: Vec<Vec<u64>> = Vec::new();
    for i in 0..threads {
        let mut v: Vec<u64> = Vec::new();
        v.try_reserve_exact(words).ok()?;
        v.resize(words, i as u64 + 1);
        bufs.push(v);
    }
    let mut best = 0.0f64;
    for _ in 0..5 {
        let start = Instant::now();
        std::thread::scope(|s| {
            for b in &bufs {
                s.spawn(move || {
                    std::hint::black_box(b.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
                });
            }
        });
        let dt = start.elapsed().as_secs_f64().max(1e-9);
        best = best.max((threads * words * 8) as f64 / dt / 1e9);
    }
    Some(best)
}

/// One shape's tfmc measurement.
#[derive(Clone, Debug)]
pub struct TfmcResult {
    /// Median time of one call, ms.
    pub median_ms: f64,
    /// Timed calls.
    pub iters: usize,
    /// Lowering + optimization + scheduling + LLVM JIT, seconds.
    pub compile_s: f64,
    /// Whether the output held NaN or infinity.
    pub non_finite: bool,
}

/// One shape's PyTorch measurement.
#[derive(Clone, Debug)]
pub struct TorchResult {
    /// Median time of one call, ms.
    pub median_ms: f64,
    /// Timed calls.
    pub iters: usize,
}

/// A seeded uniform `[-1, 1)` f32 tensor.
fn random_tensor(shape: Vec<usize>, rng: &mut StdRng) -> Result<NativeTensor, String> {
    let mut t = NativeTensor::zeros(DType::F32, shape.clone())
        .map_err(|e| format!("cannot allocate a tensor of shape {shape:?}: {e}"))?;
    if let Some(data) = t.as_f32_mut() {
        data.iter_mut()
            .for_each(|x| *x = rng.random::<f32>() * 2.0 - 1.0);
    }
    Ok(t)
}

/// The median of `v` (the mean of the middle two for even lengths); 0 for none.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// How many timed calls fit the budget after a warm-up of `warm` (at least one).
fn calls_within_budget(iters: usize, warm: Duration) -> usize {
    let per = warm.as_secs_f64();
    let fit = if per > 0.0 {
        (BUDGET_S / per).floor() as usize
    } else {
        iters
    };
    iters.min(fit).max(1)
}

/// Compiles and times `shape` with tfmc (see the module docs).
pub fn bench_tfmc(shape: &Shape, iters: usize, lib: &Path) -> Result<TfmcResult, String> {
    let (file, kernel) = shape.kind.kernel();
    let path = lib.join(file);
    let program =
        crate::load(&path).map_err(|d| format!("{}: does not check:\n{d}", path.display()))?;
    let mut copts = CompileOptions::default();
    let mut params = BTreeMap::new();
    if shape.kind == Kind::Window {
        let w = i64::try_from(shape.w).map_err(|_| format!("window {} too large", shape.w))?;
        copts.params.insert("W".to_string(), Scalar::I(w));
        params.insert("W".to_string(), Scalar::I(w));
    }
    let mut rng = StdRng::seed_from_u64(SEED);
    let q = random_tensor(vec![shape.b, shape.h, shape.p, shape.e], &mut rng)?;
    let k = random_tensor(vec![shape.b, shape.h, shape.m, shape.e], &mut rng)?;
    let v = random_tensor(vec![shape.b, shape.h, shape.m, shape.e], &mut rng)?;
    let start = Instant::now();
    let prepared = prepare(&program, kernel, &copts).map_err(|e| format!("{kernel}: {e}"))?;
    let manifest = &prepared.manifest;
    let symbol = manifest.symbol.clone();
    let exports = [Export::new(&prepared.scheduled.func, symbol.clone())];
    with_jit(
        &exports,
        &copts.target,
        |jit| -> Result<TfmcResult, String> {
            let compile_s = start.elapsed().as_secs_f64();
            let entry = jit
                .entry(&symbol)
                .ok_or_else(|| format!("the JIT has no symbol '{symbol}'"))?;
            let inputs = [&q, &k, &v];
            let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
            let dims = bind_dims(manifest, &shapes).map_err(|e| e.to_string())?;
            let mut outputs = alloc_outputs(manifest, &dims).map_err(|e| e.to_string())?;
            let mut call = || -> Result<Duration, String> {
                let t = Instant::now();
                // SAFETY: `entry` is the packed entry JIT-compiled from `prepared`, whose manifest
                // entry is `manifest`; `call_native` checks every buffer against it.
                unsafe { call_native(entry, manifest, &inputs, &mut outputs, &params) }
                    .map_err(|e| e.to_string())?;
                Ok(t.elapsed())
            };
            let warm = call()?;
            let n = calls_within_budget(iters, warm);
            let times = (0..n)
                .map(|_| call().map(|d| d.as_secs_f64() * 1e3))
                .collect::<Result<Vec<_>, _>>()?;
            let non_finite = outputs
                .iter()
                .any(|o| o.as_f32().is_some_and(|d| d.iter().any(|x| !x.is_finite())));
            Ok(TfmcResult {
                median_ms: median(times),
                iters: n,
                compile_s,
                non_finite,
            })
        },
    )
    .map_err(|e| format!("{kernel}: {e}"))?
}

/// Whether `python3 -c 'import torch'` succeeds.
fn torch_available() -> bool {
    Command::new("python3")
        .args(["-c", "import torch"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs PyTorch with pip: the CPU wheel index first, then the default index. pip's
/// output goes to this process's stderr.
fn install_torch() -> Result<(), String> {
    let pip = |extra: &[&str]| {
        Command::new("python3")
            .args(["-m", "pip", "install", "torch"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success())
    };
    if pip(&["--index-url", "https://download.pytorch.org/whl/cpu"]) || pip(&[]) {
        Ok(())
    } else {
        Err(
            "pip could not install torch (tried the CPU wheel index and the default index)"
                .to_string(),
        )
    }
}

/// Escapes `s` as a JSON string body.
fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The request `bench/torch_ref.py` reads.
fn torch_request(shapes: &[&Shape], iters: usize, threads: usize) -> String {
    let items: Vec<String> = shapes
        .iter()
        .map(|s| {
            format!(
                "{{\"name\": \"{}\", \"kind\": \"{}\", \"b\": {}, \"h\": {}, \"p\": {}, \"m\": {}, \"e\": {}, \"w\": {}}}",
                json_escape(s.name),
                s.kind.torch_name(),
                s.b,
                s.h,
                s.p,
                s.m,
                s.e,
                s.w
            )
        })
        .collect();
    format!(
        "{{\"threads\": {threads}, \"iters\": {iters}, \"budget_s\": {BUDGET_S}, \"seed\": {SEED}, \"shapes\": [{}]}}",
        items.join(", ")
    )
}

/// A JSON scalar of a flat object.
#[derive(Clone, Debug, PartialEq)]
enum JsonScalar {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// Parses one line holding a flat JSON object whose values are strings or numbers (what
/// `bench/torch_ref.py` prints); `None` if it is anything else.
fn parse_flat_object(line: &str) -> Option<BTreeMap<String, JsonScalar>> {
    fn string(it: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
        let mut s = String::new();
        loop {
            match it.next()? {
                '"' => return Some(s),
                '\\' => match it.next()? {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'b' => s.push('\u{8}'),
                    'f' => s.push('\u{c}'),
                    'u' => {
                        let hex: String = (0..4).map(|_| it.next()).collect::<Option<_>>()?;
                        s.push(
                            char::from_u32(u32::from_str_radix(&hex, 16).ok()?)
                                .unwrap_or('\u{fffd}'),
                        );
                    }
                    c => s.push(c),
                },
                c => s.push(c),
            }
        }
    }
    let skip_ws = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
    };
    let mut it = line.trim().chars().peekable();
    let mut out = BTreeMap::new();
    if it.next()? != '{' {
        return None;
    }
    skip_ws(&mut it);
    if it.peek() == Some(&'}') {
        it.next();
        return it.next().is_none().then_some(out);
    }
    loop {
        skip_ws(&mut it);
        if it.next()? != '"' {
            return None;
        }
        let key = string(&mut it)?;
        skip_ws(&mut it);
        if it.next()? != ':' {
            return None;
        }
        skip_ws(&mut it);
        let value = if it.peek() == Some(&'"') {
            it.next();
            JsonScalar::Str(string(&mut it)?)
        } else {
            let mut num = String::new();
            while it
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.'))
            {
                num.extend(it.next());
            }
            match num.as_str() {
                "true" => JsonScalar::Bool(true),
                "false" => JsonScalar::Bool(false),
                "null" => JsonScalar::Null,
                _ => JsonScalar::Num(num.parse().ok()?),
            }
        };
        out.insert(key, value);
        skip_ws(&mut it);
        match it.next()? {
            ',' => {}
            '}' => return it.next().is_none().then_some(out),
            _ => return None,
        }
    }
}

/// A running `bench/torch_ref.py`: one request line per shape on its stdin, answered by
/// result lines and `{"done": true}` on its stdout.
struct TorchSession {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    /// `torch.__version__`.
    version: String,
    iters: usize,
    threads: usize,
}

/// What one shape's request to PyTorch gave.
enum TorchOutcome {
    /// Timed.
    Ok(TorchResult),
    /// PyTorch raised on this shape (the others are unaffected).
    Failed(String),
}

impl TorchSession {
    /// Starts the script and reads its greeting (the torch version).
    fn start(iters: usize, threads: usize) -> Result<TorchSession, String> {
        let mut child = Command::new("python3")
            .args(["-c", TORCH_SCRIPT])
            .env("OMP_NUM_THREADS", threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("cannot talk to python3 (no pipes)".to_string());
        };
        let mut session = TorchSession {
            child,
            stdin: Some(stdin),
            stdout: std::io::BufReader::new(stdout),
            version: String::new(),
            iters,
            threads,
        };
        loop {
            let obj = session.next_object()?;
            if let Some(JsonScalar::Str(v)) = obj.get("torch") {
                session.version = v.clone();
                return Ok(session);
            }
        }
    }

    /// The next JSON object the script prints (other lines are skipped).
    fn next_object(&mut self) -> Result<BTreeMap<String, JsonScalar>, String> {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .stdout
                .read_line(&mut line)
                .map_err(|e| format!("reading from bench/torch_ref.py: {e}"))?;
            if n == 0 {
                return Err("bench/torch_ref.py exited early".to_string());
            }
            if let Some(obj) = parse_flat_object(&line) {
                return Ok(obj);
            }
        }
    }

    /// Times one shape.
    fn bench(&mut self, shape: &Shape) -> Result<TorchOutcome, String> {
        use std::io::Write;
        let request = torch_request(&[shape], self.iters, self.threads);
        let stdin = self
            .stdin
            .as_mut()
            .ok_or("bench/torch_ref.py's stdin is closed")?;
        writeln!(stdin, "{request}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to bench/torch_ref.py: {e}"))?;
        let mut outcome = None;
        loop {
            let obj = self.next_object()?;
            if obj.contains_key("done") {
                return outcome.ok_or_else(|| {
                    format!("bench/torch_ref.py gave no result for {}", shape.name)
                });
            }
            if obj.get("name") != Some(&JsonScalar::Str(shape.name.to_string())) {
                continue;
            }
            outcome = Some(match (obj.get("error"), obj.get("median_ms")) {
                (Some(JsonScalar::Str(e)), _) => TorchOutcome::Failed(e.clone()),
                (_, Some(JsonScalar::Num(ms))) => {
                    let n = match obj.get("iters") {
                        Some(JsonScalar::Num(n)) => n.max(0.0) as usize,
                        _ => 0,
                    };
                    TorchOutcome::Ok(TorchResult {
                        median_ms: *ms,
                        iters: n,
                    })
                }
                _ => TorchOutcome::Failed("malformed result line".to_string()),
            });
        }
    }
}

impl Drop for TorchSession {
    fn drop(&mut self) {
        // Closing stdin ends the script's request loop.
        drop(self.stdin.take());
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }
}

/// Formats rows as plain text with aligned columns (the first left-aligned, the rest right).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(s, "{c:<w$}");
            } else {
                let _ = write!(s, "  {c:>w$}");
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(&mut header.iter().copied());
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)));
    out.push('\n');
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

/// A time in ms with 3 significant-ish digits.
fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
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
    let picked: Vec<Shape> = all
        .into_iter()
        .filter(|s| names.iter().any(|n| n == s.name))
        .collect();
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
        return Err(format!(
            "--threads must be in 1..={}",
            tfmc_runtime::parallel::MAX_THREADS
        ));
    }
    let selected = select(opts.shapes.as_deref())?;
    let lib = lib_dir();
    if !lib.join("sdpa.tfm").is_file() {
        return Err(format!(
            "cannot find the .tfm library at '{}' (set TFMC_LIB to the lib/ directory)",
            lib.display()
        ));
    }
    let mut report = String::new();
    let mut notes: Vec<String> = Vec::new();

    let peak = measure_peak(threads);
    let nthreads = if threads == 1 {
        "1 thread".to_string()
    } else {
        format!("{threads} threads")
    };
    let _ = writeln!(report, "threads: {threads}");
    let _ = writeln!(
        report,
        "FMA peak ({}, {nthreads}): {:.0} GFLOP/s",
        peak.method, peak.gflops
    );
    eprintln!(
        "bench: FMA peak ({}, {nthreads}): {:.0} GFLOP/s",
        peak.method, peak.gflops
    );
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
                    return Err(
                        "torch was installed but `python3 -c 'import torch'` still fails"
                            .to_string(),
                    );
                }
            }
            match TorchSession::start(opts.iters, threads) {
                Ok(t) => {
                    let _ = writeln!(
                        report,
                        "PyTorch: {}, fp32, {nthreads}, scaled_dot_product_attention (linear: cumsum form)",
                        t.version
                    );
                    Some(t)
                }
                Err(e) => {
                    let _ = writeln!(report, "PyTorch reference failed to start: {e}");
                    None
                }
            }
        }
    };

    // Per shape: tfmc, then PyTorch (one process for all shapes), so that both sides are
    // timed close together under the same machine load but never at the same time.
    let guard = PoolGuard(tfmc_runtime::parallel::num_threads());
    tfmc_runtime::parallel::set_num_threads(threads);
    let mut tfmc: BTreeMap<&str, TfmcResult> = BTreeMap::new();
    let mut reference: BTreeMap<&str, TorchResult> = BTreeMap::new();
    for s in &selected {
        match bench_tfmc(s, opts.iters, &lib) {
            Ok(r) => {
                eprintln!(
                    "bench: {}: tfmc {} ms (median of {}, compile {:.2} s)",
                    s.name,
                    fmt_ms(r.median_ms),
                    r.iters,
                    r.compile_s
                );
                if r.non_finite {
                    notes.push(format!(
                        "warning: {}: the tfmc output holds NaN or infinity on random inputs",
                        s.name
                    ));
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
                eprintln!(
                    "bench: {}: torch {} ms (median of {})",
                    s.name,
                    fmt_ms(r.median_ms),
                    r.iters
                );
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

    let header = [
        "shape",
        "tfmc ms",
        "torch ms",
        "speedup",
        "GFLOP/s",
        "% peak",
        "GB/s",
        "compile s",
        "iters",
    ];
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
                gflops
                    .filter(|_| peak.gflops > 0.0)
                    .map_or_else(dash, |g| format!("{:.1}%", 100.0 * g / peak.gflops)),
                match (s.kind, t) {
                    (Kind::Decode, Some(t)) => {
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
mod tests {
    use super::*;

    #[test]
    fn pairs_count_exactly_the_unmasked_points() {
        let mk = |kind, p, m, w| Shape {
            name: "t",
            kind,
            b: 1,
            h: 1,
            p,
            m,
            e: 1,
            w,
        };
        assert_eq!(mk(Kind::Sdpa, 3, 5, 0).pairs(), 15);
        assert_eq!(mk(Kind::Causal, 4, 4, 0).pairs(), 10);
        assert_eq!(mk(Kind::Linear, 4, 2, 0).pairs(), 1 + 2 + 2 + 2);
        // Rows 0..5 with W = 2 see 1, 2, 2, 2, 2 keys.
        assert_eq!(mk(Kind::Window, 5, 5, 2).pairs(), 9);
        assert_eq!(mk(Kind::Window, 5, 5, 0).pairs(), 0);
        assert_eq!(
            mk(Kind::Window, 4096, 4096, 256).pairs(),
            256 * 257 / 2 + (4096 - 256) * 256
        );
        let brute = |p: u64, m: u64, w: u64| {
            (0..p)
                .flat_map(|r| (0..m).map(move |c| (r, c)))
                .filter(|&(r, c)| c <= r && r - c < w)
                .count() as u64
        };
        for (p, m, w) in [(7, 3, 2), (3, 7, 5), (9, 9, 1), (6, 4, 100)] {
            assert_eq!(
                mk(Kind::Window, p as usize, m as usize, w as usize).pairs(),
                brute(p, m, w),
                "{p} {m} {w}"
            );
        }
    }

    #[test]
    fn shapes_match_the_design_table() {
        let names: Vec<&str> = shapes().iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "sdpa-512",
                "sdpa-1k",
                "sdpa-4k",
                "batch",
                "causal-1k",
                "causal-4k",
                "window-4k",
                "decode-4k",
                "decode-32k",
                "linear-4k"
            ]
        );
        assert!(
            select(Some(&["nope".to_string()]))
                .unwrap_err()
                .contains("unknown shape 'nope'")
        );
        assert_eq!(
            select(Some(&["batch".to_string(), "sdpa-512".to_string()]))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn flat_json_lines_parse() {
        let o =
            parse_flat_object(r#"{"name": "sdpa-1k", "median_ms": 12.5e0, "iters": 5}"#).unwrap();
        assert_eq!(o["name"], JsonScalar::Str("sdpa-1k".into()));
        assert_eq!(o["median_ms"], JsonScalar::Num(12.5));
        let o = parse_flat_object(r#"{"name": "a\"b\u0041", "error": "x: y"}"#).unwrap();
        assert_eq!(o["name"], JsonScalar::Str("a\"bA".into()));
        assert!(parse_flat_object("not json").is_none());
        assert!(parse_flat_object(r#"{"a": [1]}"#).is_none());
        assert!(parse_flat_object("{}").unwrap().is_empty());
        assert_eq!(
            parse_flat_object(r#"{"done": true}"#).unwrap()["done"],
            JsonScalar::Bool(true)
        );
        assert_eq!(
            parse_flat_object(r#"{"x": NaN, "y": null}"#).unwrap()["y"],
            JsonScalar::Null
        );
        let req = torch_request(&[&shapes()[6]], 5, 2);
        assert!(
            req.contains(r#""kind": "window""#) && req.contains(r#""w": 256"#),
            "{req}"
        );
    }

    #[test]
    fn median_and_budget() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(calls_within_budget(5, Duration::from_secs(4)), 2);
        assert_eq!(calls_within_budget(5, Duration::from_secs(60)), 1);
        assert_eq!(calls_within_budget(5, Duration::from_millis(1)), 5);
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["a", "bb"],
            &[
                vec!["xxx".into(), "1".into()],
                vec!["y".into(), "22".into()],
            ],
        );
        assert_eq!(t, "a    bb\n-------\nxxx   1\ny    22\n");
    }

    #[test]
    fn peak_is_positive() {
        let p = measure_peak(1);
        assert!(p.gflops > 0.0, "{p:?}");
    }

    #[test]
    fn small_shape_runs_and_is_finite() {
        let s = Shape {
            name: "tiny",
            kind: Kind::Window,
            b: 1,
            h: 2,
            p: 33,
            m: 33,
            e: 8,
            w: 5,
        };
        let r = bench_tfmc(&s, 2, &lib_dir()).unwrap();
        assert!(!r.non_finite && r.median_ms >= 0.0 && r.iters >= 1, "{r:?}");
    }

    /// The full benchmark: `cargo test --release -p tfmc bench -- --ignored --nocapture`
    /// (env `TFMC_BENCH_SHAPES=a,b`, `TFMC_BENCH_ITERS`, `TFMC_BENCH_TORCH=skip|install`).
    #[test]
    #[ignore = "the full benchmark takes minutes; run it in release"]
    fn full_benchmark() {
        let env = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
        let opts = BenchOptions {
            shapes: env("TFMC_BENCH_SHAPES").map(|s| s.split(',').map(str::to_string).collect()),
            iters: env("TFMC_BENCH_ITERS")
                .and_then(|s| s.parse().ok())
                .unwrap_or(5),
            torch: match env("TFMC_BENCH_TORCH").as_deref() {
                Some("skip") => TorchMode::Skip,
                Some("install") => TorchMode::Install,
                _ => TorchMode::Auto,
            },
            threads: env("TFMC_BENCH_THREADS").and_then(|s| s.parse().ok()),
        };
        match run(&opts) {
            Ok(report) => println!("{report}"),
            Err(e) => panic!("{e}"),
        }
    }
}
