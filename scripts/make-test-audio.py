"""Write tests/data: the few seconds of audio that let the unit tests build the tiny corpus
without Debian packages (``corpus.build(..., sources="tests/data")``).

    python scripts/make-test-audio.py [tests/data]

Needs the packages of the tiny corpus once (flite, qabcs-data, bucklespring-data,
sonic-pi-samples); the result is committed, with its licences in tests/data/LICENCE.md.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from wildmix import audio, corpus

SR = 16000
SENTENCES = 3  # per voice
NOISE_SECONDS = 1.5
NOISE_FILES = {"qabcs-data": 8, "bucklespring-data": 4, "sonic-pi-samples": 4}


def speech(root: Path) -> None:
    rng = np.random.default_rng(0)
    for voice in (v for v in corpus.VOICES if v.engine in corpus.SIZES["tiny"].engines):
        folder = root / "speech" / voice.engine / voice.voice
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(SENTENCES):
            with tempfile.TemporaryDirectory() as tmp:
                wav = Path(tmp) / "s.wav"
                subprocess.run(["flite", "-voice", voice.voice, "-t", corpus.sentence(rng),
                                "-o", str(wav)], check=True)
                x = audio.read(wav, SR)
            audio.write(folder / f"{k:02d}.flac", x, SR, subtype="PCM_16")


def noise(root: Path) -> None:
    for package, count in NOISE_FILES.items():
        folder = root / "noise" / package
        folder.mkdir(parents=True, exist_ok=True)
        files = corpus.plan._noise_files((package,), count)
        for k, (_, path) in enumerate(files):
            x = audio.read(path, SR, check=False)
            n = int(NOISE_SECONDS * SR)
            start = int(np.argmax(np.convolve(np.abs(x), np.ones(n), "valid"))) \
                if len(x) > n else 0  # the loudest stretch
            clip = audio.fit_length(x[start:start + n], n)
            peak = float(np.abs(clip).max()) or 1.0
            audio.write(folder / f"{k:02d}-{Path(path).stem[:24]}.flac",
                        (0.9 * clip / max(peak, 0.9)).astype(np.float32), SR,
                        subtype="PCM_16")


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data")
    speech(root)
    noise(root)
    total = sum(p.stat().st_size for p in root.rglob("*.flac"))
    print(f"wrote {len(list(root.rglob('*.flac')))} files, {total / 1e6:.2f} MB, to {root}")
