#!/usr/bin/env bash
# Make the Pythons Splunk runs add-on scripts with (3.9 and 3.13) available to the
# end-to-end tests, where they are missing (docs/development.md, "Test matrix").
#
# Found first in pyenv's versions or as python3.X on PATH (tests/harness/pythons.py).
# Missing ones come from Debian's packages, the only interpreter source this project's
# machines reach (python.org, which `pyenv install` downloads from, is not reachable):
#   3.13: `apt-get install python3.13` (Debian 13 ships it);
#   3.9:  Debian 11's python3.9 packages, unpacked (not installed: nothing of the system
#         changes) under $PREFIX with the two libraries Debian 12+ no longer ships
#         (OpenSSL 1.1, libffi 7), and a python3.9 launcher in $BIN_DIR.
# The Debian mirror is the one this machine's apt is set up with.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/opt/ta_mailsec-python3.9}
BIN_DIR=${BIN_DIR:-/usr/local/bin}
PY39_PACKAGES="python3.9-minimal libpython3.9-minimal libpython3.9-stdlib libssl1.1 libffi7 libmpdec3"

found() { python3 tests/harness/pythons.py "$1" >/dev/null 2>&1; }

apt_mirror() {
    # the Debian archive URI of this machine's own apt sources
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
        | grep -vE 'security|nodesource|google' | head -1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
            | awk '{print $2}' | grep -vE 'security|nodesource|google' | head -1 || true)
    fi
    [ -n "$uri" ] || { echo "no Debian mirror in this machine's apt sources" >&2; return 1; }
    echo "$uri"
}

install_313() {
    apt-get update -qq && apt-get install -y -qq python3.13 >/dev/null
}

install_39() {
    local mirror state
    mirror=$(apt_mirror)
    state=$(mktemp -d)
    mkdir -p "$state/lists/partial" "$state/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bullseye main" \
        >"$state/sources.list"
    : >"$state/status"
    local apt=(apt-get -qq -o "APT::Sandbox::User=root" -o "Dir::Etc::SourceList=$state/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null" -o "Dir::State::Lists=$state/lists"
        -o "Dir::State::Status=$state/status" -o "Dir::Cache=$state"
        -o "Dir::Cache::Archives=$state/archives")
    "${apt[@]}" update
    (cd "$state" && "${apt[@]}" download $PY39_PACKAGES)
    rm -rf "$PREFIX"
    mkdir -p "$PREFIX"
    for deb in "$state"/*.deb; do dpkg-deb -x "$deb" "$PREFIX"; done
    rm -rf "$state"
    mkdir -p "$BIN_DIR"
    cat >"$BIN_DIR/python3.9" <<EOF
#!/bin/sh
# Debian 11's Python 3.9, unpacked by tools/install_splunk_pythons.sh
LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:$PREFIX/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" \\
    exec "$PREFIX/usr/bin/python3.9" "\$@"
EOF
    chmod 755 "$BIN_DIR/python3.9"
}

for version in 3.9 3.13; do
    if found "$version"; then
        continue
    fi
    echo "Python $version is missing: installing it from Debian's packages"
    if [ "$version" = 3.13 ]; then install_313 || true; else install_39 || true; fi
    if ! found "$version"; then
        echo "Could not install Python $version from Debian's packages: the end-to-end tests" \
            "need it. Debian 12 has no python3.13 package (Debian 13 has); where python.org" \
            "is reachable, \`pyenv install $version\` gives it (docs/development.md)." >&2
        exit 1
    fi
done
for version in 3.9 3.13; do
    echo "Python $version: $(python3 tests/harness/pythons.py "$version")"
done
