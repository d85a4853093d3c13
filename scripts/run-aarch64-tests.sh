#!/usr/bin/env bash
# The aarch64 build's tests (cmake --preset aarch64: everything, cross-built against Debian's
# arm64 packages) under qemu-aarch64 in user mode with this root's arm64 libraries (-L /). Each
# test binary runs once (a process per test would pay qemu's start-up of a dynamically linked
# binary, ~2 s, 300 times), two at a time:
#   -cpu max (NEON with the dot-product extension): every unit test of base, kernels, storage,
#     engine, server (scheduler, validation, HTTP JSON, config) and packer, the runtime's planner
#     and residency tests, and a bounded set of integration tests that start the arm64 dcompd and
#     drive it over gRPC and HTTP, and of CLI tests; then the HTTP client test (curl and the
#     OpenAI JavaScript client) against the arm64 dcompd;
#   -cpu cortex-a53 (NEON without dot product): kernels and rANS decoders again;
#   and the tokens of the aarch64 dcomp against the x86 build's (embedded model and stories3M,
#   unpacked and packed, resident and streamed under budgets), on both cores.
# Left out under emulation, each covered by the native suite: the real-model accuracy runs
# (stories3M, llama.cpp's quantizations), the packer's whole pipeline, the streaming runtime's
# sweeps over budgets and its fault injection, the soak-like daemon tests (32 clients, drains) and
# the CLI's packing tests (a pack takes minutes under emulation). Tests that set budgets close to
# what the model needs are left out too: the process baseline they measure (VmRSS) includes
# qemu's own memory under emulation, so such a budget is refused as too small.
# Tests that start dcompd or the CLI run arm64 binaries from an arm64 process, which qemu-user hands
# to the kernel: binfmt_misc must run them with qemu (registered here when possible; without it
# those tests are left out, and the script says so). The models they serve are the ones the
# release build packed: the .dcm format is the same on every machine.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build/aarch64
t=$dir/tests
[[ -x $t/kernels/kernels_test ]] || { echo "no aarch64 build: cmake --preset aarch64 && cmake --build build/aarch64" >&2; exit 1; }
command -v qemu-aarch64 >/dev/null || { echo "qemu-aarch64 is not installed (scripts/install-deps.sh)" >&2; exit 1; }

binfmt=1
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
if command -v update-binfmts >/dev/null; then update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true; fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] ||
   ! grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64; then
  echo "NOTE: binfmt_misc has no qemu-aarch64 entry here: the integration and CLI tests are left out"
  binfmt=0
fi
models=build/release/tests/integration/models
if ((binfmt)); then
  [[ -f $models/s260.dcm && -f $models/small.dcm ]] ||
    { echo "the release build's test models are missing (ctest --test-dir build/release -R daemon_models)" >&2; exit 1; }
  mkdir -p "$t/integration/models"
  cp -p "$models/s260.dcm" "$models/small.dcm" "$t/integration/models/"
  touch "$t/integration/models/"*.dcm  # newer than the aarch64 dcomp: the fixture keeps them
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
passed=0
# run CPU NAME BINARY [gtest args]: in the background, at most two at a time.
run() {
  local cpu=$1 name=$2 bin=$3
  shift 3
  while (($(jobs -rp | wc -l) >= 2)); do wait -n || true; done
  (
    if qemu-aarch64 -L / -cpu "$cpu" "$bin" --gtest_brief=1 "$@" >"$logs/$name.log" 2>&1; then
      echo "ok $name ($cpu): $(grep -o '[0-9]* tests\? from [0-9]* test suites\? ran. ([0-9]* ms total)' "$logs/$name.log" | head -1)"
    else
      echo "FAILED $name ($cpu)"; tail -40 "$logs/$name.log"; touch "$logs/$name.failed"
    fi
  ) &
}
t0=$SECONDS
echo "== qemu-aarch64 -cpu max (NEON + dot product)"
run max kernels "$t/kernels/kernels_test"
run max rans "$t/storage/rans_test"
run max storage "$t/storage/storage_test"
run max base "$t/base/base_test" --gtest_filter=-ThreadPoolTest.ManySmallLoopsAndIdleSleep
run max engine "$t/engine/engine_test" --gtest_filter=-*Stories3M*:*Llamacpp*:Models/ReferenceTest.*
run max server "$t/daemon/server_test"
run max scheduler "$t/daemon/scheduler_test"
run max runtime "$t/runtime/runtime_test" --gtest_filter=ResidencyTest.*:StreamingTest.TooSmallBudgetIsAClearError
run max packer "$t/packer/packer_test" --gtest_filter=PackTest.PlainInt8EqualsTheEngineAndEntropyCodingIsLossless:PackTest.BadOptionsNameTheOption:PackTest.SyntheticModelsAreMarkedAndSkipCalibration
if ((binfmt)); then
  run max integration "$t/integration/daemon_integration_test" --gtest_filter=$(printf '%s' \
    "DaemonTest.GenerateStreamsTheEnginesTokens:DaemonTest.TokensArriveAsTheyAreGenerated:" \
    "DaemonTest.MalformedRequestsGetTheRightCodeAndNameTheField:DaemonTest.UnknownFieldsAreAccepted:" \
    "DaemonTest.ReflectionV1AndV1AlphaListAndDescribeTheServices:" \
    "DaemonTest.ChatOverGrpcAndHttpMatchesTheEngine:DaemonTest.StopStringsEndTheCompletionBeforeThem:" \
    "DaemonTest.MalformedProtobufIsInvalidArgument:DaemonTest.MetricsEndpointServesValidExposition")
  run max cli "$t/cli/cli_test" --gtest_filter=$(printf '%s' \
    "CliTest.HelpOnEveryCommandAndVersionOnEveryBinary:CliTest.GenerateJsonOnEmbeddedModel:" \
    "CliTest.TokenizeAndEvalJson:CliTest.BadInputGivesClearErrors:CliTest.ChatOneShotRecognisesTheTemplate")
