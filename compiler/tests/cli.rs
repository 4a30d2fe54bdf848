//! The `tfmc` binary end to end: exit codes, what goes to stderr, and that a failed `run`
//! leaves no output file. Commands run with the workspace root as working directory, so
//! paths in messages are the relative ones a user types (`lib/sdpa.tfm`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tfmc_runtime::{DType, Tensor, TensorData};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `tfmc ARGS` in the workspace root.
fn tfmc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tfmc")).args(args).current_dir(root()).output().expect("the tfmc binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh scratch directory for one test (removed when dropped).
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tfmc-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn str(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn f32_tensor(shape: &[usize], seed: usize) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n).map(|i| (((i * 7 + seed * 13) % 17) as f64 - 8.0) / 8.0).collect();
    Tensor::new(DType::F32, shape.to_vec(), TensorData::F(data)).expect("consistent tensor")
}

/// Writes an `.npz` with the given f32 arrays.
fn write_inputs(path: &Path, arrays: &[(&str, &[usize])]) {
    let mut m = BTreeMap::new();
    for (i, (name, shape)) in arrays.iter().enumerate() {
        m.insert(name.to_string(), f32_tensor(shape, i));
    }
    tfmc_runtime::write_npz(path, &m).expect("write inputs");
}

/// Runs `tfmc run lib/sdpa.tfm` on `arrays`; returns the output and whether `out.npz` exists.
fn run_sdpa(test: &str, kernel: &str, arrays: &[(&str, &[usize])]) -> (Output, bool) {
    let s = Scratch::new(test);
    write_inputs(&s.path("in.npz"), arrays);
    let o = tfmc(&["run", "lib/sdpa.tfm", "--kernel", kernel, "--inputs", &s.str("in.npz"), "--out", &s.str("out.npz")]);
    let exists = s.path("out.npz").exists();
    (o, exists)
}

/// A CPU name whose code this machine cannot run (it lacks a feature the CPU implies that the
/// runtime can test); `None` on a machine that has them all.
fn newer_cpu() -> Option<&'static str> {
    [
        ("diamondrapids", "avx512fp16"),
        ("sapphirerapids", "avx512fp16"),
        ("znver4", "avx512bf16"),
        ("x86-64-v4", "avx512f"),
        ("x86-64-v3", "avx2"),
    ]
    .into_iter()
    .find(|(_, f)| tfmc_runtime::features::host_has_feature(f) == Some(false))
    .map(|(c, _)| c)
}

/// JIT code for a CPU newer than this machine is refused with a message (exit 1), not run into
/// an illegal instruction (exit 132).
#[test]
fn run_for_a_newer_target_cpu_is_refused() {
    let Some(cpu) = newer_cpu() else {
        eprintln!("SKIP: this machine has every feature of the newest CPUs");
        return;
    };
    let s = Scratch::new("newer-cpu");
    write_inputs(&s.path("in.npz"), &[("Q", &[1, 1, 2, 2]), ("K", &[1, 1, 2, 2]), ("V", &[1, 1, 2, 2])]);
    let args =
        ["run", "lib/sdpa.tfm", "-k", "sdpa", "-i", &s.str("in.npz"), "-o", &s.str("out.npz"), "--backend", "llvm", "--target-cpu", cpu];
    let o = tfmc(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("cannot run code for target cpu '{cpu}' here")), "{}", stderr(&o));
    assert!(!s.path("out.npz").exists());
}

/// `tfmc run` shows NaNs and infinities in its summary: an all-NaN output is not
/// `min inf, max -inf`, and a partly-NaN one does not show only the finite range.
#[test]
fn run_summary_counts_nan_and_inf() {
    let s = Scratch::new("nan-summary");
    let shape: &[usize] = &[1, 1, 2, 2];
    let q_nan_row = Tensor::new(DType::F32, shape.to_vec(), TensorData::F(vec![f64::NAN, f64::NAN, 0.5, 0.25])).unwrap();
    let q_all_nan = Tensor::new(DType::F32, shape.to_vec(), TensorData::F(vec![f64::NAN; 4])).unwrap();
    for (q, want) in [(q_nan_row, "; 2 NaN)"), (q_all_nan, "(all 4 NaN)")] {
        let inputs: BTreeMap<String, Tensor> =
            [("Q".to_string(), q), ("K".to_string(), f32_tensor(shape, 1)), ("V".to_string(), f32_tensor(shape, 2))].into_iter().collect();
        tfmc_runtime::write_npz(&s.path("in.npz"), &inputs).unwrap();
        let o = tfmc(&["run", "lib/sdpa.tfm", "-k", "sdpa", "-i", &s.str("in.npz"), "-o", &s.str("out.npz")]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stdout(&o).contains(&format!("O: f32[1, 1, 2, 2] {want}")) || stdout(&o).contains(want), "{}", stdout(&o));
        assert!(!stdout(&o).contains("min inf, max -inf"), "{}", stdout(&o));
    }
}

