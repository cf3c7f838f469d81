# Shared by bin/test, bin/demo and bench/run (sourced, not run): make sure the
# Debian packages and the project's virtualenv are there, doing nothing when they are.
#
# Which interpreter and which Django:
#   SAFEFCGI_PYTHON   unset: Debian's /usr/bin/python3. A version such as 3.13:
#                     pyenv's newest 3.13.x. Otherwise the path of an interpreter.
#   SAFEFCGI_DJANGO   a Django release series such as 6.0; unset: the newest
#                     series the interpreter runs (6.1 on Python 3.12 and newer,
#                     5.2 LTS before).
# Each combination gets a virtualenv of its own: .venv for the default one,
# .venv-py3.13-django6.1 and the like for the others.

# The repository root, whatever directory the calling script was started from.
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian's interpreter, the default: PostgreSQL, lighttpd and the tests'
# unprivileged users run as other users and must be able to run the venv.
SYSTEM_PYTHON=/usr/bin/python3
# pyenv keeps its interpreters under root's home (mode 0700), where no other
# user can run them; they are run from a world-readable copy made here.
PYENV_VERSIONS=${PYENV_ROOT:-/root/.pyenv}/versions
SHARED_PYTHONS=/opt/safefcgi-python

# Set by ensure_venv: the interpreter, its X.Y version, the Django series, the venv.
PYTHON=
PYTHON_VERSION=
DJANGO_SERIES=
VENV=

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }

die() {
    log "$*"
    exit 2
}

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
    # The tests and the demo start their own PostgreSQL, MariaDB, Redis,
    # pgbouncer and lighttpd on private sockets; keep the packages from
    # starting system services (which would also fight over port 80 between
    # nginx and lighttpd).
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

# --------------------------------------------------------------------------- interpreter

# True when the unprivileged user nobody can start INTERPRETER and import the
# modules the tests need (so its directories and libpython are readable).
others_can_run() {
    setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
        "$1" -c 'import ssl, sqlite3, ctypes' >/dev/null 2>&1
}

# Rewrite every run path of the ELF files under COPY that points into
# PREFIX (the original installation) to the same place inside the copy,
# relative to $ORIGIN: pyenv links python against $PREFIX/lib/libpython.
relocate_run_paths() {
    local copy=$1 prefix=$2 file run_path relative
    ensure_debian_packages patchelf
    while IFS= read -r -d '' file; do
        run_path=$(patchelf --print-rpath "$file" 2>/dev/null) || continue
        case "$run_path" in *"$prefix"*) ;; *) continue ;; esac
        relative=$(realpath --relative-to="$(dirname "$file")" "$copy")
        patchelf --set-rpath "${run_path//$prefix/\$ORIGIN/$relative}" "$file"
    done < <(find "$copy" -type f \( -path '*/bin/*' -o -name '*.so' -o -name '*.so.*' \) -print0)
}

# Print the path of a copy of INTERPRETER's installation under SHARED_PYTHONS
# that every user can run, making it on first use.
shared_copy() {
    local interpreter=$1 prefix version short dest
    prefix=$("$interpreter" -c 'import sys; print(sys.base_prefix)')
    version=$("$interpreter" -c 'import platform; print(platform.python_version())')
    short=${version%.*}
    dest=$SHARED_PYTHONS/$version
    mkdir -p "$SHARED_PYTHONS"
    chmod 755 "$SHARED_PYTHONS"
    (
        # Another run may be making the same copy right now.
        flock 9
        if [ "$(cat "$dest/.copy-of" 2>/dev/null)" = "$prefix" ] \
            && others_can_run "$dest/bin/python$short"; then
            exit 0
        fi
        log "copying $prefix to $dest, where other users can run it"
        rm -rf "$dest"
        local work
        work=$(mktemp -d "$SHARED_PYTHONS/.copy.XXXXXX")
        cp -a "$prefix/." "$work/"
        # CPython's own test suite: 140 MB nothing here runs.
        rm -rf "$work/lib/python$short/test"
        relocate_run_paths "$work" "$prefix"
        chmod -R u+rwX,go+rX,go-w "$work"
        printf '%s\n' "$prefix" > "$work/.copy-of"
        mv "$work" "$dest"
        if ! others_can_run "$dest/bin/python$short"; then
            log "the copy in $dest cannot be run by other users either"
            exit 1
        fi
    ) 9>"$SHARED_PYTHONS/.lock" >&2 || exit 1
    printf '%s\n' "$dest/bin/python$short"
}

