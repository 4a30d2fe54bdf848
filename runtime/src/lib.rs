//! tfmc runtime: the tensor container ([`Tensor`]) and its `.npy`/`.npz` I/O, and loading and
//! running compiled kernels (CPU artifacts, and JIT entries through [`call`]).
//!
//! This crate must never depend on LLVM (or any code generator): everything that loads,
//! stores or compares tensors links it, including tools that run without a compiler.
//!
//! Module map:
//! - [`tensor`]: [`DType`], [`TensorData`], [`Scalar`], [`Tensor`], [`TensorError`];
//! - [`manifest`]: the artifact manifest and kernel ABI ([`manifest::Manifest`]), its JSON form,
//!   C header ([`manifest::c_header`]) and PTX artifact line ([`manifest::manifest_from_ptx`]);
//! - [`aot`]: the C runtime linked into AOT artifacts and the checksum trailer ([`aot::seal`]);
//! - [`artifact`]: [`Artifact`] (open, validate and load a sealed CPU artifact) and its
//!   [`artifact::Kernel`]s;
//! - [`features`]: host architecture and CPU-feature checks for an artifact's target;
//! - [`call`]: validated calls of a kernel's packed entry ([`call::call`], [`call::call_native`],
//!   [`call::bind_dims`]), shared by the JIT and artifacts;
//! - [`native`]: [`NativeTensor`], a tensor in the kernel ABI's element format;
//! - [`gpu`]: the host side of the GPU launch protocol over any [`gpu::GpuDevice`]
//!   ([`gpu::run`], [`gpu::Prepared`]), shared by real GPUs and device emulations;
//! - `cuda` (feature `cuda`): `CudaDevice` (the driver over cudarc) and `CudaArtifact` (a PTX
//!   artifact loaded on a GPU); the `tfmc-cuda-run` binary runs artifacts with it;
//! - [`error`]: [`ArtifactError`], [`RuntimeError`];
//! - [`parallel`]: the thread pool JIT-compiled kernels call (`tfmc_parallel_for`);
//! - [`heap`]: the heap buffers JIT-compiled kernels allocate (`tfmc_calloc`, `tfmc_malloc`, `tfmc_free`),
//!   large ones cached across calls;
//! - [`npz`]: [`read_npz`], [`write_npz`], [`read_npy`], [`write_npy`], [`IoError`];
//! - [`memory`]: the memory this process can still get, checked before allocating sizes read
//!   from files;
//! - private: `header` (the C header), `npy` (the array codec), `npy_header` (header parser), `atomic` (atomic writes; [`write_file_atomically`] is public for the compiler's outputs).

pub mod aot;
pub mod artifact;
mod atomic;
pub mod call;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
pub mod features;
pub mod gpu;
mod header;
pub mod heap;
pub mod manifest;
pub mod memory;
pub mod native;
mod npy;
mod npy_header;
pub mod npz;
pub mod parallel;
pub mod tensor;

pub use artifact::{Artifact, Kernel};
pub use atomic::write_file_atomically;
pub use error::{ArtifactError, RuntimeError};
pub use native::NativeTensor;
pub use npz::{IoError, as_declared_bf16, read_npy, read_npz, write_npy, write_npz};
pub use tensor::{DType, Scalar, Tensor, TensorData, TensorError};
