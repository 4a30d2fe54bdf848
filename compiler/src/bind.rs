//! Binding a kernel to concrete inputs and param values, shared by the interpreter and every
//! backend.
//!
//! Owns [`Bindings`] (the size of every symbolic dim of one kernel invocation), [`bind`] /
//! [`bind_shapes`] (dims from input tensors or bare shapes), [`output_shape`] and
//! [`resolve_params`] (param values by `ParamId`), and [`BindError`].
//!
//! Rules: the inputs are matched by name; every declared input must be given and nothing else;
//! ranks and dtypes must match exactly (no implicit conversion of inputs); a fixed dimension
//! must have exactly its size; a symbolic dim must get the same size from every input position
//! it occurs in, and must occur in some input; a product dim (`MP*PS`) is the product of its
//! factors' sizes (at most 2^40), and an input that has it must have exactly that size. Checks run in declaration order and the first
//! failure is reported. Assumes the HIR invariants of [`crate::hir`].

use std::collections::BTreeMap;

use tfmc_runtime::{Scalar, Tensor};

use crate::hir::print::tensor_type;
use crate::hir::{DType, Extent, Kernel, Program, TensorId};
use crate::semantics::ops::{lit_scalar, zero};

/// The sizes of a kernel's symbolic dims for one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bindings {
    /// Size of each dim, by `DimId` (never negative).
    pub dims: Vec<i64>,
}

impl Bindings {
    /// The size of an extent under these bindings (a negative fixed size counts as 0).
    pub fn extent(&self, e: Extent) -> i64 {
        match e {
            Extent::Dim(d) => self.dims.get(d.index()).copied().unwrap_or(0),
            Extent::Const(c) => c.max(0),
        }
    }
}

