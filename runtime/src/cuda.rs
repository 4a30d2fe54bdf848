//! CUDA (feature `cuda`): [`CudaDevice`], the [`GpuDevice`] of a real GPU over the CUDA driver
//! API (cudarc, with `libcuda` opened at run time), and [`CudaArtifact`], a PTX artifact
//! (see [`crate::manifest::manifest_from_ptx`]) loaded on a GPU with its kernels
//! ([`CudaKernel::run`], [`CudaKernel::prepare`] for repeated, timed launches).
//!
//! No device, no panic: cudarc panics on its first driver call when the driver library is
//! missing, so every way in ([`device_count`], [`CudaDevice::from_ptx`], [`CudaArtifact::open`])
//! first checks that the library loads (`is_culib_present`) and that `cuInit` succeeds, and
//! returns [`RuntimeError::NoCudaDevice`] with the reason otherwise (no driver library, driver
//! initialization error, zero devices, ordinal out of range, no context).
//!
//! Invariants: a [`CudaDevice`] owns one context (the device's primary context, retained), one
//! loaded module and the allocations it made; all work goes to the context's legacy default
//! stream, so launches and copies run in call order. Every method binds the context to the
//! calling thread first. Copies are bounds-checked against the device's own allocations (an
//! address outside them is an error, not a driver fault). Downloads and `synchronize` wait
//! for the stream and report asynchronous kernel faults. Dropping the device synchronizes,
//! frees what is still allocated and unloads the module.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, DriverError, result, sys};

use crate::error::{ArtifactError, RuntimeError};
use crate::gpu::{self, DevPtr, GpuDevice, Prepared, prep_entry, segment_entry, sm_version};
use crate::manifest::{KernelManifest, Manifest, manifest_from_ptx};
use crate::tensor::{Scalar, Tensor};

/// Bytes kept of the PTX JIT's error log when a module is refused.
const JIT_LOG_BYTES: usize = 16 * 1024;

/// A driver error in words: its name and description.
fn describe(e: DriverError) -> String {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", e.0));
    match e.error_string() {
        Ok(s) => format!("{name} ({})", s.to_string_lossy()),
        Err(_) => name,
    }
}

/// A failed device operation.
fn op_error(op: impl Into<String>, e: DriverError) -> RuntimeError {
    RuntimeError::DeviceOp { op: op.into(), reason: describe(e) }
}

/// Checks that the driver library loads and initializes: the guard before any other cudarc
/// call (which would panic without the library).
fn init_driver() -> Result<(), RuntimeError> {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: `is_culib_present` only tries to open the driver library under its known names
    // and closes it again; it runs no driver code.
    let present = *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() });
    if !present {
        return Err(RuntimeError::NoCudaDevice("the CUDA driver library (libcuda.so) cannot be loaded".into()));
    }
    result::init().map_err(|e| RuntimeError::NoCudaDevice(format!("the CUDA driver failed to initialize: {}", describe(e))))
}

