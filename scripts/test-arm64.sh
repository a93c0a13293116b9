#!/usr/bin/env bash
# The project on a Raspberry Pi's architecture, emulated: a Debian bookworm
# arm64 system (debootstrap, qemu-user-static through binfmt_misc) emulating
# a Cortex-A72 (QEMU_CPU), a matching /proc/cpuinfo (XNNPACK reads it: without
# an ARM description every TFLite model load segfaults), the host's PIP_* variables cleared. Inside it,
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
{ # read whole before running: the script may be edited while a pass runs

REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$(cd "${EDGE_SHARED:-$REPO/../shared}" 2>/dev/null && pwd) || {
  echo "test-arm64: no shared data folder beside the checkout ($REPO/../shared)" >&2; exit 2; }
CACHE=${EDGE_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-access}
TARBALL=$CACHE/bookworm-arm64.tar.gz
OUT=${EDGE_ARM64_OUT:-$REPO/.arm64}
SUITE=bookworm
# The passes' priority: the build is always nice 19; a pass at 19 on a busy
# shared machine gets so little CPU that it does not finish in an hour.
NICE=${EDGE_ARM64_NICE:-10}
# The CPU qemu emulates: a Raspberry Pi 4's Cortex-A72 (ARMv8.0, NEON), what
# the wheels' baseline and the Pi run. qemu's default ("max") offers SVE/SME,
# which the native libraries then pick: 8x slower under emulation (edge
# identify of one photo 80 s against 10 s) and nothing a Pi 4 has.
CPU=${EDGE_ARM64_CPU:-cortex-a72}
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

# `edge identify` as the comparison: everyone in ../shared/faces/people
# enrolled (a folder each), then every group photo and one photo of each person
# identified. Run with this machine's edge and inside the chroot; the answers
# must be the same bytes.
identify_answers() { # EDGE FACES WORKDIR CONFIG -> answers on stdout
  local edge=$1 faces=$2 work=$3 config=$4 person photo
  rm -f "$work/identify.db" "$work/gallery.key"
  # The checkout's config with the gallery key in WORKDIR, not the checkout's data/.
  # (the models folder stays the checkout's: relative paths follow the config file).
  sed -e "s#key_file: data/gallery.key#key_file: $work/gallery.key#" \
      -e "s#  dir: models #  dir: $(cd "$(dirname "$config")" && pwd)/models #" "$config" > "$work/config.yaml"
  for person in "$faces"/people/*/; do
    "$edge" enroll "$(basename "$person")" "$person"* --config "$work/config.yaml" \
      --db "$work/identify.db" --create >/dev/null
  done
  for photo in "$faces"/group/* "$faces"/people/*/*1.*; do
    [ -f "$photo" ] || continue
    printf '== %s\n' "${photo#"$faces"/}"
    "$edge" identify "$photo" --config "$work/config.yaml" --db "$work/identify.db"
  done
}

# What a Pi user does, run inside the chroot as the user pi.
inside() { # PASS
  set -euo pipefail
  local pass=$1 failed=0
  cd ~/edge-access
  step() { # NAME COMMAND... : run, time, log
    local name=$1 rc=0 t=$SECONDS; shift
    echo "== $name: $*"
    "$@" || rc=$?
    echo "time $name $((SECONDS - t)) s (exit $rc)" | tee -a ~/out/times
    return $rc
  }
  echo "pass $pass"
  python3 -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])'
  step install make venv
  .venv/bin/python -c 'import numpy, cv2; print("numpy", numpy.__version__, "opencv", cv2.__version__)' | tee ~/out/versions
  .venv/bin/pip list 2>/dev/null > ~/out/pip-list
  step fetch .venv/bin/edge models fetch --from /media/usb/models
  step check .venv/bin/edge models check
  step identify bash -c "$(declare -f identify_answers); identify_answers .venv/bin/edge ../shared/faces ~/out config.yaml > ~/out/identify.txt" || failed=1
  # --repeat 3, not 30: under qemu the default takes many minutes and the
  # figures are the emulator's, not a Pi's; this checks bench runs here.
  step bench bash -c '.venv/bin/edge bench --json --repeat 3 --db ~/out/bench.db --create > ~/out/bench.json' || failed=1
  step tests .venv/bin/python -m pytest -m pi -q -p no:cacheprovider --junitxml ~/out/junit.xml || failed=1
  return $failed
}

mounted_under() { findmnt -rn -o TARGET | awk -v r="$1" 'index($0, r) == 1' | sort -r; }

teardown() { # ROOT: unmount everything below it, then (only then) remove it
  local root=$1 m
  for m in $(mounted_under "$root"); do umount -l "$m" 2>/dev/null || true; done
  if [ -n "$(mounted_under "$root")" ]; then
    echo "test-arm64: still mounted under $root, not removing it" >&2; return 1
  fi
  rm -rf "$root"
}

