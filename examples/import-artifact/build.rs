//! Compiles the standard library's `sdpa.tfm` into `$OUT_DIR/libsdpa.so` (+ `libsdpa.h`) and
//! exports its path as `TFMC_ARTIFACT_SDPA` for `env!` in `src/main.rs`. Editing the `.tfm`
//! file (or a file it `use`s) reruns this script.

fn main() {
    // A crate of your own would keep its kernels beside it, e.g. `lib/sdpa.tfm`; this example
    // uses the workspace's standard library. Paths are relative to this crate's root.
    if let Err(e) = tfmc_build::compile("../../lib/sdpa.tfm") {
        panic!("{e}");
    }
}