/// The number of CUDA devices, or [`RuntimeError::NoCudaDevice`] when there is no usable
/// driver.
pub fn device_count() -> Result<usize, RuntimeError> {
    init_driver()?;
    let n = result::device::get_count().map_err(|e| RuntimeError::NoCudaDevice(format!("cannot count CUDA devices: {}", describe(e))))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The primary context of device `ordinal`.
fn context(ordinal: usize) -> Result<Arc<CudaContext>, RuntimeError> {
    let n = device_count()?;
    if n == 0 {
        return Err(RuntimeError::NoCudaDevice("the CUDA driver reports zero devices".into()));
    }
    if ordinal >= n {
        return Err(RuntimeError::NoCudaDevice(format!("there is no device {ordinal}: the CUDA driver reports {n} device(s)")));
    }
    CudaContext::new(ordinal)
        .map_err(|e| RuntimeError::NoCudaDevice(format!("cannot create a context on device {ordinal}: {}", describe(e))))
}

/// A loaded PTX module, unloaded on drop.
struct Module {
    raw: sys::CUmodule,
    ctx: Arc<CudaContext>,
}

impl Module {
    /// JIT-compiles and loads `ptx` in `ctx`; the error carries the JIT's log.
    fn load(ctx: &Arc<CudaContext>, ptx: &str) -> Result<Module, String> {
        let image = CString::new(ptx).map_err(|e| format!("the PTX text has a NUL byte at offset {}", e.nul_position()))?;
        ctx.bind_to_thread().map_err(describe)?;
        let mut log = vec![0u8; JIT_LOG_BYTES];
        let mut options = [sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER, sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES];
        // The driver reads the size option's value as an integer stored in the pointer slot.
        let mut values: [*mut c_void; 2] = [log.as_mut_ptr().cast(), JIT_LOG_BYTES as *mut c_void];
        let mut raw: sys::CUmodule = std::ptr::null_mut();
        // SAFETY: `image` is a NUL-terminated PTX text; `options`/`values` are two matching
        // entries, the log buffer lives across the call and its size is what is passed.
        let status = unsafe { sys::cuModuleLoadDataEx(&mut raw, image.as_ptr().cast(), 2, options.as_mut_ptr(), values.as_mut_ptr()) };
        match status.result() {
            Ok(()) => Ok(Module { raw, ctx: ctx.clone() }),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                let text = text.trim();
                Err(if text.is_empty() { describe(e) } else { format!("{}: {text}", describe(e)) })
            }
        }
    }

    /// The entry point called `name`.
    fn function(&self, name: &str) -> Result<sys::CUfunction, String> {
        let c_name = CString::new(name).map_err(|_| format!("entry name '{name}' has a NUL byte"))?;
        self.ctx.bind_to_thread().map_err(describe)?;
        // SAFETY: `raw` is a loaded module (unloaded only on drop).
        unsafe { result::module::get_function(self.raw, c_name) }.map_err(describe)
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: loaded once, unloaded once, here. An error leaves nothing to do.
            let _ = unsafe { result::module::unload(self.raw) };
        }
    }
}

/// A CUDA GPU with one PTX module loaded: the [`GpuDevice`] that [`gpu::run`] drives.
pub struct CudaDevice {
    /// Base address → size in bytes of every live allocation.
    allocs: BTreeMap<DevPtr, usize>,
    /// Entry points looked up so far.
    functions: HashMap<String, sys::CUfunction>,
    module: Module,
    ctx: Arc<CudaContext>,
    /// The legacy default stream (null): everything runs in call order.
    stream: sys::CUstream,
    name: String,
    capability: (i32, i32),
}

// SAFETY: the driver handles held (context, module, functions, the null stream) are valid
// on any thread once the context is current there, and every method makes it current first
// (`bind`); the device is used through `&mut self` only, so never from two threads at once.
unsafe impl Send for CudaDevice {}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("ordinal", &self.ctx.ordinal())
            .field("name", &self.name)
            .field("capability", &self.capability)
            .field("allocations", &self.allocs.len())
            .finish_non_exhaustive()
    }
}

impl CudaDevice {
    /// Device 0 with `ptx` (a PTX text, e.g. a whole PTX artifact) loaded.
    pub fn from_ptx(ptx: &str) -> Result<CudaDevice, RuntimeError> {
        CudaDevice::from_ptx_on(ptx, 0)
    }

    /// Device `ordinal` with `ptx` loaded. The driver's JIT checks the PTX (a `.target` newer
    /// than the device is refused); its log is in the error.
    pub fn from_ptx_on(ptx: &str, ordinal: usize) -> Result<CudaDevice, RuntimeError> {
        let ctx = context(ordinal)?;
        CudaDevice::with_module(ctx, ptx)
            .map_err(|reason| RuntimeError::DeviceOp { op: format!("loading the PTX module on CUDA device {ordinal}"), reason })
    }

