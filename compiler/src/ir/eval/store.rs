//! Dense tensor storage with a presence mask, as the IR interpreter holds every node: the same
//! layout as the HIR interpreter's (row-major, one `TensorData` of the dtype's kind, values
//! never rounded), inputs borrowed from the caller.

use std::borrow::Cow;

use tfmc_runtime::{Scalar, Tensor, TensorData};

use crate::hir::DType;

/// One tensor's elements and which of them exist.
#[derive(Clone, Debug)]
pub(super) struct Store<'a> {
    /// Sizes, outermost first.
    pub shape: Vec<usize>,
    /// Row-major strides of `shape`.
    pub strides: Vec<usize>,
    /// Elements, flat in row-major order.
    pub data: Cow<'a, TensorData>,
    /// Per-element existence; `None` when all exist (inputs).
    pub present: Option<Vec<bool>>,
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * shape[k + 1];
    }
    s
}

impl<'a> Store<'a> {
    /// A fully present view of an input tensor.
    pub fn input(t: &'a Tensor) -> Store<'a> {
        Store { strides: strides(t.shape()), shape: t.shape().to_vec(), data: Cow::Borrowed(t.data()), present: None }
    }

    /// A store of `dtype` where no point exists yet, or `None` if it would not fit in memory.
    pub fn empty(dtype: DType, shape: Vec<usize>) -> Option<Store<'static>> {
        let n = tfmc_runtime::tensor::shape_len(&shape)?;
        let data = if dtype.is_float() {
            TensorData::F(vec![0.0; n])
        } else if dtype.is_int() {
            TensorData::I(vec![0; n])
        } else {
            TensorData::B(vec![false; n])
        };
        Some(Store { strides: strides(&shape), shape, data: Cow::Owned(data), present: Some(vec![false; n]) })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// The element at `flat`, or `None` if that point does not exist.
    pub fn get(&self, flat: usize) -> Option<Scalar> {
        if let Some(p) = &self.present
            && !p[flat]
        {
            return None;
        }
        Some(match &*self.data {
            TensorData::F(v) => Scalar::F(v[flat]),
            TensorData::I(v) => Scalar::I(v[flat]),
            TensorData::B(v) => Scalar::B(v[flat]),
        })
    }

    /// Stores `v` at `flat`, converted to the store's kind without rounding, and marks the
    /// point as existing.
    pub fn set(&mut self, flat: usize, v: Scalar) {
        match self.data.to_mut() {
            TensorData::F(d) => d[flat] = v.as_f64(),
            TensorData::I(d) => d[flat] = v.as_i64(),
            TensorData::B(d) => d[flat] = v.as_bool(),
        }
        if let Some(p) = &mut self.present {
            p[flat] = true;
        }
    }

    /// A kernel output of `dtype`: present points set (rounded to `dtype`), absent ones 0.
    pub fn to_tensor(&self, dtype: DType) -> Tensor {
        let mut t = Tensor::zeros(dtype, self.shape.clone());
        for flat in 0..self.len() {
            if let Some(v) = self.get(flat) {
                t.set(flat, v);
            }
        }
        t
    }
}
