//! Parsing: `.tfm` text → [`ast::File`], via the pest grammar in `tfm.pest`.
//!
//! Invariants: never panics on any input (pest's tree shape is guaranteed by the grammar;
//! every `expect`/`unwrap` here is on a child the grammar rule requires). Syntax errors become
//! one [`Diagnostic`] with the position and what was expected, in words.

use crate::ast::*;
use crate::diagnostic::Diagnostic;
use crate::span::{FileId, Span};
use pest::Parser as _;
use pest::iterators::Pair;

#[derive(pest_derive::Parser)]
#[grammar = "src/tfm.pest"]
struct TfmParser;

type P<'a> = Pair<'a, Rule>;

/// Parser results box their diagnostic: it is large and errors are rare.
type PResult<T> = Result<T, Box<Diagnostic>>;

/// Bracket nesting deeper than this is rejected before parsing (no stack overflow).
pub const MAX_DEPTH: usize = 100;

/// Expression trees deeper than this (operators, calls, brackets together) are rejected
/// after parsing, so later recursive passes stay within their stack.
pub const MAX_EXPR_DEPTH: usize = 256;

/// Parses one file's text. `file` is the id the spans will carry.
#[allow(clippy::result_large_err)] // the public API hands out the diagnostic itself
pub fn parse_file(text: &str, file: FileId) -> Result<File, Diagnostic> {
    parse_file_boxed(text, file).map_err(|d| *d)
}

fn parse_file_boxed(text: &str, file: FileId) -> PResult<File> {
    if let Some(deep) = too_deep(text) {
        let (pos, hint) = match deep {
            TooDeep::Brackets(pos) => (pos, format!("at most {MAX_DEPTH} levels of brackets are allowed")),
            TooDeep::Ifs(pos) => (pos, format!("at most {MAX_EXPR_DEPTH} levels of brackets and nested `if`s are allowed")),
        };
        let end = if text[pos..].starts_with("if") { pos + 2 } else { pos + 1 };
        let span = Span::new(file, pos, end);
        return Err(Box::new(
            Diagnostic::error("expression nested too deeply", span, "nesting limit reached here")
                .with_hint(format!("{hint}; split the expression into several statements")),
        ));
    }
    // Track token attempts so syntax errors point at the missing `]`, `=`, `)` (cheap for
    // files of this size; it only records the furthest position).
    pest::set_error_detail(true);
    let mut pairs = TfmParser::parse(Rule::file, text).map_err(|e| syntax_error(e, file, text))?;
    // The `file` rule always produces exactly one pair.
    let root = pairs.next().expect("file rule yields one pair");
    let b = Builder { file };
    let mut items = Vec::new();
    for p in root.into_inner() {
        if p.as_rule() == Rule::item {
            items.push(b.item(p)?);
        }
    }
    let f = File { items };
    crate::depth::check_depth(&f, MAX_EXPR_DEPTH).map_err(Box::new)?;
    Ok(f)
}

/// Why the text is too deeply nested to hand to pest, which recurses once per bracket and
/// once per nested `if` (an `else if` chain has no brackets).
enum TooDeep {
    /// More than [`MAX_DEPTH`] open brackets.
    Brackets(usize),
    /// More than [`MAX_EXPR_DEPTH`] open brackets and `if`s together.
    Ifs(usize),
}

