//! The IR verifier, run after lowering and after every pass: see the invariants listed on
//! [`super::Cascade`]. A failure is a compiler bug, reported with the node and the reason.
//!
//! Checked, per cascade: unique node names; `order` lists every node once; ranges name known
//! dims, one range per index; inputs (and only inputs) are `Def::Input` with `Role::Input`;
//! input and output numbers are `0..n` each once; graph edges are exactly the reads.
//! Per node: one left-hand index per dimension, distinct, each with a range of that
//! dimension's size; shapes name known dims; a scan's index is a left-hand index.
//! Per expression, every operator's children have the right kind: symbols only where a name
//! is expected (`idx dim param read prev call cast`, reduction binders, `ured`'s reduction),
//! values everywhere else; `idx` bound (left-hand indices, enclosing reductions); `dim` known;
//! `read` of a tensor defined earlier with one subscript per dimension; `prev` only in its
//! own scan's body with a constant look-back ≥ 1; `call` of a known function with its arity;
//! `cast` to a known dtype; `ured` with a body; reduction indices with a range.

use super::lang::{Const, Tfm};
use super::{Cascade, Def, Role, Size};
use crate::hir::Func;
use egg::{Id, RecExpr};
use std::collections::{BTreeSet, HashSet};
use tfm_dsl::ast::DType;

/// A broken IR invariant.
#[derive(Debug, thiserror::Error)]
#[error("IR verifier: cascade '{cascade}', tensor '{node}': {what}")]
pub struct VerifyError {
    /// Cascade name.
    pub cascade: String,
    /// Offending node (empty for a cascade-wide problem).
    pub node: String,
    /// What is wrong.
    pub what: String,
}

/// Checks every invariant of `c`.
pub fn verify(c: &Cascade) -> Result<(), VerifyError> {
    let err = |node: &str, what: String| VerifyError { cascade: c.name.clone(), node: node.to_string(), what };
    let mut names = HashSet::new();
    for n in c.graph.node_weights() {
        if !names.insert(n.name.as_str()) {
            return Err(err(&n.name, "defined twice".into()));
        }
    }
    let listed: HashSet<_> = c.order.iter().collect();
    if c.order.len() != c.graph.node_count() || listed.len() != c.order.len() || c.order.iter().any(|ix| c.graph.node_weight(*ix).is_none())
    {
        return Err(err(
            "",
            format!("order lists {} entries ({} distinct) for {} nodes", c.order.len(), listed.len(), c.graph.node_count()),
        ));
    }
    check_ranges(c).map_err(|w| err("", w))?;
    check_roles(c).map_err(|(node, w)| err(&node, w))?;
    let mut defined: HashSet<&str> = HashSet::new();
    for &ix in &c.order {
        let n = &c.graph[ix];
        check_node(c, ix, &defined).map_err(|w| err(&n.name, w))?;
        defined.insert(n.name.as_str());
    }
    check_edges(c).map_err(|(node, w)| err(&node, w))
}

fn known_size(c: &Cascade, s: &Size) -> Result<(), String> {
    match s {
        Size::Dim(d) if !c.has_dim(d) => Err(format!("unknown dimension '{d}'")),
        Size::Fixed(n) if *n < 0 => Err(format!("negative size {n}")),
        _ => Ok(()),
    }
}

fn check_ranges(c: &Cascade) -> Result<(), String> {
    let mut seen = HashSet::new();
    for (name, size) in &c.ranges {
        if !seen.insert(name) {
            return Err(format!("index '{name}' has two ranges"));
        }
        known_size(c, size).map_err(|w| format!("range of '{name}': {w}"))?;
    }
    Ok(())
}

/// Inputs and outputs numbered `0..n` each once; `Def::Input` exactly for inputs.
fn check_roles(c: &Cascade) -> Result<(), (String, String)> {
    let (mut ins, mut outs) = (BTreeSet::new(), BTreeSet::new());
    for n in c.graph.node_weights() {
        let fresh = match (n.role, &n.def) {
            (Role::Input(i), Def::Input) => ins.insert(i),
            (Role::Output(i), Def::Expr(_) | Def::Scan { .. }) => outs.insert(i),
            (Role::Local, Def::Expr(_) | Def::Scan { .. }) => true,
            (Role::Input(_), _) => return Err((n.name.clone(), "an input with a definition".into())),
            (_, Def::Input) => return Err((n.name.clone(), "a kernel argument whose role is not input".into())),
        };
        if !fresh {
            let (what, i) = match n.role {
                Role::Input(i) => ("input", i),
                Role::Output(i) => ("output", i),
                Role::Local => ("local", 0),
            };
            return Err((n.name.clone(), format!("{what} number {i} is taken by another tensor")));
        }
    }
    for (set, what) in [(&ins, "input"), (&outs, "output")] {
        if let Some((k, i)) = set.iter().enumerate().find(|(k, i)| *k != **i) {
            return Err((String::new(), format!("{what}s are not numbered 0..{}: there is {what} {i} but no {what} {k}", set.len())));
        }
    }
    Ok(())
}

