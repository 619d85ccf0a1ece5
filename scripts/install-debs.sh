#!/usr/bin/env bash
# Install the Debian packages that the built-in corpus of a given size needs.
# Usage: scripts/install-debs.sh PYTHON SIZE [KIND]
set -euo pipefail
py=$1 size=$2 kind=${3:-speech}
missing=$("$py" -m wildmix corpus packages --size "$size" --kind "$kind" --missing)
# shellcheck disable=SC2086  # one word per package
exec "$(dirname "$0")/apt-install.sh" "the built-in corpus" $missing
