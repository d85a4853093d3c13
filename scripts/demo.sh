#!/usr/bin/env bash
# The main job: install dependencies, build, pack the embedded model (stories260K) into the doubly
# compressed .dcm container, start dcompd on it under a RAM budget, generate text through
# dcompctl and through the OpenAI-compatible HTTP API (curl), chat through dcompctl, print dcompctl
# status and the Prometheus metrics, and stop the daemon (SIGTERM, graceful drain). Run from
# anywhere, as root on a fresh Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build build/release --target dcomp dcompd dcompctl
bin=build/release
work=build/demo
mkdir -p "$work"
packed=$work/stories260K.dcm
socket=unix:$(pwd)/$work/dcompd.sock
ctl="$bin/client/dcompctl --address $socket"

echo
echo "== dcomp pack (embedded stories260K -> $packed; calibration text sampled from the model)"
$bin/packer/dcomp pack models/stories260K.bin "$packed"
echo
echo "== dcomp inspect --verify"
$bin/packer/dcomp inspect "$packed" --verify

echo
echo "== dcompd: serve it on $socket and http://127.0.0.1:8080 under a 32 MiB budget (log: $work/dcompd.log)"
# The embedded model has no chat template: --chat-template names the family chat requests use.
$bin/daemon/dcompd --model "$packed" --listen "$socket" --budget 32MiB --metrics-port 9464 \
  --http-listen 127.0.0.1:8080 --chat-template zephyr >"$work/dcompd.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  $ctl health >/dev/null 2>&1 && break
  kill -0 $daemon 2>/dev/null || { cat "$work/dcompd.log"; exit 1; }
  sleep 0.1
done
$ctl health

echo
echo "== dcompctl generate (greedy; text streams as it is generated)"
$ctl generate --prompt "Once upon a time" -n 128
echo
echo "== dcompctl generate, sampled (temperature 0.8, top-p 0.9, seed 1), --json"
$ctl generate --prompt "The little dog" -n 64 --temperature 0.8 --top-p 0.9 --seed 1 --json
echo
echo "== curl POST http://127.0.0.1:8080/v1/completions (the OpenAI API; greedy)"
curl -s http://127.0.0.1:8080/v1/completions -H 'Content-Type: application/json' \
  -d '{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 32, "temperature": 0}'
echo
echo
echo "== dcompctl chat (a story model, not an instruct one: the answer is a story)"
$ctl chat --message "Tell me about a cat." -n 48
echo
echo "== dcompctl status"
$ctl status
echo
echo "== GET http://127.0.0.1:9464/metrics (first lines)"
exec 3<>/dev/tcp/127.0.0.1/9464
printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
sed -n '/^# HELP dcomp_token_latency/,/^dcomp_token_latency_seconds_count/p' <&3
exec 3<&-

echo
echo "== stop dcompd (SIGTERM: drain, exit 0)"
kill -TERM $daemon
wait $daemon && echo "dcompd exited 0"
trap - EXIT
echo "-- dcompd log:"
cat "$work/dcompd.log"

echo
echo "== in-process, streamed under a 12 MiB RAM budget (every layer read and decoded per token)"
$bin/packer/dcomp generate "$packed" --prompt "Once upon a time" -n 64 --budget 12MiB --policy stream-all
