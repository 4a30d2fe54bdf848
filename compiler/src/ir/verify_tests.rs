//! Text-form round trips over every `lib/` and `tests/ok/` kernel, bit-exact constants, parse
//! errors, and verifier negative tests: broken cascades made by editing the text form, each
//! rejected with a message naming the offending tensor.

use super::lang::{Const, Tfm};
use super::parse::parse_cascade;
use super::{Cascade, Def, lower::lower, print::print_cascade, verify::verify};
use egg::{Id, Language, RecExpr};
use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

/// Every kernel of every `.tfm` file in `lib/` and `tests/ok/`, lowered and verified.
fn all_cascades() -> Vec<(String, Cascade)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for dir in ["lib", "tests/ok"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .expect("directory exists")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "tfm"))
            .collect();
        files.sort();
        for f in files {
            let program = crate::load(&f).unwrap_or_else(|d| panic!("{} checks: {d}", f.display()));
            for k in &program.kernels {
                let c = lower(&program, &k.name).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                verify(&c).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                out.push((format!("{}:{}", f.display(), k.name), c));
            }
        }
    }
    out
}

/// The same term (operators, leaves, children), regardless of node numbering or sharing.
fn same_tree(a: &RecExpr<Tfm>, ia: Id, b: &RecExpr<Tfm>, ib: Id) -> bool {
    let (x, y) = (&a[ia], &b[ib]);
    x.matches(y) && x.children().len() == y.children().len() && x.children().iter().zip(y.children()).all(|(p, q)| same_tree(a, *p, b, *q))
}

fn same_expr(a: &RecExpr<Tfm>, b: &RecExpr<Tfm>) -> bool {
    let root = |e: &RecExpr<Tfm>| Id::from(e.as_ref().len() - 1);
    !a.as_ref().is_empty() && !b.as_ref().is_empty() && same_tree(a, root(a), b, root(b))
}

fn same_def(a: &Def, b: &Def) -> bool {
    match (a, b) {
        (Def::Input, Def::Input) => true,
        (Def::Expr(x), Def::Expr(y)) => same_expr(x, y),
        (Def::Scan { index: i, init: a0, body: a1 }, Def::Scan { index: j, init: b0, body: b1 }) => {
            i == j && same_expr(a0, b0) && same_expr(a1, b1)
        }
        _ => false,
    }
}

fn edges(c: &Cascade) -> BTreeSet<(String, String)> {
    c.graph
        .edge_indices()
        .filter_map(|e| c.graph.edge_endpoints(e))
        .map(|(a, b)| (c.graph[a].name.clone(), c.graph[b].name.clone()))
        .collect()
}

/// Structural equality of two cascades, node by node in order.
fn assert_same(what: &str, a: &Cascade, b: &Cascade) {
    assert_eq!((&a.name, &a.dims, &a.ranges), (&b.name, &b.dims, &b.ranges), "{what}: header");
    assert_eq!(a.order.len(), b.order.len(), "{what}: node count");
    for (&ia, &ib) in a.order.iter().zip(&b.order) {
        let (x, y) = (&a.graph[ia], &b.graph[ib]);
        assert_eq!((&x.name, x.dtype, &x.shape, &x.indices, x.role), (&y.name, y.dtype, &y.shape, &y.indices, y.role), "{what}");
        assert!(same_def(&x.def, &y.def), "{what}: definition of '{}' differs", x.name);
    }
    assert_eq!(edges(a), edges(b), "{what}: edges");
}

#[test]
fn print_then_parse_round_trips_every_kernel() {
    let all = all_cascades();
    assert!(all.len() >= 30, "expected lib/ and tests/ok/, found {} kernels", all.len());
    for (what, c) in &all {
        let text = print_cascade(c);
        let back = parse_cascade(&text).unwrap_or_else(|e| panic!("{what}: {e}\n{text}"));
        assert_eq!(print_cascade(&back), text, "{what}");
        assert_same(what, c, &back);
        verify(&back).unwrap_or_else(|e| panic!("{what}: parsed cascade fails to verify: {e}"));
    }
}

#[test]
fn outputs_defined_out_of_order_keep_their_numbers() {
    let text = "cascade k\n  dims N\n  range n: N\n  input X: f32[N]\n  output#1 B[n]: f32[N] = (read X (idx n))\n  output#0 A[n]: f32[N] = (read B (idx n))\n";
    let c = parse_cascade(text).expect("parses");
    verify(&c).expect("verifies");
    assert_eq!(c.outputs().iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["A", "B"]);
    assert_eq!(print_cascade(&c), text);
}

