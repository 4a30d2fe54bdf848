//! Running a property: the case count (`TFMC_FUZZ_CASES`, else the default from a fixed
//! seed), the time budget (`TFMC_FUZZ_SECONDS`), a big stack for the optimizer's recursion,
//! progress [`Stats`], and [`fuzz`], which runs a property over a strategy and reports the
//! counts. Shared by the optimizer and backend fuzzers: nothing here knows what is compared.

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

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
    /// Findings of a class the fuzzer allows (its `KNOWN` list).
    pub known: usize,
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
