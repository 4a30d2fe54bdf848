//! Graphviz view of a cascade (`tfmc check f.tfm --emit=dot | dot -Tsvg > f.svg`): one box per
//! tensor (name with left-hand indices, dtype and shape, role and a one-line op summary),
//! edges producer → consumer.
//!
//! Output is deterministic: nodes are numbered `n0, n1, ..` in `order`, edges sorted by
//! (producer, consumer) position. The summary names the top operator (under any `where`
//! filter) and every reduction in the expression with its index, e.g. `where * | sum e`.

use super::lang::Tfm;
use super::{Cascade, Def, Role};
use egg::{Id, Language, RecExpr};
use std::collections::HashMap;
use std::fmt::Write;

/// The graphviz `digraph` of `c`.
pub fn to_dot(c: &Cascade) -> String {
    let mut out = format!("digraph \"{}\" {{\n", escape(&c.name));
    out.push_str("  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n");
    let pos: HashMap<_, usize> = c.order.iter().enumerate().map(|(i, ix)| (*ix, i)).collect();
    for (i, &ix) in c.order.iter().enumerate() {
        let n = &c.graph[ix];
        let head = if n.indices.is_empty() { n.name.clone() } else { format!("{}[{}]", n.name, n.indices.join(", ")) };
        let shape: Vec<String> = n.shape.iter().map(ToString::to_string).collect();
        let (role, style) = match n.role {
            Role::Input(k) => (format!("input {k}"), ", style=rounded"),
            Role::Output(k) => (format!("output {k}"), ", penwidth=2"),
            Role::Local => ("local".to_string(), ""),
        };
        let what = match &n.def {
            Def::Input => role,
            Def::Expr(e) => format!("{role}: {}", summary(e)),
            Def::Scan { index, body, .. } => format!("{role}: scan {index} {}", summary(body)),
        };
        let label = format!("{head}\n{}[{}]\n{what}", n.dtype, shape.join(", "));
        let _ = writeln!(out, "  n{i} [label=\"{}\"{style}];", escape(&label));
    }
    let mut edges: Vec<(usize, usize)> = c
        .graph
        .edge_indices()
        .filter_map(|e| c.graph.edge_endpoints(e))
        .filter_map(|(a, b)| Some((*pos.get(&a)?, *pos.get(&b)?)))
        .collect();
    edges.sort_unstable();
    for (a, b) in edges {
        let _ = writeln!(out, "  n{a} -> n{b};");
    }
    out.push_str("}\n");
    out
}

/// Quotes for a graphviz string; newlines become `\n` line breaks.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `where` (if filtered), the top operator, then the expression's reductions.
fn summary(e: &RecExpr<Tfm>) -> String {
    let Some(last) = e.as_ref().len().checked_sub(1) else { return "(empty)".into() };
    let mut top = Id::from(last);
    let mut s = String::new();
    while let Tfm::Where([_, x]) = e[top] {
        s.push_str("where ");
        top = x;
    }
    s.push_str(&op(e, top));
    let mut reds = Vec::new();
    reductions(e, top, &mut reds);
    let head = op(e, top);
    let mut seen = vec![head];
    reds.retain(|r| {
        let fresh = !seen.contains(r);
        seen.push(r.clone());
        fresh
    });
    if !reds.is_empty() {
        s.push_str(" | ");
        s.push_str(&reds.join(", "));
    }
    s
}

/// One operator: `sum e`, `ured lse.1 m`, `call exp`, `read S`, `+`, a constant.
fn op(e: &RecExpr<Tfm>, id: Id) -> String {
    let name = |i: Id| e[i].to_string();
    match &e[id] {
        Tfm::Sum(c) | Tfm::Max(c) | Tfm::Min(c) | Tfm::Prod(c) => format!("{} {}", e[id], name(c[0])),
        Tfm::Osm(c) => format!("osm {}", name(c[0])),
        Tfm::OsmZ(c) => format!("osmz {}", name(c[0])),
        Tfm::URed(c) if c.len() >= 3 => format!("ured {}.{} {}", name(c[0]), name(c[1]), name(c[2])),
        Tfm::Call(c) | Tfm::Read(c) if !c.is_empty() => format!("{} {}", e[id], name(c[0])),
        n => n.to_string(),
    }
}

/// Reductions under `id`, outermost first.
fn reductions(e: &RecExpr<Tfm>, id: Id, out: &mut Vec<String>) {
    let node = &e[id];
    if node.reduction_head().is_some() {
        out.push(op(e, id));
    }
    for &c in node.children() {
        reductions(e, c, out);
    }
}

#[cfg(test)]
mod tests {
    use super::to_dot;
    use crate::ir::parse::parse_cascade;

    const TEXT: &str = "cascade k
  dims N
  range n: N, m: N
  input X: f32[N]
  local S[n]: f32[N] = (where (< (idx n) 4) (* 2.0 (sum m 0 (dim N) true (max m 0 (dim N) true (read X (idx m))))))
  local C[n]: f32[N] = scan n init 0.0 body (+ (prev C 1) (read S (idx n)))
  output Y[n]: f32[N] = (+ (read S (idx n)) (read C (idx n)))
";

    #[test]
    fn every_node_and_edge_appears_once() {
        let c = parse_cascade(TEXT).expect("parses");
        let dot = to_dot(&c);
        assert!(dot.starts_with("digraph \"k\" {\n") && dot.ends_with("}\n"), "{dot}");
        for (i, ix) in c.order.iter().enumerate() {
            let n = &c.graph[*ix];
            let line = dot.lines().find(|l| l.starts_with(&format!("  n{i} [label=\""))).unwrap_or_else(|| panic!("no node n{i}:\n{dot}"));
            assert!(line.contains(&n.name), "{line}");
        }
        let mut edges: Vec<&str> = dot.lines().filter(|l| l.contains(" -> ")).collect();
        assert_eq!(edges, ["  n0 -> n1;", "  n1 -> n2;", "  n1 -> n3;", "  n2 -> n3;"]);
        edges.dedup();
        assert_eq!(edges.len(), c.graph.edge_count());
        assert!(dot.contains(r#"n1 [label="S[n]\nf32[N]\nlocal: where * | sum m, max m"];"#), "{dot}");
        assert!(dot.contains(r#"n2 [label="C[n]\nf32[N]\nlocal: scan n +"];"#), "{dot}");
        assert!(dot.contains(r#"n3 [label="Y[n]\nf32[N]\noutput 0: +", penwidth=2];"#), "{dot}");
        assert_eq!(dot, to_dot(&c.clone()), "deterministic");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(super::escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
