#!/usr/bin/env bash
# Install edgefer as a systemd service on Raspberry Pi OS (Bookworm or later,
# 64-bit) or on a Debian/Ubuntu machine with a USB camera.
#
#   sudo deploy/install.sh                 install or upgrade, enable, start
#   sudo deploy/install.sh --uninstall     remove it, keep config and data
#   deploy/install.sh --dry-run            show every action, change nothing
#   deploy/install.sh --prefix DIR         write the file tree under DIR only
#
# Running it again changes nothing unless the checkout or the target changed.
# See docs/install.md for what each step does and why.

set -euo pipefail
umask 022

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd)

# --- target paths (placed under --prefix DIR when one is given) ---------------
APP_DIR=/opt/edgefer
VENV=$APP_DIR/venv
CONSTRAINTS=$APP_DIR/constraints.txt
STAMP=$APP_DIR/install-stamp
CONF_DIR=/etc/edgefer
CONF=$CONF_DIR/edgefer.toml
PASSWORD_FILE=$CONF_DIR/mqtt_password
STATE_DIR=/var/lib/edgefer
UNIT_NAME=edgefer.service
UNIT=/etc/systemd/system/$UNIT_NAME
LINK=/usr/local/bin/edgefer
SERVICE_USER=edgefer

# --- sources in the checkout --------------------------------------------------
UNIT_SRC=$REPO/systemd/$UNIT_NAME
EXAMPLE_CONF=$REPO/deploy/edgefer.toml

# --- options ------------------------------------------------------------------
DRY_RUN=0
UNINSTALL=0
PURGE=0
WITH_BROKER=0
NO_START=0
ROOT=""
PREFIX_GIVEN=0
EXTRAS=""
NUMPY_MODE=auto
PYTHON=/usr/bin/python3
ARGS=("$@")

usage() {
    cat <<'EOF'
Usage: install.sh [options]

Install edgefer into /opt/edgefer/venv, its config into /etc/edgefer and its
systemd unit into /etc/systemd/system, then enable and start edgefer.service.

Options:
  --dry-run         print every action and change nothing (no root needed)
  --uninstall       remove the unit, the venv and the edgefer command; keep
                    /etc/edgefer, /var/lib/edgefer and the edgefer user
  --purge           with --uninstall: also delete /etc/edgefer,
                    /var/lib/edgefer and the edgefer user
  --with-broker     also install the mosquitto broker and mosquitto-clients
  --extras LIST     optional extras of the package, comma-separated:
                    report (matplotlib, for 'edgefer report'), mediapipe
                    (BlazeFace through mediapipe; Python 3.12 or older)
  --numpy MODE      auto (default), 1 (pin numpy<2 and
                    opencv-python-headless<4.12) or 2 (no pin)
  --no-start        enable the service but do not start or restart it
  --python PATH     interpreter for the venv (default /usr/bin/python3; it
                    must be the system Python that apt's picamera2 uses)
  --prefix DIR      staged root: write the whole tree under DIR (unit, config,
                    state directory, a venv without pip, constraints) and only
                    print the steps that act on the running system (apt-get,
                    useradd, chown, pip install, check-config, systemctl)
  -h, --help        show this help
EOF
}

# An option that takes a value must be followed by one: called with the
# arguments left, it refuses the command line (usage, exit 2) when none follows.
need_value() {
    (($# >= 2)) || { usage >&2; exit 2; }
}

while (($#)); do
    # --opt=value is read as --opt value.
    case $1 in
        --extras=* | --numpy=* | --python=* | --prefix=*)
            set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
    esac
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) PURGE=1 ;;
        --with-broker) WITH_BROKER=1 ;;
        --no-start) NO_START=1 ;;
        --extras) need_value "$@"; EXTRAS=$2; shift ;;
        --numpy) need_value "$@"; NUMPY_MODE=$2; shift ;;
        --python) need_value "$@"; PYTHON=$2; shift ;;
        --prefix) need_value "$@"; ROOT=$2; PREFIX_GIVEN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) printf 'error: unknown option: %s\n\n' "$1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

