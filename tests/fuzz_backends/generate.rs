//! Random cascades as `.tfm` text, in the spirit of cranelift-fuzzgen: one kernel over the
//! indices `p: P`, `m: M`, `e: E`, `f: F` with fixed inputs (`A[p, e]`, `B[m, e]`, `C[m, f]`,
//! `X[p]`, `Y[m]` of one float dtype and an integer index `Idx[p]`), and a chain of local
//! statements, each one of: a contraction `sum[e](A[p, e] * B[m, e])`, an elementwise map
//! (arithmetic, float functions, `if`), a `max`/`min`/`sum` or user reduction (with or without a
//! `where` filter), a scan, a gather through `Idx`, a call of a helper kernel; statements may
//! carry a `where` filter (index comparisons, the param `W`, a data-dependent test). The last
//! statement and maybe one more become outputs. A text need not check (the caller drops those:
//! the generator knows the grammar, the front end knows the types).

use crate::cases::Rng;

/// A tensor the generator can read: its name and indices (a subset of `p`, `m`, `e`, `f`).
#[derive(Clone)]
struct Tensor {
    name: String,
    idx: Vec<char>,
}

/// The dim of an index.
fn dim(i: char) -> char {
    i.to_ascii_uppercase()
}

/// Whether `text` uses the index `i` (as a whole word).
fn mentions(text: &str, i: char) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').any(|w| w.len() == 1 && w.starts_with(i))
}

fn read(t: &Tensor) -> String {
    let idx: Vec<String> = t.idx.iter().map(char::to_string).collect();
    if idx.is_empty() { t.name.clone() } else { format!("{}[{}]", t.name, idx.join(", ")) }
}

const FUNCS: &[&str] = &["exp", "tanh", "sigmoid", "abs", "relu", "silu", "sqrt", "log", "softplus", "neg", "rsqrt", "elu"];
const CONSTS: &[&str] = &["0.5", "2.0", "1.0", "-1.5", "0.0", "3.0", "1e-3"];
const SHAPES: &[&[char]] = &[&['p'], &['m'], &['p', 'm'], &['p', 'm'], &['p', 'f'], &['p', 'e'], &['m', 'f'], &[]];

struct Gen {
    r: Rng,
    tensors: Vec<Tensor>,
    has_w: bool,
    has_helper: bool,
    has_amax: bool,
}

impl Gen {
    /// The readable tensors whose indices all lie in `scope`.
    fn readable(&self, scope: &[char]) -> Vec<Tensor> {
        self.tensors.iter().filter(|t| t.idx.iter().all(|i| scope.contains(i))).cloned().collect()
    }

    fn leaf(&mut self, scope: &[char]) -> String {
        let ts = self.readable(scope);
        match self.r.below(10) {
            0 => self.r.pick(CONSTS).to_string(),
            1 if scope.contains(&'p') && scope.contains(&'f') => "C[Idx[p] % M, f]".to_string(),
            2 if scope.contains(&'p') => ["Y[Idx[p] % M]", "Y[Idx[p]]", "X[(p + 1) % P]"][self.r.below(3)].to_string(),
            _ if !ts.is_empty() => read(&ts[self.r.below(ts.len())]),
            _ => self.r.pick(CONSTS).to_string(),
        }
    }

    fn expr(&mut self, scope: &[char], depth: usize) -> String {
        if depth == 0 {
            return self.leaf(scope);
        }
        match self.r.below(8) {
            0 | 1 => {
                let f = self.r.pick(FUNCS);
                format!("{f}({})", self.expr(scope, depth - 1))
            }
            2..=4 => {
                let op = self.r.pick(&["+", "-", "*", "*", "/"]);
                format!("({} {op} {})", self.expr(scope, depth - 1), self.expr(scope, depth - 1))
            }
            5 => format!("{}({}, {})", self.r.pick(&["max", "min"]), self.expr(scope, depth - 1), self.expr(scope, depth - 1)),
            6 => format!(
                "(if {} > {} then {} else {})",
                self.leaf(scope),
                self.r.pick(&["0.0", "0.5"]),
                self.expr(scope, depth - 1),
                self.leaf(scope)
            ),
            _ => self.leaf(scope),
        }
    }

