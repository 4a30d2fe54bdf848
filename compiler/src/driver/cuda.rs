//! The CUDA pipeline of the driver: a kernel prepared for a GPU target (`Target::Cuda`,
//! `Target::GpuEmu`) gets the GPU schedule (`Target::schedule_options`: attention nodes whose
//! logit and value cannot fail get the block-parallel plans, tensor cores for f16/bf16 from
//! sm_80; other nodes the generic plan, one thread per output point) and launch information
//! in its manifest entry (block size, heap element sizes, segment count from
//! `backend::nvptx::launch_info`). Then `backend::nvptx` makes PTX: written as an artifact
//! (PTX text plus the manifest line, `tfmc_runtime::manifest::ptx_with_manifest`), or run
//! through the runtime's GPU driver (`tfmc_runtime::gpu::run`) on a real device
//! (`tfmc_runtime::cuda::CudaDevice`, device 0) or on the CPU emulation
//! (`backend::nvptx::emu::EmuDevice`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tfmc_runtime::manifest::GpuLaunch;
use tfmc_runtime::{Scalar, Tensor};

use super::{CompileError, CompileOptions, Gpu, Prepared, Run, Target, exports, manifest, prepare_all};
use crate::Program;
use crate::backend::nvptx::{self, NvptxOptions};
use crate::schedule::Scheduled;

/// The GPU architecture used when none is given (`sm_90`: H100/H200).
pub const DEFAULT_SM: u32 = 90;

/// Threads per block of the GPU attention plans unless the target says otherwise.
pub const ATTENTION_THREADS: u32 = 128;

/// Keys per shared-memory tile of the GPU attention plan (`TM · (FMAX + EMAX)` f32 of shared
/// memory: 32 KiB, under the 48 KiB of static shared memory every architecture allows).
pub const ATTENTION_TILE_M: u32 = 16;

/// The NVPTX backend's options for `g`.
pub(super) fn nvptx_options(g: &Gpu) -> NvptxOptions {
    NvptxOptions { sm: g.sm, opt_level: g.opt_level, libdevice: None }
}

/// The launch information of a kernel scheduled for a GPU.
pub(super) fn launch(s: &Scheduled) -> Result<GpuLaunch, CompileError> {
    let info = nvptx::launch_info(&s.func)?;
    Ok(GpuLaunch { block: info.block, heap_elem_bytes: info.heap_elem_bytes, segments: info.segments })
}

/// The manifest's target for `g`.
pub(super) fn manifest_target(g: &Gpu) -> Result<tfmc_runtime::manifest::Target, CompileError> {
    let feature = nvptx::ptx_feature(g.sm)?;
    Ok(tfmc_runtime::manifest::Target {
        kind: tfmc_runtime::manifest::CUDA_KIND.to_string(),
        triple: nvptx::TRIPLE.to_string(),
        cpu: format!("sm_{}", g.sm),
        features: vec![feature.to_string()],
    })
}

/// Compiles every kernel of `program` for `g` into the PTX artifact `out` (PTX text and its
/// manifest line), written atomically.
pub(super) fn build_ptx(
    program: &Program,
    out: &Path,
    opts: &CompileOptions,
    target: &Target,
    g: &Gpu,
) -> Result<Vec<Prepared>, CompileError> {
    let kernels = prepare_all(program, None, opts, target)?;
    let ptx = nvptx::emit_ptx(&exports(&kernels), &nvptx_options(g))?;
    let m = manifest(&kernels, target)?;
    let text = tfmc_runtime::manifest::ptx_with_manifest(&ptx, &m);
    tfmc_runtime::write_file_atomically(out, text.as_bytes())
        .map_err(|error| CompileError::Io { path: out.display().to_string(), error })?;
    Ok(kernels)
}

/// Runs prepared kernel `k` on the first CUDA device through the runtime's GPU driver.
pub(super) fn run_device(
    k: &Prepared,
    g: &Gpu,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
    prepare: Duration,
    t1: Instant,
) -> Result<Run, CompileError> {
    let ptx = nvptx::emit_ptx(&exports(std::slice::from_ref(k)), &nvptx_options(g))?;
    let mut dev = tfmc_runtime::cuda::CudaDevice::from_ptx(&ptx)?;
    let codegen = t1.elapsed();
    let t2 = Instant::now();
    let outputs = tfmc_runtime::gpu::run(&mut dev, &k.manifest, inputs, params)?;
    Ok(Run { outputs, prepare, codegen, run: t2.elapsed() })
}

/// Runs prepared kernel `k` on the CPU emulation of the GPU launch protocol (one emulated
/// thread at a time: keep shapes small).
pub(super) fn run_emulated(
    k: &Prepared,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
    prepare: Duration,
    t1: Instant,
) -> Result<Run, CompileError> {
    let ex = exports(std::slice::from_ref(k));
    let r = nvptx::emu::with_emulator(&ex, |dev| {
        let codegen = t1.elapsed();
        let t2 = Instant::now();
        tfmc_runtime::gpu::run(dev, &k.manifest, inputs, params).map(|outputs| Run { outputs, prepare, codegen, run: t2.elapsed() })
    })?;
    Ok(r?)
}