# --- output and actions -------------------------------------------------------
step() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Print a command the way a shell would read it back.
show() {
    local quoted
    quoted=$(printf '%q ' "$@")
    printf '%s\n' "${quoted% }"
}

# A change to the file tree (also made in a staged root).
act() {
    if ((DRY_RUN)); then
        printf '[dry-run] '
        show "$@"
        return 0
    fi
    printf '+ '
    show "$@"
    "$@"
}

# A change to the running system beyond the file tree: packages, accounts,
# ownership, the package install, services. Never run in a staged root.
host_act() {
    if [[ -n $ROOT ]]; then
        printf '[not run: staged root] '
        show "$@"
        return 0
    fi
    act "$@"
}

# The target's copy of a system file: under the staged root when it exists
# there, else this machine's.
target_file() {
    if [[ -n $ROOT && -e $ROOT$1 ]]; then
        printf '%s\n' "$ROOT$1"
    else
        printf '%s\n' "$1"
    fi
}

systemd_running() { [[ -z $ROOT && -d /run/systemd/system ]]; }

# Ask or tell the service manager (reload, start, stop). Not in a staged root,
# and not when systemd is not the running init (a chroot or a container).
manager_act() {
    if [[ -z $ROOT ]] && ! systemd_running; then
        printf '[not run: systemd is not running] '
        show systemctl "$@"
        return 0
    fi
    host_act systemctl "$@"
}

# enable/disable only create or remove symlinks, so they also work offline:
# in a staged root through systemctl --root, and likewise when systemd is not
# running (for example while preparing an image in a chroot).
offline_systemctl() {
    if [[ -n $ROOT ]]; then
        printf '%s\n' "--root=$ROOT"
    elif ! systemd_running; then
        printf '%s\n' "--root=/"
    fi
}

unit_enabled() {
    local root_opt
    root_opt=$(offline_systemctl)
    [[ $(systemctl ${root_opt:+"$root_opt"} is-enabled "$UNIT_NAME" 2>/dev/null || true) == enabled ]]
}

set_enabled() { # enable|disable
    local root_opt
    root_opt=$(offline_systemctl)
    if [[ -z $root_opt ]]; then
        if [[ $1 == disable ]]; then
            host_act systemctl disable --now "$UNIT_NAME"
        else
            host_act systemctl enable "$UNIT_NAME"
        fi
    else
        act systemctl "$root_opt" "$1" "$UNIT_NAME"
    fi
}

# Create a directory that is not ours (for example /usr/local/bin) when it is
# missing; never change an existing one.
ensure_parent() { # path
    [[ -d $1 ]] || act install -d -m 0755 "$1"
}

ensure_dir() { # path mode
    local path=$1 mode=$2
    if [[ ! -d $path ]]; then
        act install -d -m "$mode" "$path"
    else
        ensure_mode "$path" "$mode"
    fi
}

ensure_mode() { # path mode
    local path=$1 mode=$2
    [[ -e $path ]] || return 0
    if [[ $(stat -c %a -- "$path") != "${mode#0}" ]]; then
        act chmod "$mode" "$path"
    fi
}

ensure_owner() { # path user:group
    local path=$1 owner=$2
    if [[ -e $path && $(stat -c %U:%G -- "$path") == "$owner" ]]; then
        return 0
    fi
    host_act chown "$owner" "$path"
}

# Copy src to dest when the content differs; returns 0 when it changed.
sync_file() { # src dest mode
    local src=$1 dest=$2 mode=$3
    if [[ -f $dest ]] && cmp -s -- "$src" "$dest"; then
        ensure_mode "$dest" "$mode"
        return 1
    fi
    act install -m "$mode" "$src" "$dest"
    return 0
}

