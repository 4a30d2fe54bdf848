//! Campaign mode (`TFMC_FUZZ_LOG=FILE`): a finding of a new signature (backend, kind, what
//! differs, program family) is minimized ([`crate::shrink::shrink`], keeping backend, kind and signature) and
//! appended to FILE with its `// case:` line, ready to become a file under
//! `tests/backend_regressions/`; repeats are counted in one line. Before each program the
//! text and case go to `FILE.last`, so a crash in generated code (which kills the process)
//! leaves its reproducer.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};

use crate::cases::Case;
use crate::oracle::{Finding, Kind, Verdict, run_case};
use crate::seeds::load;
use crate::shrink::shrink;

/// The finding of `case` on `text` on `backend`, if any.
pub fn finding_of(text: &str, case: &Case, backend: &str) -> Option<Finding> {
    let program = load(text)?;
    program.kernel(&case.kernel)?;
    run_case(text, &program, case, &|b| b == backend)?.into_iter().find_map(|v| match v {
        Verdict::Finding(f) => Some(f),
        _ => None,
    })
}

fn append(path: &str, text: &str) {
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = file.write_all(text.as_bytes());
    }
}

/// In a campaign, notes the program about to run (see the module header).
pub fn note_running(origin: &str, text: &str, case: &Case) {
    if let Ok(path) = std::env::var("TFMC_FUZZ_LOG") {
        let _ = std::fs::write(format!("{path}.last"), format!("// from {origin}\n// case: {}\n{text}", case.line()));
    }
}

/// In a campaign: logs the finding and returns true; outside one returns false (the caller
/// fails).
pub fn log_finding(origin: &str, text: &str, case: &Case, f: &Finding, class: Option<&str>) -> bool {
    let Ok(path) = std::env::var("TFMC_FUZZ_LOG") else { return false };
    static SEEN: OnceLock<Mutex<BTreeMap<String, usize>>> = OnceLock::new();
    let sig = format!("{} {:?}: {}{}", f.backend, f.kind, f.sig, class.map_or(String::new(), |c| format!(" (known: {c})")));
    // One minimized entry per signature and program family (a lib file with its mutations,
    // or the generator), so one cause does not hide another of the same look.
    let family = origin.trim_start_matches("mutated ");
    let n = {
        let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        let n = seen.entry(format!("{sig} [{family}]")).or_insert(0);
        *n += 1;
        *n
    };
    if n > 1 {
        append(&path, &format!("---- again ({n}): {sig}: from {origin}, // case: {}\n", case.line()));
        return true;
    }
    let (kind, backend, want): (Kind, &str, &str) = (f.kind, f.backend, &f.sig);
    let still = |t: &str, c: &Case| finding_of(t, c, backend).is_some_and(|g| g.kind == kind && g.sig == want);
    let (min_text, min_case) = shrink(text, case, &still);
    let detail = finding_of(&min_text, &min_case, backend).map_or_else(|| f.detail.clone(), |f| f.detail);
    append(
        &path,
        &format!(
            "==== {sig}\nfrom {origin}, kernel {}\n{detail}--- minimized\n// case: {}\n{min_text}--- original case: {}\n{}\n\n",
            case.kernel,
            min_case.line(),
            case.line(),
            f.detail
        ),
    );
    true
}
