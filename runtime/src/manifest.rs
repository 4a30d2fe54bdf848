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
//!
//! Besides the types (whose fields and serialized form are the format, fixed by
//! [`FORMAT_VERSION`]) this module owns their JSON form ([`Manifest::to_json`],
//! [`Manifest::from_json`]), consistency checks ([`Manifest::validate`],
//! [`KernelManifest::validate`]) and the C header of an artifact ([`c_header`], written in
//! `header.rs`).

use std::collections::BTreeSet;
use std::fmt;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::ArtifactError;
use crate::tensor::DType;

pub use crate::header::{c_elem_type, c_header, c_param_type};

/// The manifest format version this runtime reads and the compiler writes.
pub const FORMAT_VERSION: u32 = 1;

/// The `format` field of every manifest.
pub const FORMAT_NAME: &str = "tfmc-artifact";

/// The ELF section holding the manifest JSON in a CPU artifact.
pub const SECTION: &str = ".tfmc_manifest";

/// `target.kind` of a GPU (PTX) artifact.
pub const CUDA_KIND: &str = "cuda";

/// How the manifest line of a PTX artifact starts: the PTX text is followed by the line
/// `//@tfmc-manifest <manifest JSON on one line>` (a PTX comment, so the file stays valid PTX).
pub const PTX_MANIFEST_PREFIX: &str = "//@tfmc-manifest ";

/// How the checksum line of a PTX artifact starts: its last line is `//@tfmc-crc32 XXXXXXXX`,
/// the CRC-32 (IEEE, as the CPU artifacts' trailer) of every byte before that line, in 8
/// lowercase hex digits.
pub const PTX_CHECKSUM_PREFIX: &str = "//@tfmc-crc32 ";

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
    /// How to launch it on a GPU (`cuda` artifacts only; absent from CPU manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuLaunch>,
}

/// The GPU launch protocol's facts about one kernel (see [`crate::gpu`]): its PTX module has
/// the entries `{symbol}_prep` and `{symbol}_seg0 .. {symbol}_seg{segments - 1}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuLaunch {
    /// Threads per block of every segment launch (1 to [`MAX_BLOCK`]).
    pub block: u32,
    /// Bytes per element of each heap buffer, in the KIR's `Func::bufs` order (1, 2, 4 or 8).
    pub heap_elem_bytes: Vec<u32>,
    /// Number of segments (parallel loops) of the kernel.
    pub segments: u32,
}

/// The most threads a CUDA block can have.
pub const MAX_BLOCK: u32 = 1024;

/// The most heap buffers, and the most segments, a GPU kernel may declare (a bound on the
/// launch's `status` array, far above what a schedule produces).
pub const MAX_GPU_SLOTS: usize = 1 << 16;

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
    /// A product of two or more factors, each a `Dim` or a `Fixed` (a `.tfm` dim written
    /// `MP * PS`): derived from the factors' sizes, never bound on its own. JSON: an array.
    Product(Vec<DimSpec>),
}

impl DimSpec {
    /// The size under `dims` (the sizes of `names`, in order), or `None` when a name is not
    /// among them or a product overflows `i64`.
    pub fn size(&self, names: &[String], dims: &[i64]) -> Option<i64> {
        match self {
            DimSpec::Fixed(n) => Some(*n),
            DimSpec::Dim(name) => names.iter().position(|x| x == name).and_then(|i| dims.get(i).copied()),
            DimSpec::Product(fs) => fs.iter().try_fold(1i64, |acc, f| acc.checked_mul(f.size(names, dims)?)),
        }
    }
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
    /// A dim was negative or larger than 2^40.
    BadDims = 6,
    /// A broken compiler invariant.
    Internal = 7,
    /// A NULL pointer was passed to an entry point (C callers only: the runtime never does).
    NullPointer = 8,
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
            8 => FailKind::NullPointer,
            _ => return None,
        })
    }

    /// Where a failure of this kind happens when it is not at one of the kernel's sites: out of
    /// memory (any buffer allocation) and a NULL pointer (the entry point) carry site 0 in
    /// their codes, which then names nothing; `None` for the kinds whose `code >> 8` indexes
    /// the sites. (A negative dim, which only a C caller can pass, is reported by the entry
    /// point as `BadDims` at the site of that dim's check, the dim's index.)
    pub fn fixed_site(self) -> Option<&'static str> {
        match self {
            FailKind::OutOfMemory => Some("a buffer allocation"),
            FailKind::NullPointer => Some("the entry point"),
            _ => None,
        }
    }

    /// What it means, in words.
    pub fn describe(self) -> &'static str {
        match self {
            FailKind::OutOfRange => "subscript out of range",
            FailKind::DivByZero => "integer division by zero",
            FailKind::Overflow => "integer overflow",
            FailKind::Absent => "a value that must exist reads a point that does not",
            FailKind::OutOfMemory => "out of memory",
            FailKind::BadDims => "bad dimension",
            FailKind::Internal => "internal compiler error",
            FailKind::NullPointer => "NULL pointer argument",
        }
    }
}

