//! Calling a compiled kernel's packed entry with validation: shared by the JIT (which hands
//! over a raw [`PackedFn`]) and by loaded artifacts ([`crate::artifact::Kernel`]). The GPU
//! driver ([`crate::gpu`]) uses the same checks ([`bind_call`]), output naming
//! ([`named_outputs`]) and failure mapping ([`check_return`]).
//!
//! Everything the ABI (see [`crate::manifest`]) leaves to the caller is checked here before the
//! kernel runs, so that a wrong call is an error, never out-of-bounds memory access: the
//! manifest entry is consistent ([`KernelManifest::validate`]); inputs come in the right
//! number, dtypes and ranks; fixed sizes match; each symbolic dim has one size across all its
//! uses and fits `int64_t`; output buffers have the dtypes and shapes those dims give; params
//! are known and of the right kind (missing ones take the manifest default). Output buffers
//! are zero-filled before the call. A non-zero return code becomes [`RuntimeError::Kernel`].

use std::collections::BTreeMap;
use std::ffi::c_void;

use crate::error::RuntimeError;
use crate::manifest::{DimSpec, FailKind, KernelManifest, ParamValue, TensorSpec};
use crate::native::NativeTensor;
use crate::tensor::{DType, Scalar, Tensor};

/// The packed entry `{symbol}_packed` of a compiled kernel (see [`crate::manifest`]).
pub type PackedFn = unsafe extern "C" fn(bufs: *const *mut c_void, dims: *const i64, params: *const u64) -> i32;

/// The kernel's manifest entry checked, as a [`RuntimeError`].
fn validate(k: &KernelManifest) -> Result<(), RuntimeError> {
    k.validate().map_err(|reason| RuntimeError::BadManifest { kernel: k.name.clone(), reason })
}

/// The sizes of `k.dims` (in order) given the shapes of all inputs, by position.
///
/// Ranks must match, fixed sizes be exact, each symbolic dim have one size across all its
/// uses, and every dim be the size of some input (else [`RuntimeError::UnboundDim`]); an input
/// axis with a product dim must be the product of its factors' sizes.
pub fn bind_dims(k: &KernelManifest, shapes: &[&[usize]]) -> Result<Vec<i64>, RuntimeError> {
    validate(k)?;
    if shapes.len() != k.inputs.len() {
        return Err(RuntimeError::InputCount { kernel: k.name.clone(), expected: k.inputs.len(), got: shapes.len() });
    }
    // For each dim: its size and the argument that bound it.
    let mut bound: Vec<Option<(usize, &str)>> = vec![None; k.dims.len()];
    for (spec, shape) in k.inputs.iter().zip(shapes) {
        let arg = || format!("input '{}'", spec.name);
        if shape.len() != spec.shape.len() {
            return Err(RuntimeError::Rank { kernel: k.name.clone(), arg: arg(), ty: spec.type_string(), got: shape.to_vec() });
        }
        for (axis, (d, &size)) in spec.shape.iter().zip(shape.iter()).enumerate() {
            match d {
                DimSpec::Fixed(n) => {
                    if u64::try_from(*n).ok() != u64::try_from(size).ok() {
                        return Err(RuntimeError::FixedDim { kernel: k.name.clone(), arg: arg(), axis, expected: *n, got: size });
                    }
                }
                // Checked below, once its factors are bound.
                DimSpec::Product(_) => {}
                DimSpec::Dim(name) => {
                    // `validate` guarantees every symbolic dim is in `k.dims`.
                    let Some(i) = k.dims.iter().position(|d| d == name) else {
                        continue;
                    };
                    match bound[i] {
                        None => bound[i] = Some((size, &spec.name)),
                        Some((first, _)) if first == size => {}
                        Some((first, first_arg)) => {
                            return Err(RuntimeError::DimMismatch {
                                kernel: k.name.clone(),
                                arg: arg(),
                                axis,
                                dim: name.clone(),
                                got: size,
                                first_arg: format!("input '{first_arg}'"),
                                first,
                            });
                        }
                    }
                }
            }
        }
    }
    let dims: Vec<i64> = k
        .dims
        .iter()
        .zip(&bound)
        .map(|(dim, b)| match b {
            None => Err(RuntimeError::UnboundDim { kernel: k.name.clone(), dim: dim.clone() }),
            Some((size, arg)) => i64::try_from(*size).map_err(|_| RuntimeError::TooLarge {
                kernel: k.name.clone(),
                arg: format!("input '{arg}'"),
                shape: vec![*size],
            }),
        })
        .collect::<Result<_, _>>()?;
    // An input with a product dim must have exactly the product of its factors.
    for (spec, shape) in k.inputs.iter().zip(shapes) {
        for (axis, (d, &size)) in spec.shape.iter().zip(shape.iter()).enumerate() {
            if let DimSpec::Product(_) = d {
                let expected = d.size(&k.dims, &dims).and_then(|e| usize::try_from(e).ok());
                if expected != Some(size) {
                    return Err(RuntimeError::DimMismatch {
                        kernel: k.name.clone(),
                        arg: format!("input '{}'", spec.name),
                        axis,
                        dim: d.to_string(),
                        got: size,
                        first_arg: "the product of its factors".to_string(),
                        first: expected.unwrap_or(usize::MAX),
                    });
                }
            }
        }
    }
    Ok(dims)
}

