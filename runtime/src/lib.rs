//! tfmc runtime: the tensor container ([`Tensor`]) and its `.npy`/`.npz` I/O.
//!
//! This crate must never depend on LLVM (or any code generator): everything that loads,
//! stores or compares tensors links it, including tools that run without a compiler.
//!
//! Module map:
//! - [`tensor`]: [`DType`], [`TensorData`], [`Scalar`], [`Tensor`], [`TensorError`];
//! - [`manifest`]: the artifact manifest and kernel ABI ([`manifest::Manifest`]);
//! - [`aot`]: the C runtime linked into AOT artifacts and the checksum trailer ([`aot::seal`]);
//! - [`error`]: [`ArtifactError`], [`RuntimeError`];
//! - [`parallel`]: the thread pool JIT-compiled kernels call (`tfmc_parallel_for`);
//! - [`npz`]: [`read_npz`], [`write_npz`], [`read_npy`], [`write_npy`], [`IoError`];
//! - private: `npy` (the array codec), `npy_header` (header parser), `atomic` (atomic writes).

pub mod aot;
mod atomic;
pub mod error;
pub mod manifest;
pub mod parallel;
mod npy;
mod npy_header;
pub mod npz;
pub mod tensor;

pub use error::{ArtifactError, RuntimeError};
pub use npz::{IoError, read_npy, read_npz, write_npy, write_npz};
pub use tensor::{DType, Scalar, Tensor, TensorData, TensorError};
