#!/usr/bin/env bash
# Install genre-edge as a systemd service on Raspberry Pi OS Bookworm or Debian.
#
#   sudo deploy/install.sh                        apt packages, user, virtualenv, config, service
#   sudo deploy/install.sh --source dist/genre_edge-0.1.0-py3-none-any.whl
#   sudo deploy/install.sh --uninstall            remove the service and the virtualenv
#   sudo deploy/install.sh --uninstall --purge    ... and the config, state and user too
#   deploy/install.sh --destdir /tmp/stage        stage the files only (no apt, user, systemctl)
#
# Running it again is safe: the package is reinstalled from the source, an existing
# config.toml is never overwritten, the unit is rewritten only when it changed, and the
# service is restarted so the new code runs. See docs/deploy.md.
set -euo pipefail

readonly NAME=genre-edge
readonly SERVICE=genre-edge.service
readonly SERVICE_USER=genre-edge
readonly STATE_DIR=/var/lib/genre-edge
readonly CACHE_DIR=/var/cache/genre-edge
readonly APT_PACKAGES=(python3 python3-venv libportaudio2 libsndfile1)
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
readonly UNIT_TEMPLATE=$SCRIPT_DIR/genre-edge.service
readonly CONFIG_EXAMPLE=$SCRIPT_DIR/config.example.toml

PREFIX=/opt/genre-edge
CONFIG_DIR=/etc/genre-edge
UNIT_DIR=/etc/systemd/system
DESTDIR=""
SOURCE=""
EXTRAS=files
# Debian's interpreter by default: the service user must be able to run it (a pyenv or
# conda python under /root or /home is not), and it is the one python3-venv belongs to.
PYTHON=/usr/bin/python3
[[ -x $PYTHON ]] || PYTHON=python3
PIP_ARGS=()
DO_APT=1
DO_SYSTEMD=1
DO_START=1
DO_CORAL=0
DRY_RUN=0
WORK_DIR=""
UNINSTALL=0
PURGE=0

usage() {
    cat <<EOF
Usage: sudo $0 [options]

Installs genre-edge under PREFIX (a Python virtualenv), writes CONFIG_DIR/config.toml from
deploy/config.example.toml when it does not exist, creates the system user '$SERVICE_USER'
(group 'audio') and installs, enables and starts $SERVICE.

Options:
  --prefix DIR       virtualenv location (default: $PREFIX)
  --config-dir DIR   configuration directory (default: $CONFIG_DIR)
  --unit-dir DIR     where the systemd unit goes (default: $UNIT_DIR)
  --source SPEC      what pip installs: a checkout directory, a wheel or sdist, or a
                     requirement such as 'genre-edge==0.1.0' (default: this checkout)
  --extras LIST      pip extras, comma-separated; '' for none (default: $EXTRAS)
  --python PYTHON    interpreter for the virtualenv, >= 3.10, one the service user can
                     run (default: $PYTHON)
  --pip-args ARGS    extra arguments for pip, e.g. '--no-index --find-links /srv/wheels'
  --destdir DIR      staging root: every file goes under DIR; apt-get, useradd, chown and
                     systemctl are printed, not run (for packaging and tests; no root needed)
  --no-apt           do not install the Debian packages (${APT_PACKAGES[*]})
  --no-systemd       install the unit file but do not run systemctl
  --no-start         enable the service but do not (re)start it
  --coral            also install libedgetpu1-std (Coral apt repository needed, see
                     docs/deploy.md) and add the user to 'plugdev' for the USB Accelerator
  --dry-run          print every command instead of running it; change nothing
  --uninstall        stop and disable the service, remove the unit and the virtualenv;
                     the configuration is kept
  --purge            with --uninstall: also remove $CONFIG_DIR, $STATE_DIR, $CACHE_DIR
                     and the '$SERVICE_USER' user
  -h, --help         this text
EOF
}

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 2; }

# Commands that change the target tree (under DESTDIR when staging).
run() {
    if ((DRY_RUN)); then
        printf '+ %s\n' "$(quote "$@")"
    else
        "$@"
    fi
}

# Commands that change the running system (packages, users, services, ownership): never
# run when staging into a DESTDIR, whose tree no system user or service manager knows.
system() {
    if [[ -n $DESTDIR ]]; then
        printf 'skip (--destdir): %s\n' "$(quote "$@")"
    else
        run "$@"
    fi
}

quote() {
    local out="" arg
    for arg in "$@"; do
        out+=$(printf '%q ' "$arg")
    done
    printf '%s' "${out% }"
}

