//! The NVPTX backend (GPU): KIR → PTX through LLVM's NVPTX target, following the GPU launch
//! protocol shared with the runtime (`tfmc_runtime::gpu`), and a CPU emulation of the same
//! code ([`emu`]) so that the protocol and the lowering are tested without a GPU.
//!
//! The protocol, in short (the full contract is in `docs/ARCHITECTURE.md`): kernel `K` with
//! C symbol `S` becomes the entries `S_prep` and `S_seg0..S_seg{n_seg-1}` (one per `Parallel`
//! of the KIR after [`spine`], pre-order), each taking five device addresses
//! `(bufs, dims, params, heap, status)`. The host runs `S_prep` on one thread; it runs the
//! spine, writing the heap buffers' element counts to `status[1 + h]` and each segment's
//! iteration count to `status[1 + H + k]` (or a failure code to `status[0]`); then the host
//! allocates the heap buffers and launches every segment with iterations, in order, on
//! [`BLOCK`]-thread blocks; each thread re-runs the (memory-free) spine and runs its share of
//! segment `k`'s iterations in a grid-stride loop. A kernel using the GPU dialect's block
//! parallels (`schedule::kir` module docs) launches every segment on blocks of their `T`
//! threads; a block parallel counts `T` per iteration, and a block-stride loop gives each
//! block its share of the iterations ([`block`]).
//!
//! Pipeline ([`emit_ptx`]): check the exports (symbols, KIR) → [`spine`] transform → lower each
//! export's entries ([`lower`], reusing `backend::llvm`'s expression and statement lowering
//! with libdevice math; what differs on a device is `lower::DeviceFn`, this backend's
//! implementation of `backend::llvm::lowering::Lowering`, and [`block`]) → link libdevice if
//! any `__nv_*` function is called ([`libdevice`]) → verify → `default<O{n}>` → PTX text.
//! Nothing is emitted for a module that fails to verify. The dependency goes one way: this
//! backend builds on `backend::llvm`, which names nothing of it.
//!
//! Choices:
//! - [`BLOCK`] = 128 threads: the schedule runs one GPU thread per outer point with long
//!   per-thread loops (registers and local memory heavy), so small blocks leave each thread
//!   more registers at a given occupancy, and a grid of a few thousand rows still spreads over
//!   every SM (8192 rows = 64 blocks of 128, versus 32 of 256 on a 132-SM H100).
//! - The PTX ISA ([`ptx_feature`]) is `ptx80` (CUDA 12.0) up to sm_90, so the code loads on
//!   any driver from CUDA 12.0 on; newer architectures get the ISA that introduced them.
//! - Math: NVPTX selects `llvm.sqrt fabs floor ceil roundeven minimum maximum fma
//!   fptosi.sat` and the overflow intrinsics natively; it has no instruction for `llvm.exp
//!   exp2 log log2 sin cos pow` (LLVM aborts the process: "no libcall available") and expands
//!   `frem` inexactly, so those, and the libm functions (`tanh erf log1p expm1 atan2`), are
//!   libdevice calls (`backend::llvm::codegen::MathLib::Libdevice`), inlined after linking.
//! - `F16` uses LLVM's `half` with native conversions (`cvt.f32.f16`, `cvt.rn.f16.f32`, sm_53
//!   and later); `BF16` uses the integer conversions of `backend::llvm::half`.

pub(crate) mod block;
pub mod emu;
pub mod libdevice;
pub(crate) mod lower;
pub mod spine;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_attention;
#[cfg(test)]
mod tests_block;
#[cfg(test)]
mod tests_emu;
#[cfg(test)]
mod tests_mma;

use std::collections::HashSet;
use std::path::PathBuf;

use inkwell::AddressSpace;
use inkwell::OptimizationLevel;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple};

use super::Export;
use crate::backend::llvm::LlvmError;
use crate::backend::llvm::codegen::{Cg, MathLib};
use crate::schedule::kir;
pub use lower::ThreadIds;
use lower::{Flavor, emit_entries};
pub use spine::SpineError;

/// Threads per block of every segment launch (see the module docs for why 128).
pub const BLOCK: u32 = 128;

/// The NVPTX target triple.
pub const TRIPLE: &str = "nvptx64-nvidia-cuda";

/// The GPU architectures [`emit_ptx`] accepts (`sm_XY` as `XY`) and the PTX ISA feature used
/// for each (`ptx80` where it suffices, else the ISA that introduced the architecture).
const ARCHS: &[(u32, &str)] = &[
    (70, "ptx80"),
    (72, "ptx80"),
    (75, "ptx80"),
    (80, "ptx80"),
    (86, "ptx80"),
    (87, "ptx80"),
    (89, "ptx80"),
    (90, "ptx80"),
    (100, "ptx86"),
    (101, "ptx86"),
    (103, "ptx88"),
    (120, "ptx87"),
    (121, "ptx88"),
];

