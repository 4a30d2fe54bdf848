//! The artifact manifest: what a compiled artifact contains and how to call it — kernel
//! names and symbols, argument names, dtypes and symbolic shapes, params, failure sites, the
//! compiler version and the target (triple, CPU, required features).
//!
//! It is JSON (serde), embedded in the artifact (for a CPU shared library: the ELF section
//! [`SECTION`]), and versioned by [`FORMAT_VERSION`]: a reader rejects any other version.
//!
//! ABI of a kernel whose manifest entry is `k` (see `docs/ARCHITECTURE.md`, "Artifacts"):
//! `int32_t {k.symbol}_packed(void *const *bufs, const int64_t *dims, const uint64_t *params)`
//! with `bufs` = inputs then outputs (row-major, dense, element type per dtype, `bool` one
//! byte), `dims` = sizes of `k.dims` in order, `params` = one 8-byte slot per `k.params`
//! (an `int64_t` for integer and bool params, a `double` for float params). It returns 0 or a
//! failure code: `kind | site << 8`, `kind` one of [`FailKind`]'s values and `site` an index
//! into `k.sites`. The typed wrapper `{k.symbol}(inputs.., outputs.., dims.., params..)`
//! takes the same things as separate C arguments.

use serde::{Deserialize, Serialize};

/// The manifest format version this runtime reads and the compiler writes.
pub const FORMAT_VERSION: u32 = 1;

/// The `format` field of every manifest.
pub const FORMAT_NAME: &str = "tfmc-artifact";

/// The ELF section holding the manifest JSON in a CPU artifact.
pub const SECTION: &str = ".tfmc_manifest";

/// A whole artifact's manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the writer.
    pub version: u32,
    /// Version of the tfmc that built it.
    pub compiler_version: String,
    /// What it runs on.
    pub target: Target,
    /// The kernels it exports.
    pub kernels: Vec<KernelManifest>,
}

/// The machine an artifact was compiled for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// `cpu` or `cuda`.
    pub kind: String,
    /// LLVM target triple, e.g. `x86_64-unknown-linux-gnu` or `nvptx64-nvidia-cuda`.
    pub triple: String,
    /// CPU name, e.g. `znver5`, `x86-64-v3`, or `sm_90`.
    pub cpu: String,
    /// CPU features the code needs (LLVM names without `+`, e.g. `avx2`, `fma`, `avx512f`).
    pub features: Vec<String>,
}

/// One exported kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelManifest {
    /// Kernel name in the `.tfm` source.
    pub name: String,
    /// Exported C symbol of the typed entry; the packed entry is `{symbol}_packed`.
    pub symbol: String,
    /// Its `///` doc comment.
    pub doc: String,
    /// Inputs, in argument order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in declaration order.
    pub outputs: Vec<TensorSpec>,
    /// Symbolic dims in ABI order.
    pub dims: Vec<String>,
    /// Runtime params in ABI order.
    pub params: Vec<ParamSpec>,
    /// Descriptions of failure sites (indexed by a failure code's site).
    pub sites: Vec<String>,
}

/// A tensor argument.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Argument name.
    pub name: String,
    /// Dtype name (`f32`, `i32`, ...).
    pub dtype: String,
    /// One entry per dimension.
    pub shape: Vec<DimSpec>,
}

/// The size of one dimension.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DimSpec {
    /// A symbolic dim, by name.
    Dim(String),
    /// A fixed size.
    Fixed(i64),
}

/// A runtime param.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// Param name.
    pub name: String,
    /// Dtype name.
    pub dtype: String,
    /// Its value when the caller gives none (the declaration's default or the build's
    /// `--param`).
    pub default: ParamValue,
}

/// A param value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A bool param.
    Bool(bool),
    /// An integer param.
    Int(i64),
    /// A float param.
    Float(f64),
}

/// Why a kernel failed: the low byte of its return code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FailKind {
    /// A subscript outside its dimension.
    OutOfRange = 1,
    /// Integer `/` or `%` by zero.
    DivByZero = 2,
    /// An integer result outside its type.
    Overflow = 3,
    /// A value that must exist reads a point that does not.
    Absent = 4,
    /// A buffer could not be allocated.
    OutOfMemory = 5,
    /// A negative dim was passed.
    BadDims = 6,
    /// A broken compiler invariant.
    Internal = 7,
}

impl FailKind {
    /// The kind of a return code's low byte, if it is one.
    pub fn from_code(code: u32) -> Option<FailKind> {
        Some(match code & 0xff {
            1 => FailKind::OutOfRange,
            2 => FailKind::DivByZero,
            3 => FailKind::Overflow,
            4 => FailKind::Absent,
            5 => FailKind::OutOfMemory,
            6 => FailKind::BadDims,
            7 => FailKind::Internal,
            _ => return None,
        })
    }

    /// What it means, in words.
    pub fn describe(self) -> &'static str {
        match self {
            FailKind::OutOfRange => "subscript out of range",
            FailKind::DivByZero => "integer division by zero",
            FailKind::Overflow => "integer overflow",
            FailKind::Absent => "a value that must exist reads a point that does not",
            FailKind::OutOfMemory => "out of memory",
            FailKind::BadDims => "negative dimension",
            FailKind::Internal => "internal compiler error",
        }
    }
}
