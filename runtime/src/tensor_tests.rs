//! Unit tests for [`crate::tensor`].

use super::*;

#[test]
fn dtype_names_round_trip() {
    for d in DType::ALL {
        assert_eq!(DType::parse(d.name()), Some(d));
        assert_eq!(d.to_string(), d.name());
        assert_eq!(d.is_float() as u8 + d.is_int() as u8 + (d == DType::Bool) as u8, 1);
    }
    assert_eq!(DType::parse("float32"), None);
    assert_eq!(DType::parse("F32"), None);
}

#[test]
fn new_checks_len_and_kind() {
    let err = Tensor::new(DType::F32, vec![2, 3], TensorData::F(vec![0.0; 5])).unwrap_err();
    assert_eq!(err.to_string(), "tensor of shape [2, 3] needs 6 elements, got 5");
    let err = Tensor::new(DType::I32, vec![2], TensorData::F(vec![0.0; 2])).unwrap_err();
    assert_eq!(err.to_string(), "tensor of dtype i32 needs integer data, got float data");
    let err = Tensor::new(DType::Bool, vec![1], TensorData::I(vec![1])).unwrap_err();
    assert_eq!(err.to_string(), "tensor of dtype bool needs bool data, got integer data");
    let err = Tensor::new(DType::I32, vec![2], TensorData::I(vec![1, 1 << 40])).unwrap_err();
    assert_eq!(err.to_string(), "value 1099511627776 at flat index 1 does not fit in i32");
    let err = Tensor::new(DType::F32, vec![usize::MAX, 2], TensorData::F(vec![])).unwrap_err();
    assert!(matches!(err, TensorError::ShapeOverflow { .. }), "{err}");
    let err = Tensor::from_f64(DType::I64, vec![1], vec![1.0]).unwrap_err();
    assert_eq!(err.to_string(), "from_f64 needs a float dtype, got i64");
}

#[test]
fn zero_d_and_empty() {
    let s = Tensor::from_f64(DType::F64, vec![], vec![2.5]).unwrap();
    assert_eq!((s.len(), s.is_empty(), s.shape()), (1, false, &[][..]));
    let e = Tensor::zeros(DType::I64, vec![0, 3]);
    assert_eq!((e.len(), e.is_empty()), (0, true));
    assert_eq!(e.data(), &TensorData::I(vec![]));
    assert_eq!(Tensor::zeros(DType::Bool, vec![2]).data(), &TensorData::B(vec![false; 2]));
}

#[test]
fn floats_are_rounded_to_the_dtype() {
    let x = 0.1f64;
    let t = Tensor::from_f64(DType::F32, vec![1], vec![x]).unwrap();
    assert_eq!(t.get(0), Scalar::F(x as f32 as f64));
    let t = Tensor::from_f64(DType::F16, vec![2], vec![x, 1e6]).unwrap();
    assert_eq!(t.get(0), Scalar::F(f16::from_f64(x).to_f64()));
    assert_eq!(t.get(1), Scalar::F(f64::INFINITY));
    let mut t = Tensor::zeros(DType::BF16, vec![1]);
    t.set(0, Scalar::F(1.0 + 1.0 / 512.0));
    assert_eq!(t.get(0), Scalar::F(1.0));
    let t = Tensor::from_f64(DType::F64, vec![1], vec![x]).unwrap();
    assert_eq!(t.get(0), Scalar::F(x));
}

#[test]
fn set_converts_kinds() {
    let mut i = Tensor::zeros(DType::I32, vec![4]);
    i.set(0, Scalar::F(-2.9));
    i.set(1, Scalar::F(f64::NAN));
    i.set(2, Scalar::I(1 << 32 | 7));
    i.set(3, Scalar::B(true));
    assert_eq!(i.data(), &TensorData::I(vec![-2, 0, 7, 1]));
    let mut l = Tensor::zeros(DType::I64, vec![1]);
    l.set(0, Scalar::F(1e30));
    assert_eq!(l.get(0), Scalar::I(i64::MAX));
    let mut b = Tensor::zeros(DType::Bool, vec![3]);
    b.set(0, Scalar::F(0.5));
    b.set(1, Scalar::I(0));
    b.set(2, Scalar::F(f64::NAN));
    assert_eq!(b.data(), &TensorData::B(vec![true, false, true]));
    let mut f = Tensor::zeros(DType::F32, vec![2]);
    f.set(0, Scalar::I(3));
    f.set(1, Scalar::B(true));
    assert_eq!(f.to_f64_vec(), vec![3.0, 1.0]);
}

#[test]
fn to_f64_vec_any_dtype() {
    let b = Tensor::new(DType::Bool, vec![2], TensorData::B(vec![true, false])).unwrap();
    assert_eq!(b.to_f64_vec(), vec![1.0, 0.0]);
    let i = Tensor::new(DType::I64, vec![2], TensorData::I(vec![-3, 4])).unwrap();
    assert_eq!(i.to_f64_vec(), vec![-3.0, 4.0]);
}

#[test]
fn max_abs_diff_rules() {
    let a = Tensor::from_f64(DType::F64, vec![4], vec![1.0, f64::NAN, f64::INFINITY, 0.0]).unwrap();
    let b = Tensor::from_f64(DType::F64, vec![4], vec![1.5, f64::NAN, f64::INFINITY, -0.25]).unwrap();
    assert_eq!(a.max_abs_diff(&b), Some(0.5));
    let c = Tensor::from_f64(DType::F64, vec![4], vec![1.0, 0.0, f64::INFINITY, 0.0]).unwrap();
    assert_eq!(a.max_abs_diff(&c), Some(f64::INFINITY));
    let d = Tensor::from_f64(DType::F64, vec![2, 2], vec![0.0; 4]).unwrap();
    assert_eq!(a.max_abs_diff(&d), None);
    let i = Tensor::new(DType::I32, vec![4], TensorData::I(vec![1, 0, 0, 0])).unwrap();
    assert_eq!(c.max_abs_diff(&i), Some(f64::INFINITY));
    let e = Tensor::zeros(DType::F32, vec![0, 3]);
    assert_eq!(e.max_abs_diff(&Tensor::zeros(DType::F16, vec![0, 3])), Some(0.0));
}

#[test]
fn check_catches_broken_invariants() {
    let mut t = Tensor::zeros(DType::F32, vec![2]);
    assert!(t.check().is_ok());
    *t.data_mut() = TensorData::F(vec![1.0]);
    assert!(matches!(t.check(), Err(TensorError::LenMismatch { .. })));
    *t.data_mut() = TensorData::B(vec![true, false]);
    assert!(matches!(t.check(), Err(TensorError::KindMismatch { .. })));
}