    /// The device of `ctx` with `ptx` loaded (the error: why the module was refused).
    fn with_module(ctx: Arc<CudaContext>, ptx: &str) -> Result<CudaDevice, String> {
        let name = ctx.name().map_err(describe)?;
        let capability = ctx.compute_capability().map_err(describe)?;
        let module = Module::load(&ctx, ptx)?;
        Ok(CudaDevice { allocs: BTreeMap::new(), functions: HashMap::new(), module, ctx, stream: std::ptr::null_mut(), name, capability })
    }

    /// The device's ordinal.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.capability
    }

    /// Runs kernel `k` of the loaded module ([`gpu::run`]).
    pub fn run(
        &mut self,
        k: &KernelManifest,
        inputs: &BTreeMap<String, Tensor>,
        params: &BTreeMap<String, Scalar>,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        gpu::run(self, k, inputs, params)
    }

    /// Makes the context current on this thread.
    fn bind(&self) -> Result<(), RuntimeError> {
        self.ctx.bind_to_thread().map_err(|e| op_error("making the CUDA context current", e))
    }

    /// Fails unless `[ptr, ptr + len)` lies inside one live allocation.
    fn check_range(&self, what: &str, ptr: DevPtr, len: usize) -> Result<(), RuntimeError> {
        let inside =
            self.allocs.range(..=ptr).next_back().is_some_and(|(&base, &size)| u128::from(ptr - base) + len as u128 <= size as u128);
        if inside {
            return Ok(());
        }
        Err(RuntimeError::DeviceOp {
            op: format!("{what} of {len} bytes at {ptr:#x}"),
            reason: "the range is not inside an allocation of this device".into(),
        })
    }

    /// The entry point `entry` (looked up once).
    fn function(&mut self, entry: &str) -> Result<sys::CUfunction, RuntimeError> {
        if let Some(&f) = self.functions.get(entry) {
            return Ok(f);
        }
        let f = self
            .module
            .function(entry)
            .map_err(|reason| RuntimeError::DeviceOp { op: format!("looking up entry point '{entry}'"), reason })?;
        self.functions.insert(entry.to_string(), f);
        Ok(f)
    }

    fn sync(&self, op: &str) -> Result<(), RuntimeError> {
        // SAFETY: the null stream of the current context.
        unsafe { result::stream::synchronize(self.stream) }.map_err(|e| op_error(op, e))
    }
}

impl GpuDevice for CudaDevice {
    fn alloc_zeroed(&mut self, bytes: usize) -> Result<DevPtr, RuntimeError> {
        let bytes = bytes.max(1);
        self.bind()?;
        // SAFETY: a plain allocation in the current context.
        let ptr = unsafe { result::malloc_sync(bytes) }.map_err(|e| op_error(format!("cuMemAlloc of {bytes} bytes"), e))?;
        self.allocs.insert(ptr, bytes);
        // SAFETY: `ptr` is a live allocation of `bytes` bytes.
        if let Err(e) = unsafe { result::memset_d8_async(ptr, 0, bytes, self.stream) } {
            self.free(ptr);
            return Err(op_error(format!("zeroing {bytes} bytes"), e));
        }
        Ok(ptr)
    }

    fn free(&mut self, ptr: DevPtr) {
        if self.allocs.remove(&ptr).is_none() || self.bind().is_err() {
            return;
        }
        // Nothing in flight may still use it. Errors (a faulted context) leave nothing to do.
        let _ = self.sync("synchronizing before a free");
        // SAFETY: `ptr` was allocated by `malloc_sync` here and is freed once.
        let _ = unsafe { result::free_sync(ptr) };
    }

    fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<(), RuntimeError> {
        self.check_range("upload", dst, src.len())?;
        self.bind()?;
        // SAFETY: the destination range is inside a live allocation (checked); a pageable
        // source is staged by the driver before the call returns.
        unsafe { result::memcpy_htod_async(dst, src, self.stream) }.map_err(|e| op_error(format!("upload of {} bytes", src.len()), e))
    }

