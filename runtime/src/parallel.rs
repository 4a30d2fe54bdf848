//! The thread pool compiled kernels call: `tfmc_parallel_for(body, ctx, n)` runs
//! `body(ctx, lo, hi)` over chunks covering `0..n`, concurrently, and returns when all are
//! done. This is the host-process implementation (JIT-compiled kernels are linked to it); an
//! AOT artifact carries its own C implementation (`runtime/c/tfmc_rt.c`) with the same
//! contract.
//!
//! Design and invariants:
//! - The pool is a rayon [`ThreadPool`] of its own (not rayon's global pool), built on first
//!   use with `TFMC_NUM_THREADS` threads when that is a whole number in `1..=`[`MAX_THREADS`],
//!   else one per available core ([`std::thread::available_parallelism`]).
//! - [`set_num_threads`] replaces the pool; calls already running finish on the pool they
//!   started on (each call holds an [`Arc`] to it).
//! - Chunks: about 4 per thread, at least one iteration each, balanced by rayon's work
//!   stealing. The calling thread takes part (rayon `install` + parallel iterator).
//! - Nested calls (from inside a body) are fine: rayon runs them on the current worker and
//!   lets idle workers steal from it; no deadlock.
//! - If the pool cannot be built (threads cannot be spawned), loops run serially on the caller.

use std::ffi::c_void;
use std::sync::{Arc, OnceLock, RwLock};

use rayon::ThreadPool;
use rayon::prelude::*;

/// The body of a parallel loop: runs iterations `lo..hi` with the captured context.
pub type ParallelBody = unsafe extern "C" fn(ctx: *mut c_void, lo: i64, hi: i64);

/// Upper bound on the pool size.
pub const MAX_THREADS: usize = 1024;

/// Chunks handed out per thread.
const CHUNKS_PER_THREAD: i64 = 4;

/// The current pool (`None`: serial), built on first use.
static POOL: OnceLock<RwLock<Option<Arc<ThreadPool>>>> = OnceLock::new();

/// `TFMC_NUM_THREADS` if valid, else the available parallelism.
fn default_threads() -> usize {
    std::env::var("TFMC_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|n| (1..=MAX_THREADS).contains(n))
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get().min(MAX_THREADS)).unwrap_or(1))
}

/// A pool of `n` threads, or `None` when it cannot be built (the caller then runs serially).
fn build(n: usize) -> Option<Arc<ThreadPool>> {
    rayon::ThreadPoolBuilder::new().num_threads(n).thread_name(|i| format!("tfmc-worker-{i}")).build().ok().map(Arc::new)
}

fn pool_slot() -> &'static RwLock<Option<Arc<ThreadPool>>> {
    POOL.get_or_init(|| RwLock::new(build(default_threads())))
}

/// The pool calls run on now.
fn current() -> Option<Arc<ThreadPool>> {
    pool_slot().read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
}

/// Sets the number of threads later calls use (`n == 0` restores the default:
/// `TFMC_NUM_THREADS` or one per core; values above [`MAX_THREADS`] are clamped). Builds a new
/// pool; calls already running finish on the old one.
pub fn set_num_threads(n: usize) {
    let n = if n == 0 { default_threads() } else { n.min(MAX_THREADS) };
    let pool = build(n);
    *pool_slot().write().unwrap_or_else(|poisoned| poisoned.into_inner()) = pool;
}

/// The number of threads calls use now (1 when running serially).
pub fn num_threads() -> usize {
    current().map_or(1, |p| p.current_num_threads())
}

/// Runs `body(ctx, lo, hi)` over chunks covering `0..n` (nothing when `n <= 0`), each index
/// exactly once, concurrently on the pool; returns when every chunk has finished.
///
/// # Safety
/// `body` must be safe to call concurrently from several threads with `ctx` and disjoint
/// ranges inside `0..n`.
pub unsafe extern "C" fn tfmc_parallel_for(body: ParallelBody, ctx: *mut c_void, n: i64) {
    if n <= 0 {
        return;
    }
    let pool = if n == 1 { None } else { current() };
    let Some(pool) = pool.filter(|p| p.current_num_threads() > 1) else {
        // SAFETY: the caller's contract; one chunk covering everything.
        unsafe { body(ctx, 0, n) };
        return;
    };
    let threads = i64::try_from(pool.current_num_threads()).unwrap_or(1);
    let want = threads.saturating_mul(CHUNKS_PER_THREAD).min(n);
    let chunk = n / want + i64::from(n % want != 0);
    let nchunks = (n - 1) / chunk + 1;
    // Raw pointers are not Send; the caller guarantees `ctx` may be shared across threads.
    let ctx = ctx as usize;
    pool.install(|| {
        (0..nchunks).into_par_iter().for_each(|i| {
            let lo = i * chunk;
            let hi = if n - lo < chunk { n } else { lo + chunk };
            // SAFETY: the caller's contract: concurrent calls on disjoint ranges inside 0..n
            // (chunks are disjoint and cover 0..n) with the caller's `ctx`.
            unsafe { body(ctx as *mut c_void, lo, hi) }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Counts(Vec<AtomicU32>);

    unsafe extern "C" fn count(ctx: *mut c_void, lo: i64, hi: i64) {
        // SAFETY: ctx is a &Counts for the duration of the loop.
        let c = unsafe { &*(ctx as *const Counts) };
        for i in lo..hi {
            c.0[i as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn run(n: i64) -> Vec<u32> {
        let c = Counts((0..n.max(0)).map(|_| AtomicU32::new(0)).collect());
        // SAFETY: `count` only touches atomics.
        unsafe { tfmc_parallel_for(count, &c as *const Counts as *mut c_void, n) };
        c.0.iter().map(|a| a.load(Ordering::Relaxed)).collect()
    }

    #[test]
    fn each_index_once() {
        for n in [-3, 0, 1, 2, 7, 10007] {
            assert!(run(n).iter().all(|&x| x == 1), "n = {n}");
        }
    }

    unsafe extern "C" fn nested(ctx: *mut c_void, lo: i64, hi: i64) {
        for _ in lo..hi {
            // SAFETY: `count` only touches atomics.
            unsafe { tfmc_parallel_for(count, ctx, 100) };
        }
    }

    #[test]
    fn nested_calls() {
        let c = Counts((0..100).map(|_| AtomicU32::new(0)).collect());
        // SAFETY: `nested` calls `count`, which only touches atomics.
        unsafe { tfmc_parallel_for(nested, &c as *const Counts as *mut c_void, 37) };
        assert!(c.0.iter().all(|a| a.load(Ordering::Relaxed) == 37));
    }

    #[test]
    fn resize() {
        set_num_threads(3);
        assert_eq!(num_threads(), 3);
        assert!(run(1000).iter().all(|&x| x == 1));
        set_num_threads(0);
        assert!(num_threads() >= 1);
        assert!(run(1000).iter().all(|&x| x == 1));
    }
}
