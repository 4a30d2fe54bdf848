//! [`Library`]: compiled kernels held in this process (JIT code, a loaded CPU artifact, or a PTX
//! artifact on a GPU) with their manifest entries, and the checked, copy-free call of one of
//! them on caller-owned buffers.
//!
//! Invariants: the code lives as long as the `Library` (Python keeps it alive through every
//! `Kernel` made from it); every call goes through the runtime's checks against the manifest
//! entry (`tfmc_runtime::call::call_raw`), so a wrong pointer description is an error, never an
//! out-of-bounds access, given that the Python side describes live, dense buffers (it does:
//! `tfmc/_call.py` takes pointers only from C-contiguous NumPy arrays and torch tensors it holds
//! for the call). The GIL is released while a kernel runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};
use tfmc::Program;
use tfmc::driver::LiveJit;
use tfmc_runtime::call::{RawTensor, call_raw};
use tfmc_runtime::cuda::CudaArtifact;
use tfmc_runtime::manifest::KernelManifest;
use tfmc_runtime::{Artifact, DType, NativeTensor, Scalar, Tensor};

use crate::errors;

/// The code behind a [`Library`].
pub enum Code {
    /// JIT-compiled in this process (LLVM or Cranelift).
    Jit(LiveJit),
    /// A CPU artifact (shared library) opened by the runtime.
    Native(Artifact),
    /// A PTX artifact loaded on CUDA device 0 (inputs and outputs are copied to and from it).
    Cuda(Mutex<CudaArtifact>),
}

/// Compiled kernels and their manifest (`tfmc._tfmc.Library`; wrapped by `tfmc.Artifact`).
#[pyclass(frozen, module = "tfmc._tfmc")]
pub struct Library {
    pub code: Code,
    pub kernels: Vec<KernelManifest>,
    pub manifest_json: String,
    pub backend: String,
    pub path: Option<String>,
    /// The checked program the kernels were compiled from (`explain`); `None` when loaded.
    pub program: Option<Arc<Program>>,
}

/// One buffer as the Python side describes it: `(address, shape, dtype name)`.
type Desc = (usize, Vec<usize>, String);

/// Raw buffer descriptions that may cross into the GIL-free section.
struct Raw(Vec<RawTensor>);
// SAFETY: the addresses are of buffers the calling Python frame keeps alive for the whole call
// (the GIL is re-taken before it returns); moving their description to the same thread's
// GIL-free section shares nothing new.
unsafe impl Send for Raw {}

fn raw(k: &KernelManifest, what: &str, descs: Vec<Desc>) -> PyResult<Vec<RawTensor>> {
    let names: Vec<&str> = if what == "input" { k.inputs.iter() } else { k.outputs.iter() }.map(|t| t.name.as_str()).collect();
    descs
        .into_iter()
        .enumerate()
        .map(|(i, (ptr, shape, dtype))| {
            let dtype = DType::parse(&dtype).ok_or_else(|| {
                let name = names.get(i).copied().unwrap_or("?");
                PyTypeError::new_err(format!("{what} '{name}' of kernel '{}' has dtype '{dtype}', which tfmc does not know", k.name))
            })?;
            Ok(RawTensor { dtype, shape, ptr: ptr as *mut u8 })
        })
        .collect()
}

/// Param values from a Python dict: bools, ints and floats (bool before int: `True` is an int).
pub fn params(d: Option<&Bound<'_, PyDict>>) -> PyResult<BTreeMap<String, Scalar>> {
    let mut out = BTreeMap::new();
    let Some(d) = d else {
        return Ok(out);
    };
    for (k, v) in d.iter() {
        let name: String = k.extract()?;
        let value = if v.is_instance_of::<PyBool>() {
            Scalar::B(v.extract()?)
        } else if let Ok(i) = v.extract::<i64>() {
            Scalar::I(i)
        } else if let Ok(x) = v.extract::<f64>() {
            Scalar::F(x)
        } else {
            return Err(PyTypeError::new_err(format!("param '{name}' must be a bool, int or float, got {}", v.get_type().name()?)));
        };
        out.insert(name, value);
    }
    Ok(out)
}

/// A dense host tensor copied from a caller's buffer (the GPU path uploads from it).
fn tensor_from_raw(t: &RawTensor) -> Result<Tensor, tfmc_runtime::RuntimeError> {
    let mut n = NativeTensor::zeros(t.dtype, t.shape.clone())?;
    let bytes = n.bytes_mut();
    // SAFETY: the caller describes a live buffer of exactly `bytes.len()` bytes (its dtype and
    // shape), which does not overlap this fresh allocation.
    unsafe { std::ptr::copy_nonoverlapping(t.ptr.cast_const(), bytes.as_mut_ptr(), bytes.len()) };
    Ok(n.to_tensor()?)
}

