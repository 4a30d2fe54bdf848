#!/bin/sh
# Seeds fuzz/corpus/parse_check (git-ignored) with every .tfm file of the repository, `use`
# lines dropped (the target does not follow them). Run from anywhere.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/fuzz/corpus/parse_check"
mkdir -p "$out"
for f in "$root"/lib/*.tfm "$root"/tests/ok/*.tfm "$root"/tests/check/*.tfm "$root"/tests/fuzz_regressions/*.tfm; do
    [ -f "$f" ] || continue
    name=$(echo "$f" | sed "s|$root/||; s|/|_|g")
    grep -v '^use ' "$f" > "$out/$name" || true
done
echo "seeded $(ls "$out" | wc -l) files into $out"