#[test]
fn constants_print_and_parse_bit_exactly() {
    let floats = [
        1e-6,
        0.1,
        -0.0,
        0.0,
        1.0,
        -8.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e300,
        5e-324,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        1.0 / 3.0,
        9007199254740993.0,
        1e22,
        123456789012345680.0,
        f64::EPSILON,
        0.30000000000000004,
        -1e-300,
    ];
    let nans = [f64::NAN, -f64::NAN, f64::from_bits(0x7ff0_0000_0000_0001), f64::from_bits(0xfff8_0000_0000_00ff)];
    let mut consts: Vec<Const> = floats.iter().chain(&nans).map(|x| Const::float(*x)).collect();
    consts.extend([i64::MIN, i64::MAX, 0, -1, (1 << 53) + 1].map(Const::Int));
    consts.extend([Const::Bool(true), Const::Bool(false)]);
    for k in consts {
        let text = k.to_string();
        assert_eq!(Const::from_str(&text), Ok(k), "{k:?} printed as `{text}`");
        // Inside an expression and inside a whole cascade.
        let e: RecExpr<Tfm> = format!("(+ {text} (read X (idx n)))").parse().expect("parses");
        assert_eq!(e.to_string().parse::<RecExpr<Tfm>>().expect("reparses"), e, "{text}");
        let c = format!("cascade k\n  dims N\n  range n: N\n  input X: f32[N]\n  output Y[n]: f32[N] = scan n init {text} body {e}\n");
        let back = parse_cascade(&c).unwrap_or_else(|err| panic!("{err}\n{c}"));
        assert_eq!(print_cascade(&back), c);
        let Def::Scan { init, .. } = &back.node("Y").expect("Y").def else { panic!("a scan") };
        assert_eq!(init.as_ref(), [Tfm::Const(k)], "{text}");
    }
    assert_eq!(Const::from_str("-0.0"), Ok(Const::Float((-0.0f64).to_bits())));
    assert_eq!(Const::float(1e-6).to_string(), "1e-6");
    assert_eq!(Const::float(f64::NAN).to_string(), "nan");
}

const SDPA: &str = "cascade sdpa
  dims B H P E M F
  range b: B, h: H, p: P, m: M, e: E, f: F
  input Q: f32[B, H, P, E]
  input K: f32[B, H, M, E]
  input V: f32[B, H, M, F]
  local S[b, h, p, m]: f32[B, H, P, M] = (* (sum e 0 (dim E) true (* (read Q (idx b) (idx h) (idx p) (idx e)) (read K (idx b) (idx h) (idx m) (idx e)))) (call rsqrt (cast f32 (dim E))))
  local G[b, h, p]: f32[B, H, P] = (max m 0 (dim M) true (read S (idx b) (idx h) (idx p) (idx m)))
  local N[b, h, p, m]: f32[B, H, P, M] = (call exp (- (read S (idx b) (idx h) (idx p) (idx m)) (read G (idx b) (idx h) (idx p))))
  local D[b, h, p]: f32[B, H, P] = (sum m 0 (dim M) true (read N (idx b) (idx h) (idx p) (idx m)))
  output O[b, h, p, f]: f32[B, H, P, F] = (/ (sum m 0 (dim M) true (* (read N (idx b) (idx h) (idx p) (idx m)) (read V (idx b) (idx h) (idx m) (idx f)))) (read D (idx b) (idx h) (idx p)))
";

const SCAN: &str = "cascade linear_causal_scan
  dims B H T E F
  range b: B, h: H, t: T, e: E, f: F
  input K: f32[B, H, T, E]
  input V: f32[B, H, T, F]
  local Skv[b, h, t, e, f]: f32[B, H, T, E, F] = scan t init 0.0 body (+ (prev Skv 1) (* (read K (idx b) (idx h) (idx t) (idx e)) (read V (idx b) (idx h) (idx t) (idx f))))
  local Z[b, h, t, e]: f32[B, H, T, E] = scan t init 0.0 body (+ (prev Z 1) (read K (idx b) (idx h) (idx t) (idx e)))
  output O[b, h, t, f]: f32[B, H, T, F] = (sum e 0 (dim E) true (/ (read Skv (idx b) (idx h) (idx t) (idx e) (idx f)) (read Z (idx b) (idx h) (idx t) (idx e))))
