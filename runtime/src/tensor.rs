//! The tensor container shared by the interpreter, the backends and the `.npy`/`.npz` I/O.
//!
//! Owns [`DType`], [`TensorData`], [`Scalar`], [`Tensor`] and [`TensorError`].
//!
//! Invariants of a [`Tensor`] built through [`Tensor::new`], [`Tensor::zeros`] or
//! [`Tensor::from_f64`] and changed only through [`Tensor::set`]:
//! - the number of elements equals the product of the shape (a 0-d tensor has one element);
//! - the data variant matches the dtype: [`TensorData::F`] for `f16`/`bf16`/`f32`/`f64`,
//!   [`TensorData::I`] for `i32`/`i64`, [`TensorData::B`] for `bool`;
//! - every element is a value the dtype can hold: floats are rounded to the dtype's precision
//!   and `i32` elements lie in the `i32` range.
//!
//! Data is stored flat in C (row-major) order. [`Tensor::data_mut`] hands out the raw storage;
//! whoever uses it must keep these invariants (the writers in [`crate::npz`] re-check the first
//! two and return an error instead of writing a broken array).

use half::{bf16, f16};

/// Element type of a tensor; the names match the `.tfm` dtype names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE half precision.
    F16,
    /// bfloat16 (8 exponent bits, 7 mantissa bits).
    BF16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// Boolean.
    Bool,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 7] = [DType::F16, DType::BF16, DType::F32, DType::F64, DType::I32, DType::I64, DType::Bool];

    /// The `.tfm` name: `"f16"`, `"bf16"`, `"f32"`, `"f64"`, `"i32"`, `"i64"` or `"bool"`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Bool => "bool",
        }
    }

    /// Parses a `.tfm` dtype name (the inverse of [`DType::name`]).
    pub fn parse(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// True for `f16`, `bf16`, `f32` and `f64`.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    /// True for `i32` and `i64`.
    pub fn is_int(self) -> bool {
        matches!(self, DType::I32 | DType::I64)
    }

    /// Size of one element in bytes (`bool` takes one byte, as in numpy).
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::Bool => 1,
        }
    }

    /// Rounds `x` to the nearest value of this float dtype (round-to-nearest-even; NaN and
    /// infinities are kept, values beyond the range become infinite). Returns `x` unchanged
    /// for `f64` and for non-float dtypes.
    pub fn round_f64(self, x: f64) -> f64 {
        match self {
            DType::F16 => f16::from_f64(x).to_f64(),
            DType::BF16 => bf16::from_f64(x).to_f64(),
            DType::F32 => x as f32 as f64,
            _ => x,
        }
    }

    /// The kind of data variant ([`TensorData`]) that holds this dtype.
    fn kind(self) -> Kind {
        if self.is_float() {
            Kind::F
        } else if self.is_int() {
            Kind::I
        } else {
            Kind::B
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Flat element storage: floats of any width are held as `f64`, integers as `i64`.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Elements of a float tensor (`f16`, `bf16`, `f32`, `f64`).
    F(Vec<f64>),
    /// Elements of an integer tensor (`i32`, `i64`).
    I(Vec<i64>),
    /// Elements of a `bool` tensor.
    B(Vec<bool>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F(v) => v.len(),
            TensorData::I(v) => v.len(),
            TensorData::B(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn kind(&self) -> Kind {
        match self {
            TensorData::F(_) => Kind::F,
            TensorData::I(_) => Kind::I,
            TensorData::B(_) => Kind::B,
        }
    }
}

/// One element, in the same three kinds as [`TensorData`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// A float (of any width).
    F(f64),
    /// An integer.
    I(i64),
    /// A boolean.
    B(bool),
}

impl Scalar {
    /// The value as `f64` (`true` is 1, `false` is 0; large integers round).
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::F(x) => x,
            Scalar::I(x) => x as f64,
            Scalar::B(x) => f64::from(u8::from(x)),
        }
    }

    /// The value as `i64`: floats truncate toward zero and saturate (NaN gives 0).
    pub fn as_i64(self) -> i64 {
        match self {
            Scalar::F(x) => x as i64,
            Scalar::I(x) => x,
            Scalar::B(x) => i64::from(x),
        }
    }

    /// The value as `bool`: anything non-zero is true (NaN too, as in numpy).
    pub fn as_bool(self) -> bool {
        match self {
            Scalar::F(x) => x != 0.0,
            Scalar::I(x) => x != 0,
            Scalar::B(x) => x,
        }
    }
}

