//! Target selection: [`TargetOptions`] → [`ResolvedTarget`] and the LLVM `TargetMachine`.
//!
//! Owns the host defaults (triple, CPU name and feature string from LLVM's host detection),
//! the checks of user-given CPU and feature names against [`super::cpus`] (x86 triples only:
//! LLVM itself only warns on stderr and falls back to generic code), and the mapping of
//! `opt_level` to LLVM's levels. Invariant: the feature string handed to LLVM is normalized
//! (`+name`/`-name`, comma-separated), and [`ResolvedTarget::features`] is exactly its `+`
//! names, sorted and deduplicated (later entries override earlier ones).
//!
//! What an artifact *needs* ([`resolve_target`], recorded in its manifest and checked by the
//! runtime before any code runs, and by [`check_host`] before JIT code runs) is more: the
//! features the CPU name implies ([`super::cpu_features`], x86 only) plus the `+` names, less
//! the `-` names. It is kept apart from [`ResolvedTarget::features`] so that the code LLVM
//! generates does not depend on the table.

use std::sync::OnceLock;

use inkwell::OptimizationLevel;
use inkwell::targets::{CodeModel, InitializationConfig, RelocMode, Target, TargetMachine};

use super::LlvmError;
use super::cpu_features::X86_CPU_FEATURES;
use super::cpus::{X86_CPUS, X86_FEATURES};

/// What to compile for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetOptions {
    /// LLVM CPU name (`znver4`, `x86-64-v3`); `None` = the host's.
    pub cpu: Option<String>,
    /// LLVM feature string (`+avx2,-avx512f`; a name without a sign means `+`); `None` = the
    /// host's features when `cpu` is `None`, else none beyond what the CPU implies.
    pub features: Option<String>,
    /// Optimization level, 0..=3.
    pub opt_level: u8,
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions { cpu: None, features: None, opt_level: 3 }
    }
}

/// The target a compilation actually uses (what an artifact's manifest records, see
/// [`resolve_target`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResolvedTarget {
    /// LLVM target triple.
    pub triple: String,
    /// LLVM CPU name.
    pub cpu: String,
    /// Explicitly enabled features, names without `+`, sorted. For a named CPU without a
    /// feature string this is empty: the features the CPU implies are not listed.
    pub features: Vec<String>,
}

/// Resolves `opts` against the host (see [`TargetOptions`]) into the target an artifact's
/// manifest records: kind `cpu`, the LLVM triple and CPU name, and the features the code may
/// use (names without `+`, sorted): those the CPU implies (x86; on other architectures none
/// are known) plus the enabled ones of the feature string, less its disabled ones. A disabled
/// feature removes only itself, not the features that depend on it, so the list may ask for
/// more than the code uses, never less.
///
/// Errors: [`LlvmError::UnknownCpu`], [`LlvmError::UnknownFeature`], [`LlvmError::OptLevel`].
pub fn resolve_target(opts: &TargetOptions) -> Result<tfmc_runtime::manifest::Target, LlvmError> {
    resolve(opts).map(|(t, string)| tfmc_runtime::manifest::Target {
        kind: "cpu".to_string(),
        features: required_features(&t, &string),
        triple: t.triple,
        cpu: t.cpu,
    })
}

/// The features code for `target` (with the normalized feature string `string`) may use:
/// see [`resolve_target`].
fn required_features(target: &ResolvedTarget, string: &str) -> Vec<String> {
    let implied: &[&str] = if is_x86(&target.triple) { implied_features(&target.cpu) } else { &[] };
    let mut set: std::collections::BTreeSet<String> = implied.iter().map(|f| f.to_string()).collect();
    for item in string.split(',').filter(|s| !s.is_empty()) {
        let (on, name) = item.split_at(1);
        if on == "+" {
            set.insert(name.to_string());
        } else {
            set.remove(name);
        }
    }
    set.into_iter().collect()
}

/// The features the x86 CPU `cpu` implies (empty for a name the table lacks).
fn implied_features(cpu: &str) -> &'static [&'static str] {
    X86_CPU_FEATURES.binary_search_by(|(name, _)| (*name).cmp(cpu)).map_or(&[], |i| X86_CPU_FEATURES[i].1)
}

