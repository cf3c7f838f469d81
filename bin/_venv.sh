# Shared by bin/test and bin/demo (sourced, not run): make sure the Debian
# packages and the project's virtualenv are there, doing nothing when they are.

# The repository root, whatever directory the calling script was started from.
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# SAFEFCGI_DJANGO=4.2 selects another Django release series, in a venv of its own.
DJANGO_SERIES=${SAFEFCGI_DJANGO:-}
VENV="$REPO_ROOT/.venv${DJANGO_SERIES:+-django$DJANGO_SERIES}"

# Debian's interpreter, not a pyenv or other per-user one: PostgreSQL and
# pgbouncer run as another user in the tests and must be able to run the venv.
SYSTEM_PYTHON=/usr/bin/python3

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }

missing_debian_packages() {
    local package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
            printf '%s\n' "$package"
        fi
    done
}

ensure_debian_packages() {
    local missing
    missing=$(missing_debian_packages "$@")
    [ -z "$missing" ] && return 0
    # shellcheck disable=SC2086 # one package name per word
    set -- $missing
    if [ "$(id -u)" -ne 0 ]; then
        log "missing Debian packages: $*"
        log "install them as root: apt-get install $*"
        exit 1
    fi
    log "installing Debian packages: $*"
    # The tests and the demo start their own PostgreSQL, pgbouncer and lighttpd
    # on private sockets; keep the packages from starting system services
    # (which would also fight over port 80 between nginx and lighttpd).
    local own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local status=0
    if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
        apt-get update -q || status=$?
    fi
    if [ "$status" -eq 0 ]; then
        apt_install "$@" || { apt-get update -q && apt_install "$@"; } || status=$?
    fi
    [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
    return "$status"
}

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# Reinstall the project only when its packaging metadata changed: the install
# is editable, so source changes need nothing.
ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV with $SYSTEM_PYTHON"
        "$SYSTEM_PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.safefcgi-installed"
    local wanted
    wanted=$( (cat "$REPO_ROOT/setup.cfg" "$REPO_ROOT/pyproject.toml"; echo "$DJANGO_SERIES") \
        | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || [ ! -x "$VENV/bin/safefcgi" ]; then
        log "installing safefcgi and its test dependencies into $VENV"
        local django=()
        [ -n "$DJANGO_SERIES" ] && django=("django==$DJANGO_SERIES.*")
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO_ROOT[test]" \
            "${django[@]}"
        printf '%s\n' "$wanted" > "$stamp"
    fi
}
