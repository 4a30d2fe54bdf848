//! The thread pool compiled kernels call: `tfmc_parallel_for(body, ctx, n)` runs
//! `body(ctx, lo, hi)` over chunks covering `0..n`, concurrently, and returns when all are
//! done. This is the host-process implementation (JIT-compiled kernels are linked to it); an
//! AOT artifact carries its own C implementation (`runtime/c/tfmc_rt.c`) with the same
//! contract and the same design:
//!
//! - The pool's size (threads including the caller) is `TFMC_NUM_THREADS` when that is a
//!   whole number in `1..=`[`MAX_THREADS`], else one per available core
//!   ([`std::thread::available_parallelism`]); [`set_num_threads`] changes it later. Workers
//!   are only ever added (surplus ones sleep).
//! - **The caller participates**: it publishes the job, runs chunks itself and then waits for
//!   the workers that joined. (The pool used to be rayon's: `install` from a thread outside
//!   the pool parks the caller and wakes it again per call, which cost more than the work of
//!   a small node — Flowformer's 15 parallel loops ran slower on two threads than on one.)
//! - One job runs at a time. A call made while another is running (from a worker, i.e. a
//!   nested parallel loop, or from any other thread) runs serially on its caller: no deadlock,
//!   no waiting.
//! - Chunks (about 16 per thread, at least one iteration each) are claimed with an atomic
//!   counter: dynamic load balancing (16, not 4: a causal kernel's row tiles cost in
//!   proportion to their row, and with 4 the last chunk left one thread idle for 10% of it).
//! - A worker registers for a job (under the mutex, while the job is open) before claiming
//!   chunks and deregisters after (an atomic count, release); the caller closes the job once
//!   the counter is exhausted and waits until no worker is registered (acquire), so no worker
//!   touches a job's body, ctx or counter after the call returns, and every write of the
//!   body happens before the return.
//! - Waiting threads watch for 50 µs before they sleep on a condition variable: a kernel's
//!   parallel loops come back to back, and a futex wake-up costs more than a small loop.
//! - If a worker cannot be spawned, the pool has fewer threads (at worst the caller alone).

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

/// The body of a parallel loop: runs iterations `lo..hi` with the captured context.
pub type ParallelBody = unsafe extern "C" fn(ctx: *mut c_void, lo: i64, hi: i64);

/// Upper bound on the pool size.
pub const MAX_THREADS: usize = 1024;

/// Chunks handed out per thread.
const CHUNKS_PER_THREAD: i64 = 16;

/// One parallel loop, as the workers read it.
#[derive(Clone, Copy)]
struct Job {
    body: ParallelBody,
    /// The caller's context (an address: the caller guarantees it may be shared).
    ctx: usize,
    n: i64,
    chunk: i64,
    nchunks: i64,
    /// Workers with an id below this take part.
    workers: usize,
}

/// What the mutex guards.
struct State {
    /// Bumped for every job (workers wait for a change).
    generation: u64,
    /// The job workers may still register for.
    job: Option<Job>,
    /// Workers started so far.
    spawned: usize,
}

struct Pool {
    state: Mutex<State>,
    wake: Condvar,
    idle: Condvar,
    /// The next chunk to claim.
    next: AtomicI64,
    /// A job is running (a second call runs serially).
    busy: AtomicBool,
    /// The last job's generation, for workers watching without the lock.
    posted: AtomicU64,
    /// Workers registered for the current job.
    active: AtomicUsize,
    /// Threads calls use now (the caller included).
    threads: AtomicUsize,
}

thread_local! {
    /// True on the pool's workers (a nested call runs serially).
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// `TFMC_NUM_THREADS` if valid, else the available parallelism.
fn default_threads() -> usize {
    std::env::var("TFMC_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|n| (1..=MAX_THREADS).contains(n))
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get().min(MAX_THREADS)).unwrap_or(1))
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock (bodies run outside it); a poisoned lock's
        // state is still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts workers until `want - 1` run (or spawning fails); sets the thread count.
    fn resize(&'static self, want: usize) {
        let mut st = self.lock();
        while st.spawned + 1 < want {
            let id = st.spawned;
            let started = std::thread::Builder::new().name(format!("tfmc-worker-{id}")).spawn(move || self.worker(id));
            if started.is_err() {
                break;
            }
            st.spawned += 1;
        }
        self.threads.store(want.min(st.spawned + 1), Ordering::Relaxed);
    }

    fn worker(&self, id: usize) {
        IN_WORKER.with(|w| w.set(true));
        let mut seen = self.lock().generation;
        loop {
            // A kernel's parallel loops come back to back: watch for the next job a little
            // while before sleeping (a futex wake costs more than a small loop's work).
            spin_until(|| self.posted.load(Ordering::Acquire) != seen);
            let mut st = self.lock();
            while st.generation == seen {
                st = self.wake.wait(st).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            seen = st.generation;
            let Some(job) = st.job.filter(|j| id < j.workers) else { continue };
            // Registered under the lock while the job is open: the caller, which closes it
            // under the lock, then waits for this worker.
            self.active.fetch_add(1, Ordering::Relaxed);
            drop(st);
            self.run_chunks(&job);
            if self.active.fetch_sub(1, Ordering::Release) == 1 {
                // The caller may be asleep: wake it under the lock (no lost wake-up).
                let _st = self.lock();
                self.idle.notify_one();
            }
        }
    }

    /// Claims and runs chunks of `job` until none is left.
    fn run_chunks(&self, job: &Job) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= job.nchunks {
                return;
            }
            let lo = i * job.chunk;
            let hi = if job.n - lo < job.chunk { job.n } else { lo + job.chunk };
            // SAFETY: the caller of `tfmc_parallel_for` guarantees `body` may run concurrently
            // with `ctx` on disjoint ranges inside 0..n (chunks are disjoint and cover 0..n).
            unsafe { (job.body)(job.ctx as *mut c_void, lo, hi) };
        }
    }
}