fn check_node(c: &Cascade, ix: petgraph::graph::NodeIndex, defined: &HashSet<&str>) -> Result<(), String> {
    let n = &c.graph[ix];
    for s in &n.shape {
        known_size(c, s)?;
    }
    if let Def::Input = n.def {
        return if n.indices.is_empty() { Ok(()) } else { Err("an input with left-hand indices".into()) };
    }
    if n.indices.len() != n.shape.len() {
        return Err(format!("{} indices for {} dimensions", n.indices.len(), n.shape.len()));
    }
    for (k, (i, s)) in n.indices.iter().zip(&n.shape).enumerate() {
        if n.indices[..k].contains(i) {
            return Err(format!("left-hand index '{i}' appears twice"));
        }
        match c.range(i) {
            None => return Err(format!("left-hand index '{i}' has no range")),
            Some(r) if r != s => return Err(format!("left-hand index '{i}' ranges over {r} but dimension {k} is {s}")),
            _ => {}
        }
    }
    let bound: Vec<&str> = n.indices.iter().map(String::as_str).collect();
    let exprs: Vec<(&RecExpr<Tfm>, bool)> = match &n.def {
        Def::Input => Vec::new(),
        Def::Expr(e) => vec![(e, false)],
        Def::Scan { index, init, body } => {
            if !n.indices.contains(index) {
                return Err(format!("scan index '{index}' is not a left-hand index"));
            }
            vec![(init, false), (body, true)]
        }
    };
    for (e, in_scan) in exprs {
        if e.as_ref().is_empty() {
            return Err("empty expression".into());
        }
        let root = Id::from(e.as_ref().len() - 1);
        let mut cx = Cx { c, e, defined, this: &n.name, in_scan, bound: bound.clone() };
        cx.value(root)?;
    }
    Ok(())
}

/// Graph edges are exactly the reads.
fn check_edges(c: &Cascade) -> Result<(), (String, String)> {
    for b in c.graph.node_indices() {
        let want: BTreeSet<String> = super::reads_of(&c.graph[b].def).into_iter().collect();
        let have: BTreeSet<String> =
            c.graph.neighbors_directed(b, petgraph::Direction::Incoming).map(|a| c.graph[a].name.clone()).collect();
        if want != have {
            let name = c.graph[b].name.clone();
            return Err((name, format!("graph edges from {have:?} but it reads {want:?} (run relink after editing defs)")));
        }
    }
    Ok(())
}

/// Checking one expression.
struct Cx<'a> {
    c: &'a Cascade,
    e: &'a RecExpr<Tfm>,
    defined: &'a HashSet<&'a str>,
    this: &'a str,
    /// In a scan body, where `prev` of `this` is allowed.
    in_scan: bool,
    /// Indices in scope, innermost last.
    bound: Vec<&'a str>,
}

