//! Reading the IR's text form (what [`super::print::print_cascade`] writes) back into a
//! [`Cascade`], so golden IR dumps, hand-written verifier tests and rewrite tests can start
//! from text.
//!
//! ```text
//! cascade NAME
//!   dims D1 D2 ..
//!   product D1*D2 = D1 * D2                     (zero or more)
//!   range i: D1, j: 4, ..
//!   input X: f32[D1, D2]                       (or input#k when X is argument k out of order)
//!   local T[i, j]: f32[D1, D2] = SEXPR          (or output / output#k)
//!   output C[t]: f32[T] = scan t init SEXPR body SEXPR
//! ```
//!
//! Blank lines are skipped and indentation is free. Node roles are numbered by appearance
//! unless written `#k`. The text's node order is kept as the cascade's `order` (not
//! re-sorted), so a text that reads a tensor before defining it parses and then fails
//! [`super::verify::verify`] instead of being silently repaired; graph edges come from
//! [`Cascade::relink`]. The parser checks syntax only: names, scopes and shapes are the
//! verifier's business.

use super::lang::Tfm;
use super::{Cascade, Def, Node, ProductDim, Role, Size};
use egg::RecExpr;
use petgraph::graph::DiGraph;
use std::str::FromStr;
use tfm_dsl::ast::DType;

/// A line of the text form that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

/// Parses the text form of one cascade.
pub fn parse_cascade(text: &str) -> Result<Cascade, ParseError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty()).peekable();
    let header = |lines: &mut dyn Iterator<Item = (usize, &str)>, keyword: &str| -> Result<(usize, String), ParseError> {
        let Some((line, l)) = lines.next() else {
            return Err(ParseError {
                line: text.lines().count().max(1),
                what: format!("expected a `{keyword}` line, found the end of the text"),
            });
        };
        match l.strip_prefix(keyword) {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => Ok((line, rest.trim().to_string())),
            _ => Err(ParseError { line, what: format!("expected `{keyword} ...`, found `{l}`") }),
        }
    };
    let (line, name) = header(&mut lines, "cascade")?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(ParseError { line, what: format!("expected `cascade NAME`, found `cascade {name}`") });
    }
    let (_, dims) = header(&mut lines, "dims")?;
    let dims: Vec<String> = dims.split_whitespace().map(str::to_string).collect();
    let mut products = Vec::new();
    while let Some((line, rest)) = lines.next_if(|(_, l)| l.starts_with("product ")).map(|(n, l)| (n, &l["product ".len()..])) {
        products.push(parse_product(rest).map_err(|what| ParseError { line, what })?);
    }
    let (line, ranges) = header(&mut lines, "range")?;
    let ranges = parse_ranges(&ranges).map_err(|what| ParseError { line, what })?;
    let mut graph = DiGraph::new();
    let mut order = Vec::new();
    let (mut inputs, mut outputs) = (0, 0);
    for (line, l) in lines {
        let node = parse_node(l, &mut inputs, &mut outputs).map_err(|what| ParseError { line, what })?;
        order.push(graph.add_node(node));
    }
    let mut c = Cascade { name, dims, products, ranges, graph, order: order.clone() };
    c.relink();
    // Keep the text's order: a read before its definition is the verifier's to report.
    c.order = order;
    Ok(c)
}

fn parse_ranges(s: &str) -> Result<Vec<(String, Size)>, String> {
    let mut out = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    for part in s.split(',') {
        let Some((name, size)) = part.split_once(':') else {
            return Err(format!("expected `index: SIZE` in the range list, found `{}`", part.trim()));
        };
        out.push((word(name, "index name")?, parse_size(size)?));
    }
    Ok(out)
}

/// `s` trimmed, which must be one non-empty word.
fn word(s: &str, what: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "[](),:=".contains(c)) {
        return Err(format!("expected {what}, found `{s}`"));
    }
    Ok(s.to_string())
}

fn parse_size(s: &str) -> Result<Size, String> {
    let s = word(s, "a size (a dimension name or a number)")?;
    Ok(match s.parse::<i64>() {
        Ok(n) => Size::Fixed(n),
        // A product dim's name may start with its literal factor (`2*C`).
        Err(_) if s.starts_with(|c: char| c.is_ascii_digit() || c == '-') && !s.contains('*') => return Err(format!("bad size `{s}`")),
        Err(_) => Size::Dim(s),
    })
}

/// `input`, `output`, `local`, optionally `#k`, into a role (`seen_*` count appearances).
fn parse_role(s: &str, inputs: &mut usize, outputs: &mut usize) -> Result<Role, String> {
    let (word, num) = match s.split_once('#') {
        Some((w, k)) => (w, Some(k.parse::<usize>().map_err(|_| format!("bad role number in `{s}`"))?)),
        None => (s, None),
    };
    let next = |seen: &mut usize| {
        let i = num.unwrap_or(*seen);
        *seen += 1;
        i
    };
    match word {
        "input" => Ok(Role::Input(next(inputs))),
        "output" => Ok(Role::Output(next(outputs))),
        "local" if num.is_none() => Ok(Role::Local),
        _ => Err(format!("expected `input`, `local` or `output` to start a tensor line, found `{s}`")),
    }
}

