//! Program mutations, line-local on a rough token list: sibling swaps (arithmetic operators,
//! comparisons, reductions, functions, constants), `where` filters added to statements and
//! reductions, reads and calls wrapped in a function, indices renamed or offset, comparison
//! operands swapped. A [`Mutation`] is a proptest value whose positions are taken modulo what
//! the line holds; a mutated text need not check (the caller drops those).

use crate::seeds::Seed;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Tok {
    before: String,
    text: String,
}

fn lex(line: &str) -> Vec<Tok> {
    let b: Vec<char> = line.chars().collect();
    let (mut out, mut i, mut before) = (Vec::new(), 0, String::new());
    while i < b.len() {
        let (c, start) = (b[i], i);
        if c.is_whitespace() {
            before.push(c);
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_digit() {
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == '.' || (matches!(b[i], '-' | '+') && matches!(b[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
        } else {
            let two: String = b[i..(i + 2).min(b.len())].iter().collect();
            i += if ["->", "==", "!=", "<=", ">=", "&&", "||"].contains(&two.as_str()) { 2 } else { 1 };
        }
        out.push(Tok { before: std::mem::take(&mut before), text: b[start..i].iter().collect() });
    }
    out
}

fn unlex(toks: &[Tok]) -> String {
    toks.iter().map(|t| format!("{}{}", t.before, t.text)).collect()
}

fn tok(text: &str) -> Tok {
    Tok { before: " ".to_string(), text: text.to_string() }
}

const ARITH: &[&str] = &["+", "-", "*", "/", "%"];
const CMPS: &[&str] = &["<", "<=", ">", ">=", "==", "!="];
const REDUCTIONS: &[&str] = &["sum", "max", "min", "prod"];
const FUNCS: &[&str] = &["exp", "log", "sqrt", "rsqrt", "abs", "neg", "tanh", "sigmoid", "relu", "elu", "silu", "softplus", "sin"];
const FUNCS2: &[&str] = &["pow", "min", "max", "atan2"];
const WRAPS: &[&str] = &["exp", "tanh", "abs", "sigmoid", "neg", "log", "relu"];
const INTS: &[&str] = &["0", "1", "2", "3", "4"];
const FLOATS: &[&str] = &["0.0", "1.0", "0.5", "-2.5", "2.0", "1e-6", "1e4", "-1e4", "30.0"];

/// One edit of one line; positions are taken modulo what is there.
#[derive(Clone, Debug)]
pub struct Mutation {
    what: u8,
    line: usize,
    at: usize,
    pick: usize,
    pick2: usize,
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    (0u8..10, any::<usize>(), any::<usize>(), any::<usize>(), any::<usize>()).prop_map(|(what, line, at, pick, pick2)| Mutation {
        what,
        line,
        at,
        pick,
        pick2,
    })
}

fn is_name(t: &Tok) -> bool {
    t.text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
}

fn is_index(t: &Tok) -> bool {
    is_name(t)
        && t.text.starts_with(|c: char| c.is_ascii_lowercase())
        && !["where", "scan", "init", "if", "then", "else", "true", "false", "inf"].contains(&t.text.as_str())
        && !REDUCTIONS.contains(&t.text.as_str())
}

/// The index of the bracket closing the one at `open` (`[`/`(`), or `None`.
fn closing(toks: &[Tok], open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, t) in toks.iter().enumerate().skip(open) {
        match t.text.as_str() {
            "[" | "(" => depth += 1,
            "]" | ")" => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// For a statement `T[i, j] = ...`: the left-hand indices and the position after `=`.
fn statement(toks: &[Tok]) -> Option<(Vec<String>, usize)> {
    if toks.len() < 4 || !is_name(&toks[0]) || toks[1].text != "[" {
        return None;
    }
    let close = closing(toks, 1)?;
    (toks.get(close + 1)?.text == "=" && toks.get(close + 2).is_none_or(|t| t.text != "scan"))
        .then(|| (toks[2..close].iter().filter(|t| is_index(t)).map(|t| t.text.clone()).collect(), close + 2))
}

/// A filter over `i` (and `j`, an index or a small constant).
fn condition(i: &str, j: &str, pick: usize) -> String {
    let c = pick / 8 % 3;
    let cmp = CMPS[pick / 24 % CMPS.len()];
    match pick % 6 {
        0 | 1 => format!("{i} {cmp} {j}"),
        2 => format!("{i} {cmp} {c}"),
        3 => format!("{j} - {i} < {}", c + 1),
        4 => format!("{i} % 2 == {}", c % 2),
        _ => format!("{i} + {c} >= {j}"),
    }
}

/// Applies `m` to the line it names (among non-comment lines); false if nothing changed.
fn apply(lines: &mut [String], m: &Mutation) -> bool {
    let code: Vec<usize> = (0..lines.len()).filter(|&i| !lines[i].trim().is_empty() && !lines[i].trim_start().starts_with("//")).collect();
    if code.is_empty() {
        return false;
    }
    let li = code[m.line % code.len()];
    let mut toks = lex(&lines[li]);
    let n = toks.len();
    if n == 0 {
        return false;
    }
    let stmt = statement(&toks);
    let rhs = stmt.as_ref().map_or(0, |(_, r)| *r);
    // Positions (from `at`, cyclically) satisfying `f`.
    let find = |f: &dyn Fn(usize) -> bool| (0..n).map(|k| (m.at + k) % n).find(|&i| f(i));
    let next_is = |i: usize, s: &str| toks.get(i + 1).is_some_and(|t| t.text == s);
    match m.what {
        // Sibling swaps: arithmetic, comparison, reduction, function, constant.
        0..=3 => {
            let class = |i: usize| -> Option<&'static [&'static str]> {
                let t = toks[i].text.as_str();
                if ARITH.contains(&t) && i >= rhs.max(1) {
                    Some(ARITH)
                } else if CMPS.contains(&t) {
                    Some(CMPS)
                } else if REDUCTIONS.contains(&t) && next_is(i, "[") {
                    Some(REDUCTIONS)
                } else if FUNCS.contains(&t) && next_is(i, "(") {
                    Some(FUNCS)
                } else if FUNCS2.contains(&t) && next_is(i, "(") {
                    Some(FUNCS2)
                } else if t.starts_with(|c: char| c.is_ascii_digit()) {
                    Some(if t.contains(['.', 'e']) { FLOATS } else { INTS })
                } else {
                    None
                }
            };
            let Some(i) = find(&|i| class(i).is_some()) else { return false };
            let class = class(i).unwrap_or(ARITH);
            toks[i].text = class[m.pick % class.len()].to_string();
        }
        // A filter on the statement.
        4 => {
            let Some((lhs, _)) = &stmt else { return false };
            if lhs.is_empty() {
                return false;
            }
            let (i, j) = (&lhs[m.pick % lhs.len()], &lhs[m.pick2 % lhs.len()]);
            let cond = if m.pick2.is_multiple_of(5) {
                // A data-dependent filter: a read of the right-hand side at left-hand indices.
                let read = find(&|k| {
                    k >= rhs
                        && is_name(&toks[k])
                        && next_is(k, "[")
                        && !REDUCTIONS.contains(&toks[k].text.as_str())
                        && closing(&toks, k + 1).is_some_and(|c| toks[k + 2..c].iter().all(|t| t.text == "," || lhs.contains(&t.text)))
                });
                match read {
                    Some(k) => format!("{} > 0.0", unlex(&toks[k..=closing(&toks, k + 1).unwrap_or(k)]).trim()),
                    None => return false,
                }
            } else {
                condition(i, j, m.pick)
            };
            let has_where = toks[rhs..].iter().scan(0i32, |d, t| {
                match t.text.as_str() {
                    "[" | "(" => *d += 1,
                    "]" | ")" => *d -= 1,
                    _ => {}
                }
                Some(*d == 0 && t.text == "where")
            });
            let joiner = if has_where.into_iter().any(|w| w) { "&&" } else { "where" };
            toks.push(tok(joiner));
            toks.push(Tok { before: " ".into(), text: cond });
        }
        // A filter on a reduction: `sum[m](..)` → `sum[m where m <= p](..)`.
        5 => {
            let Some(r) = find(&|i| REDUCTIONS.contains(&toks[i].text.as_str()) && next_is(i, "[")) else { return false };
            let Some(close) = closing(&toks, r + 1) else { return false };
            let Some(bound) = toks.get(r + 2).filter(|t| is_index(t)).map(|t| t.text.clone()) else { return false };
            let others: Vec<String> = stmt.as_ref().map(|(l, _)| l.clone()).unwrap_or_default();
            let j = if others.is_empty() { (m.pick2 % 3).to_string() } else { others[m.pick2 % others.len()].clone() };
            let joiner = if toks[r..close].iter().any(|t| t.text == "where") { "&&" } else { "where" };
            let cond = Tok { before: " ".into(), text: condition(&bound, &j, m.pick) };
            toks.splice(close..close, [tok(joiner), cond]);
        }
        // Wrap a read, call or reduction of the right-hand side in a function.
        6 => {
            let Some(i) = find(&|i| i >= rhs.max(1) && is_name(&toks[i]) && (next_is(i, "[") || next_is(i, "("))) else { return false };
            let Some(mut end) = closing(&toks, i + 1) else { return false };
            if toks[i + 1].text == "[" && next_is(end, "(") {
                end = closing(&toks, end + 1).unwrap_or(end);
            }
            let f = WRAPS[m.pick % WRAPS.len()];
            toks.insert(end + 1, Tok { before: String::new(), text: ")".into() });
            let before = std::mem::take(&mut toks[i].before);
            toks.splice(i..i, [Tok { before, text: f.into() }, Tok { before: String::new(), text: "(".into() }]);
        }
        // Rename an index of the right-hand side to another index of the line.
        7 => {
            let idx: Vec<usize> = (rhs..n)
                .filter(|&i| {
                    is_index(&toks[i])
                        && !next_is(i, "(")
                        && !next_is(i, "[")
                        && !toks[i].text.starts_with(|c: char| c.is_ascii_uppercase())
                })
                .collect();
            if idx.len() < 2 {
                return false;
            }
            let (a, b) = (idx[m.at % idx.len()], idx[m.pick % idx.len()]);
            toks[a].text = toks[b].text.clone();
        }
        // Offset an index in a subscript: `K[b, h, m, e]` → `K[b, h, m + 1, e]`.
        9 => {
            let Some(i) = find(&|i| {
                i > rhs.max(1)
                    && is_index(&toks[i])
                    && matches!(toks[i - 1].text.as_str(), "[" | ",")
                    && toks.get(i + 1).is_some_and(|t| matches!(t.text.as_str(), "]" | ","))
            }) else {
                return false;
            };
            let off = [" + 1", " - 1", " + 2", " * 2"][m.pick % 4];
            toks[i].text = format!("{}{off}", toks[i].text);
        }
        // Swap the operands of a comparison whose operands are single tokens.
        _ => {
            let Some(i) =
                find(&|i| i > 0 && i + 1 < n && CMPS.contains(&toks[i].text.as_str()) && !next_is(i + 1, "[") && !next_is(i + 1, "("))
            else {
                return false;
            };
            let t = toks[i - 1].text.clone();
            toks[i - 1].text = std::mem::replace(&mut toks[i + 1].text, t);
        }
    }
    lines[li] = unlex(&toks);
    true
}

/// A seed with mutations applied.
pub fn mutated(seed: &Seed, muts: &[Mutation]) -> String {
    let mut lines: Vec<String> = seed.text.lines().map(String::from).collect();
    for m in muts {
        apply(&mut lines, m);
    }
    lines.join("\n") + "\n"
}
