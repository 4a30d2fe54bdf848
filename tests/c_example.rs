//! The C example (`examples/c/main.c`) against a real artifact: build `lib/sdpa.tfm` into a
//! fresh directory with `tfmc::driver::build` (what `tfmc build` does), compile `main.c` with
//! `cc -std=c11 -Wall -Wextra -Werror` against the generated header and library, run it, and
//! check that it reports a match with its naive C reference, that a negative dim returns
//! `TFMC_FAIL_BAD_DIMS` at that dim's site and a NULL pointer `TFMC_FAIL_NULL_POINTER`. Needs a C compiler (`cc`).

use std::path::{Path, PathBuf};
use std::process::Command;

use tfmc::driver::CompileOptions;

use tfmc_conformance::{build, load_lib, repo_root};

/// A fresh directory under Cargo's per-target temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn c_example_builds_runs_and_matches_its_reference() {
    let scratch = Scratch::new("c_example");
    let dir = &scratch.0;
    let lib = dir.join("libsdpa.so");
    build(&load_lib("sdpa.tfm"), &lib, &CompileOptions::default()).unwrap_or_else(|e| panic!("build: {e}"));
    let header = std::fs::read_to_string(dir.join("libsdpa.h")).expect("header beside the library");
    // main.c relies on this prototype (dims in the manifest's order) and enumerator.
    assert!(
        header.contains(
            "int32_t tfmc_sdpa(const float *Q, const float *K, const float *V, float *O, \
             int64_t B, int64_t H, int64_t P, int64_t E, int64_t M, int64_t F);"
        ),
        "{header}"
    );
    assert!(header.contains("TFMC_FAIL_BAD_DIMS = "), "{header}");

    let main_c = repo_root().join("examples/c/main.c");
    let exe = dir.join("sdpa_example");
    let d = dir.display().to_string();
    let args: Vec<String> = vec![
        "-std=c11".into(),
        "-Wall".into(),
        "-Wextra".into(),
        "-Werror".into(),
        format!("-I{d}"),
        main_c.display().to_string(),
        format!("-L{d}"),
        "-lsdpa".into(),
        format!("-Wl,-rpath,{d}"),
        "-lm".into(),
        "-o".into(),
        exe.display().to_string(),
    ];
    let cc = Command::new("cc")
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("this test needs a C compiler: cannot run `cc` ({e}); install gcc or clang"));
    assert!(cc.status.success(), "cc {args:?} failed:\n{}", String::from_utf8_lossy(&cc.stderr));

    let run = Command::new(&exe).output().expect("run the C example");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}", run.status, String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("tfmc_sdpa: O[2, 3, 5, 6], checksum "), "{stdout}");
    let diff: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("max abs diff "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no 'max abs diff' line in:\n{stdout}"));
    assert!(diff <= 1e-4, "max abs diff {diff}\n{stdout}");
    // A negative P (the third dim) names the site of P's check, not B's (site 0).
    assert!(stdout.lines().any(|l| l.starts_with("negative dim: code ") && l.contains(", TFMC_FAIL_BAD_DIMS at site 2")), "{stdout}");
    assert!(header.contains(" *   2: dim P is negative or larger than 2^40"), "{header}");
    assert!(stdout.lines().any(|l| l == "NULL output: code 8, TFMC_FAIL_NULL_POINTER"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("OK"), "{stdout}");
}
