#!/usr/bin/env bash
# Install the Debian packages that the built-in corpus of a given size needs.
# Usage: scripts/install-debs.sh PYTHON SIZE [KIND]
# Uses apt-get as root or through password-less sudo; otherwise stops with one message.
set -euo pipefail
py=$1 size=$2 kind=${3:-speech}
missing=$("$py" -m wildmix.cli corpus packages --size "$size" --kind "$kind" --missing)
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
else
    echo "wildmix: the built-in corpus needs these Debian packages: $missing;" \
         "install them with: sudo apt-get install --no-install-recommends $missing" >&2
    exit 1
fi
echo "installing Debian packages: $missing" >&2
$sudo apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing >/dev/null