# Write content to dest when it differs; returns 0 when it changed.
sync_content() { # dest mode content
    local dest=$1 mode=$2 content=$3 tmp
    if [[ -f $dest ]] && printf '%s' "$content" | cmp -s - "$dest"; then
        ensure_mode "$dest" "$mode"
        return 1
    fi
    if ((DRY_RUN)); then
        printf '[dry-run] write %s (mode %s)\n' "$dest" "$mode"
        return 0
    fi
    printf '+ write %s (mode %s)\n' "$dest" "$mode"
    tmp=$(mktemp)
    printf '%s' "$content" >"$tmp"
    install -m "$mode" "$tmp" "$dest"
    rm -f -- "$tmp"
    return 0
}

ensure_symlink() { # target link
    local target=$1 link=$2
    if [[ -L $link && $(readlink -- "$link") == "$target" ]]; then
        return 0
    fi
    if [[ -e $link && ! -L $link ]]; then
        die "$link exists and is not a symlink; move it away and run again"
    fi
    act ln -sfn "$target" "$link"
}

remove_path() { # path
    if [[ -e $1 || -L $1 ]]; then
        act rm -rf -- "$1"
    fi
}

# --- facts about the target ---------------------------------------------------
os_codename() {
    local f
    f=$(target_file /etc/os-release)
    [[ -r $f ]] || return 0
    sed -n 's/^VERSION_CODENAME=//p' "$f" | tr -d '"' | head -n 1
}

is_raspberry_pi() {
    local f
    f=$(target_file /proc/device-tree/model)
    [[ -r $f ]] && tr -d '\0' <"$f" | grep -q 'Raspberry Pi'
}

# Version of apt's python3-numpy when installed on this machine (never in a
# staged root: its package database is not the target's).
apt_numpy_version() {
    [[ -z $ROOT ]] || return 0
    command -v dpkg-query >/dev/null || return 0
    local status
    status=$(dpkg-query -W -f='${Status} ${Version}' python3-numpy 2>/dev/null) || return 0
    [[ $status == "install ok installed "* ]] || return 0
    printf '%s\n' "${status##* }"
}

pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# Decide the numpy/OpenCV pins. Sets NUMPY_PIN (1 or 2) and NUMPY_REASON.
decide_numpy() {
    local codename apt_version upstream
    codename=$(os_codename)
    case $NUMPY_MODE in
        1) NUMPY_PIN=1; NUMPY_REASON="--numpy 1 given"; return ;;
        2) NUMPY_PIN=2; NUMPY_REASON="--numpy 2 given"; return ;;
        *) ;;
    esac
    if [[ ,$EXTRAS, == *,mediapipe,* ]]; then
        NUMPY_PIN=1
        NUMPY_REASON="the mediapipe extra needs numpy<2"
        return
    fi
    apt_version=$(apt_numpy_version)
    if [[ -n $apt_version ]]; then
        upstream=${apt_version#*:}
        if [[ ${upstream%%.*} =~ ^[0-9]+$ ]] && ((${upstream%%.*} < 2)); then
            NUMPY_PIN=1
        else
            NUMPY_PIN=2
        fi
        NUMPY_REASON="apt's python3-numpy is $apt_version and the venv sees it"
        return
    fi
    case $codename in
        buster | bullseye | bookworm)
            NUMPY_PIN=1
            NUMPY_REASON="$codename ships numpy 1.x, which apt's picamera2 stack is built against" ;;
        *)
            NUMPY_PIN=2
            NUMPY_REASON="${codename:-this OS} needs no numpy 1.x pin" ;;
    esac
}

constraints_content() {
    printf '# Written by deploy/install.sh; replaced when its numpy policy changes.\n'
    printf '# numpy policy: %s (%s)\n' "$NUMPY_PIN" "$NUMPY_REASON"
    if ((NUMPY_PIN == 1)); then
        printf '# apt-built modules (simplejpeg for picamera2) break under numpy 2,\n'
        printf '# and opencv-python-headless 4.12 and later require numpy 2.\n'
        printf 'numpy<2\n'
        printf 'opencv-python-headless<4.12\n'
    fi
}

