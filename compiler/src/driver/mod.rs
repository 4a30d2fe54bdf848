//! The driver: "compile this kernel for this target", as one flat list of named passes per
//! kernel — `ir::lower::lower` → `optimize::optimize` → `schedule::schedule` → a backend — and
//! what each target makes of the result: machine code in memory (JIT), a shared library with
//! a C header, a PTX artifact, a text dump of a stage, or a run through the runtime's
//! validated call path.
//!
//! Owns the one [`Target`] every front door maps onto (the CLI, `watch`, `bench`,
//! `tfmc-build`, the tests): the schedule's options, the backend and the artifact manifest's
//! target are all derived from it here, and nowhere else. Invariants: a kernel prepared for a
//! target is scheduled with that target's schedule (`--emit=kir --target cuda` shows the GPU
//! plan); every compiled kernel is described by a manifest entry, so the JIT, AOT and GPU
//! paths call kernels through the same checked ABI (`tfmc_runtime::call`,
//! `tfmc_runtime::gpu`).
//!
//! Files: this one (targets, options, errors, the passes and the per-target entry points);
//! `manifest` (manifest entries and artifact manifests); `cuda` (the GPU pipeline: launch
//! information, PTX artifacts, device and emulated runs); `live` ([`LiveJit`]: JIT code kept
//! alive past a closure, for the Python package).

mod cuda;
mod live;
mod manifest;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tfmc_runtime::manifest::KernelManifest;
use tfmc_runtime::{Scalar, Tensor};

use crate::Program;
use crate::backend::cranelift::{self, CraneliftOptions};
use crate::backend::llvm::{self, LlvmError, PackedFn, TargetOptions};
use crate::backend::{Export, nvptx};
use crate::schedule::{self, ScheduleError, ScheduleOptions, Scheduled};

pub use cuda::{ATTENTION_THREADS, ATTENTION_TILE_M, DEFAULT_SM};
pub use live::LiveJit;
pub use manifest::{manifest, symbol};

/// What a kernel is compiled for: the one target type of the compiler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Machine code for a CPU through LLVM: JIT-compiled in process, or an AOT shared
    /// library (`tfmc build`). The options name the CPU (`None`: this machine's), its
    /// features and the optimization level.
    Llvm(TargetOptions),
    /// Machine code for this machine through Cranelift (JIT only; compiles in milliseconds).
    Cranelift(CraneliftOptions),
    /// PTX for NVIDIA GPUs: a `.ptx` artifact, or a run on CUDA device 0.
    Cuda(Gpu),
    /// The CUDA path (GPU schedule, NVPTX lowering, launch protocol) emulated on this CPU, one
    /// GPU thread at a time: for checking GPU code without a GPU.
    GpuEmu(Gpu),
}

/// A GPU target's choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gpu {
    /// The architecture `sm_{sm}` (90: H100/H200, 80: A100).
    pub sm: u32,
    /// LLVM optimization level of the NVPTX pipeline, 0..=3.
    pub opt_level: u8,
    /// Threads per block of the attention plans (a positive multiple of 32).
    pub threads: u32,
    /// Use tensor-core products for f16/bf16 attention (only from sm_80 on).
    pub tensor_cores: bool,
}

impl Default for Gpu {
    fn default() -> Gpu {
        Gpu { sm: DEFAULT_SM, opt_level: 3, threads: ATTENTION_THREADS, tensor_cores: true }
    }
}

impl Default for Target {
    /// LLVM for this machine at O3.
    fn default() -> Target {
        Target::host_llvm()
    }
}

impl Target {
    /// LLVM for this machine's CPU and features, at O3.
    pub fn host_llvm() -> Target {
        Target::Llvm(TargetOptions::default())
    }

    /// Cranelift for this machine with its default options.
    pub fn cranelift() -> Target {
        Target::Cranelift(CraneliftOptions::default())
    }

    /// CUDA `sm_{sm}` with the default GPU choices.
    pub fn cuda(sm: u32) -> Target {
        Target::Cuda(Gpu { sm, ..Gpu::default() })
    }

    /// The GPU emulation with the default GPU choices.
    pub fn gpu_emu() -> Target {
        Target::GpuEmu(Gpu::default())
    }