/// Why inputs or params do not fit a kernel.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BindError {
    /// A declared input was not given.
    #[error("missing input '{name}' of kernel '{kernel}' (expected {ty})")]
    MissingInput {
        /// The kernel.
        kernel: String,
        /// The input.
        name: String,
        /// Its declared type, e.g. `f32[B, H, P, E]`.
        ty: String,
    },
    /// A tensor was given that the kernel does not take.
    #[error("unexpected input '{name}' for kernel '{kernel}'; its inputs are {expected}")]
    UnexpectedInput {
        /// The kernel.
        kernel: String,
        /// The extra name.
        name: String,
        /// The declared input names, comma-separated (or `none`).
        expected: String,
    },
    /// The rank differs from the declaration.
    #[error("input '{name}' has rank {got} (shape {shape:?}), kernel '{kernel}' expects rank {expected} ({ty})")]
    WrongRank {
        /// The kernel.
        kernel: String,
        /// The input.
        name: String,
        /// Its declared type.
        ty: String,
        /// Declared rank.
        expected: usize,
        /// Given rank.
        got: usize,
        /// Given shape.
        shape: Vec<usize>,
    },
    /// The dtype differs from the declaration.
    #[error("input '{name}' has dtype {got}, kernel '{kernel}' expects {expected}")]
    WrongDType {
        /// The kernel.
        kernel: String,
        /// The input.
        name: String,
        /// Declared dtype.
        expected: DType,
        /// Given dtype.
        got: DType,
    },
    /// A dimension declared with a fixed size has another size.
    #[error("dimension {axis} of input '{name}' is {got}, kernel '{kernel}' expects {expected} ({ty})")]
    FixedDim {
        /// The kernel.
        kernel: String,
        /// The input.
        name: String,
        /// Its declared type.
        ty: String,
        /// Position of the dimension.
        axis: usize,
        /// Declared size.
        expected: i64,
        /// Given size.
        got: usize,
    },
    /// A symbolic dim got two different sizes.
    #[error("dimension {dim} is {first} from {first_input} (dim {first_axis}) but {second} from {second_input} (dim {second_axis})")]
    DimConflict {
        /// The dim.
        dim: String,
        /// Size from the first input it occurs in.
        first: usize,
        /// That input.
        first_input: String,
        /// Position there.
        first_axis: usize,
        /// The conflicting size.
        second: usize,
        /// The conflicting input.
        second_input: String,
        /// Position there.
        second_axis: usize,
    },
    /// A dim occurs in no input (the checker should have rejected the kernel).
    #[error("dimension {dim} of kernel '{kernel}' does not occur in any input")]
    UnboundDim {
        /// The kernel.
        kernel: String,
        /// The dim.
        dim: String,
    },
    /// A product dim (`MP*PS`) that an input has differs from the product of its factors.
    #[error("dimension {axis} of input '{input}' is {got}, but it is {dim} = {expected}")]
    ProductMismatch {
        /// The product dim.
        dim: String,
        /// The product of its factors' sizes.
        expected: i64,
        /// The input.
        input: String,
        /// Position there.
        axis: usize,
        /// Given size.
        got: usize,
    },
    /// A product dim larger than [`MAX_DIM`] (or than `i64`).
    #[error("dimension {dim} of kernel '{kernel}' is {size}, larger than 2^40 (the largest size of a dimension)")]
    ProductTooLarge {
        /// The kernel.
        kernel: String,
        /// The product dim.
        dim: String,
        /// Its size, as text (it may not fit `i64`).
        size: String,
    },
    /// A size above [`MAX_DIM`].
    #[error("dimension {axis} of input '{name}' is {got}, larger than 2^40 (the largest size of a dimension)")]
    TooLarge {
        /// The input.
        name: String,
        /// Position of the dimension.
        axis: usize,
        /// Given size.
        got: usize,
    },
    /// A param value was given for a name the program does not declare.
    #[error("unknown param '{name}'; {known}")]
    UnknownParam {
        /// The name given.
        name: String,
        /// `params: A, B` or `the program has no params`.
        known: String,
    },
    /// A param without default that the kernel reads was not given.
    #[error("param '{name}' has no default and kernel '{kernel}' reads it; set it with --param {name}=VALUE")]
    MissingParam {
        /// The kernel.
        kernel: String,
        /// The param.
        name: String,
    },
    /// A param value cannot be converted to the param's dtype.
    #[error("param '{name}' is {dtype}; {value} is not a valid {dtype}")]
    ParamValue {
        /// The param.
        name: String,
        /// Its dtype.
        dtype: DType,
        /// The value given, as text.
        value: String,
    },
}

/// Binds `kernel`'s dims from named input tensors, checking names, ranks, dtypes and sizes.
pub fn bind(kernel: &Kernel, inputs: &BTreeMap<String, Tensor>) -> Result<Bindings, BindError> {
    let mut shapes = Vec::with_capacity(kernel.inputs.len());
    for &tid in &kernel.inputs {
        let info = &kernel.tensors[tid.index()];
        let Some(t) = inputs.get(&info.name) else {
            return Err(BindError::MissingInput { kernel: kernel.name.clone(), name: info.name.clone(), ty: tensor_type(kernel, info) });
        };
        shapes.push(t.shape());
    }
    if let Some(extra) = inputs.keys().find(|n| !kernel.inputs.iter().any(|t| kernel.tensors[t.index()].name == **n)) {
        let names: Vec<&str> = kernel.inputs.iter().map(|t| kernel.tensors[t.index()].name.as_str()).collect();
        return Err(BindError::UnexpectedInput {
            kernel: kernel.name.clone(),
            name: extra.clone(),
            expected: if names.is_empty() { "none".to_string() } else { names.join(", ") },
        });
    }
    for &tid in &kernel.inputs {
        let info = &kernel.tensors[tid.index()];
        let got = inputs[&info.name].dtype();
        check_rank(kernel, tid, inputs[&info.name].shape())?;
        if got != info.dtype {
            return Err(BindError::WrongDType { kernel: kernel.name.clone(), name: info.name.clone(), expected: info.dtype, got });
        }
    }
    bind_shapes(kernel, &shapes)
}