fn parse_node(l: &str, inputs: &mut usize, outputs: &mut usize) -> Result<Node, String> {
    let (role, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
    let role = parse_role(role, inputs, outputs)?;
    let rest = rest.trim_start();
    if let Role::Input(_) = role {
        let (name, ty) = rest.split_once(':').ok_or_else(|| format!("expected `input NAME: DTYPE[SIZES]`, found `{l}`"))?;
        let (dtype, shape) = parse_type(ty.trim())?;
        return Ok(Node { name: word(name, "a tensor name")?, dtype, shape, indices: Vec::new(), role, def: Def::Input });
    }
    let shape_err = || format!("expected `NAME[INDICES]: DTYPE[SIZES] = DEFINITION`, found `{l}`");
    let (name, rest) = rest.split_once('[').ok_or_else(shape_err)?;
    let (indices, rest) = rest.split_once(']').ok_or_else(shape_err)?;
    let rest = rest.trim_start().strip_prefix(':').ok_or_else(shape_err)?;
    let (ty, def) = rest.split_once('=').ok_or_else(shape_err)?;
    let (dtype, shape) = parse_type(ty.trim())?;
    let indices = list(indices, "an index name")?;
    let def = def.trim();
    let def = match def.strip_prefix("scan") {
        Some(s) if s.starts_with(char::is_whitespace) => parse_scan(s)?,
        _ => Def::Expr(expr(def)?),
    };
    Ok(Node { name: word(name, "a tensor name")?, dtype, shape, indices, role, def })
}

/// A comma-separated list of words (empty when blank).
fn list(s: &str, what: &str) -> Result<Vec<String>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(|x| word(x, what)).collect()
}

/// `f32[B, 4]`.
fn parse_type(s: &str) -> Result<(DType, Vec<Size>), String> {
    let err = || format!("expected a type like `f32[B, H]`, found `{s}`");
    let (dt, rest) = s.split_once('[').ok_or_else(err)?;
    let sizes = rest.strip_suffix(']').ok_or_else(err)?;
    let dtype = DType::parse(dt.trim()).ok_or_else(|| format!("unknown dtype `{}`", dt.trim()))?;
    let shape = if sizes.trim().is_empty() { Vec::new() } else { sizes.split(',').map(parse_size).collect::<Result<_, _>>()? };
    Ok((dtype, shape))
}

/// After `scan`: `I init SEXPR body SEXPR`.
fn parse_scan(s: &str) -> Result<Def, String> {
    let s = s.trim_start();
    let (index, rest) = s.split_once(char::is_whitespace).ok_or("expected `scan INDEX init EXPR body EXPR`")?;
    let rest = rest.trim_start().strip_prefix("init").ok_or("expected `init` after the scan index")?.trim_start();
    let end = term_end(rest)?;
    let (init, rest) = rest.split_at(end);
    let body = rest.trim_start().strip_prefix("body").ok_or("expected `body` after the scan's init expression")?;
    Ok(Def::Scan { index: word(index, "a scan index")?, init: expr(init)?, body: expr(body)? })
}

/// Byte length of the first s-expression term of `s`: a balanced list (quoted atoms inside
/// may hold parentheses), a quoted atom, or a bare atom (up to whitespace or a parenthesis).
fn term_end(s: &str) -> Result<usize, String> {
    match s.chars().next() {
        None => Err("expected an expression".into()),
        Some('(') => {
            let (mut depth, mut quoted) = (0usize, false);
            for (i, ch) in s.char_indices() {
                match ch {
                    '"' => quoted = !quoted,
                    _ if quoted => {}
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(i + 1);
                        }
                    }
                    _ => {}
                }
            }
            Err("unclosed `(` in expression".into())
        }
        Some('"') => s[1..].find('"').map(|i| i + 2).ok_or_else(|| "unclosed `\"` in expression".into()),
        Some(')') => Err("unbalanced `)` in expression".into()),
        Some(_) => Ok(s.find(|c: char| c.is_whitespace() || c == '(' || c == ')').unwrap_or(s.len())),
    }
}

/// Exactly one s-expression.
fn expr(s: &str) -> Result<RecExpr<Tfm>, String> {
    let s = s.trim();
    let end = term_end(s)?;
    if !s[end..].trim().is_empty() {
        return Err(format!("unexpected `{}` after the expression", s[end..].trim()));
    }
    let e: RecExpr<Tfm> = RecExpr::from_str(s).map_err(|e| format!("bad expression `{s}`: {e}"))?;
    // `relink` reads the tensor name of every `read`; everything else is the verifier's.
    if e.as_ref().iter().any(|n| matches!(n, Tfm::Read(c) if c.is_empty())) {
        return Err(format!("`read` needs a tensor name in `{s}`"));
    }
    Ok(e)
}

/// `NAME = [SCALE *] F1 * F2 ...`.
fn parse_product(text: &str) -> Result<ProductDim, String> {
    let bad = || format!("expected `product NAME = F1 * F2`, found `product {text}`");
    let (name, formula) = text.split_once('=').ok_or_else(bad)?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(bad());
    }
    let mut scale: i64 = 1;
    let mut factors = Vec::new();
    for f in formula.split('*').map(str::trim) {
        if f.is_empty() || f.contains(char::is_whitespace) {
            return Err(bad());
        }
        match f.parse::<i64>() {
            Ok(n) => scale = scale.checked_mul(n).ok_or_else(bad)?,
            Err(_) => factors.push(f.to_string()),
        }
    }
    Ok(ProductDim { name: name.to_string(), factors, scale })
}
