//! Robustness fuzzing of the front end and the interpreter: whatever text comes in,
//! `tfmc::load_str` (parse + check) returns `Ok` or `Err` and never panics, and a program that
//! checks runs under `tfmc::interp::run` on tiny random inputs without panicking (run-time
//! errors are fine).
//!
//! A file that parses must also print (`tfm_dsl::print`) to text that re-parses and re-prints
//! identically.
//!
//! Inputs: (a) soups of the language's tokens, bare or inside a kernel header; (b) mutations of
//! real files (`lib/`, `tests/ok/`, `tests/check/`, with their `use`s inlined): deleted,
//! duplicated and swapped token spans, identifiers replaced by others of the same file,
//! random tokens inserted, numbers and operators replaced; (c) every file under
//! `tests/fuzz_regressions/` (minimized inputs that once panicked).
//!
//! Cases per property: 1024, or `TFMC_FUZZ_CASES=N` for a long run. The longer-running
//! coverage-guided fuzzer is `fuzz/` (`cargo +nightly fuzz run parse_check`).

use proptest::prelude::*;
use std::collections::BTreeMap;
use tfm_dsl::FileId;
use tfm_dsl::print::print_file;
use tfmc::hir::{Extent, Program};
use tfmc_conformance::{inline_uses, tfm_files};
use tfmc_runtime::Scalar;

// ---- the pipeline under test ----

/// Largest fixed extent and tensor/iteration size we run the interpreter on (mutations can
/// write `f32[99999]`; allocating that is slow, not wrong).
const MAX_CONST: i64 = 16;
const MAX_POINTS: u64 = 1 << 14;

/// What one input exercised.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    inputs: usize,
    checked: usize,
    runs: usize,
    ran_ok: usize,
}

/// Parses, checks and, when that succeeds, runs every kernel (at most 4) on tiny inputs.
/// Panics only if the compiler does.
fn exercise(text: &str, seed: u64) -> Stats {
    let mut stats = Stats { inputs: 1, ..Stats::default() };
    // A file that parses prints to text that parses again and prints the same.
    if let Ok(ast) = tfm_dsl::parse_file(text, FileId(0)) {
        let printed = print_file(&ast);
        match tfm_dsl::parse_file(&printed, FileId(0)) {
            Ok(again) => assert_eq!(print_file(&again), printed, "printing is not idempotent"),
            Err(d) => assert!(d.message.contains("nested too deeply"), "printed file does not parse: {}\n{printed}", d.message),
        }
    }
    let Ok(program) = tfmc::load_str("fuzz.tfm", text) else { return stats };
    stats.checked = 1;
    if !small_enough(&program) {
        return stats;
    }
    for (ki, k) in program.kernels.iter().enumerate().take(4) {
        let mut s = seed.wrapping_add(ki as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let dims: BTreeMap<String, usize> = k.free_dims().map(|d| (d.name.clone(), (next() % 3) as usize)).collect();
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
        stats.runs += 1;
        stats.ran_ok += usize::from(tfmc::interp::run(&program, &k.name, &inputs, &params).is_ok());
    }
    stats
}

/// True when no kernel has a large fixed extent or iteration space (symbolic dims count 2).
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
            .all(|e| !matches!(e, Extent::Const(c) if *c > MAX_CONST));
        let points = k.indices.iter().map(|i| size(&i.extent).max(1)).try_fold(1u64, |acc, n| acc.checked_mul(n));
        consts_ok && points.is_some_and(|p| p <= MAX_POINTS)
    })
}

// ---- tokens ----

