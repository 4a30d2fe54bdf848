//! The runtime's error types: [`ArtifactError`] (opening and validating an artifact, looking up
//! a kernel) and [`RuntimeError`] (binding and calling a kernel). Messages are lowercase, name
//! the file, kernel and argument concerned, and carry no trailing period.

use std::path::PathBuf;

use crate::manifest::FailKind;
use crate::tensor::{DType, TensorError};

/// Why an artifact could not be opened, or a kernel not found in it.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// An error about the file at `path` (what [`crate::Artifact::open`] returns: every other
    /// variant wrapped with the file it concerns). [`ArtifactError::root`] unwraps it.
    #[error("artifact '{}': {error}", path.display())]
    File {
        /// The artifact's path as given.
        path: PathBuf,
        /// What is wrong with it.
        error: Box<ArtifactError>,
    },
    /// Reading the file failed.
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    /// No checksum trailer: not a sealed tfmc artifact (or cut short).
    #[error("no tfmc checksum trailer (not a tfmc artifact, or truncated)")]
    NotSealed,
    /// The trailer has a layout version this runtime does not read.
    #[error("checksum trailer version {found}, this runtime reads version {expected}")]
    TrailerVersion {
        /// The trailer's version.
        found: u32,
        /// [`crate::aot::TRAILER_VERSION`].
        expected: u32,
    },
    /// The payload length differs from the one recorded: bytes were cut or added.
    #[error("truncated or extended: the trailer records {recorded} bytes, the file has {actual}")]
    Length {
        /// Length recorded in the trailer.
        recorded: u64,
        /// Length of the bytes before the trailer.
        actual: u64,
    },
    /// The payload's CRC-32 differs from the one recorded: the file is corrupted.
    #[error("checksum mismatch (recorded {recorded:#010x}, computed {computed:#010x}): the file is corrupted")]
    Checksum {
        /// CRC-32 recorded in the trailer.
        recorded: u32,
        /// CRC-32 of the payload.
        computed: u32,
    },
    /// The payload is not a valid ELF object.
    #[error("not a valid ELF shared library: {0}")]
    Elf(String),
    /// The ELF has no manifest section.
    #[error("no '{section}' section: not a tfmc artifact")]
    NoManifest {
        /// [`crate::manifest::SECTION`].
        section: &'static str,
    },
    /// The manifest is not valid JSON of the manifest schema.
    #[error("invalid manifest json: {0}")]
    Json(#[from] serde_json::Error),
    /// The manifest's `format` field is not [`crate::manifest::FORMAT_NAME`].
    #[error("manifest format is '{found}', expected '{expected}'")]
    Format {
        /// The manifest's `format`.
        found: String,
        /// [`crate::manifest::FORMAT_NAME`].
        expected: &'static str,
    },
    /// The manifest's format version is not the one this runtime reads.
    #[error("manifest format version {found}, this runtime reads version {expected} (rebuild the artifact with a matching tfmc)")]
    Version {
        /// The manifest's `version`.
        found: u32,
        /// [`crate::manifest::FORMAT_VERSION`].
        expected: u32,
    },
    /// The artifact is not for a CPU.
    #[error("built for target kind '{found}', only 'cpu' artifacts can be loaded here")]
    TargetKind {
        /// The manifest's `target.kind`.
        found: String,
    },
    /// The artifact is for another architecture.
    #[error("built for '{target}', but this machine is {host}")]
    Arch {
        /// The manifest's triple, or the ELF's architecture.
        target: String,
        /// `std::env::consts::ARCH`.
        host: &'static str,
    },
    /// The artifact needs CPU features this machine lacks.
    #[error("needs CPU features this machine lacks: {}", features.join(", "))]
    MissingFeatures {
        /// The missing features (manifest names).
        features: Vec<String>,
    },
    /// The manifest is inconsistent (bad dtype name, unknown dim, duplicate name, ...).
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// The dynamic loader refused the library.
    #[error("cannot load the shared library: {0}")]
    Load(String),
    /// An exported symbol the manifest promises is missing.
    #[error("missing symbol '{symbol}' (kernel '{kernel}')")]
    MissingSymbol {
        /// The kernel.
        kernel: String,
        /// The symbol looked up.
        symbol: String,
    },
    /// A PTX text without the manifest line.
    #[error("no '{}' line: not a tfmc PTX artifact", prefix.trim_end())]
    NoPtxManifest {
        /// [`crate::manifest::PTX_MANIFEST_PREFIX`].
        prefix: &'static str,
    },
    /// A PTX artifact whose manifest is not for a CUDA target.
    #[error("built for target kind '{found}', expected a 'cuda' artifact")]
    NotCuda {
        /// The manifest's `target.kind`.
        found: String,
    },
    /// The GPU is older than the artifact's target.
    #[error(
        "built for {target}, but CUDA device {ordinal} ({device}) has compute capability {}.{}",
        capability.0,
        capability.1
    )]
    ComputeCapability {
        /// The manifest's `target.cpu`, e.g. `sm_90`.
        target: String,
        /// The device's ordinal.
        ordinal: usize,
        /// The device's name.
        device: String,
        /// Its compute capability (major, minor).
        capability: (i32, i32),
    },
    /// The CUDA driver refused the PTX module.
    #[error("the CUDA driver cannot load the PTX module: {0}")]
    ModuleLoad(String),
    /// A device-side error while opening a GPU artifact (no device, driver failure).
    #[error(transparent)]
    Device(Box<RuntimeError>),
    /// No kernel of that name.
    #[error("no kernel '{kernel}'; the artifact has: {}", available.join(", "))]
    UnknownKernel {
        /// The name asked for.
        kernel: String,
        /// The kernels there are.
        available: Vec<String>,
    },
}

