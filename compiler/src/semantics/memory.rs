//! How much memory the evaluators and random inputs may ask for: every large allocation of the
//! interpreter, the IR evaluator and `tfmc inputs` is checked here first, so a tensor that
//! cannot fit is a clear error naming it instead of an abort ("memory allocation of N bytes
//! failed") or the system's out-of-memory killer. The check compares against the memory the
//! system reports available (Linux: `MemAvailable`, and the cgroup's `memory.max` less its
//! `memory.current`); where neither is known, only the allocator's own failure is caught.

/// Why memory cannot be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// The byte count overflows.
    #[error("its size in bytes overflows")]
    Overflow,
    /// More than is available.
    #[error("it needs {bytes} bytes, more than the {available} bytes of memory available")]
    TooLarge {
        /// Bytes asked for.
        bytes: u64,
        /// Bytes available.
        available: u64,
    },
    /// The allocator refused.
    #[error("allocating {bytes} bytes failed")]
    Failed {
        /// Bytes asked for.
        bytes: u64,
    },
}

/// Bytes of memory available to this process, if the system says.
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    });
    let read = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok().and_then(|t| t.trim().parse::<u64>().ok());
    let cgroup = read("memory.max").map(|max| max.saturating_sub(read("memory.current").unwrap_or(0)));
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Checks that `count` elements of `elem_bytes` each may be allocated.
pub fn check(count: usize, elem_bytes: usize) -> Result<(), MemoryError> {
    let bytes = count.checked_mul(elem_bytes).filter(|&b| b <= isize::MAX as usize).ok_or(MemoryError::Overflow)? as u64;
    match available() {
        Some(available) if bytes > available => Err(MemoryError::TooLarge { bytes, available }),
        _ => Ok(()),
    }
}

/// `n` copies of `value`, allocated fallibly (after [`check`]).
pub fn filled<T: Clone>(n: usize, value: T) -> Result<Vec<T>, MemoryError> {
    check(n, std::mem::size_of::<T>())?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| MemoryError::Failed { bytes: (n * std::mem::size_of::<T>()) as u64 })?;
    v.resize(n, value);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_sizes_are_errors() {
        assert_eq!(check(usize::MAX, 8), Err(MemoryError::Overflow));
        assert_eq!(filled(usize::MAX / 2, 0u64).unwrap_err(), MemoryError::Overflow);
        // 2^50 bytes (a pebibyte): more than any machine this runs on.
        assert!(matches!(filled::<u8>(1 << 50, 0), Err(MemoryError::TooLarge { .. } | MemoryError::Failed { .. })));
        assert_eq!(filled(3, 1.5f64), Ok(vec![1.5; 3]));
    }
}
