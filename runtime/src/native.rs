//! [`NativeTensor`]: a tensor in the kernel ABI's element format (the buffers a compiled kernel
//! reads and writes), as opposed to [`Tensor`], which holds every float as `f64`.
//!
//! Invariants: the storage is 64-byte aligned, zero-initialised when created, and holds exactly
//! `product(shape) * dtype.size_bytes()` meaningful bytes (rounded up to whole 64-byte blocks);
//! elements are row-major: `f16`/`bf16` as their 16 bits ([`half`]), `bool` as one byte 0/1.
//! Typed views are only handed out for the tensor's own dtype ([`Element`] is sealed and
//! implemented only for plain-data types every bit pattern of which is valid).

use half::{bf16, f16};

use crate::tensor::{DType, Tensor, TensorData, TensorError, shape_len};

/// One 64-byte, 64-byte-aligned storage block.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block([u8; 64]);

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that is exactly the ABI element of one dtype (`f32`, `f64`, `i32`, `i64`,
/// [`half::f16`], [`half::bf16`]; `bool` tensors are viewed as bytes with [`NativeTensor::as_bool_bytes`]).
pub trait Element: Copy + sealed::Sealed + 'static {
    /// The dtype whose elements this type holds.
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$d;
        }
    )*};
}
element!(f32 => F32, f64 => F64, i32 => I32, i64 => I64, f16 => F16, bf16 => BF16);

/// A dense, row-major tensor in the kernel ABI's element format, 64-byte aligned.
#[derive(Clone)]
pub struct NativeTensor {
    dtype: DType,
    shape: Vec<usize>,
    len: usize,
    blocks: Vec<Block>,
}

impl std::fmt::Debug for NativeTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeTensor").field("dtype", &self.dtype).field("shape", &self.shape).finish_non_exhaustive()
    }
}

impl NativeTensor {
    /// A tensor of zeros (`false` for bool). Fails when the byte size overflows or cannot be
    /// allocated ([`TensorError::ShapeOverflow`]).
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<NativeTensor, TensorError> {
        let overflow = || TensorError::ShapeOverflow { shape: shape.clone() };
        let len = shape_len(&shape).ok_or_else(overflow)?;
        let bytes = len.checked_mul(dtype.size_bytes()).ok_or_else(overflow)?;
        if isize::try_from(bytes).is_err() {
            return Err(overflow());
        }
        let nblocks = bytes.div_ceil(64);
        let mut blocks = Vec::new();
        blocks.try_reserve_exact(nblocks).map_err(|_| overflow())?;
        blocks.resize(nblocks, Block([0; 64]));
        Ok(NativeTensor { dtype, shape, len, blocks })
    }

    /// A tensor holding `data` (row-major); its length must be the product of `shape`.
    pub fn from_vec<T: Element>(shape: Vec<usize>, data: Vec<T>) -> Result<NativeTensor, TensorError> {
        let mut t = NativeTensor::zeros(T::DTYPE, shape)?;
        if data.len() != t.len {
            return Err(TensorError::LenMismatch { shape: t.shape, expected: t.len, got: data.len() });
        }
        if let Some(out) = t.as_slice_mut::<T>() {
            out.copy_from_slice(&data);
        }
        Ok(t)
    }

    /// An `f32` tensor holding `data`.
    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Result<NativeTensor, TensorError> {
        NativeTensor::from_vec(shape, data)
    }

    /// The ABI form of `t` (exact: a [`Tensor`]'s values are representable in its dtype).
    /// Fails only if `t`'s invariants were broken through [`Tensor::data_mut`].
    pub fn from_tensor(t: &Tensor) -> Result<NativeTensor, TensorError> {
        t.check()?;
        let mut n = NativeTensor::zeros(t.dtype(), t.shape().to_vec())?;
        match t.data() {
            TensorData::F(v) => match t.dtype() {
                DType::F16 => fill(&mut n, v, |&x| f16::from_f64(x)),
                DType::BF16 => fill(&mut n, v, |&x| bf16::from_f64(x)),
                DType::F32 => fill(&mut n, v, |&x| x as f32),
                _ => fill(&mut n, v, |&x| x),
            },
            TensorData::I(v) => match t.dtype() {
                DType::I32 => fill(&mut n, v, |&x| x as i32),
                _ => fill(&mut n, v, |&x| x),
            },
            TensorData::B(v) => n.bytes_mut().iter_mut().zip(v).for_each(|(o, &b)| *o = u8::from(b)),
        }
        Ok(n)
    }

    /// The [`Tensor`] with these values (bool bytes: non-zero is `true`).
    pub fn to_tensor(&self) -> Result<Tensor, TensorError> {
        let data = match self.dtype {
            DType::F16 => TensorData::F(self.map::<f16, _>(|x| x.to_f64())),
            DType::BF16 => TensorData::F(self.map::<bf16, _>(|x| x.to_f64())),
            DType::F32 => TensorData::F(self.map::<f32, _>(f64::from)),
            DType::F64 => TensorData::F(self.map::<f64, _>(|x| x)),
            DType::I32 => TensorData::I(self.map::<i32, _>(i64::from)),
            DType::I64 => TensorData::I(self.map::<i64, _>(|x| x)),
            DType::Bool => TensorData::B(self.bytes().iter().map(|&b| b != 0).collect()),
        };
        Tensor::new(self.dtype, self.shape.clone(), data)
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape (empty for a 0-d tensor).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when some dimension is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements' bytes (`len * dtype.size_bytes()` of them).
    pub fn bytes(&self) -> &[u8] {
        let n = self.len * self.dtype.size_bytes();
        // SAFETY: `blocks` owns at least `n` initialised bytes (module invariant) and `u8`
        // has no alignment or validity requirement.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<u8>(), n) }
    }

    /// The elements' bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let n = self.len * self.dtype.size_bytes();
        // SAFETY: as in `bytes`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<u8>(), n) }
    }