/// `--out` through a symlink writes the file it points to (the link stays), and an existing
/// file keeps its permission bits.
#[cfg(unix)]
#[test]
fn outputs_go_through_symlinks_and_keep_the_mode() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("symlink-out");
    std::fs::write(s.path("real.npz"), b"old").unwrap();
    std::fs::set_permissions(s.path("real.npz"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("real.npz", s.path("link.npz")).unwrap();
    let o = tfmc(&["inputs", "lib/sdpa.tfm", "-k", "sdpa", "--dims", "B=1,H=1,P=2,M=2,E=2,F=2", "--out", &s.str("link.npz")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(s.path("link.npz")).unwrap().file_type().is_symlink(), "the symlink was replaced");
    assert_eq!(tfmc_runtime::read_npz(&s.path("real.npz")).unwrap().len(), 3);
    assert_eq!(std::fs::metadata(s.path("real.npz")).unwrap().permissions().mode() & 0o777, 0o600);
    let mut names: Vec<String> = std::fs::read_dir(&s.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["link.npz", "real.npz"]);
}

/// A library output named like its header would be overwritten by it: refused before
/// anything is compiled or written.
#[test]
fn build_refuses_an_output_that_is_its_own_header() {
    let s = Scratch::new("own-header");
    let o = tfmc(&["build", "lib/sdpa.tfm", "-o", &s.str("x.h")]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains(&format!("the output '{}' is where the C header goes", s.str("x.h"))), "{}", stderr(&o));
    assert!(!stdout(&o).contains("wrote"));
    assert!(std::fs::read_dir(&s.0).unwrap().next().is_none(), "something was written");
}

/// A write that fails midway (here: the file-size limit, as a full disk would) reports the
/// real error only (no "ZipWriter drop failed" glued before it) and leaves nothing; a
/// temporary file a killed tfmc left behind is removed by the next write to that path.
#[cfg(target_os = "linux")]
#[test]
fn failed_and_killed_writes_leave_nothing() {
    let s = Scratch::new("full-disk");
    let args = ["inputs", "lib/sdpa.tfm", "-k", "sdpa", "--dims", "B=1,H=1,P=256,M=256,E=16,F=16", "--out", &s.str("x.npz")];
    // `ulimit -f 16`: at most 8 KiB per file; SIGXFSZ ignored, so the write fails with EFBIG.
    let o = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 16 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_tfmc"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("sh runs");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.starts_with("error: cannot write ") && e.contains(&s.str("x.npz")) && e.contains("File too large"), "{e}");
    assert!(!e.contains("ZipWriter"), "{e}");
    assert!(std::fs::read_dir(&s.0).unwrap().next().is_none(), "something was left");
    // A killed writer's temporary file (its process is gone) goes with the next write.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = s.path(&format!(".x.npz.{dead}.0.tmp"));
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    let o = tfmc(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stale.exists(), "the stale temporary file is still there");
    assert!(s.path("x.npz").exists());
}

#[test]
fn check_good_file_exits_0_silently() {
    let o = tfmc(&["check", "lib/sdpa.tfm"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stderr(&o), "");
}

#[test]
fn check_several_good_files() {
    let o = tfmc(&["check", "lib/sdpa.tfm", "lib/causal.tfm", "lib/model.tfm"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stderr(&o), "");
}

#[test]
fn check_bad_file_exits_1_with_located_error() {
    let o = tfmc(&["check", "tests/check/014_index_range_mismatch.tfm"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("error: index 'p' ranges over P but dimension 2 of 'K' is M"), "stderr: {e}");
    assert!(e.contains("tests/check/014_index_range_mismatch.tfm:3:52"), "stderr: {e}");
    assert_eq!(stdout(&o), "");
}

#[test]
fn check_reports_every_bad_file_and_fails_if_any_is_bad() {
    let o = tfmc(&["check", "lib/sdpa.tfm", "tests/check/006_unknown_tensor.tfm", "tests/check/012_implicit_summation.tfm"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("tests/check/006_unknown_tensor.tfm:3:38"), "stderr: {e}");
    assert!(e.contains("tests/check/012_implicit_summation.tfm:3:17"), "stderr: {e}");
}

#[test]
fn check_syntax_error_exits_1() {
    let o = tfmc(&["check", "tests/check/004_stray_token.tfm"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("error: syntax error"), "stderr: {e}");
    assert!(e.contains("tests/check/004_stray_token.tfm:3:22"), "stderr: {e}");
}

#[test]
fn check_missing_file_exits_1_naming_it() {
    let o = tfmc(&["check", "no/such/file.tfm"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("error:"), "stderr: {e}");
    assert!(e.contains("no/such/file.tfm"), "stderr: {e}");
    assert!(e.contains("cannot read"), "stderr: {e}");
}

#[test]
fn check_prints_warnings_but_succeeds() {
    let s = Scratch::new("warn");
    let f = s.path("unused.tfm");
    std::fs::write(&f, "kernel k(X: f32[N]) -> (Y: f32[N]) {\n    T[n] = X[n] * 2.0\n    Y[n] = X[n]\n}\n").expect("write");
    let o = tfmc(&["check", &s.str("unused.tfm")]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("warning: tensor 'T' is never used"), "stderr: {e}");
}

#[test]
fn help_mentions_the_subcommands() {
    let o = tfmc(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let h = stdout(&o);
    for word in ["check", "run", "inputs"] {
        assert!(h.contains(word), "--help does not mention {word}:\n{h}");
    }
}

#[test]
fn bad_usage_exits_2() {
    let o = tfmc(&[]);
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(&o));
    let o = tfmc(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(&o));
    let o = tfmc(&["run", "lib/sdpa.tfm"]);
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(&o));
}

const Q: &[usize] = &[1, 2, 3, 4];
const K: &[usize] = &[1, 2, 5, 4];
const V: &[usize] = &[1, 2, 5, 6];

#[test]
fn run_with_missing_input_fails_naming_it() {
    let (o, wrote) = run_sdpa("missing", "sdpa", &[("Q", Q), ("K", K)]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("error:") && e.contains("missing input 'V'"), "stderr: {e}");
    assert!(!wrote, "a failed run wrote its output file");
}

#[test]
fn run_with_extra_input_fails_naming_it() {
    let (o, wrote) = run_sdpa("extra", "sdpa", &[("Q", Q), ("K", K), ("V", V), ("Bias", &[1, 2])]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("error:") && e.contains("'Bias'"), "stderr: {e}");
    assert!(!wrote, "a failed run wrote its output file");
}

#[test]
fn run_with_misshapen_input_fails_naming_it() {
    // K's last dimension (E) disagrees with Q's.
    let (o, wrote) = run_sdpa("shape", "sdpa", &[("Q", Q), ("K", &[1, 2, 5, 3]), ("V", V)]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("error:") && e.contains("dimension E") && e.contains("K"), "stderr: {e}");
    assert!(!wrote, "a failed run wrote its output file");
}

#[test]
fn run_with_wrong_rank_fails_naming_it() {
    let (o, wrote) = run_sdpa("rank", "sdpa", &[("Q", Q), ("K", K), ("V", &[2, 5, 6])]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("error:") && e.contains("'V'") && e.contains("rank"), "stderr: {e}");
    assert!(!wrote, "a failed run wrote its output file");
}

#[test]
fn run_unknown_kernel_fails_naming_it() {
    let (o, wrote) = run_sdpa("kernel", "sdpaa", &[("Q", Q), ("K", K), ("V", V)]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("error:") && e.contains("'sdpaa'") && e.contains("sdpa"), "stderr: {e}");
    assert!(!wrote, "a failed run wrote its output file");
}

#[test]
fn run_missing_inputs_file_fails_naming_it() {
    let s = Scratch::new("noinputs");
    let o = tfmc(&["run", "lib/sdpa.tfm", "--kernel", "sdpa", "--inputs", &s.str("nope.npz"), "--out", &s.str("out.npz")]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("error:") && e.contains("nope.npz"), "stderr: {e}");
    assert!(!s.path("out.npz").exists());
}

#[test]
fn run_bad_program_fails_before_reading_inputs() {
    let s = Scratch::new("badprog");
    let o = tfmc(&[
        "run",
        "tests/check/014_index_range_mismatch.tfm",
        "--kernel",
        "scores",
        "--inputs",
        &s.str("nope.npz"),
        "--out",
        &s.str("out.npz"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("tests/check/014_index_range_mismatch.tfm:3:52"), "stderr: {e}");
    assert!(!s.path("out.npz").exists());
}

#[test]
fn run_unknown_param_fails_naming_it() {
    let s = Scratch::new("param");
    write_inputs(&s.path("in.npz"), &[("Q", Q), ("K", K), ("V", V)]);
    let o =
        tfmc(&["run", "lib/window.tfm", "--kernel", "window", "--inputs", &s.str("in.npz"), "--param", "Wx=3", "--out", &s.str("out.npz")]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("error:") && e.contains("'Wx'"), "stderr: {e}");
    assert!(!s.path("out.npz").exists());
}

#[test]
fn inputs_then_run_round_trip() {
    let s = Scratch::new("roundtrip");
    let o = tfmc(&["inputs", "lib/sdpa.tfm", "--kernel", "sdpa", "--dims", "B=1,H=2,P=3,M=5,E=4,F=6", "--out", &s.str("in.npz")]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let inputs = tfmc_runtime::read_npz(&s.path("in.npz")).expect("read inputs");
    let names: Vec<&str> = inputs.keys().map(String::as_str).collect();
    assert_eq!(names, ["K", "Q", "V"]);
    assert_eq!(inputs["Q"].shape(), [1, 2, 3, 4]);
    assert_eq!(inputs["V"].shape(), [1, 2, 5, 6]);

    let o = tfmc(&["run", "lib/sdpa.tfm", "--kernel", "sdpa", "--inputs", &s.str("in.npz"), "--out", &s.str("out.npz")]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(stdout(&o).contains("wrote"), "stdout: {}", stdout(&o));
    let out = tfmc_runtime::read_npz(&s.path("out.npz")).expect("read outputs");
    let names: Vec<&str> = out.keys().map(String::as_str).collect();
    assert_eq!(names, ["O"]);
    let o_t = &out["O"];
    assert_eq!(o_t.shape(), [1, 2, 3, 6]);
    assert_eq!(o_t.dtype(), DType::F32);
    // Softmax weights are convex, so each output lies within the range of V's column.
    let v = inputs["V"].to_f64_vec();
    let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)));
    for x in o_t.to_f64_vec() {
        assert!(x.is_finite() && x >= lo - 1e-6 && x <= hi + 1e-6, "output {x} outside [{lo}, {hi}]");
    }
}

#[test]
fn inputs_unknown_dim_and_missing_dim_fail() {
    let s = Scratch::new("dims");
    let o = tfmc(&["inputs", "lib/sdpa.tfm", "--kernel", "sdpa", "--dims", "B=1,H=2,P=3,M=5,E=4", "--out", &s.str("in.npz")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("'F'"), "stderr: {}", stderr(&o));
    let o = tfmc(&["inputs", "lib/sdpa.tfm", "--kernel", "sdpa", "--dims", "B=1,H=2,P=3,M=5,E=4,F=6,Z=2", "--out", &s.str("in.npz")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("'Z'"), "stderr: {}", stderr(&o));
    assert!(!s.path("in.npz").exists());
}

/// Expressions nested up to the bracket limit (100) check; deeper ones are a clean error
/// (exit 1, a diagnostic), never a stack overflow.
#[test]
fn deep_nesting_checks_or_is_rejected_cleanly() {
    let s = Scratch::new("deep");
    for (depth, ok) in [(95, true), (150, false), (5000, false)] {
        let body = format!("{}X[n]{}", "(".repeat(depth), " + 1.0)".repeat(depth));
        let file = s.path(&format!("deep{depth}.tfm"));
        std::fs::write(&file, format!("kernel deep(X: f32[N]) -> (Y: f32[N]) {{\n    Y[n] = {body}\n}}\n")).expect("write");
        let o = tfmc(&["check", &file.display().to_string()]);
        if ok {
            assert_eq!(o.status.code(), Some(0), "depth {depth}: stderr: {}", stderr(&o));
        } else {
            assert_eq!(o.status.code(), Some(1), "depth {depth}: stderr: {}", stderr(&o));
            assert!(stderr(&o).contains("nested too deeply"), "depth {depth}: stderr: {}", stderr(&o));
        }
    }
}

/// Long flat expressions (no brackets), unary chains and `if` chains: short ones check, very
/// long ones are rejected with a diagnostic, and nothing crashes.
#[test]
fn long_flat_expressions_check_or_are_rejected_cleanly() {
    let s = Scratch::new("flat");
    let cases = [
        (format!("X[n]{}", " + X[n]".repeat(200)), true),
        (format!("X[n]{}", " + X[n]".repeat(5000)), false),
        (format!("{}X[n]", "-".repeat(100)), true),
        (format!("{}X[n]", "-".repeat(5000)), false),
        (format!("{}X[n]{}", "if X[n] > 0.0 then 1.0 else ".repeat(50), ""), true),
        (format!("{}X[n]{}", "if X[n] > 0.0 then 1.0 else ".repeat(3000), ""), false),
    ];
    for (i, (expr, ok)) in cases.iter().enumerate() {
        let file = s.path(&format!("flat{i}.tfm"));
        std::fs::write(&file, format!("kernel a(X: f32[N]) -> (Y: f32[N]) {{\n    Y[n] = {expr}\n}}\n")).expect("write");
        let o = tfmc(&["check", &file.display().to_string()]);
        let want = if *ok { 0 } else { 1 };
        assert_eq!(o.status.code(), Some(want), "case {i}: stderr: {}", stderr(&o));
        if !ok {
            assert!(stderr(&o).contains("nested too deeply"), "case {i}: stderr: {}", stderr(&o));
        }
    }
}

/// `tfmc explain` shows the 3-pass cascade become one pass, the rule that did it, and the
/// egg statistics.
#[test]
fn explain_shows_three_passes_become_one() {
    let o = tfmc(&["explain", "lib/sdpa.tfm", "--kernel", "sdpa", "--dims", "P=512,M=512"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("online-softmax"), "{text}");
    assert!(text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["m", "3", "1"]), "{text}");
    assert!(text.contains("P=512") && text.contains("stopped: saturated"), "{text}");
    let o = tfmc(&["explain", "lib/sdpa.tfm", "--kernel", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nope"), "stderr: {}", stderr(&o));
}

/// `tfmc run --optimized` interprets the optimized cascade and agrees with the plain run.
#[test]
fn run_optimized_agrees_with_run() {
    let s = Scratch::new("optimized");
    let inputs = s.str("in.npz");
    let o = tfmc(&["inputs", "lib/window.tfm", "--kernel", "window", "--dims", "B=1,H=2,P=9,M=9,E=4,F=3", "--out", &inputs]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let (plain, opt) = (s.str("plain.npz"), s.str("opt.npz"));
    for (out, extra) in [(&plain, None), (&opt, Some("--optimized"))] {
        let mut args = vec!["run", "lib/window.tfm", "--kernel", "window", "--inputs", &inputs, "--param", "W=3", "--out", out];
        args.extend(extra);
        let o = tfmc(&args);
        assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    }
    let a = tfmc_runtime::read_npz(std::path::Path::new(&plain)).expect("plain output");
    let b = tfmc_runtime::read_npz(std::path::Path::new(&opt)).expect("optimized output");
    let diff = a["O"].max_abs_diff(&b["O"]).expect("same shape");
    assert!(diff <= 1e-6, "optimized and plain runs differ by {diff}");
}

/// `--emit=kir` prints the schedule of the chosen target: the CPU plan by default, the GPU's
/// block-parallel plan with `--target cuda` (one `Target` decides the schedule, the backend and
/// the manifest).
#[test]
fn emit_kir_follows_the_target() {
    let cpu = tfmc(&["build", "lib/sdpa.tfm", "--emit=kir"]);
    assert!(cpu.status.success(), "{}", stderr(&cpu));
    let gpu = tfmc(&["build", "lib/sdpa.tfm", "--target", "cuda", "--emit=kir"]);
    assert!(gpu.status.success(), "{}", stderr(&gpu));
    assert!(
        stdout(&gpu).contains("block_parallel") && stdout(&gpu).contains("(128 threads)"),
        "no block parallel in the CUDA schedule:\n{}",
        stdout(&gpu)
    );
    assert!(!stdout(&cpu).contains("block_parallel"), "GPU dialect in the CPU schedule");
    assert_ne!(stdout(&cpu), stdout(&gpu));
}

/// A stage or artifact the target does not have is a clear error (exit 1), and nothing is
/// written.
#[test]
fn stages_and_artifacts_the_target_lacks_are_errors() {
    let s = Scratch::new("target-lacks");
    for (args, msg) in [
        (&["build", "lib/sdpa.tfm", "--target", "cuda", "--emit=llvm"][..], "the cuda target has no 'llvm' stage"),
        (&["build", "lib/sdpa.tfm", "--target", "cranelift", "-o", &s.str("x.so")][..], "the cranelift target builds no artifact"),
        (&["build", "lib/sdpa.tfm", "--target", "interp", "-o", &s.str("x.so")][..], "the interpreter builds no artifact"),
    ] {
        let o = tfmc(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
    }
    assert!(!s.path("x.so").exists() && !s.path("x.h").exists());
}

/// Hostile sources (issue 16): a device file, a FIFO and a file over the size cap are refused
/// before they are read (no hang, no memory exhaustion); a call bomb is an error at `check`.
#[test]
fn hostile_sources_are_refused() {
    let s = Scratch::new("hostile-sources");
    let o = tfmc(&["check", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot read '/dev/zero': not a regular file"), "{}", stderr(&o));
    let fifo = s.path("pipe.tfm");
    let made = Command::new("mkfifo").arg(&fifo).status().is_ok_and(|st| st.success());
    if made {
        let o = tfmc(&["check", &s.str("pipe.tfm")]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    }
    let big = std::fs::File::create(s.path("big.tfm")).expect("create");
    big.set_len(17 << 20).expect("a sparse 17 MiB file");
    let o = tfmc(&["check", &s.str("big.tfm")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("larger than 16777216 bytes"), "{}", stderr(&o));
    let o = tfmc(&["check", "tests/check/107_call_bomb.tfm"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("too large with its calls inlined"), "{}", stderr(&o));
}

/// Float params beyond their dtype are errors naming the value (the interpreter used to give
/// finite results and compiled code NaN for `--param cap=1e39`), as is a number beyond f64.
#[test]
fn float_params_beyond_their_dtype_are_errors() {
    let s = Scratch::new("float-params");
    write_inputs(&s.path("in.npz"), &[("Q", &[1, 1, 2, 4]), ("K", &[1, 1, 3, 4]), ("V", &[1, 1, 3, 4])]);
    let run = |cap: &str| {
        tfmc(&["run", "lib/softcap.tfm", "--kernel", "softcap", "--inputs", &s.str("in.npz"), "--out", &s.str("out.npz"), "--param", cap])
    };
    let o = run("cap=1e39");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("param 'cap' is f32; 1e39 is not a valid f32"), "{}", stderr(&o));
    let o = run("cap=1e400");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("'1e400' is out of range"), "{}", stderr(&o));
    assert!(!s.path("out.npz").exists());
    assert!(run("cap=3e38").status.success());
}

/// `--dims` and `--split` are checked (issue 16): sizes above 2^40, a dim given twice, a dim or
/// an index the kernel lacks, a chunk out of range are errors (exit 1), never silently
/// ignored, wrapped or an internal overflow; hostile sizes for `inputs` are errors, no panic.
#[test]
fn dims_and_split_are_checked() {
    let s = Scratch::new("dims-split");
    for (args, msg) in [
        (&["explain", "lib/sdpa.tfm", "--kernel", "sdpa", "--dims", "P=18446744073709551615"][..], "larger than 2^40"),
        (&["explain", "lib/sdpa.tfm", "--kernel", "sdpa", "--dims", "F=4,F=5"][..], "--dims F is given twice"),
        (&["explain", "lib/sdpa.tfm", "--kernel", "sdpa", "--dims", "Q=4"][..], "kernel 'sdpa' has no dimension 'Q'"),
        (&["explain", "lib/sdpa.tfm", "--kernel", "sdpa", "--split", "q=64"][..], "cannot split index 'q'"),
        (&["explain", "lib/sdpa.tfm", "--kernel", "sdpa", "--split", "m=9223372036854775807"][..], "CHUNK between 1 and 2^40"),
        (
            &[
                "inputs",
                "lib/sdpa.tfm",
                "--kernel",
                "sdpa",
                "--dims",
                "B=1,H=1,P=18446744073709551615,M=1,E=1,F=1",
                "--out",
                &s.str("i.npz"),
            ][..],
            "larger than 2^40",
        ),
        (
            &[
                "inputs",
                "lib/sdpa.tfm",
                "--kernel",
                "sdpa",
                "--dims",
                "B=4294967296,H=4294967296,P=1,M=1,E=1,F=1",
                "--out",
                &s.str("i.npz"),
            ][..],
            "its size in bytes overflows",
        ),
        (
            &["inputs", "lib/sdpa.tfm", "--kernel", "sdpa", "--dims", "B=1048576,H=1048576,P=1,M=1,E=1,F=1", "--out", &s.str("i.npz")][..],
            "is too large: ",
        ),
        (
            &["inputs", "lib/sdpa.tfm", "--kernel", "sdpa", "--dims", "B=1,H=1,P=1,M=1,E=1,F=1,Z=3", "--out", &s.str("i.npz")][..],
            "has no dimension 'Z'",
        ),
    ] {
        let o = tfmc(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    }
    assert!(!s.path("i.npz").exists());
    let o = tfmc(&["explain", "lib/sdpa.tfm", "--kernel", "sdpa", "--dims", "P=16,M=16", "--split", "m=8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("P=16"), "{}", stdout(&o));
}

/// `tfmc bench --variants` on a tiny shape without PyTorch: one row per attention-family lib
/// kernel (timed, with a plan), the kernels it does not time listed with the reason, and the
/// table's columns. Timings are not checked.
#[test]
fn bench_variants_prints_every_row_and_column() {
    let o = tfmc(&[
        "bench",
        "--variants",
        "--torch",
        "skip",
        "--dims",
        "B=1,H=1,P=8,M=8,E=2,F=2",
        "--iters",
        "1",
        "--budget-s",
        "60",
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let header = out.lines().find(|l| l.starts_with("variant ")).unwrap_or_else(|| panic!("no table header:\n{out}"));
    let columns: Vec<&str> = header.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(columns, ["variant", "plan", "tfmc ms", "torch ms", "torch/tfmc", "GFLOP/s", "% sdpa", "compile s", "note"]);
    let row =
        |name: &str| out.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("no row {name}:\n{out}"));
    for name in [
        "sdpa",
        "causal",
        "window",
        "alibi",
        "softcap",
        "gqa",
        "mqa",
        "l2",
        "linear",
        "linear_causal",
        "retnet",
        "sigmoid",
        "sigmoid_causal",
        "diff",
        "softmax_one",
        "sink_causal",
        "sink_window",
        "flow",
        "graph",
        "pattention",
    ] {
        let cells: Vec<&str> = row(name).split_whitespace().collect();
        // variant, plan (one or more words), tfmc ms, torch ms "-", ratio "-", GFLOP/s, % sdpa, compile s.
        assert!(cells.len() >= 8, "row {name}: {cells:?}");
        assert!(cells.iter().filter(|c| c.parse::<f64>().is_ok()).count() >= 3, "row {name} is not timed: {cells:?}\n{out}");
        assert!(!row(name).contains("> budget") && !row(name).contains("error"), "row {name}: {}", row(name));
    }
    assert!(row("sdpa").contains("tiled attention"), "sdpa's plan: {}", row("sdpa"));
    assert!(row("sdpa").contains("100%"), "sdpa is its own yardstick: {}", row("sdpa"));
    for name in ["selective_scan", "rmsnorm", "block", "linear_causal_scan", "retention_recurrent", "varlen_causal", "sdpa_bf16"] {
        assert!(row(name).contains("not timed: "), "row {name}: {}", row(name));
    }
    assert!(out.contains("PyTorch: skipped"), "{out}");
    assert!(out.contains("plans (CPU schedule):\n  sdpa: O: tiled attention"), "{out}");
}

#[test]
fn bench_variants_rejects_unknown_rows_and_dims() {
    let o = tfmc(&["bench", "--variants", "--torch", "skip", "--shapes", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown variant 'nope'"), "{}", stderr(&o));
    let o = tfmc(&["bench", "--variants", "--torch", "skip", "--dims", "X=3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--dims X"), "{}", stderr(&o));
}
