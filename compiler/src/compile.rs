//! The code-generation pipeline, as one flat list of named passes per kernel:
//! `ir::lower::lower` → `optimize::optimize` → `schedule::schedule` → a backend
//! (`backend::llvm`: JIT or AOT shared library), plus the artifact manifest every compiled
//! kernel is described by (`tfmc_runtime::manifest`), so the JIT and AOT paths call kernels
//! through the same validated ABI (`tfmc_runtime::call`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tfmc_runtime::manifest::{DimSpec, KernelManifest, Manifest, ParamSpec, ParamValue, Target, TensorSpec};
use tfmc_runtime::{Scalar, Tensor};

use crate::Program;
use crate::backend::llvm::{self, Export, LlvmError, ResolvedTarget, TargetOptions};
use crate::ir::Size;
use crate::schedule::{ArgInfo, ScheduleError, ScheduleOptions, Scheduled};

/// Everything that decides the code of a kernel.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// Optimizer options (rules, limits, split).
    pub optimize: Option<crate::optimize::Options>,
    /// Loop-nest choices.
    pub schedule: ScheduleOptions,
    /// Target CPU and optimization level (LLVM).
    pub target: TargetOptions,
    /// Options of the Cranelift tier.
    pub cranelift: crate::backend::cranelift::CraneliftOptions,
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
    /// A broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
    /// A `--param` does not fit.
    #[error("{0}")]
    Param(String),
    /// Writing a file failed.
    #[error("cannot write '{path}': {error}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
}

/// A kernel scheduled and described, ready for a backend.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The loop nest and ABI.
    pub scheduled: Scheduled,
    /// Its manifest entry.
    pub manifest: KernelManifest,
}

/// The exported C symbol of kernel `name`.
pub fn symbol(name: &str) -> String {
    format!("tfmc_{name}")
}

/// Lowers, optimizes and schedules kernel `name` of `program`.
pub fn prepare(program: &Program, name: &str, opts: &CompileOptions) -> Result<Prepared, CompileError> {
    let lowered = crate::ir::lower::lower(program, name)?;
    let oopts = opts.optimize.clone().unwrap_or_else(|| crate::optimize::Options::for_program(program));
    let (optimized, _) = crate::optimize::optimize(&lowered, &oopts)?;
    let scheduled = crate::schedule::schedule(program, &optimized, &opts.schedule)?;
    let manifest = kernel_manifest(program, name, &scheduled, &opts.params)?;
    Ok(Prepared { scheduled, manifest })
}

fn spec(a: &ArgInfo) -> TensorSpec {
    TensorSpec {
        name: a.name.clone(),
        dtype: a.dtype.name().to_string(),
        shape: a
            .shape
            .iter()
            .map(|s| match s {
                Size::Dim(d) => DimSpec::Dim(d.clone()),
                Size::Fixed(n) => DimSpec::Fixed(*n),
            })
            .collect(),
    }
}

/// The manifest entry of a scheduled kernel; `params` override the declared defaults.
fn kernel_manifest(
    program: &Program,
    name: &str,
    s: &Scheduled,
    params: &BTreeMap<String, Scalar>,
) -> Result<KernelManifest, CompileError> {
    let doc = program.kernel(name).map(|(_, k)| k.docs.join("\n")).unwrap_or_default();
    let mut ps = Vec::new();
    for (id, pname, dtype) in &s.params {
        let declared = program.params.get(*id).and_then(|p| p.default).map(crate::semantics::ops::lit_scalar);
        let v = params
            .get(pname)
            .copied()
            .or(declared)
            .ok_or_else(|| CompileError::Param(format!("param '{pname}' has no value; pass --param {pname}=VALUE")))?;
        let default = if dtype.is_float() {
            ParamValue::Float(v.as_f64())
        } else if dtype.is_int() {
            match v {
                Scalar::I(i) => ParamValue::Int(i),
                _ => return Err(CompileError::Param(format!("param '{pname}' is {}; '{}' does not fit", dtype.name(), v.as_f64()))),
            }
        } else {
            ParamValue::Bool(v.as_bool())
        };
        ps.push(ParamSpec { name: pname.clone(), dtype: dtype.name().to_string(), default });
    }
    for given in params.keys() {
        if !program.params.iter().any(|p| &p.name == given) {
            let known: Vec<&str> = program.params.iter().map(|p| p.name.as_str()).collect();
            return Err(CompileError::Param(format!(
                "unknown param '{given}'; params: {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        }
    }
    Ok(KernelManifest {
        name: name.to_string(),
        symbol: symbol(name),
        doc,
        inputs: s.inputs.iter().map(spec).collect(),
        outputs: s.outputs.iter().map(spec).collect(),
        dims: s.dims.clone(),
        params: ps,
        sites: s.func.sites.clone(),
        gpu: None,
    })
}

/// The artifact manifest of prepared kernels for a resolved CPU target.
pub fn manifest(kernels: &[Prepared], target: &ResolvedTarget) -> Manifest {
    Manifest {
        format: tfmc_runtime::manifest::FORMAT_NAME.to_string(),
        version: tfmc_runtime::manifest::FORMAT_VERSION,
        compiler_version: env!("CARGO_PKG_VERSION").to_string(),
        target: Target {
            kind: "cpu".to_string(),
            triple: target.triple.clone(),
            cpu: target.cpu.clone(),
            features: target.features.clone(),
        },
        kernels: kernels.iter().map(|k| k.manifest.clone()).collect(),
    }
}

fn exports(kernels: &[Prepared]) -> Vec<Export<'_>> {
    kernels.iter().map(|k| Export::new(&k.scheduled.func, k.manifest.symbol.clone())).collect()
}

/// The in-process code generators `tfmc run` and `tfmc watch` choose between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JitBackend {
    /// LLVM at the options' level (O3 by default): the fastest code.
    Llvm,
    /// Cranelift: compiles in milliseconds, for the edit–run loop.
    Cranelift,
}

impl JitBackend {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            JitBackend::Llvm => "llvm",
            JitBackend::Cranelift => "cranelift",
        }
    }
}

