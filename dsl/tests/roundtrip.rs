//! Formatter round trip: for every AST the parser can produce, `parse(print(ast))` equals `ast`
//! up to spans, and printing is idempotent. Checked on every `.tfm` file of `lib/`,
//! `tests/ok/` and `tests/check/` that parses, and on random ASTs (proptest).
//!
//! Equality "up to spans" is structural: every span is reset to the default by a visitor, then
//! the trees are compared with `==` *and* by their `Debug` text (which tells `-0.0` from `0.0`,
//! something `f64`'s `==` does not).

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use tfm_dsl::ast::*;
use tfm_dsl::print::print_file;
use tfm_dsl::{FileId, Span, parse_file};

// ---- span erasure ----

fn erase_file(f: &mut File) {
    for item in &mut f.items {
        match item {
            Item::Use(u) => u.span = Span::default(),
            Item::Param(p) => {
                erase_ident(&mut p.name);
                p.dtype_span = Span::default();
                if let Some((_, s)) = &mut p.default {
                    *s = Span::default();
                }
                p.span = Span::default();
            }
            Item::Reduction(r) => {
                erase_ident(&mut r.name);
                for fl in &mut r.fields {
                    erase_ident(&mut fl.name);
                }
                erase_expr(&mut r.identity);
                erase_ident(&mut r.operands.0);
                erase_ident(&mut r.operands.1);
                for (n, e) in &mut r.lets {
                    erase_ident(n);
                    erase_expr(e);
                }
                erase_expr(&mut r.result);
                r.span = Span::default();
            }
            Item::Kernel(k) => {
                erase_ident(&mut k.name);
                for d in k.args.iter_mut().chain(k.outputs.iter_mut()) {
                    erase_ident(&mut d.name);
                    d.dims.iter_mut().for_each(erase_dim);
                    d.span = Span::default();
                }
                if let Some(f) = &mut k.filter {
                    erase_expr(f);
                }
                k.body.iter_mut().for_each(erase_stmt);
                k.span = Span::default();
            }
        }
    }
}

fn erase_ident(id: &mut Ident) {
    id.span = Span::default();
}

fn erase_dim(d: &mut Dim) {
    match d {
        Dim::Named(id) => erase_ident(id),
        Dim::Fixed(_, s) => *s = Span::default(),
        Dim::Product(fs, s) => {
            fs.iter_mut().for_each(erase_dim);
            *s = Span::default();
        }
    }
}

fn erase_stmt(s: &mut Stmt) {
    match s {
        Stmt::Index { name, range, span } => {
            erase_ident(name);
            erase_dim(range);
            *span = Span::default();
        }
        Stmt::Assign(a) => {
            for l in &mut a.lhs {
                erase_ident(&mut l.tensor);
                l.indices.iter_mut().for_each(erase_ident);
                l.span = Span::default();
            }
            match &mut a.rhs {
                Rhs::Expr(e) => erase_expr(e),
                Rhs::Scan { index, init, body, span } => {
                    erase_ident(index);
                    erase_expr(init);
                    erase_expr(body);
                    *span = Span::default();
                }
            }
            if let Some(f) = &mut a.filter {
                erase_expr(f);
            }
            a.span = Span::default();
        }
        Stmt::Call(c) => {
            c.outputs.iter_mut().for_each(erase_ident);
            erase_ident(&mut c.callee);
            c.args.iter_mut().for_each(erase_ident);
            for (n, e) in &mut c.params {
                erase_ident(n);
                erase_expr(e);
            }
            c.span = Span::default();
        }
    }
}

fn erase_expr(e: &mut Expr) {
    e.span = Span::default();
    match &mut e.kind {
        ExprKind::Lit(_) => {}
        ExprKind::Name(id) => erase_ident(id),
        ExprKind::Access { tensor, subs } => {
            erase_ident(tensor);
            subs.iter_mut().for_each(erase_expr);
        }
        ExprKind::Field { base, field } => {
            erase_expr(base);
            erase_ident(field);
        }
        ExprKind::Call { func, args } => {
            erase_ident(func);
            args.iter_mut().for_each(erase_expr);
        }
        ExprKind::Cast { arg, .. } => erase_expr(arg),
        ExprKind::Reduce { op, indices, filter, body } => {
            erase_ident(op);
            indices.iter_mut().for_each(erase_ident);
            if let Some(f) = filter {
                erase_expr(f);
            }
            body.iter_mut().for_each(erase_expr);
        }
        ExprKind::Unary(_, x) => erase_expr(x),
        ExprKind::Binary(_, a, b) => {
            erase_expr(a);
            erase_expr(b);
        }
        ExprKind::If(c, a, b) => {
            erase_expr(c);
            erase_expr(a);
            erase_expr(b);
        }
        ExprKind::Tuple(es) => es.iter_mut().for_each(erase_expr),
    }
}

