//! The IR: a kernel as a *cascade* — a petgraph DAG of tensor definitions (edges run from
//! producer to consumer), each definition an expression of the primitive op set in
//! [`lang::Tfm`] over named index spaces.
//!
//! Invariants (checked by [`verify::verify`] after lowering and after every pass):
//! - node names are unique; inputs have `Def::Input`; every `read` names an input or a node
//!   that precedes the reader in `order`, with one subscript per dimension;
//! - every `idx` is bound: by the node's left-hand indices, or by an enclosing reduction;
//! - `graph` has an edge `a → b` exactly when `b` reads `a`, and `order` is a topological
//!   order of it; outputs are nodes with `Role::Output`.

pub mod dot;
pub mod eval;
pub mod lang;
pub mod lower;
pub mod parse;
pub mod print;
pub mod verify;

use egg::RecExpr;
use lang::Tfm;
use petgraph::graph::{DiGraph, NodeIndex};
use tfm_dsl::ast::DType;

pub use crate::hir::Role;

/// The size of one dimension: a symbolic dim by name, or a fixed size.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Size {
    /// A symbolic dimension of the kernel.
    Dim(String),
    /// A fixed size.
    Fixed(i64),
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Size::Dim(d) => f.write_str(d),
            Size::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// How a tensor is defined.
#[derive(Clone, Debug, PartialEq)]
pub enum Def {
    /// A kernel argument.
    Input,
    /// Its value at each point of its index space (no point where a `where` fails).
    Expr(RecExpr<Tfm>),
    /// A recurrence along `index`: `body` reads earlier points through `(prev T c)`, which
    /// give `init` before the start.
    Scan {
        /// The scanned index (one of the node's indices).
        index: String,
        /// Value of a look-back before the start.
        init: RecExpr<Tfm>,
        /// The recurrence.
        body: RecExpr<Tfm>,
    },
}

/// One tensor of the cascade.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Unique name (inlined callees' tensors are prefixed `callee.`).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Its dimensions.
    pub shape: Vec<Size>,
    /// Left-hand index names, one per dimension (empty for inputs).
    pub indices: Vec<String>,
    /// Input, output or local.
    pub role: Role,
    /// The definition.
    pub def: Def,
}

/// A dim written as a product (`index m: MP * PS`): `scale × Π factors`. Its size is derived
/// from the factors' sizes where the kernel starts; it is not an argument of the compiled
/// kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductDim {
    /// Its name (the factors as written, joined by `*`: `MP*PS`).
    pub name: String,
    /// The symbolic factors (dims of [`Cascade::dims`]).
    pub factors: Vec<String>,
    /// The product of the literal factors.
    pub scale: i64,
}

impl ProductDim {
    /// The size given the free dims' sizes, or `None` when a factor is unknown or the product
    /// overflows `i64`.
    pub fn size(&self, mut size_of: impl FnMut(&str) -> Option<i64>) -> Option<i64> {
        self.factors.iter().try_fold(self.scale, |acc, f| acc.checked_mul(size_of(f)?))
    }

    /// `scale * F1 * F2` as the text form writes it (the scale only when it is not 1).
    pub fn formula(&self) -> String {
        let scale = (self.scale != 1).then(|| self.scale.to_string());
        scale.into_iter().chain(self.factors.iter().cloned()).collect::<Vec<_>>().join(" * ")
    }
}

/// A kernel as a cascade of tensor definitions.
#[derive(Clone, Debug)]
pub struct Cascade {
    /// Kernel name.
    pub name: String,
    /// Symbolic dimension names, bound from the inputs: the compiled kernel's dim arguments,
    /// in order.
    pub dims: Vec<String>,
    /// Dims derived from [`Self::dims`] as products (read by name like any dim).
    pub products: Vec<ProductDim>,
    /// Index ranges: name → size (one range per name in a kernel).
    pub ranges: Vec<(String, Size)>,
    /// The DAG: producer → consumer.
    pub graph: DiGraph<Node, ()>,
    /// Nodes in execution order (inputs first, in argument order).
    pub order: Vec<NodeIndex>,
}

impl Cascade {
    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.graph.node_weights().find(|n| n.name == name)
    }

    /// Inputs in argument order.
    pub fn inputs(&self) -> Vec<&Node> {
        let mut v: Vec<&Node> = self.graph.node_weights().filter(|n| matches!(n.role, Role::Input(_))).collect();
        v.sort_by_key(|n| match n.role {
            Role::Input(i) => i,
            _ => 0,
        });
        v
    }

    /// Outputs in declaration order.
    pub fn outputs(&self) -> Vec<&Node> {
        let mut v: Vec<&Node> = self.graph.node_weights().filter(|n| matches!(n.role, Role::Output(_))).collect();
        v.sort_by_key(|n| match n.role {
            Role::Output(i) => i,
            _ => 0,
        });
        v
    }

    /// True if `name` is a dim of the cascade (bound or a product).
    pub fn has_dim(&self, name: &str) -> bool {
        self.dims.iter().any(|d| d == name) || self.products.iter().any(|p| p.name == name)
    }

    /// The range of index `name`.
    pub fn range(&self, name: &str) -> Option<&Size> {
        self.ranges.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// Recomputes `graph` edges and `order` from the nodes' reads (after a pass edits defs).
    pub fn relink(&mut self) {
        self.graph.clear_edges();
        let ids: Vec<NodeIndex> = self.graph.node_indices().collect();
        for &b in &ids {
            for name in reads_of(&self.graph[b].def) {
                if let Some(a) = ids.iter().copied().find(|&a| self.graph[a].name == name) {
                    self.graph.update_edge(a, b, ());
                }
            }
        }
        // Keep inputs first and the previous relative order where the DAG allows it.
        let pos: std::collections::HashMap<NodeIndex, usize> = self.order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut order: Vec<NodeIndex> = Vec::new();
        let mut done = std::collections::HashSet::new();
        let mut pending: Vec<NodeIndex> = ids.clone();
        pending.sort_by_key(|n| pos.get(n).copied().unwrap_or(usize::MAX));
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain(|&n| {
                let ready = self.graph.neighbors_directed(n, petgraph::Direction::Incoming).all(|p| done.contains(&p) || p == n);
                if ready {
                    order.push(n);
                    done.insert(n);
                }
                !ready
            });
            if pending.len() == before {
                // A cycle: the verifier reports it; keep the rest in their old order.
                order.append(&mut pending);
            }
        }
        self.order = order;
    }
}

/// Names of the tensors a definition reads.
pub fn reads_of(def: &Def) -> Vec<String> {
    let mut out = Vec::new();
    let mut scan = |e: &RecExpr<Tfm>| {
        for node in e.as_ref() {
            if let Tfm::Read(c) = node
                && let Some(first) = c.first()
                && let Tfm::Symbol(s) = &e[*first]
            {
                out.push(s.as_str().to_string());
            }
        }
    };
    match def {
        Def::Input => {}
        Def::Expr(e) => scan(e),
        Def::Scan { init, body, .. } => {
            scan(init);
            scan(body);
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod verify_tests;
