#!/usr/bin/env bash
# The main job: install dependencies, build, and generate text with the embedded model
# (stories260K), printing the throughput figures. Run from anywhere, as root on a fresh Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build build/release --target dcomp
dcomp=build/release/packer/dcomp
echo
echo "== dcomp generate (embedded stories260K, W8A8 kernels, greedy)"
$dcomp generate models/stories260K.bin --prompt "Once upon a time" -n 128 --verbose
echo
echo "== the same, sampled (temperature 0.8, top-p 0.9, seed 1)"
$dcomp generate models/stories260K.bin --prompt "The little dog" -n 96 --temperature 0.8 --top-p 0.9 --seed 1