# Print the interpreter SAFEFCGI_PYTHON names, as one other users can run.
resolve_python() {
    local wanted=${SAFEFCGI_PYTHON:-} interpreter
    if [ -z "$wanted" ]; then
        [ -x "$SYSTEM_PYTHON" ] || die "no $SYSTEM_PYTHON: install Debian's python3"
        printf '%s\n' "$SYSTEM_PYTHON"
        return
    fi
    if [[ $wanted =~ ^3\.[0-9]+$ ]]; then
        interpreter=$(compgen -G "$PYENV_VERSIONS/$wanted.*/bin/python$wanted" | sort -V | tail -n 1)
        [ -n "$interpreter" ] || die "no Python $wanted: nothing in $PYENV_VERSIONS/$wanted.*;" \
            "install it (pyenv install $wanted) or set SAFEFCGI_PYTHON to an interpreter's path"
    else
        interpreter=$wanted
        [ -x "$interpreter" ] && [ ! -d "$interpreter" ] \
            || die "SAFEFCGI_PYTHON=$wanted is not an executable file"
    fi
    # Only root's tests switch to other users.
    if [ "$(id -u)" -ne 0 ] || others_can_run "$interpreter"; then
        printf '%s\n' "$interpreter"
    else
        shared_copy "$interpreter"
    fi
}

# The newest Django series that supports Python X.Y, and whether SERIES does.
best_django_for() {
    if [ "${1#3.}" -ge 12 ]; then echo 6.1; else echo 5.2; fi
}

django_supports() {
    local series=$1 minor=${2#3.}
    case "$series" in
        5.2) [ "$minor" -ge 10 ] && [ "$minor" -le 14 ] ;;
        6.0 | 6.1) [ "$minor" -ge 12 ] && [ "$minor" -le 14 ] ;;
        *) return 0 ;;  # not ours to judge: pip will say
    esac
}

# --------------------------------------------------------------------------- virtualenv

# Pick the interpreter and Django series, then create the venv and reinstall
# the project only when that choice or the packaging metadata changed: the
# install is editable, so source changes need nothing.
ensure_venv() {
    PYTHON=$(resolve_python) || exit $?
    PYTHON_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
        || die "$PYTHON does not run"
    local best
    best=$(best_django_for "$PYTHON_VERSION")
    DJANGO_SERIES=${SAFEFCGI_DJANGO:-$best}
    [[ $DJANGO_SERIES =~ ^[0-9]+\.[0-9]+$ ]] \
        || die "SAFEFCGI_DJANGO=$DJANGO_SERIES is not a release series such as 6.1"
    django_supports "$DJANGO_SERIES" "$PYTHON_VERSION" \
        || die "Django $DJANGO_SERIES does not support Python $PYTHON_VERSION ($PYTHON)"
    if [ -z "${SAFEFCGI_PYTHON:-}" ] && [ "$DJANGO_SERIES" = "$best" ]; then
        VENV=$REPO_ROOT/.venv
    else
        VENV=$REPO_ROOT/.venv-py$PYTHON_VERSION-django$DJANGO_SERIES
    fi

    local stamp="$VENV/.safefcgi-installed" wanted
    wanted=$( (cat "$REPO_ROOT/pyproject.toml"; echo "$PYTHON $DJANGO_SERIES") \
        | sha256sum | cut -d' ' -f1)
    if [ -x "$VENV/bin/python" ] && [ "$(readlink -f "$VENV/bin/python")" != "$(readlink -f "$PYTHON")" ]; then
        log "$VENV was made with another interpreter: making it anew"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV with $PYTHON"
        "$PYTHON" -m venv "$VENV"
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || [ ! -x "$VENV/bin/safefcgi" ]; then
        log "installing safefcgi, Django $DJANGO_SERIES and the test dependencies into $VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
            -e "$REPO_ROOT[test]" "django==$DJANGO_SERIES.*"
        printf '%s\n' "$wanted" > "$stamp"
    fi
    log "Python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())')" \
        "($PYTHON), Django $("$VENV/bin/python" -c 'import django; print(django.__version__)')," \
        "in $VENV"
}