fi
wait
echo "== qemu-aarch64 -cpu cortex-a53 (NEON, no dot product)"
run cortex-a53 kernels-a53 "$t/kernels/kernels_test"
run cortex-a53 rans-a53 "$t/storage/rans_test"
wait
if ((binfmt)); then
  echo "== the HTTP API of the arm64 dcompd: curl and the OpenAI JavaScript client"
  if QEMU_CPU=max bash tests/integration/http_clients_test.sh "$dir" "$t/integration/models/s260.dcm" \
      "$t/integration/models/small.dcm" >"$logs/http.log" 2>&1; then
    tail -5 "$logs/http.log"
  else
    echo "FAILED http_clients (arm64)"; tail -40 "$logs/http.log"; touch "$logs/http.failed"
  fi
fi

# The same tokens as the x86 build: the embedded model and stories3M, unpacked (imported and
# quantized at load) and packed (on this machine: the file is the same everywhere), resident and
# streamed under budgets, on both cores. The aarch64 dcomp logs the kernels and decoder it chose.
echo "== tokens of the aarch64 build == the x86 build's"
x86=build/release/packer/dcomp
arm=$dir/packer/dcomp
shared=${DCOMP_SHARED_DIR:-../shared}
# Plans rather than tight budgets: under emulation the process baseline the planner measures
# includes qemu's memory, so every case gets room and a policy that puts the weights where wanted:
# every layer read from the file and decoded per token (stream-all), or entropy-coded in RAM and
# decoded per token (all-compressed).
cases=("models/stories260K.bin|" "$models/s260.dcm|"
       "$models/s260.dcm|--budget 256MiB --policy all-compressed"
       "$models/s260.dcm|--budget 256MiB --policy stream-all")
if [[ -f $shared/models/gguf/stories3M-f32.gguf ]]; then
  s3m=build/release/tests/integration/models/s3m-fast.dcm
  if [[ ! -f $s3m ]]; then
    "$x86" pack "$shared/models/gguf/stories3M-f32.gguf" "$s3m.tmp" --no-scaling --no-rate-alloc \
      >/dev/null 2>&1 && mv "$s3m.tmp" "$s3m"
  fi
  cases+=("$shared/models/gguf/stories3M-f32.gguf|" "$s3m|"
          "$s3m|--budget 256MiB --policy all-compressed" "$s3m|--budget 256MiB --policy stream-all")
else
  echo "SKIP stories3M: $shared/models/gguf/stories3M-f32.gguf is absent"
fi
ids() { sed -n 's/.*"ids":\[\([0-9,]*\)\].*/\1/p'; }
for c in "${cases[@]}"; do
  model=${c%%|*} args=${c#*|}
  # shellcheck disable=SC2086
  want=$("$x86" generate "$model" --prompt "Once upon a time" -n 32 $args --json 2>/dev/null | ids) ||
    true
  for cpu in max cortex-a53; do
    # shellcheck disable=SC2086
    got=$(qemu-aarch64 -L / -cpu "$cpu" "$arm" generate "$model" --prompt "Once upon a time" -n 32 \
          $args --json --verbose 2>"$logs/verbose.txt" | ids) || true
    if [[ -n $want && $got == "$want" ]]; then
      echo "ok $(basename "$model") ${args:-resident} ($cpu): $(grep -o 'kernels [^,]*, rANS decoder [^,]*' "$logs/verbose.txt")"
    else
      echo "FAILED $(basename "$model") ${args:-resident} ($cpu): x86 [$want] aarch64 [$got]"
      cat "$logs/verbose.txt"; touch "$logs/tokens.failed"
    fi
  done
done
echo "aarch64 under qemu: $((SECONDS - t0)) s"
if ls "$logs"/*.failed >/dev/null 2>&1; then
  echo "FAILED: $(cd "$logs" && ls ./*.failed | sed 's|^\./||; s|\.failed$||' | tr '\n' ' ')"
  exit 1
fi
