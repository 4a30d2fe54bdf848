#!/usr/bin/env bash
# Installs what building and testing tfmc needs on Debian 12 (run as root, or with sudo).
# Idempotent: every step checks first and is skipped when already done (a no-op run takes well
# under 5 s). The tested recipe behind each step is shared/docs/setup.md.
#
#   - apt: LLVM 22 with Polly (for the LLVM backends) plus the libraries it links, a C compiler,
#     and python3-venv; the build links the shared libLLVM.so.22.1 (Cargo.toml: inkwell's
#     `llvm22-1-prefer-dynamic`), which apt puts on the loader's path: each of the ~20 test
#     binaries would otherwise carry its own ~90 MB copy of LLVM (CI ran out of disk);
#   - .venv: nvidia-cuda-nvcc-cu12 (ptxas, for offline PTX validation), numpy (test
#     cross-checks), maturin, pytest and torch, and the tfmc Python package built from python/;
#   - cargo must already be installed (rustup cannot be downloaded here).
#
# The build needs no environment variables: .cargo/config.toml sets LLVM_SYS_221_PREFIX.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

LLVM_PREFIX=/usr/lib/llvm-22
NVCC_WHEEL=nvidia-cuda-nvcc-cu12==12.9.86
did=()

say() { printf 'setup.sh: %s\n' "$*"; }

# --- apt packages ------------------------------------------------------------------------
apt_pkgs=()
if ! command -v llvm-config-22 >/dev/null 2>&1 || [ ! -f "$LLVM_PREFIX/lib/libPolly.a" ]; then
    apt_pkgs+=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev libffi-dev libxml2-dev)
fi
if ! command -v cc >/dev/null 2>&1; then
    apt_pkgs+=(gcc libc6-dev)
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_pkgs+=(python3 python3-venv)
fi
if [ ${#apt_pkgs[@]} -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { say "error: need root (or sudo) to apt-get install ${apt_pkgs[*]}" >&2; exit 1; }
        sudo=(sudo)
    fi
    say "installing apt packages: ${apt_pkgs[*]}"
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_pkgs[@]}"
    did+=("apt-get install ${apt_pkgs[*]}")
fi

# --- rust ----------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        say "error: cargo is installed in $HOME/.cargo/bin but not on PATH; run: export PATH=\"\$HOME/.cargo/bin:\$PATH\"" >&2
    else
        say "error: cargo not found; install Rust >= 1.95 (e.g. with rustup) and re-run" >&2
    fi
    exit 1
fi

# --- python venv (ptxas + numpy) -----------------------------------------------------------
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c '' >/dev/null 2>&1; then
    say "creating .venv"
    python3 -m venv --clear .venv
    did+=("python3 -m venv .venv")
fi
pip_pkgs=()
ptxas=$(compgen -G '.venv/lib/python3*/site-packages/nvidia/cuda_nvcc/bin/ptxas' || true)
[ -n "$ptxas" ] || pip_pkgs+=("$NVCC_WHEEL")
.venv/bin/python -c 'import numpy' >/dev/null 2>&1 || pip_pkgs+=(numpy)
# The tfmc Python package (python/): maturin builds it; pytest runs its tests; torch for the
# torch half of the API and its tests (~3 GB with its CUDA libraries, ~1 min to install;
# TFMC_NO_TORCH=1 skips it and the torch tests then print SKIP).
[ -x .venv/bin/maturin ] || pip_pkgs+=("maturin>=1.5,<2")
.venv/bin/python -c 'import pytest' >/dev/null 2>&1 || pip_pkgs+=(pytest)
if [ "${TFMC_NO_TORCH:-0}" != 1 ] && ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
    pip_pkgs+=(torch)
fi
if [ ${#pip_pkgs[@]} -gt 0 ]; then
    say "pip installing into .venv: ${pip_pkgs[*]}"
    .venv/bin/python -m pip install -q --disable-pip-version-check "${pip_pkgs[@]}"
    did+=("pip install ${pip_pkgs[*]}")
fi

# --- the tfmc Python package ---------------------------------------------------------------
# Built in release mode from this checkout and installed into .venv (`import tfmc`); rebuilt
# only when the sources it is made of changed since the last install (a stamp in .venv). The
# wheel is for this machine (it links the system libffi), so auditwheel is skipped.
py_srcs=(python compiler runtime dsl Cargo.toml Cargo.lock)
stamp=.venv/.tfmc-python-stamp
if git rev-parse --git-dir >/dev/null 2>&1; then
    want=$({ pwd; git ls-files -s -- "${py_srcs[@]}"; git diff HEAD -- "${py_srcs[@]}"; git ls-files -o --exclude-standard -- "${py_srcs[@]}"; } | sha256sum | cut -d' ' -f1)
else
    want=$(date +%s%N)  # not a git checkout: always rebuild
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c 'import tfmc' >/dev/null 2>&1; then
    say "building and installing the tfmc Python package into .venv (maturin, release)"
    rm -rf target/python-wheel
    .venv/bin/maturin build --release --quiet --auditwheel skip -m python/Cargo.toml -i .venv/bin/python -o target/python-wheel
    .venv/bin/python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps target/python-wheel/tfmc-*.whl
    .venv/bin/python -c 'import tfmc' || { say "error: tfmc was installed but 'import tfmc' fails" >&2; exit 1; }
    echo "$want" > "$stamp"
    did+=("install the tfmc Python package")
fi

if [ ${#did[@]} -eq 0 ]; then
    say "everything already installed (llvm-config-22, cargo, .venv with ptxas, numpy, pytest, torch and tfmc)"
else
    for d in "${did[@]}"; do say "did: $d"; done
fi
