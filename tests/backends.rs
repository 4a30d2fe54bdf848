//! Every `lib/` kernel on the compiled backends (LLVM JIT) against the f64 interpreter, on
//! seeded random inputs of several shapes — size 1, odd sizes that are not multiples of any
//! tile, and larger ones — with fp32 tolerances scaled by the output's magnitude. Inputs
//! where the interpreter fails must fail on the backend too.

use std::collections::BTreeMap;

use tfmc::compile::{CompileOptions, run_llvm};
use tfmc_conformance::{Tol, compare, load_lib, tfm_files, repo_root};
use tfmc_runtime::Tensor;

/// fp32 against f64: relative to the output's magnitude.
const TOL: Tol = Tol::rel(2e-4);

/// Dim sizes tried for every kernel (names not listed get the `other` size).
fn dim_sets() -> Vec<BTreeMap<&'static str, usize>> {
    let mk = |v: &[(&'static str, usize)]| v.iter().copied().collect::<BTreeMap<_, _>>();
    vec![
        mk(&[("B", 1), ("H", 1), ("P", 1), ("M", 1), ("T", 1), ("E", 1), ("F", 1), ("D", 1), ("N", 1), ("S1", 2)]),
        mk(&[("B", 1), ("H", 2), ("P", 7), ("M", 7), ("T", 7), ("E", 3), ("F", 5), ("D", 5), ("N", 3), ("S1", 3)]),
        mk(&[("B", 2), ("H", 3), ("P", 13), ("M", 29), ("T", 13), ("E", 8), ("F", 6), ("D", 6), ("N", 4), ("S1", 4)]),
        mk(&[("B", 1), ("H", 2), ("P", 129), ("M", 129), ("T", 129), ("E", 16), ("F", 16), ("D", 16), ("N", 4), ("S1", 5)]),
    ]
}

fn as_f64(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec()
}

#[test]
fn lib_kernels_on_llvm_match_the_interpreter() {
    let opts = CompileOptions::default();
    let mut checked = 0;
    for path in tfm_files(&repo_root().join("lib")) {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let program = load_lib(&file);
        for k in &program.kernels {
            for (i, dims) in dim_sets().iter().enumerate() {
                let mut d = BTreeMap::new();
                for dim in &k.dims {
                    d.insert(dim.name.clone(), dims.get(dim.name.as_str()).copied().unwrap_or(3));
                }
                let inputs = tfmc::inputs::random_inputs(&program, &k.name, &d, 7 + i as u64).unwrap();
                let params = BTreeMap::new();
                let want = tfmc::interp::run_exact(&program, &k.name, &inputs, &params);
                let got = run_llvm(&program, &k.name, &inputs, &params, &opts);
                match (want, got) {
                    (Ok(want), Ok(got)) => {
                        for (name, w) in &want {
                            let g = &got[name];
                            assert_eq!(g.shape(), w.shape(), "{file}/{} {name} shape", k.name);
                            if let Some(m) = compare(&as_f64(g), &as_f64(w), TOL) {
                                panic!("{file}/{} dims {d:?}: output {name}: {m}", k.name);
                            }
                        }
                        checked += 1;
                    }
                    (Err(_), Err(_)) => {}
                    (Ok(_), Err(e)) => panic!("{file}/{} dims {d:?}: the backend fails: {e}", k.name),
                    (Err(e), Ok(_)) => panic!("{file}/{} dims {d:?}: the interpreter fails ({e}) but the backend does not", k.name),
                }
            }
        }
    }
    eprintln!("{checked} kernel runs compared");
    assert!(checked > 40, "only {checked} runs compared");
}
