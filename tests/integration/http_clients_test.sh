#!/usr/bin/env bash
# dcompd's OpenAI-compatible HTTP API driven by outside clients: curl, and the official OpenAI
# client library for JavaScript (npm `openai`, pinned by openai_client/package-lock.json and
# installed here with `npm ci` into the build folder; Node.js from the system). Greedy and seeded
# output must equal `dcomp generate` / `dcomp chat` on the same input.
# Usage: http_clients_test.sh BUILD_DIR S260_DCM SMALL_DCM
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$1 s260=$2 small=$3
dcomp=$build/packer/dcomp dcompd=$build/daemon/dcompd
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for l in "$work"/*.log; do echo "== $l" >&2; tail -20 "$l" >&2; done; exit 1; }

for tool in node npm curl; do
  command -v $tool >/dev/null || fail "$tool is not installed (scripts/install-deps.sh installs it)"
done
# The client library, once per lockfile.
client=$build/openai_client
if ! cmp -s "$here/openai_client/package-lock.json" "$client/package-lock.json" ||
   [[ ! -d $client/node_modules/openai ]]; then
  rm -rf "$client" && mkdir -p "$client"
  cp "$here/openai_client/package.json" "$here/openai_client/package-lock.json" "$client/"
  (cd "$client" && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci (openai client)"
fi
cp "$here/openai_client/test.mjs" "$client/"

# Starts dcompd with an HTTP listener on a free port; sets $url.
start() {
  local name=$1; shift
  "$dcompd" --listen "unix:$work/$name.sock" --http-listen 127.0.0.1:0 "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  local port="" scheme=""
  for _ in $(seq 300); do
    scheme=$(sed -n 's/.*HTTP API (OpenAI-compatible) on \(https*\):.*/\1/p' "$work/$name.log")
    port=$(sed -n 's/.*HTTP API (OpenAI-compatible) on https*:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$work/$name.log")
    if [[ -n $port ]] && grep -q "loaded and warmed up" "$work/$name.log"; then break; fi
    sleep 0.1
  done
  [[ -n $port ]] || fail "$name: no HTTP listener"
  url=$scheme://127.0.0.1:$port
}

# What dcomp itself generates for the same inputs.
prompt="Once upon a time" message="Hello there" n=24
"$dcomp" generate "$s260" --prompt "$prompt" -n $n --json >"$work/gen.json" 2>/dev/null
"$dcomp" chat "$s260" --chat-template zephyr --message "$message" -n $n --json \
  >"$work/chat_greedy.json" 2>/dev/null
"$dcomp" chat "$s260" --chat-template zephyr --message "$message" -n $n --temperature 0.8 \
  --seed 7 --json >"$work/chat_seeded.json" 2>/dev/null
node -e '
  const fs = require("fs");
  const [g, cg, cs] = process.argv.slice(1, 4).map((p) => JSON.parse(fs.readFileSync(p, "utf8")));
  const finish = (r) => (r === "length" || r === "context" ? "length" : "stop");
  console.log(JSON.stringify({
    prompt: process.argv[4], message: process.argv[5], n: Number(process.argv[6]),
    completion: g.completion, completion_finish: finish(g.stop_reason),
    completion_prompt_tokens: g.prompt_tokens, completion_tokens: g.generated_tokens,
    chat_greedy: cg.completion, chat_seeded: cs.completion, temperature: 0.8, seed: 7,
  }));' "$work/gen.json" "$work/chat_greedy.json" "$work/chat_seeded.json" \
  "$prompt" "$message" $n >"$work/expected.json"

echo "test-key-$$" >"$work/key"
start serve --model "$s260" --chat-template zephyr --api-key-file "$work/key"
auth=(-H "Authorization: Bearer test-key-$$")

# curl: status codes and bodies.
code() { curl -s -o "$work/body" -w '%{http_code}' "$@"; }
[[ $(code "$url/health") == 200 ]] || fail "/health"
[[ $(code "$url/v1/models") == 401 ]] || fail "no key: expected 401"
grep -q '"type":"authentication_error"' "$work/body" || fail "401 body: $(cat "$work/body")"
[[ $(code "${auth[@]}" "$url/v1/models") == 200 ]] || fail "/v1/models"
grep -q '"object":"list"' "$work/body" || fail "models body"
[[ $(code "${auth[@]}" -d 'not json' "$url/v1/completions") == 400 ]] || fail "bad JSON: 400"
grep -q '"param":"body"' "$work/body" || fail "bad JSON body: $(cat "$work/body")"
[[ $(code "${auth[@]}" -d '{"prompt":"x","max_tokens":"many"}' "$url/v1/completions") == 400 ]] ||
  fail "wrong type: 400"
