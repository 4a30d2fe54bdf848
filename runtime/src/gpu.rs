//! The host side of the GPU launch protocol, written once over a [`GpuDevice`] so the same
//! driver runs on a real GPU (`crate::cuda`, feature `cuda`) and on device emulations in tests.
//!
//! The protocol (shared with the NVPTX code generator): a kernel with C symbol `S` is the PTX
//! entries `S_prep` and `S_seg0 .. S_seg{n-1}` ([`prep_entry`], [`segment_entry`]), one segment
//! per `Parallel` loop of its KIR. Every entry takes the same five device addresses
//! `(bufs, dims, params, heap, status)`: the argument buffers (inputs then outputs), the dims
//! (`i64`), the param slots (`u64`, as the CPU ABI), the heap buffers' addresses (one per KIR
//! heap buffer) and the `status` slots (`i64`): `status[0]` the failure code (0 = ok, set once
//! by the kernel with an atomic compare-and-swap from 0), `status[1 + h]` heap buffer `h`'s
//! element count, `status[1 + H + k]` segment `k`'s iteration count (both written by `S_prep`).
//!
//! [`Prepared::launch`] does one call: zero `status`, launch `S_prep` on 1 × 1 threads, read
//! `status` back; a failure code is the kernel's failure ([`crate::call::check_return`], as on
//! the CPU). Otherwise allocate each heap buffer (`max(len, 1) * elem_bytes` zeroed bytes),
//! upload their addresses, launch every segment with a non-zero count on
//! `min(ceil(count / block), MAX_GRID)` blocks of `block` threads in segment order, synchronize
//! and read `status[0]` again. Heap buffers are freed after every launch.
//!
//! Invariants: argument checking, dims binding, output shapes and param packing are
//! [`crate::call::bind_call`]'s, exactly as on the CPU path. Every device allocation is at
//! least one byte (empty tensors work) and is owned by a guard that frees it on every path,
//! errors and panics included. Values the device reports are checked before use: a negative
//! count, a heap size whose byte size overflows `i64`, or a failure code that is not 32 bits
//! is [`RuntimeError::GpuProtocol`], never a panic or an unchecked allocation. Device errors
//! are wrapped in [`RuntimeError::Gpu`] with the kernel's name.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::call::{self, check_return, named_outputs};
use crate::error::RuntimeError;
use crate::manifest::{GpuLaunch, KernelManifest};
use crate::native::NativeTensor;
use crate::tensor::{Scalar, Tensor};

/// A device address.
pub type DevPtr = u64;

/// The most blocks of one segment launch; the segments' grid-stride loops cover the rest.
pub const MAX_GRID: u32 = 65535 * 32;

/// What the launch protocol needs from a device.
pub trait GpuDevice {
    /// Allocates `bytes` zero-filled bytes (at least 1).
    fn alloc_zeroed(&mut self, bytes: usize) -> Result<DevPtr, RuntimeError>;
    /// Frees an allocation of this device.
    fn free(&mut self, ptr: DevPtr);
    /// Copies host bytes to the device.
    fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<(), RuntimeError>;
    /// Copies device bytes to the host (waits for earlier launches).
    fn download(&mut self, src: DevPtr, dst: &mut [u8]) -> Result<(), RuntimeError>;
    /// Launches entry point `entry` of the loaded module on a 1-D grid, in stream order.
    fn launch(&mut self, entry: &str, grid: u32, block: u32, args: [DevPtr; 5]) -> Result<(), RuntimeError>;
    /// Waits for every launch; reports asynchronous launch errors.
    fn synchronize(&mut self) -> Result<(), RuntimeError>;
    /// Sets `bytes` bytes at `dst` to zero, in stream order (between repeated launches). The
    /// default uploads zeros; a real device overrides it with a device-side memset.
    fn fill_zero(&mut self, dst: DevPtr, bytes: usize) -> Result<(), RuntimeError> {
        self.upload(dst, &vec![0; bytes])
    }
}

/// The prep entry of the kernel with C symbol `symbol`: `{symbol}_prep`.
pub fn prep_entry(symbol: &str) -> String {
    format!("{symbol}_prep")
}

