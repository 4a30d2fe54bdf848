//! Unit tests of the benchmark harness (the full run is `#[ignore]`d: it takes minutes).

use std::time::Duration;

use super::machine::*;
use super::table::*;
use super::tfmc_side::*;
use super::torch::*;
use super::*;

#[test]
fn pairs_count_exactly_the_unmasked_points() {
    let mk = |kind, p, m, w| Shape { name: "t", kind, b: 1, h: 1, p, m, e: 1, w };
    assert_eq!(mk(Kind::Sdpa, 3, 5, 0).pairs(), 15);
    assert_eq!(mk(Kind::Causal, 4, 4, 0).pairs(), 10);
    assert_eq!(mk(Kind::Linear, 4, 2, 0).pairs(), 1 + 2 + 2 + 2);
    // Rows 0..5 with W = 2 see 1, 2, 2, 2, 2 keys.
    assert_eq!(mk(Kind::Window, 5, 5, 2).pairs(), 9);
    assert_eq!(mk(Kind::Window, 5, 5, 0).pairs(), 0);
    assert_eq!(mk(Kind::Window, 4096, 4096, 256).pairs(), 256 * 257 / 2 + (4096 - 256) * 256);
    let brute =
        |p: u64, m: u64, w: u64| (0..p).flat_map(|r| (0..m).map(move |c| (r, c))).filter(|&(r, c)| c <= r && r - c < w).count() as u64;
    for (p, m, w) in [(7, 3, 2), (3, 7, 5), (9, 9, 1), (6, 4, 100)] {
        assert_eq!(mk(Kind::Window, p as usize, m as usize, w as usize).pairs(), brute(p, m, w), "{p} {m} {w}");
    }
}

#[test]
fn shapes_match_the_design_table() {
    let names: Vec<&str> = shapes().iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "sdpa-512",
            "sdpa-1k",
            "sdpa-4k",
            "batch",
            "causal-1k",
            "causal-4k",
            "window-4k",
            "decode-4k",
            "decode-32k",
            "paged-4k",
            "linear-4k",
            "sdpa-1k-e80",
            "sdpa-1k-e128",
            "sdpa-1k-e256",
            "gqa-1k",
            "alibi-1k",
            "softcap-1k"
        ]
    );
    // Grouped-query attention: 4 query heads per key/value head; ALiBi is causal.
    let by = |n: &str| shapes().into_iter().find(|s| s.name == n).expect("a shape");
    assert_eq!(by("gqa-1k").kv_heads(), 4);
    assert_eq!(by("sdpa-1k").kv_heads(), 8);
    assert_eq!(by("alibi-1k").pairs(), by("causal-1k").pairs());
    assert_eq!(by("softcap-1k").pairs(), by("sdpa-1k").pairs());
    assert!(select(Some(&["nope".to_string()])).unwrap_err().contains("unknown shape 'nope'"));
    assert_eq!(select(Some(&["batch".to_string(), "sdpa-512".to_string()])).unwrap().len(), 2);
}