/// The shapes of `k`'s outputs given the sizes of its dims (from [`bind_dims`]).
pub fn output_shapes(k: &KernelManifest, dims: &[i64]) -> Result<Vec<Vec<usize>>, RuntimeError> {
    validate(k)?;
    k.outputs
        .iter()
        .map(|spec| {
            spec.shape
                .iter()
                .map(|d| {
                    d.size(&k.dims, dims).and_then(|s| usize::try_from(s).ok()).ok_or_else(|| RuntimeError::BadManifest {
                        kernel: k.name.clone(),
                        reason: format!("output '{}' has dim '{d}' with no valid size among {} dims given", spec.name, dims.len()),
                    })
                })
                .collect()
        })
        .collect()
}

/// Zero-filled output buffers for `k` with the given dim sizes.
pub fn alloc_outputs(k: &KernelManifest, dims: &[i64]) -> Result<Vec<NativeTensor>, RuntimeError> {
    let shapes = output_shapes(k, dims)?;
    k.outputs
        .iter()
        .zip(shapes)
        .map(|(spec, shape)| {
            let dtype = spec_dtype(k, &spec.dtype)?;
            NativeTensor::zeros(dtype, shape.clone()).map_err(|_| RuntimeError::TooLarge {
                kernel: k.name.clone(),
                arg: format!("output '{}'", spec.name),
                shape,
            })
        })
        .collect()
}

/// The dtype called `name` in `k`'s manifest.
fn spec_dtype(k: &KernelManifest, name: &str) -> Result<DType, RuntimeError> {
    DType::parse(name).ok_or_else(|| RuntimeError::BadManifest { kernel: k.name.clone(), reason: format!("unknown dtype '{name}'") })
}

/// The ABI's param slots: one per `k.params`, from `params` or the manifest default. Float
/// params accept floats and integers (rounded to the param's dtype, passed as a `double`);
/// integer params accept integers in range; bool params accept bools.
pub fn pack_params(k: &KernelManifest, params: &BTreeMap<String, Scalar>) -> Result<Vec<u64>, RuntimeError> {
    if let Some(unknown) = params.keys().find(|n| !k.params.iter().any(|p| &p.name == *n)) {
        return Err(RuntimeError::UnknownParam {
            kernel: k.name.clone(),
            param: unknown.clone(),
            params: k.params.iter().map(|p| p.name.clone()).collect(),
        });
    }
    k.params
        .iter()
        .map(|p| {
            let dtype = spec_dtype(k, &p.dtype)?;
            let value = params.get(&p.name).copied().unwrap_or(match p.default {
                ParamValue::Bool(b) => Scalar::B(b),
                ParamValue::Int(i) => Scalar::I(i),
                ParamValue::Float(x) => Scalar::F(x),
            });
            let slot = match (dtype, value) {
                (d, Scalar::F(x)) if d.is_float() => Some(d.round_f64(x).to_bits()),
                (d, Scalar::I(i)) if d.is_float() => Some(d.round_f64(i as f64).to_bits()),
                (DType::I64, Scalar::I(i)) => Some(i as u64),
                (DType::I32, Scalar::I(i)) => i32::try_from(i).ok().map(|i| i64::from(i) as u64),
                (DType::Bool, Scalar::B(b)) => Some(u64::from(b)),
                _ => None,
            };
            slot.ok_or_else(|| RuntimeError::ParamType {
                kernel: k.name.clone(),
                param: p.name.clone(),
                dtype: p.dtype.clone(),
                value: match value {
                    Scalar::F(x) => format!("the float {x:?}"),
                    Scalar::I(i) => format!("the integer {i}"),
                    Scalar::B(b) => format!("the bool {b}"),
                },
            })
        })
        .collect()
}