/// How long a thread watches for what it waits on before sleeping.
const SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// Spins (with the CPU's pause hint) until `done` or [`SPIN`] has passed.
fn spin_until(done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    loop {
        for _ in 0..64 {
            if done() {
                return;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN {
            return;
        }
    }
}

/// The pool, started on first use with the default size.
fn pool() -> &'static Pool {
    static STARTED: std::sync::Once = std::sync::Once::new();
    let p = POOL.get_or_init(|| Pool {
        state: Mutex::new(State { generation: 0, job: None, spawned: 0 }),
        wake: Condvar::new(),
        idle: Condvar::new(),
        next: AtomicI64::new(0),
        busy: AtomicBool::new(false),
        posted: AtomicU64::new(0),
        active: AtomicUsize::new(0),
        threads: AtomicUsize::new(1),
    });
    STARTED.call_once(|| p.resize(default_threads()));
    p
}

/// Sets the number of threads later calls use (`n == 0` restores the default:
/// `TFMC_NUM_THREADS` or one per core; values above [`MAX_THREADS`] are clamped).
pub fn set_num_threads(n: usize) {
    let n = if n == 0 { default_threads() } else { n.min(MAX_THREADS) };
    pool().resize(n);
}

/// The number of threads calls use now (1 when running serially).
pub fn num_threads() -> usize {
    pool().threads.load(Ordering::Relaxed)
}

/// Runs `body(ctx, lo, hi)` over chunks covering `0..n` (nothing when `n <= 0`), each index
/// exactly once, concurrently on the pool (the caller taking part); returns when every chunk
/// has finished.
///
/// # Safety
/// `body` must be safe to call concurrently from several threads with `ctx` and disjoint
/// ranges inside `0..n`.
pub unsafe extern "C" fn tfmc_parallel_for(body: ParallelBody, ctx: *mut c_void, n: i64) {
    if n <= 0 {
        return;
    }
    let serial = || {
        // SAFETY: the caller's contract; one chunk covering everything.
        unsafe { body(ctx, 0, n) }
    };
    if IN_WORKER.with(Cell::get) {
        return serial();
    }
    let p = pool();
    let threads = i64::try_from(p.threads.load(Ordering::Relaxed)).unwrap_or(1);
    if threads <= 1 || n == 1 || p.busy.swap(true, Ordering::Acquire) {
        return serial();
    }
    let want = threads.saturating_mul(CHUNKS_PER_THREAD).min(n);
    let chunk = n / want + i64::from(n % want != 0);
    let nchunks = (n - 1) / chunk + 1;
    let workers = usize::try_from((threads - 1).min(nchunks - 1)).unwrap_or(0);
    let job = Job { body, ctx: ctx as usize, n, chunk, nchunks, workers };
    {
        let mut st = p.lock();
        p.next.store(0, Ordering::Relaxed);
        st.job = Some(job);
        st.generation = st.generation.wrapping_add(1);
        p.posted.store(st.generation, Ordering::Release);
        p.wake.notify_all();
    }
    p.run_chunks(&job);
    // Every chunk is claimed: close the job (no worker registers after this) and wait for
    // the registered ones, watching a little while before sleeping.
    p.lock().job = None;
    spin_until(|| p.active.load(Ordering::Acquire) == 0);
    let mut st = p.lock();
    while p.active.load(Ordering::Acquire) > 0 {
        st = p.idle.wait(st).unwrap_or_else(|poisoned| poisoned.into_inner());
    }
    drop(st);
    p.busy.store(false, Ordering::Release);
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
