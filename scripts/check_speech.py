"""Build wildmix's check speech (src/wildmix/speech/): the clean half of `wildmix adapt`'s
label-free check (the user's own noise is the other half), from voices that no shipped
model trained on, valid on or was tested with.

    python scripts/check_speech.py

Deterministic. Needs the Debian packages `ktuberling-data` (real voice: the Norwegian
Nynorsk words, the one KTuberling language that no corpus split uses) and `flite` (the awb
and kal16 voices, which no shipped model's training corpus holds). Clips of about 7 s:
words joined by 0.25 s of silence, or one sentence; 16-bit FLAC at 16 kHz; SOURCES.md
beside them says where each came from and its licence.
"""

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from wildmix import audio

RATE, SECONDS, GAP = 16000, 7.0, 0.25
OUT = Path(__file__).resolve().parent.parent / "src" / "wildmix" / "speech"
WORDS = Path("/usr/share/ktuberling/sounds/nn")
WORD_CLIPS = 6
SENTENCES = {  # flite voice -> sentences of our own
    "awb": ["The old boat drifted past the harbour wall while the gulls kept calling.",
            "Please write the numbers down before the meeting starts tomorrow morning.",
            "A cold wind came over the hills and the farmers brought the sheep inside."],
    "kal16": ["We will need two more chairs and a longer table for the visitors.",
              "The radio said the road to the north would stay closed until Friday.",
              "She opened the window, listened for a moment, and went back to work."],
}


def _words() -> list[tuple[str, np.ndarray, str]]:
    files = sorted(WORDS.glob("*.opus")) + sorted(WORDS.glob("*.ogg"))
    clips, parts, used = [], [], []
    for f in files:
        x = audio.read(f, RATE)
        parts += [x, np.zeros(int(GAP * RATE), np.float32)]
        used.append(f.name)
        if sum(map(len, parts)) >= SECONDS * RATE:
            clips.append((f"ktuberling-nn-{len(clips)}", np.concatenate(parts),
                          f"ktuberling-data (GPL-2+): {WORDS}/" + ", ".join(used)))
            parts, used = [], []
        if len(clips) == WORD_CLIPS:
            break
    return clips


def _flite(voice: str, text: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
        return audio.read(path, RATE)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.flac"):
        old.unlink()
    clips = _words() + [(f"flite-{voice}-{k}", _flite(voice, text),
                         f"flite (BSD-style, CMU) voice {voice}: \"{text}\"")
                        for voice, texts in SENTENCES.items() for k, text in enumerate(texts)]
    lines = ["# Check speech: sources and licences", "",
             "Built by `scripts/check_speech.py`: voices that no shipped model trained on.", "",
             "| file | source |", "|---|---|"]
    for name, x, source in clips:
        x = x[:int(SECONDS * RATE)]
        sf.write(OUT / f"{name}.flac", 0.5 * x / max(1e-6, float(np.abs(x).max())), RATE,
                 subtype="PCM_16")
        lines.append(f"| {name}.flac | {source} |")
    (OUT / "SOURCES.md").write_text("\n".join(lines) + "\n")
    print(f"{len(clips)} files in {OUT}")


if __name__ == "__main__":
    main()