/// Maps a kernel's return code to `Ok` (0) or the failure it reports.
pub fn check_return(k: &KernelManifest, code: i32) -> Result<(), RuntimeError> {
    if code == 0 {
        return Ok(());
    }
    let bits = code as u32;
    let Some(kind) = FailKind::from_code(bits) else {
        return Err(RuntimeError::UnknownFailure { kernel: k.name.clone(), code });
    };
    let site = match kind.fixed_site() {
        Some(s) => s.to_string(),
        None => usize::try_from(bits >> 8).ok().and_then(|i| k.sites.get(i)).cloned().unwrap_or_else(|| "unknown site".to_string()),
    };
    Err(RuntimeError::Kernel { kernel: k.name.clone(), kind, site })
}

/// Fails unless `got` is the dtype the manifest declares for argument `spec` (`what`:
/// `input` or `output`).
fn check_dtype(k: &KernelManifest, spec: &TensorSpec, what: &str, got: DType) -> Result<(), RuntimeError> {
    let expected = spec_dtype(k, &spec.dtype)?;
    if got == expected {
        return Ok(());
    }
    Err(RuntimeError::DType { kernel: k.name.clone(), arg: format!("{what} '{}'", spec.name), expected, got })
}

/// Calls `entry` on ABI-format tensors after checking them against `k` (see the module docs).
/// `outputs` must be allocated by the caller with the right dtypes and shapes
/// ([`alloc_outputs`] makes them); they are zero-filled, then written by the kernel.
///
/// # Safety
/// `entry` must be the packed entry of a kernel compiled with manifest entry `k` (the code
/// then only touches the buffers within the shapes checked here), safe to call from this
/// thread.
pub unsafe fn call_native(
    entry: PackedFn,
    k: &KernelManifest,
    inputs: &[&NativeTensor],
    outputs: &mut [NativeTensor],
    params: &BTreeMap<String, Scalar>,
) -> Result<(), RuntimeError> {
    validate(k)?;
    if inputs.len() != k.inputs.len() {
        return Err(RuntimeError::InputCount { kernel: k.name.clone(), expected: k.inputs.len(), got: inputs.len() });
    }
    for (spec, t) in k.inputs.iter().zip(inputs) {
        check_dtype(k, spec, "input", t.dtype())?;
    }
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    let dims = bind_dims(k, &shapes)?;
    if outputs.len() != k.outputs.len() {
        return Err(RuntimeError::OutputCount { kernel: k.name.clone(), expected: k.outputs.len(), got: outputs.len() });
    }
    let out_shapes = output_shapes(k, &dims)?;
    for ((spec, t), shape) in k.outputs.iter().zip(outputs.iter()).zip(out_shapes) {
        check_dtype(k, spec, "output", t.dtype())?;
        if t.shape() != shape.as_slice() {
            return Err(RuntimeError::OutputShape {
                kernel: k.name.clone(),
                output: spec.name.clone(),
                expected: shape,
                got: t.shape().to_vec(),
            });
        }
    }
    let params = pack_params(k, params)?;
    for t in outputs.iter_mut() {
        t.bytes_mut().fill(0);
    }
    // SAFETY: forwarded from the caller; the buffers were checked against `k` above.
    let code = unsafe { invoke(entry, inputs, outputs, &dims, &params) };
    check_return(k, code)
}

/// A tensor in memory the caller owns (a NumPy array's or a torch tensor's buffer), described
/// for a checked call without a copy ([`call_raw`]): `ptr` points at `product(shape)` dense,
/// row-major elements of `dtype` in the ABI's element format.
#[derive(Clone, Debug)]
pub struct RawTensor {
    /// The element type.
    pub dtype: DType,
    /// The shape (row-major, no strides: the buffer is dense).
    pub shape: Vec<usize>,
    /// The first element.
    pub ptr: *mut u8,
}

impl RawTensor {
    /// The buffer's byte range, if its size fits `usize`.
    fn byte_range(&self) -> Option<(usize, usize)> {
        let bytes = crate::tensor::shape_len(&self.shape)?.checked_mul(self.dtype.size_bytes())?;
        let start = self.ptr as usize;
        Some((start, start.checked_add(bytes)?))
    }
}

