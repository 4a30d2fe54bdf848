//! The CUDA pipeline: `compile::prepare` with the GPU schedule → `backend::nvptx` → a PTX
//! artifact (PTX text plus the manifest line, `tfmc_runtime::manifest::ptx_with_manifest`),
//! or an in-process run through the runtime's GPU driver (`tfmc_runtime::gpu::run`) on a real
//! device (`tfmc_runtime::cuda::CudaDevice`, device 0) or on the CPU emulation
//! (`backend::nvptx::emu::EmuDevice`).
//!
//! Schedule: [`gpu_options`] — `Target::Gpu`, so attention nodes whose logit and value cannot
//! fail get `schedule::attention::gpu`'s block-parallel plan (one thread per row, blocks of
//! 128 rows, key/value tiles staged through shared memory, tiles masked for the whole block
//! skipped); other nodes, and attention with `F > FMAX` (run-time fallback), the generic plan
//! (one thread per output point). `ScheduleOptions::attention = false` still turns the
//! attention plan off.
//!
//! Every kernel's manifest entry gets `gpu: Some(GpuLaunch)` (block size, heap element sizes,
//! segment count from `backend::nvptx::launch_info`); the artifact's target is
//! `{kind: "cuda", triple: "nvptx64-nvidia-cuda", cpu: "sm_XY", features: ["ptxNN"]}`.

use std::collections::BTreeMap;
use std::path::Path;

use tfmc_runtime::manifest::{GpuLaunch, Manifest, Target};
use tfmc_runtime::{Scalar, Tensor};

use crate::Program;
use crate::backend::Export;
use crate::backend::nvptx::{self, NvptxOptions};
use crate::compile::{CompileError, CompileOptions, Prepared, prepare};
use crate::schedule::Target as ScheduleTarget;

/// The GPU architecture used when none is given (`sm_90`: H100/H200).
pub const DEFAULT_SM: u32 = 90;

/// Threads per block of the GPU attention plan unless the options name a GPU target.
pub const ATTENTION_THREADS: u32 = 128;

/// Keys per shared-memory tile of the GPU attention plan (`TM · (FMAX + EMAX)` f32 of shared
/// memory: 32 KiB, under the 48 KiB of static shared memory every architecture allows).
pub const ATTENTION_TILE_M: u32 = 16;

/// `opts` with the GPU's schedule choices for `sm_{sm}` (see the module docs): the GPU
/// attention plan with blocks of [`ATTENTION_THREADS`] threads (or the threads of
/// `opts.schedule.target` when it is already a GPU target, e.g. 32 in emulated tests), key
/// tiles of [`ATTENTION_TILE_M`], and tensor cores for f16/bf16 attention from sm_80 on
/// (unless a GPU target in `opts` turns them off).
pub fn gpu_options(opts: &CompileOptions, sm: u32) -> CompileOptions {
    let mut o = opts.clone();
    let (threads, tensor_cores) = match opts.schedule.target {
        ScheduleTarget::Gpu { threads, tensor_cores } => (threads, tensor_cores),
        ScheduleTarget::Cpu => (ATTENTION_THREADS, true),
    };
    o.schedule.target = ScheduleTarget::Gpu { threads, tensor_cores: tensor_cores && sm >= 80 };
    o.schedule.tile_p = threads;
    o.schedule.tile_m = ATTENTION_TILE_M;
    o
}

/// The NVPTX backend options for `opts` and `sm_{sm}`.
fn nvptx_options(opts: &CompileOptions, sm: u32) -> NvptxOptions {
    NvptxOptions { sm, opt_level: opts.target.opt_level, libdevice: None }
}

/// Prepares kernel `name` for the GPU `sm_{sm}`: GPU schedule, and its manifest entry's launch
/// info.
pub fn prepare_gpu(program: &Program, name: &str, opts: &CompileOptions, sm: u32) -> Result<Prepared, CompileError> {
    let mut k = prepare(program, name, &gpu_options(opts, sm))?;
    let info = nvptx::launch_info(&k.scheduled.func)?;
    k.manifest.gpu = Some(GpuLaunch { block: info.block, heap_elem_bytes: info.heap_elem_bytes, segments: info.segments });
    Ok(k)
}

