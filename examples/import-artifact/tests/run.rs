//! Runs the example binary (built with its artifact by Cargo) and checks that it exits 0 and
//! prints the kernel list, the output shape and a passing comparison.

use std::process::Command;

#[test]
fn example_runs_and_matches_the_reference() {
    let out = Command::new(env!("CARGO_BIN_EXE_tfmc-example-import")).output().expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    for want in [
        "kernels: sdpa",
        "sdpa(Q: f32[B, H, P, E], K: f32[B, H, M, E], V: f32[B, H, M, F]) -> (O: f32[B, H, P, F])",
        "output O: shape [2, 2, 5, 4], checksum ",
        "max abs diff vs reference: ",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    assert_eq!(stdout.lines().last(), Some("OK"), "{stdout}");
}
