//! Random inputs for a kernel, for trying kernels out and for tests: every argument gets a
//! tensor of its declared dtype with shape from user-given dimension sizes; and
//! [`read_inputs`], a kernel's inputs from an `.npz` file.
//!
//! Values: floats uniform in [-1, 1), integers uniform in 0..4, bools fair coin flips —
//! fine for attention math, not for index tensors with structure (offsets), which callers
//! must build themselves.

use crate::hir::{self, Extent, Program};
use crate::semantics::memory::{self, MemoryError};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::BTreeMap;
use tfmc_runtime::{Tensor, TensorData};

/// Why inputs could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    /// No such kernel.
    #[error("no kernel '{name}' in the program; kernels: {available}")]
    UnknownKernel {
        /// Requested name.
        name: String,
        /// Comma-separated list.
        available: String,
    },
    /// A dimension of the kernel has no size.
    #[error("no size for dimension '{dim}' of kernel '{kernel}' (pass it, e.g. --dims {dim}=8)")]
    MissingDim {
        /// Dimension.
        dim: String,
        /// Kernel.
        kernel: String,
    },
    /// An input would not fit in memory (or its element count overflows).
    #[error("input '{input}' of shape {shape:?} is too large: {why}")]
    TooLarge {
        /// The input.
        input: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Why it does not fit.
        why: crate::semantics::memory::MemoryError,
    },
    /// A size was given for a dimension the kernel does not have.
    #[error("kernel '{kernel}' has no dimension '{dim}'; its dimensions: {available}")]
    UnknownDim {
        /// Dimension.
        dim: String,
        /// Kernel.
        kernel: String,
        /// Comma-separated list.
        available: String,
    },
}

/// Random tensors for every input of `kernel`, with `dims` giving each symbolic size.
pub fn random_inputs(
    program: &Program,
    kernel: &str,
    dims: &BTreeMap<String, usize>,
    seed: u64,
) -> Result<BTreeMap<String, Tensor>, InputsError> {
    let Some((_, k)) = program.kernel(kernel) else {
        let available: Vec<&str> = program.kernels.iter().map(|k| k.name.as_str()).collect();
        return Err(InputsError::UnknownKernel { name: kernel.to_string(), available: available.join(", ") });
    };
    // A product dim (`MP*PS`) is sized by its factors, never given.
    for name in dims.keys() {
        if !k.free_dims().any(|d| &d.name == name) {
            let available: Vec<&str> = k.free_dims().map(|d| d.name.as_str()).collect();
            return Err(InputsError::UnknownDim { dim: name.clone(), kernel: kernel.to_string(), available: available.join(", ") });
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = BTreeMap::new();
    for &t in &k.inputs {
        let info = &k.tensors[t.index()];
        let mut shape = Vec::new();
        for e in &info.shape {
            shape.push(match e {
                Extent::Const(n) => *n as usize,
                Extent::Dim(d) => {
                    let size = |d: hir::DimId| -> Result<usize, InputsError> {
                        let name = &k.dims[d.index()].name;
                        dims.get(name).copied().ok_or_else(|| InputsError::MissingDim { dim: name.clone(), kernel: kernel.to_string() })
                    };
                    match &k.dims[d.index()].product {
                        None => size(*d)?,
                        Some(p) => {
                            let mut n = usize::try_from(p.scale).unwrap_or(0);
                            for f in &p.factors {
                                n = n.saturating_mul(size(*f)?);
                            }
                            n
                        }
                    }
                }
            });
        }
        let too_large = |why| InputsError::TooLarge { input: info.name.clone(), shape: shape.clone(), why };
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| too_large(MemoryError::Overflow))?;
        let data = if info.dtype.is_float() {
            TensorData::F(generate(n, || rng.random_range(-1.0..1.0)).map_err(too_large)?)
        } else if info.dtype.is_int() {
            TensorData::I(generate(n, || rng.random_range(0..4)).map_err(too_large)?)
        } else {
            TensorData::B(generate(n, || rng.random_bool(0.5)).map_err(too_large)?)
        };
        // Shape and data length agree by construction, and the variant matches the dtype.
        let tensor = Tensor::new(info.dtype, shape, data).expect("consistent random tensor");
        out.insert(info.name.clone(), tensor);
    }
    Ok(out)
}

/// `n` values of `f`, allocated fallibly after checking the memory available.
fn generate<T>(n: usize, f: impl FnMut() -> T) -> Result<Vec<T>, MemoryError> {
    memory::check(n, std::mem::size_of::<T>())?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| MemoryError::Failed { bytes: (n * std::mem::size_of::<T>()) as u64 })?;
    v.extend(std::iter::repeat_with(f).take(n));
    Ok(v)
}

/// Reads kernel `kernel`'s inputs from the `.npz` file `path`: `float32` arrays for inputs the
/// kernel declares `bf16` become `bf16` tensors (numpy has no bfloat16, see
/// `tfmc_runtime::as_declared_bf16`).
pub fn read_inputs(program: &Program, kernel: &str, path: &std::path::Path) -> Result<BTreeMap<String, Tensor>, tfmc_runtime::IoError> {
    let mut inputs = tfmc_runtime::read_npz(path)?;
    if let Some((_, k)) = program.kernel(kernel) {
        let declared = |name: &str| k.inputs.iter().map(|t| &k.tensors[t.index()]).find(|t| t.name == name).map(|t| t.dtype);
        tfmc_runtime::as_declared_bf16(&mut inputs, declared);
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile sizes are errors naming the input, never a panic or an abort.
    #[test]
    fn hostile_dims_are_errors() {
        let program = crate::load_str("t.tfm", "kernel k(X: f32[B, H, P]) -> (Y: f32[B, H, P]) {\n    Y[b, h, p] = X[b, h, p]\n}\n")
            .unwrap_or_else(|d| panic!("{d}"));
        let dims = |b: usize, h: usize, p: usize| BTreeMap::from([("B".to_string(), b), ("H".to_string(), h), ("P".to_string(), p)]);
        let e = random_inputs(&program, "k", &dims(1 << 32, 1 << 32, 1), 0).unwrap_err().to_string();
        assert_eq!(e, "input 'X' of shape [4294967296, 4294967296, 1] is too large: its size in bytes overflows");
        let e = random_inputs(&program, "k", &dims(1, 1, usize::MAX), 0).unwrap_err().to_string();
        assert!(e.starts_with("input 'X' of shape [1, 1, 18446744073709551615] is too large: "), "{e}");
        let e = random_inputs(&program, "k", &dims(1, 1, 1 << 46), 0).unwrap_err().to_string();
        assert!(e.starts_with("input 'X' of shape [1, 1, 70368744177664] is too large: "), "{e}");
        let ok = random_inputs(&program, "k", &dims(2, 0, 3), 0).expect("an empty input is fine");
        assert_eq!(ok["X"].shape(), &[2, 0, 3]);
    }
}
