//! `tfmc._tfmc`, the native half of the `tfmc` Python package (the Python half is
//! `python/tfmc/`): compiling `.tfm` programs in process ([`compile`]), opening artifacts
//! ([`load`]), and [`library::Library`], which holds the compiled code and calls kernels on
//! caller-owned buffers. Errors map onto the package's exceptions in [`errors`].
//!
//! Where the code lives: `llvm` and `cranelift` kernels are JIT-compiled in this process and
//! kept by a `tfmc::driver::LiveJit` (no file is written); `cuda` kernels are built into a PTX
//! artifact in a private temporary directory and loaded on device 0; `load` opens an artifact
//! with the runtime's checks (checksum, manifest version, CPU features). The GIL is released
//! while compiling and while a kernel runs.

mod errors;
mod library;

use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tfmc::driver::{self, CompileOptions, LiveJit, Target};
use tfmc_runtime::Artifact;
use tfmc_runtime::cuda::CudaArtifact;

use library::{Code, Library};

/// Where compiling failed: a rejected program or a later stage.
enum Failed {
    Program(tfm_dsl::Diagnostics),
    Compile(driver::CompileError),
    Other(PyErr),
}

fn target(backend: &str, sm: Option<u32>) -> PyResult<Target> {
    Ok(match backend {
        "llvm" => Target::host_llvm(),
        "cranelift" => Target::cranelift(),
        "cuda" => Target::cuda(sm.unwrap_or(driver::DEFAULT_SM)),
        other => return Err(PyValueError::new_err(format!("unknown backend '{other}'; backends: llvm, cranelift, cuda"))),
    })
}

/// Loads and checks a program, prepares `kernel` (or the program's only kernel) for `backend`
/// and makes it callable (see the module docs for where the code lives).
#[pyfunction]
#[pyo3(signature = (source, is_path, kernel=None, backend="llvm", params=None, sm=None))]
fn compile(
    py: Python<'_>,
    source: String,
    is_path: bool,
    kernel: Option<String>,
    backend: &str,
    params: Option<&Bound<'_, PyDict>>,
    sm: Option<u32>,
) -> PyResult<Library> {
    let target = target(backend, sm)?;
    let opts = CompileOptions { params: library::params(params)?, ..Default::default() };
    let backend = backend.to_string();
    let done = py.detach(move || -> Result<Library, Failed> {
        let program = if is_path { tfmc::load(std::path::Path::new(&source)) } else { tfmc::load_str("<string>", &source) };
        let program = Arc::new(program.map_err(Failed::Program)?);
        let names: Vec<String> = program.kernels.iter().map(|k| k.name.clone()).collect();
        let name = match kernel {
            Some(k) if names.contains(&k) => k,
            Some(k) => {
                return Err(Failed::Other(PyValueError::new_err(format!(
                    "the program has no kernel '{k}'; its kernels are {}",
                    names.join(", ")
                ))));
            }
            None if names.len() == 1 => names[0].clone(),
            None => {
                return Err(Failed::Other(PyValueError::new_err(format!(
                    "the program has {} kernels ({}); pass kernel=NAME",
                    names.len(),
                    names.join(", ")
                ))));
            }
        };
        let prepared = driver::prepare(&program, &name, &opts, &target).map_err(Failed::Compile)?;
        let kernels = vec![prepared.manifest.clone()];
        let manifest_json = driver::manifest(std::slice::from_ref(&prepared), &target).map_err(Failed::Compile)?.to_json();
        let code = match &target {
            Target::Cuda(_) => {
                let dir = tempfile::tempdir()
                    .map_err(|e| Failed::Other(errors::TfmcError::new_err(format!("cannot make a temporary directory: {e}"))))?;
                let path = dir.path().join(format!("{name}.ptx"));
                driver::build(&program, &path, &CompileOptions { ..opts.clone() }, &target).map_err(Failed::Compile)?;
                let a = CudaArtifact::open(&path).map_err(|e| Failed::Other(errors::artifact(&e)))?;
                Code::Cuda(Mutex::new(a))
            }
            _ => Code::Jit(LiveJit::compile(&target, vec![prepared]).map_err(Failed::Compile)?),
        };
        Ok(Library { code, kernels, manifest_json, backend, path: None, program: Some(program) })
    });
    done.map_err(|f| match f {
        Failed::Program(d) => errors::diagnostics(py, &d),
        Failed::Compile(e) => errors::compile(py, &e),
        Failed::Other(e) => e,
    })
}

