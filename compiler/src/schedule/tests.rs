//! Schedule tests that need no backend: every lib kernel schedules, plans are as expected.

use super::{ScheduleOptions, schedule};
use crate::ir::lower::lower;
use crate::optimize::{Options, optimize};

#[test]
fn every_lib_kernel_schedules() {
    for (file, program) in crate::testing::lib_programs() {
        for k in &program.kernels {
            let c = lower(&program, &k.name).unwrap();
            let (opt, _) = optimize(&c, &Options::default()).unwrap();
            for cas in [&c, &opt] {
                let s = schedule(&program, cas, &ScheduleOptions::default()).unwrap_or_else(|e| panic!("{file}/{}: {e}", k.name));
                if std::env::var("TFMC_PRINT_KIR").is_ok() && k.name == "sdpa" {
                    println!("{}", s.func);
                }
            }
        }
    }
}