impl Manifest {
    /// The manifest as pretty-printed JSON (what is embedded in an artifact).
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail (no maps, no custom serializers). A
        // non-finite float default would be written as `null`; `validate` rejects those.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Parses a manifest from JSON. Only the syntax and the schema are checked here; see
    /// [`Manifest::validate`] for the format, version and consistency.
    pub fn from_json(json: &str) -> Result<Manifest, ArtifactError> {
        Ok(serde_json::from_str(json)?)
    }

    /// Parses and checks a manifest: its `format` and `version` first (before the rest of the
    /// JSON, so a future format is reported as a version mismatch, not a parse error), then the
    /// schema, then [`Manifest::validate`].
    pub fn from_json_checked(json: &str) -> Result<Manifest, ArtifactError> {
        let value: serde_json::Value = serde_json::from_str(json)?;
        let format = value.get("format").and_then(|f| f.as_str()).unwrap_or("");
        if format != FORMAT_NAME {
            return Err(ArtifactError::Format { found: format.to_string(), expected: FORMAT_NAME });
        }
        let version = value
            .get("version")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| ArtifactError::InvalidManifest("no 'version' (a 32-bit unsigned integer)".into()))?;
        if version != FORMAT_VERSION {
            return Err(ArtifactError::Version { found: version, expected: FORMAT_VERSION });
        }
        let manifest: Manifest = serde_json::from_value(value)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the format name and version, then every kernel ([`KernelManifest::validate`])
    /// and that kernel names and symbols are distinct. The target is not checked here (that is
    /// the loader's business).
    pub fn validate(&self) -> Result<(), ArtifactError> {
        if self.format != FORMAT_NAME {
            return Err(ArtifactError::Format { found: self.format.clone(), expected: FORMAT_NAME });
        }
        if self.version != FORMAT_VERSION {
            return Err(ArtifactError::Version { found: self.version, expected: FORMAT_VERSION });
        }
        distinct("kernel", self.kernels.iter().map(|k| k.name.as_str()))
            .and_then(|()| distinct("symbol", self.kernels.iter().map(|k| k.symbol.as_str())))
            .map_err(ArtifactError::InvalidManifest)?;
        for k in &self.kernels {
            k.validate().map_err(|e| ArtifactError::InvalidManifest(format!("kernel '{}': {e}", k.name)))?;
        }
        Ok(())
    }
}