/// Which [`TensorData`] variant a dtype uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    F,
    I,
    B,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::F => "float",
            Kind::I => "integer",
            Kind::B => "bool",
        }
    }
}

/// Errors from building a [`Tensor`].
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// The element count does not match the shape.
    #[error("tensor of shape {shape:?} needs {expected} elements, got {got}")]
    LenMismatch {
        /// The requested shape.
        shape: Vec<usize>,
        /// Product of the shape.
        expected: usize,
        /// Elements supplied.
        got: usize,
    },
    /// The product of the shape does not fit in `usize`.
    #[error("tensor of shape {shape:?} has more elements than fit in memory")]
    ShapeOverflow {
        /// The requested shape.
        shape: Vec<usize>,
    },
    /// The data variant does not match the dtype.
    #[error("tensor of dtype {dtype} needs {expected} data, got {got} data")]
    KindMismatch {
        /// The requested dtype.
        dtype: DType,
        /// The kind the dtype needs (`float`, `integer` or `bool`).
        expected: &'static str,
        /// The kind supplied.
        got: &'static str,
    },
    /// [`Tensor::from_f64`] was asked for a non-float dtype.
    #[error("from_f64 needs a float dtype, got {dtype}")]
    NotFloat {
        /// The requested dtype.
        dtype: DType,
    },
    /// An integer element does not fit in the dtype.
    #[error("value {value} at flat index {index} does not fit in {dtype}")]
    OutOfRange {
        /// The requested dtype.
        dtype: DType,
        /// The offending value.
        value: i64,
        /// Its flat (C-order) index.
        index: usize,
    },
}

/// A dense, C-ordered tensor of one of the [`DType`]s. See the module docs for its invariants.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: TensorData,
}

