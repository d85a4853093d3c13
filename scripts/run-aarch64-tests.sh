#!/usr/bin/env bash
# Runs the aarch64 test binaries (kernels, rANS decoders) under qemu-user twice: on a CPU with the
# dot-product extension (`-cpu max`: every variant) and on a Cortex-A53 (NEON without dot product).
# Exit 77 (skipped) when the cross build or qemu-aarch64 is missing.
set -euo pipefail
(($#)) || { echo "usage: run-aarch64-tests.sh TEST_BINARY..."; exit 2; }
for bin in "$@"; do
  if [[ ! -x "$bin" ]]; then echo "SKIP: $bin not built (cmake --preset aarch64 && cmake --build build/aarch64)"; exit 77; fi
done
if ! command -v qemu-aarch64 >/dev/null; then echo "SKIP: qemu-aarch64 not installed"; exit 77; fi
for bin in "$@"; do
  echo "== $(basename "$bin"): qemu-aarch64 -cpu max (NEON + dot product)"
  qemu-aarch64 -cpu max "$bin" --gtest_brief=1
  echo "== $(basename "$bin"): qemu-aarch64 -cpu cortex-a53 (NEON, no dot product)"
  qemu-aarch64 -cpu cortex-a53 "$bin" --gtest_brief=1
done