    /// A filter over indices of `scope`, if it has some.
    fn filter(&mut self, scope: &[char]) -> Option<String> {
        let has = |i| scope.contains(&i);
        Some(match self.r.below(6) {
            0 | 1 if has('p') && has('m') => ["m <= p", "m < p", "m >= p"][self.r.below(3)].to_string(),
            2 if has('p') && has('m') && self.has_w => "p - m < W".to_string(),
            3 if has('p') => "X[p] > 0.0".to_string(),
            _ => {
                let i = *scope.get(self.r.below(scope.len().max(1)))?;
                [format!("{i} % 2 == 0"), format!("{i} < 3"), format!("{i} > 0")][self.r.below(3)].clone()
            }
        })
    }

    /// The right-hand side of a statement over `lhs`, and whether it is a scan.
    fn rhs(&mut self, name: &str, lhs: &[char]) -> String {
        // Indices a reduction can run over: not bound by the statement, read by some tensor.
        let free: Vec<char> = ['p', 'm', 'e', 'f']
            .into_iter()
            .filter(|i| {
                let scope: Vec<char> = lhs.iter().copied().chain([*i]).collect();
                !lhs.contains(i) && self.readable(&scope).iter().any(|t| t.idx.contains(i))
            })
            .collect();
        match self.r.below(10) {
            // A contraction over e.
            0 | 1 if lhs.contains(&'p') && lhs.contains(&'m') && !lhs.contains(&'e') => {
                let filt = if self.r.below(4) == 0 { " where e % 2 == 0" } else { "" };
                format!("sum[e{filt}](A[p, e] * B[m, e]) * {}", self.r.pick(&["rsqrt(E)", "0.5", "1.0"]))
            }
            // A reduction over an index the statement does not bind.
            2..=4 if !free.is_empty() => {
                let k = free[self.r.below(free.len())];
                let mut scope = lhs.to_vec();
                scope.push(k);
                let mut red = self.r.pick(&["sum", "max", "min", "sum"]).to_string();
                if self.has_amax && self.r.below(3) == 0 {
                    red = "amax".to_string();
                }
                let filt =
                    if self.r.below(3) == 0 { self.filter(&[k]).map(|c| format!(" where {c}")).unwrap_or_default() } else { String::new() };
                let mut body = self.expr(&scope, 2);
                if !mentions(&body, k) {
                    // The reduced index must be used: multiply by a read over it.
                    let over: Vec<Tensor> = self.readable(&scope).into_iter().filter(|t| t.idx.contains(&k)).collect();
                    let t = &over[self.r.below(over.len())];
                    body = format!("{body} * {}", read(t));
                }
                let around = self.expr(lhs, 1);
                match self.r.below(3) {
                    0 => format!("{red}[{k}{filt}]({body})"),
                    1 => format!("{red}[{k}{filt}]({body}) * {around}"),
                    _ => format!("{around} - {red}[{k}{filt}]({body})"),
                }
            }
            // A scan along an index of the statement.
            5 if lhs.iter().any(|i| matches!(i, 'p' | 'm')) => {
                let k = *lhs.iter().find(|i| matches!(i, 'p' | 'm')).unwrap_or(&'p');
                let back: Vec<String> = lhs.iter().map(|&i| if i == k { format!("{i} - 1") } else { i.to_string() }).collect();
                let c = self.r.pick(&["0.5", "0.9", "-0.5", "1.0"]);
                format!("scan[{k}, init = {}]({c} * {name}[{}] + {})", self.r.pick(&["0.0", "1.0"]), back.join(", "), self.expr(lhs, 1))
            }
            _ => {
                let depth = 1 + self.r.below(2);
                self.expr(lhs, depth)
            }
        }
    }

