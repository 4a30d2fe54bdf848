#!/usr/bin/env bash
# Builds what bench/gpu/bench.py needs on a GPU machine (which has PyTorch but no Rust):
# the PTX artifacts of the benchmarked lib files for sm_XY and the tfmc-cuda-run runner, into
# OUT (default bench/gpu/bundle). Run here, then carry OUT with the checkout; on the GPU
# machine: python3 bench/gpu/bench.py --bundle OUT.
#
#   bench/gpu/prepare.sh [OUT] [SM]        (SM defaults to 90: H100/H200)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${1:-bench/gpu/bundle}
sm=${2:-90}
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) export PATH="$HOME/.cargo/bin:$PATH" ;; esac
cargo build --release -q --bin tfmc
cargo build --release -q -p tfmc-runtime --features cuda --bin tfmc-cuda-run
tmp=$(mktemp -d "${out%/}.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for f in sdpa causal window alibi softcap half; do
    ./target/release/tfmc build "lib/$f.tfm" --target cuda --sm "$sm" -o "$tmp/$f.ptx" >/dev/null
done
cp target/release/tfmc-cuda-run "$tmp/"
# Replace OUT only when everything was built.
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "bench/gpu/prepare.sh: wrote $out (sm_$sm): $(cd "$out" && ls | tr '\n' ' ')"
