#!/usr/bin/env bash
# Install edge-access as a systemd service. Run as root from a checkout on the Pi:
#
#   sudo scripts/install-service.sh
#
# Idempotent: run it again after `git pull` to update the code, venv and unit.
# An existing /etc/edge-access/config.yaml and the gallery in /var/lib/edge-access
# are never overwritten.
#
# The code is copied to $EDGE_PREFIX (default /opt/edge-access) rather than run
# from the checkout: the service runs as its own user with ProtectHome=yes, so a
# checkout under /home is out of its reach, and a root-owned copy cannot be
# changed by the account that cloned it. EDGE_PREFIX=<this checkout> uses the
# checkout in place instead.
set -euo pipefail

PREFIX=${EDGE_PREFIX:-/opt/edge-access}
PREFIX=${PREFIX%/}
SERVICE_USER=edge-access
CONF_DIR=/etc/edge-access
CONF=$CONF_DIR/config.yaml
STATE_DIR=/var/lib/edge-access
UNIT=edge-access.service
UNIT_DIR=/etc/systemd/system
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)

say() { printf 'install-service: %s\n' "$*"; }
die() { say "error: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root: sudo $0"
command -v systemctl >/dev/null || die "systemd (systemctl) is required"
[[ -f $SRC/systemd/$UNIT && -f $SRC/pyproject.toml ]] || die "$SRC is not an edge-access checkout"
case $PREFIX in
    /home/* | /root/* | /run/user/*) die "EDGE_PREFIX=$PREFIX is hidden from the service by ProtectHome=yes" ;;
    /*) ;;
    *) die "EDGE_PREFIX must be an absolute path" ;;
esac

# -- system packages ------------------------------------------------------------------
missing=()
command -v make >/dev/null || missing+=(make)
command -v rsync >/dev/null || missing+=(rsync)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v aplay >/dev/null || missing+=(alsa-utils)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if grep -qs "Raspberry Pi" /proc/device-tree/model && ! python3 -c 'import lgpio' 2>/dev/null; then
    missing+=(python3-lgpio)
fi
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "please install: ${missing[*]}"
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# -- the service account --------------------------------------------------------------
getent group "$SERVICE_USER" >/dev/null || groupadd --system "$SERVICE_USER"
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    say "creating system user $SERVICE_USER"
    useradd --system --gid "$SERVICE_USER" --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "edge-access door controller" "$SERVICE_USER"
fi
groups=()
for g in gpio video audio; do
    if getent group "$g" >/dev/null; then
        usermod -a -G "$g" "$SERVICE_USER"
        groups+=("$g")
    else
        say "no group '$g' on this machine; the service runs without it"
    fi
done

# -- the code and its venv ------------------------------------------------------------
if [[ $SRC != "$PREFIX" ]]; then
    say "copying $SRC to $PREFIX"
    install -d -m 0755 "$PREFIX"
    rsync -a --delete --no-owner --no-group --chmod=go-w \
        --exclude=/.venv/ --exclude=/.git/ --exclude=/data/ \
        --exclude=__pycache__/ --exclude=/.pytest_cache/ --exclude=/.ruff_cache/ \
        "$SRC/" "$PREFIX/"
fi
say "building the venv in $PREFIX/.venv"
make -C "$PREFIX" --no-print-directory venv system-deps
make -C "$PREFIX" --no-print-directory models ||
    say "warning: models not fetched; the service will not start until they are ($PREFIX/models)"
[[ -x $PREFIX/.venv/bin/edge ]] || die "$PREFIX/.venv/bin/edge was not installed"

# -- configuration and state ----------------------------------------------------------
install -d -m 0755 -o root -g root "$CONF_DIR"
install -d -m 0700 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR"
if [[ ! -e $CONF ]]; then
    say "writing $CONF"
    tmp=$(mktemp "$CONF_DIR/.config.XXXXXX")
    # The repository's commented config, with its relative paths made absolute:
    # models stay with the code, everything written goes to the state directory.
    "$PREFIX/.venv/bin/python" - "$PREFIX/config.yaml" "$tmp" "$PREFIX/models" "$STATE_DIR" <<'PY'
import re
import sys
from pathlib import Path

src, dst, models, state = sys.argv[1:]
want = {
    ("models", "dir"): models,
    ("gallery", "db"): f"{state}/gallery.db",
    ("daemon", "status_file"): f"{state}/status.json",
    ("security", "key_file"): f"{state}/gallery.key",
    ("backup", "dir"): f"{state}/backups",
}
text = Path(src).read_text() if Path(src).is_file() else ""
out, section = [], None
for line in text.splitlines():
    top = re.match(r"([A-Za-z_]\w*):\s*(#.*)?$", line)
    key = re.match(r"(\s+)([A-Za-z_]\w*):\s*([^#]*?)(\s*#.*)?$", line)
    if top:
        section = top.group(1)
    elif key and (section, key.group(2)) in want:
        indent, name, _, comment = key.groups()
        line = f"{indent}{name}: {want.pop((section, name))}{comment or ''}"
    out.append(line)
for (section, name), value in want.items():
    out += ["", f"{section}:", f"  {name}: {value}"]
Path(dst).write_text("\n".join(out) + "\n")
PY
    chown root:"$SERVICE_USER" "$tmp"
    chmod 0640 "$tmp"
    mv -f "$tmp" "$CONF"
else
    say "keeping the existing $CONF"
fi
"$PREFIX/.venv/bin/python" -c 'import sys; from edge.config import load_config; load_config(sys.argv[1])' \
    "$CONF" || die "$CONF is not valid; fix it and run this again"

# -- the unit -------------------------------------------------------------------------
sed -e "s#/opt/edge-access/#$PREFIX/#g" "$SRC/systemd/$UNIT" >"$UNIT_DIR/.$UNIT.new"
chmod 0644 "$UNIT_DIR/.$UNIT.new"
mv -f "$UNIT_DIR/.$UNIT.new" "$UNIT_DIR/$UNIT"
dropin=$UNIT_DIR/$UNIT.d/10-groups.conf
if ((${#groups[@]} < 3)); then
    # SupplementaryGroups= naming a missing group stops the service from starting.
    install -d -m 0755 "$UNIT_DIR/$UNIT.d"
    printf '[Service]\nSupplementaryGroups=\nSupplementaryGroups=%s\n' "${groups[*]}" >"$dropin"
else
    rm -f "$dropin"
fi
systemctl daemon-reload
if systemctl is-active --quiet "$UNIT"; then
    say "restarting $UNIT"
    systemctl restart "$UNIT"
fi
systemctl enable --now "$UNIT"

say "done: $(systemctl is-active "$UNIT" || true)"
say "logs:     journalctl -u $UNIT -f"
say "commands: sudo -u $SERVICE_USER env EDGE_CONFIG=$CONF $PREFIX/.venv/bin/edge --help"
