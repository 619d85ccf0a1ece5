#!/usr/bin/env bash
# Unpack the audio (and copyright file) of the sound library's Debian packages into DIR/NAME,
# without installing them; packages already installed or unpacked are skipped.
# Usage: scripts/fetch-library.sh DIR PACKAGE...
set -euo pipefail
dir=$1; shift
mkdir -p "$dir/.debs"
for name in "$@"; do
    if [ -d "/usr/share/doc/$name" ] || [ -d "$dir/$name/usr/share/doc/$name" ]; then
        continue
    fi
    echo "unpacking $name into $dir/$name" >&2
    (cd "$dir/.debs" && apt-get download -q "$name" >/dev/null 2>&1) || {
        echo "wildmix: cannot download the Debian package $name (apt-get update first?)" >&2
        exit 1
    }
    mkdir -p "$dir/$name.tmp"
    dpkg-deb --fsys-tarfile "$dir/.debs/${name}"_*.deb | tar -x -C "$dir/$name.tmp" \
        --wildcards '*.ogg' '*.wav' '*.flac' '*.zip' '*.wz' '*.cat' '*/copyright' 2>/dev/null || true
    mv "$dir/$name.tmp" "$dir/$name"
    rm -f "$dir/.debs/${name}"_*.deb
done