/// The first place nested too deeply, if any. Brackets and `if`s in comments and string
/// literals do not count. An `if` stays open until the bracket around it closes or, at its
/// own bracket level, until a `,`, a lone `=` or a `where` (which no expression contains):
/// an upper bound of the real nesting, since the else-branch runs to the end of the
/// expression.
fn too_deep(text: &str) -> Option<TooDeep> {
    let b = text.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    // Open `if`s per open bracket (index 0: outside all brackets) and their total.
    let mut ifs: Vec<usize> = vec![0];
    let mut open_ifs = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let at = i;
        i += 1;
        match c {
            b'/' if b.get(i) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += 1;
                }
                i += 1;
            }
            b'(' | b'[' | b'{' => {
                ifs.push(0);
                if ifs.len() - 1 > MAX_DEPTH {
                    return Some(TooDeep::Brackets(at));
                }
            }
            b')' | b']' | b'}' if ifs.len() > 1 => open_ifs -= ifs.pop().unwrap_or(0),
            b',' => open_ifs -= std::mem::take(ifs.last_mut().expect("level 0 is never popped")),
            b'=' if !matches!(b.get(i), Some(b'=')) && (at == 0 || !b"=!<>".contains(&b[at - 1])) => {
                open_ifs -= std::mem::take(ifs.last_mut().expect("level 0 is never popped"));
            }
            _ if is_ident(c) && (at == 0 || !is_ident(b[at - 1])) => {
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                match &b[at..i] {
                    b"if" => {
                        *ifs.last_mut().expect("level 0 is never popped") += 1;
                        open_ifs += 1;
                        if ifs.len() - 1 + open_ifs > MAX_EXPR_DEPTH {
                            return Some(TooDeep::Ifs(at));
                        }
                    }
                    b"where" => open_ifs -= std::mem::take(ifs.last_mut().expect("level 0 is never popped")),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    None
}

/// An operator chain longer than [`MAX_EXPR_DEPTH`] (`a + a + ...`, `- - ... x`): it would
/// make a tree deeper than the limit that `depth::check_depth` enforces.
fn too_long(span: Span) -> Box<Diagnostic> {
    Box::new(Diagnostic::error("expression nested too deeply", span, "nesting limit reached here").with_hint(format!(
        "at most {MAX_EXPR_DEPTH} levels of operators, calls and brackets are allowed; split the expression into several statements"
    )))
}

fn rule_name(r: &Rule) -> Option<&'static str> {
    Some(match r {
        Rule::ident => "a name",
        Rule::int_lit => "an integer",
        Rule::float_lit => "a number",
        Rule::string => "a quoted path",
        Rule::dtype => "a type (f16, bf16, f32, f64, i32, i64, bool)",
        Rule::item | Rule::kernel_item | Rule::param_item | Rule::reduction_item | Rule::use_item => {
            "an item (`kernel`, `param`, `reduction`, `use`)"
        }
        Rule::stmt | Rule::assign_stmt | Rule::call_stmt | Rule::index_decl | Rule::lhs => "a statement",
        Rule::expr | Rule::atom | Rule::unary | Rule::postfix | Rule::if_expr | Rule::or_expr => "an expression",
        Rule::cmp_op => "a comparison",
        Rule::add_op | Rule::mul_op | Rule::or_op | Rule::and_op => "an operator",
        Rule::EOI => "end of file",
        Rule::where_clause => "`where`",
        Rule::dim => "a dimension",
        Rule::tensor_decl | Rule::tensor_decls => "a tensor declaration `NAME: f32[DIMS]`",
        Rule::outputs => "outputs `(NAME: f32[DIMS])`",
        Rule::literal => "a literal",
        Rule::identity_clause => "`identity = ...`",
        Rule::combine_clause => "`combine(a, b) { ... }`",
        Rule::let_stmt => "`let`",
        Rule::field | Rule::field_list => "a field `name: type`",
        Rule::call_args | Rule::call_arg | Rule::named_arg => "an argument",
        Rule::doc_line | Rule::docs => return None,
        _ => return None,
    })
}

