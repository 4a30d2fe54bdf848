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

/// Inlined names are unambiguous: `a11`'s first call and `a1`'s eleventh call once both
/// prefixed their tensors `a111.` ("tensor 'a111.T': defined twice").
#[test]
fn inlined_names_do_not_collide() {
    let mut text = String::from(
        "kernel a1(X: f32[N]) -> (Y: f32[N]) {\n    T[n] = X[n] + 1.0\n    Y[n] = T[n] * 2.0\n}\n\
         kernel a11(X: f32[N]) -> (Y: f32[N]) {\n    T[n] = X[n] - 1.0\n    Y[n] = T[n] * 3.0\n}\n\
         kernel main(X: f32[N]) -> (Y: f32[N]) {\n    Z1 = a11(X)\n",
    );
    for i in 2..=11 {
        text.push_str(&format!("    Z{i} = a1(Z{})\n", i - 1));
    }
    text.push_str("    Y[n] = Z11[n]\n}\n");
    let program = crate::load_str("collide.tfm", &text).unwrap_or_else(|d| panic!("{}", d.render()));
    let c = lower(&program, "main").expect("lowers");
    verify(&c).unwrap_or_else(|e| panic!("{e}\n{}", print_cascade(&c)));
    let names: Vec<String> = c.order.iter().map(|&ix| c.graph[ix].name.clone()).collect();
    assert!(names.contains(&"a11.1.T".to_string()) && names.contains(&"a1.11.T".to_string()), "{names:?}");
}