    /// The name used on the command line and in reports (`llvm`, `cranelift`, `cuda`,
    /// `gpu-emu`).
    pub fn name(&self) -> &'static str {
        match self {
            Target::Llvm(_) => "llvm",
            Target::Cranelift(_) => "cranelift",
            Target::Cuda(_) => "cuda",
            Target::GpuEmu(_) => "gpu-emu",
        }
    }

    /// The GPU choices, for the GPU targets.
    pub fn gpu(&self) -> Option<&Gpu> {
        match self {
            Target::Cuda(g) | Target::GpuEmu(g) => Some(g),
            Target::Llvm(_) | Target::Cranelift(_) => None,
        }
    }

    /// True for the targets that compile to machine code in this process (LLVM, Cranelift).
    pub fn is_jit(&self) -> bool {
        matches!(self, Target::Llvm(_) | Target::Cranelift(_))
    }

    /// The schedule's options for this target: the CPU plans with `base`'s tiles, or the GPU
    /// block-parallel plans (blocks of [`Gpu::threads`] rows, key tiles of
    /// [`ATTENTION_TILE_M`], tensor cores from sm_80 when asked for).
    pub fn schedule_options(&self, base: &ScheduleOptions) -> ScheduleOptions {
        let mut o = base.clone();
        match self.gpu() {
            None => o.target = schedule::Target::Cpu,
            Some(g) => {
                o.target = schedule::Target::Gpu { threads: g.threads, tensor_cores: g.tensor_cores && g.sm >= 80 };
                o.tile_p = g.threads;
                o.tile_m = ATTENTION_TILE_M;
            }
        }
        o
    }
}

/// Everything besides the target that decides the code of a kernel.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// Optimizer options (rules, limits, split); `None`: the defaults for the program.
    pub optimize: Option<crate::optimize::Options>,
    /// Loop-nest choices (the target part is set from the [`Target`]).
    pub schedule: ScheduleOptions,
    /// Param values fixed at build time: they become the manifest's defaults.
    pub params: BTreeMap<String, Scalar>,
}

/// Why a kernel could not be compiled or run.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Lowering to the IR failed.
    #[error(transparent)]
    Lower(#[from] crate::ir::lower::LowerError),
    /// The IR verifier rejected a cascade.
    #[error(transparent)]
    Verify(#[from] crate::ir::verify::VerifyError),
    /// Scheduling failed.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// LLVM failed.
    #[error(transparent)]
    Llvm(#[from] LlvmError),
    /// Cranelift failed.
    #[error(transparent)]
    Cranelift(#[from] crate::backend::cranelift::CraneliftError),
    /// The NVPTX (GPU) backend failed.
    #[error(transparent)]
    Nvptx(#[from] crate::backend::nvptx::NvptxError),
    /// The compiled kernel rejected its inputs or failed.
    #[error(transparent)]
    Runtime(#[from] tfmc_runtime::RuntimeError),
    /// The target cannot do what was asked (e.g. a shared library from Cranelift).
    #[error("{0}")]
    Unsupported(String),
    /// A broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
    /// A `--param` does not fit.
    #[error("{0}")]
    Param(String),
    /// The output paths cannot be used as given (e.g. the library where its header goes).
    #[error("{0}")]
    Output(String),
    /// Writing a file failed.
    #[error("cannot write '{path}': {error}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
}

/// A kernel scheduled for a target and described, ready for its backend.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The loop nest and ABI.
    pub scheduled: Scheduled,
    /// Its manifest entry (with launch information on GPU targets).
    pub manifest: KernelManifest,
}

impl Prepared {
    /// The backends' view of this kernel: its KIR and C symbol.
    pub fn export(&self) -> Export<'_> {
        Export::new(&self.scheduled.func, self.manifest.symbol.clone())
    }
}

fn exports(kernels: &[Prepared]) -> Vec<Export<'_>> {
    kernels.iter().map(Prepared::export).collect()
}

/// The passes, in order: lowers, optimizes and schedules kernel `name` of `program` for
/// `target`, and describes it (manifest entry; launch information on GPU targets).
pub fn prepare(program: &Program, name: &str, opts: &CompileOptions, target: &Target) -> Result<Prepared, CompileError> {
    let lowered = crate::ir::lower::lower(program, name)?;
    let oopts = opts.optimize.clone().unwrap_or_else(|| crate::optimize::Options::for_program(program));
    let (optimized, _) = crate::optimize::optimize(&lowered, &oopts)?;
    let scheduled = crate::schedule::schedule(program, &optimized, &target.schedule_options(&opts.schedule))?;
    let mut manifest = manifest::kernel_manifest(program, name, &scheduled, &opts.params)?;
    if target.gpu().is_some() {
        manifest.gpu = Some(cuda::launch(&scheduled)?);
    }
    Ok(Prepared { scheduled, manifest })
}

/// Every kernel of `program` (or only `only`; an unknown name fails naming the program's
/// kernels) prepared for `target`.
pub fn prepare_all(program: &Program, only: Option<&str>, opts: &CompileOptions, target: &Target) -> Result<Vec<Prepared>, CompileError> {
    match only {
        Some(name) => Ok(vec![prepare(program, name, opts, target)?]),
        None => program.kernels.iter().map(|k| prepare(program, &k.name, opts, target)).collect(),
    }
}

/// A code-generation stage that [`emit`] prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The scheduled loop nests (KIR) of the target's schedule.
    Kir,
    /// LLVM IR after the target's optimization level (LLVM targets).
    Llvm,
    /// Assembly (LLVM targets).
    Asm,
    /// Cranelift IR as translated (Cranelift targets).
    Clif,
    /// PTX (CUDA targets).
    Ptx,
}

impl Stage {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Kir => "kir",
            Stage::Llvm => "llvm",
            Stage::Asm => "asm",
            Stage::Clif => "clif",
            Stage::Ptx => "ptx",
        }
    }
}