impl<'a> Cx<'a> {
    /// The symbol at `id`, or an error naming what was expected there.
    fn sym(&self, id: Id, op: &str, what: &str) -> Result<&'a str, String> {
        match &self.e[id] {
            Tfm::Symbol(s) => Ok(s.as_str()),
            other => Err(format!("`{op}` needs {what}, found `{other}`")),
        }
    }

    fn arity(&self, op: &str, ch: &[Id], min: usize) -> Result<(), String> {
        let s = if min == 1 { "" } else { "s" };
        if ch.len() < min { Err(format!("`{op}` needs at least {min} operand{s}, has {}", ch.len())) } else { Ok(()) }
    }

    /// Checks the subterm at `id`, which must be a value (not a bare symbol).
    fn value(&mut self, id: Id) -> Result<(), String> {
        let e = self.e;
        match &e[id] {
            Tfm::Const(_) => Ok(()),
            Tfm::Symbol(s) => Err(format!("bare name '{s}' where a value is expected")),
            Tfm::Idx(s) => {
                let name = self.sym(*s, "idx", "an index name")?;
                if !self.bound.contains(&name) {
                    return Err(format!("index '{name}' is not bound here (in scope: {})", self.bound.join(", ")));
                }
                Ok(())
            }
            Tfm::Dim(s) => {
                let name = self.sym(*s, "dim", "a dimension name")?;
                if !self.c.has_dim(name) {
                    return Err(format!("unknown dimension '{name}'"));
                }
                Ok(())
            }
            Tfm::Param(s) => self.sym(*s, "param", "a param name").map(|_| ()),
            Tfm::Read(ch) => self.read(ch),
            Tfm::Prev(ch) => {
                let t = self.sym(ch[0], "prev", "a tensor name")?;
                if t != self.this || !self.in_scan {
                    return Err(format!("`prev` of '{t}' outside its scan's body"));
                }
                match e[ch[1]] {
                    Tfm::Const(Const::Int(k)) if k >= 1 => Ok(()),
                    ref other => Err(format!("`prev` needs a constant look-back >= 1, found `{other}`")),
                }
            }
            Tfm::Call(ch) => {
                self.arity("call", ch, 1)?;
                let f = self.sym(ch[0], "call", "a function name")?;
                let func = Func::from_name(f).ok_or_else(|| format!("call of unknown function '{f}'"))?;
                if ch.len() - 1 != func.arity() {
                    return Err(format!("`{f}` takes {} arguments, given {}", func.arity(), ch.len() - 1));
                }
                ch[1..].iter().try_for_each(|x| self.value(*x))
            }
            Tfm::Cast([dt, x]) => {
                let name = self.sym(*dt, "cast", "a dtype")?;
                DType::parse(name).ok_or_else(|| format!("cast to unknown dtype '{name}'"))?;
                self.value(*x)
            }
            Tfm::Sum([i, lo, hi, f, body])
            | Tfm::Max([i, lo, hi, f, body])
            | Tfm::Min([i, lo, hi, f, body])
            | Tfm::Prod([i, lo, hi, f, body]) => {
                let op = e[id].to_string();
                self.reduction(&op, *i, *lo, *hi, &[*f, *body])
            }
            Tfm::Osm([i, lo, hi, f, s, v]) => self.reduction("osm", *i, *lo, *hi, &[*f, *s, *v]),
            Tfm::OsmZ([i, lo, hi, f, s, v, c]) => {
                // The sink is evaluated outside the reduction, as its bounds are.
                self.value(*c)?;
                self.reduction("osmz", *i, *lo, *hi, &[*f, *s, *v])
            }
            Tfm::URed(ch) => {
                self.arity("ured", ch, 7)?;
                self.sym(ch[0], "ured", "a reduction name")?;
                match e[ch[1]] {
                    Tfm::Const(Const::Int(k)) if k >= 0 => {}
                    ref other => return Err(format!("`ured` needs a field number, found `{other}`")),
                }
                self.reduction("ured", ch[2], ch[3], ch[4], &ch[5..])
            }
            // Maps, `if`, `where`: every operand is a value.
            other => egg::Language::children(other).iter().try_for_each(|x| self.value(*x)),
        }
    }

    fn read(&mut self, ch: &[Id]) -> Result<(), String> {
        self.arity("read", ch, 1)?;
        let t = self.sym(ch[0], "read", "a tensor name")?;
        let Some(n) = self.c.node(t) else { return Err(format!("reads unknown tensor '{t}'")) };
        if !self.defined.contains(t) {
            return Err(format!("reads '{t}' before it is defined"));
        }
        if ch.len() - 1 != n.shape.len() {
            return Err(format!("reads '{t}' with {} subscripts, it has {} dimensions", ch.len() - 1, n.shape.len()));
        }
        ch[1..].iter().try_for_each(|s| self.value(*s))
    }

    /// A reduction binding `i` (over `lo..hi`) in `scoped` (filter and bodies).
    fn reduction(&mut self, op: &str, i: Id, lo: Id, hi: Id, scoped: &[Id]) -> Result<(), String> {
        let name = self.sym(i, op, "an index name to reduce over")?;
        if self.c.range(name).is_none() {
            return Err(format!("`{op}` over index '{name}', which has no range"));
        }
        self.value(lo)?;
        self.value(hi)?;
        self.bound.push(name);
        let r = scoped.iter().try_for_each(|x| self.value(*x));
        self.bound.pop();
        r
    }
}
