//! The C thread pool (`runtime/c/tfmc_rt.c`) inside a fake artifact (`cc` required): every
//! index visited exactly once, nested calls, concurrent callers, resizing.

mod common;

use std::collections::BTreeMap;

use common::*;
use tfmc_runtime::{Artifact, DType, NativeTensor, Scalar};

fn count(a: &Artifact, n: usize, nested: bool) -> Vec<i32> {
    let k = a.kernel("count").unwrap();
    let x = NativeTensor::zeros(DType::I32, vec![n]).unwrap();
    let mut out = k.alloc_outputs(&[&x]).unwrap();
    let params = BTreeMap::from([("nested".to_string(), Scalar::B(nested))]);
    k.run_native(&[&x], &mut out, &params).unwrap();
    out[0].as_i32().unwrap().to_vec()
}

/// The pool is per loaded library and tests run concurrently: each test uses its own copy.
fn artifact(name: &str) -> Artifact {
    let m = manifest(vec![add_kernel(), count_kernel()]);
    Artifact::open(build_lib(name, Some(&m.to_json()), "")).unwrap()
}

#[test]
fn each_index_once() {
    let a = artifact("pool_once");
    for threads in [0, 1, 2, 3, 8] {
        assert!(a.set_num_threads(threads));
        if threads > 0 {
            assert_eq!(a.num_threads(), Some(threads));
        }
        for n in [0, 1, 2, 5, 10007] {
            let c = count(&a, n, false);
            assert_eq!(c.len(), n);
            assert!(c.iter().all(|&x| x == 1), "threads {threads}, n {n}");
        }
    }
}

#[test]
fn nested_calls_run_serially_without_deadlock() {
    let a = artifact("pool_nested");
    a.set_num_threads(4);
    for n in [1, 7, 300] {
        let c = count(&a, n, true);
        assert!(c.iter().all(|&x| x == n as i32), "n {n}");
    }
}

#[test]
fn concurrent_callers() {
    let a = artifact("pool_concurrent");
    a.set_num_threads(4);
    std::thread::scope(|s| {
        for t in 0..4 {
            let a = &a;
            s.spawn(move || {
                for i in 0..20 {
                    let n = 1000 + 37 * t + i;
                    assert!(count(a, n, i % 5 == 0).iter().all(|&x| x == if i % 5 == 0 { n as i32 } else { 1 }));
                }
            });
        }
    });
}

#[test]
fn thread_count_from_environment_is_used() {
    // The pool reads TFMC_NUM_THREADS once, at first use; a child process gets a fresh one.
    if std::env::var_os("TFMC_POOL_CHILD").is_some() {
        let a = artifact("pool_env_child");
        assert_eq!(a.num_threads(), Some(3));
        assert!(count(&a, 1000, false).iter().all(|&x| x == 1));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    // Captured, so the child's "test result" line does not count as another test.
    let out = std::process::Command::new(exe)
        .args(["--exact", "thread_count_from_environment_is_used", "--nocapture"])
        .env("TFMC_POOL_CHILD", "1")
        .env("TFMC_NUM_THREADS", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "child failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
