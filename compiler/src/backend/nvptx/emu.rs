//! The CPU emulation of the GPU launch protocol: the same entries as the PTX ([`super::lower`],
//! same spine transform), built for the host with [`ThreadIds::Params`] (thread coordinates as
//! four extra `i32` parameters) and host math, JIT-compiled with MCJIT (the host symbols of
//! `backend::llvm::jit`), and [`EmuDevice`], a [`GpuDevice`] over host memory whose `launch`
//! calls the entry once per (block, thread), sequentially. That is a faithful GPU model for
//! the protocol's kernels without the GPU dialect: their threads never wait for each other
//! and write disjoint elements; failures go through the same 64-bit compare-and-swap. The
//! segments of a kernel using the dialect (block parallels, barriers, shared memory) run
//! their blocks one after another, the threads of a block concurrently (one scoped OS thread
//! each), with a per-block context (`super::block::EmuBlockCtx`: a `std::sync::Barrier` and
//! zero-filled shared memory) as the entries' last argument.
//!
//! Device addresses are host addresses: the emulated code loads buffer pointers from the
//! `bufs`/`heap` arrays and dereferences them. Every allocation is 64-byte aligned raw memory
//! owned by the device and freed by [`GpuDevice::free`] or when the device is dropped; copies
//! are bounds-checked against the allocation they fall in, and every launch argument must be
//! the start of a live allocation (an error otherwise). The addresses stored *inside* those
//! arrays are the protocol's business (the runtime's driver writes them).
//!
//! Invariant: an [`EmuDevice`] lives inside [`with_emulator`]'s closure, as long as the JIT
//! holding its code; it cannot escape (its lifetime is the closure's).

use std::alloc::Layout;
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::marker::PhantomData;

use inkwell::AddressSpace;
use inkwell::context::Context;
use inkwell::targets::RelocMode;
use tfmc_runtime::RuntimeError;
use tfmc_runtime::gpu::{DevPtr, GpuDevice};

use super::block::{EmuBlockCtx, shared_layout, threads};
use super::lower::Flavor;
use super::{Export, NvptxError, ThreadIds, lower_all, prepare};
use crate::backend::llvm::codegen::MathLib;
use crate::backend::llvm::{LlvmError, TargetOptions, target};

/// An emulated entry: `(bufs, dims, params, heap, status, tid, ntid, ctaid, nctaid, ctx)`;
/// `ctx` is the block's [`EmuBlockCtx`] (null for kernels without the GPU dialect).
pub type EmuEntry = unsafe extern "C" fn(
    bufs: *mut c_void,
    dims: *mut c_void,
    params: *mut c_void,
    heap: *mut c_void,
    status: *mut c_void,
    tid: u32,
    ntid: u32,
    ctaid: u32,
    nctaid: u32,
    ctx: *mut c_void,
);

/// Alignment of every emulated allocation (as `cudaMalloc`'s 256 is at least this).
const ALIGN: usize = 64;

/// A GPU device emulated on the host (see the module docs).
pub struct EmuDevice<'jit> {
    entries: HashMap<String, EmuEntry>,
    /// Entries of kernels using the GPU dialect: their shared bytes per block. Their blocks'
    /// threads run concurrently (one OS thread each), so barriers work.
    concurrent: HashMap<String, usize>,
    /// Live allocations: base address → layout.
    allocs: BTreeMap<u64, Layout>,
    /// Launches and emulated threads so far.
    stats: EmuStats,
    _jit: PhantomData<&'jit ()>,
}

/// What an [`EmuDevice`] has run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmuStats {
    /// Launches of `_prep` entries.
    pub preps: u64,
    /// Launches of segment entries.
    pub segments: u64,
    /// Threads run (over every launch).
    pub threads: u64,
}