    /// The elements as `T`, if `T` is this tensor's element type.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        if T::DTYPE != self.dtype {
            return None;
        }
        // SAFETY: the storage is 64-byte aligned (≥ align_of::<T>()), holds `len` elements of
        // `size_of::<T>() == dtype.size_bytes()` initialised bytes, and every bit pattern is a
        // valid `T` (sealed `Element`).
        Some(unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<T>(), self.len) })
    }

    /// The elements as `T`, mutably, if `T` is this tensor's element type.
    pub fn as_slice_mut<T: Element>(&mut self) -> Option<&mut [T]> {
        if T::DTYPE != self.dtype {
            return None;
        }
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        Some(unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<T>(), self.len) })
    }

    /// The elements of an `f32` tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        self.as_slice()
    }

    /// The elements of an `f32` tensor, mutably.
    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        self.as_slice_mut()
    }

    /// The elements of an `f64` tensor.
    pub fn as_f64(&self) -> Option<&[f64]> {
        self.as_slice()
    }

    /// The elements of an `f64` tensor, mutably.
    pub fn as_f64_mut(&mut self) -> Option<&mut [f64]> {
        self.as_slice_mut()
    }

    /// The elements of an `i32` tensor.
    pub fn as_i32(&self) -> Option<&[i32]> {
        self.as_slice()
    }

    /// The elements of an `i32` tensor, mutably.
    pub fn as_i32_mut(&mut self) -> Option<&mut [i32]> {
        self.as_slice_mut()
    }

    /// The elements of an `i64` tensor.
    pub fn as_i64(&self) -> Option<&[i64]> {
        self.as_slice()
    }

    /// The elements of an `i64` tensor, mutably.
    pub fn as_i64_mut(&mut self) -> Option<&mut [i64]> {
        self.as_slice_mut()
    }

    /// The bytes of a `bool` tensor (0 or 1 each; a kernel writing other values is read as
    /// `true` by [`NativeTensor::to_tensor`]).
    pub fn as_bool_bytes(&self) -> Option<&[u8]> {
        (self.dtype == DType::Bool).then(|| self.bytes())
    }

    /// The bytes of a `bool` tensor, mutably (store only 0 or 1).
    pub fn as_bool_bytes_mut(&mut self) -> Option<&mut [u8]> {
        (self.dtype == DType::Bool).then(|| self.bytes_mut())
    }

    /// The buffer's address, for the ABI's `bufs` (valid while `self` lives and is not moved
    /// from; never null, even when empty).
    pub fn as_ptr(&self) -> *const u8 {
        self.blocks.as_ptr().cast()
    }

    /// The buffer's address, for writing.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.blocks.as_mut_ptr().cast()
    }

    /// Maps every element of type `T` (empty if `T` is not the element type: not reached).
    fn map<T: Element, U>(&self, f: impl Fn(T) -> U) -> Vec<U> {
        self.as_slice::<T>().unwrap_or(&[]).iter().map(|&x| f(x)).collect()
    }
}

/// Writes `f(v[i])` into the elements of `n` (whose element type is `T`).
fn fill<S, T: Element>(n: &mut NativeTensor, v: &[S], f: impl Fn(&S) -> T) {
    if let Some(out) = n.as_slice_mut::<T>() {
        out.iter_mut().zip(v).for_each(|(o, x)| *o = f(x));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype() {
        for dtype in DType::ALL {
            let mut t = Tensor::zeros(dtype, vec![2, 3]);
            for i in 0..6 {
                t.set(i, crate::Scalar::F(i as f64 * 1.5 - 3.0));
            }
            let n = NativeTensor::from_tensor(&t).unwrap();
            assert_eq!(n.as_ptr() as usize % 64, 0);
            assert_eq!(n.bytes().len(), 6 * dtype.size_bytes());
            assert_eq!(n.to_tensor().unwrap(), t, "{dtype}");
        }
    }

    #[test]
    fn views_and_errors() {
        let mut n = NativeTensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
        assert_eq!(n.as_f32(), Some(&[1.0f32, 2.0, 3.0][..]));
        assert!(n.as_f64().is_none() && n.as_bool_bytes().is_none());
        n.as_f32_mut().unwrap()[1] = 5.0;
        assert_eq!(n.to_tensor().unwrap().to_f64_vec(), vec![1.0, 5.0, 3.0]);
        assert!(NativeTensor::from_f32(vec![2], vec![1.0]).is_err());
        assert!(NativeTensor::zeros(DType::F64, vec![usize::MAX, 2]).is_err());
        assert!(NativeTensor::zeros(DType::F64, vec![usize::MAX / 4]).is_err());
        let e = NativeTensor::zeros(DType::I32, vec![0, 5]).unwrap();
        assert!(e.is_empty() && !e.as_ptr().is_null());
        let s = NativeTensor::zeros(DType::Bool, vec![]).unwrap();
        assert_eq!(s.len(), 1);
    }
}