fn exports(kernels: &[Prepared]) -> Vec<Export<'_>> {
    kernels.iter().map(|k| Export::new(&k.scheduled.func, k.manifest.symbol.clone())).collect()
}

fn prepare_all(program: &Program, opts: &CompileOptions, sm: u32) -> Result<Vec<Prepared>, CompileError> {
    program.kernels.iter().map(|k| prepare_gpu(program, &k.name, opts, sm)).collect()
}

/// The artifact manifest of GPU-prepared kernels for `sm_{sm}`.
pub fn cuda_manifest(kernels: &[Prepared], sm: u32) -> Result<Manifest, CompileError> {
    let feature = nvptx::ptx_feature(sm)?;
    Ok(Manifest {
        format: tfmc_runtime::manifest::FORMAT_NAME.to_string(),
        version: tfmc_runtime::manifest::FORMAT_VERSION,
        compiler_version: env!("CARGO_PKG_VERSION").to_string(),
        target: Target {
            kind: tfmc_runtime::manifest::CUDA_KIND.to_string(),
            triple: nvptx::TRIPLE.to_string(),
            cpu: format!("sm_{sm}"),
            features: vec![feature.to_string()],
        },
        kernels: kernels.iter().map(|k| k.manifest.clone()).collect(),
    })
}

/// PTX for every kernel of `program` (or only kernel `only`), for `sm_{sm}`.
pub fn emit_ptx(program: &Program, only: Option<&str>, opts: &CompileOptions, sm: u32) -> Result<String, CompileError> {
    let kernels = match only {
        Some(name) => vec![prepare_gpu(program, name, opts, sm)?],
        None => prepare_all(program, opts, sm)?,
    };
    Ok(nvptx::emit_ptx(&exports(&kernels), &nvptx_options(opts, sm))?)
}

/// Compiles every kernel of `program` for `sm_{sm}` into the PTX artifact `out` (PTX text and
/// its manifest line), written atomically.
pub fn build_cuda(program: &Program, out: &Path, opts: &CompileOptions, sm: u32) -> Result<Vec<Prepared>, CompileError> {
    let kernels = prepare_all(program, opts, sm)?;
    let ptx = nvptx::emit_ptx(&exports(&kernels), &nvptx_options(opts, sm))?;
    let m = cuda_manifest(&kernels, sm)?;
    let text = tfmc_runtime::manifest::ptx_with_manifest(&ptx, &m);
    tfmc_runtime::write_file_atomically(out, text.as_bytes())
        .map_err(|error| CompileError::Io { path: out.display().to_string(), error })?;
    Ok(kernels)
}

/// Compiles kernel `name` for `sm_{sm}` in-process and runs it on the first CUDA device
/// through the runtime's GPU driver. Without a usable device this is the runtime's
/// "no CUDA device found" error ([`tfmc_runtime::RuntimeError::NoCudaDevice`]).
pub fn run_cuda(
    program: &Program,
    name: &str,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
    opts: &CompileOptions,
    sm: u32,
) -> Result<BTreeMap<String, Tensor>, CompileError> {
    let k = prepare_gpu(program, name, opts, sm)?;
    let ptx = nvptx::emit_ptx(&exports(std::slice::from_ref(&k)), &nvptx_options(opts, sm))?;
    let mut dev = tfmc_runtime::cuda::CudaDevice::from_ptx(&ptx)?;
    Ok(tfmc_runtime::gpu::run(&mut dev, &k.manifest, inputs, params)?)
}

/// Compiles kernel `name` for the CPU emulation of the GPU launch protocol and runs it
/// through the runtime's GPU driver (one emulated thread at a time: keep shapes small).
pub fn run_emulated(
    program: &Program,
    name: &str,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
    opts: &CompileOptions,
) -> Result<BTreeMap<String, Tensor>, CompileError> {
    let k = prepare_gpu(program, name, opts, DEFAULT_SM)?;
    let ex = exports(std::slice::from_ref(&k));
    let r = nvptx::emu::with_emulator(&ex, |dev| tfmc_runtime::gpu::run(dev, &k.manifest, inputs, params))?;
    Ok(r?)
}