    fn download(&mut self, src: DevPtr, dst: &mut [u8]) -> Result<(), RuntimeError> {
        self.check_range("download", src, dst.len())?;
        self.bind()?;
        // SAFETY: the source range is inside a live allocation (checked); `dst` is written
        // before the synchronization below returns.
        unsafe { result::memcpy_dtoh_async(dst, src, self.stream) }.map_err(|e| op_error(format!("download of {} bytes", dst.len()), e))?;
        self.sync("waiting for a download")
    }

    fn launch(&mut self, entry: &str, grid: u32, block: u32, args: [DevPtr; 5]) -> Result<(), RuntimeError> {
        let f = self.function(entry)?;
        self.bind()?;
        let mut values = args;
        let mut params: Vec<*mut c_void> = values.iter_mut().map(|v| std::ptr::from_mut(v).cast::<c_void>()).collect();
        // SAFETY: `f` is an entry of the loaded module taking five `.u64` params (the launch
        // protocol); `params` points at five live `u64`s, copied by the driver at launch.
        unsafe { result::launch_kernel(f, (grid, 1, 1), (block, 1, 1), 0, self.stream, &mut params) }
            .map_err(|e| op_error(format!("launch of '{entry}' on {grid} x {block} threads"), e))
    }

    fn synchronize(&mut self) -> Result<(), RuntimeError> {
        self.bind()?;
        self.sync("running the kernel")
    }

    fn fill_zero(&mut self, dst: DevPtr, bytes: usize) -> Result<(), RuntimeError> {
        self.check_range("memset", dst, bytes)?;
        self.bind()?;
        // SAFETY: the range is inside a live allocation (checked).
        unsafe { result::memset_d8_async(dst, 0, bytes, self.stream) }.map_err(|e| op_error(format!("zeroing {bytes} bytes"), e))
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        if self.bind().is_err() {
            return;
        }
        let _ = self.sync("synchronizing before teardown");
        for (&ptr, _) in std::mem::take(&mut self.allocs).iter() {
            // SAFETY: each live allocation is freed once, after the stream is idle.
            let _ = unsafe { result::free_sync(ptr) };
        }
    }
}

/// A PTX artifact loaded on a GPU: its checked manifest and a [`CudaDevice`] with the module.
pub struct CudaArtifact {
    path: PathBuf,
    manifest: Manifest,
    device: CudaDevice,
}

impl std::fmt::Debug for CudaArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaArtifact")
            .field("path", &self.path)
            .field("kernels", &self.kernel_names())
            .field("device", &self.device)
            .finish()
    }
}

/// One kernel of a [`CudaArtifact`].
pub struct CudaKernel<'a> {
    device: &'a mut CudaDevice,
    manifest: &'a KernelManifest,
}

impl std::fmt::Debug for CudaKernel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaKernel").field("name", &self.manifest.name).finish_non_exhaustive()
    }
}

/// True when a device of compute capability `device` runs code for `target` (`sm_XY`): the
/// same or a newer capability, or exactly the same for an arch-specific `sm_XYa`/`sm_XYf`.
fn runs_target(device: (i32, i32), target: &str) -> Option<bool> {
    let (major, minor) = sm_version(target)?;
    let want = (i64::from(major), i64::from(minor));
    let have = (i64::from(device.0), i64::from(device.1));
    Some(if target.ends_with(['a', 'f']) { have == want } else { have >= want })
}

impl CudaArtifact {
    /// Opens the PTX artifact at `path` on device 0 (see [`CudaArtifact::open_on`]).
    pub fn open(path: impl AsRef<Path>) -> Result<CudaArtifact, ArtifactError> {
        CudaArtifact::open_on(path, 0)
    }

