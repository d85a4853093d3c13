#!/usr/bin/env bash
# Installs the Debian packages the way a Pi owner would and checks that the service comes up: each
# package (build/packages/dcomp_*_ARCH.deb, scripts/build-packages.sh) goes into a fresh Debian
# bookworm root made by debootstrap from Debian's archive (arm64 under qemu-user through
# binfmt_misc), with `apt-get install ./dcomp_*.deb`. In the root, dcompd starts as the packaged
# user from the packaged config on the packaged demo model, and `dcompctl health` (which finds
# the socket through that config) must answer SERVING; `dcompctl generate` must generate. Then
# (amd64, with systemd-nspawn) the root gets systemd and boots: the packaged unit, enabled, must
# reach READY, get watchdog pings and serve. Roots are cached in build/roots/ (delete it to start
# over). Needs root and the network to Debian.
# Usage: scripts/test-packages.sh [amd64] [arm64]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
archs=("$@")
# Every dcompd still running in a root this script made (a failed run must not leave them).
stop_daemons() {
  for p in /proc/[0-9]*; do
    [[ $(cat "$p/comm" 2>/dev/null) == dcompd && $(readlink "$p/root") == */build/roots/run-* ]] &&
      kill -TERM "${p#/proc/}" 2>/dev/null || true
  done
}
((${#archs[@]})) || archs=(amd64 arm64)
[[ $(id -u) -eq 0 ]] || { echo "run as root (debootstrap, chroot)" >&2; exit 1; }
need=()
for p in debootstrap qemu-user-static binfmt-support systemd-container; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

mounted=()
cleanup() {
  stop_daemons
  sleep 1
  for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT

status=0
for arch in "${archs[@]}"; do
  deb=$(ls build/packages/dcomp_*_"$arch".deb 2>/dev/null | tail -1)
  [[ -n $deb ]] || { echo "no package for $arch: run scripts/build-packages.sh $arch" >&2; exit 1; }
  root=$(pwd)/build/roots/bookworm-$arch
  if [[ $arch != amd64 ]]; then
    # Foreign binaries in the root run through qemu-user (the F flag: also inside the chroot).
    [[ -e /proc/sys/fs/binfmt_misc/register ]] ||
      mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  fi
  if [[ ! -e $root/.complete ]]; then
    rm -rf "$root"
    echo "== debootstrap bookworm ($arch) into $root"
    t0=$SECONDS
    debootstrap --arch="$arch" --variant=minbase bookworm "$root" http://deb.debian.org/debian \
      >"$root.debootstrap.log" 2>&1 || { tail -20 "$root.debootstrap.log"; exit 1; }
    touch "$root/.complete"
    echo "   $((SECONDS - t0)) s"
  fi
  # A copy per run: the cached root stays pristine.
  run=$(pwd)/build/roots/run-$arch
  rm -rf "$run" && cp -a "$root" "$run"
  cp /etc/resolv.conf "$run/etc/resolv.conf"
  mount -t proc proc "$run/proc" && mounted+=("$run/proc")
  cp "$deb" "$run/tmp/"
  echo "== $arch: apt-get install ./$(basename "$deb")"
  t0=$SECONDS
  chroot "$run" sh -c "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends /tmp/$(basename "$deb")" >"$run.install.log" 2>&1 ||
    { tail -30 "$run.install.log"; status=1; continue; }
  echo "   installed in $((SECONDS - t0)) s"
  ok=1
  check() { if chroot "$run" sh -c "$2"; then echo "   ok: $1"; else echo "   FAILED: $1"; ok=0; fi; }
  check "user dcomp exists" "getent passwd dcomp >/dev/null"
  check "/var/lib/dcomp belongs to dcomp" "[ \"\$(stat -c %U /var/lib/dcomp)\" = dcomp ]"
  check "unit, sysusers, tmpfiles, conffile" \
    "[ -f /lib/systemd/system/dcompd.service ] && [ -f /usr/lib/sysusers.d/dcomp.conf ] && \
     [ -f /usr/lib/tmpfiles.d/dcomp.conf ] && grep -qx /etc/dcomp/dcompd.textproto \
     /var/lib/dpkg/info/dcomp.conffiles"
  check "man pages" "[ -f /usr/share/man/man1/dcompd.1.gz ]"
  check "nothing started by the install" "! grep -qx dcompd /proc/[0-9]*/comm 2>/dev/null"
  # The unit's RuntimeDirectory=, by hand: no systemd runs in the root.
  chroot "$run" sh -c "install -d -m 0750 -o dcomp -g dcomp /run/dcompd"
  chroot "$run" sh -c "setpriv --reuid=dcomp --regid=dcomp --init-groups \
    dcompd --config /etc/dcomp/dcompd.textproto >/tmp/dcompd.log 2>&1 &"
  served=0
  for _ in $(seq 600); do
    if chroot "$run" dcompctl health >/dev/null 2>&1; then served=1; break; fi
    sleep 0.2
  done
  check "dcompctl health: SERVING" "[ $served = 1 ] && dcompctl health"
  check "dcompctl generate" "dcompctl generate --prompt 'Once upon a time' -n 16"
  # Stop it (SIGTERM: drain and exit 0): the processes whose root is this one.
  for p in /proc/[0-9]*; do
    [[ $(cat "$p/comm" 2>/dev/null) == dcompd && $(readlink "$p/root") == "$run" ]] &&
      kill -TERM "${p#/proc/}" 2>/dev/null || true
  done
  sleep 1
  echo "-- dcompd's log in the $arch root:"
  sed 's/^/   /' "$run/tmp/dcompd.log"
  umount -l "$run/proc" 2>/dev/null || true
  ((ok)) || status=1

  # Under a real systemd (amd64: systemd-nspawn boots the root): the packaged unit, enabled, must
  # reach READY (Type=notify), get watchdog pings and serve, sandbox and all.
  if [[ $arch == amd64 ]] && command -v systemd-nspawn >/dev/null; then
    echo "== $arch: the packaged unit under systemd (systemd-nspawn -b)"
    mount -t proc proc "$run/proc" && mounted+=("$run/proc")
    chroot "$run" sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends systemd systemd-sysv dbus" >>"$run.install.log" 2>&1 ||
      { tail -20 "$run.install.log"; status=1; continue; }
    umount -l "$run/proc" 2>/dev/null || true
    cat >"$run/etc/systemd/system/dcomp-check.service" <<'UNIT'
[Unit]
Description=Check dcompd under systemd, then power off
Wants=dcompd.service
After=dcompd.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'for i in $(seq 120); do systemctl is-active -q dcompd && break; sleep 0.5; done; sleep 20; { systemctl show dcompd -p ActiveState -p SubState -p StatusText -p WatchdogUSec -p WatchdogTimestampMonotonic -p NRestarts; dcompctl health; dcompctl generate --prompt "Once upon a time" -n 8; journalctl -u dcompd --no-pager; } >/root/check.txt 2>&1; systemctl poweroff'

[Install]
WantedBy=multi-user.target
UNIT
    chroot "$run" systemctl enable dcompd dcomp-check >/dev/null 2>&1
    # --register=no --keep-unit: no machined or D-Bus on the host side.
    timeout 180 systemd-nspawn --register=no --keep-unit -D "$run" -b --console=pipe \
      >"$run.nspawn.log" 2>&1 || true
    ok=1
    check() { if grep -q "$2" "$run/root/check.txt" 2>/dev/null; then echo "   ok: $1"; else echo "   FAILED: $1"; ok=0; fi; }
    check "READY: dcompd.service active (running)" "^SubState=running"
    check "the watchdog is on and pinged" "^WatchdogTimestampMonotonic=[1-9]"
    check "STATUS= from dcompd" "^StatusText=serving"
    check "dcompctl health: SERVING" "^SERVING"
    check "started once, no restart" "^NRestarts=0"
    sed 's/^/   /' "$run/root/check.txt" 2>/dev/null | grep -v "^   \(ActiveState\|SubState\|StatusText\|Watchdog\|NRestarts\|SERVING\)" | tail -8
    ((ok)) || status=1
  fi
done
exit $status
