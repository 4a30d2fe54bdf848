//! `call`: binding and packing checked against Rust stand-ins for compiled kernels (no C
//! compiler needed).

mod common;

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::Mutex;

use common::*;
use tfmc_runtime::call::{PackedFn, bind_dims, call, call_native, check_return, pack_params};
use tfmc_runtime::manifest::{FailKind, ParamValue};
use tfmc_runtime::{DType, NativeTensor, RuntimeError, Scalar, Tensor};

/// What the last stand-in call saw: dims and params.
static SEEN: Mutex<Vec<(Vec<i64>, Vec<u64>)>> = Mutex::new(Vec::new());

/// `sdpa`-shaped manifest: Q[B,H,P,E], K[B,H,M,E], V[B,H,M,E] -> O[B,H,P,E], plus a fixed dim.
fn sdpa() -> tfmc_runtime::manifest::KernelManifest {
    kernel(
        "sdpa",
        vec![
            spec("Q", "f32", &["B", "H", "P", "E"]),
            spec("K", "f32", &["B", "H", "M", "E"]),
            spec("V", "f32", &["B", "H", "M", "E"]),
            spec("T", "i64", &["2"]),
        ],
        vec![spec("O", "f32", &["B", "H", "P", "E"]), spec("S", "bool", &[])],
        &["B", "H", "P", "M", "E"],
        vec![
            param("W", "i32", ParamValue::Int(16)),
            param("scale", "f64", ParamValue::Float(0.5)),
            param("causal", "bool", ParamValue::Bool(true)),
        ],
        &["first site"],
    )
}

/// Records its dims and params, writes O[0] = 7 and S = true, returns `params[0] >> 32`.
unsafe extern "C" fn stand_in(bufs: *const *mut c_void, dims: *const i64, params: *const u64) -> i32 {
    // SAFETY: called by `call_native` with sdpa's layout: 4 inputs, 2 outputs, 5 dims, 3 params.
    unsafe {
        let d = std::slice::from_raw_parts(dims, 5).to_vec();
        let p = std::slice::from_raw_parts(params, 3).to_vec();
        let o = *bufs.add(4) as *mut f32;
        if d.iter().all(|&x| x > 0) {
            *o = 7.0;
        }
        *(*bufs.add(5) as *mut u8) = 1;
        SEEN.lock().unwrap().push((d, p.clone()));
        (p[0] >> 32) as i32
    }
}

fn t(dtype: DType, shape: &[usize]) -> Tensor {
    Tensor::zeros(dtype, shape.to_vec())
}

fn named(v: Vec<(&str, Tensor)>) -> BTreeMap<String, Tensor> {
    v.into_iter().map(|(n, t)| (n.to_string(), t)).collect()
}

fn good_inputs() -> BTreeMap<String, Tensor> {
    named(vec![
        ("Q", t(DType::F32, &[1, 2, 3, 4])),
        ("K", t(DType::F32, &[1, 2, 5, 4])),
        ("V", t(DType::F32, &[1, 2, 5, 4])),
        ("T", t(DType::I64, &[2])),
    ])
}

#[test]
fn binds_packs_and_calls() {
    let k = sdpa();
    let entry: PackedFn = stand_in;
    let params = BTreeMap::from([("W".to_string(), Scalar::I(3))]);
    // SAFETY: `stand_in` follows sdpa's layout.
    let out = unsafe { call(entry, &k, &good_inputs(), &params) }.unwrap();
    assert_eq!(out["O"].shape(), [1, 2, 3, 4]);
    assert_eq!(out["O"].to_f64_vec()[0], 7.0);
    assert_eq!(out["S"].to_f64_vec(), [1.0]);
    let seen = SEEN.lock().unwrap().clone();
    // Other tests call the stand-in concurrently: find this call by its W.
    let (dims, p) = seen.iter().find(|(_, p)| p[0] == 3).expect("a call with W = 3");
    assert_eq!(dims, &[1, 2, 3, 5, 4]);
    assert_eq!(f64::from_bits(p[1]), 0.5);
    assert_eq!(p[2], 1);
}