/// What to compile for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvptxOptions {
    /// The GPU architecture `sm_{sm}` (one of 70, 72, 75, 80, 86, 87, 89, 90, 100, 101, 103,
    /// 120, 121).
    pub sm: u32,
    /// Optimization level, 0..=3.
    pub opt_level: u8,
    /// libdevice's path; `None` searches for it ([`libdevice::find`]). Only read when a kernel
    /// calls a libdevice function.
    pub libdevice: Option<PathBuf>,
}

impl Default for NvptxOptions {
    fn default() -> Self {
        NvptxOptions { sm: 90, opt_level: 3, libdevice: None }
    }
}

/// How the host launches one export (what the artifact manifest records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchInfo {
    /// Threads per block of segment launches: the kernel's block parallels' `T` (GPU dialect),
    /// else [`BLOCK`].
    pub block: u32,
    /// Element size in bytes of each heap buffer, in the order of the KIR's heap buffers.
    pub heap_elem_bytes: Vec<u32>,
    /// Number of segments (`S_seg0 ..`).
    pub segments: u32,
}

/// Why the NVPTX backend could not produce code.
#[derive(Debug, thiserror::Error)]
pub enum NvptxError {
    /// An architecture [`emit_ptx`] does not support.
    #[error("unsupported GPU architecture sm_{sm}; supported: {}", supported_archs())]
    Arch {
        /// The `sm` asked for.
        sm: u32,
    },
    /// A kernel uses tensor-core products (`mma.sync...m16n8k16`), which need sm_80 or newer.
    #[error("kernel '{kernel}' uses tensor-core products (mma.m16n8k16), which need sm_80 or newer, not sm_{sm}")]
    MmaArch {
        /// The kernel.
        kernel: String,
        /// The `sm` asked for.
        sm: u32,
    },
    /// Checking, lowering, verifying or optimizing failed (see [`LlvmError`]).
    #[error(transparent)]
    Llvm(#[from] LlvmError),
    /// The kernel's spine cannot follow the launch protocol.
    #[error("kernel '{kernel}' cannot be compiled for a GPU: {error}")]
    Spine {
        /// The kernel.
        kernel: String,
        /// Why.
        error: SpineError,
    },
    /// A kernel calls a math function that needs libdevice, and none was found.
    #[error(
        "kernel '{kernel}' calls '{function}', which on a GPU comes from CUDA's libdevice (libdevice.10.bc), but none was found (looked at: {}); run ./setup.sh (it installs the nvidia-cuda-nvcc-cu12 wheel into .venv) or set {} to the file's path",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        libdevice::ENV
    )]
    NoLibdevice {
        /// The kernel.
        kernel: String,
        /// The libdevice function (`__nv_tanhf`).
        function: String,
        /// Every path tried.
        searched: Vec<PathBuf>,
    },
    /// libdevice was found but could not be read or linked.
    #[error("cannot use libdevice '{}': {message}", path.display())]
    LibdeviceLoad {
        /// Its path.
        path: PathBuf,
        /// LLVM's message.
        message: String,
    },
}

fn supported_archs() -> String {
    ARCHS.iter().map(|(s, _)| format!("sm_{s}")).collect::<Vec<_>>().join(", ")
}

/// The PTX ISA feature (`ptx80`, ...) used for `sm_{sm}`.
pub fn ptx_feature(sm: u32) -> Result<&'static str, NvptxError> {
    ARCHS.iter().find(|(s, _)| *s == sm).map(|(_, f)| *f).ok_or(NvptxError::Arch { sm })
}

/// An export after the spine transform, with its launch information.
pub(crate) struct GpuExport {
    pub(crate) func: kir::Func,
    pub(crate) symbol: String,
    pub(crate) launch: LaunchInfo,
}