    /// Opens the PTX artifact at `path` on device `ordinal`: reads the file, checks its
    /// manifest ([`manifest_from_ptx`]), that the device's compute capability runs the
    /// target's `sm_XY`, loads the module and checks that every kernel's entry points exist.
    /// Errors are wrapped with the path; no device is [`ArtifactError::Device`] holding
    /// [`RuntimeError::NoCudaDevice`] ([`ArtifactError::is_no_device`]).
    pub fn open_on(path: impl AsRef<Path>, ordinal: usize) -> Result<CudaArtifact, ArtifactError> {
        let path = path.as_ref();
        CudaArtifact::load(path, ordinal).map_err(|e| e.in_file(path))
    }

    fn load(path: &Path, ordinal: usize) -> Result<CudaArtifact, ArtifactError> {
        let bytes = crate::artifact::read_artifact(path)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| ArtifactError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 PTX text: {e}"))))?;
        let manifest = manifest_from_ptx(&text)?;
        let target = &manifest.target.cpu;
        if sm_version(target).is_none() {
            return Err(ArtifactError::InvalidManifest(format!("target cpu '{target}' is not a CUDA architecture sm_XY")));
        }
        let ctx = context(ordinal).map_err(|e| ArtifactError::Device(Box::new(e)))?;
        let device_error = |e: DriverError| ArtifactError::Device(Box::new(op_error(format!("querying CUDA device {ordinal}"), e)));
        let capability = ctx.compute_capability().map_err(device_error)?;
        if runs_target(capability, target) != Some(true) {
            return Err(ArtifactError::ComputeCapability {
                target: target.clone(),
                ordinal,
                device: ctx.name().map_err(device_error)?,
                capability,
            });
        }
        let mut device = CudaDevice::with_module(ctx, &text).map_err(ArtifactError::ModuleLoad)?;
        for k in &manifest.kernels {
            let segments = k.gpu.as_ref().map_or(0, |g| g.segments as usize);
            let entries = std::iter::once(prep_entry(&k.symbol)).chain((0..segments).map(|s| segment_entry(&k.symbol, s)));
            for entry in entries {
                device.function(&entry).map_err(|_| ArtifactError::MissingSymbol { kernel: k.name.clone(), symbol: entry.clone() })?;
            }
        }
        Ok(CudaArtifact { path: path.to_path_buf(), manifest, device })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its checked manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The device it is loaded on.
    pub fn device(&self) -> &CudaDevice {
        &self.device
    }

    /// Its kernels' names, in manifest order.
    pub fn kernel_names(&self) -> Vec<&str> {
        self.manifest.kernels.iter().map(|k| k.name.as_str()).collect()
    }

    /// The kernel called `name`.
    pub fn kernel(&mut self, name: &str) -> Result<CudaKernel<'_>, ArtifactError> {
        let Some(manifest) = self.manifest.kernels.iter().find(|k| k.name == name) else {
            return Err(ArtifactError::UnknownKernel {
                kernel: name.to_string(),
                available: self.manifest.kernels.iter().map(|k| k.name.clone()).collect(),
            });
        };
        Ok(CudaKernel { device: &mut self.device, manifest })
    }
}

impl<'a> CudaKernel<'a> {
    /// Its manifest entry.
    pub fn manifest(&self) -> &KernelManifest {
        self.manifest
    }

    /// Runs it with named inputs (every input, exact dtypes) and params (missing ones take
    /// the manifest defaults), returning the outputs by name ([`gpu::run`]).
    pub fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        params: &BTreeMap<String, Scalar>,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        gpu::run(self.device, self.manifest, inputs, params)
    }

    /// Checks a call and uploads its inputs, for repeated launches with inputs resident on
    /// the device: [`Prepared::launch`], [`Prepared::time`] (per-launch wall-clock times,
    /// host↔device copies of inputs and outputs excluded), [`Prepared::outputs`].
    pub fn prepare(self, inputs: &BTreeMap<String, Tensor>, params: &BTreeMap<String, Scalar>) -> Result<Prepared<'a>, RuntimeError> {
        Prepared::new(self.device, self.manifest, inputs, params)
    }
}