/// Opens an artifact: a CPU shared library (`tfmc build`), or a PTX artifact (`.ptx`, `tfmc
/// build --target cuda`) on CUDA device 0.
#[pyfunction]
fn load(py: Python<'_>, path: String) -> PyResult<Library> {
    py.detach(move || {
        if path.ends_with(".ptx") {
            let a = CudaArtifact::open(&path).map_err(|e| errors::artifact(&e))?;
            let kernels = a.manifest().kernels.clone();
            let manifest_json = a.manifest().to_json();
            return Ok(Library {
                code: Code::Cuda(Mutex::new(a)),
                kernels,
                manifest_json,
                backend: "cuda-artifact".to_string(),
                path: Some(path),
                program: None,
            });
        }
        let a = Artifact::open(&path).map_err(|e| errors::artifact(&e))?;
        let kernels = a.manifest().kernels.clone();
        let manifest_json = a.manifest().to_json();
        Ok(Library { code: Code::Native(a), kernels, manifest_json, backend: "artifact".to_string(), path: Some(path), program: None })
    })
}

/// Builds every kernel of a program into an artifact at `out` (`tfmc build`): a CPU shared
/// library plus its C header, or PTX for `backend="cuda"`.
#[pyfunction]
#[pyo3(signature = (source, is_path, out, backend="llvm", params=None, sm=None))]
fn build(
    py: Python<'_>,
    source: String,
    is_path: bool,
    out: String,
    backend: &str,
    params: Option<&Bound<'_, PyDict>>,
    sm: Option<u32>,
) -> PyResult<Vec<String>> {
    let target = target(backend, sm)?;
    let opts = CompileOptions { params: library::params(params)?, ..Default::default() };
    let done = py.detach(move || -> Result<Vec<String>, Failed> {
        let program = if is_path { tfmc::load(std::path::Path::new(&source)) } else { tfmc::load_str("<string>", &source) };
        let program = program.map_err(Failed::Program)?;
        let built = driver::build(&program, std::path::Path::new(&out), &opts, &target).map_err(Failed::Compile)?;
        Ok(built.iter().map(|k| k.manifest.name.clone()).collect())
    });
    done.map_err(|f| match f {
        Failed::Program(d) => errors::diagnostics(py, &d),
        Failed::Compile(e) => errors::compile(py, &e),
        Failed::Other(e) => e,
    })
}

/// Frees the intermediate buffers the in-process (JIT) kernels keep cached between calls
/// (blocks of 1 MiB or more, up to `TFMC_HEAP_CACHE_MB`, default 1024 MiB): for a process that
/// wants the memory back after large kernels ran. Later calls allocate again.
#[pyfunction]
fn heap_trim() {
    tfmc_runtime::heap::tfmc_heap_trim();
}

#[pymodule]
fn _tfmc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(heap_trim, m)?)?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(build, m)?)?;
    m.add_class::<Library>()?;
    m.add("TfmcError", py.get_type::<errors::TfmcError>())?;
    m.add("CompileError", py.get_type::<errors::CompileError>())?;
    m.add("KernelError", py.get_type::<errors::KernelError>())?;
    m.add("ArtifactError", py.get_type::<errors::ArtifactError>())?;
    m.add("DeviceError", py.get_type::<errors::DeviceError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