impl ArtifactError {
    /// The error without its [`ArtifactError::File`] wrappers.
    pub fn root(&self) -> &ArtifactError {
        match self {
            ArtifactError::File { error, .. } => error.root(),
            e => e,
        }
    }

    /// True when the root cause is that no CUDA device is usable
    /// ([`RuntimeError::NoCudaDevice`]).
    pub fn is_no_device(&self) -> bool {
        matches!(self.root(), ArtifactError::Device(e) if e.is_no_device())
    }

    /// Wraps `self` with the file it concerns.
    pub fn in_file(self, path: impl Into<PathBuf>) -> ArtifactError {
        ArtifactError::File { path: path.into(), error: Box::new(self) }
    }
}

/// Why a kernel call was refused, or failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Wrong number of inputs (positional calls).
    #[error("kernel '{kernel}' takes {expected} inputs, got {got}")]
    InputCount {
        /// The kernel.
        kernel: String,
        /// Inputs it takes.
        expected: usize,
        /// Inputs given.
        got: usize,
    },
    /// Wrong number of output buffers.
    #[error("kernel '{kernel}' has {expected} outputs, got {got} output buffers")]
    OutputCount {
        /// The kernel.
        kernel: String,
        /// Outputs it has.
        expected: usize,
        /// Buffers given.
        got: usize,
    },
    /// A named input was not given.
    #[error("kernel '{kernel}' needs input '{input}' of type {ty}")]
    MissingInput {
        /// The kernel.
        kernel: String,
        /// The input's name.
        input: String,
        /// Its type, e.g. `f32[B, H, P, E]`.
        ty: String,
    },
    /// An input name the kernel does not have.
    #[error("kernel '{kernel}' has no input '{input}'; its inputs are {}", list(expected))]
    UnexpectedInput {
        /// The kernel.
        kernel: String,
        /// The name given.
        input: String,
        /// The kernel's inputs.
        expected: Vec<String>,
    },
    /// A tensor of the wrong dtype (there is no implicit conversion).
    #[error("{arg} of kernel '{kernel}' must be {expected}, got {got}")]
    DType {
        /// The kernel.
        kernel: String,
        /// `input 'Q'` or `output 'O'`.
        arg: String,
        /// The dtype it must have.
        expected: DType,
        /// The dtype given.
        got: DType,
    },
    /// A tensor of the wrong rank.
    #[error("{arg} of kernel '{kernel}' must have type {ty}, got a rank-{} tensor of shape {got:?}", got.len())]
    Rank {
        /// The kernel.
        kernel: String,
        /// `input 'Q'` or `output 'O'`.
        arg: String,
        /// Its type, e.g. `f32[B, H, P, E]`.
        ty: String,
        /// The shape given.
        got: Vec<usize>,
    },
    /// A fixed-size dimension of the wrong size.
    #[error("{arg} of kernel '{kernel}': dimension {axis} is {got}, expected {expected}")]
    FixedDim {
        /// The kernel.
        kernel: String,
        /// `input 'Q'`.
        arg: String,
        /// The axis.
        axis: usize,
        /// The fixed size.
        expected: i64,
        /// The size given.
        got: usize,
    },
    /// A symbolic dim given two sizes.
    #[error("{arg} of kernel '{kernel}': dimension {axis} ({dim}) is {got}, but {first_arg} gives {dim} = {first}")]
    DimMismatch {
        /// The kernel.
        kernel: String,
        /// The argument found inconsistent, e.g. `input 'V'`.
        arg: String,
        /// Its axis.
        axis: usize,
        /// The symbolic dim.
        dim: String,
        /// Its size there.
        got: usize,
        /// The argument that bound the dim first.
        first_arg: String,
        /// The size it bound.
        first: usize,
    },
    /// A dim that is the size of no input, so it cannot be inferred.
    #[error("kernel '{kernel}': dim '{dim}' is not the size of any input, so it cannot be inferred")]
    UnboundDim {
        /// The kernel.
        kernel: String,
        /// The dim.
        dim: String,
    },
    /// A size that does not fit the ABI's `int64_t`, or a tensor too large to allocate.
    #[error("{arg} of kernel '{kernel}' is too large: shape {shape:?}")]
    TooLarge {
        /// The kernel.
        kernel: String,
        /// The argument.
        arg: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// An output buffer of the wrong shape.
    #[error("output '{output}' of kernel '{kernel}' must have shape {expected:?}, got {got:?}")]
    OutputShape {
        /// The kernel.
        kernel: String,
        /// The output.
        output: String,
        /// The shape the dims give.
        expected: Vec<usize>,
        /// The shape given.
        got: Vec<usize>,
    },
    /// A param name the kernel does not have.
    #[error("kernel '{kernel}' has no param '{param}'; its params are {}", list(params))]
    UnknownParam {
        /// The kernel.
        kernel: String,
        /// The name given.
        param: String,
        /// The kernel's params.
        params: Vec<String>,
    },
    /// A param value of the wrong kind or out of range.
    #[error("param '{param}' of kernel '{kernel}' is {dtype}, got {value}")]
    ParamType {
        /// The kernel.
        kernel: String,
        /// The param.
        param: String,
        /// Its dtype name.
        dtype: String,
        /// The value given, described.
        value: String,
    },
    /// A caller-owned buffer ([`crate::call::RawTensor`]) at an address that is not a
    /// multiple of its element size.
    #[error("{arg} of kernel '{kernel}' is not aligned to its {align}-byte elements")]
    Misaligned {
        /// The kernel.
        kernel: String,
        /// `input 'Q'` or `output 'O'`.
        arg: String,
        /// The element size it must be aligned to.
        align: usize,
    },
    /// An output buffer that overlaps another argument's buffer (outputs must not overlap
    /// anything).
    #[error("{arg} of kernel '{kernel}' overlaps {other}; outputs must not share memory with other arguments")]
    Overlap {
        /// The kernel.
        kernel: String,
        /// The output, `output 'O'`.
        arg: String,
        /// The argument it overlaps.
        other: String,
    },
    /// The kernel ran and reported a failure.
    #[error("kernel '{kernel}' failed: {} at {site}", kind.describe())]
    Kernel {
        /// The kernel.
        kernel: String,
        /// What went wrong.
        kind: FailKind,
        /// Where: the manifest's site description, or `unknown site`.
        site: String,
    },
    /// The kernel returned a code that is not a known failure.
    #[error("kernel '{kernel}' returned the unknown failure code {code}")]
    UnknownFailure {
        /// The kernel.
        kernel: String,
        /// The code returned.
        code: i32,
    },
    /// The kernel's manifest entry is inconsistent.
    #[error("kernel '{kernel}' has an invalid manifest: {reason}")]
    BadManifest {
        /// The kernel.
        kernel: String,
        /// What is wrong.
        reason: String,
    },
    /// Building a result tensor failed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// No usable CUDA device: no driver library, no device, or the driver failed to start.
    #[error("no CUDA device found: {0}")]
    NoCudaDevice(String),
    /// A device operation (allocation, copy, launch, synchronization) failed.
    #[error("{op} failed: {reason}")]
    DeviceOp {
        /// What was attempted, e.g. `cuMemAlloc of 4096 bytes`.
        op: String,
        /// The driver's (or device model's) error.
        reason: String,
    },
    /// A device error while running a GPU kernel (the error wrapped with the kernel's name).
    #[error("kernel '{kernel}' on the GPU: {error}")]
    Gpu {
        /// The kernel.
        kernel: String,
        /// What went wrong on the device.
        error: Box<RuntimeError>,
    },
    /// A kernel without GPU launch info was given to the GPU driver.
    #[error("kernel '{kernel}' was not compiled for a GPU (its manifest has no 'gpu' launch info)")]
    NotGpuKernel {
        /// The kernel.
        kernel: String,
    },
    /// What the device code reported breaks the GPU launch protocol (a negative or absurd
    /// count, a failure code that is not one).
    #[error("kernel '{kernel}' broke the GPU launch protocol: {reason}")]
    GpuProtocol {
        /// The kernel.
        kernel: String,
        /// What was wrong.
        reason: String,
    },
}

impl RuntimeError {
    /// True when the error (or the one it wraps) is [`RuntimeError::NoCudaDevice`].
    pub fn is_no_device(&self) -> bool {
        match self {
            RuntimeError::NoCudaDevice(_) => true,
            RuntimeError::Gpu { error, .. } => error.is_no_device(),
            _ => false,
        }
    }
}

/// `a, b, c`, or `none` for an empty list.
fn list(names: &[String]) -> String {
    if names.is_empty() { "none".to_string() } else { names.join(", ") }
}
