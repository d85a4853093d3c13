#!/usr/bin/env bash
# The whole test suite: install dependencies, build (release, and the aarch64 kernels for
# qemu-user), run every test with CTest. Tests that need ../shared skip with a message when absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=$(nproc)
cmake --preset release >/dev/null
cmake --build build/release -j "$jobs"
cmake --preset aarch64 >/dev/null
cmake --build build/aarch64 -j "$jobs"
ctest --test-dir build/release --output-on-failure -j "$jobs" --timeout 900
