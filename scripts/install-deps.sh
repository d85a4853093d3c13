#!/usr/bin/env bash
# Installs dcomp's build and test dependencies from Debian 12 (bookworm) packages. Idempotent;
# needs root. Nothing else is downloaded at build or run time.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  liburing-dev libboost-dev libzstd-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libssl-dev curl
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libgtest-dev libgmock-dev googletest libbenchmark-dev libsystemd-dev openssl
  libhtscodecs-dev libpcre2-dev
  g++-aarch64-linux-gnu qemu-user clang libclang-rt-14-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then echo "run as root (apt-get install needs it)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Node.js and npm for the HTTP API's client test (the OpenAI JavaScript library); Debian's unless
# the machine already has them (another packaging of Node.js brings its own npm).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then echo "run as root (apt-get install needs it)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends nodejs npm
fi
