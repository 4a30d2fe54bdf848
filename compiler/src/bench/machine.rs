//! Machine ceilings for `tfmc bench`: the measured fp32 FMA peak and memory read bandwidth.

use std::time::Instant;

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
                let (mut x0, mut x1, mut x2, mut x3) = ($set1(1.0), $set1(1.1), $set1(1.2), $set1(1.3));
                let (mut x4, mut x5, mut x6, mut x7) = ($set1(1.4), $set1(1.5), $set1(1.6), $set1(1.7));
                let (mut x8, mut x9, mut x10, mut x11) = ($set1(1.8), $set1(1.9), $set1(2.0), $set1(2.1));
                let (mut x12, mut x13, mut x14, mut x15) = ($set1(2.2), $set1(2.3), $set1(2.4), $set1(2.5));
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
                let s = $add($add($add(x0, x1), $add(x2, x3)), $add($add(x4, x5), $add(x6, x7)));
                let t = $add($add($add(x8, x9), $add(x10, x11)), $add($add(x12, x13), $add(x14, x15)));
                let mut out = [0f32; $lanes];
                // SAFETY: `out` holds exactly one vector of f32 lanes; unaligned store.
                unsafe { $store(out.as_mut_ptr(), $add(s, t)) };
                out.iter().sum()
            }
        };
    }

    fma_loop!(avx512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps, 16);
    fma_loop!(avx2, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps, 8);
}

/// The scalar fallback: 16 independent multiply-add chains (an estimate: the compiler may or
/// may not fuse or vectorize them).
pub(super) fn scalar_loop(iters: u64) -> f32 {
    let (a, b) = (std::hint::black_box(0.999_999f32), std::hint::black_box(1e-7f32));
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
pub(super) fn pick_loop() -> FmaLoop {
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
    Peak { gflops: best, method, threads }
}

/// Bytes per thread streamed by [`measure_bandwidth`] (far beyond any cache of the machines
/// this runs on, L3 included, so the loop reads DRAM).
pub(super) const BANDWIDTH_BYTES_PER_THREAD: usize = 512 << 20;

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
                s.spawn(move || std::hint::black_box(b.iter().fold(0u64, |a, &x| a.wrapping_add(x))));
            }
        });
        let dt = start.elapsed().as_secs_f64().max(1e-9);
        best = best.max((threads * words * 8) as f64 / dt / 1e9);
    }
    Some(best)
}