/// Checks `exports` (symbols, KIR, entry names) and applies the spine transform to each.
pub(crate) fn prepare(exports: &[Export<'_>]) -> Result<Vec<GpuExport>, NvptxError> {
    // Distinct symbols give distinct entry names: `S_prep` ends in `_prep`, `S_seg{k}` in
    // digits, and the last `_seg` of a segment entry separates `S` from `k`.
    super::check_symbols(exports).map_err(|(symbol, reason)| LlvmError::Symbol { symbol, reason })?;
    for e in exports {
        // The GPU dialect is allowed here (`validate::check_gpu`), unlike on the CPU.
        crate::schedule::validate::check_gpu(e.func).map_err(|message| LlvmError::InvalidKir { kernel: e.func.name.clone(), message })?;
    }
    let mut out = Vec::new();
    for e in exports {
        // Tile products run as their scalar loops on a GPU (each thread's share is small).
        let expanded = crate::schedule::expand::expand_tile_products(e.func);
        let func = spine::make_spine_memory_free(&expanded).map_err(|error| NvptxError::Spine { kernel: e.func.name.clone(), error })?;
        // The transform keeps KIR valid; checked again since the backend relies on it.
        crate::schedule::validate::check_gpu(&func).map_err(|message| LlvmError::InvalidKir {
            kernel: func.name.clone(),
            message: format!("after the GPU spine transform: {message}"),
        })?;
        let segments = spine::count_parallel(&func.body);
        let launch = LaunchInfo {
            block: block::threads(&func).unwrap_or(BLOCK),
            heap_elem_bytes: lower::heap_elem_bytes(&func),
            segments: segments as u32,
        };
        out.push(GpuExport { func, symbol: e.symbol.clone(), launch });
    }
    Ok(out)
}

/// How `func` is launched (its segments after the spine transform, heap element sizes).
pub fn launch_info(func: &kir::Func) -> Result<LaunchInfo, NvptxError> {
    let e = Export::new(func, "k");
    let mut v = prepare(std::slice::from_ref(&e))?;
    // prepare returns one entry per export.
    v.pop().map(|g| g.launch).ok_or_else(|| LlvmError::Internal("no export prepared".into()).into())
}

/// The NVPTX target machine for `opts`.
fn machine(opts: &NvptxOptions) -> Result<TargetMachine, NvptxError> {
    let feature = ptx_feature(opts.sm)?;
    if opts.opt_level > 3 {
        return Err(LlvmError::OptLevel(opts.opt_level).into());
    }
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| Target::initialize_nvptx(&InitializationConfig::default()));
    let err = |message: String| LlvmError::Target { triple: TRIPLE.to_string(), message };
    let triple = TargetTriple::create(TRIPLE);
    let t = Target::from_triple(&triple).map_err(|e| err(e.to_string()))?;
    let level = match opts.opt_level {
        0 => OptimizationLevel::None,
        1 => OptimizationLevel::Less,
        2 => OptimizationLevel::Default,
        _ => OptimizationLevel::Aggressive,
    };
    t.create_target_machine(&triple, &format!("sm_{}", opts.sm), &format!("+{feature}"), level, RelocMode::Default, CodeModel::Default)
        .ok_or_else(|| err("LLVM could not create a target machine".to_string()).into())
}

/// What [`lower_all`] put into a module.
pub(crate) struct Lowered {
    /// Every entry point's name.
    pub(crate) entries: HashSet<String>,
    /// `(kernel, libdevice function)` for each libdevice function, with the first kernel
    /// calling it.
    pub(crate) libdevice_calls: Vec<(String, String)>,
}

/// Lowers every export's entries into `module` with `flavor` and `math`.
pub(crate) fn lower_all<'ctx>(
    cx: &'ctx Context,
    module: &Module<'ctx>,
    exports: &[GpuExport],
    flavor: lower::Flavor,
    math: MathLib,
    native_f16: bool,
) -> Result<Lowered, NvptxError> {
    let mut entries = HashSet::new();
    let mut calls = Vec::new();
    let mut known: HashSet<String> = HashSet::new();
    for e in exports {
        let mut cg = Cg::new(cx, module, &e.func, &e.symbol, native_f16);
        cg.math = math;
        entries.extend(emit_entries(&mut cg, flavor, e.launch.segments as usize, e.launch.block)?);
        // The libdevice functions declared since the last export are this one's.
        let mut f = module.get_first_function();
        while let Some(func) = f {
            let name = func.get_name().to_string_lossy().into_owned();
            if name.starts_with("__nv_") && known.insert(name.clone()) {
                calls.push((e.func.name.clone(), name));
            }
            f = func.get_next_function();
        }
    }
    Ok(Lowered { entries, libdevice_calls: calls })
}

/// PTX for `exports` (one module; entries `S_prep`, `S_seg{k}` per export, see the module
/// docs). Launch information per export comes from [`launch_info`].
pub fn emit_ptx(exports: &[Export<'_>], opts: &NvptxOptions) -> Result<String, NvptxError> {
    let tm = machine(opts)?;
    // LLVM cannot select the instruction below sm_80 (it aborts instead of failing).
    if let Some(e) = exports.iter().find(|e| opts.sm < 80 && crate::schedule::kir::gpu::has_mma(&e.func.body)) {
        return Err(NvptxError::MmaArch { kernel: e.func.name.clone(), sm: opts.sm });
    }
    let gpu = prepare(exports)?;
    let cx = Context::create();
    let module = crate::backend::llvm::new_module(&cx, &tm);
    let flavor = Flavor { ids: ThreadIds::Sreg, global: AddressSpace::from(1u16) };
    let lowered = lower_all(&cx, &module, &gpu, flavor, MathLib::Libdevice, true)?;
    if let Some((kernel, function)) = lowered.libdevice_calls.first() {
        let found = match &opts.libdevice {
            Some(p) if p.is_file() => Ok(p.clone()),
            Some(p) => Err(vec![p.clone()]),
            None => libdevice::find(),
        };
        let path = found.map_err(|searched| NvptxError::NoLibdevice { kernel: kernel.clone(), function: function.clone(), searched })?;
        libdevice::link(&cx, &module, &path, &lowered.entries)?;
    }
    module.verify().map_err(|e| LlvmError::Verify(e.to_string()))?;
    module
        .run_passes(&format!("default<O{}>", opts.opt_level), &tm, PassBuilderOptions::create())
        .map_err(|e| LlvmError::Passes(e.to_string()))?;
    let buf = tm.write_to_memory_buffer(&module, FileType::Assembly).map_err(|e| LlvmError::Codegen(e.to_string()))?;
    Ok(String::from_utf8_lossy(buf.as_slice()).into_owned())
}
