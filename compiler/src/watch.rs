//! `tfmc watch`: the edit–run loop for writing a new variant. Loads the file, compiles one
//! kernel (Cranelift by default: milliseconds), runs it on fixed inputs and prints a summary
//! of every output (dtype, shape, range, and the largest difference from a reference:
//! an `.npz` file or the interpreter on the same inputs); then waits for any of the program's
//! source files (the file and everything it `use`s) to change and does it again.
//!
//! Invariants: a failing round (a syntax or type error, a compile error, a kernel failure, a
//! shape mismatch with the reference) is reported and the loop goes on watching; nothing is
//! written to disk except `--out`, atomically. The set of watched files is recomputed every
//! round (a new `use` is picked up); directories are watched, not files, because editors
//! often save by writing a new file and renaming it over the old one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use tfmc_runtime::{Scalar, Tensor};

use crate::driver::{CompileOptions, Target};

/// Where a round's inputs come from.
#[derive(Clone, Debug)]
pub enum InputSource {
    /// An `.npz` file, read every round (so it may change too).
    Npz(PathBuf),
    /// Seeded random inputs for these dim sizes, made from the kernel's current signature.
    Random {
        /// Sizes of the symbolic dims.
        dims: BTreeMap<String, usize>,
        /// The seed (the same inputs every round while the signature stays).
        seed: u64,
    },
}

/// What the outputs are compared with.
#[derive(Clone, Debug)]
pub enum Reference {
    /// Arrays of an `.npz` file, by output name.
    Npz(PathBuf),
    /// The f64 interpreter on the same inputs (the program as written).
    Interpreter,
}

/// Everything one round needs.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// The `.tfm` file.
    pub file: PathBuf,
    /// The kernel to run.
    pub kernel: String,
    /// Its inputs.
    pub inputs: InputSource,
    /// Param values (others take their defaults).
    pub params: BTreeMap<String, Scalar>,
    /// What to compare the outputs with, if anything.
    pub reference: Option<Reference>,
    /// Largest difference allowed, relative to the reference's largest magnitude (at least 1).
    pub rtol: f64,
    /// How the kernel runs.
    /// Where the kernel runs: a compiled target (JIT, the CUDA device or its emulation), or
    /// the f64 interpreter when `None`.
    pub target: Option<Target>,
    /// Compile options for the compiled targets.
    pub options: CompileOptions,
    /// Where to write the outputs of each successful round (`.npz`, atomically).
    pub out: Option<PathBuf>,
}

/// The result of one round.
#[derive(Debug)]
pub struct Round {
    /// What to print.
    pub report: String,
    /// True if the kernel ran and matched the reference (when there is one).
    pub ok: bool,
    /// The program's source files as last loaded (at least the entry file).
    pub files: BTreeSet<PathBuf>,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Runs one round: load, compile, run, compare. Never panics on user input; every failure is
/// in the report with `ok: false`.
pub fn round(cfg: &WatchConfig) -> Round {
    let mut files = BTreeSet::from([canonical(&cfg.file)]);
    let mut report = String::new();
    let ok = match round_inner(cfg, &mut files, &mut report) {
        Ok(ok) => ok,
        Err(e) => {
            report.push_str(&e);
            if !e.ends_with('\n') {
                report.push('\n');
            }
            false
        }
    };
    Round { report, ok, files }
}

/// The absolute, canonical path of `p`. A file that is missing for the moment (deleted before
/// an editor or `git checkout` writes it again) is named by its canonical directory and its
/// file name, so it keeps the name the watcher's events will carry when it comes back (a
/// relative path would never match them).
fn canonical(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir).map_or(abs.clone(), |d| d.join(name)),
        _ => abs,
    }
}

