#!/usr/bin/env bash
# The project on a Raspberry Pi's architecture, emulated: a Debian bookworm
# arm64 system (debootstrap, qemu-user-static through binfmt_misc), a fake
# Cortex-A72 /proc/cpuinfo (XNNPACK reads it: without an ARM description every
# TFLite model load segfaults), the host's PIP_* variables cleared. Inside it,
# as a Pi user would: the README's install, `edge models fetch --from` a folder
# (a USB stick's worth of models), `edge models check`, `edge identify` on
# ../shared/faces compared with this machine's answer, `edge bench --json` and
# `pytest -m pi`. Twice: with NumPy 2 (a plain venv) and on the Pi's camera-stack
# path (apt's python3-numpy and a stand-in picamera2 that imports it, so the
# Makefile takes its Pi branch: --system-site-packages and numpy<2).
#
# Slow (qemu runs Python ~35x slower than here): not part of `make test` or CI.
# The built system is cached as a tarball in $EDGE_ARM64_CACHE
# (~/.cache/edge-access), so only the first run pays the ~17 minutes of building
# it. Must run as root (debootstrap, chroot, mounts).
#
#   scripts/test-arm64.sh            build or reuse the system, run both passes
#   scripts/test-arm64.sh build      only build (or reuse) the cached system
#   scripts/test-arm64.sh numpy2     one pass: numpy2 or pi
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$(cd "${EDGE_SHARED:-$REPO/../shared}" 2>/dev/null && pwd) || {
  echo "test-arm64: no shared data folder beside the checkout ($REPO/../shared)" >&2; exit 2; }
CACHE=${EDGE_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-access}
TARBALL=$CACHE/bookworm-arm64.tar.gz
OUT=${EDGE_ARM64_OUT:-$REPO/.arm64}
SUITE=bookworm
# Everything the install and the Pi tests need from apt, baked into the cached
# system: python3-numpy is only seen by the Pi pass (--system-site-packages).
PACKAGES=python3,python3-venv,python3-pip,python3-numpy,make,espeak-ng,mosquitto,openssh-server,openssh-client,ca-certificates,sudo,procps,tzdata

log() { printf '[test-arm64 %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { echo "test-arm64: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot and bind mounts)"

host_tools() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ -x /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
  command -v update-binfmts >/dev/null || missing+=(binfmt-support)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
  grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
    die "binfmt_misc's qemu-aarch64 entry lacks the F flag: the interpreter would not be found inside the chroot"
}

# The Debian mirror this machine's apt uses (so the chroot reads the same one),
# else debootstrap's default.
host_mirror() {
  local f
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    [ -f "$f" ] || continue
    sed -n -E 's|^URIs:[[:space:]]*([^[:space:]]+/debian)/?$|\1|p; s|^deb[[:space:]]+([^[:space:]]+/debian)/?[[:space:]]+bookworm[[:space:]].*|\1|p' "$f" | head -1
    return
  done
}

build() {
  if [ -s "$TARBALL" ]; then log "reusing $TARBALL"; return; fi
  host_tools
  mkdir -p "$CACHE"
  local root=$CACHE/build.$$ t0=$SECONDS
  rm -rf "$root"
  log "building Debian $SUITE arm64 with debootstrap (about 17 minutes)"
  # shellcheck disable=SC2046
  nice -n 19 debootstrap --arch=arm64 --variant=minbase --include="$PACKAGES" \
    "$SUITE" "$root" $(host_mirror) > "$CACHE/debootstrap.log" 2>&1 ||
    die "debootstrap failed, see $CACHE/debootstrap.log"
  chroot "$root" /usr/sbin/useradd --create-home --shell /bin/bash --groups sudo pi
  rm -rf "$root"/var/cache/apt/archives/*.deb
  # mosquitto and sshd are started by the tests themselves, never as services.
  tar -C "$root" --numeric-owner -czf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
  rm -rf "$root"
  log "built $TARBALL in $((SECONDS - t0)) s"
}

case "${1:-all}" in
  build) build ;;
  *) build; exec "$REPO/scripts/arm64-run.sh" "$@" ;;
esac
