#!/usr/bin/env bash
# Runs every libFuzzer target of build/fuzz for a bounded time on a copy of its seed corpus
# (tests/fuzz/corpus/<target>), as many at a time as there are cores (each fuzzer is one
# process). A crash fails the run; its input is left in build/fuzz/artifacts/ to be fixed and
# added to the corpus as a regression case.
# Usage: scripts/run-fuzzers.sh [SECONDS_PER_TARGET] (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"
bin=build/fuzz/tests/fuzz
art=build/fuzz/artifacts
mkdir -p "$art"
rm -f "$art"/*.failed
parallel=$(nproc)
# fuzz TARGET: one target, its result in $art/TARGET.log (and TARGET.failed on a crash).
fuzz() {
  local target=$1 work
  work="$(mktemp -d)"
  cp -r "tests/fuzz/corpus/$target/." "$work/"
  if ! "$bin/$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$art/$target-" -print_final_stats=1 "$work" > "$art/$target.log" 2>&1; then
    touch "$art/$target.failed"
  fi
  rm -rf "$work"
}
targets=(fuzz_container fuzz_block_decoder fuzz_model_file fuzz_tokenizer fuzz_request)
for target in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= parallel)); do wait -n || true; done
  echo "== $target: ${secs}s"
  fuzz "$target" &
done
wait
status=0
for target in "${targets[@]}"; do
  if [[ -e "$art/$target.failed" ]]; then
    echo "FAILED: $target (see $art/$target.log)"; tail -30 "$art/$target.log"; status=1
  else
    echo "$target: $(grep -E '^stat::number_of_executed_units|^stat::new_units_added' \
      "$art/$target.log" | tr '\n' ' ')"
  fi
done
exit $status
