//! The Python exceptions of the `tfmc` package and the mapping of the compiler's and the
//! runtime's errors onto them: diagnostics are [`CompileError`] with the rendered text and the
//! primary span as attributes; a call the runtime refuses is `TypeError` (missing or extra
//! arguments, wrong dtypes, wrong param kinds) or `ValueError` (shapes, sizes, memory), naming
//! the argument; a kernel that ran and failed is [`KernelError`]; an artifact that cannot be
//! opened is [`ArtifactError`]; no usable GPU is [`DeviceError`].

use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tfm_dsl::Diagnostics;
use tfmc_runtime::{ArtifactError as RtArtifactError, RuntimeError};

pyo3::create_exception!(_tfmc, TfmcError, PyException, "Base class of every error tfmc raises itself.");
pyo3::create_exception!(
    _tfmc,
    CompileError,
    TfmcError,
    "A `.tfm` program was rejected, or a kernel could not be compiled. `text` is the rendered \
     rustc-style diagnostic; `message`, `file`, `line`, `column` (1-based) and `span` (byte \
     offsets) describe the first error's primary span (None when it has none)."
);
pyo3::create_exception!(_tfmc, KernelError, TfmcError, "A kernel ran and reported a failure (out-of-range subscript, overflow, bad dims).");
pyo3::create_exception!(_tfmc, ArtifactError, TfmcError, "An artifact could not be opened: unreadable, corrupt, wrong version or CPU.");
pyo3::create_exception!(_tfmc, DeviceError, TfmcError, "No usable CUDA device, or a device operation failed.");

/// A rejected program as a [`CompileError`] with its attributes.
pub fn diagnostics(py: Python<'_>, d: &Diagnostics) -> PyErr {
    let text = d.render();
    let err = CompileError::new_err(text.clone());
    let first = d.items.iter().find(|i| i.is_error()).or(d.items.first());
    let attrs = PyDict::new(py);
    let set = || -> PyResult<()> {
        attrs.set_item("text", &text)?;
        attrs.set_item("message", first.map(|f| f.message.clone()))?;
        let (mut file, mut line, mut column, mut span) = (None, None, None, None);
        if let Some(p) = first.and_then(|f| f.primary.as_ref()) {
            let src = d.sources.get(p.span.file);
            let start = p.span.range().start.min(src.text.len());
            let before = &src.text[..start];
            file = Some(src.name.clone());
            line = Some(before.matches('\n').count() + 1);
            column = Some(before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1);
            span = Some((p.span.range().start, p.span.range().end));
        }
        attrs.set_item("file", file)?;
        attrs.set_item("line", line)?;
        attrs.set_item("column", column)?;
        attrs.set_item("span", span)?;
        let value = err.value(py);
        for (k, v) in attrs.iter() {
            value.setattr(k.extract::<String>()?.as_str(), v)?;
        }
        Ok(())
    };
    match set() {
        Ok(()) => err,
        Err(e) => e,
    }
}

/// A compile-time failure after checking (lowering, scheduling, code generation, params).
pub fn compile(py: Python<'_>, e: &tfmc::driver::CompileError) -> PyErr {
    match e {
        tfmc::driver::CompileError::Runtime(r) => runtime(r),
        tfmc::driver::CompileError::Param(m) => {
            let _ = py;
            PyValueError::new_err(m.clone())
        }
        e => CompileError::new_err(format!("error: {e}")),
    }
}

/// A refused or failed call.
pub fn runtime(e: &RuntimeError) -> PyErr {
    let msg = e.to_string();
    match e {
        RuntimeError::InputCount { .. }
        | RuntimeError::OutputCount { .. }
        | RuntimeError::MissingInput { .. }
        | RuntimeError::UnexpectedInput { .. }
        | RuntimeError::DType { .. }
        | RuntimeError::UnknownParam { .. }
        | RuntimeError::ParamType { .. } => PyTypeError::new_err(msg),
        RuntimeError::Rank { .. }
        | RuntimeError::FixedDim { .. }
        | RuntimeError::DimMismatch { .. }
        | RuntimeError::UnboundDim { .. }
        | RuntimeError::TooLarge { .. }
        | RuntimeError::OutputShape { .. }
        | RuntimeError::Misaligned { .. }
        | RuntimeError::Overlap { .. }
        | RuntimeError::Tensor(_) => PyValueError::new_err(msg),
        RuntimeError::Kernel { .. } | RuntimeError::UnknownFailure { .. } => KernelError::new_err(msg),
        RuntimeError::NoCudaDevice(_) | RuntimeError::DeviceOp { .. } | RuntimeError::Gpu { .. } | RuntimeError::GpuProtocol { .. } => {
            if e.is_no_device() { DeviceError::new_err(msg) } else { KernelError::new_err(msg) }
        }
        _ => TfmcError::new_err(msg),
    }
}

/// An artifact that could not be opened (or a kernel not found in it).
pub fn artifact(e: &RtArtifactError) -> PyErr {
    if e.is_no_device() {
        return DeviceError::new_err(e.to_string());
    }
    match e.root() {
        RtArtifactError::UnknownKernel { .. } => pyo3::exceptions::PyKeyError::new_err(e.to_string()),
        _ => ArtifactError::new_err(e.to_string()),
    }
}