# Files that make up the installable package, relative to the checkout.
package_files() {
    local f
    (
        cd -- "$REPO"
        for f in pyproject.toml setup.cfg setup.py MANIFEST.in README* LICENSE*; do
            [[ -f $f ]] && printf '%s\n' "$f"
        done
        if [[ -d edgefer ]]; then
            find edgefer -type f ! -name '*.pyc' ! -path '*/__pycache__/*'
        fi
    ) | LC_ALL=C sort
}

source_fingerprint() {
    (cd -- "$REPO" && package_files | while IFS= read -r f; do sha256sum -- "$f"; done) |
        sha256sum | cut -d' ' -f1
}

# --- checks -------------------------------------------------------------------
if ((PURGE && !UNINSTALL)); then
    printf 'error: --purge only goes with --uninstall\n' >&2
    exit 2
fi
if ((PREFIX_GIVEN)); then
    [[ -n $ROOT ]] || die "--prefix needs a directory"
    [[ $ROOT == /* ]] || ROOT=$PWD/$ROOT
    while [[ $ROOT == */ ]]; do ROOT=${ROOT%/}; done
    [[ -n $ROOT ]] || die "--prefix / would be the real system; leave --prefix out for that"
fi
if [[ -z $ROOT ]] && ((!DRY_RUN)) && ((EUID != 0)); then
    die "installing into the system needs root: sudo $0 ${ARGS[*]}"
fi
case $NUMPY_MODE in
    auto | 1 | 2) ;;
    *) die "--numpy takes auto, 1 or 2 (got '$NUMPY_MODE')" ;;