#[test]
fn flat_json_lines_parse() {
    let o = parse_flat_object(r#"{"name": "sdpa-1k", "median_ms": 12.5e0, "iters": 5}"#).unwrap();
    assert_eq!(o["name"], JsonScalar::Str("sdpa-1k".into()));
    assert_eq!(o["median_ms"], JsonScalar::Num(12.5));
    let o = parse_flat_object(r#"{"name": "a\"b\u0041", "error": "x: y"}"#).unwrap();
    assert_eq!(o["name"], JsonScalar::Str("a\"bA".into()));
    assert!(parse_flat_object("not json").is_none());
    assert!(parse_flat_object(r#"{"a": [1]}"#).is_none());
    assert!(parse_flat_object("{}").unwrap().is_empty());
    assert_eq!(parse_flat_object(r#"{"done": true}"#).unwrap()["done"], JsonScalar::Bool(true));
    assert_eq!(parse_flat_object(r#"{"x": NaN, "y": null}"#).unwrap()["y"], JsonScalar::Null);
    let req = torch_request(&[&shapes()[6]], 5, 2);
    assert!(req.contains(r#""kind": "window""#) && req.contains(r#""w": 256"#), "{req}");
}

#[test]
fn median_and_budget() {
    assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    assert_eq!(calls_within_budget(5, Duration::from_secs(4)), 2);
    assert_eq!(calls_within_budget(5, Duration::from_secs(60)), 1);
    assert_eq!(calls_within_budget(5, Duration::from_millis(1)), 5);
}

#[test]
fn table_aligns_columns() {
    let t = table(&["a", "bb"], &[vec!["xxx".into(), "1".into()], vec!["y".into(), "22".into()]]);
    assert_eq!(t, "a    bb\n-------\nxxx   1\ny    22\n");
}

#[test]
fn peak_is_positive() {
    let p = measure_peak(1);
    assert!(p.gflops > 0.0, "{p:?}");
}

#[test]
fn small_shape_runs_and_is_finite() {
    let s = Shape { name: "tiny", kind: Kind::Window, b: 1, h: 2, p: 33, m: 33, e: 8, w: 5 };
    let r = bench_tfmc(&s, 2, &lib_dir(), &crate::driver::Target::host_llvm()).unwrap();
    assert!(!r.non_finite && r.median_ms >= 0.0 && r.iters >= 1, "{r:?}");
}

/// The full benchmark: `cargo test --release -p tfmc bench -- --ignored --nocapture`
/// (env `TFMC_BENCH_SHAPES=a,b`, `TFMC_BENCH_ITERS`, `TFMC_BENCH_TORCH=skip|install`).
#[test]
#[ignore = "the full benchmark takes minutes; run it in release"]
fn full_benchmark() {
    let env = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
    let opts = BenchOptions {
        shapes: env("TFMC_BENCH_SHAPES").map(|s| s.split(',').map(str::to_string).collect()),
        iters: env("TFMC_BENCH_ITERS").and_then(|s| s.parse().ok()).unwrap_or(5),
        torch: match env("TFMC_BENCH_TORCH").as_deref() {
            Some("skip") => TorchMode::Skip,
            Some("install") => TorchMode::Install,
            _ => TorchMode::Auto,
        },
        threads: env("TFMC_BENCH_THREADS").and_then(|s| s.parse().ok()),
    };
    match run(&opts) {
        Ok(report) => println!("{report}"),
        Err(e) => panic!("{e}"),
    }
}

/// Every lib kernel compiles on both tiers, with positive times.
#[test]
fn compile_times_cover_every_lib_kernel() {
    let t = compile_times(&lib_dir(), 1).unwrap();
    assert!(t.len() >= 17, "{} kernels", t.len());
    for c in &t {
        assert!(c.prepare_ms > 0.0 && c.llvm_ms > 0.0 && c.cranelift_ms > 0.0, "{c:?}");
    }
    assert!(t.iter().any(|c| c.name == "sdpa/sdpa"), "{:?}", t.iter().map(|c| &c.name).collect::<Vec<_>>());
}

/// Every kernel of `lib/` is a `--variants` row or listed as not timed, and every row names a
/// kernel that exists.
#[test]
fn variants_cover_every_lib_kernel() {
    let mut listed: Vec<&str> = VARIANTS.iter().map(|v| v.kernel).chain(NOT_TIMED.iter().map(|(k, _)| *k)).collect();
    listed.sort();
    let mut kernels = Vec::new();
    for entry in std::fs::read_dir(lib_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tfm") {
            let program = crate::load(&path).unwrap();
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            for k in &program.kernels {
                // Kernels a file pulls in with `use` belong to their own file.
                if program.sources.get(k.span.file).name.ends_with(&file) {
                    kernels.push(k.name.clone());
                }
                if let Some(v) = VARIANTS.iter().find(|v| v.kernel == k.name) {
                    assert!(program.kernel(v.kernel).is_some(), "{}", v.name);
                }
            }
        }
    }
    kernels.sort();
    kernels.dedup();
    assert_eq!(listed, kernels, "VARIANTS + NOT_TIMED vs lib/");
}

#[test]
fn short_plans_name_the_plan() {
    let p = |lines: &[&str]| short_plan(&lines.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(p(&["O: tiled attention (packed Q·Kᵀ tile when enough rows, else natural): tiles of 18 rows"]), "tiled attention");
    assert_eq!(p(&["O: parallel (b, h, p), inner loop f"]), "generic");
    assert_eq!(
        p(&[
            "O.prefix1: parallel (b, h), sequential scan p, inner loop e",
            "O.prefix2: parallel (b, h, f), sequential scan p",
            "O: parallel (b, h, p), inner loop f"
        ]),
        "scan + generic"
    );
    assert_eq!(p(&[]), "");
}

#[test]
fn variant_steps_round_trip_through_their_json_lines() {
    use super::variant_side::{Step, step_line};
    for s in [
        Step::Compiled { seconds: 1.5, plan: vec!["O: a \"b\"".to_string(), "Y: c".to_string()], flops: 2e9 },
        Step::Warm(12.25),
        Step::Timed { median_ms: 3.5, iters: 4, non_finite: true },
    ] {
        let obj = parse_flat_object(&step_line(&s)).unwrap();
        assert_eq!(super::variants::parse_step(&obj), Some(Ok(s)));
    }
}

#[test]
fn variant_inputs_follow_the_kernel_signatures() {
    use super::variant_side::make_inputs;
    let d = VariantDims { b: 1, h: 8, p: 5, m: 7, e: 3, f: 2 };
    let shapes = |file: &str, kernel: &str| -> Vec<Vec<usize>> {
        let program = crate::load(&lib_dir().join(file)).unwrap();
        make_inputs(program.kernel(kernel).unwrap().1, &d).unwrap().iter().map(|t| t.shape().to_vec()).collect()
    };
    assert_eq!(shapes("gqa.tfm", "gqa"), [vec![1, 8, 5, 3], vec![1, 2, 7, 3], vec![1, 2, 7, 2]]);
    assert_eq!(shapes("diff.tfm", "diff_attention").len(), 5);
    assert_eq!(shapes("graph.tfm", "graph_attention")[3], [1, 5, 7]);
    assert_eq!(shapes("quiet.tfm", "sink_causal")[3], [8]);
}

/// `run_variants` in this process (no child to stop a slow call): the chosen rows are timed,
/// sdpa is its own yardstick, and an unknown row is refused.
#[test]
fn variants_run_in_process_on_a_tiny_shape() {
    let opts = VariantOptions {
        only: Some(vec!["sdpa".to_string(), "sink_causal".to_string()]),
        dims: VariantDims { b: 1, h: 2, p: 9, m: 9, e: 4, f: 3 },
        iters: 1,
        budget_s: 60.0,
        torch: TorchMode::Skip,
        threads: Some(1),
        exe: None,
    };
    let report = run_variants(&opts).unwrap();
    let row = |name: &str| report.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{report}"));
    assert!(row("sdpa").contains("tiled attention") && row("sdpa").contains("100%"), "{report}");
    assert!(row("sink_causal").split_whitespace().filter(|c| c.parse::<f64>().is_ok()).count() >= 3, "{report}");
    assert!(!report.lines().any(|l| l.starts_with("causal ")), "only the chosen rows: {report}");
    let bad = VariantOptions { only: Some(vec!["nope".to_string()]), ..opts };
    assert!(run_variants(&bad).unwrap_err().contains("unknown variant 'nope'"));
}