/// Compiles `exports` for the emulation and runs `f` with a device that has their entries;
/// the code lives until `f` returns.
pub fn with_emulator<R>(exports: &[Export<'_>], f: impl FnOnce(&mut EmuDevice<'_>) -> R) -> Result<R, NvptxError> {
    let gpu = prepare(exports)?;
    let opts = TargetOptions::default();
    let (tgt, features) = target::resolve(&opts)?;
    let tm = target::machine(&tgt, &features, opts.opt_level, RelocMode::Default)?;
    let cx = Context::create();
    let module = crate::backend::llvm::new_module(&cx, &tm);
    let flavor = Flavor { ids: ThreadIds::Params, global: AddressSpace::default() };
    let native_f16 = tgt.features.iter().any(|f| f == "f16c" || f == "avx512fp16");
    let entries = lower_all(&cx, &module, &gpu, flavor, MathLib::Libm, native_f16)?.entries;
    crate::backend::llvm::finish_module(&cx, &module, &tgt, &features, &tm, opts.opt_level)?;
    let ee = crate::backend::llvm::jit::engine(&cx, &module, opts.opt_level)?;
    let mut concurrent = HashMap::new();
    for g in &gpu {
        if threads(&g.func).is_some() {
            let shared = shared_layout(&g.func).1;
            for k in 0..g.launch.segments {
                concurrent.insert(format!("{}_seg{k}", g.symbol), shared);
            }
        }
    }
    let mut map = HashMap::new();
    for name in entries {
        let addr = ee.get_function_address(&name).map_err(|e| LlvmError::Jit(format!("no entry '{name}': {e}")))?;
        // SAFETY: every entry is generated with EmuEntry's signature (lower.rs, ThreadIds::Params:
        // five pointers and four i32, returning void).
        map.insert(name, unsafe { std::mem::transmute::<usize, EmuEntry>(addr) });
    }
    let mut dev = EmuDevice { entries: map, concurrent, allocs: BTreeMap::new(), stats: EmuStats::default(), _jit: PhantomData };
    let r = f(&mut dev);
    drop(dev);
    drop(ee);
    Ok(r)
}

fn op_err(op: String, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::DeviceOp { op, reason: reason.into() }
}

impl EmuDevice<'_> {
    /// What the device has run so far.
    pub fn stats(&self) -> EmuStats {
        self.stats
    }

    /// The names of the entries it can launch, sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = self.entries.keys().cloned().collect();
        v.sort();
        v
    }

    /// Number of live allocations.
    pub fn live_allocations(&self) -> usize {
        self.allocs.len()
    }

    /// The host pointer to `[addr, addr + len)` if it lies inside one live allocation.
    fn range(&self, addr: DevPtr, len: usize, op: &str) -> Result<*mut u8, RuntimeError> {
        let inside = self
            .allocs
            .range(..=addr)
            .next_back()
            .is_some_and(|(&base, l)| addr - base <= l.size() as u64 && (len as u64) <= l.size() as u64 - (addr - base));
        if inside {
            Ok(addr as usize as *mut u8)
        } else {
            Err(op_err(format!("{op} of {len} bytes at {addr:#x}"), "not inside an allocation of this emulated device"))
        }
    }
}