fn syntax_error(e: pest::error::Error<Rule>, file: FileId, text: &str) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let mut pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let mut expected: Vec<String> = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.iter().filter_map(rule_name).map(str::to_string).collect(),
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    // pest reports the furthest *rule* attempt; literal tokens (`]`, `=`, `)`) reach further.
    // Prefer the furthest position any token was tried at, with the tokens tried there.
    if let Some(att) = e.parse_attempts() {
        let tokens: Vec<String> = att
            .expected_tokens()
            .into_iter()
            .map(|t| t.to_string())
            // Keep structural punctuation only: operators are covered by the rule names ("an
            // operator"), and keyword tokens come from `!keyword` look-aheads, not expectations.
            .filter(|t| PUNCTUATION.contains(&t.as_str()))
            .map(|t| format!("`{t}`"))
            .collect();
        if att.max_position > pos && !tokens.is_empty() {
            pos = att.max_position;
            expected = tokens;
        } else if att.max_position == pos {
            expected.extend(tokens);
        }
    }
    expected.sort_unstable();
    expected.dedup();
    // Point at the next token, past whitespace and comments.
    let pos = skip_trivia(text, pos.min(text.len()));
    let found_tok: String = text[pos..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    let found = match text[pos..].chars().next() {
        None => "end of file".to_string(),
        // Never echo a NUL, a control or an invisible character raw: name its code point.
        Some(c) if found_tok.is_empty() && crate::diagnostic::is_invisible(c) => format!("character U+{:04X}", u32::from(c)),
        Some(c) if found_tok.is_empty() => format!("`{c}`"),
        Some(_) => format!("`{found_tok}`"),
    };
    let len = if found_tok.is_empty() { text[pos..].chars().next().map_or(0, char::len_utf8) } else { found_tok.len() };
    let span = Span::new(file, pos, pos + len);
    let refs: Vec<&str> = expected.iter().map(String::as_str).collect();
    let label = if refs.is_empty() { "unexpected here".to_string() } else { format!("expected {}", join_or(&refs)) };
    let mut d = Diagnostic::error(format!("syntax error: unexpected {found}"), span, label);
    if (found == "`=`" || found == "`(`") && expected.iter().any(|x| x == "a statement") {
        d = d.with_hint("a definition is `T[i, j] = expr` (scalars: `T[] = expr`); a call is `O = kernel(A, B)`");
    }
    if found == "`<`" || found == "`>`" || text[pos..].starts_with("==") || text[pos..].starts_with("!=") {
        d = d.with_hint("comparisons do not chain: write `a < b && b < c`");
    }
    if found == "end of file" && expected.iter().any(|x| x == "`}`") {
        d = d.with_hint("a `{` is not closed");
    }
    d
}

/// Tokens worth naming in "expected ..." labels.
const PUNCTUATION: [&str; 11] = ["]", ")", "}", "[", "(", "{", "=", ",", "->", ":", "where"];

/// The first position at or after `pos` that is not whitespace or inside a `//` comment.
fn skip_trivia(text: &str, mut pos: usize) -> usize {
    loop {
        let rest = &text[pos..];
        let trimmed = rest.trim_start();
        pos += rest.len() - trimmed.len();
        if trimmed.starts_with("//") {
            pos += trimmed.find('\n').unwrap_or(trimmed.len());
        } else {
            return pos;
        }
    }
}

fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

struct Builder {
    file: FileId,
}

impl Builder {
    fn span(&self, p: &P) -> Span {
        let s = p.as_span();
        Span::new(self.file, s.start(), s.end())
    }

    fn ident(&self, p: P) -> Ident {
        Ident { name: p.as_str().to_string(), span: self.span(&p) }
    }

    fn docs(&self, p: P) -> Vec<String> {
        p.into_inner()
            .map(|d| {
                let s = d.as_str().trim_start_matches("///");
                s.strip_prefix(' ').unwrap_or(s).trim_end().to_string()
            })
            .collect()
    }