fn round_inner(cfg: &WatchConfig, files: &mut BTreeSet<PathBuf>, report: &mut String) -> Result<bool, String> {
    let t0 = Instant::now();
    let loaded = crate::load_with_warnings(&cfg.file);
    let sources = match &loaded {
        Ok((p, _)) => &p.sources,
        Err(d) => &d.sources,
    };
    files.extend(sources.files().filter_map(|(_, f)| f.path.clone()));
    let (program, warnings) = loaded.map_err(|d| d.render())?;
    if !warnings.is_empty() {
        report.push_str(&tfm_dsl::diagnostic::render_all(&warnings, &program.sources));
    }
    let check_time = t0.elapsed();
    let inputs = match &cfg.inputs {
        InputSource::Npz(p) => crate::inputs::read_inputs(&program, &cfg.kernel, p).map_err(|e| format!("error: {e}"))?,
        InputSource::Random { dims, seed } => {
            crate::inputs::random_inputs(&program, &cfg.kernel, dims, *seed).map_err(|e| format!("error: {e}"))?
        }
    };
    let outputs = match &cfg.target {
        Some(target) => {
            let r =
                crate::driver::run(&program, &cfg.kernel, &inputs, &cfg.params, &cfg.options, target).map_err(|e| format!("error: {e}"))?;
            let _ = writeln!(
                report,
                "{}: {} on {}: checked in {}, compiled in {} (optimize + schedule {}, codegen {}), ran in {}",
                cfg.file.display(),
                cfg.kernel,
                target.name(),
                ms(check_time),
                ms(r.prepare + r.codegen),
                ms(r.prepare),
                ms(r.codegen),
                ms(r.run)
            );
            r.outputs
        }
        None => {
            let t = Instant::now();
            let o = crate::interp::run(&program, &cfg.kernel, &inputs, &cfg.params).map_err(|e| format!("error: {e}"))?;
            let _ = writeln!(
                report,
                "{}: {} on the interpreter: checked in {}, ran in {}",
                cfg.file.display(),
                cfg.kernel,
                ms(check_time),
                ms(t.elapsed())
            );
            o
        }
    };
    let reference = match &cfg.reference {
        None => None,
        Some(Reference::Npz(p)) => Some(tfmc_runtime::read_npz(p).map_err(|e| format!("error: reference: {e}"))?),
        Some(Reference::Interpreter) => Some(
            crate::interp::run(&program, &cfg.kernel, &inputs, &cfg.params)
                .map_err(|e| format!("error: the interpreter (reference) failed: {e}"))?,
        ),
    };
    let mut ok = true;
    for (name, t) in &outputs {
        let line = summarize(t);
        let cmp = match reference.as_ref().map(|r| r.get(name)) {
            None => String::new(),
            Some(None) => {
                ok = false;
                " | reference has no array of this name: FAIL".to_string()
            }
            Some(Some(want)) => {
                let (text, good) = difference(t, want, cfg.rtol);
                ok &= good;
                format!(" | {text}")
            }
        };
        let _ = writeln!(report, "  {name}: {line}{cmp}");
    }
    if let Some(out) = &cfg.out {
        tfmc_runtime::write_npz(out, &outputs).map_err(|e| format!("error: {e}"))?;
        let _ = writeln!(report, "  wrote {}", out.display());
    }
    Ok(ok)
}

/// `f32[2, 3] min … max …` (or `empty`), with the count of NaNs if any.
fn summarize(t: &Tensor) -> String {
    let v = t.to_f64_vec();
    let nans = v.iter().filter(|x| x.is_nan()).count();
    let (lo, hi) = v.iter().filter(|x| !x.is_nan()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)));
    let mut s = format!("{}{:?}", t.dtype(), t.shape());
    if v.is_empty() {
        s.push_str(" empty");
    } else if lo <= hi {
        let _ = write!(s, " min {lo:.4e} max {hi:.4e}");
    }
    if nans > 0 {
        let _ = write!(s, " ({nans} NaN)");
    }
    s
}

