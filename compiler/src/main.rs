//! The `tfmc` command line: `check`, `run`, `explain`, `build`, `bench`, `watch`, `inputs`
//! (defined in `cli`). Thin: parsing arguments, mapping `--backend`/`--target` onto the
//! driver's one `Target`, calling the library, printing diagnostics to stderr and results to
//! stdout/files.
//!
//! Exit codes: 0 success; 1 the program or its inputs were rejected (diagnostics printed);
//! 2 bad command-line usage (clap).

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            if !msg.is_empty() {
                eprint!("{msg}");
                if !msg.ends_with('\n') {
                    eprintln!();
                }
            }
            ExitCode::from(1)
        }
    }
}