/// The entry of segment `k` of the kernel with C symbol `symbol`: `{symbol}_seg{k}`.
pub fn segment_entry(symbol: &str, k: usize) -> String {
    format!("{symbol}_seg{k}")
}

/// The compute capability `(major, minor)` named by a CUDA target CPU `sm_XY` (`sm_90` →
/// (9, 0), `sm_90a` → (9, 0), `sm_120` → (12, 0)); `None` for anything else.
pub fn sm_version(cpu: &str) -> Option<(u32, u32)> {
    let digits = cpu.strip_prefix("sm_")?;
    let digits = digits.strip_suffix(['a', 'f']).unwrap_or(digits);
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (major, minor) = digits.split_at(digits.len() - 1);
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Runs kernel `k` (whose manifest has `gpu: Some(..)`) on `dev` with named inputs, through
/// the same validation as the CPU call path (names, dtypes, ranks, dims, params), returning
/// named outputs. Every device allocation is freed before it returns.
pub fn run(
    dev: &mut dyn GpuDevice,
    k: &KernelManifest,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
    let mut prepared = Prepared::new(dev, k, inputs, params)?;
    prepared.launch()?;
    prepared.outputs()
}

/// Device allocations of one call, freed on drop (the guard behind "freed on every path").
struct DeviceMemory<'a> {
    dev: &'a mut dyn GpuDevice,
    kernel: &'a str,
    live: Vec<DevPtr>,
}

impl<'a> DeviceMemory<'a> {
    /// Wraps a device error with the kernel's name.
    fn wrap(&self, error: RuntimeError) -> RuntimeError {
        RuntimeError::Gpu { kernel: self.kernel.to_string(), error: Box::new(error) }
    }

    /// `max(bytes, 1)` zeroed bytes, owned by the guard.
    fn alloc(&mut self, bytes: usize) -> Result<DevPtr, RuntimeError> {
        let ptr = self.dev.alloc_zeroed(bytes.max(1)).map_err(|e| self.wrap(e))?;
        self.live.push(ptr);
        Ok(ptr)
    }

    /// A new allocation holding `bytes`.
    fn alloc_with(&mut self, bytes: &[u8]) -> Result<DevPtr, RuntimeError> {
        let ptr = self.alloc(bytes.len())?;
        self.upload(ptr, bytes)?;
        Ok(ptr)
    }

    /// Frees `ptr` if the guard owns it.
    fn free(&mut self, ptr: DevPtr) {
        if let Some(i) = self.live.iter().rposition(|&p| p == ptr) {
            self.live.swap_remove(i);
            self.dev.free(ptr);
        }
    }

    fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<(), RuntimeError> {
        if src.is_empty() {
            return Ok(());
        }
        self.dev.upload(dst, src).map_err(|e| self.wrap(e))
    }

    fn download(&mut self, src: DevPtr, dst: &mut [u8]) -> Result<(), RuntimeError> {
        if dst.is_empty() {
            return Ok(());
        }
        self.dev.download(src, dst).map_err(|e| self.wrap(e))
    }

    fn fill_zero(&mut self, dst: DevPtr, bytes: usize) -> Result<(), RuntimeError> {
        if bytes == 0 {
            return Ok(());
        }
        self.dev.fill_zero(dst, bytes).map_err(|e| self.wrap(e))
    }

    fn launch(&mut self, entry: &str, grid: u32, block: u32, args: [DevPtr; 5]) -> Result<(), RuntimeError> {
        self.dev.launch(entry, grid, block, args).map_err(|e| self.wrap(e))
    }

    fn synchronize(&mut self) -> Result<(), RuntimeError> {
        self.dev.synchronize().map_err(|e| self.wrap(e))
    }
}

impl Drop for DeviceMemory<'_> {
    fn drop(&mut self) {
        while let Some(ptr) = self.live.pop() {
            self.dev.free(ptr);
        }
    }
}