need_value() {
    [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value: see --help"
}

parse_args() {
    while [[ $# -gt 0 ]]; do
        case $1 in
            --prefix) need_value "$@"; PREFIX=$2; shift ;;
            --prefix=*) PREFIX=${1#*=} ;;
            --config-dir) need_value "$@"; CONFIG_DIR=$2; shift ;;
            --config-dir=*) CONFIG_DIR=${1#*=} ;;
            --unit-dir) need_value "$@"; UNIT_DIR=$2; shift ;;
            --unit-dir=*) UNIT_DIR=${1#*=} ;;
            --destdir) need_value "$@"; DESTDIR=$2; shift ;;
            --destdir=*) DESTDIR=${1#*=} ;;
            --source) need_value "$@"; SOURCE=$2; shift ;;
            --source=*) SOURCE=${1#*=} ;;
            --extras) [[ $# -ge 2 ]] || die "--extras needs a value: see --help"; EXTRAS=$2; shift ;;
            --extras=*) EXTRAS=${1#*=} ;;
            --python) need_value "$@"; PYTHON=$2; shift ;;
            --python=*) PYTHON=${1#*=} ;;
            --pip-args) need_value "$@"; read -r -a PIP_ARGS <<<"$2"; shift ;;
            --pip-args=*) read -r -a PIP_ARGS <<<"${1#*=}" ;;
            --no-apt) DO_APT=0 ;;
            --no-systemd) DO_SYSTEMD=0 ;;
            --no-start) DO_START=0 ;;
            --coral) DO_CORAL=1 ;;
            --dry-run) DRY_RUN=1 ;;
            --uninstall) UNINSTALL=1 ;;
            --purge) PURGE=1 ;;
            -h | --help) usage; exit 0 ;;
            *) die "unknown option '$1': see --help" ;;
        esac
        shift
    done
}