/// What a JIT run produced, with the time each stage took.
#[derive(Debug)]
pub struct JitRun {
    /// The outputs by name.
    pub outputs: BTreeMap<String, Tensor>,
    /// Lowering, optimization and scheduling.
    pub prepare: Duration,
    /// Code generation (the backend, up to callable machine code).
    pub codegen: Duration,
    /// The kernel call, including argument checks and output allocation.
    pub run: Duration,
}

/// JIT-compiles prepared kernels with `backend` and runs `f` with a lookup of their packed
/// entries by symbol; the code lives until `f` returns.
pub fn with_jit<R>(
    backend: JitBackend,
    kernels: &[Prepared],
    opts: &CompileOptions,
    f: impl FnOnce(&dyn Fn(&str) -> Option<llvm::PackedFn>) -> R,
) -> Result<R, CompileError> {
    let ex = exports(kernels);
    Ok(match backend {
        JitBackend::Llvm => llvm::with_jit(&ex, &opts.target, |jit| f(&|s| jit.entry(s)))?,
        JitBackend::Cranelift => crate::backend::cranelift::with_jit(&ex, &opts.cranelift, |jit| f(&|s| jit.entry(s)))?,
    })
}

/// JIT-compiles kernel `name` with `backend` and runs it on named inputs (params not given
/// take the manifest defaults), through the runtime's validated call path, timing each stage.
pub fn run_jit(
    backend: JitBackend,
    program: &Program,
    name: &str,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
    opts: &CompileOptions,
) -> Result<JitRun, CompileError> {
    let t0 = Instant::now();
    let k = prepare(program, name, opts)?;
    let prepare_time = t0.elapsed();
    let t1 = Instant::now();
    with_jit(backend, std::slice::from_ref(&k), opts, |entry| {
        let codegen = t1.elapsed();
        let entry =
            entry(&k.manifest.symbol).ok_or_else(|| CompileError::Internal(format!("the JIT has no symbol '{}'", k.manifest.symbol)))?;
        let t2 = Instant::now();
        // SAFETY: the entry was compiled from this manifest's kernel, with the packed ABI.
        let outputs = unsafe { tfmc_runtime::call::call(entry, &k.manifest, inputs, params) }?;
        Ok(JitRun { outputs, prepare: prepare_time, codegen, run: t2.elapsed() })
    })?
}

/// JIT-compiles kernel `name` with LLVM and runs it on named inputs (params not given take
/// the manifest defaults), through the runtime's validated call path.
pub fn run_llvm(
    program: &Program,
    name: &str,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
    opts: &CompileOptions,
) -> Result<BTreeMap<String, Tensor>, CompileError> {
    run_jit(JitBackend::Llvm, program, name, inputs, params, opts).map(|r| r.outputs)
}

/// Compiles every kernel of `program` into a shared library at `out` (plus a C header
/// beside it, `out` with extension `.h`), both written atomically.
pub fn build(program: &Program, out: &Path, opts: &CompileOptions) -> Result<Vec<Prepared>, CompileError> {
    let kernels: Vec<Prepared> = program.kernels.iter().map(|k| prepare(program, &k.name, opts)).collect::<Result<_, _>>()?;
    let target = llvm::resolve_target(&opts.target)?;
    let m = manifest(&kernels, &target);
    let guard = out.file_stem().map(|s| s.to_string_lossy().to_uppercase()).unwrap_or_else(|| "TFMC".to_string());
    let guard: String = guard.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let header = tfmc_runtime::manifest::c_header(&m, &format!("TFMC_{guard}_H"));
    llvm::build_shared_library(&exports(&kernels), &m.to_json(), &opts.target, out)?;
    let hpath = out.with_extension("h");
    tfmc_runtime::write_file_atomically(&hpath, header.as_bytes()).map_err(|error| {
        // Do not leave a library without its header.
        let _ = std::fs::remove_file(out);
        CompileError::Io { path: hpath.display().to_string(), error }
    })?;
    Ok(kernels)
}