impl KernelManifest {
    /// Checks that the entry is consistent: the symbol is a C identifier; argument, dim and
    /// param names are distinct; dtype names are known; every symbolic dim of a shape is in
    /// `dims`; fixed sizes are not negative; a product has two or more factors, none a product; each param's default fits its dtype; GPU launch
    /// info, when present, is in range ([`GpuLaunch::validate`]).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(gpu) = &self.gpu {
            gpu.validate()?;
        }
        if !is_c_identifier(&self.symbol) {
            return Err(format!("symbol '{}' is not a C identifier", self.symbol));
        }
        distinct("input", self.inputs.iter().map(|t| t.name.as_str()))?;
        distinct("output", self.outputs.iter().map(|t| t.name.as_str()))?;
        distinct("dim", self.dims.iter().map(String::as_str))?;
        distinct("param", self.params.iter().map(|p| p.name.as_str()))?;
        for (what, t) in self.inputs.iter().map(|t| ("input", t)).chain(self.outputs.iter().map(|t| ("output", t))) {
            t.dtype().ok_or_else(|| format!("{what} '{}' has unknown dtype '{}'", t.name, t.dtype))?;
            for d in &t.shape {
                let factors = match d {
                    DimSpec::Product(fs) if fs.len() < 2 => {
                        return Err(format!("{what} '{}' has a product dim with {} factors (at least 2)", t.name, fs.len()));
                    }
                    DimSpec::Product(fs) => fs.as_slice(),
                    single => std::slice::from_ref(single),
                };
                for f in factors {
                    match f {
                        DimSpec::Dim(name) if !self.dims.contains(name) => {
                            return Err(format!("{what} '{}' uses dim '{name}', which is not in dims", t.name));
                        }
                        DimSpec::Fixed(n) if *n < 0 => {
                            return Err(format!("{what} '{}' has negative size {n}", t.name));
                        }
                        DimSpec::Product(_) if factors.len() > 1 => {
                            return Err(format!("{what} '{}' has a product inside a product dim", t.name));
                        }
                        _ => {}
                    }
                }
            }
        }
        for p in &self.params {
            let dtype = DType::parse(&p.dtype).ok_or_else(|| format!("param '{}' has unknown dtype '{}'", p.name, p.dtype))?;
            if !p.default.fits(dtype) {
                return Err(format!("param '{}' of dtype {dtype} has default {}", p.name, p.default));
            }
        }
        Ok(())
    }

    /// The input spec called `name`.
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|t| t.name == name)
    }
}

impl GpuLaunch {
    /// Checks the block size (1 to [`MAX_BLOCK`]), the heap element sizes (1, 2, 4 or 8) and
    /// that heap buffers and segments number at most [`MAX_GPU_SLOTS`] each.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_BLOCK).contains(&self.block) {
            return Err(format!("gpu block size {} is not between 1 and {MAX_BLOCK}", self.block));
        }
        if let Some((h, b)) = self.heap_elem_bytes.iter().enumerate().find(|(_, b)| ![1, 2, 4, 8].contains(*b)) {
            return Err(format!("gpu heap buffer {h} has element size {b} bytes (not 1, 2, 4 or 8)"));
        }
        if self.heap_elem_bytes.len() > MAX_GPU_SLOTS {
            return Err(format!("{} gpu heap buffers (at most {MAX_GPU_SLOTS})", self.heap_elem_bytes.len()));
        }
        if usize::try_from(self.segments).map_or(true, |s| s > MAX_GPU_SLOTS) {
            return Err(format!("{} gpu segments (at most {MAX_GPU_SLOTS})", self.segments));
        }
        Ok(())
    }
}

/// The checked manifest of a PTX artifact's text (see [`PTX_MANIFEST_PREFIX`]): exactly one
/// line must start with the prefix; its JSON is read with [`Manifest::from_json_checked`], the
/// target kind must be [`CUDA_KIND`] and every kernel must have [`KernelManifest::gpu`]; then
/// the last line must be the checksum line ([`PTX_CHECKSUM_PREFIX`]) and match the text
/// before it ([`ArtifactError::Checksum`] otherwise: the PTX or manifest was changed). The
/// format and version are read first, so a future format is reported as such.
pub fn manifest_from_ptx(text: &str) -> Result<Manifest, ArtifactError> {
    let m = manifest_line(text)?;
    check_ptx_checksum(text)?;
    Ok(m)
}

/// The checksum line's check (see [`manifest_from_ptx`]).
fn check_ptx_checksum(text: &str) -> Result<(), ArtifactError> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let start = body.rfind('\n').map_or(0, |i| i + 1);
    let missing = || {
        ArtifactError::InvalidManifest(format!(
            "the last line is not '{}XXXXXXXX': the PTX artifact is truncated or not written by this tfmc",
            PTX_CHECKSUM_PREFIX
        ))
    };
    let hex = body[start..].strip_prefix(PTX_CHECKSUM_PREFIX).ok_or_else(missing)?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(missing());
    }
    let recorded = u32::from_str_radix(hex, 16).map_err(|_| missing())?;
    let computed = crc32fast::hash(&text.as_bytes()[..start]);
    if recorded != computed {
        return Err(ArtifactError::Checksum { recorded, computed });
    }
    Ok(())
}