const VOCAB: &[&str] = &[
    // keywords and types
    "kernel",
    "param",
    "reduction",
    "use",
    "index",
    "where",
    "scan",
    "init",
    "if",
    "then",
    "else",
    "true",
    "false",
    "inf",
    "identity",
    "combine",
    "let",
    "f16",
    "bf16",
    "f32",
    "f64",
    "i32",
    "i64",
    "bool",
    // punctuation and operators
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "=",
    "->",
    ".",
    "+",
    "-",
    "*",
    "/",
    "%",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "&&",
    "||",
    "!",
    // names the files use
    "Q",
    "K",
    "V",
    "O",
    "S",
    "G",
    "N",
    "D",
    "X",
    "Y",
    "T",
    "B",
    "H",
    "P",
    "M",
    "E",
    "F",
    "W",
    "b",
    "h",
    "p",
    "m",
    "e",
    "f",
    "t",
    "i",
    "j",
    "s",
    "a",
    "sum",
    "max",
    "min",
    "prod",
    "exp",
    "rsqrt",
    "abs",
    "pow",
    "lse",
    "mx",
    "l",
    // literals
    "0",
    "1",
    "2",
    "3",
    "-1",
    "0.0",
    "1.0",
    "0.5",
    "1e-6",
    "2.5e3",
    "99999999999999999999",
    "1e400",
    "-inf",
    // strings, comments, layout
    "\"nope.tfm\"",
    "\"../lib/causal.tfm\"",
    "\"\"",
    "// note\n",
    "/// doc\n",
    "\n",
];

fn vocab_token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(VOCAB)
}

/// A token of a real file with the whitespace (and comments) written before it.
#[derive(Clone, Debug)]
struct Tok {
    before: String,
    text: String,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

/// A rough lexer: names, numbers, strings, two-char operators, single chars. Comments and
/// whitespace become the `before` of the next token.
fn lex(text: &str) -> Vec<Tok> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut before = String::new();
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_whitespace() {
            before.push(c);
            i += 1;
            continue;
        }
        if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                before.push(b[i]);
                i += 1;
            }
            continue;
        }
        if is_ident_start(c) {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.' || b[i] == '_') {
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' && b[i] != '\n' {
                i += 1;
            }
            i = (i + 1).min(b.len());
        } else {
            let two: String = b[i..(i + 2).min(b.len())].iter().collect();
            i += if ["->", "==", "!=", "<=", ">=", "&&", "||"].contains(&two.as_str()) { 2 } else { 1 };
        }
        out.push(Tok { before: std::mem::take(&mut before), text: b[start..i].iter().collect() });
    }
    out
}

fn unlex(toks: &[Tok]) -> String {
    let mut s = String::new();
    for t in toks {
        s.push_str(if t.before.is_empty() { " " } else { &t.before });
        s.push_str(&t.text);
    }
    s.push('\n');
    s
}

// ---- seed files ----

use tfmc_conformance::repo_root as repo;

/// Lexed seed files: `lib/`, `tests/ok/`, `tests/check/`; those that check first.
struct Seeds {
    files: Vec<Vec<Tok>>,
    /// How many of `files` (a prefix) check without errors.
    good: usize,
}

fn seeds() -> &'static Seeds {
    static SEEDS: std::sync::OnceLock<Seeds> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for dir in ["lib", "tests/ok", "tests/check"] {
            for p in tfm_files(&repo().join(dir)) {
                let text = inline_uses(&p, &mut Vec::new());
                let toks = lex(&text);
                if tfmc::load_str("seed.tfm", &text).is_ok() {
                    good.push(toks);
                } else if !toks.is_empty() {
                    bad.push(toks);
                }
            }
        }
        assert!(!good.is_empty(), "no seed file under lib/ checks");
        let n = good.len();
        good.extend(bad);
        Seeds { files: good, good: n }
    })
}

// ---- mutations ----

