#!/bin/bash
# The batching benchmark: dcompd serving 1, 2, 4 and 8 concurrent gRPC clients (bench/
# dcomp_batch_bench: prompts of 4-8 tokens, 64 generated each, EOS ignored), against the same
# requests sent one after another, in three settings:
#   a  stories3M, every layer streamed (--policy stream-all)
#   b  a TinyLlama-shaped model at a 600 MiB budget inside the `nvme` cgroup (800 MB/s reads,
#      memory limit budget + 64 MiB, page cache counted; O_DIRECT reads)
#   c  the same model fully resident (no budget)
# With OLD_DCOMPD set to a dcompd built before batching, one client alone is also measured on both
# daemons, alternating old and new ALTERNATIONS times (3), and the median ratio printed. Needs root
# (cgroups). NEW_FLAGS are given to the new daemon only (e.g. --kv-cache-tokens 512); ALONE_ONLY=1
# runs only the alternation.
#
#   S3M=stories3M.dcm TL=tinyllama.dcm [OLD_DCOMPD=...] [CASES="a b c"] scripts/bench-batching.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/release}
DCOMPD=${DCOMPD:-$BIN/daemon/dcompd}
BENCH=$BIN/bench/dcomp_batch_bench
CTL=$BIN/client/dcompctl
CASES=${CASES:-"a b c"}
CTX=${CTX:-512}
OUT=${OUT:-bench-batching-out}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
sock=unix:$OUT/dcompd.sock
mem_cg=/sys/fs/cgroup/memory/dcomp_batch
blk_cg=/sys/fs/cgroup/blkio/dcomp_batch
daemon=

start() {  # start BINARY PROFILE BUDGET_BYTES MODEL FLAGS...: a daemon, healthy on return
  local bin=$1 profile=$2 budget=$3 model=$4
  shift 4
  rm -f "$OUT/dcompd.sock"
  sync; echo 3 > /proc/sys/vm/drop_caches
  local cmd=("$bin" --model "$model" --listen "$sock" --ctx "$CTX" --queue-depth 32 "$@")
  if [ "$profile" = nvme ]; then
    local dev
    dev=$(lsblk -no MAJ:MIN "$(df --output=source "$model" | tail -1)" | head -1 | tr -d ' ')
    mkdir -p "$mem_cg" "$blk_cg"
    echo $(( budget + 67108864 )) > "$mem_cg/memory.limit_in_bytes"
    echo "$dev 800000000" > "$blk_cg/blkio.throttle.read_bps_device"
    sh -c 'echo $$ > '"$mem_cg"'/cgroup.procs; echo $$ > '"$blk_cg"'/cgroup.procs; exec "$@"' sh \
      "${cmd[@]}" > "$OUT/dcompd.log" 2>&1 &
  else
    "${cmd[@]}" > "$OUT/dcompd.log" 2>&1 &
  fi
  daemon=$!
  for _ in $(seq 1 1200); do
    "$CTL" --address "$sock" health > /dev/null 2>&1 && return 0
    kill -0 $daemon 2> /dev/null || { tail -5 "$OUT/dcompd.log"; return 1; }
    sleep 0.1
  done
  return 1
}

stop() {
  kill -TERM $daemon 2> /dev/null
  wait $daemon 2> /dev/null
}

one_client() {  # aggregate tokens/s of one client, ALONE_REQUESTS requests back to back
  "$BENCH" --address "$sock" --clients 1 --rounds "${ALONE_REQUESTS:-2}" --no-sequential --json \
    $PROMPTS | python3 -c 'import json,sys; print("%.3f" % json.loads(sys.stdin.read())["aggregate_tokens_per_second"])'
}

run_case() {  # run_case NAME PROFILE BUDGET_BYTES MODEL FLAGS...
  local name=$1 profile=$2 budget=$3 model=$4
  shift 4
  echo "## $name: $model, profile $profile, flags: --ctx $CTX $* ${NEW_FLAGS:-}"
  if [ -z "${ALONE_ONLY:-}" ]; then
    # shellcheck disable=SC2086
    start "$DCOMPD" "$profile" "$budget" "$model" "$@" ${NEW_FLAGS:-} || { echo "dcompd failed to start"; return; }
    "$BENCH" --address "$sock" --label "$name" --clients "${CLIENTS:-1,2,4,8}" --rounds "${ROUNDS:-1}" \
      $PROMPTS
    "$CTL" --address "$sock" status | grep -E "memory|kv cache|queue|plan" | sed 's/^/  /'
    stop
  fi
  if [ -n "${OLD_DCOMPD:-}" ]; then
    echo "one client alone (${ALONE_REQUESTS:-2} requests), before batching (old) and now (new), alternating:"
    local ratios=()
    for i in $(seq 1 "${ALTERNATIONS:-3}"); do
      start "$OLD_DCOMPD" "$profile" "$budget" "$model" "$@" || return
      old=$(one_client); stop
      # shellcheck disable=SC2086
      start "$DCOMPD" "$profile" "$budget" "$model" "$@" ${NEW_FLAGS:-} || return
      new=$(one_client); stop
      ratios+=("$(python3 -c "print('%.3f' % ($new / $old))")")
      echo "  round $i: old $old tok/s, new $new tok/s, new/old ${ratios[-1]}"
    done
    python3 -c "import statistics,sys; print('  median new/old %.3f' % statistics.median(map(float, sys.argv[1:])))" "${ratios[@]}"
  fi
}

echo "# $(date -u +%F) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs"
for c in $CASES; do
  case $c in
    a) PROMPTS= run_case "a stream-all" none 0 "${S3M:?S3M=stories3M.dcm}" --policy stream-all ;;
    b) PROMPTS=--synthetic run_case "b 600MiB nvme" nvme 629145600 "${TL:?TL=tinyllama.dcm}" --budget 600MiB --direct ;;
    c) PROMPTS=--synthetic run_case "c resident" none 0 "${TL:?TL=tinyllama.dcm}" ;;
  esac
done
[ -d "$mem_cg" ] && rmdir "$mem_cg" 2> /dev/null
[ -d "$blk_cg" ] && rmdir "$blk_cg" 2> /dev/null
exit 0