/// A kernel call set up on a device: inputs uploaded and resident, outputs allocated, the
/// dims/params/heap/status arrays in place. [`Prepared::launch`] runs the kernel (any number
/// of times, without copying inputs again), [`Prepared::outputs`] copies the outputs back.
/// Dropping it frees every device allocation.
pub struct Prepared<'a> {
    mem: DeviceMemory<'a>,
    k: &'a KernelManifest,
    gpu: &'a GpuLaunch,
    /// `(bufs, dims, params, heap, status)`, the entries' arguments.
    args: [DevPtr; 5],
    /// Number of `status` slots: `1 + H + segments`.
    status_len: usize,
    /// Host buffers the outputs are downloaded into, in manifest order.
    outputs: Vec<NativeTensor>,
    /// Their device buffers.
    out_ptrs: Vec<DevPtr>,
    /// The current launch's heap buffers (freed when it ends).
    heap: Vec<DevPtr>,
    /// Launches so far.
    launches: usize,
}

impl std::fmt::Debug for Prepared<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("kernel", &self.k.name).field("launches", &self.launches).finish_non_exhaustive()
    }
}

/// `values` as little-endian bytes (the device's byte order).
fn le_bytes<T: Copy>(values: &[T], to_le: impl Fn(T) -> [u8; 8]) -> Vec<u8> {
    values.iter().flat_map(|&v| to_le(v)).collect()
}

