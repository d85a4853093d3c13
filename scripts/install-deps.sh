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
  g++-aarch64-linux-gnu qemu-user qemu-user-static binfmt-support clang libclang-rt-14-dev
)
# The aarch64 cross build links against Debian's arm64 packages, installed beside the host's
# (multiarch); protoc and grpc_cpp_plugin stay the host's.
arm64_packages=(
  libgrpc++-dev:arm64 libprotobuf-dev:arm64 libzstd-dev:arm64 liburing-dev:arm64
  libspdlog-dev:arm64 libfmt-dev:arm64 libboost-dev:arm64 libsystemd-dev:arm64 libssl-dev:arm64
  libgtest-dev:arm64 libgmock-dev:arm64 libhtscodecs-dev:arm64 libpcre2-dev:arm64
)
need_update=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  if [[ $(id -u) -ne 0 ]]; then echo "run as root (dpkg --add-architecture needs it)" >&2; exit 1; fi
  dpkg --add-architecture arm64
  need_update=1
fi
missing=()
for p in "${packages[@]}" "${arm64_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then echo "run as root (apt-get install needs it)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
elif ((need_update)); then
  apt-get update -q
fi
# Node.js and npm for the HTTP API's client test (the OpenAI JavaScript library); Debian's unless
# the machine already has them (another packaging of Node.js brings its own npm).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then echo "run as root (apt-get install needs it)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends nodejs npm
fi
