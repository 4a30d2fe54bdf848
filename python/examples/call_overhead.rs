//! The Rust side of the Python call-overhead measurement (`python/bench/overhead.py`): opens an
//! artifact and prints the median time of calling one kernel from Rust on fixed inputs, with
//! outputs allocated once (`Kernel::run_native`), the same work the Python path does per call.
//!
//! `cargo run --release -p tfmc-python --example call_overhead -- ARTIFACT KERNEL N SHAPE...`
//! where each SHAPE is `d0xd1x...` for one f32 input, in order.

use std::collections::BTreeMap;
use std::time::Instant;

use tfmc_runtime::{Artifact, NativeTensor};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: call_overhead ARTIFACT KERNEL N SHAPE...");
        std::process::exit(2);
    }
    let artifact = Artifact::open(&args[1]).unwrap_or_else(|e| panic!("{e}"));
    let kernel = artifact.kernel(&args[2]).unwrap_or_else(|e| panic!("{e}"));
    let n: usize = args[3].parse().expect("N");
    let inputs: Vec<NativeTensor> = args[4..]
        .iter()
        .map(|s| {
            let shape: Vec<usize> = s.split('x').map(|d| d.parse().expect("dim")).collect();
            let len = shape.iter().product();
            NativeTensor::from_f32(shape, (0..len).map(|i| (i % 7) as f32 * 0.1).collect()).expect("tensor")
        })
        .collect();
    let refs: Vec<&NativeTensor> = inputs.iter().collect();
    let params = BTreeMap::new();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut outs = kernel.alloc_outputs(&refs).expect("outputs");
        kernel.run_native(&refs, &mut outs, &params).expect("run");
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(&outs);
    }
    times.sort_by(f64::total_cmp);
    println!("{:.3}", times[n / 2] * 1e6);
}