    fn item(&self, p: P) -> PResult<Item> {
        let mut inner = p.into_inner();
        let first = inner.next().expect("item has a child");
        if first.as_rule() == Rule::use_item {
            let s = first.into_inner().next().expect("use has a string");
            let raw = s.as_str();
            return Ok(Item::Use(UseItem { path: raw[1..raw.len() - 1].to_string(), span: self.span(&s) }));
        }
        let docs = self.docs(first);
        let body = inner.next().expect("item has a body after docs");
        Ok(match body.as_rule() {
            Rule::param_item => Item::Param(self.param(body, docs)?),
            Rule::reduction_item => Item::Reduction(self.reduction(body, docs)?),
            _ => Item::Kernel(self.kernel(body, docs)?),
        })
    }

    fn param(&self, p: P, docs: Vec<String>) -> PResult<ParamItem> {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let name = self.ident(it.next().expect("param name"));
        let dt = it.next().expect("param type");
        let dtype_span = self.span(&dt);
        let dtype = DType::parse(dt.as_str()).expect("grammar only admits dtypes");
        let default = match it.next() {
            Some(l) => Some((self.literal(l.clone())?, self.span(&l))),
            None => None,
        };
        Ok(ParamItem { docs, name, dtype, dtype_span, default, span })
    }