impl GpuDevice for EmuDevice<'_> {
    fn alloc_zeroed(&mut self, bytes: usize) -> Result<DevPtr, RuntimeError> {
        let op = || format!("emulated allocation of {bytes} bytes");
        let layout = Layout::from_size_align(bytes.max(1), ALIGN).map_err(|e| op_err(op(), e.to_string()))?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err(op_err(op(), "out of host memory"));
        }
        let addr = p as usize as u64;
        self.allocs.insert(addr, layout);
        Ok(addr)
    }

    fn free(&mut self, ptr: DevPtr) {
        if let Some(layout) = self.allocs.remove(&ptr) {
            // SAFETY: `ptr` was returned by alloc_zeroed with this layout and is freed once
            // (removed from the map first).
            unsafe { std::alloc::dealloc(ptr as usize as *mut u8, layout) };
        }
    }

    fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<(), RuntimeError> {
        let p = self.range(dst, src.len(), "upload")?;
        // SAFETY: `range` checked that the destination lies inside a live allocation, which
        // cannot overlap the host slice `src` (device memory is only reachable through DevPtr).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
        Ok(())
    }

    fn download(&mut self, src: DevPtr, dst: &mut [u8]) -> Result<(), RuntimeError> {
        let p = self.range(src, dst.len(), "download")?;
        // SAFETY: as for upload, in the other direction.
        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn launch(&mut self, entry: &str, grid: u32, block: u32, args: [DevPtr; 5]) -> Result<(), RuntimeError> {
        let op = || format!("emulated launch of '{entry}' on {grid} x {block} threads");
        let f =
            *self.entries.get(entry).ok_or_else(|| op_err(op(), format!("no entry '{entry}' (entries: {})", self.entries().join(", "))))?;
        if grid == 0 || block == 0 {
            return Err(op_err(op(), "empty grid or block"));
        }
        for (i, &a) in args.iter().enumerate() {
            if !self.allocs.contains_key(&a) {
                return Err(op_err(op(), format!("argument {i} ({a:#x}) is not an allocation of this device")));
            }
        }
        if let Some(&shared) = self.concurrent.get(entry) {
            run_blocks(f, args, grid, block, shared).map_err(|e| op_err(op(), e))?;
        } else {
            let [bufs, dims, params, heap, status] = args.map(|a| a as usize as *mut c_void);
            for ctaid in 0..grid {
                for tid in 0..block {
                    // SAFETY: `f` is a JIT-compiled protocol entry alive for this device's lifetime;
                    // its five arguments are live allocations of this device laid out by the
                    // protocol's host driver, and the generated code only accesses memory the
                    // protocol gives it (bounds are checked or proved by the schedule).
                    unsafe { f(bufs, dims, params, heap, status, tid, block, ctaid, grid, std::ptr::null_mut()) };
                }
            }
        }
        if entry.ends_with("_prep") {
            self.stats.preps += 1;
        } else {
            self.stats.segments += 1;
        }
        self.stats.threads += u64::from(grid) * u64::from(block);
        Ok(())
    }

    fn synchronize(&mut self) -> Result<(), RuntimeError> {
        Ok(())
    }
}

impl Drop for EmuDevice<'_> {
    fn drop(&mut self) {
        for (addr, layout) in std::mem::take(&mut self.allocs) {
            // SAFETY: every entry of the map is a live allocation with its layout.
            unsafe { std::alloc::dealloc(addr as usize as *mut u8, layout) };
        }
    }
}

/// The emulation's barrier: waits on the block's `std::sync::Barrier` at `arg`.
///
/// # Safety
/// `arg` points to a live `Barrier` (the one [`run_blocks`] put in the block's context).
unsafe extern "C" fn emu_barrier(arg: *mut c_void) {
    // SAFETY: per the contract, `arg` is the block's barrier, alive while its threads run.
    let b = unsafe { &*(arg as *const std::sync::Barrier) };
    b.wait();
}

/// The state of the emulation's tensor-core products: the block's barrier and every thread's
/// operands of the product in progress.
struct EmuMma<'b> {
    barrier: &'b std::sync::Barrier,
    frags: std::sync::Mutex<Vec<[f32; 16]>>,
}