fn erased(f: &File) -> File {
    let mut f = f.clone();
    erase_file(&mut f);
    f
}

/// Checks the round trip of one AST; `Err` describes the first difference.
fn round_trip(ast: &File) -> Result<(), String> {
    let text = print_file(ast);
    let again = parse_file(&text, FileId(0)).map_err(|d| format!("printed text does not parse: {}\n--- printed ---\n{text}", d.message))?;
    let (a, b) = (erased(ast), erased(&again));
    if a != b || format!("{a:?}") != format!("{b:?}") {
        let reprinted = print_file(&again);
        return Err(format!(
            "AST changed\n--- printed ---\n{text}--- re-printed ---\n{reprinted}--- before ---\n{a:?}\n--- after ---\n{b:?}"
        ));
    }
    let text2 = print_file(&again);
    if text2 != text {
        return Err(format!("printing is not idempotent\n--- first ---\n{text}\n--- second ---\n{text2}"));
    }
    Ok(())
}

// ---- files of the repository ----

fn tfm_files(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let mut out: Vec<PathBuf> =
        std::fs::read_dir(&root).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    out.retain(|p| p.extension().is_some_and(|x| x == "tfm"));
    out.sort();
    out
}

/// Runs `f` on a thread with a 256 MiB stack: unoptimized, the pest parser needs far more
/// than a test thread's 2 MiB for a few dozen nested brackets (`tfmc::load*` does the same).
fn on_big_stack(f: impl FnOnce() + Send + 'static) {
    let h = std::thread::Builder::new().stack_size(256 << 20).spawn(f).expect("spawn");
    if let Err(panic) = h.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Deep `else if` chains and long operator chains are diagnosed, never a stack overflow
/// (pest recurses per nested `if`; a deep tree would also overflow when dropped).
#[test]
fn deep_input_is_rejected_not_crashed() {
    on_big_stack(|| {
        let kernel = |e: &str| format!("kernel k(X: f32[N]) -> (O: f32[N]) {{\n    O[n] = {e}\n}}\n");
        let ok = [
            format!("{}X[n]", "if X[n] > 0.0 then 1.0 else ".repeat(200)),
            format!("{}X[n]{}", "if ".repeat(120), " then 1.0 else 2.0".repeat(120)),
            format!("{}X[n]", "-".repeat(200)),
        ];
        for e in &ok {
            let ast = parse_file(&kernel(e), FileId(0)).unwrap_or_else(|d| panic!("{}", d.message));
            round_trip(&ast).unwrap_or_else(|e| panic!("{e}"));
        }
        let deep = [
            format!("{}X[n]", "if X[n] > 0.0 then 1.0 else ".repeat(3_000)),
            format!("{}X[n]{}", "if ".repeat(3_000), " then 1.0 else 2.0".repeat(3_000)),
            format!("{}X[n]", "-".repeat(5_000)),
            format!("{}X[n]", "!".repeat(5_000)),
            format!("X[n]{}", " + X[n]".repeat(5_000)),
            format!("{}X[n]{}", "(".repeat(3_000), ")".repeat(3_000)),
        ];
        for e in &deep {
            let err = parse_file(&kernel(e), FileId(0)).expect_err("too deep");
            assert!(err.message.contains("nested too deeply"), "{}", err.message);
        }
    });
}

#[test]
fn repository_files_round_trip() {
    on_big_stack(repository_files_round_trip_inner);
}

fn repository_files_round_trip_inner() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for dir in ["lib", "tests/ok", "tests/check", "tests/fuzz_regressions"] {
        for path in tfm_files(dir) {
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            // Files meant to fail parsing (syntax-error goldens) are skipped.
            let Ok(ast) = parse_file(&text, FileId(0)) else { continue };
            checked += 1;
            if let Err(e) = round_trip(&ast) {
                failures.push(format!("{}: {e}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(checked >= 10, "expected the lib/ files at least, found {checked}");
}

#[test]
fn lib_sdpa_prints_canonically() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../lib/sdpa.tfm")).unwrap();
    let printed = print_file(&parse_file(&text, FileId(0)).unwrap());
    let expected = "\
/// Scaled dot-product attention, written as the 3-pass cascade:
/// O = softmax(Q Kᵀ / sqrt(E)) V, with the row max G subtracted before exp.
kernel sdpa(Q: f32[B, H, P, E], K: f32[B, H, M, E], V: f32[B, H, M, F]) -> (O: f32[B, H, P, F]) {
    S[b, h, p, m] = sum[e](Q[b, h, p, e] * K[b, h, m, e]) * rsqrt(E)
    G[b, h, p] = max[m](S[b, h, p, m])
    N[b, h, p, m] = exp(S[b, h, p, m] - G[b, h, p])
    D[b, h, p] = sum[m](N[b, h, p, m])
    O[b, h, p, f] = sum[m](N[b, h, p, m] * V[b, h, m, f]) / D[b, h, p]
}
";
    assert_eq!(printed, expected);
}

/// Hand-picked corners of precedence, literals and statement separation.
#[test]
fn tricky_expressions_round_trip() {
    let src = r#"
param a: f32 = -0.0
param b: f64 = 1e300
param c: i64 = -9223372036854775807
param g: i64 = -9223372036854775808
param d: f32 = -inf
param e: f32 = 0.000001
param f: bool = false
reduction r(x: f32, y: i32) {
    identity = (-inf, -1)
    combine(p, q) {
        let m = p.x
        let n = (q)
        (m, n.y)
    }
}
kernel k(X: f32[N, 3]) -> O: f32[] where !(a < b) == (c > d) {
    index i: 7
    O[] = a - (b - c) - -1 * -(x) + (if u then v else w) * --y * -9223372036854775808 where (1).x + (-2).y > (a.b).c
    T[i] = if if a then b else c then (if d then e else f) else if g then h else i
    U[i], V[i] = r[j, k where j < k && (k < 2 || k > 3)](X[j, 0] / (X[k, 1] % 2), (1, 2).x)
    W[i] = scan[i, init = -(a + b)](W[i - 1] * !true - -false)
    P, Q = call(X, Y, n = 1 + 2, m = f32(x))
    Z[i] = f(g(), h(1, 2), i64(-1.5)) - ((a == b) != c) / (a * b) * c
}
"#;
    let ast = parse_file(src, FileId(0)).unwrap_or_else(|d| panic!("{}", d.message));
    round_trip(&ast).unwrap_or_else(|e| panic!("{e}"));
    // A `let` whose value ends in a name or `]`, followed by a tuple result: printed without
    // parentheses the tuple would become call (`p(m, q.y)`) or reduction arguments.
    let src2 = "reduction r(x: f32, y: f32) {\n identity = (0.0, 0.0)\n combine(p, q) {\n let m = (p)\n (m, q.y)\n }\n}\n";
    round_trip(&parse_file(src2, FileId(0)).unwrap()).unwrap_or_else(|e| panic!("{e}"));
    let src3 = "reduction r(x: f32, y: f32) {\n identity = (0.0, 0.0)\n combine(p, q) {\n let m = (X[i])\n (m, q.y)\n }\n}\n";
    round_trip(&parse_file(src3, FileId(0)).unwrap()).unwrap_or_else(|e| panic!("{e}"));
}

/// Names that start with a keyword (`where_x`, `if_`, `index2`, `scanner`, `letter`) are
/// names, also where the keyword's construct could start (found by the random round trip).
#[test]
fn keyword_prefixed_names_parse() {
    let src = "kernel k(X: f32[N]) -> (O: f32[N]) {
    index2[n] = X[n]
    where_x[n] = index2[n]
    scanner[n] = where_x[n] where n > 0
    letter[n] = if if_ then scanner[n] else 0.0
    O[n] = letter[n]
}
reduction r(x: f32) {
    identity = 0.0
    combine(a, b) {
        let m = a.x
        letter + m
    }
}
";
    let ast = parse_file(src, FileId(0)).unwrap_or_else(|d| panic!("{}", d.message));
    round_trip(&ast).unwrap_or_else(|e| panic!("{e}"));
}

// ---- random ASTs ----

/// Cases per property: 512, or `PROPTEST_CASES` for a longer run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(512)
}

const KEYWORDS: &[&str] = &[
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
];

fn sp() -> Span {
    Span::default()
}

fn ident() -> impl Strategy<Value = Ident> {
    prop_oneof![
        3 => prop::sample::select(vec!["a", "b", "x", "m", "p", "S", "X", "sum", "max", "if_", "inf1", "index2", "_", "e1"])
            .prop_map(str::to_string),
        1 => "[A-Za-z_][A-Za-z0-9_]{0,5}".prop_filter("not a keyword", |s| !KEYWORDS.contains(&s.as_str())),
    ]
    .prop_map(|name| Ident { name, span: sp() })
}

fn idents(min: usize, max: usize) -> impl Strategy<Value = Vec<Ident>> {
    prop::collection::vec(ident(), min..=max)
}

fn dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(vec![DType::F16, DType::BF16, DType::F32, DType::F64, DType::I32, DType::I64, DType::Bool])
}

fn lit() -> impl Strategy<Value = Lit> {
    prop_oneof![
        any::<i64>().prop_map(Lit::Int),
        (-3i64..10).prop_map(Lit::Int),
        any::<f64>().prop_filter("no NaN literal", |f| !f.is_nan()).prop_map(Lit::Float),
        prop::sample::select(vec![0.0, -0.0, 1.0, 0.5, 1e-6, 2.5e3, f64::INFINITY, f64::NEG_INFINITY, 5e-324]).prop_map(Lit::Float),
        any::<bool>().prop_map(Lit::Bool),
    ]
}

fn mk(kind: ExprKind) -> Expr {
    Expr { kind, span: sp() }
}

fn binop() -> impl Strategy<Value = BinOp> {
    use BinOp::*;
    prop::sample::select(vec![Add, Sub, Mul, Div, Rem, Eq, Ne, Lt, Le, Gt, Ge, And, Or])
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![lit().prop_map(|l| mk(ExprKind::Lit(l))), ident().prop_map(|i| mk(ExprKind::Name(i)))];
    leaf.prop_recursive(5, 48, 4, |inner| {
        let list = |min, max| prop::collection::vec(inner.clone(), min..=max);
        prop_oneof![
            1 => (ident(), list(0, 3)).prop_map(|(tensor, subs)| mk(ExprKind::Access { tensor, subs })),
            1 => (inner.clone(), ident()).prop_map(|(b, field)| mk(ExprKind::Field { base: Box::new(b), field })),
            1 => (ident(), list(0, 3)).prop_map(|(func, args)| mk(ExprKind::Call { func, args })),
            1 => (dtype(), inner.clone()).prop_map(|(dtype, a)| mk(ExprKind::Cast { dtype, arg: Box::new(a) })),
            1 => (ident(), idents(1, 3), prop::option::of(inner.clone()), list(1, 3)).prop_map(|(op, indices, f, body)| {
                mk(ExprKind::Reduce { op, indices, filter: f.map(Box::new), body })
            }),
            // The parser folds `-<number literal>` into the literal: never build that.
            1 => (any::<bool>(), inner.clone())
                .prop_filter("folded negation", |(neg, x)| {
                    !(*neg && matches!(x.kind, ExprKind::Lit(Lit::Int(_) | Lit::Float(_))))
                })
                .prop_map(|(neg, x)| mk(ExprKind::Unary(if neg { UnOp::Neg } else { UnOp::Not }, Box::new(x)))),
            3 => (binop(), inner.clone(), inner.clone())
                .prop_map(|(op, a, b)| mk(ExprKind::Binary(op, Box::new(a), Box::new(b)))),
            1 => (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| mk(ExprKind::If(Box::new(c), Box::new(a), Box::new(b)))),
            1 => list(2, 3).prop_map(|es| mk(ExprKind::Tuple(es))),
        ]
    })
}

fn dim_factor() -> impl Strategy<Value = Dim> {
    prop_oneof![ident().prop_map(Dim::Named), (0i64..1000).prop_map(|n| Dim::Fixed(n, sp()))]
}

fn dim() -> impl Strategy<Value = Dim> {
    prop_oneof![
        3 => dim_factor(),
        1 => prop::collection::vec(dim_factor(), 2..=3).prop_map(|fs| Dim::Product(fs, sp())),
    ]
}

fn docs() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[ -~]{0,12}".prop_map(|s| s.trim_end().to_string()), 0..=2)
}