";

const RED: &str = "cascade stats
  dims P M
  range p: P, m: M
  input S: f32[P, M]
  output L[p]: f32[P] = (ured lse 1 m 0 (dim M) true (read S (idx p) (idx m)) 1.0)
  output A[p]: f32[P] = (osm m 0 (dim M) true (read S (idx p) (idx m)) (read S (idx p) (idx m)))
";

/// `base` with `from` replaced by `to` on the line that starts with `line` (trimmed).
fn edit(base: &str, line: &str, from: &str, to: &str) -> String {
    let mut hit = false;
    let out: Vec<String> = base
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(line) && l.contains(from) && !hit {
                hit = true;
                l.replacen(from, to, 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(hit, "no line starting `{line}` contains `{from}`");
    out.join("\n") + "\n"
}

/// Parses `text` (which must parse) and expects `verify` to reject tensor `node` with a
/// message containing `msg`.
fn rejects(text: &str, node: &str, msg: &str) {
    let c = parse_cascade(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let err = verify(&c).err().unwrap_or_else(|| panic!("verifier accepted a broken cascade:\n{text}"));
    let shown = err.to_string();
    assert_eq!(err.node, node, "{shown}");
    assert!(shown.contains(&format!("tensor '{node}'")) && shown.contains(msg), "expected `{msg}` about '{node}', got: {shown}");
}

#[test]
fn the_unedited_test_cascades_verify() {
    for text in [SDPA, SCAN, RED] {
        let c = parse_cascade(text).expect("parses");
        verify(&c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(print_cascade(&c), text);
    }
}

#[test]
fn verifier_rejects_bad_reads() {
    rejects(&edit(SDPA, "local N[", "(read G ", "(read Gz "), "N", "reads unknown tensor 'Gz'");
    // G and N swapped: N reads G before G is defined.
    let lines: Vec<&str> = SDPA.lines().collect();
    let (g, n) =
        (lines.iter().position(|l| l.contains("local G[")).expect("G"), lines.iter().position(|l| l.contains("local N[")).expect("N"));
    let mut swapped = lines.clone();
    swapped.swap(g, n);
    rejects(&(swapped.join("\n") + "\n"), "N", "reads 'G' before it is defined");
    rejects(
        &edit(SDPA, "output O[", "(read D (idx b) (idx h) (idx p))", "(read D (idx b) (idx h))"),
        "O",
        "reads 'D' with 2 subscripts, it has 3 dimensions",
    );
    rejects(
        &edit(SDPA, "output O[", "(read D (idx b) (idx h) (idx p))", "(read D (idx b) (idx h) (idx p) (idx p))"),
        "O",
        "with 4 subscripts",
    );
    rejects(&edit(SDPA, "output O[", "(read D (idx b) (idx h) (idx p))", "(read 3 (idx b))"), "O", "`read` needs a tensor name");
    rejects(&edit(SDPA, "local D[", "(read N ", "(read D "), "D", "reads 'D' before it is defined");
}

#[test]
fn verifier_rejects_unbound_indices_and_unknown_dims() {
    rejects(&edit(SDPA, "local G[", "(idx p)", "(idx q)"), "G", "index 'q' is not bound here");
    // `m` is bound only inside the reductions over m.
    rejects(
        &edit(SDPA, "output O[", "(read D (idx b) (idx h) (idx p))", "(read D (idx b) (idx h) (idx m))"),
        "O",
        "index 'm' is not bound here",
    );
    // A reduction's bounds are outside its own scope.
    rejects(&edit(SDPA, "local G[", "(max m 0 (dim M)", "(max m 0 (idx m)"), "G", "index 'm' is not bound here");
    rejects(&edit(SDPA, "local S[", "(dim E)", "(dim Q9)"), "S", "unknown dimension 'Q9'");
    rejects(&edit(SDPA, "local G[", "f32[B, H, P]", "f32[B, H, Z]"), "G", "unknown dimension 'Z'");
    rejects(&edit(SDPA, "local G[", "f32[B, H, P]", "f32[B, H, M]"), "G", "left-hand index 'p' ranges over P but dimension 2 is M");
    rejects(&edit(SDPA, "local G[", "G[b, h, p]", "G[b, h, x]"), "G", "left-hand index 'x' has no range");
    rejects(&edit(SDPA, "local G[", "G[b, h, p]", "G[b, h]"), "G", "2 indices for 3 dimensions");
    rejects(&edit(SDPA, "local G[", "(max m ", "(max zz "), "G", "over index 'zz', which has no range");
}

#[test]
fn verifier_rejects_prev_outside_its_scan() {
    rejects(&edit(SCAN, "local Z[", "(prev Z 1)", "(prev Skv 1)"), "Z", "`prev` of 'Skv' outside its scan's body");
    rejects(&edit(SCAN, "local Z[", "init 0.0", "init (prev Z 1)"), "Z", "`prev` of 'Z' outside its scan's body");
    rejects(&edit(SCAN, "output O[", "(read Z (idx b) (idx h) (idx t) (idx e))", "(prev O 1)"), "O", "`prev` of 'O' outside");
    rejects(&edit(SCAN, "local Z[", "(prev Z 1)", "(prev Z 0)"), "Z", "constant look-back >= 1");
    rejects(&edit(SCAN, "local Z[", "scan t ", "scan f "), "Z", "scan index 'f' is not a left-hand index");
}

#[test]
fn verifier_rejects_duplicates_and_bad_roles() {
    rejects(&edit(SDPA, "local D[", "D[b, h, p]", "N[b, h, p]"), "N", "defined twice");
    rejects(&edit(SDPA, "output O[", "output O", "output#2 O"), "", "outputs are not numbered 0..1: there is output 2 but no output 0");
    rejects(&edit(SDPA, "input V:", "input V", "input#0 V"), "V", "input number 0 is taken by another tensor");
}

#[test]
fn verifier_checks_operands_of_every_operator() {
    // `where` / `if` children are values, checked in scope.
    rejects(
        &edit(SDPA, "local N[", "(read G (idx b) (idx h) (idx p))", "(where (< (idx z) 1) (read G (idx b) (idx h) (idx p)))"),
        "N",
        "index 'z' is not bound",
    );
    rejects(
        &edit(SDPA, "local S[", "(call rsqrt (cast f32 (dim E)))", "(if true zz 1.0)"),
        "S",
        "bare name 'zz' where a value is expected",
    );
    rejects(&edit(SDPA, "local S[", "(call rsqrt (cast f32 (dim E)))", "(where (idx b) (idx y))"), "S", "index 'y' is not bound");
    rejects(&edit(SDPA, "local S[", "(call rsqrt ", "(call rsqrtt "), "S", "call of unknown function 'rsqrtt'");
    rejects(&edit(SDPA, "local S[", "(call rsqrt (cast f32 (dim E)))", "(call pow 2.0)"), "S", "`pow` takes 2 arguments, given 1");
    rejects(&edit(SDPA, "local S[", "(cast f32 ", "(cast f31 "), "S", "cast to unknown dtype 'f31'");
    // ured: name, field, binder, bounds, filter, at least one body.
    rejects(&edit(RED, "output L[", " (read S (idx p) (idx m)) 1.0)", ")"), "L", "`ured` needs at least 7 operands, has 6");
    rejects(&edit(RED, "output L[", "(ured lse 1 ", "(ured 7 1 "), "L", "`ured` needs a reduction name");
    rejects(&edit(RED, "output L[", "(ured lse 1 ", "(ured lse x "), "L", "`ured` needs a field number");
    rejects(&edit(RED, "output L[", "1.0)", "(idx q))"), "L", "index 'q' is not bound");
    rejects(&edit(RED, "output L[", "true", "(< (idx m) (idx w))"), "L", "index 'w' is not bound");
    // osm: binder and both bodies.
    rejects(&edit(RED, "output A[", "(osm m ", "(osm 0 "), "A", "`osm` needs an index name to reduce over");
    rejects(&edit(RED, "output A[", "(idx m)))", "(idx k)))"), "A", "index 'k' is not bound");
    rejects(&edit(RED, "output A[", "(osm m 0 (dim M)", "(osm m 0 (dim X)"), "A", "unknown dimension 'X'");
}

#[test]
fn verifier_rejects_a_read_without_operands() {
    // The parser refuses `(read)` (relink needs a tensor name); a pass could still build one.
    let e = parse_cascade(&edit(SDPA, "output O[", "(read D (idx b) (idx h) (idx p))", "(read)")).expect_err("parser refuses");
    assert!(e.to_string().contains("`read` needs a tensor name"), "{e}");
    let mut c = parse_cascade(SDPA).expect("parses");
    let o = c.order[c.order.len() - 1];
    let mut bad = RecExpr::default();
    bad.add(Tfm::Read(Vec::new().into_boxed_slice()));
    c.graph[o].def = Def::Expr(bad);
    c.graph.clear_edges();
    let e = verify(&c).expect_err("empty read");
    assert_eq!(e.node, "O", "{e}");
    assert!(e.to_string().contains("`read` needs at least 1 operand, has 0"), "{e}");
}

#[test]
fn verifier_rejects_stale_graph_and_order() {
    let mut c = parse_cascade(SDPA).expect("parses");
    let (q, o) = (c.order[0], c.order[c.order.len() - 1]);
    c.graph.add_edge(q, o, ());
    let e = verify(&c).expect_err("extra edge");
    assert_eq!(e.node, "O", "{e}");
    assert!(e.to_string().contains("run relink"), "{e}");
    let mut c = parse_cascade(SDPA).expect("parses");
    c.order.pop();
    let e = verify(&c).expect_err("short order");
    assert!(e.to_string().contains("order lists 7 entries"), "{e}");
    let mut c = parse_cascade(SDPA).expect("parses");
    let first = c.order[0];
    *c.order.last_mut().expect("non-empty") = first;
    let e = verify(&c).expect_err("repeated node");
    assert!(e.to_string().contains("(7 distinct) for 8 nodes"), "{e}");
}

#[test]
fn parse_errors_name_the_line() {
    let cases: [(&str, usize, &str); 10] = [
        ("", 1, "expected a `cascade` line"),
        ("kernel k\n", 1, "expected `cascade ...`"),
        ("cascade k\n  dims N\n", 2, "expected a `range` line"),
        ("cascade k\n  dims N\n  range n N\n", 3, "expected `index: SIZE`"),
        ("cascade k\n  dims N\n  range n: N\n\n  locale X[n]: f32[N] = 1.0\n", 5, "expected `input`, `local` or `output`"),
        ("cascade k\n  dims N\n  range n: N\n  local X[n]: f32[N] 1.0\n", 4, "expected `NAME[INDICES]: DTYPE[SIZES] = DEFINITION`"),
        ("cascade k\n  dims N\n  range n: N\n  local X[n]: f33[N] = 1.0\n", 4, "unknown dtype `f33`"),
        ("cascade k\n  dims N\n  range n: N\n  local X[n]: f32[N] = (+ 1.0 2.0) 3.0\n", 4, "unexpected `3.0` after the expression"),
        ("cascade k\n  dims N\n  range n: N\n  local X[n]: f32[N] = (+ 1.0 (idx n)\n", 4, "unclosed `(`"),
        ("cascade k\n  dims N\n  range n: N\n  local X[n]: f32[N] = scan n init (+ 1.0 2.0) bod 0.0\n", 4, "expected `body`"),
    ];
    for (text, line, msg) in cases {
        let e = parse_cascade(text).err().unwrap_or_else(|| panic!("accepted:\n{text}"));
        assert_eq!(e.line, line, "{e}\n{text}");
        assert!(e.to_string().contains(msg), "expected `{msg}`, got: {e}");
    }
    let e = parse_cascade("cascade k\n  dims N\n  range n: N\n  local X[n]: f32[N] = (+ 1.0)\n").expect_err("bad arity");
    assert!(e.to_string().starts_with("line 4: bad expression `(+ 1.0)`"), "{e}");
}

#[test]
fn scan_init_may_be_an_atom_or_a_list() {
    for init in ["0.0", "-inf", "(read A (idx b))", "(+ (read A (idx b)) \"%\")"] {
        let text = format!(
            "cascade k\n  dims B T\n  range b: B, t: T\n  input A: f32[B]\n  output Y[b, t]: f32[B, T] = scan t init {init} body (+ (prev Y 1) 1.0)\n"
        );
        let c = parse_cascade(&text).unwrap_or_else(|e| panic!("{e}"));
        let Def::Scan { init: i, .. } = &c.node("Y").expect("Y").def else { panic!("scan") };
        assert_eq!(i.to_string(), init);
    }
}