/// The text of `stage` for every kernel of `program` (or only `only`) compiled for `target`.
/// A stage the target has no such thing for (`ptx` of an LLVM target) is
/// [`CompileError::Unsupported`].
pub fn emit(program: &Program, only: Option<&str>, opts: &CompileOptions, target: &Target, stage: Stage) -> Result<String, CompileError> {
    let unsupported = || CompileError::Unsupported(format!("the {} target has no '{}' stage", target.name(), stage.name()));
    let kernels = prepare_all(program, only, opts, target)?;
    let ex = exports(&kernels);
    Ok(match (stage, target) {
        (Stage::Kir, _) => kernels.iter().map(|k| format!("{}\n", k.scheduled.func)).collect(),
        (Stage::Llvm, Target::Llvm(o)) => llvm::emit_llvm(&ex, o)?,
        (Stage::Asm, Target::Llvm(o)) => llvm::emit_asm(&ex, o)?,
        (Stage::Clif, Target::Cranelift(o)) => cranelift::emit_clif(&ex, o)?,
        (Stage::Ptx, Target::Cuda(g)) => nvptx::emit_ptx(&ex, &cuda::nvptx_options(g))?,
        _ => return Err(unsupported()),
    })
}

/// Compiles every kernel of `program` into the artifact `out`, written atomically: for an
/// LLVM target a shared library plus a C header beside it (`out` with extension `.h`); for a
/// CUDA target a PTX artifact (PTX text and its manifest line). Other targets have no
/// artifact ([`CompileError::Unsupported`]).
pub fn build(program: &Program, out: &Path, opts: &CompileOptions, target: &Target) -> Result<Vec<Prepared>, CompileError> {
    match target {
        Target::Llvm(o) => build_shared_library(program, out, opts, target, o),
        Target::Cuda(g) => cuda::build_ptx(program, out, opts, target, g),
        Target::Cranelift(_) | Target::GpuEmu(_) => {
            Err(CompileError::Unsupported(format!("the {} target builds no artifact; build for llvm or cuda", target.name())))
        }
    }
}

