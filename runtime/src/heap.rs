//! The heap buffers compiled CPU kernels allocate (`tfmc_calloc` / `tfmc_malloc` /
//! `tfmc_free`, the JIT's side; `runtime/c/tfmc_rt.c` has the same functions for AOT
//! artifacts).
//!
//! `tfmc_calloc(n, size)` returns `n · size` zeroed bytes (NULL when the product overflows or
//! memory runs out), `tfmc_malloc(n, size)` the same bytes with any contents (for a buffer the
//! kernel writes entirely before reading: a local tensor every point of which its node
//! stores), `tfmc_free` releases either. With [`set_poison`] (or `TFMC_HEAP_POISON=1` in the
//! environment) every `tfmc_malloc` block is filled with `0xFF` bytes (NaN floats, -1
//! integers, `true` booleans), so a plan that reads such a buffer before writing it shows in
//! the tests. Large blocks (at least [`MIN_CACHED`] bytes)
//! are kept after `tfmc_free` in a small process-wide cache and handed out again, zeroed, to
//! a later request they fit (at most twice its size): a kernel called in a loop then reuses
//! its intermediate tensors instead of getting fresh pages from the kernel every call (page
//! faults and the kernel's zeroing were a third of the time of kernels with 4–134 MB
//! intermediates). The cache holds at most [`MAX_BLOCKS`] blocks and `TFMC_HEAP_CACHE_MB`
//! MiB (default [`DEFAULT_CACHE_MB`]; 0 disables it), evicting the oldest block first.
//!
//! Layout: every block starts with a [`HEADER`]-byte header holding its capacity; the caller
//! gets the address after it (16-byte aligned, as `calloc`'s).

use std::ffi::c_void;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

/// Bytes before the caller's address (the block's capacity is stored there).
pub const HEADER: usize = 64;

/// Blocks at least this large are cached after release.
pub const MIN_CACHED: usize = 1 << 20;

/// The most blocks the cache keeps.
pub const MAX_BLOCKS: usize = 8;

/// The cache's default limit in MiB (`TFMC_HEAP_CACHE_MB` overrides it).
pub const DEFAULT_CACHE_MB: usize = 1024;

/// Cached blocks (address of the header, capacity in bytes after it), oldest first: at most
/// [`MAX_BLOCKS`] + 1 while one is added, so their total is summed where needed.
type Cache = Vec<(usize, usize)>;

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Vec::new()))
}

fn limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mb = std::env::var("TFMC_HEAP_CACHE_MB").ok().and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(DEFAULT_CACHE_MB);
        mb.saturating_mul(1 << 20)
    })
}

/// Poisoning: 0 not yet read from the environment, 1 off, 2 on.
static POISON: AtomicU8 = AtomicU8::new(0);

/// Turns poisoning of [`tfmc_malloc`] blocks on or off for the whole process (overrides
/// `TFMC_HEAP_POISON`).
pub fn set_poison(on: bool) {
    POISON.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

fn poison() -> bool {
    match POISON.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("TFMC_HEAP_POISON").is_ok_and(|v| v.trim() == "1");
            // A concurrent `set_poison` wins: only replace the unread state.
            let _ = POISON.compare_exchange(0, if on { 2 } else { 1 }, Ordering::Relaxed, Ordering::Relaxed);
            POISON.load(Ordering::Relaxed) == 2
        }
        v => v == 2,
    }
}

/// `n · size` zeroed bytes, or NULL when `n` or `size` is negative, the product overflows, or
/// memory runs out.
///
/// # Safety
/// The result must be released with [`tfmc_free`] (not `free`).
pub unsafe extern "C" fn tfmc_calloc(n: i64, size: i64) -> *mut c_void {
    // SAFETY: the caller's contract is this function's.
    unsafe { alloc(n, size, true) }
}

/// `n · size` bytes with any contents (poisoned with `0xFF` under [`set_poison`]), or NULL
/// when `n` or `size` is negative, the product overflows, or memory runs out.
///
/// # Safety
/// The result must be released with [`tfmc_free`] (not `free`).
pub unsafe extern "C" fn tfmc_malloc(n: i64, size: i64) -> *mut c_void {
    // SAFETY: the caller's contract is this function's.
    let p = unsafe { alloc(n, size, false) };
    if !p.is_null() && poison() {
        // SAFETY: `p` has `n · size` bytes (checked by `alloc`, which returned non-NULL).
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0xFF, (n as usize) * (size as usize)) };
    }
    p
}

