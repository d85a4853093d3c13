#!/usr/bin/env bash
# dcompctl depends on proto/, config/ and base/ only (DESIGN's dependency rules). Fails when its
# symbols (defined or referenced, demangled) include the engine, the runtime, storage, the kernels,
# the gRPC server side or io_uring.
set -euo pipefail
bin="$1"
symbols=$(nm -C "$bin"; nm -C -D "$bin" 2>/dev/null || true)
forbidden='dcomp::runtime::|dcomp::server::|dcomp::storage::|dcomp::kernels::|dcomp::Transformer|dcomp::Tokenizer|dcomp::ModelFile|dcomp::packer::|io_uring|grpc::Server(Builder)?::'
if hits=$(grep -E "$forbidden" <<<"$symbols" | sort -u | head -20) && [[ -n "$hits" ]]; then
  echo "dcompctl links code it must not depend on:" >&2
  echo "$hits" >&2
  exit 1
fi
n=$(grep -c 'dcomp::config::' <<<"$symbols" || true)
if [[ "$n" -eq 0 ]]; then
  echo "expected dcompctl to use the config library (dcomp::config::), found no such symbol" >&2
  exit 1
fi
echo "dcompctl: no engine, runtime, storage, kernels, server or io_uring symbols ($n config symbols)"