/// Fails with [`LlvmError::HostLacks`] unless this machine has every feature code compiled
/// for `opts` may use (see [`resolve_target`]): JIT code for a newer `--target-cpu` would
/// stop at its first such instruction with SIGILL. Features the runtime cannot test on this
/// machine are not checked (`tfmc_runtime::features`).
pub(crate) fn check_host(opts: &TargetOptions) -> Result<(), LlvmError> {
    let t = resolve_target(opts)?;
    tfmc_runtime::features::check_arch(&t.triple)
        .and_then(|()| tfmc_runtime::features::check_features(&t.features))
        .map_err(|e| LlvmError::HostLacks { cpu: t.cpu, reason: e.to_string() })
}

/// Registers the native target with LLVM once per process.
pub(crate) fn init() -> Result<(), LlvmError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| Target::initialize_native(&InitializationConfig::default()))
        .clone()
        .map_err(|message| LlvmError::Target { triple: host_triple(), message })
}

fn host_triple() -> String {
    TargetMachine::get_default_triple().as_str().to_string_lossy().into_owned()
}

fn is_x86(triple: &str) -> bool {
    let arch = triple.split('-').next().unwrap_or("");
    arch == "x86_64" || arch == "i386" || arch == "i686" || arch == "x86"
}

/// [`resolve_target`] plus the normalized LLVM feature string.
pub(crate) fn resolve(opts: &TargetOptions) -> Result<(ResolvedTarget, String), LlvmError> {
    if opts.opt_level > 3 {
        return Err(LlvmError::OptLevel(opts.opt_level));
    }
    init()?;
    let triple = host_triple();
    let x86 = is_x86(&triple);
    let cpu = match &opts.cpu {
        None => TargetMachine::get_host_cpu_name().to_string(),
        Some(c) => {
            let c = c.trim();
            if c.is_empty() || (x86 && X86_CPUS.binary_search(&c).is_err()) {
                return Err(LlvmError::UnknownCpu(c.to_string()));
            }
            c.to_string()
        }
    };
    let (given, check) = match (&opts.features, &opts.cpu) {
        (Some(f), _) => (f.clone(), x86),
        (None, None) => (TargetMachine::get_host_cpu_features().to_string(), false),
        (None, Some(_)) => (String::new(), false),
    };
    // name → enabled, in first-mention order; later mentions override.
    let mut state: Vec<(String, bool)> = Vec::new();
    for item in given.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (on, name) = match item.as_bytes()[0] {
            b'+' => (true, &item[1..]),
            b'-' => (false, &item[1..]),
            _ => (true, item),
        };
        if name.is_empty() || (check && X86_FEATURES.binary_search(&name).is_err()) {
            return Err(LlvmError::UnknownFeature(name.to_string()));
        }
        match state.iter_mut().find(|(n, _)| n == name) {
            Some(s) => s.1 = on,
            None => state.push((name.to_string(), on)),
        }
    }
    let string = state.iter().map(|(n, on)| format!("{}{n}", if *on { '+' } else { '-' })).collect::<Vec<_>>().join(",");
    let mut features: Vec<String> = state.into_iter().filter(|(_, on)| *on).map(|(n, _)| n).collect();
    features.sort();
    Ok((ResolvedTarget { triple, cpu, features }, string))
}

/// The widest float vector code for `target` (normalized feature string `string`) may use, in
/// bits: 512 with AVX-512F, 256 with AVX, else 128 — from the features the CPU implies plus
/// the explicit ones, so `--target-cpu znver4` gets AVX-512 tiles like the host does.
pub(crate) fn vector_bits(target: &ResolvedTarget, string: &str) -> u32 {
    let features = required_features(target, string);
    let has = |f: &str| features.iter().any(|x| x == f);
    if has("avx512f") {
        512
    } else if has("avx") {
        256
    } else {
        128
    }
}

/// LLVM's code generation level for `opt_level` (0..=3, checked by [`resolve`]).
pub(crate) fn level(opt_level: u8) -> OptimizationLevel {
    match opt_level {
        0 => OptimizationLevel::None,
        1 => OptimizationLevel::Less,
        2 => OptimizationLevel::Default,
        _ => OptimizationLevel::Aggressive,
    }
}

/// A target machine for `target` with the normalized `features` string.
pub(crate) fn machine(target: &ResolvedTarget, features: &str, opt_level: u8, reloc: RelocMode) -> Result<TargetMachine, LlvmError> {
    init()?;
    let err = |message: String| LlvmError::Target { triple: target.triple.clone(), message };
    let triple = inkwell::targets::TargetTriple::create(&target.triple);
    let t = Target::from_triple(&triple).map_err(|e| err(e.to_string()))?;
    t.create_target_machine(&triple, &target.cpu, features, level(opt_level), reloc, CodeModel::Default)
        .ok_or_else(|| err("LLVM could not create a target machine".to_string()))
}
