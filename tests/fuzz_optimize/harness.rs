//! Running a property: the case count (`TFMC_FUZZ_CASES`, else the default from a fixed
//! seed), the time budget (`TFMC_FUZZ_SECONDS`), a big stack for the optimizer's recursion,
//! progress [`Stats`], and [`exercise`], which runs random cases of a program's kernels and
//! fails on the first finding that is neither of a known class ([`crate::known`]) nor logged.

use crate::cases::random_case;
use crate::compare::{options, prepare, run_case};
use crate::known;
use crate::minimize::log_finding;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use tfmc::hir::Program;

pub fn cases(default: u32) -> u32 {
    std::env::var("TFMC_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Runs `body` on a thread with a 256 MiB stack (the optimizer's passes recurse over terms).
pub fn on_big_stack(f: impl FnOnce() + Send + 'static) {
    let h = std::thread::Builder::new().stack_size(256 << 20).spawn(f).expect("spawn");
    if let Err(panic) = h.join() {
        std::panic::resume_unwind(panic);
    }
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub programs: usize,
    pub checked: usize,
    pub kernels: usize,
    pub runs: usize,
    pub findings: usize,
    /// Findings of a class in [`crate::KNOWN_DISCREPANCIES`].
    pub known: usize,
}

/// Runs `cases` random cases of every kernel of `program`; the first finding not logged fails.
pub fn exercise(origin: &str, text: &str, program: &Program, seed: u64, n: usize, stats: &mut Stats) -> Result<(), TestCaseError> {
    for (ki, k) in program.kernels.iter().enumerate().take(4) {
        stats.kernels += 1;
        for c in 0..n {
            let Some(case) = random_case(program, &k.name, seed.wrapping_add((ki * 131 + c) as u64)) else { continue };
            let Some(prep) = prepare(program, &k.name, &options(program, &case)) else { continue };
            stats.runs += 1;
            if let Some(f) = run_case(program, &prep, &case) {
                stats.findings += 1;
                let class = known(program, &case, &f);
                let logged = log_finding(origin, text, &case, &f, &prep.rules, class);
                if class.is_some() {
                    stats.known += 1;
                } else if !logged {
                    return Err(TestCaseError::fail(format!(
                        "{:?} discrepancy on kernel {} ({origin})\n{}// case: {}\n{text}",
                        f.kind,
                        k.name,
                        f.detail,
                        case.line()
                    )));
                }
            }
        }
    }
    Ok(())
}

pub fn fuzz<S: Strategy>(name: &str, strategy: S, n: u32, f: impl Fn(S::Value, &mut Stats) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let stats = std::cell::Cell::new(Stats::default());
    let budget = std::env::var("TFMC_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).map(std::time::Duration::from_secs);
    let start = std::time::Instant::now();
    // A fixed seed unless the run is scaled up, so the default run is reproducible.
    let rng_seed = if std::env::var_os("TFMC_FUZZ_CASES").is_some() { RngSeed::Random } else { RngSeed::Fixed(0x7f3c) };
    let config = ProptestConfig { cases: n, failure_persistence: None, max_shrink_iters: 256, rng_seed, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&strategy, |v| {
        if budget.is_some_and(|b| start.elapsed() > b) {
            return Ok(());
        }
        let mut s = stats.get();
        if s.programs % 500 == 499 {
            eprintln!(
                "{name}: {} programs, {} check, {} kernels, {} cases, {} findings ({} of known classes) ({:.0} s)",
                s.programs + 1,
                s.checked,
                s.kernels,
                s.runs,
                s.findings,
                s.known,
                start.elapsed().as_secs_f64()
            );
        }
        s.programs += 1;
        let r = f(v, &mut s);
        stats.set(s);
        r
    });
    let s = stats.get();
    eprintln!(
        "{name}: {} programs, {} check, {} kernels, {} cases, {} findings ({} of known classes)",
        s.programs, s.checked, s.kernels, s.runs, s.findings, s.known
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}