grep -q 'max_tokens: expected an integer, got string' "$work/body" || fail "$(cat "$work/body")"
[[ $(code "${auth[@]}" "$url/v1/engines") == 404 ]] || fail "unknown route: 404"
head -c 100000 /dev/zero | tr '\0' a | sed 's/^/{"prompt":"/; s/$/"}/' >"$work/big.json"
[[ $(code "${auth[@]}" --data-binary @"$work/big.json" "$url/v1/completions") == 413 ]] ||
  fail "huge body: 413"
body=$(printf '{"model":"x","prompt":"%s","max_tokens":%d,"temperature":0}' "$prompt" $n)
[[ $(code "${auth[@]}" -H 'Content-Type: application/json' -d "$body" "$url/v1/completions") == 200 ]] ||
  fail "completion: $(cat "$work/body")"
node -e '
  const fs = require("fs");
  const got = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
  const want = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  if (got.choices[0].text !== want.completion) {
    console.error("curl completion", JSON.stringify(got.choices[0].text), "!=", JSON.stringify(want.completion));
    process.exit(1);
  }' "$work/body" "$work/expected.json" || fail "curl completion differs from dcomp generate"
# A client that waits for "100 Continue" before it sends the body gets the same completion.
cp "$work/body" "$work/completion.json"
[[ $(code "${auth[@]}" -H 'Expect: 100-continue' -H 'Content-Type: application/json' -d "$body" \
  "$url/v1/completions") == 200 ]] || fail "Expect: 100-continue: $(cat "$work/body")"
node -e '
  const fs = require("fs");
  const [a, b] = process.argv.slice(1, 3).map((p) => JSON.parse(fs.readFileSync(p, "utf8")));
  process.exit(a.choices[0].text === b.choices[0].text ? 0 : 1);' "$work/body" "$work/completion.json" ||
  fail "Expect: 100-continue: a different completion"
curl -sN "${auth[@]}" -d "${body%\}},\"stream\":true}" "$url/v1/completions" >"$work/sse"
[[ $(grep -c '^data: ' "$work/sse") -gt 3 ]] || fail "SSE: $(cat "$work/sse")"
[[ $(grep '^data: ' "$work/sse" | tail -1) == "data: [DONE]" ]] || fail "SSE does not end with [DONE]"
echo "curl: health, models, auth, bad JSON, wrong type, 404, 413, completion, 100-continue, SSE: ok"

(cd "$client" && node test.mjs serve "$url" "test-key-$$" "$work/expected.json") ||
  fail "openai client (serve)"
[[ $(code "$url/health") == 200 ]] || fail "/health after the errors"

# A slow model and one queue place: an abandoned stream is cancelled, a full queue answers 429.
start busy --model "$small" --threads 1 --queue-depth 1 --max-batch 1
(cd "$client" && node test.mjs busy "$url") || fail "openai client (busy)"
for _ in $(seq 100); do
  grep -q 'http completions .*status=CANCELLED' "$work/busy.log" && break
  sleep 0.1
done
grep -q 'http completions .*status=CANCELLED' "$work/busy.log" || fail "abandoned stream not cancelled"
grep -q 'http completions .*status=RESOURCE_EXHAUSTED' "$work/busy.log" || fail "429 not logged"

# TLS with client certificates (mutual TLS), as for gRPC's TCP listeners.
(
  cd "$work"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=test-ca
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost
  printf 'subjectAltName=IP:127.0.0.1\n' >san.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
    -days 1 -extfile san.ext
  openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=client
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 1
) >/dev/null 2>&1 || fail "openssl: test certificates"
cat >"$work/tls.textproto" <<CONF
model: "$s260"
tls { cert_file: "$work/server.pem" key_file: "$work/server.key" client_ca_file: "$work/ca.pem" }
CONF
start tls --config "$work/tls.textproto"
[[ $url == https://* ]] || fail "TLS listener not https: $url"
tls=(--cacert "$work/ca.pem" --cert "$work/client.pem" --key "$work/client.key")
[[ $(code "${tls[@]}" "$url/health") == 200 ]] || fail "mutual TLS: /health"
[[ $(code "${tls[@]}" -d '{"prompt":"Once","max_tokens":4}' "$url/v1/completions") == 200 ]] ||
  fail "mutual TLS: completion"
curl -s --cacert "$work/ca.pem" "$url/health" >/dev/null && fail "TLS without a client certificate accepted"
curl -s "${url/https/http}/health" >/dev/null && fail "plaintext accepted on the TLS listener"
echo "TLS: mutual TLS required and served: ok"
echo "http clients: all ok"
