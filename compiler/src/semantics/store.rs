//! Dense tensor storage with a presence mask, as the interpreters (HIR and IR) hold every
//! tensor: the one definition of which points of a tensor exist, what an absent point reads
//! as when a dense tensor is needed (0, `false`) and how a kernel output is rounded to its
//! dtype when it is written out, so both evaluators return identical outputs.
//!
//! Invariants: `data` has `product(shape)` elements of the kind of the tensor's dtype (the
//! interpreter never rounds floats: a local `f16` holds any `f64`); `strides` are the
//! row-major strides of `shape`; `present` is `None` when every point exists (inputs, call
//! results) and otherwise has one flag per element, `true` once the point has been written.

use std::borrow::Cow;

use tfmc_runtime::{Scalar, Tensor, TensorData};

use super::memory::{self, MemoryError};
use crate::hir::DType;

/// One tensor's elements and which of them exist.
#[derive(Clone, Debug)]
pub(crate) struct Buf<'a> {
    /// Sizes, outermost first.
    pub shape: Vec<usize>,
    /// Row-major strides of `shape`.
    pub strides: Vec<usize>,
    /// Elements, flat in row-major order (borrowed for caller-owned inputs).
    pub data: Cow<'a, TensorData>,
    /// Per-element existence; `None` when all exist.
    pub present: Option<Vec<bool>>,
}

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * shape[k + 1];
    }
    s
}

impl<'a> Buf<'a> {
    /// A fully present view of an input tensor (borrowed).
    pub fn input(t: &'a Tensor) -> Buf<'a> {
        Buf::full(t.shape().to_vec(), Cow::Borrowed(t.data()))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// A kernel output of `dtype`: present points set (rounded to `dtype`), absent ones 0; an
    /// error when memory for the copy is not available.
    pub fn to_tensor(&self, dtype: DType) -> Result<Tensor, MemoryError> {
        memory::check(self.len(), 8)?;
        let mut t = Tensor::zeros(dtype, self.shape.clone());
        for flat in 0..self.len() {
            if let Some(v) = self.get(flat) {
                t.set(flat, v);
            }
        }
        Ok(t)
    }

    /// A fully present buffer over existing data (whose length matches `shape`).
    pub fn full(shape: Vec<usize>, data: Cow<'a, TensorData>) -> Buf<'a> {
        Buf { strides: strides(&shape), shape, data, present: None }
    }

    /// A buffer of `dtype` where no point exists yet, or an error if its elements and their
    /// presence flags would not fit in memory (allocated fallibly: never an abort).
    pub fn empty(dtype: DType, shape: Vec<usize>) -> Result<Buf<'static>, MemoryError> {
        let n = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or(MemoryError::Overflow)?;
        // Eight bytes of data and one presence flag per element, checked together.
        memory::check(n, 9)?;
        let data = if dtype.is_float() {
            TensorData::F(memory::filled(n, 0.0)?)
        } else if dtype.is_int() {
            TensorData::I(memory::filled(n, 0)?)
        } else {
            TensorData::B(memory::filled(n, false)?)
        };
        Ok(Buf { strides: strides(&shape), shape, data: Cow::Owned(data), present: Some(memory::filled(n, false)?) })
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

    /// Stores `v` at `flat` (converted to the buffer's kind, without rounding) and marks the
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

    /// Points that do not exist hold 0 (`false`).
    fn zero_absent(&mut self) {
        let Some(p) = self.present.take() else { return };
        match self.data.to_mut() {
            TensorData::F(d) => d.iter_mut().zip(&p).filter(|(_, e)| !**e).for_each(|(x, _)| *x = 0.0),
            TensorData::I(d) => d.iter_mut().zip(&p).filter(|(_, e)| !**e).for_each(|(x, _)| *x = 0),
            TensorData::B(d) => d.iter_mut().zip(&p).filter(|(_, e)| !**e).for_each(|(x, _)| *x = false),
        }
    }

    /// An owned, fully present copy where points that did not exist read as 0.
    pub fn into_dense(mut self) -> Buf<'static> {
        self.zero_absent();
        Buf::full(self.shape, Cow::Owned(self.data.into_owned()))
    }

    /// A fully present view for passing to a callee: borrows the data when every point
    /// exists, otherwise copies it with absent points as 0 (an error when the copy does not
    /// fit in memory).
    pub fn dense_view(&self) -> Result<Buf<'_>, MemoryError> {
        match &self.present {
            None => Ok(Buf::full(self.shape.clone(), Cow::Borrowed(&*self.data))),
            Some(_) => {
                memory::check(self.len(), 9)?;
                Ok(self.clone().into_dense())
            }
        }
    }
}
