//! Lowering and verifier tests over the whole standard library.

use super::{lower::lower, print::print_cascade, verify::verify};
use crate::testing::lib_programs;

#[test]
fn every_lib_kernel_lowers_and_verifies() {
    let mut n = 0;
    for (file, program) in lib_programs() {
        for k in &program.kernels {
            let c = lower(&program, &k.name).unwrap_or_else(|e| panic!("{file}: {e}"));
            verify(&c).unwrap_or_else(|e| panic!("{file}: {e}\n{}", print_cascade(&c)));
            assert_eq!(c.outputs().len(), k.outputs.len(), "{file}: {}", k.name);
            n += 1;
        }
    }
    assert!(n >= 18, "expected the whole standard library, lowered {n} kernels");
}

#[test]
fn sdpa_text_form() {
    let program = crate::testing::lib("sdpa.tfm");
    let c = lower(&program, "sdpa").expect("lowers");
    let text = print_cascade(&c);
    assert!(text.contains("local G[b, h, p]: f32[B, H, P] = (max m 0 (dim M) true (read S (idx b) (idx h) (idx p) (idx m)))"), "{text}");
}