/// [`tfmc_calloc`] (`zero`) or [`tfmc_malloc`].
///
/// # Safety
/// As theirs.
unsafe fn alloc(n: i64, size: i64, zero: bool) -> *mut c_void {
    let (Ok(n), Ok(size)) = (usize::try_from(n), usize::try_from(size)) else { return std::ptr::null_mut() };
    let Some(bytes) = n.checked_mul(size) else { return std::ptr::null_mut() };
    if bytes >= MIN_CACHED {
        let hit = {
            // A poisoned lock only means another thread panicked while holding it; the list
            // itself is always consistent (each update is one push or remove).
            let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
            let fit = c.iter().enumerate().filter(|(_, b)| b.1 >= bytes && b.1 / 2 <= bytes).min_by_key(|(_, b)| b.1).map(|(i, _)| i);
            fit.map(|i| c.remove(i))
        };
        if let Some((base, _)) = hit {
            let p = (base + HEADER) as *mut u8;
            if zero {
                // SAFETY: the block has capacity >= bytes after its header (it was allocated
                // so and is owned by no one else once out of the cache).
                unsafe { std::ptr::write_bytes(p, 0, bytes) };
            }
            return p.cast();
        }
    }
    let Some(total) = bytes.checked_add(HEADER) else { return std::ptr::null_mut() };
    // SAFETY: plain C allocation of `total` bytes (zeroed for `tfmc_calloc`; a large fresh
    // block is zero pages either way).
    let base = unsafe { if zero { libc_calloc(1, total) } else { libc_malloc(total) } }.cast::<u8>();
    if base.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: `base` has at least HEADER bytes, suitably aligned for a usize (malloc's and
    // calloc's alignment is at least 16).
    unsafe { base.cast::<usize>().write(bytes) };
    // SAFETY: in bounds of the allocation.
    unsafe { base.add(HEADER).cast() }
}

/// Releases a block of [`tfmc_calloc`] or [`tfmc_malloc`] (NULL does nothing): large blocks
/// go to the cache.
///
/// # Safety
/// `p` is NULL or a live result of [`tfmc_calloc`] or [`tfmc_malloc`], released once.
pub unsafe extern "C" fn tfmc_free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: `p` came from `tfmc_calloc`/`tfmc_malloc`: its header is HEADER bytes before it.
    let base = unsafe { p.cast::<u8>().sub(HEADER) };
    // SAFETY: the header holds the capacity written by `alloc`.
    let cap = unsafe { base.cast::<usize>().read() };
    let lim = limit();
    if cap < MIN_CACHED || cap > lim {
        // SAFETY: `base` is the start of a C allocation.
        unsafe { libc_free(base.cast()) };
        return;
    }
    let evicted: Vec<usize> = {
        let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
        c.push((base as usize, cap));
        let mut out = Vec::new();
        while c.iter().map(|b| b.1).sum::<usize>() > lim || c.len() > MAX_BLOCKS {
            out.push(c.remove(0).0);
        }
        out
    };
    for b in evicted {
        // SAFETY: each evicted address is the start of a C allocation no one else holds.
        unsafe { libc_free(b as *mut c_void) };
    }
}

/// Frees every cached block (for a host that wants its memory back between calls).
pub extern "C" fn tfmc_heap_trim() {
    let blocks = std::mem::take(&mut *cache().lock().unwrap_or_else(|e| e.into_inner()));
    for (b, _) in blocks {
        // SAFETY: cached addresses are starts of C allocations no one else holds.
        unsafe { libc_free(b as *mut c_void) };
    }
}

unsafe extern "C" {
    #[link_name = "calloc"]
    fn libc_calloc(n: usize, size: usize) -> *mut c_void;
    #[link_name = "malloc"]
    fn libc_malloc(size: usize) -> *mut c_void;
    #[link_name = "free"]
    fn libc_free(p: *mut c_void);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_zeroed_reused_and_bounded() {
        // SAFETY: every pointer comes from tfmc_calloc and is freed once.
        unsafe {
            assert!(tfmc_calloc(-1, 4).is_null());
            assert!(tfmc_calloc(i64::MAX, 16).is_null());
            let small = tfmc_calloc(10, 4).cast::<u32>();
            assert!(!small.is_null() && (small as usize).is_multiple_of(16));
            assert!((0..10).all(|i| *small.add(i) == 0));
            tfmc_free(small.cast());
            let n = (3 << 20) / 4;
            let a = tfmc_calloc(n, 4).cast::<u32>();
            std::slice::from_raw_parts_mut(a, n as usize).fill(7);
            tfmc_free(a.cast());
            // A request that fits the cached block gets it back, zeroed.
            let b = tfmc_calloc(n - 100, 4).cast::<u32>();
            assert_eq!(a, b, "the cached block is reused");
            assert!(std::slice::from_raw_parts(b, (n - 100) as usize).iter().all(|x| *x == 0));
            // A request far smaller than the block does not take it.
            tfmc_free(b.cast());
            let c = tfmc_calloc(1 << 20, 1);
            assert_ne!(c.cast::<u32>(), a);
            tfmc_free(c);
            tfmc_free(std::ptr::null_mut());
            tfmc_heap_trim();
            assert_eq!(cache().lock().unwrap().len(), 0);
        }
    }

    #[test]
    fn malloc_blocks_are_reused_unzeroed_or_poisoned() {
        // SAFETY: every pointer comes from tfmc_malloc/tfmc_calloc and is freed once.
        unsafe {
            assert!(tfmc_malloc(-1, 4).is_null());
            assert!(tfmc_malloc(i64::MAX, 16).is_null());
            // A size no other test asks for, so the cache hit is this test's own block.
            let n = (5 << 20) / 4 + 12345;
            let a = tfmc_malloc(n, 4).cast::<u32>();
            assert!(!a.is_null() && (a as usize).is_multiple_of(16));
            std::slice::from_raw_parts_mut(a, n as usize).fill(7);
            tfmc_free(a.cast());
            let b = tfmc_malloc(n, 4).cast::<u32>();
            if b == a && !poison() {
                // Reused as it was left: no memset.
                assert!(std::slice::from_raw_parts(b, n as usize).iter().all(|x| *x == 7));
            }
            tfmc_free(b.cast());
            // tfmc_calloc still zeroes a block tfmc_malloc left dirty.
            let c = tfmc_calloc(n, 4).cast::<u32>();
            assert!(std::slice::from_raw_parts(c, n as usize).iter().all(|x| *x == 0));
            std::slice::from_raw_parts_mut(c, n as usize).fill(7);
            tfmc_free(c.cast());
            set_poison(true);
            let d = tfmc_malloc(n, 4).cast::<u32>();
            assert!(std::slice::from_raw_parts(d, n as usize).iter().all(|x| *x == u32::MAX));
            tfmc_free(d.cast());
        }
    }
}