/// Binds `kernel`'s dims from the shapes of its inputs, in declaration order (no names or
/// dtypes to check: used for kernel calls, where the checker has matched the arguments).
pub fn bind_shapes(kernel: &Kernel, shapes: &[&[usize]]) -> Result<Bindings, BindError> {
    // For each dim: its size and where it came from (input position, axis).
    let mut seen: Vec<Option<(usize, usize, usize)>> = vec![None; kernel.dims.len()];
    for (pos, (&tid, shape)) in kernel.inputs.iter().zip(shapes).enumerate() {
        check_rank(kernel, tid, shape)?;
        let info = &kernel.tensors[tid.index()];
        for (axis, (&ext, &got)) in info.shape.iter().zip(shape.iter()).enumerate() {
            if got > MAX_DIM as usize {
                return Err(BindError::TooLarge { name: info.name.clone(), axis, got });
            }
            match ext {
                Extent::Const(c) => {
                    if c != got as i64 {
                        return Err(BindError::FixedDim {
                            kernel: kernel.name.clone(),
                            name: info.name.clone(),
                            ty: tensor_type(kernel, info),
                            axis,
                            expected: c,
                            got,
                        });
                    }
                }
                Extent::Dim(d) => match seen[d.index()] {
                    None => seen[d.index()] = Some((got, pos, axis)),
                    Some((first, p0, a0)) if first != got => {
                        let input_name = |p: usize| kernel.tensors[kernel.inputs[p].index()].name.clone();
                        return Err(BindError::DimConflict {
                            dim: kernel.dims[d.index()].name.clone(),
                            first,
                            first_input: input_name(p0),
                            first_axis: a0,
                            second: got,
                            second_input: input_name(pos),
                            second_axis: axis,
                        });
                    }
                    Some(_) => {}
                },
            }
        }
    }
    let mut dims = Vec::with_capacity(seen.len());
    for (d, s) in seen.iter().enumerate() {
        match (s, &kernel.dims[d].product) {
            // Product dims are filled in below, from their factors.
            (_, Some(_)) => dims.push(0),
            (Some((size, _, _)), None) => dims.push(*size as i64),
            (None, None) => {
                return Err(BindError::UnboundDim { kernel: kernel.name.clone(), dim: kernel.dims[d].name.clone() });
            }
        }
    }
    for (d, info) in kernel.dims.iter().enumerate() {
        let Some(p) = &info.product else { continue };
        // The factors are free dims (a `DimProduct` invariant), bound above; each is at most
        // 2^40, so the product saturates `i128` only far above the bound.
        let exact = p.factors.iter().fold(i128::from(p.scale), |acc, f| acc.saturating_mul(i128::from(dims[f.index()])));
        let size = i64::try_from(exact).ok().filter(|x| *x <= MAX_DIM).ok_or_else(|| BindError::ProductTooLarge {
            kernel: kernel.name.clone(),
            dim: info.name.clone(),
            size: exact.to_string(),
        })?;
        if let Some((got, pos, axis)) = seen[d]
            && got as i64 != size
        {
            return Err(BindError::ProductMismatch {
                dim: info.name.clone(),
                expected: size,
                input: kernel.tensors[kernel.inputs[pos].index()].name.clone(),
                axis,
                got,
            });
        }
        dims[d] = size;
    }
    Ok(Bindings { dims })
}

fn check_rank(kernel: &Kernel, tid: TensorId, shape: &[usize]) -> Result<(), BindError> {
    let info = &kernel.tensors[tid.index()];
    if shape.len() == info.shape.len() {
        return Ok(());
    }
    Err(BindError::WrongRank {
        kernel: kernel.name.clone(),
        name: info.name.clone(),
        ty: tensor_type(kernel, info),
        expected: info.shape.len(),
        got: shape.len(),
        shape: shape.to_vec(),
    })
}

