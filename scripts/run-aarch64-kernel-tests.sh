#!/usr/bin/env bash
# Runs the aarch64 kernel tests under qemu-user twice: on a CPU with the dot-product extension
# (all variants: ref, neon, neon_dotprod) and on a Cortex-A53 (no dot product: ref, neon).
# Exit 77 (skipped) when the cross build or qemu-aarch64 is missing.
set -euo pipefail
bin=${1:?usage: run-aarch64-kernel-tests.sh PATH/TO/kernels_test}
if [[ ! -x "$bin" ]]; then echo "SKIP: $bin not built (cmake --preset aarch64 && cmake --build build/aarch64)"; exit 77; fi
if ! command -v qemu-aarch64 >/dev/null; then echo "SKIP: qemu-aarch64 not installed"; exit 77; fi
echo "== qemu-aarch64 -cpu max (NEON + dot product)"
qemu-aarch64 -cpu max "$bin" --gtest_brief=1
echo "== qemu-aarch64 -cpu cortex-a53 (NEON, no dot product)"
qemu-aarch64 -cpu cortex-a53 "$bin" --gtest_brief=1