    fn literal(&self, p: P) -> PResult<Lit> {
        let span = self.span(&p);
        let mut negative = false;
        let mut value = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::neg => negative = true,
                _ => value = Some(self.lit_atom(c, negative)?),
            }
        }
        let v = value.expect("literal has a value");
        if negative && matches!(v, Lit::Bool(_)) {
            return Err(Box::new(Diagnostic::error("cannot negate a boolean literal", span, "`-` applied to a boolean")));
        }
        Ok(v)
    }

    /// The integer token a `postfix` consists of, if it is one (`7`, not `(7)` or `x.f`).
    fn int_token<'i>(postfix: &P<'i>) -> Option<P<'i>> {
        let mut it = postfix.clone().into_inner();
        let atom = it.next()?;
        if it.next().is_some() || atom.as_rule() != Rule::atom {
            return None;
        }
        atom.into_inner().next().filter(|t| t.as_rule() == Rule::int_lit)
    }

    /// A literal token, negated when a `-` applies to it (so `-9223372036854775808`,
    /// `i64::MIN`, is a literal although its magnitude alone does not fit in i64). A boolean
    /// is returned as is: the caller reports its negation.
    fn lit_atom(&self, p: P, negated: bool) -> PResult<Lit> {
        let span = self.span(&p);
        let sign = if negated { -1.0 } else { 1.0 };
        Ok(match p.as_rule() {
            Rule::int_lit => {
                let digits = p.as_str();
                let parsed = if negated { format!("-{digits}").parse::<i64>() } else { digits.parse::<i64>() };
                Lit::Int(parsed.map_err(|_| {
                    Diagnostic::error("integer literal out of range", span, "does not fit in i64")
                        .with_hint("integers are 64-bit signed; write a float literal (`1e30`) for large values")
                })?)
            }
            Rule::float_lit => {
                let x = p.as_str().parse::<f64>().map_err(|_| Diagnostic::error("malformed float literal", span, "not a number"))?;
                if x.is_infinite() {
                    return Err(Box::new(
                        Diagnostic::error("float literal out of range", span, "larger than any f64")
                            .with_hint("the largest finite f64 is about 1.8e308; write `inf` for infinity"),
                    ));
                }
                Lit::Float(sign * x)
            }
            Rule::inf_lit => Lit::Float(sign * f64::INFINITY),
            Rule::true_lit => Lit::Bool(true),
            _ => Lit::Bool(false),
        })
    }

    fn reduction(&self, p: P, docs: Vec<String>) -> PResult<ReductionItem> {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let name = self.ident(it.next().expect("reduction name"));
        let fields = it
            .next()
            .expect("field list")
            .into_inner()
            .map(|f| {
                let mut fi = f.into_inner();
                let name = self.ident(fi.next().expect("field name"));
                let dtype = DType::parse(fi.next().expect("field type").as_str()).expect("dtype");
                Field { name, dtype }
            })
            .collect();
        let identity = self.expr(it.next().expect("identity").into_inner().next().expect("identity expr"))?;
        let mut comb = it.next().expect("combine").into_inner();
        let a = self.ident(comb.next().expect("operand a"));
        let b = self.ident(comb.next().expect("operand b"));
        let mut lets = Vec::new();
        let mut result = None;
        for c in comb {
            if c.as_rule() == Rule::let_stmt {
                let mut li = c.into_inner();
                let n = self.ident(li.next().expect("let name"));
                let e = self.expr(li.next().expect("let value"))?;
                lets.push((n, e));
            } else {
                result = Some(self.expr(c)?);
            }
        }
        let result = result.expect("combine ends with an expression");
        Ok(ReductionItem { docs, name, fields, identity, operands: (a, b), lets, result, span })
    }

    fn tensor_decl(&self, p: P) -> TensorDecl {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let name = self.ident(it.next().expect("tensor name"));
        let dtype = DType::parse(it.next().expect("tensor dtype").as_str()).expect("dtype");
        let dims = it.map(|d| self.dim(d)).collect();
        TensorDecl { name, dtype, dims, span }
    }

    fn dim(&self, p: P) -> Dim {
        let span = self.span(&p);
        let mut factors: Vec<Dim> = p
            .into_inner()
            .map(|c| {
                let span = self.span(&c);
                match c.as_rule() {
                    Rule::ident => Dim::Named(self.ident(c)),
                    // An over-long literal becomes -1 and is reported by the checker as a bad size.
                    _ => Dim::Fixed(c.as_str().parse().unwrap_or(-1), span),
                }
            })
            .collect();
        // The grammar gives at least one factor.
        if factors.len() == 1 { factors.pop().expect("one factor") } else { Dim::Product(factors, span) }
    }

    fn kernel(&self, p: P, docs: Vec<String>) -> PResult<KernelItem> {
        let span = self.span(&p);
        let mut name = None;
        let mut args = Vec::new();
        let mut outputs = Vec::new();
        let mut filter = None;
        let mut body = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::ident => name = Some(self.ident(c)),
                Rule::tensor_decls => args = c.into_inner().map(|d| self.tensor_decl(d)).collect(),
                Rule::outputs => {
                    let o = c.into_inner().next().expect("outputs child");
                    outputs = match o.as_rule() {
                        Rule::tensor_decls => o.into_inner().map(|d| self.tensor_decl(d)).collect(),
                        _ => vec![self.tensor_decl(o)],
                    };
                }
                Rule::where_clause => filter = Some(self.where_clause(c)?),
                _ => body.push(self.stmt(c)?),
            }
        }
        let name = name.expect("kernel name");
        Ok(KernelItem { docs, name, args, outputs, filter, body, span })
    }

    fn where_clause(&self, p: P) -> PResult<Expr> {
        self.expr(p.into_inner().next().expect("where expr"))
    }

    fn stmt(&self, p: P) -> PResult<Stmt> {
        let c = p.into_inner().next().expect("stmt child");
        let span = self.span(&c);
        match c.as_rule() {
            Rule::index_decl => {
                let mut it = c.into_inner();
                let name = self.ident(it.next().expect("index name"));
                let range = self.dim(it.next().expect("index range"));
                Ok(Stmt::Index { name, range, span })
            }
            Rule::call_stmt => {
                let mut idents = Vec::new();
                let mut args = Vec::new();
                let mut params = Vec::new();
                for x in c.into_inner() {
                    match x.as_rule() {
                        Rule::ident => idents.push(self.ident(x)),
                        _ => {
                            for a in x.into_inner() {
                                let a = a.into_inner().next().expect("call arg child");
                                if a.as_rule() == Rule::named_arg {
                                    let mut ni = a.into_inner();
                                    let n = self.ident(ni.next().expect("named arg name"));
                                    let e = self.expr(ni.next().expect("named arg value"))?;
                                    params.push((n, e));
                                } else {
                                    args.push(self.ident(a));
                                }
                            }
                        }
                    }
                }
                // The grammar guarantees at least one output and a callee.
                let callee = idents.pop().expect("callee");
                Ok(Stmt::Call(Call { outputs: idents, callee, args, params, span }))
            }
            _ => {
                let mut lhs = Vec::new();
                let mut rhs = None;
                let mut filter = None;
                for x in c.into_inner() {
                    match x.as_rule() {
                        Rule::lhs => {
                            let lspan = self.span(&x);
                            let mut li = x.into_inner();
                            let tensor = self.ident(li.next().expect("lhs tensor"));
                            let indices = li.map(|i| self.ident(i)).collect();
                            lhs.push(Lhs { tensor, indices, span: lspan });
                        }
                        Rule::scan_expr => {
                            let sspan = self.span(&x);
                            let mut si = x.into_inner();
                            let index = self.ident(si.next().expect("scan index"));
                            let init = self.expr(si.next().expect("scan init"))?;
                            let body = self.expr(si.next().expect("scan body"))?;
                            rhs = Some(Rhs::Scan { index, init, body, span: sspan });
                        }
                        Rule::where_clause => filter = Some(self.where_clause(x)?),
                        _ => rhs = Some(Rhs::Expr(self.expr(x)?)),
                    }
                }
                let rhs = rhs.expect("assignment has a right-hand side");
                Ok(Stmt::Assign(Assign { lhs, rhs, filter, span }))
            }
        }
    }

    fn expr(&self, p: P) -> PResult<Expr> {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::expr => self.expr(p.into_inner().next().expect("expr child")),
            Rule::if_expr => {
                let mut it = p.into_inner();
                let c = self.expr(it.next().expect("cond"))?;
                let a = self.expr(it.next().expect("then"))?;
                let b = self.expr(it.next().expect("else"))?;
                Ok(Expr { kind: ExprKind::If(Box::new(c), Box::new(a), Box::new(b)), span })
            }
            Rule::or_expr | Rule::and_expr | Rule::cmp_expr | Rule::add_expr | Rule::mul_expr => {
                let mut it = p.into_inner();
                let mut acc = self.expr(it.next().expect("lhs operand"))?;
                let mut n = 0;
                while let Some(op) = it.next() {
                    n += 1;
                    if n > MAX_EXPR_DEPTH {
                        return Err(too_long(self.span(&op)));
                    }
                    let rhs = self.expr(it.next().expect("rhs operand"))?;
                    let op = match op.as_str() {
                        "+" => BinOp::Add,
                        "-" => BinOp::Sub,
                        "*" => BinOp::Mul,
                        "/" => BinOp::Div,
                        "%" => BinOp::Rem,
                        "==" => BinOp::Eq,
                        "!=" => BinOp::Ne,
                        "<" => BinOp::Lt,
                        "<=" => BinOp::Le,
                        ">" => BinOp::Gt,
                        ">=" => BinOp::Ge,
                        "&&" => BinOp::And,
                        _ => BinOp::Or,
                    };
                    let s = acc.span.to(rhs.span);
                    acc = Expr { kind: ExprKind::Binary(op, Box::new(acc), Box::new(rhs)), span: s };
                }
                Ok(acc)
            }
            Rule::unary => {
                let parts: Vec<P> = p.into_inner().collect();
                let (ops, last) = parts.split_at(parts.len() - 1);
                // Never build (nor drop, recursively) a tree deeper than the limit.
                if ops.len() > MAX_EXPR_DEPTH {
                    return Err(too_long(self.span(&ops[0])));
                }
                // `-` directly on an integer token is one literal (`-9223372036854775808`
                // fits in i64 although `9223372036854775808` does not).
                let (ops, mut e) = match (ops.split_last(), Self::int_token(&last[0])) {
                    (Some((minus, rest)), Some(tok)) if minus.as_str() == "-" => {
                        let span = self.span(minus).to(self.span(&tok));
                        (rest, Expr { kind: ExprKind::Lit(self.lit_atom(tok, true)?), span })
                    }
                    _ => (ops, self.expr(last[0].clone())?),
                };
                for op in ops.iter().rev() {
                    let u = if op.as_str() == "-" { UnOp::Neg } else { UnOp::Not };
                    let s = self.span(op).to(e.span);
                    // Fold `-literal` so `-inf` and `-1` are literals (`--9223372036854775808`
                    // stays a negation, which overflows at run time like any other).
                    e = match (u, &e.kind) {
                        (UnOp::Neg, ExprKind::Lit(Lit::Int(i))) if i.checked_neg().is_some() => {
                            Expr { kind: ExprKind::Lit(Lit::Int(-i)), span: s }
                        }
                        (UnOp::Neg, ExprKind::Lit(Lit::Float(f))) => Expr { kind: ExprKind::Lit(Lit::Float(-f)), span: s },
                        _ => Expr { kind: ExprKind::Unary(u, Box::new(e)), span: s },
                    };
                }
                Ok(e)
            }
            Rule::postfix => {
                let mut it = p.into_inner();
                let base = self.expr(it.next().expect("postfix atom"))?;
                Ok(match it.next() {
                    Some(f) => Expr { kind: ExprKind::Field { base: Box::new(base), field: self.ident(f) }, span },
                    None => base,
                })
            }
            Rule::atom => self.expr(p.into_inner().next().expect("atom child")),
            Rule::int_lit | Rule::float_lit | Rule::inf_lit | Rule::true_lit | Rule::false_lit => {
                Ok(Expr { kind: ExprKind::Lit(self.lit_atom(p, false)?), span })
            }
            Rule::reduce_expr => {
                let mut op = None;
                let mut indices = Vec::new();
                let mut filter = None;
                let mut body = Vec::new();
                for c in p.into_inner() {
                    match c.as_rule() {
                        Rule::ident if op.is_none() => op = Some(self.ident(c)),
                        Rule::ident => indices.push(self.ident(c)),
                        Rule::where_clause => filter = Some(Box::new(self.where_clause(c)?)),
                        _ => body.push(self.expr(c)?),
                    }
                }
                let op = op.expect("reduction op");
                Ok(Expr { kind: ExprKind::Reduce { op, indices, filter, body }, span })
            }
            Rule::call_expr => {
                let mut it = p.into_inner();
                let func = self.ident(it.next().expect("function name"));
                let args = it.map(|a| self.expr(a)).collect::<Result<_, _>>()?;
                Ok(Expr { kind: ExprKind::Call { func, args }, span })
            }
            Rule::cast_expr => {
                let mut it = p.into_inner();
                let dtype = DType::parse(it.next().expect("cast type").as_str()).expect("dtype");
                let arg = self.expr(it.next().expect("cast arg"))?;
                Ok(Expr { kind: ExprKind::Cast { dtype, arg: Box::new(arg) }, span })
            }
            Rule::access => {
                let mut it = p.into_inner();
                let name = self.ident(it.next().expect("access name"));
                let subs = it.map(|a| self.expr(a)).collect::<Result<_, _>>()?;
                Ok(Expr { kind: ExprKind::Access { tensor: name, subs }, span })
            }
            Rule::name => {
                let name = self.ident(p.into_inner().next().expect("name ident"));
                Ok(Expr { kind: ExprKind::Name(name), span })
            }
            Rule::tuple_or_paren => {
                let mut elems = p.into_inner().map(|a| self.expr(a)).collect::<Result<Vec<_>, _>>()?;
                if elems.len() == 1 { Ok(elems.pop().expect("one element")) } else { Ok(Expr { kind: ExprKind::Tuple(elems), span }) }
            }
            r => unreachable!("grammar produced unexpected expression rule {r:?}"),
        }
    }
}