impl<'a> Prepared<'a> {
    /// Checks the call against `k` ([`crate::call::bind_call`]), then uploads inputs, dims
    /// and params and allocates outputs, the heap table and `status` on `dev`.
    pub fn new(
        dev: &'a mut dyn GpuDevice,
        k: &'a KernelManifest,
        inputs: &BTreeMap<String, Tensor>,
        params: &BTreeMap<String, Scalar>,
    ) -> Result<Prepared<'a>, RuntimeError> {
        let gpu = k.gpu.as_ref().ok_or_else(|| RuntimeError::NotGpuKernel { kernel: k.name.clone() })?;
        // Also validates `k`, its launch info included (`GpuLaunch::validate`).
        let bound = call::bind_call(k, inputs, params)?;
        let n_heap = gpu.heap_elem_bytes.len();
        // `GpuLaunch::validate` bounds both counts by `MAX_GPU_SLOTS`: no overflow.
        let status_len = 1 + n_heap + gpu.segments as usize;
        let mut mem = DeviceMemory { dev, kernel: &k.name, live: Vec::new() };
        let mut bufs = Vec::with_capacity(bound.inputs.len() + bound.outputs.len());
        for t in &bound.inputs {
            bufs.push(mem.alloc_with(t.bytes())?);
        }
        let mut out_ptrs = Vec::with_capacity(bound.outputs.len());
        for t in &bound.outputs {
            out_ptrs.push(mem.alloc(t.bytes().len())?);
        }
        bufs.extend(&out_ptrs);
        let args = [
            mem.alloc_with(&le_bytes(&bufs, u64::to_le_bytes))?,
            mem.alloc_with(&le_bytes(&bound.dims, i64::to_le_bytes))?,
            mem.alloc_with(&le_bytes(&bound.params, u64::to_le_bytes))?,
            mem.alloc(8 * n_heap)?,
            mem.alloc(8 * status_len)?,
        ];
        Ok(Prepared { mem, k, gpu, args, status_len, outputs: bound.outputs, out_ptrs, heap: Vec::new(), launches: 0 })
    }

    /// The kernel's manifest entry.
    pub fn manifest(&self) -> &KernelManifest {
        self.k
    }

    /// Runs the kernel once (see the module docs); returns once the device has finished.
    /// Outputs are zeroed before every launch after the first, as the CPU path zero-fills
    /// them before each call. A failure reported by the kernel is
    /// [`RuntimeError::Kernel`] (or [`RuntimeError::UnknownFailure`]), as on the CPU.
    pub fn launch(&mut self) -> Result<(), RuntimeError> {
        let result = self.launch_once();
        for ptr in std::mem::take(&mut self.heap) {
            self.mem.free(ptr);
        }
        result
    }

    /// Launches the kernel `iters` times ([`Prepared::launch`]) and returns each launch's
    /// wall-clock time, measured on the host from before the prep launch to after the final
    /// synchronization and status read: it includes the prep launch, the status round trip,
    /// heap allocation and the segments, and excludes copying inputs in and outputs out
    /// (inputs stay resident). After the first launch it also includes re-zeroing the
    /// outputs and `status`.
    pub fn time(&mut self, iters: usize) -> Result<Vec<Duration>, RuntimeError> {
        (0..iters)
            .map(|_| {
                let start = Instant::now();
                self.launch()?;
                Ok(start.elapsed())
            })
            .collect()
    }

    /// Copies the outputs back from the device (the last launch's; zeros before any) and
    /// returns them by name.
    pub fn outputs(&mut self) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        for (t, &ptr) in self.outputs.iter_mut().zip(&self.out_ptrs) {
            self.mem.download(ptr, t.bytes_mut())?;
        }
        named_outputs(self.k, &self.outputs)
    }

    fn launch_once(&mut self) -> Result<(), RuntimeError> {
        let [.., heap_table, status] = self.args;
        if self.launches > 0 {
            self.mem.fill_zero(status, 8 * self.status_len)?;
            for (t, &ptr) in self.outputs.iter().zip(&self.out_ptrs) {
                self.mem.fill_zero(ptr, t.bytes().len())?;
            }
        }
        self.launches += 1;
        let k: &'a KernelManifest = self.k;
        let symbol = k.symbol.as_str();
        self.mem.launch(&prep_entry(symbol), 1, 1, self.args)?;
        let slots = self.read_status(self.status_len)?;
        self.check_code(slots[0])?;
        let n_heap = self.gpu.heap_elem_bytes.len();
        for (h, &elem) in self.gpu.heap_elem_bytes.iter().enumerate() {
            let len = slots[1 + h];
            let bytes = heap_bytes(len, elem)
                .ok_or_else(|| self.protocol(format!("heap buffer {h} has {len} elements of {elem} bytes (status[{}])", 1 + h)))?;
            let ptr = self.mem.alloc(bytes)?;
            self.heap.push(ptr);
        }
        let table = le_bytes(&self.heap, u64::to_le_bytes);
        self.mem.upload(heap_table, &table)?;
        let block = self.gpu.block;
        for seg in 0..self.gpu.segments as usize {
            let slot = 1 + n_heap + seg;
            let count = u64::try_from(slots[slot])
                .map_err(|_| self.protocol(format!("segment {seg} has iteration count {} (status[{slot}])", slots[slot])))?;
            if count == 0 {
                continue;
            }
            let grid = count.div_ceil(u64::from(block)).min(u64::from(MAX_GRID));
            // `grid <= MAX_GRID`, a `u32`.
            let grid = u32::try_from(grid).unwrap_or(MAX_GRID);
            self.mem.launch(&segment_entry(symbol, seg), grid, block, self.args)?;
        }
        self.mem.synchronize()?;
        let slots = self.read_status(1)?;
        self.check_code(slots[0])
    }

    /// The first `n` status slots.
    fn read_status(&mut self, n: usize) -> Result<Vec<i64>, RuntimeError> {
        let mut bytes = vec![0u8; 8 * n];
        self.mem.download(self.args[4], &mut bytes)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                i64::from_le_bytes(b)
            })
            .collect())
    }

    /// `status[0]` as the kernel's result: 0 is success; any code that fits 32 bits (signed,
    /// or unsigned as the CPU ABI's `int32_t` bits) is mapped as on the CPU.
    fn check_code(&self, code: i64) -> Result<(), RuntimeError> {
        let code32 = i32::try_from(code).ok().or_else(|| u32::try_from(code).ok().map(|c| c as i32));
        match code32 {
            Some(c) => check_return(self.k, c),
            None => Err(self.protocol(format!("status[0] holds {code}, which is not a 32-bit failure code"))),
        }
    }

    fn protocol(&self, reason: String) -> RuntimeError {
        RuntimeError::GpuProtocol { kernel: self.k.name.clone(), reason }
    }
}

/// The byte size of a heap buffer of `len` elements of `elem` bytes (`max(len, 1)` of
/// them), if `len` is not negative and the size fits both `i64` and `usize`.
fn heap_bytes(len: i64, elem: u32) -> Option<usize> {
    if len < 0 {
        return None;
    }
    let bytes = len.max(1).checked_mul(i64::from(elem))?;
    usize::try_from(bytes).ok()
}

#[cfg(test)]
#[path = "gpu_tests.rs"]
mod tests;
