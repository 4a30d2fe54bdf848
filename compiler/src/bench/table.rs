//! Plain-text tables for `tfmc bench`.

use std::fmt::Write as _;

/// Formats rows as plain text with aligned columns (the first left-aligned, the rest right).
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    table_aligned(header, rows, &[0])
}

/// Formats rows as plain text with aligned columns: the columns in `left` left-aligned, the rest
/// right-aligned.
pub(super) fn table_aligned(header: &[&str], rows: &[Vec<String>], left: &[usize]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.zip(&widths).enumerate() {
            let sep = if i == 0 { "" } else { "  " };
            if left.contains(&i) {
                let _ = write!(s, "{sep}{c:<w$}");
            } else {
                let _ = write!(s, "{sep}{c:>w$}");
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(&mut header.iter().copied());
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)));
    out.push('\n');
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

/// A time in ms with 3 significant-ish digits.
pub(super) fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
}
