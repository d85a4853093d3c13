#!/usr/bin/env bash
# What each compression stage buys: packs a model with the stages switched on one at a time and
# prints a Markdown table (sizes, ratio to INT8, perplexity on the evaluation text).
# Usage: scripts/bench-pack.sh MODEL EVAL_TEXT [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
model="$1"; text="$2"; out="${3:-$(mktemp -d)}"
dcomp=build/release/packer/dcomp
mkdir -p "$out"
f32=$($dcomp eval "$model" --text "$text" --weights f32 --json --ctx 512)
w8=$($dcomp eval "$model" --text "$text" --json --ctx 512)
ppl() { python3 -c 'import json,sys; print("%.4f" % json.loads(sys.argv[1])["ppl"])' "$1"; }
f32_ppl=$(ppl "$f32")
echo "model: $model; f32 ppl $f32_ppl; engine W8A8 (no pack) ppl $(ppl "$w8")"
echo
echo "| stages | codec | stored bytes | file bytes | INT8 / stored | ppl | vs f32 |"
echo "|---|---|---:|---:|---:|---:|---:|"
run() {  # name, codec, pack options...
  local name="$1" codec="$2"; shift 2
  local f="$out/$(echo "$name-$codec" | tr ' +,' '___').dcm"
  local rep
  rep=$($dcomp pack "$model" "$f" --codec "$codec" "$@" 2>/dev/null | grep '^total:')
  local int8 stored file
  int8=$(echo "$rep" | sed -E 's/.*INT8 ([0-9]+) B.*/\1/')
  stored=$(echo "$rep" | sed -E 's/.*stored blocks ([0-9]+) B.*/\1/')
  file=$(echo "$rep" | sed -E 's/.*file ([0-9]+) B.*/\1/')
  local p
  p=$(ppl "$($dcomp eval "$f" --text "$text" --json --ctx 512)")
  python3 -c 'import sys; i,s,f,p,r=map(float,sys.argv[3:8]); print("| %s | %s | %d | %d | %.3fx | %.4f | %+.2f%% |" % (sys.argv[1], sys.argv[2], s, f, i/s, p, 100*(p/r-1)))' \
    "$name" "$codec" "$int8" "$stored" "$file" "$p" "$f32_ppl"
}
plain=(--no-scaling --no-rate-alloc)
run "plain INT8" raw "${plain[@]}"
run "plain INT8" zstd "${plain[@]}"
run "plain INT8" rans "${plain[@]}"
run "plain INT8" auto "${plain[@]}"
run "+ scaling" auto --no-rate-alloc
run "+ scaling + pruning 5%" auto --no-rate-alloc --prune 0.05
run "+ scaling + rate allocation (default)" auto
run "+ scaling + rate allocation" zstd
run "+ scaling + pruning 5% + rate allocation" auto --prune 0.05