/// One edit; positions are taken modulo the current length.
#[derive(Clone, Debug)]
enum Mutation {
    Delete {
        at: usize,
        len: usize,
    },
    Duplicate {
        at: usize,
        len: usize,
    },
    Swap {
        a: usize,
        b: usize,
        len: usize,
    },
    /// Replace a name by another name of the same file.
    Rename {
        at: usize,
        with: usize,
    },
    Insert {
        at: usize,
        tok: &'static str,
    },
    /// Replace a token by another of its class (operator, function, reduction, number,
    /// dtype): mostly still type-checks, so it reaches the interpreter.
    Sibling {
        at: usize,
        pick: usize,
    },
    Replace {
        at: usize,
        tok: &'static str,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let pos = any::<usize>();
    prop_oneof![
        1 => (pos, 1usize..6).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => (pos, 1usize..12).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        1 => (pos, pos, 1usize..6).prop_map(|(a, b, len)| Mutation::Swap { a, b, len }),
        3 => (pos, pos).prop_map(|(at, with)| Mutation::Rename { at, with }),
        2 => (pos, vocab_token()).prop_map(|(at, tok)| Mutation::Insert { at, tok }),
        2 => (pos, vocab_token()).prop_map(|(at, tok)| Mutation::Replace { at, tok }),
        6 => (pos, pos).prop_map(|(at, pick)| Mutation::Sibling { at, pick }),
    ]
}

const REDUCTIONS: &[&str] = &["sum", "max", "min", "prod"];
const CLASSES: &[&[&str]] = &[
    &["+", "-", "*", "/", "%"],
    &["<", "<=", ">", ">=", "==", "!="],
    &["&&", "||"],
    &[
        "exp", "exp2", "log", "log2", "log1p", "sqrt", "rsqrt", "abs", "neg", "sign", "floor", "ceil", "tanh", "sigmoid", "relu", "gelu",
        "elu", "silu", "softplus", "erf", "sin", "cos",
    ],
    &["pow", "min", "max", "atan2"],
    REDUCTIONS,
    &["0", "1", "2", "3", "-1", "0.0", "1.0", "0.5", "-2.5", "1e-6", "1e30", "inf", "-inf"],
    &["f16", "bf16", "f32", "f64", "i32", "i64", "bool"],
];

fn tok(text: &str) -> Tok {
    Tok { before: " ".to_string(), text: text.to_string() }
}

fn apply(toks: &mut Vec<Tok>, m: &Mutation) {
    let n = toks.len();
    if n == 0 {
        if let Mutation::Insert { tok: t, .. } = m {
            toks.push(tok(t));
        }
        return;
    }
    match *m {
        Mutation::Delete { at, len } => {
            let at = at % n;
            toks.drain(at..(at + len).min(n));
        }
        Mutation::Duplicate { at, len } => {
            let at = at % n;
            let span: Vec<Tok> = toks[at..(at + len).min(n)].to_vec();
            toks.splice(at..at, span);
        }
        Mutation::Swap { a, b, len } => {
            let (a, b) = ((a % n).min(b % n), (a % n).max(b % n));
            let len = len.min(b - a).min(n - b);
            for k in 0..len {
                toks.swap(a + k, b + k);
            }
        }
        Mutation::Rename { at, with } => {
            let names: Vec<usize> = (0..n).filter(|&i| toks[i].text.starts_with(|c: char| is_ident_start(c))).collect();
            if !names.is_empty() {
                let (i, j) = (names[at % names.len()], names[with % names.len()]);
                toks[i].text = toks[j].text.clone();
            }
        }
        Mutation::Insert { at, tok: t } => toks.insert(at % (n + 1), tok(t)),
        Mutation::Replace { at, tok: t } => toks[at % n].text = t.to_string(),
        Mutation::Sibling { at, pick } => {
            // Scan forward from `at` for a token that has siblings.
            for k in 0..n {
                let i = (at + k) % n;
                let reduce = toks.get(i + 1).is_some_and(|t| t.text == "[");
                if let Some(class) = CLASSES.iter().find(|c| c.contains(&toks[i].text.as_str()) && (c == &&REDUCTIONS) == reduce) {
                    toks[i].text = class[pick % class.len()].to_string();
                    break;
                }
            }
        }
    }
}

/// Mutates a seed: one that checks when `good`, any seed otherwise.
fn mutated(good: bool, file: usize, muts: &[Mutation]) -> String {
    let seeds = seeds();
    let n = if good { seeds.good } else { seeds.files.len() };
    let mut toks = seeds.files[file % n].clone();
    for m in muts {
        apply(&mut toks, m);
    }
    unlex(&toks)
}

// ---- properties ----

fn cases() -> u32 {
    std::env::var("TFMC_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1024)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), failure_persistence: None, max_shrink_iters: 4096, ..ProptestConfig::default() }
}

fn soup() -> impl Strategy<Value = String> {
    (prop::collection::vec((vocab_token(), any::<bool>()), 0..60), any::<bool>()).prop_map(|(toks, wrap)| {
        let mut s = String::new();
        if wrap {
            s.push_str("kernel k(X: f32[N], Y: f32[N, M]) -> (O: f32[N]) {\n    O[n] = ");
        }
        for (t, space) in toks {
            s.push_str(t);
            if space {
                s.push(' ');
            }
        }
        if wrap {
            s.push_str("\n}\n");
        }
        s
    })
}

/// Runs `f` on `cases()` values of `strategy` (shrinking a failure as usual) and prints how
/// many inputs checked and how many kernels ran.
fn fuzz<S: Strategy>(name: &str, strategy: S, f: impl Fn(S::Value) -> Stats)
where
    S::Value: std::fmt::Debug,
{
    let total = std::cell::Cell::new(Stats::default());
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let result = runner.run(&strategy, |v| {
        let s = f(v);
        let t = total.get();
        total.set(Stats { inputs: t.inputs + 1, checked: t.checked + s.checked, runs: t.runs + s.runs, ran_ok: t.ran_ok + s.ran_ok });
        Ok(())
    });
    let t = total.get();
    eprintln!("{name}: {} inputs, {} checked ok, {} kernel runs ({} ok)", t.inputs, t.checked, t.runs, t.ran_ok);
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// Runs `f` on a thread with a 256 MiB stack, like `tfmc::load_str` does for its own work:
/// unoptimized, the pest parser (called directly for the printer check) needs more than a
/// test thread's 2 MiB for a few dozen nested brackets.
fn on_big_stack(f: impl FnOnce() + Send + 'static) {
    let h = std::thread::Builder::new().stack_size(256 << 20).spawn(f).expect("spawn");
    if let Err(panic) = h.join() {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn token_soup_never_panics() {
    on_big_stack(|| fuzz("token soup", (soup(), any::<u64>()), |(text, seed)| exercise(&text, seed)));
}

#[test]
fn mutated_files_never_panic() {
    on_big_stack(|| {
        let muts = prop_oneof![3 => prop::collection::vec(mutation(), 1..=1), 1 => prop::collection::vec(mutation(), 2..5)];
        let strategy = (prop::bool::weighted(0.8), any::<usize>(), muts, any::<u64>());
        fuzz("mutated files", strategy, |(good, file, muts, seed)| exercise(&mutated(good, file, &muts), seed));
    });
}

/// Every seed file, unmutated, also goes through the whole pipeline.
#[test]
fn seed_files_never_panic() {
    on_big_stack(seed_files_never_panic_inner);
}

fn seed_files_never_panic_inner() {
    let (mut checked, mut runs) = (0, 0);
    for (i, toks) in seeds().files.iter().enumerate() {
        let s = exercise(&unlex(toks), i as u64);
        checked += s.checked;
        runs += s.runs;
    }
    eprintln!("seed files: {} files, {checked} check ok, {runs} kernel runs", seeds().files.len());
    assert!(checked >= 10, "the lib/ files should check after inlining their uses (and re-lexing)");
}

/// Minimized inputs that once panicked (one per file) stay fixed.
#[test]
fn fuzz_regressions_never_panic() {
    on_big_stack(fuzz_regressions_never_panic_inner);
}

fn fuzz_regressions_never_panic_inner() {
    for p in tfm_files(&repo().join("tests/fuzz_regressions")) {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        for seed in 0..8 {
            let _ = exercise(&text, seed);
        }
    }
}