#[test]
fn shape_errors_name_argument_axis_and_dim() {
    let k = sdpa();
    let q = [1usize, 2, 3, 4];
    let kk = [1usize, 2, 5, 4];
    let v7 = [1usize, 2, 7, 4];
    let two = [2usize];
    let e = bind_dims(&k, &[&q, &kk, &v7, &two]).unwrap_err();
    assert_eq!(e.to_string(), "input 'V' of kernel 'sdpa': dimension 2 (M) is 7, but input 'K' gives M = 5");
    let three = [3usize];
    let e = bind_dims(&k, &[&q, &kk, &kk, &three]).unwrap_err();
    assert_eq!(e.to_string(), "input 'T' of kernel 'sdpa': dimension 0 is 3, expected 2");
    let e = bind_dims(&k, &[&q, &kk, &[1, 2, 5], &two]).unwrap_err();
    assert_eq!(e.to_string(), "input 'V' of kernel 'sdpa' must have type f32[B, H, M, E], got a rank-3 tensor of shape [1, 2, 5]");
    let e = bind_dims(&k, &[&q]).unwrap_err();
    assert!(matches!(e, RuntimeError::InputCount { expected: 4, got: 1, .. }));
    assert_eq!(bind_dims(&k, &[&q, &kk, &kk, &two]).unwrap(), [1, 2, 3, 5, 4]);
}

#[test]
fn unbound_dims_and_bad_manifests() {
    let mut k = sdpa();
    k.dims.push("Z".into());
    k.outputs[1].shape = vec![tfmc_runtime::manifest::DimSpec::Dim("Z".into())];
    let shapes: [&[usize]; 4] = [&[1, 2, 3, 4], &[1, 2, 5, 4], &[1, 2, 5, 4], &[2]];
    let e = bind_dims(&k, &shapes).unwrap_err();
    assert_eq!(e.to_string(), "kernel 'sdpa': dim 'Z' is not the size of any input, so it cannot be inferred");

    let mut k = sdpa();
    k.inputs[0].shape[0] = tfmc_runtime::manifest::DimSpec::Dim("nope".into());
    let e = bind_dims(&k, &shapes).unwrap_err();
    assert!(matches!(e, RuntimeError::BadManifest { .. }), "{e}");

    let mut k = sdpa();
    k.inputs[1].name = "Q".into();
    assert!(matches!(bind_dims(&k, &shapes), Err(RuntimeError::BadManifest { .. })));
}

#[test]
fn params_checked() {
    let k = sdpa();
    let p = |n: &str, v: Scalar| BTreeMap::from([(n.to_string(), v)]);
    assert!(pack_params(&k, &p("W", Scalar::I(1 << 40))).is_err());
    assert!(pack_params(&k, &p("W", Scalar::F(1.0))).is_err());
    assert!(pack_params(&k, &p("causal", Scalar::I(1))).is_err());
    assert!(pack_params(&k, &p("scale", Scalar::B(true))).is_err());
    let e = pack_params(&k, &p("window", Scalar::I(1))).unwrap_err();
    assert_eq!(e.to_string(), "kernel 'sdpa' has no param 'window'; its params are W, scale, causal");
    let e = pack_params(&k, &p("W", Scalar::F(2.5))).unwrap_err();
    assert_eq!(e.to_string(), "param 'W' of kernel 'sdpa' is i32, got the float 2.5");
    let slots = pack_params(&k, &p("scale", Scalar::I(2))).unwrap();
    assert_eq!(slots, [16, 2.0f64.to_bits(), 1]);
}