/// Number of elements of `shape` (1 for a 0-d shape), or `None` on overflow.
pub fn shape_len(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    /// Builds a tensor, checking that `data` has `product(shape)` elements and that its variant
    /// matches `dtype` (`F` for floats, `I` for ints, `B` for bool). Float elements are rounded to
    /// the dtype's precision; `i32` elements outside the `i32` range are an error.
    pub fn new(dtype: DType, shape: Vec<usize>, mut data: TensorData) -> Result<Tensor, TensorError> {
        check_layout(dtype, &shape, &data)?;
        match &mut data {
            TensorData::F(v) if dtype != DType::F64 => {
                v.iter_mut().for_each(|x| *x = dtype.round_f64(*x));
            }
            TensorData::I(v) if dtype == DType::I32 => {
                if let Some((index, &value)) = v.iter().enumerate().find(|(_, x)| i32::try_from(**x).is_err()) {
                    return Err(TensorError::OutOfRange { dtype, value, index });
                }
            }
            _ => {}
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// A tensor of zeros (`false` for bool).
    ///
    /// # Panics
    /// If the product of `shape` overflows `usize`.
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = shape_len(&shape).unwrap_or_else(|| panic!("tensor of shape {shape:?} has more elements than fit in memory"));
        let data = match dtype.kind() {
            Kind::F => TensorData::F(vec![0.0; n]),
            Kind::I => TensorData::I(vec![0; n]),
            Kind::B => TensorData::B(vec![false; n]),
        };
        Tensor { dtype, shape, data }
    }

    /// Builds a float tensor from `f64` values, rounding them to the dtype's precision.
    pub fn from_f64(dtype: DType, shape: Vec<usize>, data: Vec<f64>) -> Result<Tensor, TensorError> {
        if !dtype.is_float() {
            return Err(TensorError::NotFloat { dtype });
        }
        Tensor::new(dtype, shape, TensorData::F(data))
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape (empty for a 0-d tensor).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements (1 for a 0-d tensor).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor has no elements (some dimension is 0).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The flat, C-ordered storage.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Mutable access to the flat storage. Keep its length and variant, and store only values
    /// the dtype can hold (or use [`Tensor::set`], which rounds).
    pub fn data_mut(&mut self) -> &mut TensorData {
        &mut self.data
    }

    /// Consumes the tensor and returns its storage.
    pub fn into_data(self) -> TensorData {
        self.data
    }

    /// The element at flat (C-order) index `flat`.
    ///
    /// # Panics
    /// If `flat >= self.len()`, like slice indexing.
    pub fn get(&self, flat: usize) -> Scalar {
        match &self.data {
            TensorData::F(v) => Scalar::F(v[flat]),
            TensorData::I(v) => Scalar::I(v[flat]),
            TensorData::B(v) => Scalar::B(v[flat]),
        }
    }

    /// Stores `v` at flat index `flat`, converted to the tensor's kind: float to int truncates
    /// toward zero and saturates (NaN gives 0), int to `i32` wraps like `as i32`, anything to
    /// bool is `!= 0`, bool to number is 0/1. Floats are rounded to the dtype's precision
    /// (`f32` via `as f32`, `f16`/`bf16` via `half`), so the stored value is one the dtype holds.
    ///
    /// # Panics
    /// If `flat >= self.len()`, like slice indexing.
    pub fn set(&mut self, flat: usize, v: Scalar) {
        let dtype = self.dtype;
        match &mut self.data {
            TensorData::F(d) => d[flat] = dtype.round_f64(v.as_f64()),
            TensorData::I(d) => {
                d[flat] = match (dtype, v) {
                    (DType::I32, Scalar::F(x)) => i64::from(x as i32),
                    (DType::I32, _) => i64::from(v.as_i64() as i32),
                    _ => v.as_i64(),
                }
            }
            TensorData::B(d) => d[flat] = v.as_bool(),
        }
    }

    /// All elements as `f64` in C order (bool gives 0/1, large `i64` values round).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F(v) => v.clone(),
            TensorData::I(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::B(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
        }
    }

    /// The largest `|a - b|` over all elements, comparing values as `f64` whatever the dtypes.
    /// Equal values (NaN against NaN, an infinity against the same infinity) differ by 0; NaN
    /// against a number, or an infinity against anything else, differs by infinity. Returns
    /// `Some(0.0)` for empty tensors and `None` when the shapes differ.
    pub fn max_abs_diff(&self, other: &Tensor) -> Option<f64> {
        if self.shape != other.shape {
            return None;
        }
        let (a, b) = (self.to_f64_vec(), other.to_f64_vec());
        let diff = a.iter().zip(&b).map(|(&x, &y)| {
            if x == y || (x.is_nan() && y.is_nan()) {
                0.0
            } else if x.is_nan() || y.is_nan() {
                f64::INFINITY
            } else {
                (x - y).abs()
            }
        });
        Some(diff.fold(0.0, f64::max))
    }

    /// Re-checks the length and variant invariants (they can be broken through
    /// [`Tensor::data_mut`]).
    pub fn check(&self) -> Result<(), TensorError> {
        check_layout(self.dtype, &self.shape, &self.data)
    }
}

/// Checks the element count against the shape and the data variant against the dtype.
fn check_layout(dtype: DType, shape: &[usize], data: &TensorData) -> Result<(), TensorError> {
    let expected = shape_len(shape).ok_or_else(|| TensorError::ShapeOverflow { shape: shape.to_vec() })?;
    if data.kind() != dtype.kind() {
        return Err(TensorError::KindMismatch { dtype, expected: dtype.kind().describe(), got: data.kind().describe() });
    }
    if data.len() != expected {
        return Err(TensorError::LenMismatch { shape: shape.to_vec(), expected, got: data.len() });
    }
    Ok(())
}

#[cfg(test)]
#[path = "tensor_tests.rs"]
mod tests;