/// The manifest line's checks (see [`manifest_from_ptx`]).
fn manifest_line(text: &str) -> Result<Manifest, ArtifactError> {
    let mut lines = text.lines().filter_map(|l| l.strip_prefix(PTX_MANIFEST_PREFIX));
    let Some(json) = lines.next() else {
        return Err(ArtifactError::NoPtxManifest { prefix: PTX_MANIFEST_PREFIX });
    };
    if lines.next().is_some() {
        return Err(ArtifactError::InvalidManifest(format!("more than one '{}' line", PTX_MANIFEST_PREFIX.trim_end())));
    }
    let m = Manifest::from_json_checked(json)?;
    if m.target.kind != CUDA_KIND {
        return Err(ArtifactError::NotCuda { found: m.target.kind.clone() });
    }
    if let Some(k) = m.kernels.iter().find(|k| k.gpu.is_none()) {
        return Err(ArtifactError::InvalidManifest(format!("kernel '{}' has no 'gpu' launch info", k.name)));
    }
    Ok(m)
}

/// A PTX artifact's text: `ptx` (given a final newline if it lacks one) followed by the line
/// `//@tfmc-manifest <m as one-line JSON>\n` and the checksum line `//@tfmc-crc32 XXXXXXXX\n`,
/// which [`manifest_from_ptx`] reads back and checks.
pub fn ptx_with_manifest(ptx: &str, m: &Manifest) -> String {
    // Serializing these plain structs cannot fail (see `Manifest::to_json`); JSON escapes
    // newlines inside strings, so the compact form is one line.
    let json = serde_json::to_string(m).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    let mut out = String::with_capacity(ptx.len() + json.len() + PTX_MANIFEST_PREFIX.len() + 2);
    out.push_str(ptx);
    if !ptx.is_empty() && !ptx.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(PTX_MANIFEST_PREFIX);
    // ptxas and the CUDA driver reject non-ASCII bytes even in comments; doc comments and
    // site texts may hold them (`Kᵀ`). A JSON `\uXXXX` escape (UTF-16 units) means the same
    // character, so the manifest reads back identical.
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        }
    }
    out.push('\n');
    let crc = crc32fast::hash(out.as_bytes());
    let _ = writeln!(out, "{PTX_CHECKSUM_PREFIX}{crc:08x}");
    out
}

/// Fails on the first name that occurs twice.
fn distinct<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(format!("{what} '{n}' occurs twice"));
        }
    }
    Ok(())
}

/// True for `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_c_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl TensorSpec {
    /// The dtype, if its name is known.
    pub fn dtype(&self) -> Option<DType> {
        DType::parse(&self.dtype)
    }

    /// The type as written in `.tfm`, e.g. `f32[B, H, P, E]` (`f32[]` for a scalar).
    pub fn type_string(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(ToString::to_string).collect();
        format!("{}[{}]", self.dtype, dims.join(", "))
    }
}

impl fmt::Display for DimSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DimSpec::Dim(name) => f.write_str(name),
            DimSpec::Fixed(n) => write!(f, "{n}"),
            DimSpec::Product(fs) => {
                for (i, x) in fs.iter().enumerate() {
                    write!(f, "{}{x}", if i > 0 { " * " } else { "" })?;
                }
                Ok(())
            }
        }
    }
}

impl ParamValue {
    /// True when a param of `dtype` can hold this value: bools for `bool`, integers in range
    /// for `i32`/`i64`, finite floats (JSON has no infinities or NaN) or integers for float
    /// dtypes.
    pub fn fits(self, dtype: DType) -> bool {
        match self {
            ParamValue::Bool(_) => dtype == DType::Bool,
            ParamValue::Int(x) => match dtype {
                DType::I32 => i32::try_from(x).is_ok(),
                DType::I64 => true,
                d => d.is_float(),
            },
            ParamValue::Float(x) => dtype.is_float() && x.is_finite(),
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x:?}"),
        }
    }
}

impl fmt::Display for FailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}