#[test]
fn return_codes() {
    let k = sdpa();
    assert!(check_return(&k, 0).is_ok());
    match check_return(&k, 2) {
        Err(RuntimeError::Kernel { kind, site, .. }) => {
            assert_eq!(kind, FailKind::DivByZero);
            assert_eq!(site, "first site");
        }
        other => panic!("{other:?}"),
    }
    match check_return(&k, 1 | 9 << 8) {
        Err(RuntimeError::Kernel { site, .. }) => assert_eq!(site, "unknown site"),
        other => panic!("{other:?}"),
    }
    // Out of memory and NULL pointers are not at a site: site 0 (here "first site") is not
    // named for them.
    let oom = check_return(&k, 5).unwrap_err().to_string();
    assert!(oom.ends_with("failed: out of memory at a buffer allocation"), "{oom}");
    let null = check_return(&k, 8).unwrap_err().to_string();
    assert!(null.ends_with("failed: NULL pointer argument at the entry point"), "{null}");
    let dims = check_return(&k, 6).unwrap_err().to_string();
    assert!(dims.ends_with("failed: bad dimension at first site"), "{dims}");
    assert!(matches!(check_return(&k, 0x42), Err(RuntimeError::UnknownFailure { code: 0x42, .. })));
    assert!(matches!(check_return(&k, -1), Err(RuntimeError::UnknownFailure { .. })));
    // Through a call: the stand-in returns params[0] >> 32, i.e. W's high bits.
    let entry: PackedFn = stand_in;
    let params = BTreeMap::from([("W".to_string(), Scalar::I(-1))]);
    // SAFETY: `stand_in` follows sdpa's layout.
    let e = unsafe { call(entry, &k, &good_inputs(), &params) }.unwrap_err();
    assert!(matches!(e, RuntimeError::UnknownFailure { code: -1, .. }), "{e:?}");
}

#[test]
fn native_calls_check_everything() {
    let k = sdpa();
    let entry: PackedFn = stand_in;
    let q = NativeTensor::zeros(DType::F32, vec![1, 2, 3, 4]).unwrap();
    let kv = NativeTensor::zeros(DType::F32, vec![1, 2, 5, 4]).unwrap();
    let tt = NativeTensor::zeros(DType::I64, vec![2]).unwrap();
    let mut outs = tfmc_runtime::call::alloc_outputs(&k, &[1, 2, 3, 5, 4]).unwrap();
    outs[0].as_f32_mut().unwrap().fill(9.0);
    // SAFETY: `stand_in` follows sdpa's layout.
    unsafe { call_native(entry, &k, &[&q, &kv, &kv, &tt], &mut outs, &BTreeMap::new()) }.unwrap();
    // Zero-filled before the call, then O[0] written.
    assert_eq!(outs[0].as_f32().unwrap()[..2], [7.0, 0.0]);
    // SAFETY: as above (the call is refused before the kernel runs).
    let e = unsafe { call_native(entry, &k, &[&q, &kv, &kv, &q], &mut outs, &BTreeMap::new()) };
    assert_eq!(e.unwrap_err().to_string(), "input 'T' of kernel 'sdpa' must be i64, got f32");
    // SAFETY: as above.
    let e = unsafe { call_native(entry, &k, &[&q, &kv, &kv, &tt], &mut outs[..1], &BTreeMap::new()) };
    assert!(matches!(e, Err(RuntimeError::OutputCount { expected: 2, got: 1, .. })));
    // Empty dims are fine (the kernel still runs).
    let q0 = NativeTensor::zeros(DType::F32, vec![0, 2, 3, 4]).unwrap();
    let kv0 = NativeTensor::zeros(DType::F32, vec![0, 2, 5, 4]).unwrap();
    let mut outs = tfmc_runtime::call::alloc_outputs(&k, &[0, 2, 3, 5, 4]).unwrap();
    // SAFETY: as above.
    unsafe { call_native(entry, &k, &[&q0, &kv0, &kv0, &tt], &mut outs, &BTreeMap::new()) }.unwrap();
    assert!(outs[0].is_empty());
}
