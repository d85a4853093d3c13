#!/usr/bin/env bash
# The whole test suite: install dependencies; build and test the release build, then the aarch64
# build (everything, cross-built against Debian's arm64 packages) under qemu-aarch64
# (scripts/run-aarch64-tests.sh says which tests it leaves out), then build and test again under AddressSanitizer +
# UndefinedBehaviorSanitizer, then the concurrency tests under ThreadSanitizer (built with clang,
# which also checks the thread-safety annotations), then build the libFuzzer targets (clang) and
# run each for a bounded time on its seed corpus. Tests that need ../shared skip with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each stage's start is printed with the time spent so far (the whole must stay well under an hour
# on two cores).
stage() { echo "== $1 (after $((SECONDS / 60)) min $((SECONDS % 60)) s)"; }
bash scripts/install-deps.sh
jobs=$(nproc)
stage "the release build and its tests"
cmake --preset release >/dev/null
cmake --build build/release -j "$jobs"
ctest --test-dir build/release --output-on-failure -j "$jobs" --timeout 900
stage "the aarch64 build under qemu-aarch64"
cmake --preset aarch64 >/dev/null
cmake --build build/aarch64 -j "$jobs"
bash scripts/run-aarch64-tests.sh
stage "the same suite under ASan + UBSan"
cmake --preset asan >/dev/null
cmake --build build/asan -j "$jobs"
# Left out here, run by the release build: the packer's whole-pipeline tests and the CLI's packed
# tier tests (each packs stories260K, three minutes under ASan), the second streaming sweep over a
# packed model (StreamingTest.SameTokensAsResidentWithAWidthPerBlockOfRows packs and sweeps one
# under ASan), and the reference perplexities of the llama2.c copy of stories260K and of
# stories3M in both formats (a minute each under ASan: the f32 and W8A8 forward passes over the
# evaluation text, the same code under ASan as for the embedded model and the stories260K GGUF,
# which run here). Every other test runs, the streaming sweeps on fewer cases (streaming_test.cc).
ctest --test-dir build/asan --output-on-failure -j "$jobs" --timeout 1800 -E "$(printf '%s' \
  "PackTest.UntiedTokenMatricesEachInTheirOwnOrder|PackTest.FullPipelineIsLosslessOverItsOwnInt8|" \
  "PackTest.CalibSeedChoosesTheCalibrationSample|PackTest.TokenMatricesStoredByUseScoreLikeTheSourceModel|" \
  "CliTest.PackedTierContract|CliTest.PackedBlocksReadInPlaceGiveTheSameTokens|" \
  "StreamingTest.SameTokensAsResidentWithTwoTokenMatricesInTheirOwnOrders|" \
  "ReferenceTest.PerplexityF32MatchesAndW8A8Within1Percent/(Llama2c260K|Llama2c3M|Gguf3MF32) ")"
stage "the concurrency tests under ThreadSanitizer (thread pool, streaming runtime, scheduler)"
# Built with clang, whose -Wthread-safety (an error, like every warning) also checks the locking
# annotated with base/mutex.h (GUARDED_BY, REQUIRES, ...) in everything these targets compile.
# The daemon's gRPC and HTTP paths are left out of the run (scheduler_test is the scheduler alone;
# dcomp_server_thread_safety only checks their annotations): Debian's gRPC and abseil are not
# built with TSan, whose reports about their internals would be noise.
cmake --preset tsan >/dev/null
cmake --build build/tsan -j "$jobs" --target base_test runtime_test scheduler_test \
  dcomp_server_thread_safety
# The streaming sweeps over packed models are left out (their threads are those of the sweep on
# the synthetic model; what they add is the stored row orders and widths, which ASan covers).
ctest --test-dir build/tsan --output-on-failure -j "$jobs" --timeout 1800 \
  -R "ThreadPoolTest|StreamingTest|FaultTest|ResidencyTest|SchedulerTest|LatencyWindowTest" \
  -E "Stories3M|SameTokensAsResidentWithAWidthPerBlockOfRows|SameTokensAsResidentWithTwoTokenMatrices"
stage "fuzzers (bounded time per target)"
cmake --preset fuzz >/dev/null
cmake --build build/fuzz -j "$jobs"
bash scripts/run-fuzzers.sh "${DCOMP_FUZZ_SECONDS:-30}"
stage "done"