/// Runs kernel `k` of a CUDA artifact on copies of the inputs; writes the outputs back.
fn call_cuda(
    a: &Mutex<CudaArtifact>,
    k: &KernelManifest,
    inputs: &[RawTensor],
    outputs: &[RawTensor],
    params: &BTreeMap<String, Scalar>,
) -> Result<(), PyErr> {
    if inputs.len() != k.inputs.len() || outputs.len() != k.outputs.len() {
        return Err(PyTypeError::new_err(format!("kernel '{}' takes {} inputs and {} outputs", k.name, k.inputs.len(), k.outputs.len())));
    }
    let mut named = BTreeMap::new();
    for (spec, t) in k.inputs.iter().zip(inputs) {
        named.insert(spec.name.clone(), tensor_from_raw(t).map_err(|e| errors::runtime(&e))?);
    }
    let mut guard = a.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut kernel = guard.kernel(&k.name).map_err(|e| errors::artifact(&e))?;
    let got = kernel.run(&named, params).map_err(|e| errors::runtime(&e))?;
    for (spec, t) in k.outputs.iter().zip(outputs) {
        let Some(v) = got.get(&spec.name) else {
            return Err(errors::TfmcError::new_err(format!("kernel '{}' returned no output '{}'", k.name, spec.name)));
        };
        if v.shape() != t.shape.as_slice() || v.dtype() != t.dtype {
            return Err(PyValueError::new_err(format!("output '{}' of kernel '{}' is {:?} {:?}", spec.name, k.name, v.dtype(), v.shape())));
        }
        let n = NativeTensor::from_tensor(v).map_err(|e| errors::runtime(&e.into()))?;
        // SAFETY: the caller's output buffer is live and has exactly this dtype and shape
        // (checked above), so `n.bytes().len()` bytes fit; it does not overlap `n`.
        unsafe { std::ptr::copy_nonoverlapping(n.bytes().as_ptr(), t.ptr, n.bytes().len()) };
    }
    Ok(())
}

#[pymethods]
impl Library {
    /// The kernels' names, in manifest order.
    #[getter]
    fn kernels(&self) -> Vec<String> {
        self.kernels.iter().map(|k| k.name.clone()).collect()
    }

    /// The manifest entry of kernel `index`, as JSON.
    fn kernel_manifest(&self, index: usize) -> PyResult<String> {
        let k = self.kernels.get(index).ok_or_else(|| PyIndexError::new_err("no such kernel"))?;
        serde_json::to_string(k).map_err(|e| errors::TfmcError::new_err(e.to_string()))
    }

    /// The whole artifact manifest, as JSON.
    #[getter]
    fn manifest(&self) -> String {
        self.manifest_json.clone()
    }

    /// `llvm`, `cranelift`, `cuda` (compiled) or `artifact` / `cuda-artifact` (loaded).
    #[getter]
    fn backend(&self) -> String {
        self.backend.clone()
    }

    /// The artifact's path (`None` for kernels JIT-compiled in process).
    #[getter]
    fn path(&self) -> Option<String> {
        self.path.clone()
    }

    /// Calls kernel `index` on caller-owned buffers `(address, shape, dtype)`: inputs, then
    /// outputs (zero-filled, then written). Checked against the manifest; the GIL is released
    /// while the kernel runs.
    #[pyo3(signature = (index, inputs, outputs, params=None))]
    fn call(
        &self,
        py: Python<'_>,
        index: usize,
        inputs: Vec<Desc>,
        outputs: Vec<Desc>,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let k = self.kernels.get(index).ok_or_else(|| PyIndexError::new_err("no such kernel"))?;
        let ins = Raw(raw(k, "input", inputs)?);
        let outs = Raw(raw(k, "output", outputs)?);
        let params = params_of(params)?;
        let code = &self.code;
        py.detach(move || {
            let (ins, outs) = (ins, outs);
            match code {
                Code::Jit(live) => {
                    let entry = live
                        .entry(&k.symbol)
                        .ok_or_else(|| errors::TfmcError::new_err(format!("no compiled entry for kernel '{}'", k.name)))?;
                    // SAFETY: `entry` was compiled from manifest entry `k` and lives as long as
                    // `self`, which this call borrows; the buffers are live (see `Raw`).
                    unsafe { call_raw(entry, k, &ins.0, &outs.0, &params) }.map_err(|e| errors::runtime(&e))
                }
                Code::Native(a) => {
                    let kernel = a.kernel(&k.name).map_err(|e| errors::artifact(&e))?;
                    // SAFETY: the buffers are live for the call (see `Raw`).
                    unsafe { kernel.run_raw(&ins.0, &outs.0, &params) }.map_err(|e| errors::runtime(&e))
                }
                Code::Cuda(a) => call_cuda(a, k, &ins.0, &outs.0, &params),
            }
        })
    }

    /// `tfmc explain` for kernel `name`: the cascade as written and optimized, the rules that
    /// fired, estimates for `dims`, and the CPU schedule.
    #[pyo3(signature = (name, dims=None, params=None))]
    fn explain(
        &self,
        py: Python<'_>,
        name: &str,
        dims: Option<BTreeMap<String, i64>>,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        let Some(program) = self.program.clone() else {
            return Err(errors::TfmcError::new_err(format!(
                "kernel '{name}' was loaded from an artifact, which has no source; explain needs a kernel from tfmc.compile"
            )));
        };
        let params = params_of(params)?;
        let name = name.to_string();
        py.detach(move || {
            let mut opts = tfmc::optimize::Options::for_program(&program);
            opts.dims.extend(dims.unwrap_or_default());
            for (k, v) in params {
                opts.params.insert(k, v.as_f64());
            }
            tfmc::optimize::explain::explain(&program, &name, &opts).map_err(|e| errors::CompileError::new_err(format!("error: {e}")))
        })
    }
}

fn params_of(d: Option<&Bound<'_, PyDict>>) -> PyResult<BTreeMap<String, Scalar>> {
    params(d)
}