/// Calls `entry` on caller-owned buffers after every check [`call_native`] makes, plus: each
/// buffer is aligned to its element size and non-null, and no output overlaps another
/// argument. Outputs are zero-filled, then written by the kernel. Nothing is copied.
///
/// # Safety
/// As [`call_native`] for `entry`; and every `ptr` must be valid for reads (inputs) or reads
/// and writes (outputs) of `product(shape) * dtype.size_bytes()` bytes for the whole call, with
/// no other thread writing the inputs or touching the outputs meanwhile.
pub unsafe fn call_raw(
    entry: PackedFn,
    k: &KernelManifest,
    inputs: &[RawTensor],
    outputs: &[RawTensor],
    params: &BTreeMap<String, Scalar>,
) -> Result<(), RuntimeError> {
    validate(k)?;
    if inputs.len() != k.inputs.len() {
        return Err(RuntimeError::InputCount { kernel: k.name.clone(), expected: k.inputs.len(), got: inputs.len() });
    }
    if outputs.len() != k.outputs.len() {
        return Err(RuntimeError::OutputCount { kernel: k.name.clone(), expected: k.outputs.len(), got: outputs.len() });
    }
    let named = k.inputs.iter().map(|s| ("input", s)).chain(k.outputs.iter().map(|s| ("output", s)));
    let mut ranges = Vec::with_capacity(inputs.len() + outputs.len());
    for ((what, spec), t) in named.zip(inputs.iter().chain(outputs)) {
        check_dtype(k, spec, what, t.dtype)?;
        let arg = || format!("{what} '{}'", spec.name);
        let align = t.dtype.size_bytes();
        // An empty buffer is never read or written: a null address (torch's for no elements)
        // is accepted for it.
        let empty = crate::tensor::shape_len(&t.shape) == Some(0);
        if (t.ptr.is_null() && !empty) || !(t.ptr as usize).is_multiple_of(align) {
            return Err(RuntimeError::Misaligned { kernel: k.name.clone(), arg: arg(), align });
        }
        let range = t.byte_range().ok_or_else(|| RuntimeError::TooLarge { kernel: k.name.clone(), arg: arg(), shape: t.shape.clone() })?;
        ranges.push((arg(), range));
    }
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape.as_slice()).collect();
    let dims = bind_dims(k, &shapes)?;
    let out_shapes = output_shapes(k, &dims)?;
    for ((spec, t), shape) in k.outputs.iter().zip(outputs).zip(out_shapes) {
        if t.shape != shape {
            return Err(RuntimeError::OutputShape {
                kernel: k.name.clone(),
                output: spec.name.clone(),
                expected: shape,
                got: t.shape.clone(),
            });
        }
    }
    for (i, (arg, (start, end))) in ranges.iter().enumerate().skip(inputs.len()) {
        let clash = ranges.iter().enumerate().find(|(j, (_, (s, e)))| *j != i && start < e && s < end && start < end && s < e);
        if let Some((_, (other, _))) = clash {
            return Err(RuntimeError::Overlap { kernel: k.name.clone(), arg: arg.clone(), other: other.clone() });
        }
    }
    let params = pack_params(k, params)?;
    // Null (empty) buffers are passed as a dangling, aligned, non-null address, as a
    // `NativeTensor` would be.
    let mut bufs: Vec<*mut c_void> = inputs
        .iter()
        .chain(outputs)
        .map(|t| if t.ptr.is_null() { std::ptr::without_provenance_mut(64) } else { t.ptr.cast::<c_void>() })
        .collect();
    for (t, (_, (start, end))) in outputs.iter().zip(&ranges[inputs.len()..]) {
        if end > start {
            // SAFETY: the caller guarantees `ptr` is valid for writes of the buffer's size,
            // which `byte_range` computed; no other argument overlaps it (checked above).
            unsafe { std::ptr::write_bytes(t.ptr, 0, end - start) };
        }
    }
    // SAFETY: forwarded from the caller: `entry` matches `k`, every buffer is live, aligned and
    // has the dtype and shape checked above for the dims passed; outputs overlap nothing.
    let code = unsafe { entry(bufs.as_mut_ptr().cast_const(), dims.as_ptr(), params.as_ptr()) };
    check_return(k, code)
}

