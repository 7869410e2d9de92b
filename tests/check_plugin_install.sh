#!/usr/bin/env bash
# Check that `twistd` finds the connserver plugin after installing the project
# into a fresh virtualenv:
#   1. a plain, non-editable `pip install <repo>`;
#   2. an editable install in setuptools' "compat" mode
#      (`pip install -e <repo> --config-settings editable_mode=compat`).
# Default editable installs use an import hook that Twisted's plugin scan
# (which walks sys.path for twisted/plugins directories) cannot see, so the
# compat mode is the one to use for development; docs/cli.md says so.
#
# It also checks that no dropin.cache is shipped.  Needs the package index
# (or a configured mirror) for Twisted and the build backend.
#
# Usage: tests/check_plugin_install.sh        (PYTHON=python3.11 to choose)
set -euo pipefail

CHECKOUT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Build from a copy: setuptools writes build/ and *.egg-info next to the
# sources, and a stray dropin.cache in the checkout must not be picked up.
REPO="$WORK/src"
mkdir "$REPO"
tar -C "$CHECKOUT" --exclude=.git --exclude=build --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache \
    --exclude=dropin.cache -cf - . | tar -C "$REPO" -xf -

fail() {
    echo "check_plugin_install: FAIL: $*" >&2
    exit 1
}

# Run from an empty directory so that nothing is imported from the checkout.
check() {
    local venv="$1" label="$2"
    local listing
    listing="$(cd "$WORK" && "$venv/bin/twistd" --help)" ||
        fail "$label: twistd --help failed"
    grep -Eq '^ +connserver +' <<<"$listing" ||
        fail "$label: connserver is not among twistd's commands"
    local help
    help="$(cd "$WORK" && "$venv/bin/twistd" connserver --help)" ||
        fail "$label: twistd connserver --help failed"
    grep -q -- '--idle-timeout' <<<"$help" ||
        fail "$label: twistd connserver --help does not list --idle-timeout"
    if find "$venv" -name dropin.cache -path '*connserver*' | grep -q .; then
        fail "$label: a dropin.cache was installed"
    fi
    echo "check_plugin_install: $label: ok"
}

# 1. Non-editable.
"$PYTHON" -m venv "$WORK/plain"
"$WORK/plain/bin/python" -m pip install --quiet --disable-pip-version-check "$REPO"
"$WORK/plain/bin/python" -m pip show --files connserver |
    grep -q 'twisted/plugins/connserver_plugin.py' ||
    fail "non-editable: the plugin file is not installed"
if "$WORK/plain/bin/python" -m pip show --files connserver | grep -q dropin.cache; then
    fail "non-editable: the wheel ships a dropin.cache"
fi
check "$WORK/plain" "non-editable install"

# 2. Editable (compat mode).
"$PYTHON" -m venv "$WORK/editable"
"$WORK/editable/bin/python" -m pip install --quiet --disable-pip-version-check \
    -e "$REPO" --config-settings editable_mode=compat
check "$WORK/editable" "editable install (compat mode)"
