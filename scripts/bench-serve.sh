#!/bin/bash
# The serving benchmark: tokens/s, time per token and peak RSS of `dcomp generate` on a .dcm model
# at several RAM budgets, for the adaptive controller and the fixed policies, optionally inside a
# cgroup v1 (memory.limit_in_bytes = budget + 4 MiB, page cache counted; blkio read throttle) that
# simulates a device:  none (no cgroup), nvme (800 MB/s), sd (80 MB/s). Needs root for cgroups.
#
#   scripts/bench-serve.sh MODEL.dcm            # every profile, budget and policy
#   PROFILES="sd" BUDGETS="600MiB" POLICIES="adaptive stream-all" scripts/bench-serve.sh MODEL.dcm
#
# Output: one line per run (profile, budget, policy, tokens/s, ms/token, peak RSS, plan), and the
# raw JSON of each run under $OUT (default bench-serve-out/).
set -uo pipefail
MODEL=${1:?usage: bench-serve.sh MODEL.dcm}
DCOMP=${DCOMP:-$(dirname "$0")/../build/release/packer/dcomp}
N=${N:-8}
CTX=${CTX:-512}
PROFILES=${PROFILES:-"none nvme sd"}
BUDGETS=${BUDGETS:-"100% 75% 50% 35% 25% 600MiB"}
POLICIES=${POLICIES:-"adaptive all-compressed stream-all static-split"}
READER_FLAGS=${READER_FLAGS:---direct}
OUT=${OUT:-bench-serve-out}
mkdir -p "$OUT"

src=$(df --output=source "$MODEL" | tail -1)
dev=$(lsblk -no MAJ:MIN "$src" 2>/dev/null | head -1 | tr -d ' ')
mem_cg=/sys/fs/cgroup/memory/dcomp_bench
blk_cg=/sys/fs/cgroup/blkio/dcomp_bench

bytes_of() {  # budget spec -> bytes (percentages of the INT8 size)
  case "$1" in
    *%) echo $(( INT8 * ${1%\%} / 100 ));;
    *MiB) echo $(( ${1%MiB} * 1048576 ));;
    *) echo "$1";;
  esac
}
INT8=$("$DCOMP" generate "$MODEL" --prompt x -n 1 --ctx "$CTX" --budget 1G $READER_FLAGS --json 2>/dev/null |
       python3 -c 'import json,sys; print(json.load(sys.stdin)["runtime"]["memory"]["int8_model_bytes"])')
echo "# model $MODEL, INT8 $INT8 B, $N tokens, ctx $CTX, reader flags '$READER_FLAGS', $(date -u +%F)"
printf "%-5s %-8s %-15s %9s %9s %10s  %s\n" profile budget policy tok/s ms/tok peakMiB plan
for profile in $PROFILES; do
  for budget in $BUDGETS; do
    b=$(bytes_of "$budget")
    for policy in $POLICIES; do
      tag="${profile}_${budget%\%}_${policy}"
      cmd=("$DCOMP" generate "$MODEL" --prompt "Once upon a time" -n "$N" --ctx "$CTX"
           --budget "$b" --policy "$policy" $READER_FLAGS --json)
      if [ "$profile" = none ]; then
        "${cmd[@]}" > "$OUT/$tag.json" 2> "$OUT/$tag.err"
      else
        case "$profile" in nvme) bps=800000000;; sd) bps=80000000;; *) echo "unknown profile $profile"; exit 2;; esac
        mkdir -p "$mem_cg" "$blk_cg"
        sync; echo 3 > /proc/sys/vm/drop_caches
        echo $(( b + 4194304 )) > "$mem_cg/memory.limit_in_bytes"
        echo "$dev $bps" > "$blk_cg/blkio.throttle.read_bps_device"
        sh -c 'echo $$ > '"$mem_cg"'/cgroup.procs; echo $$ > '"$blk_cg"'/cgroup.procs; exec "$@"' sh \
          "${cmd[@]}" > "$OUT/$tag.json" 2> "$OUT/$tag.err"
      fi
      python3 - "$OUT/$tag.json" "$OUT/$tag.err" "$profile" "$budget" "$policy" <<'PY'
import json, sys
out, err, profile, budget, policy = sys.argv[1:]
try:
    d = json.load(open(out))
    r = d["runtime"]; p = r["plan"]
    tps = d["decode_tokens_per_second"]
    plan = "%dD/%dP/%dC/%dF %s s%d st%d c%d d%d" % (p["tiers"].count("decoded"), p["tiers"].count("packed"),
        p["tiers"].count("compressed"), p["tiers"].count("flash"), p.get("decode", "ahead"), p["slots"], p["staging"], p["compute_threads"], p["decode_threads"])
    print("%-5s %-8s %-15s %9.3f %9.1f %10.1f  %s" % (profile, budget, policy, tps, 1e3 / tps if tps else 0,
          r["memory"]["peak_rss"] / 2**20, plan))
except Exception:
    msg = open(err).read().strip().splitlines()
    print("%-5s %-8s %-15s %9s %9s %10s  %s" % (profile, budget, policy, "-", "-", "-",
          (msg[-1] if msg else "failed")[:110]))
PY
    done
  done
done
[ -d "$mem_cg" ] && rmdir "$mem_cg" 2>/dev/null
[ -d "$blk_cg" ] && rmdir "$blk_cg" 2>/dev/null
exit 0
