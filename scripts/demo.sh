#!/usr/bin/env bash
# The main job: install dependencies, build, pack the embedded model (stories260K) into the doubly
# compressed .dcm container, check it, and generate text from it, printing the size and throughput
# figures. Run from anywhere, as root on a fresh Debian 12. (The daemon and dcompctl join this
# script when they exist.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build build/release --target dcomp
dcomp=build/release/packer/dcomp
packed=build/stories260K.dcm
echo
echo "== dcomp pack (embedded stories260K -> $packed; calibration text sampled from the model)"
$dcomp pack models/stories260K.bin "$packed"
echo
echo "== dcomp inspect --verify"
$dcomp inspect "$packed" --verify
echo
echo "== dcomp generate from the .dcm (W8A8 kernels, greedy)"
$dcomp generate "$packed" --prompt "Once upon a time" -n 128 --verbose
echo
echo "== the same, sampled (temperature 0.8, top-p 0.9, seed 1)"
$dcomp generate "$packed" --prompt "The little dog" -n 96 --temperature 0.8 --top-p 0.9 --seed 1
echo
echo "== streamed from the .dcm under a 12 MiB RAM budget (every layer read and decoded per token)"
$dcomp generate "$packed" --prompt "Once upon a time" -n 64 --budget 12MiB --policy stream-all