/// Calls `entry` on buffers already checked against its manifest.
///
/// # Safety
/// `entry` is the packed entry of a kernel whose manifest entry the buffers, `dims` and
/// `params` were checked against ([`call_native`]'s checks or [`bind_call`]).
unsafe fn invoke(entry: PackedFn, inputs: &[&NativeTensor], outputs: &mut [NativeTensor], dims: &[i64], params: &[u64]) -> i32 {
    let mut bufs: Vec<*mut c_void> = inputs.iter().map(|t| t.as_ptr().cast_mut().cast::<c_void>()).collect();
    bufs.extend(outputs.iter_mut().map(|t| t.as_mut_ptr().cast::<c_void>()));
    // SAFETY: the caller guarantees `entry` matches the checked layout. Every buffer is live
    // for the call, has the dtype and shape the manifest gives for the dims passed, and
    // outputs are uniquely borrowed; the arrays have one entry per input+output, dim and
    // param. Inputs are passed as `*mut` only because the ABI's array type is shared: the
    // kernel treats them as const.
    unsafe { entry(bufs.as_ptr(), dims.as_ptr(), params.as_ptr()) }
}

/// A call by name bound to the kernel ABI, every check done: what any backend (CPU entry,
/// GPU driver) hands to the kernel.
#[derive(Debug)]
pub struct BoundCall {
    /// The inputs in the ABI's element format, in manifest order.
    pub inputs: Vec<NativeTensor>,
    /// The sizes of the kernel's dims, in ABI order.
    pub dims: Vec<i64>,
    /// The param slots, in ABI order ([`pack_params`]).
    pub params: Vec<u64>,
    /// Zero-filled output buffers, in manifest order, with the shapes `dims` give.
    pub outputs: Vec<NativeTensor>,
}

/// Checks a call by name against `k` and binds it to the ABI: every input of `k` must be
/// given, with its exact dtype (no implicit conversion), and no other; dims are bound from
/// the input shapes ([`bind_dims`]), outputs allocated ([`alloc_outputs`]), params packed
/// ([`pack_params`]; missing ones take the manifest default).
pub fn bind_call(
    k: &KernelManifest,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
) -> Result<BoundCall, RuntimeError> {
    validate(k)?;
    if let Some(name) = inputs.keys().find(|n| k.input(n).is_none()) {
        return Err(RuntimeError::UnexpectedInput {
            kernel: k.name.clone(),
            input: name.clone(),
            expected: k.inputs.iter().map(|t| t.name.clone()).collect(),
        });
    }
    let mut native = Vec::with_capacity(k.inputs.len());
    for spec in &k.inputs {
        let Some(t) = inputs.get(&spec.name) else {
            return Err(RuntimeError::MissingInput { kernel: k.name.clone(), input: spec.name.clone(), ty: spec.type_string() });
        };
        check_dtype(k, spec, "input", t.dtype())?;
        native.push(NativeTensor::from_tensor(t)?);
    }
    let shapes: Vec<&[usize]> = native.iter().map(|t| t.shape()).collect();
    let dims = bind_dims(k, &shapes)?;
    let outputs = alloc_outputs(k, &dims)?;
    let params = pack_params(k, params)?;
    Ok(BoundCall { inputs: native, dims, params, outputs })
}

/// The outputs of a call by name (`outputs` in manifest order, as [`BoundCall::outputs`]).
pub fn named_outputs(k: &KernelManifest, outputs: &[NativeTensor]) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
    if outputs.len() != k.outputs.len() {
        return Err(RuntimeError::OutputCount { kernel: k.name.clone(), expected: k.outputs.len(), got: outputs.len() });
    }
    k.outputs.iter().zip(outputs).map(|(spec, t)| Ok((spec.name.clone(), t.to_tensor()?))).collect()
}

/// Calls `entry` with inputs by name ([`bind_call`]'s checks); returns the outputs by name.
///
/// # Safety
/// As [`call_native`].
pub unsafe fn call(
    entry: PackedFn,
    k: &KernelManifest,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
    let mut bound = bind_call(k, inputs, params)?;
    let refs: Vec<&NativeTensor> = bound.inputs.iter().collect();
    // SAFETY: forwarded from the caller; `bind_call` checked the buffers against `k`.
    let code = unsafe { invoke(entry, &refs, &mut bound.outputs, &bound.dims, &bound.params) };
    check_return(k, code)?;
    named_outputs(k, &bound.outputs)
}
