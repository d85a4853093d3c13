#!/usr/bin/env bash
# The soak: start dcompd on a model, run bench/dcomp_soak against it (8 clients, random
# cancellations, a budget change every few seconds), stop the daemon with SIGTERM and check that it
# exits 0. Prints the soak's JSON and the daemon's exit status.
#   scripts/soak.sh [MODEL.dcm]     default: the small synthetic shape, packed into build/soak/
# Environment: SOAK_SECONDS (600), CLIENTS (8), BUDGETS (60MiB,72MiB,90MiB,120MiB; the first must
# be at least the daemon's minimum for the model), EVERY (3 s), DCOMPD_ARGS (extra flags).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/release
cmake --build $bin --target dcomp dcompd dcomp_soak >/dev/null
work=build/soak
mkdir -p $work
model=${1:-}
if [[ -z $model ]]; then
  model=$work/small.dcm
  if [[ ! -f $model ]]; then
    $bin/packer/dcomp synth --shape small --entropy 6.13 $work/small.gguf >/dev/null
    $bin/packer/dcomp pack $work/small.gguf $model --no-scaling --no-rate-alloc >/dev/null
    rm -f $work/small.gguf
  fi
fi
budgets=${BUDGETS:-60MiB,72MiB,90MiB,120MiB}
sock=unix:$(pwd)/$work/dcompd.sock
rm -f $work/dcompd.sock
# shellcheck disable=SC2086
$bin/daemon/dcompd --model "$model" --listen "$sock" --budget "${budgets%%,*}" \
  --queue-depth 16 ${DCOMPD_ARGS:-} >$work/dcompd.log 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  $bin/client/dcompctl --address "$sock" health >/dev/null 2>&1 && break
  kill -0 $daemon 2>/dev/null || { cat $work/dcompd.log; exit 1; }
  sleep 0.1
done
set +e
$bin/bench/dcomp_soak --address "$sock" --seconds "${SOAK_SECONDS:-600}" --clients "${CLIENTS:-8}" \
  --budgets "$budgets" --budget-every "${EVERY:-3}"
soak=$?
kill -TERM $daemon
wait $daemon
code=$?
set -e
trap - EXIT
echo "dcompd exit status after SIGTERM: $code; soak verdict: $([[ $soak == 0 ]] && echo pass || echo FAIL)"
grep -c "generate" $work/dcompd.log | sed 's/^/request log lines: /'
[[ $soak == 0 && $code == 0 ]]