/// The largest absolute difference from `want`, judged against `rtol` times the reference's
/// largest magnitude (at least 1). NaN where the reference has none is a failure.
fn difference(got: &Tensor, want: &Tensor, rtol: f64) -> (String, bool) {
    if got.shape() != want.shape() {
        return (format!("reference shape {:?}: FAIL", want.shape()), false);
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let scale = w.iter().filter(|x| x.is_finite()).fold(0.0f64, |a, x| a.max(x.abs())).max(1.0);
    let mut worst = 0.0f64;
    for (a, b) in g.iter().zip(&w) {
        let d = if a == b || (a.is_nan() && b.is_nan()) { 0.0 } else { (a - b).abs() };
        worst = if d.is_nan() { f64::INFINITY } else { worst.max(d) };
    }
    let ok = worst <= rtol * scale;
    (format!("max |diff| {worst:.3e} (max |ref| {scale:.3e}): {}", if ok { "ok" } else { "FAIL" }), ok)
}

/// Runs rounds forever: one now, then one after every change to the program's files, printing
/// each report through `print`. Returns only on a watcher error, or when `stop` receives
/// (tests use it) — Ctrl-C ends the process otherwise.
pub fn watch(cfg: &WatchConfig, mut print: impl FnMut(&str), stop: Option<mpsc::Receiver<()>>) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        // The receiver lives as long as the loop below; a send after it ends is harmless.
        let _ = tx.send(ev);
    })
    .map_err(|e| format!("error: cannot watch files: {e}"))?;
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut n = 0u64;
    loop {
        n += 1;
        let r = round(cfg);
        let status = if r.ok { "ok" } else { "FAILED" };
        print(&format!("── round {n} ({status}) ──\n{}", r.report));
        let wanted: BTreeSet<PathBuf> = r.files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        for d in wanted.difference(&dirs) {
            watcher.watch(d, RecursiveMode::NonRecursive).map_err(|e| format!("error: cannot watch '{}': {e}", d.display()))?;
        }
        for d in dirs.difference(&wanted) {
            // A directory no longer needed: failing to unwatch only costs spurious wake-ups.
            let _ = watcher.unwatch(d);
        }
        dirs = wanted;
        print(&format!("watching {} file(s); edit and save to re-run (Ctrl-C to stop)\n", r.files.len()));
        // Wait for a change to one of the files, then let a burst of events (an editor's
        // write + rename + chmod) settle before the next round.
        loop {
            if let Some(s) = &stop
                && s.try_recv().is_ok()
            {
                return Ok(());
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(ev)) if touches(&ev, &r.files) => break,
                Ok(Ok(_)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Ok(Err(e)) => return Err(format!("error: file watcher: {e}")),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err("error: file watcher stopped".to_string()),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        while rx.try_recv().is_ok() {}
    }
}

/// True if a file-system event is about one of `files` (compared by canonical path, or by
/// name in the same directory for files that were just replaced).
fn touches(ev: &notify::Event, files: &BTreeSet<PathBuf>) -> bool {
    use notify::EventKind as K;
    if matches!(ev.kind, K::Access(_)) {
        return false;
    }
    ev.paths.iter().any(|p| files.contains(p) || files.contains(&canonical(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, text: &str) -> WatchConfig {
        let file = dir.join("k.tfm");
        std::fs::write(&file, text).unwrap();
        WatchConfig {
            file,
            kernel: "k".to_string(),
            inputs: InputSource::Random { dims: BTreeMap::from([("N".to_string(), 5)]), seed: 3 },
            params: BTreeMap::new(),
            reference: Some(Reference::Interpreter),
            rtol: 1e-5,
            target: Some(Target::cranelift()),
            options: CompileOptions::default(),
            out: None,
        }
    }

    const DOUBLE: &str = "kernel k(X: f32[N]) -> (Y: f32[N]) {\n    Y[n] = X[n] * 2.0\n}\n";

    #[test]
    fn a_round_reports_every_output_and_the_difference() {
        let dir = tempfile::tempdir().unwrap();
        let r = round(&config(dir.path(), DOUBLE));
        assert!(r.ok, "{}", r.report);
        assert!(r.report.contains("k on cranelift"), "{}", r.report);
        assert!(r.report.contains("Y: f32[5] min"), "{}", r.report);
        assert!(r.report.contains("max |diff| 0.000e0"), "{}", r.report);
    }

    #[test]
    fn errors_are_reported_and_files_still_known() {
        let dir = tempfile::tempdir().unwrap();
        let r = round(&config(dir.path(), "kernel k(X: f32[N]) -> (Y: f32[N]) {\n    Y[n] = Z[n]\n}\n"));
        assert!(!r.ok);
        assert!(r.report.contains("Z"), "{}", r.report);
        assert_eq!(r.files.len(), 1);
        let mut cfg = config(dir.path(), DOUBLE);
        cfg.reference = Some(Reference::Npz(dir.path().join("missing.npz")));
        let r = round(&cfg);
        assert!(!r.ok && r.report.contains("reference"), "{}", r.report);
    }

    #[test]
    fn a_wrong_reference_fails_the_round() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), DOUBLE);
        let inputs = match &cfg.inputs {
            InputSource::Random { dims, seed } => crate::inputs::random_inputs(&crate::load(&cfg.file).unwrap(), "k", dims, *seed).unwrap(),
            InputSource::Npz(_) => unreachable!("config() uses random inputs"),
        };
        let x = &inputs["X"];
        let wrong = Tensor::from_f64(x.dtype(), x.shape().to_vec(), x.to_f64_vec()).unwrap();
        let refpath = dir.path().join("ref.npz");
        tfmc_runtime::write_npz(&refpath, &BTreeMap::from([("Y".to_string(), wrong)])).unwrap();
        let r = round(&WatchConfig { reference: Some(Reference::Npz(refpath)), ..cfg });
        assert!(!r.ok);
        assert!(r.report.contains("FAIL"), "{}", r.report);
    }

    #[test]
    fn used_files_are_watched_and_a_save_reruns() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("helper.tfm"), "kernel twice(X: f32[N]) -> (Y: f32[N]) {\n    Y[n] = X[n] * 2.0\n}\n").unwrap();
        let cfg = config(dir.path(), "use \"helper.tfm\"\nkernel k(X: f32[N]) -> (Y: f32[N]) {\n    T = twice(X)\n    Y[n] = T[n]\n}\n");
        let first = round(&cfg);
        assert!(first.ok, "{}", first.report);
        assert_eq!(first.files.len(), 2, "{:?}", first.files);

        let (stop_tx, stop_rx) = mpsc::channel();
        let (out_tx, out_rx) = mpsc::channel::<String>();
        let cfg2 = cfg.clone();
        let handle = std::thread::spawn(move || watch(&cfg2, |s| drop(out_tx.send(s.to_string())), Some(stop_rx)));
        let wait_for = |needle: &str| {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut seen = String::new();
            while Instant::now() < deadline {
                if let Ok(s) = out_rx.recv_timeout(Duration::from_millis(100)) {
                    seen.push_str(&s);
                    if seen.contains(needle) {
                        return seen;
                    }
                }
            }
            panic!("no '{needle}' in watch output:\n{seen}");
        };
        wait_for("watching 2 file(s)");
        // Break the used file: the next round fails and names the problem.
        std::fs::write(dir.path().join("helper.tfm"), "kernel twice(X: f32[N]) -> (Y: f32[N]) {\n    Y[n] = X[n] * \n}\n").unwrap();
        let out = wait_for("round 2 (FAILED)");
        assert!(out.contains("helper.tfm"), "{out}");
        // Fix it by replacing the file (as editors do): the loop recovers.
        let tmp = dir.path().join("helper.tfm.tmp");
        std::fs::write(&tmp, "kernel twice(X: f32[N]) -> (Y: f32[N]) {\n    Y[n] = X[n] + X[n]\n}\n").unwrap();
        std::fs::rename(&tmp, dir.path().join("helper.tfm")).unwrap();
        wait_for("round 3 (ok)");
        stop_tx.send(()).unwrap();
        handle.join().unwrap().unwrap();
    }

    /// A file given by a relative path that is deleted and written again (`git checkout`, some
    /// editors) is still watched: its name stays absolute while it is missing.
    #[test]
    fn a_relative_file_deleted_and_recreated_is_still_watched() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let rel = Path::new(".").join(dir.path().file_name().unwrap());
        let cfg = config(&rel, DOUBLE);
        let file = cfg.file.clone();
        let missing = canonical(&rel.join("gone.tfm"));
        assert!(missing.is_absolute() && missing.ends_with("gone.tfm"), "{}", missing.display());

        let (stop_tx, stop_rx) = mpsc::channel();
        let (out_tx, out_rx) = mpsc::channel::<String>();
        let handle = std::thread::spawn(move || watch(&cfg, |s| drop(out_tx.send(s.to_string())), Some(stop_rx)));
        let mut seen = String::new();
        // Waits until `needle` has been printed `times` times in all.
        let mut wait_for = |needle: &str, times: usize| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(s) = out_rx.recv_timeout(Duration::from_millis(100)) {
                    seen.push_str(&s);
                    if seen.matches(needle).count() >= times {
                        return;
                    }
                }
            }
            panic!("no '{needle}' (x{times}) in watch output:\n{seen}");
        };
        wait_for("watching 1 file(s)", 1);
        std::fs::remove_file(&file).unwrap();
        wait_for("round 2 (FAILED)", 1);
        wait_for("watching 1 file(s)", 2);
        std::fs::write(&file, DOUBLE).unwrap();
        wait_for("round 3 (ok)", 1);
        stop_tx.send(()).unwrap();
        handle.join().unwrap().unwrap();
    }
}
