//! The thread pool compiled kernels call: `tfmc_parallel_for(body, ctx, n)` runs
//! `body(ctx, lo, hi)` over chunks covering `0..n`, concurrently, and returns when all are
//! done. This is the host-process implementation (JIT-compiled kernels are linked to it); an
//! AOT artifact carries its own C implementation (`runtime/c/tfmc_rt.c`) with the same
//! contract.

use std::ffi::c_void;

/// The body of a parallel loop: runs iterations `lo..hi` with the captured context.
pub type ParallelBody = unsafe extern "C" fn(ctx: *mut c_void, lo: i64, hi: i64);

/// Runs `body(ctx, lo, hi)` over chunks covering `0..n` (nothing when `n <= 0`).
///
/// # Safety
/// `body` must be safe to call concurrently from several threads with `ctx` and disjoint
/// ranges inside `0..n`.
pub unsafe extern "C" fn tfmc_parallel_for(body: ParallelBody, ctx: *mut c_void, n: i64) {
    if n > 0 {
        // SAFETY: the caller's contract; one chunk covering everything.
        unsafe { body(ctx, 0, n) }
    }
}
