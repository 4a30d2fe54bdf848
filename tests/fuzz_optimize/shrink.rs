//! Test-case reduction shared by the fuzzers: a program text and its [`Case`] shrunk while a
//! finding persists (the caller's predicate says what "persists" means), in the spirit of
//! C-Reduce's line and item passes. Assumes nothing about the finding.

use crate::cases::{Case, Style};

/// Top-level items of a program as line ranges: from a line at brace depth 0 to the line
/// that closes its braces.
fn items(lines: &[String]) -> Vec<std::ops::Range<usize>> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, None);
    for (i, l) in lines.iter().enumerate() {
        start.get_or_insert(i);
        depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
        if depth <= 0 && (l.contains('}') || l.trim_start().starts_with("param") || l.trim_start().starts_with("use")) {
            out.extend(start.take().map(|s| s..i + 1));
            depth = 0;
        }
    }
    out
}

/// Shrinks `text` and `case` while `still(text, case)` holds (the finding persists): drops
/// whole items (kernels, params, reductions), then single lines, then shrinks each dim, drops
/// params and the split, and tries plainer inputs; a few rounds, until nothing changes.
pub fn shrink(text: &str, case: &Case, still: &dyn Fn(&str, &Case) -> bool) -> (String, Case) {
    let fails = |l: &[String], c: &Case| still(&(l.join("\n") + "\n"), c);
    let mut lines: Vec<String> =
        text.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//")).map(String::from).collect();
    if !fails(&lines, case) {
        lines = text.lines().map(String::from).collect();
    }
    let mut case = case.clone();
    for _round in 0..4 {
        let mut changed = false;
        for r in items(&lines).into_iter().rev() {
            let mut trial = lines.clone();
            trial.drain(r);
            if fails(&trial, &case) {
                lines = trial;
                changed = true;
            }
        }
        for i in (0..lines.len()).rev() {
            let mut trial = lines.clone();
            trial.remove(i);
            if fails(&trial, &case) {
                lines = trial;
                changed = true;
            }
        }
        for d in case.dims.keys().cloned().collect::<Vec<_>>() {
            for n in 0..case.dims[&d] {
                let c = Case { dims: case.dims.clone().into_iter().chain([(d.clone(), n)]).collect(), ..case.clone() };
                if fails(&lines, &c) {
                    case = c;
                    changed = true;
                    break;
                }
            }
        }
        for p in case.params.keys().cloned().collect::<Vec<_>>() {
            let mut c = case.clone();
            c.params.remove(&p);
            if fails(&lines, &c) {
                case = c;
                changed = true;
            }
        }
        if case.split.is_some() {
            let c = Case { split: None, ..case.clone() };
            if fails(&lines, &c) {
                case = c;
                changed = true;
            }
        }
        for style in [Style::Unit, Style::Huge, Style::Extreme] {
            let c = Case { style, ..case.clone() };
            if style != case.style && (style as u8) < (case.style as u8) && fails(&lines, &c) {
                case = c;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    (lines.join("\n") + "\n", case)
}