esac
if [[ -n $EXTRAS && ! $EXTRAS =~ ^[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*$ ]]; then
    die "--extras takes comma-separated names (got '$EXTRAS')"
fi

if [[ -n $ROOT ]]; then
    MODE_TEXT="staged root $ROOT"
else
    MODE_TEXT="this system"
fi
((DRY_RUN)) && MODE_TEXT="$MODE_TEXT, dry run"

# --- uninstall ----------------------------------------------------------------
if ((UNINSTALL)); then
    step "Uninstalling edgefer ($MODE_TEXT)"
    if [[ -e $ROOT$UNIT ]]; then
        if command -v systemctl >/dev/null && unit_enabled; then
            set_enabled disable
        elif systemd_running; then
            host_act systemctl stop "$UNIT_NAME"
        fi
        act rm -f -- "$ROOT$UNIT"
        manager_act daemon-reload
        manager_act reset-failed "$UNIT_NAME" 2>/dev/null || true
    fi
    if [[ -L $ROOT$LINK && $(readlink -- "$ROOT$LINK") == "$VENV/bin/edgefer" ]]; then
        act rm -f -- "$ROOT$LINK"
    fi
    remove_path "$ROOT$APP_DIR"
    if ((PURGE)); then
        remove_path "$ROOT$CONF_DIR"
        remove_path "$ROOT$STATE_DIR"
        if [[ -n $ROOT ]] || getent passwd "$SERVICE_USER" >/dev/null; then
            host_act userdel "$SERVICE_USER"
        fi
    else
        note "kept: $CONF_DIR (config, MQTT password), $STATE_DIR (data), user $SERVICE_USER"
        note "remove them too with: deploy/install.sh --uninstall --purge"
    fi
    note "apt packages (python3-picamera2, python3-venv, mosquitto) are left installed"
    step "Done"
    exit 0
fi

# --- install ------------------------------------------------------------------
[[ -f $UNIT_SRC ]] || die "missing $UNIT_SRC; run this from an edgefer checkout"
[[ -f $EXAMPLE_CONF ]] || die "missing $EXAMPLE_CONF (the example config)"
[[ -f $REPO/pyproject.toml ]] || die "missing $REPO/pyproject.toml; run this from an edgefer checkout"
[[ -x $PYTHON ]] || die "no Python interpreter at $PYTHON (apt-get install python3)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$PYTHON is older than Python 3.11, which edgefer needs"
PY_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# Decided before anything changes: pip would otherwise fail late and say only that no
# matching distribution exists.
if [[ ,$EXTRAS, == *,mediapipe,* ]] && ((${PY_VERSION#3.} >= 13)); then
    die "the mediapipe extra cannot be installed with Python $PY_VERSION ($PYTHON):
       it needs mediapipe 0.10.18 (the last release with the legacy face detector inside the
       wheel and with Linux aarch64 wheels), which has wheels for Python 3.9-3.12 only, and
       numpy<2, which has no wheels for Python 3.13 or later. Install without
       '--extras mediapipe': edgefer then uses OpenCV's Haar face detector, and says so in
       its status. (Debian 12 / Raspberry Pi OS Bookworm, Python 3.11, can take the extra.)"
fi

step "Installing edgefer from $REPO ($MODE_TEXT)"
PI=0
if is_raspberry_pi; then PI=1; fi
CODENAME=$(os_codename)
if ((PI)); then
    note "target: ${CODENAME:-unknown release}, Raspberry Pi"
else
    note "target: ${CODENAME:-unknown release}"
fi
if [[ -z $ROOT ]] && command -v dpkg >/dev/null; then
    case $(dpkg --print-architecture) in
        arm64 | amd64) ;;
        *) warn "LiteRT (ai-edge-litert) needs a 64-bit OS; $(dpkg --print-architecture) is not supported" ;;
    esac
fi

step "System packages"
PACKAGES=(python3-venv)
if ((PI)); then PACKAGES+=(python3-picamera2); fi
if ((WITH_BROKER)); then PACKAGES+=(mosquitto mosquitto-clients); fi
if [[ -n $ROOT ]]; then
    host_act apt-get install -y --no-install-recommends "${PACKAGES[@]}"
else
    command -v apt-get >/dev/null || die "apt-get not found; this installer supports Debian-based systems"
    MISSING=()
    for p in "${PACKAGES[@]}"; do
        pkg_installed "$p" || MISSING+=("$p")
    done
    if ((${#MISSING[@]})); then
        host_act apt-get update
        host_act env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${MISSING[@]}"
    else
        note "already installed: ${PACKAGES[*]}"
    fi
fi

step "Service account"
[[ -z $ROOT ]] || note "(each is created only when missing)"
if [[ -n $ROOT ]] || ! getent group video >/dev/null; then
    host_act groupadd --system video
fi
if [[ -n $ROOT ]] || ! getent passwd "$SERVICE_USER" >/dev/null; then
    host_act useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "edgefer daemon" "$SERVICE_USER"
else
    note "user $SERVICE_USER exists"
fi

step "Directories"
if [[ -n $ROOT && ! -d $ROOT ]]; then
    act mkdir -p -- "$ROOT"
fi
ensure_dir "$ROOT$APP_DIR" 0755
ensure_dir "$ROOT$CONF_DIR" 0755
ensure_dir "$ROOT$STATE_DIR" 0750
ensure_owner "$ROOT$STATE_DIR" "$SERVICE_USER:$SERVICE_USER"

step "Python environment $VENV"
if [[ -x $ROOT$VENV/bin/python ]]; then
    if ! grep -Eq '^include-system-site-packages *= *true' "$ROOT$VENV/pyvenv.cfg"; then
        die "$VENV was made without --system-site-packages (picamera2 would be invisible); remove it and run again"
    fi
    note "venv exists"
elif [[ -n $ROOT ]]; then
    # Real venv, but without pip: nothing is installed into a staged root.
    act "$PYTHON" -m venv --system-site-packages --without-pip "$ROOT$VENV"
else
    act "$PYTHON" -m venv --system-site-packages "$VENV"
fi

decide_numpy
if ((NUMPY_PIN == 1)); then
    note "pins: numpy<2, opencv-python-headless<4.12 ($NUMPY_REASON)"
else
    note "pins: none ($NUMPY_REASON)"
fi
CONSTRAINTS_TEXT=$(constraints_content)$'\n'
sync_content "$ROOT$CONSTRAINTS" 0644 "$CONSTRAINTS_TEXT" || true

step "edgefer package"
STAMP_TEXT="source=$(source_fingerprint)
constraints=$(printf '%s' "$CONSTRAINTS_TEXT" | sha256sum | cut -d' ' -f1)
extras=$EXTRAS
"
PKG_CHANGED=0
if [[ -f $ROOT$STAMP ]] && printf '%s' "$STAMP_TEXT" | cmp -s - "$ROOT$STAMP"; then
    note "installed package matches this checkout"
else
    PKG_CHANGED=1
    # pip builds from a temporary copy of the package files, so that no
    # root-owned build output lands in the operator's checkout.
    if [[ -n $ROOT ]] || ((DRY_RUN)); then
        BUILD_DIR=$REPO
        note "(pip reads a temporary copy of the package files of $REPO)"
    else
        BUILD_DIR=$(mktemp -d -t edgefer-build.XXXXXX)
        trap 'rm -rf -- "$BUILD_DIR"' EXIT
        (cd -- "$REPO" && package_files | tar -cf - -T -) | tar -C "$BUILD_DIR" -xf -
    fi
    host_act "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input \
        --constraint "$CONSTRAINTS" "$BUILD_DIR${EXTRAS:+[$EXTRAS]}"
    if [[ -z $ROOT ]] && ((!DRY_RUN)); then
        [[ -x $VENV/bin/edgefer ]] || die "pip finished but $VENV/bin/edgefer is missing"
        sync_content "$STAMP" 0644 "$STAMP_TEXT" || true
    fi
fi
ensure_parent "$ROOT$(dirname "$LINK")"
ensure_symlink "$VENV/bin/edgefer" "$ROOT$LINK"

step "Configuration $CONF_DIR"
if [[ -e $ROOT$CONF ]]; then
    note "keeping existing $CONF"
else
    act install -m 0644 "$EXAMPLE_CONF" "$ROOT$CONF"
fi
if [[ -e $ROOT$PASSWORD_FILE ]]; then
    note "keeping existing $PASSWORD_FILE"
    if [[ $(stat -c %a -- "$ROOT$PASSWORD_FILE") != 600 ]]; then
        warn "$PASSWORD_FILE should be mode 0600 (chmod 600 $PASSWORD_FILE)"
    fi
else
    # Empty means no password. It must exist: LoadCredential= fails the unit
    # when its source file is missing.
    act install -m 0600 /dev/null "$ROOT$PASSWORD_FILE"
fi
if ! host_act "$VENV/bin/edgefer" check-config "$CONF"; then
    die "$CONF does not validate; fix it, then run this installer again"
fi

step "systemd unit $UNIT"
ensure_parent "$ROOT$(dirname "$UNIT")"
UNIT_CHANGED=0
if sync_file "$UNIT_SRC" "$ROOT$UNIT" 0644; then
    UNIT_CHANGED=1
    manager_act daemon-reload
fi
if ! command -v systemctl >/dev/null; then
    warn "systemctl not found: $UNIT_NAME is installed but not enabled"
elif unit_enabled; then
    note "$UNIT_NAME is enabled"
else
    set_enabled enable
fi
if ((NO_START)); then
    note "not started (--no-start); start it with: systemctl start $UNIT_NAME"
elif [[ -n $ROOT ]] || ! systemd_running; then
    manager_act start "$UNIT_NAME"
elif systemctl is-active --quiet "$UNIT_NAME"; then
    if ((UNIT_CHANGED || PKG_CHANGED)); then
        manager_act restart "$UNIT_NAME"
    else
        note "$UNIT_NAME is running and up to date"
    fi
else
    manager_act start "$UNIT_NAME"
fi

step "Done"
note "broker and topics: $CONF (check: sudo edgefer check-config $CONF)"
note "MQTT password:     $PASSWORD_FILE (then: sudo systemctl restart edgefer)"
note "logs:              journalctl -u edgefer -f"