check_path() { # name value: an absolute, plain path (it is substituted into the unit)
    [[ $2 == /* ]] || die "$1 must be an absolute path, got '$2'"
    [[ $2 =~ ^[A-Za-z0-9._/+-]+$ ]] || die "$1 may hold only letters, digits and ._/+-, got '$2'"
    [[ $2 != / && $2 != //* ]] || die "$1 cannot be '$2'"
}

validate() {
    ((PURGE == 0 || UNINSTALL == 1)) || die "--purge only goes with --uninstall"
    check_path --prefix "$PREFIX"
    check_path --config-dir "$CONFIG_DIR"
    check_path --unit-dir "$UNIT_DIR"
    PREFIX=${PREFIX%/}
    CONFIG_DIR=${CONFIG_DIR%/}
    UNIT_DIR=${UNIT_DIR%/}
    case $PREFIX in
        /usr | /usr/local | /opt | /etc | /var | /home | /root) die "--prefix '$PREFIX' is a system directory: use a directory of its own, e.g. /opt/$NAME" ;;
    esac
    if [[ -n $DESTDIR ]]; then
        [[ $DESTDIR == /* ]] || DESTDIR=$PWD/$DESTDIR
        DESTDIR=${DESTDIR%/}
        [[ -n $DESTDIR ]] || die "--destdir cannot be '/': leave it out to install into the system"
    elif ((!DRY_RUN)) && [[ $(id -u) != 0 ]]; then
        die "run as root (sudo $0 ...), or use --destdir DIR to stage the files, or --dry-run"
    fi
}

# ---------------------------------------------------------------------------- install

install_apt_packages() {
    local packages=("${APT_PACKAGES[@]}") missing=() p
    ((DO_CORAL)) && packages+=(libedgetpu1-std)
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        say "Debian packages present: ${packages[*]}"
        return
    fi
    say "installing Debian packages: ${missing[*]}"
    system env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    system env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

create_user() {
    if [[ -z $DESTDIR ]] && id -u "$SERVICE_USER" >/dev/null 2>&1; then
        say "user '$SERVICE_USER' exists"
    else
        say "creating system user '$SERVICE_USER'"
        system useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "genre-edge service" "$SERVICE_USER"
    fi
    # usermod -a is idempotent: the groups are (re)asserted on every run.
    system usermod -a -G audio "$SERVICE_USER"
    ((DO_CORAL)) && system usermod -a -G plugdev "$SERVICE_USER"
    return 0
}

check_python() {
    if ((DRY_RUN)) && ! command -v "$PYTHON" >/dev/null; then
        return
    fi
    command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found: install python3 (>= 3.10) and python3-venv, or give --python"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        die "'$PYTHON' is older than 3.10: give a newer one with --python"
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
        die "'$PYTHON' cannot create virtualenvs: apt-get install python3-venv"
}

default_source() {
    local root
    root=$(cd "$SCRIPT_DIR/.." && pwd)
    [[ -f $root/pyproject.toml ]] || die "no checkout around $SCRIPT_DIR: give --source (a wheel, a directory or a requirement)"
    printf '%s' "$root"
}

install_package() {
    local venv=$DESTDIR$PREFIX spec=$SOURCE extras=""
    [[ -n $EXTRAS ]] && extras="[$EXTRAS]"
    if [[ -x $venv/bin/python ]]; then
        say "virtualenv exists: $venv"
    else
        [[ ! -e $venv ]] || [[ -z $(ls -A "$venv") ]] ||
            die "$venv exists and is not a virtualenv: remove it or pick another --prefix"
        say "creating virtualenv $venv"
        run mkdir -p "$(dirname "$venv")"
        run "$PYTHON" -m venv "$venv"
    fi
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)
    if [[ -d $spec ]]; then
        # Build a wheel first, from a copy: pip builds in the source tree, and as root it
        # would leave root-owned build/ and egg-info in the user's checkout (which then
        # breaks their own 'make run'); the reinstall below needs no second build.
        if ((DRY_RUN)); then
            WORK_DIR=/tmp/genre-edge-install.XXXXXX
        else
            WORK_DIR=$(mktemp -d /tmp/genre-edge-install.XXXXXX)
            trap 'rm -rf -- "$WORK_DIR"' EXIT
        fi
        say "building a wheel from $spec (a copy in $WORK_DIR/src)"
        # Only what the package is built from (not datasets, caches or runs in the checkout).
        local parts=(pyproject.toml README.md firmware_py training converter)
        if ((DRY_RUN)); then
            printf '+ %s\n' "$(quote copy "${parts[@]/#/$spec/}" "$WORK_DIR/src")"
        else
            mkdir "$WORK_DIR/src"
            tar -C "$spec" --exclude=__pycache__ -cf - "${parts[@]}" | tar -C "$WORK_DIR/src" -xf -
        fi
        run "${pip[@]}" wheel --quiet --no-deps "${PIP_ARGS[@]}" --wheel-dir "$WORK_DIR" "$WORK_DIR/src"
        if ((DRY_RUN)); then
            spec=$WORK_DIR/genre_edge-VERSION-py3-none-any.whl
        else
            spec=$(printf '%s\n' "$WORK_DIR"/*.whl | head -n 1)
            [[ -f $spec ]] || die "pip built no wheel from $SOURCE"
        fi
    fi
    local requirement=$spec$extras
    if [[ $spec != */* && ! -e $spec ]]; then
        # A requirement ("genre-edge==0.1.0"): the extras go after the name.
        local name=${spec%%[<>=!~;@ ]*}
        requirement=$name$extras${spec#"$name"}
    fi
    say "installing $requirement"
    run "${pip[@]}" install --quiet "${PIP_ARGS[@]}" "$requirement"
    if [[ $spec == *.whl ]] && { [[ -f $spec ]] || ((DRY_RUN)); }; then
        # Same version number, new code (a checkout after git pull): pip would call the
        # package "already satisfied", so replace it; its dependencies are kept.
        run "${pip[@]}" install --quiet --no-deps --force-reinstall "${PIP_ARGS[@]}" "$spec"
    fi
}

check_service_user_can_run() {
    # Catches an interpreter or prefix the service user cannot reach (mode 0700 parents,
    # a python under /root) now, not as a crash loop in the journal.
    [[ -z $DESTDIR ]] && ((!DRY_RUN)) || return 0
    command -v runuser >/dev/null || return 0
    if ! runuser -u "$SERVICE_USER" -- "$PREFIX/bin/genre-edge" --version >/dev/null 2>&1; then
        die "user '$SERVICE_USER' cannot run $PREFIX/bin/genre-edge: check the permissions of $PREFIX and its parents, and use a system interpreter (--python /usr/bin/python3)"
    fi
}

install_config() {
    local dir=$DESTDIR$CONFIG_DIR
    local config=$dir/config.toml
    run install -d -m 0750 "$dir"
    system chown "root:$SERVICE_USER" "$CONFIG_DIR"
    if [[ -e $config ]]; then
        say "keeping the existing $config"
    else
        say "writing $config from the example"
        [[ -f $CONFIG_EXAMPLE ]] || die "$CONFIG_EXAMPLE is missing: run this script from a genre-edge checkout"
        # 0640 root:genre-edge: it may hold the MQTT password.
        run install -m 0640 "$CONFIG_EXAMPLE" "$config"
        system chown "root:$SERVICE_USER" "$CONFIG_DIR/config.toml"
    fi
}

render_unit() {
    sed -e "s|/opt/genre-edge|$PREFIX|g" -e "s|/etc/genre-edge|$CONFIG_DIR|g" "$UNIT_TEMPLATE"
}

install_unit() {
    local unit=$DESTDIR$UNIT_DIR/$SERVICE rendered
    [[ -f $UNIT_TEMPLATE ]] || die "$UNIT_TEMPLATE is missing: run this script from a genre-edge checkout"
    rendered=$(render_unit)
    if [[ -f $unit ]] && [[ $(cat "$unit") == "$rendered" ]]; then
        say "unit unchanged: $unit"
    else
        say "writing $unit"
        run install -d -m 0755 "$DESTDIR$UNIT_DIR"
        if ((DRY_RUN)); then
            printf '+ (write the unit to %s)\n' "$unit"
        else
            printf '%s\n' "$rendered" >"$unit.tmp"
            chmod 0644 "$unit.tmp"
            mv -f "$unit.tmp" "$unit"
        fi
    fi
}

systemd_running() {
    [[ -d /run/systemd/system ]]
}

start_service() {
    if ((!DO_SYSTEMD)); then
        say "not running systemctl (--no-systemd)"
        return
    fi
    if [[ -z $DESTDIR ]] && ! systemd_running && ((!DRY_RUN)); then
        say "systemd is not running here: enable the service later with 'systemctl enable --now $SERVICE'"
        return
    fi
    system systemctl daemon-reload
    system systemctl enable "$SERVICE"
    if ((DO_START)); then
        system systemctl restart "$SERVICE"
    fi
}

do_install() {
    ((DO_APT)) && install_apt_packages
    check_python
    [[ -n $SOURCE ]] || SOURCE=$(default_source)
    create_user
    install_package
    check_service_user_can_run
    install_config
    install_unit
    start_service
    say "done: $NAME installed in $DESTDIR$PREFIX"
    cat <<EOF

  configuration   $CONFIG_DIR/config.toml  (then: sudo systemctl restart $NAME)
  logs            journalctl -u $NAME -f
  status          systemctl status $NAME
  display page    set [output] http = "127.0.0.1:8080" in the configuration
EOF
}

# -------------------------------------------------------------------------- uninstall

do_uninstall() {
    local venv=$DESTDIR$PREFIX unit=$DESTDIR$UNIT_DIR/$SERVICE
    if ((DO_SYSTEMD)) && { [[ -n $DESTDIR ]] || systemd_running || ((DRY_RUN)); }; then
        if [[ -n $DESTDIR ]] || ((DRY_RUN)) || systemctl cat "$SERVICE" >/dev/null 2>&1; then
            system systemctl disable --now "$SERVICE"
        fi
    fi
    if [[ -e $unit ]]; then
        say "removing $unit"
        run rm -f "$unit"
        if ((DO_SYSTEMD)) && { [[ -n $DESTDIR ]] || systemd_running || ((DRY_RUN)); }; then
            system systemctl daemon-reload
        fi
    fi
    if [[ -e $venv ]]; then
        # Only ever delete what this script made: a virtualenv.
        [[ -f $venv/pyvenv.cfg ]] || die "$venv is not a virtualenv (no pyvenv.cfg): not removing it"
        say "removing $venv"
        run rm -rf -- "$venv"
    fi
    if ((PURGE)); then
        local dir
        for dir in "$CONFIG_DIR" "$STATE_DIR" "$CACHE_DIR"; do
            if [[ -e $DESTDIR$dir ]]; then
                say "removing $DESTDIR$dir"
                run rm -rf -- "$DESTDIR$dir"
            fi
        done
        if [[ -n $DESTDIR ]] || id -u "$SERVICE_USER" >/dev/null 2>&1; then
            system userdel "$SERVICE_USER"
        fi
    elif [[ -e $DESTDIR$CONFIG_DIR ]]; then
        say "kept $DESTDIR$CONFIG_DIR (remove it with --uninstall --purge)"
    fi
    say "done: $NAME uninstalled"
}

main() {
    parse_args "$@"
    validate
    ((DRY_RUN)) && say "dry run: nothing is changed"
    if ((UNINSTALL)); then
        do_uninstall
    else
        do_install
    fi
}

main "$@"
