//! Campaign mode (`TFMC_FUZZ_LOG`): a new finding is minimized (items, lines, sizes, params,
//! split, input style) while it keeps its kind and signature, blamed on rewrite rules
//! (re-optimized without each, and with each alone), and appended to the log with a
//! `// case:` line, ready to become a file under `tests/optimize_regressions/`.

use crate::cases::Case;
use crate::compare::{Finding, Kind, options, prepare, run_case};
use crate::seeds::load;
use crate::shrink::shrink;
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use tfmc::optimize::Options;

/// The finding of `case` on `text`, if any (for minimization).
fn finding_of(text: &str, case: &Case, opts: Option<&Options>) -> Option<Finding> {
    let program = load(text)?;
    program.kernel(&case.kernel)?;
    let opts = opts.cloned().unwrap_or_else(|| options(&program, case));
    let prep = prepare(&program, &case.kernel, &opts)?;
    run_case(&program, &prep, case)
}

/// Which rules the finding needs: it persists with no rule at all (then the passes outside
/// the e-graph are wrong), or it disappears when one fired rule is left out.
fn blame(text: &str, case: &Case, kind: Kind, sig: &str) -> String {
    let Some(program) = load(text) else { return String::new() };
    let all: Vec<String> = tfmc::optimize::rules::all().iter().map(|r| r.name.to_string()).collect();
    let with = |only: Vec<String>| {
        let opts = Options { only_rules: Some(only), ..options(&program, case) };
        finding_of(text, case, Some(&opts)).is_some_and(|f| f.kind == kind && f.sig == sig)
    };
    if with(Vec::new()) {
        return "persists with no rewrite rule: a pass outside the e-graph (inline, float_filters, filters_to_bounds, prefix_scans, split)"
            .to_string();
    }
    let needed: Vec<&String> = all.iter().filter(|r| !with(all.iter().filter(|x| x != r).cloned().collect())).collect();
    let alone: Vec<&String> = all.iter().filter(|r| with(vec![(*r).clone()])).collect();
    format!("gone without each of {needed:?}; reproduced by each alone of {alone:?}")
}

/// Shrinks `text` and `case` while the finding keeps its kind and signature ([`shrink`]).
fn minimize(text: &str, case: &Case, kind: Kind, sig: &str) -> (String, Case) {
    shrink(text, case, &|t, c| finding_of(t, c, None).is_some_and(|f| f.kind == kind && f.sig == sig))
}

/// In a campaign (`TFMC_FUZZ_LOG`): logs the finding and returns true; outside one returns
/// false (the caller fails). A finding whose signature (kind, what differs, rules that fired)
/// is new is minimized and blamed; it is logged whole if its kind, difference and blame are
/// new, else as one line.
pub fn log_finding(origin: &str, text: &str, case: &Case, f: &Finding, rules: &str, class: Option<&str>) -> bool {
    let Ok(path) = std::env::var("TFMC_FUZZ_LOG") else { return false };
    static SEEN: OnceLock<Mutex<BTreeMap<String, usize>>> = OnceLock::new();
    let note = |key: String| {
        let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        let n = seen.entry(key).or_insert(0);
        *n += 1;
        *n
    };
    let sig = format!("{:?}: {}{}", f.kind, f.sig, class.map_or(String::new(), |c| format!(" (known class: {c})")));
    let n = note(format!("{sig} [{rules}]"));
    if n > 1 {
        return true;
    }
    let (min_text, min_case) = minimize(text, case, f.kind, &f.sig);
    let detail = finding_of(&min_text, &min_case, None).map_or_else(|| f.detail.clone(), |f| f.detail);
    let blamed = blame(&min_text, &min_case, f.kind, &f.sig);
    let entry = if note(format!("{sig} {blamed}")) == 1 {
        format!(
            "==== {sig}\n{blamed}\nfrom {origin}, kernel {}\n{detail}--- minimized\n// case: {}\n{min_text}--- original case: {}\n\n",
            case.kernel,
            min_case.line(),
            case.line()
        )
    } else {
        format!("---- again: {sig} {blamed}: from {origin}, // case: {}\n", min_case.line())
    };
    use std::io::Write as _;
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let _ = file.write_all(entry.as_bytes());
    }
    true
}
