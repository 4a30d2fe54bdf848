//! Coverage-guided fuzzing of the whole front end and the interpreter. For any UTF-8 input:
//! - parsing returns `Ok` or `Err`, never panics;
//! - a parsed file prints (`tfm_dsl::print`) to text that parses again and prints the same;
//! - a file without `use` items goes through `tfmc::load_str` (parse + check) without panicking;
//! - each kernel (at most 4) of a program that checks runs under `tfmc::interp::run` on tiny
//!   random inputs (every symbolic dim 0, 1 or 2) without panicking; run-time errors are fine.
//!
//! Files with `use` are not checked: the fuzzer would read arbitrary paths (`/dev/zero`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use tfm_dsl::ast::Item;
use tfm_dsl::print::print_file;
use tfm_dsl::{FileId, parse_file};
use tfmc::hir::{Extent, Program};
use tfmc_runtime::Scalar;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(ast) = parse_file(text, FileId(0)) else { return };

    let printed = print_file(&ast);
    match parse_file(&printed, FileId(0)) {
        Ok(again) => assert_eq!(print_file(&again), printed, "printing is not idempotent"),
        // The printer may add one pair of parentheses (`1.0.x` -> `(1.0).x`) to a file that
        // was already at the nesting limit.
        Err(d) if d.message.contains("nested too deeply") => {}
        Err(d) => panic!("printed file does not parse: {}\n{printed}", d.message),
    }

    if ast.items.iter().any(|i| matches!(i, Item::Use(_))) {
        return;
    }
    let Ok(program) = tfmc::load_str("fuzz.tfm", text) else { return };
    if !small_enough(&program) {
        return;
    }
    let mut seed = data.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for k in program.kernels.iter().take(4) {
        let dims: BTreeMap<String, usize> = k.dims.iter().map(|d| (d.name.clone(), (next() % 3) as usize)).collect();
        let Ok(inputs) = tfmc::inputs::random_inputs(&program, &k.name, &dims, next()) else { continue };
        let mut params = BTreeMap::new();
        for p in &program.params {
            if p.default.is_none() || next() % 4 == 0 {
                let v = if p.dtype.is_float() {
                    Scalar::F((next() % 7) as f64 / 2.0 - 1.5)
                } else if p.dtype.is_int() {
                    Scalar::I((next() % 5) as i64 - 1)
                } else {
                    Scalar::B(next() % 2 == 0)
                };
                params.insert(p.name.clone(), v);
            }
        }
        let _ = tfmc::interp::run(&program, &k.name, &inputs, &params);
    }
});

/// No kernel has a fixed extent above 16 or more than 2^14 index points (symbolic dims count
/// 2): allocating `f32[99999999]` is slow, not wrong.
fn small_enough(program: &Program) -> bool {
    let size = |e: &Extent| match e {
        Extent::Const(c) => *c as u64,
        Extent::Dim(_) => 2,
    };
    program.kernels.iter().all(|k| {
        let consts_ok = k
            .tensors
            .iter()
            .flat_map(|t| &t.shape)
            .chain(k.indices.iter().map(|i| &i.extent))
            .all(|e| !matches!(e, Extent::Const(c) if *c > 16));
        let points = k.indices.iter().map(|i| size(&i.extent).max(1)).try_fold(1u64, |acc, n| acc.checked_mul(n));
        consts_ok && points.is_some_and(|p| p <= 1 << 14)
    })
}