/// The emulation's tensor-core product ([`EmuBlockCtx::mma`]): every thread of the block
/// deposits its operands, waits for the others, computes its 4 elements of `D` from its
/// warp's operands (rounded to the input format; products summed in `f64`, then rounded to
/// `f32`), and waits again before the deposits can be reused.
///
/// # Safety
/// `arg` points to the block's live [`EmuMma`], `frag` to 20 `f32`, `thread` is the caller's
/// index in the block, and every thread of the block calls it.
unsafe extern "C" fn emu_mma(arg: *mut c_void, thread: i64, kind: i32, frag: *mut f32) {
    // SAFETY: per the contract.
    let (st, frag) = unsafe { (&*(arg as *const EmuMma<'_>), std::slice::from_raw_parts_mut(frag, 20)) };
    let round = |x: f32| -> f64 {
        match kind {
            0 => f64::from(half::f16::from_f32(x).to_f32()),
            _ => f64::from(half::bf16::from_f32(x).to_f32()),
        }
    };
    let t = thread as usize;
    {
        // A poisoned lock means another emulated thread panicked: carry on with its data.
        let mut g = st.frags.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = g.get_mut(t) {
            slot.copy_from_slice(&frag[..16]);
        }
    }
    st.barrier.wait();
    let d = {
        let g = st.frags.lock().unwrap_or_else(|e| e.into_inner());
        let warp = t / 32 * 32;
        // A[r][k] and B[k][n] from the warp's fragments (layout of `kir::Mma`).
        let mut a = [[0.0f64; 16]; 16];
        let mut b = [[0.0f64; 8]; 16];
        for l in 0..32 {
            let Some(f) = g.get(warp + l) else { continue };
            let (gr, tg) = (l / 4, l % 4);
            let at = [
                (gr, 2 * tg),
                (gr, 2 * tg + 1),
                (gr + 8, 2 * tg),
                (gr + 8, 2 * tg + 1),
                (gr, 2 * tg + 8),
                (gr, 2 * tg + 9),
                (gr + 8, 2 * tg + 8),
                (gr + 8, 2 * tg + 9),
            ];
            for (i, &(r, k)) in at.iter().enumerate() {
                a[r][k] = round(f[i]);
            }
            for (i, k) in [2 * tg, 2 * tg + 1, 2 * tg + 8, 2 * tg + 9].into_iter().enumerate() {
                b[k][gr] = round(f[8 + i]);
            }
        }
        let (gr, tg) = ((t % 32) / 4, t % 4);
        let mine = g.get(t).copied().unwrap_or([0.0; 16]);
        let at = [(gr, 2 * tg), (gr, 2 * tg + 1), (gr + 8, 2 * tg), (gr + 8, 2 * tg + 1)];
        let mut d = [0.0f32; 4];
        for (i, &(r, n)) in at.iter().enumerate() {
            let dot: f64 = (0..16).map(|k| a[r][k] * b[k][n]).sum();
            d[i] = (dot + f64::from(mine[12 + i])) as f32;
        }
        d
    };
    st.barrier.wait();
    frag[16..20].copy_from_slice(&d);
}

/// A value handed to the emulated threads of a block (raw addresses are not `Send`).
#[derive(Clone, Copy)]
struct Shared<T>(T);
// SAFETY: the addresses point to device memory and the block context, which outlive the
// scoped threads; the generated code synchronizes through barriers and atomics as a GPU does.
unsafe impl<T> Send for Shared<T> {}

/// Runs `grid` blocks of `block` threads of `f` one block after another, the threads of a
/// block concurrently (one scoped OS thread each) with a barrier and `shared` zero-filled
/// bytes of shared memory.
fn run_blocks(f: EmuEntry, args: [DevPtr; 5], grid: u32, block: u32, shared: usize) -> Result<(), String> {
    let layout = Layout::from_size_align(shared.max(16), 16).map_err(|e| e.to_string())?;
    for ctaid in 0..grid {
        let barrier = std::sync::Barrier::new(block as usize);
        // SAFETY: the layout has a non-zero size; freed below.
        let mem = unsafe { std::alloc::alloc_zeroed(layout) };
        if mem.is_null() {
            return Err("out of host memory for shared memory".into());
        }
        let mma = EmuMma { barrier: &barrier, frags: std::sync::Mutex::new(vec![[0.0; 16]; block as usize]) };
        let mut ctx = EmuBlockCtx {
            barrier: emu_barrier,
            arg: &barrier as *const std::sync::Barrier as *mut c_void,
            shared: mem,
            mma: emu_mma,
            mma_arg: &mma as *const EmuMma<'_> as *mut c_void,
        };
        let ctxp = Shared(&mut ctx as *mut EmuBlockCtx as *mut c_void);
        let a = Shared(args.map(|a| a as usize as *mut c_void));
        let spawned = std::thread::scope(|s| {
            let mut hs = Vec::new();
            for tid in 0..block {
                let b = std::thread::Builder::new().stack_size(1 << 20);
                let h = b.spawn_scoped(s, move || {
                    let (ctxp, a) = (ctxp, a);
                    let [bufs, dims, params, heap, status] = a.0;
                    // SAFETY: as in the sequential launch; `ctx` and the barrier live until the
                    // scope ends, after every thread of the block has returned.
                    unsafe { f(bufs, dims, params, heap, status, tid, block, ctaid, grid, ctxp.0) };
                });
                hs.push(h);
            }
            // A thread that cannot be spawned would strand the others at the barrier.
            hs.into_iter().all(|h| h.is_ok())
        });
        // SAFETY: allocated above with this layout; every thread using it has returned.
        unsafe { std::alloc::dealloc(mem, layout) };
        if !spawned {
            return Err("could not spawn the threads of an emulated block".into());
        }
    }
    Ok(())
}