run_pass() { # numpy2 | pi
  local pass=$1 root=$CACHE/run-$1 out=$OUT/$1 t0=$SECONDS
  [ -d "$root" ] && teardown "$root"
  rm -rf "$out"; mkdir -p "$out" "$root"
  log "$pass: unpacking the system"
  tar -C "$root" -xzf "$TARBALL"
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"; mount --make-rslave "$root/sys"
  mount --rbind /dev "$root/dev"; mount --make-rslave "$root/dev"
  mount -t tmpfs tmpfs "$root/dev/shm"
  mount --bind "$REPO/scripts/cpuinfo-cortex-a72" "$root/proc/cpuinfo"
  # This machine's network as the chroot's: its DNS, and its CA bundle (where
  # PyPI is reached through a TLS-inspecting proxy, its CA must be trusted too).
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  # The checkout as git sees it (no venv, no model files), ../shared beside it,
  # the x86 machine's models folder as a USB stick.
  local home=$root/home/pi
  mkdir -p "$home/edge-access" "$home/shared" "$home/out" "$root/media/usb/models"
  (cd "$REPO" && git ls-files -z -co --exclude-standard | grep -zv "^\.venv" | tar --null -T - -cf -) | tar -C "$home/edge-access" -xf -
  mount --bind "$SHARED" "$home/shared"; mount -o remount,bind,ro "$home/shared"
  # Copied, world-readable as a FAT stick's files are (ours may be 0600).
  cp "$REPO"/models/*.tflite "$REPO"/models/*.onnx "$REPO"/models/*.pth "$root/media/usb/models/" 2>/dev/null || true
  chmod -R a+rX "$root/media/usb"
  # pip's download cache outlives the unpacked system: a second run downloads nothing.
  mkdir -p "$CACHE/pip" "$home/.cache/pip"
  mount --bind "$CACHE/pip" "$home/.cache/pip"
  if [ "$pass" = pi ]; then
    # The Pi's camera stack: apt's NumPy and a picamera2 built on it. The
    # stand-in only imports NumPy (no libcamera here); it makes the Makefile
    # take its Pi branch (--system-site-packages, numpy<2).
    mkdir -p "$root/usr/lib/python3/dist-packages/picamera2"
    printf '"""Stand-in for apt'"'"'s python3-picamera2 (scripts/test-arm64.sh)."""\nimport numpy  # noqa: F401\n' \
      > "$root/usr/lib/python3/dist-packages/picamera2/__init__.py"
  fi
  chroot "$root" chown -R pi:pi /home/pi/edge-access /home/pi/out /home/pi/.cache
  log "$pass: running as pi on an emulated $CPU (log: $out/log)"
  local rc=0
  nice -n "$NICE" env -i QEMU_CPU="$CPU" HOME=/home/pi USER=pi LOGNAME=pi LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
    chroot --userspec=pi:pi "$root" /bin/bash -c "$(declare -f inside identify_answers); inside $pass" \
    > "$out/log" 2>&1 || rc=$?
  cp -a "$home/out/." "$out/" 2>/dev/null || true
  teardown "$root"
  echo "time total $((SECONDS - t0)) s" >> "$out/times"
  log "$pass: exit $rc; $(tr '\n' ';' < "$out/times")"
  tail -3 "$out/log" | sed "s/^/[$pass] /"
  return $rc
}

# The same bytes is the bar with the same libraries (the NumPy 2 pass); the
# Pi pass resolves an older OpenCV (4.11), whose resize differs in the last
# bits, so there the bar is the same names for the same photos, boxes within
# 1 px and similarities within 0.01 (each far from any threshold's margin).
compare_identify() { # PASS: the chroot's answers against this machine's
  local pass=$1
  [ -s "$OUT/x86/identify.txt" ] || {
    mkdir -p "$OUT/x86"
    identify_answers "$REPO/.venv/bin/edge" "$SHARED/faces" "$OUT/x86" "$REPO/config.yaml" > "$OUT/x86/identify.txt"
  }
  if cmp -s "$OUT/x86/identify.txt" "$OUT/$pass/identify.txt"; then
    log "$pass: edge identify gives the same bytes as on x86 ($(grep -c '^==' "$OUT/x86/identify.txt") photos)"
  elif python3 - "$OUT/x86/identify.txt" "$OUT/$pass/identify.txt" <<'PY'
import re, sys
def rows(path):
    out = []
    for line in open(path):
        m = re.match(r"^(\S+)\t([0-9.]+)\tbox \[([^]]*)\]$", line.rstrip("\n"))
        out.append((m[1], float(m[2]), [float(v) for v in m[3].split(",")]) if m else line)
    return out
a, b = rows(sys.argv[1]), rows(sys.argv[2])
worst = [0.0, 0.0]
ok = len(a) == len(b)
for x, y in zip(a, b):
    if isinstance(x, str) or isinstance(y, str):
        ok &= x == y
        continue
    ok &= x[0] == y[0] and len(x[2]) == len(y[2])
    worst[0] = max(worst[0], abs(x[1] - y[1]))
    worst[1] = max([worst[1]] + [abs(p - q) for p, q in zip(x[2], y[2])])
print(f"same names; similarity differs by at most {worst[0]:.3f}, boxes by {worst[1]:.1f} px")
sys.exit(0 if ok and worst[0] <= 0.01 and worst[1] <= 1.0 else 1)
PY
  then
    log "$pass: edge identify names the same people in the same boxes as on x86 (not the same bytes; diff below)"
    diff "$OUT/x86/identify.txt" "$OUT/$pass/identify.txt" || true
  else
    log "$pass: edge identify DIFFERS from x86:"; diff "$OUT/x86/identify.txt" "$OUT/$pass/identify.txt" || true
    return 1
  fi
}

case "${1:-all}" in
  build) build ;;
  numpy2|pi)
    build; host_tools
    run_pass "$1" && compare_identify "$1" ;;
  all)
    build; host_tools
    [ -x "$REPO/.venv/bin/edge" ] || die "no $REPO/.venv: run make venv first (the x86 answers)"
    # The two passes at once: qemu runs each on one core.
    "$0" numpy2 & a=$!
    "$0" pi & b=$!
    rc=0; wait $a || rc=1; wait $b || rc=1
    exit $rc ;;
  *) die "usage: $0 [build|numpy2|pi|all]" ;;
esac
exit
}
