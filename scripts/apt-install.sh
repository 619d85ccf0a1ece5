#!/usr/bin/env bash
# Install Debian packages with apt-get as root or through password-less sudo; otherwise
# stop with one message saying what to run. Usage: scripts/apt-install.sh WHY PACKAGE...
set -euo pipefail
why=$1; shift
[ $# -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
else
    echo "wildmix: $why needs these Debian packages: $*;" \
         "install them with: sudo apt-get install --no-install-recommends $*" >&2
    exit 1
fi
echo "installing Debian packages: $*" >&2
$sudo apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null
