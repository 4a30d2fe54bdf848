//! Host checks for an artifact's target: architecture ([`check_arch`]) and CPU features
//! ([`check_features`]).
//!
//! Features use LLVM's names (`avx2`, `sse4.1`, `bmi`, `avx512f`, ...). A feature is checked
//! only when [`host_has_feature`] can test it on this machine: on x86/x86_64 through a fixed
//! table over `is_x86_feature_detected!`; on other architectures nothing is testable. Features
//! it cannot test (unknown names, features of other architectures) are ignored, so a newer
//! compiler's feature name never blocks loading; the cost is that code needing such a feature
//! may fault with an illegal instruction instead of a clean error. Entries written `-name`
//! (disabled features) are ignored, and a leading `+` is dropped.

use crate::error::ArtifactError;

/// Whether this CPU has the feature called `name` (LLVM spelling), or `None` when this
/// runtime cannot test it.
pub fn host_has_feature(name: &str) -> Option<bool> {
    detect(name)
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn detect(name: &str) -> Option<bool> {
    macro_rules! table {
        ($($llvm:literal => $std:tt),* $(,)?) => {
            match name {
                $($llvm => Some(std::arch::is_x86_feature_detected!($std)),)*
                _ => None,
            }
        };
    }
    table!(
        "sse" => "sse", "sse2" => "sse2", "sse3" => "sse3", "ssse3" => "ssse3",
        "sse4.1" => "sse4.1", "sse4.2" => "sse4.2", "sse4a" => "sse4a",
        "avx" => "avx", "avx2" => "avx2", "fma" => "fma", "f16c" => "f16c",
        "bmi" => "bmi1", "bmi1" => "bmi1", "bmi2" => "bmi2", "lzcnt" => "lzcnt",
        "popcnt" => "popcnt", "movbe" => "movbe", "adx" => "adx",
        "aes" => "aes", "pclmul" => "pclmulqdq", "pclmulqdq" => "pclmulqdq", "sha" => "sha",
        "rdrnd" => "rdrand", "rdrand" => "rdrand", "rdseed" => "rdseed",
        "fxsr" => "fxsr", "xsave" => "xsave", "xsaveopt" => "xsaveopt",
        "xsavec" => "xsavec", "xsaves" => "xsaves", "cx16" => "cmpxchg16b",
        "avx512f" => "avx512f", "avx512bw" => "avx512bw", "avx512cd" => "avx512cd",
        "avx512dq" => "avx512dq", "avx512vl" => "avx512vl", "avx512vnni" => "avx512vnni",
        "avx512bf16" => "avx512bf16", "avx512fp16" => "avx512fp16",
        "avx512ifma" => "avx512ifma", "avx512vbmi" => "avx512vbmi",
        "avx512vbmi2" => "avx512vbmi2", "avx512bitalg" => "avx512bitalg",
        "avx512vpopcntdq" => "avx512vpopcntdq", "avx512vp2intersect" => "avx512vp2intersect",
        "avxvnni" => "avxvnni", "gfni" => "gfni", "vaes" => "vaes",
        "vpclmulqdq" => "vpclmulqdq",
    )
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
fn detect(_name: &str) -> Option<bool> {
    None
}

/// Fails with [`ArtifactError::MissingFeatures`] listing every feature of `features` that
/// this machine lacks (see the module docs for what is checked).
pub fn check_features(features: &[String]) -> Result<(), ArtifactError> {
    check_features_with(features, host_has_feature)
}

/// [`check_features`] with the detector given (for tests).
fn check_features_with(features: &[String], has: impl Fn(&str) -> Option<bool>) -> Result<(), ArtifactError> {
    let missing: Vec<String> = features
        .iter()
        .map(|f| f.trim())
        .filter(|f| !f.starts_with('-'))
        .map(|f| f.trim_start_matches('+'))
        .filter(|f| has(f) == Some(false))
        .map(String::from)
        .collect();
    if missing.is_empty() { Ok(()) } else { Err(ArtifactError::MissingFeatures { features: missing }) }
}

/// The architecture part of a target triple, in `std::env::consts::ARCH` spelling.
pub fn triple_arch(triple: &str) -> &str {
    match triple.split('-').next().unwrap_or("") {
        "arm64" => "aarch64",
        "amd64" => "x86_64",
        "i386" | "i486" | "i586" | "i686" => "x86",
        a => a,
    }
}

/// Fails with [`ArtifactError::Arch`] unless `triple` is for this machine's architecture.
pub fn check_arch(triple: &str) -> Result<(), ArtifactError> {
    if triple_arch(triple) == std::env::consts::ARCH {
        Ok(())
    } else {
        Err(ArtifactError::Arch { target: triple.to_string(), host: std::env::consts::ARCH })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn missing_features_are_listed() {
        let has = |f: &str| match f {
            "avx2" | "fma" => Some(true),
            "avx512f" | "avx512bw" => Some(false),
            _ => None,
        };
        assert!(check_features_with(&names(&["avx2", "+fma", "made-up"]), has).is_ok());
        assert!(check_features_with(&names(&["-avx512f"]), has).is_ok());
        let e = check_features_with(&names(&["avx2", "+avx512f", "avx512bw", "x"]), has);
        match e {
            Err(ArtifactError::MissingFeatures { features }) => {
                assert_eq!(features, names(&["avx512f", "avx512bw"]))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn host_table() {
        assert_eq!(host_has_feature("made-up-feature"), None);
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(host_has_feature("sse2"), Some(true));
            assert!(host_has_feature("avx512fp16").is_some());
        }
    }

    #[test]
    fn arches() {
        assert_eq!(triple_arch("x86_64-unknown-linux-gnu"), "x86_64");
        assert_eq!(triple_arch("arm64-apple-darwin"), "aarch64");
        assert_eq!(triple_arch("i686-pc-linux-gnu"), "x86");
        let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        assert!(check_arch(&host).is_ok());
        assert!(matches!(check_arch("nvptx64-nvidia-cuda"), Err(ArtifactError::Arch { .. })));
    }
}