fn tensor_decl() -> impl Strategy<Value = TensorDecl> {
    (ident(), dtype(), prop::collection::vec(dim(), 0..=3)).prop_map(|(name, dtype, dims)| TensorDecl { name, dtype, dims, span: sp() })
}

fn stmt() -> impl Strategy<Value = Stmt> {
    let lhs = (ident(), idents(0, 3)).prop_map(|(tensor, indices)| Lhs { tensor, indices, span: sp() });
    let rhs = prop_oneof![
        3 => expr().prop_map(Rhs::Expr),
        1 => (ident(), expr(), expr()).prop_map(|(index, init, body)| Rhs::Scan { index, init, body, span: sp() }),
    ];
    prop_oneof![
        1 => (ident(), dim()).prop_map(|(name, range)| Stmt::Index { name, range, span: sp() }),
        3 => (prop::collection::vec(lhs, 1..=2), rhs, prop::option::of(expr()))
            .prop_map(|(lhs, rhs, filter)| Stmt::Assign(Assign { lhs, rhs, filter, span: sp() })),
        1 => (idents(1, 2), ident(), idents(0, 2), prop::collection::vec((ident(), expr()), 0..=2))
            .prop_map(|(outputs, callee, args, params)| Stmt::Call(Call { outputs, callee, args, params, span: sp() })),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    let field = (ident(), dtype()).prop_map(|(name, dtype)| Field { name, dtype });
    prop_oneof![
        1 => "[a-z/._]{0,10}".prop_map(|path| Item::Use(UseItem { path, span: sp() })),
        1 => (docs(), ident(), dtype(), prop::option::of(lit())).prop_map(|(docs, name, dtype, d)| {
            Item::Param(ParamItem { docs, name, dtype, dtype_span: sp(), default: d.map(|l| (l, sp())), span: sp() })
        }),
        1 => (
            docs(),
            ident(),
            prop::collection::vec(field, 1..=3),
            expr(),
            (ident(), ident()),
            prop::collection::vec((ident(), expr()), 0..=3),
            expr()
        )
            .prop_map(|(docs, name, fields, identity, operands, lets, result)| {
                Item::Reduction(ReductionItem { docs, name, fields, identity, operands, lets, result, span: sp() })
            }),
        3 => (
            docs(),
            ident(),
            prop::collection::vec(tensor_decl(), 0..=3),
            prop::collection::vec(tensor_decl(), 1..=2),
            prop::option::of(expr()),
            prop::collection::vec(stmt(), 0..=6)
        )
            .prop_map(|(docs, name, args, outputs, filter, body)| {
                Item::Kernel(KernelItem { docs, name, args, outputs, filter, body, span: sp() })
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_expressions_round_trip(e in expr()) {
        let ast = File { items: vec![Item::Kernel(KernelItem {
            docs: vec![],
            name: Ident { name: "k".into(), span: sp() },
            args: vec![],
            outputs: vec![TensorDecl { name: Ident { name: "O".into(), span: sp() }, dtype: DType::F32, dims: vec![], span: sp() }],
            filter: None,
            body: vec![Stmt::Assign(Assign {
                lhs: vec![Lhs { tensor: Ident { name: "O".into(), span: sp() }, indices: vec![], span: sp() }],
                rhs: Rhs::Expr(e),
                filter: None,
                span: sp(),
            })],
            span: sp(),
        })] };
        if let Err(msg) = round_trip(&ast) {
            prop_assert!(false, "{}", msg);
        }
    }

    #[test]
    fn random_files_round_trip(items in prop::collection::vec(item(), 0..=4)) {
        if let Err(msg) = round_trip(&File { items }) {
            prop_assert!(false, "{}", msg);
        }
    }
}
