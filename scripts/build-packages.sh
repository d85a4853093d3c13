#!/usr/bin/env bash
# Builds the Debian packages: dcomp_VERSION_amd64.deb from the release build and
# dcomp_VERSION_arm64.deb from the aarch64 cross build (Debian's arm64 packages through multiarch;
# scripts/install-deps.sh), both with the same demo model (packed once on this machine: the .dcm
# format is the same everywhere). Prints lintian's findings for each. Output: build/packages/.
# Usage: scripts/build-packages.sh [amd64] [arm64]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
archs=("$@")
((${#archs[@]})) || archs=(amd64 arm64)
jobs=$(nproc)
out=build/packages
mkdir -p "$out"
cmake --preset release >/dev/null
cmake --build build/release -j "$jobs" --target dcomp dcompd dcompctl demo_model package_docs
demo=$(pwd)/build/release/packaging/stories260K.dcm
for arch in "${archs[@]}"; do
  case $arch in
    amd64) dir=build/release ;;
    arm64)
      dir=build/aarch64
      cmake --preset aarch64 -DDCOMP_DEMO_MODEL="$demo" >/dev/null
      cmake --build "$dir" -j "$jobs" --target dcomp dcompd dcompctl package_docs
      ;;
    *) echo "unknown architecture '$arch' (amd64, arm64)" >&2; exit 2 ;;
  esac
  (cd "$dir" && cpack -G DEB -B "$(pwd)/../packages/cpack-$arch" >/dev/null)
  deb=$(ls "$out/cpack-$arch"/dcomp_*_"$arch".deb)
  mv "$deb" "$out/"
  deb=$out/$(basename "$deb")
  echo "== $deb"
  dpkg-deb --field "$deb"
  if command -v lintian >/dev/null; then
    echo "-- lintian:"
    lintian --no-tag-display-limit "$deb" || true
  fi
done
