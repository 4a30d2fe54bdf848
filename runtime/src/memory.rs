//! How much memory this process can still get, so that a size read from a file (an `.npz`
//! member, an array shape) is checked before anything that size is allocated: an allocation
//! the machine cannot back aborts the process in Rust's infallible collections, or gets it
//! killed by the OOM killer after Linux overcommitted it.
//!
//! Owns [`available`] (the smaller of the memory the kernel says is available and what is left
//! under the address-space limit, on Linux; unknown elsewhere) and [`check`], the error every
//! such size check gives. Callers still allocate fallibly (`try_reserve`): this is an estimate.

use std::fs;

/// Bytes of memory this process can probably still allocate: the smaller of `MemAvailable`
/// (`/proc/meminfo`) and the address-space limit (`ulimit -v`) less the address space in use.
/// `None` when neither is known (not Linux).
pub fn available() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok().and_then(|s| meminfo_available(&s));
    let limits = fs::read_to_string("/proc/self/limits").ok().and_then(|s| address_space_limit(&s));
    let used = fs::read_to_string("/proc/self/status").ok().and_then(|s| kib_field(&s, "VmSize:"));
    let headroom = match (limits, used) {
        (Some(limit), Some(used)) => Some(limit.saturating_sub(used)),
        (Some(limit), None) => Some(limit),
        _ => None,
    };
    match (meminfo, headroom) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Fails with a message naming `what`, the bytes it needs and the bytes available when
/// `bytes` exceed `limit` (the memory [`available`], or a caller's own bound).
pub fn check(what: &str, bytes: u64, limit: Option<u64>) -> Result<(), String> {
    match limit {
        Some(limit) if bytes > limit => Err(format!("{what} needs {} of memory, more than the {} available", size(bytes), size(limit))),
        _ => Ok(()),
    }
}

/// `1.5 GiB`, `12 MiB`, `100 bytes`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut x = bytes as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    if x < 10.0 { format!("{x:.1} {}", UNITS[unit]) } else { format!("{x:.0} {}", UNITS[unit]) }
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn meminfo_available(text: &str) -> Option<u64> {
    kib_field(text, "MemAvailable:")
}

/// A `Name:   1234 kB` line's value in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The soft `Max address space` limit of `/proc/self/limits` in bytes; `None` when unlimited.
fn address_space_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max address space"))?;
    line["Max address space".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc_files() {
        let meminfo = "MemTotal:       16318412 kB\nMemFree:         1092660 kB\nMemAvailable:    8123456 kB\n";
        assert_eq!(meminfo_available(meminfo), Some(8123456 * 1024));
        assert_eq!(kib_field("Name:\tx\nVmSize:\t  2048 kB\n", "VmSize:"), Some(2048 * 1024));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max stack size            8388608              unlimited            bytes\n\
                      Max address space         1073741824           unlimited            bytes\n";
        assert_eq!(address_space_limit(limits), Some(1 << 30));
        let unlimited = "Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(address_space_limit(unlimited), None);
        #[cfg(target_os = "linux")]
        assert!(available().is_some_and(|b| b > 0));
    }

    #[test]
    fn checks_and_sizes() {
        assert!(check("x", 10, None).is_ok() && check("x", 10, Some(10)).is_ok());
        assert_eq!(
            check("array 'X'", 3 << 30, Some(1 << 30)).unwrap_err(),
            "array 'X' needs 3.0 GiB of memory, more than the 1.0 GiB available"
        );
        assert_eq!(size(100), "100 bytes");
        assert_eq!(size(12 << 20), "12 MiB");
    }
}