/// The concrete shape of one of `kernel`'s tensors under `bindings`.
pub fn output_shape(kernel: &Kernel, bindings: &Bindings, tensor: TensorId) -> Vec<usize> {
    kernel.tensors[tensor.index()].shape.iter().map(|&e| bindings.extent(e) as usize).collect()
}

/// The largest size of a dimension, for every engine (interpreter, IR evaluator, compiled
/// kernels): index arithmetic on values this small cannot overflow.
pub const MAX_DIM: i64 = 1 << 40;

/// Param values by `ParamId`: each param's default, overridden by `given` (converted to the
/// param's dtype: an integral float in range is accepted for an integer param, any integer or
/// a float that stays finite in the dtype for a float param, only a bool for a bool param). A
/// param that has neither a value nor a default is an error if `kernel` reads it
/// (`params_used`); otherwise it gets the zero of its dtype, which nothing reads.
pub fn resolve_params(program: &Program, kernel: &Kernel, given: &BTreeMap<String, Scalar>) -> Result<Vec<Scalar>, BindError> {
    let mut values: Vec<Option<Scalar>> = program
        .params
        .iter()
        .map(|p| p.default.map(|lit| convert_param(&p.name, p.dtype, lit_scalar(lit))).transpose())
        .collect::<Result<_, _>>()?;
    for (name, &v) in given {
        let Some((id, p)) = program.param(name) else {
            let names: Vec<&str> = program.params.iter().map(|p| p.name.as_str()).collect();
            let known = if names.is_empty() { "the program has no params".to_string() } else { format!("params: {}", names.join(", ")) };
            return Err(BindError::UnknownParam { name: name.clone(), known });
        };
        values[id.index()] = Some(convert_param(&p.name, p.dtype, v)?);
    }
    for &id in &kernel.params_used {
        if values.get(id.index()).is_some_and(Option::is_none) {
            return Err(BindError::MissingParam { kernel: kernel.name.clone(), name: program.params[id.index()].name.clone() });
        }
    }
    Ok(values.into_iter().zip(&program.params).map(|(v, p)| v.unwrap_or_else(|| zero(p.dtype))).collect())
}

fn convert_param(name: &str, dtype: DType, v: Scalar) -> Result<Scalar, BindError> {
    let bad = || BindError::ParamValue {
        name: name.to_string(),
        dtype,
        value: match v {
            Scalar::F(x) => format!("{x:?}"),
            Scalar::I(i) => i.to_string(),
            Scalar::B(b) => b.to_string(),
        },
    };
    let (lo, hi) = if dtype == DType::I32 { (i64::from(i32::MIN), i64::from(i32::MAX)) } else { (i64::MIN, i64::MAX) };
    match (dtype, v) {
        (DType::Bool, Scalar::B(_)) => Ok(v),
        (DType::Bool, _) | (_, Scalar::B(_)) => Err(bad()),
        // A finite value must stay finite in the param's dtype (1e39 is no f32), as an
        // integer must fit an integer param: the interpreter computes with the value in f64,
        // compiled code with it rounded.
        (d, Scalar::F(x)) if d.is_float() && !crate::semantics::types::lit_out_of_range(crate::hir::Lit::Float(x), d) => Ok(Scalar::F(x)),
        (d, Scalar::I(i)) if d.is_float() => Ok(Scalar::F(i as f64)),
        (_, Scalar::I(i)) if (lo..=hi).contains(&i) => Ok(Scalar::I(i)),
        // 2^63 is exactly representable but does not fit, hence the strict upper bound.
        (_, Scalar::F(x)) if x.fract() == 0.0 && x >= lo as f64 && x < -(lo as f64) && (x as i64) <= hi => Ok(Scalar::I(x as i64)),
        _ => Err(bad()),
    }
}