fn build_shared_library(
    program: &Program,
    out: &Path,
    opts: &CompileOptions,
    target: &Target,
    o: &TargetOptions,
) -> Result<Vec<Prepared>, CompileError> {
    let hpath = out.with_extension("h");
    if same_file(out, &hpath) {
        return Err(CompileError::Output(format!(
            "the output '{}' is where the C header goes (the output with extension .h): the header would overwrite the library; name the library e.g. '{}'",
            out.display(),
            out.with_extension("so").display()
        )));
    }
    let kernels = prepare_all(program, None, opts, target)?;
    let m = manifest(&kernels, target)?;
    let guard = out.file_stem().map(|s| s.to_string_lossy().to_uppercase()).unwrap_or_else(|| "TFMC".to_string());
    let guard: String = guard.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let header = tfmc_runtime::manifest::c_header(&m, &format!("TFMC_{guard}_H"));
    llvm::build_shared_library(&exports(&kernels), &m.to_json(), o, out)?;
    tfmc_runtime::write_file_atomically(&hpath, header.as_bytes()).map_err(|error| {
        // Do not leave a library without its header, but never remove what is not a plain
        // file (a symlink, a device such as /dev/null).
        if std::fs::symlink_metadata(out).is_ok_and(|m| m.is_file()) {
            let _ = std::fs::remove_file(out);
        }
        CompileError::Io { path: hpath.display().to_string(), error }
    })?;
    Ok(kernels)
}

/// Whether `a` and `b` name the same file: the same path, or both exist and resolve to the
/// same one (through symlinks).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// JIT-compiles prepared kernels for a JIT target (LLVM or Cranelift) and runs `f` with a
/// lookup of their packed entries by symbol; the code lives until `f` returns.
pub fn with_jit<R>(
    target: &Target,
    kernels: &[Prepared],
    f: impl FnOnce(&dyn Fn(&str) -> Option<PackedFn>) -> R,
) -> Result<R, CompileError> {
    let ex = exports(kernels);
    Ok(match target {
        Target::Llvm(o) => llvm::with_jit(&ex, o, |jit| f(&|s| jit.entry(s)))?,
        Target::Cranelift(o) => cranelift::with_jit(&ex, o, |jit| f(&|s| jit.entry(s)))?,
        Target::Cuda(_) | Target::GpuEmu(_) => {
            return Err(CompileError::Unsupported(format!(
                "the {} target does not compile to machine code in this process",
                target.name()
            )));
        }
    })
}

/// What a run produced, with the time each stage took.
#[derive(Debug)]
pub struct Run {
    /// The outputs by name.
    pub outputs: BTreeMap<String, Tensor>,
    /// Lowering, optimization and scheduling.
    pub prepare: Duration,
    /// Code generation (the backend, up to callable code).
    pub codegen: Duration,
    /// The kernel call, including argument checks, output allocation and (GPU) transfers.
    pub run: Duration,
}

/// Compiles kernel `name` for `target` in process and runs it on named inputs (params not
/// given take the manifest defaults) through the runtime's validated call path, timing each
/// stage. On [`Target::Cuda`] without a usable device this is the runtime's "no CUDA device
/// found" error.
pub fn run(
    program: &Program,
    name: &str,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
    opts: &CompileOptions,
    target: &Target,
) -> Result<Run, CompileError> {
    let t0 = Instant::now();
    let k = prepare(program, name, opts, target)?;
    let prepare_time = t0.elapsed();
    let t1 = Instant::now();
    match target {
        Target::Llvm(_) | Target::Cranelift(_) => with_jit(target, std::slice::from_ref(&k), |entry| {
            let codegen = t1.elapsed();
            let entry = entry(&k.manifest.symbol)
                .ok_or_else(|| CompileError::Internal(format!("the JIT has no symbol '{}'", k.manifest.symbol)))?;
            let t2 = Instant::now();
            // SAFETY: the entry was compiled from this manifest's kernel, with the packed ABI.
            let outputs = unsafe { tfmc_runtime::call::call(entry, &k.manifest, inputs, params) }?;
            Ok(Run { outputs, prepare: prepare_time, codegen, run: t2.elapsed() })
        })?,
        Target::Cuda(g) => cuda::run_device(&k, g, inputs, params, prepare_time, t1),
        Target::GpuEmu(_) => cuda::run_emulated(&k, inputs, params, prepare_time, t1),
    }
}