    fn statement(&mut self, name: &str) -> String {
        // A call of the helper on a rank-1 tensor.
        let rank1: Vec<Tensor> = self.tensors.iter().filter(|t| t.idx.len() == 1).cloned().collect();
        if self.has_helper && !rank1.is_empty() && self.r.below(6) == 0 {
            let t = rank1[self.r.below(rank1.len())].clone();
            let over = if self.has_w && self.r.below(2) == 0 { ", W = 1" } else { "" };
            self.tensors.push(Tensor { name: name.to_string(), idx: t.idx.clone() });
            return format!("    {name} = helper({}{over})", t.name);
        }
        let lhs: Vec<char> = self.r.pick(SHAPES).to_vec();
        let rhs = self.rhs(name, &lhs);
        let filt = if self.r.below(4) == 0 && !rhs.starts_with("scan") {
            self.filter(&lhs).map(|c| format!(" where {c}")).unwrap_or_default()
        } else {
            String::new()
        };
        let t = Tensor { name: name.to_string(), idx: lhs };
        let text = format!("    {}{} = {rhs}{filt}", read(&t), if t.idx.is_empty() { "[]" } else { "" });
        self.tensors.push(t);
        text
    }
}

/// A random program (text) from `seed`: params, a user reduction, a helper kernel and the
/// kernel `g` (see the module header).
pub fn program(seed: u64) -> String {
    let mut r = Rng::new(seed);
    let float = r.pick(&["f32", "f32", "f32", "f32", "f32", "f64", "f16", "bf16"]);
    let (has_w, has_helper, has_amax) = (r.below(3) == 0, r.below(3) == 0, r.below(3) == 0);
    let mut g = Gen { r, tensors: Vec::new(), has_w, has_helper, has_amax };
    let mut out = String::new();
    if has_w {
        out += &format!("param W: i64 = {}\n\n", g.r.below(4));
    }
    if has_amax {
        let (id, comb) = if g.r.below(2) == 0 { ("-inf", "max(a.x, b.x)") } else { ("0.0", "a.x + b.x") };
        out += &format!("reduction amax(x: {float}) {{\n    identity = {id}\n    combine(a, b) {{ {comb} }}\n}}\n\n");
    }
    if has_helper {
        let f = g.r.pick(FUNCS);
        let filt = if has_w { " where n < W + 2" } else { "" };
        out += &format!("kernel helper(Z: {float}[N]) -> (R: {float}[N]) {{\n    R[n] = {f}(Z[n]) * 2.0 + 1.0{filt}\n}}\n\n");
    }
    for (name, idx) in [("A", "pe"), ("B", "me"), ("C", "mf"), ("X", "p"), ("Y", "m")] {
        g.tensors.push(Tensor { name: name.to_string(), idx: idx.chars().collect() });
    }
    let n = 1 + g.r.below(5);
    let body: Vec<String> = (0..n).map(|i| g.statement(&format!("T{i}"))).collect();
    // The last local and maybe another one are outputs.
    let mut outs = vec![n - 1];
    if n > 1 && g.r.below(2) == 0 {
        outs.insert(0, g.r.below(n - 1));
    }
    let header: Vec<String> = outs
        .iter()
        .map(|&i| {
            let t = &g.tensors[5 + i];
            let dims: Vec<String> = t.idx.iter().map(|&i| dim(i).to_string()).collect();
            format!("{}: {float}[{}]", t.name, dims.join(", "))
        })
        .collect();
    // A kernel filter must restrict some statement over p and m, and no scan.
    let both = g.tensors[5..].iter().any(|t| t.idx.contains(&'p') && t.idx.contains(&'m'));
    let kfilt = if g.r.below(8) == 0 && both && !body.iter().any(|l| l.contains("scan")) { " where m <= p" } else { "" };
    out += &format!(
        "kernel g(A: {float}[P, E], B: {float}[M, E], C: {float}[M, F], X: {float}[P], Y: {float}[M], Idx: i32[P]) -> ({}){kfilt} {{\n",
        header.join(", ")
    );
    for i in ['p', 'm', 'e', 'f'] {
        if body.iter().any(|l| mentions(l, i)) {
            out += &format!("    index {i}: {}\n", dim(i));
        }
    }
    out += &(body.join("\n") + "\n}\n");
    out
}
