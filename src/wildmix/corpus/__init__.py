"""The built-in corpus: real and synthetic speech in real and generated noise, built offline.

Speech comes from TTS voices (flite, festival, espeak-ng) reading sentences made by a small
grammar kept in this file, and from real Czech game dialogue (fillets-ng-data-cs). Noise
comes from recorded sound packages (qabcs-data, bucklespring-data, sonic-pi-samples,
wesnoth) and from generators (white, pink and brown noise, mains hum, babble). Speakers and
noise files are disjoint between train, valid and test. Everything is drawn from
``numpy.random.default_rng([seed, ...])`` per item, so a build is byte-identical for the
same seed and size whatever the number of worker processes.

Layout (``kind="speech"``)::

    DIR/manifest.jsonl
    DIR/train/noisy/*.wav   noisy speech: the unlabeled data a user would have
    DIR/train/noise/*.wav   separate noise-only clips
    DIR/train/clean/*.wav   the clean speech of train/noisy, for a supervised reference only
    DIR/{valid,test}/{noisy,clean,noise}/*.wav   paired: noisy = clean + noise (float WAV)

Layout (``kind="sounds"``, FUSS-style universal sound separation)::

    DIR/{train,valid,test}/mixture/NAME.wav      1 to 4 overlapping sources
    DIR/{train,valid,test}/sources/NAME/sK.wav   each source as its own reference
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from wildmix.corpus.catalogue import (  # noqa: F401 - the corpus's public names
    ASTERISK_ROOT,
    CZECH_ROOT,
    ENGINE_PACKAGES,
    FESTVOX_RU,
    GENERATED_NOISES,
    KINDS,
    KLETTRES_ROOT,
    KTUBERLING_ROOT,
    NOISE_SOURCES,
    PACKAGES,
    QABCS_WORDS,
    REAL_VOICES,
    RECORDED_ENGINES,
    SIZES,
    SPLITS,
    VOICES,
    WORD_ENGINES,
    WORD_LANGUAGES,
    WORD_SPLITS,
    CorpusError,
    Package,
    SizeSpec,
    Voice,
)
from wildmix.corpus.plan import (  # noqa: F401 - the corpus's public names
    installed,
    missing_packages,
    required_packages,
    sentence,
)
from wildmix.corpus.render import (  # noqa: F401 - the corpus's public names
    build,
)


@dataclass(frozen=True)
class Layout:
    """Where a built corpus keeps the parts that training reads (None: absent)."""

    kind: str  # speech | sounds
    train: str  # training inputs: train/noisy or train/mixture
    noise: str | None  # noise-only clips: train/noise
    clean: str | None  # references of the training inputs: train/clean, train/sources
    valid: str | None  # the paired validation split: valid/


def layout(root: str | os.PathLike) -> Layout | None:
    """The parts of a built-in corpus at ``root``, or None when ``root`` is not one.

    This is the one place that knows the corpus layout (see the module docstring);
    :func:`paired_task` tells how a paired split is laid out.
    """
    root = Path(root)
    if not (root / "manifest.jsonl").is_file() or not (root / "train").is_dir():
        return None
    some = lambda p: str(p) if p.is_dir() else None  # noqa: E731
    if (root / "train" / "mixture").is_dir():
        return Layout("sounds", str(root / "train" / "mixture"), None,
                      some(root / "train" / "sources"), some(root / "valid" / "mixture"))
    return Layout("speech", str(root / "train" / "noisy"), some(root / "train" / "noise"),
                  some(root / "train" / "clean"), some(root / "valid"))


PAIRED = {"enhance": ("noisy", "clean"), "separate": ("mixture", "sources")}


def paired_task(folder: str | os.PathLike) -> str | None:
    """``'enhance'`` for ``noisy/`` + ``clean/``, ``'separate'`` for ``mixture/`` +
    ``sources/`` (``sources/NAME/sK.wav``), None for anything else."""
    for task, (inputs, refs) in PAIRED.items():
        if Path(folder, inputs).is_dir() and Path(folder, refs).is_dir():
            return task
    return None


def read_manifest(root: str | os.PathLike) -> tuple[dict, list[dict]]:
    """``(header, records)`` of a built corpus."""
    lines = Path(root, "manifest.jsonl").read_text().splitlines()
    header = json.loads(lines[0])["header"]
    return header, [json.loads(line) for line in lines[1:]]


def describe(root: str | os.PathLike) -> str:
    """Minutes of audio per split and role of a built corpus, as one line."""
    _, records = read_manifest(root)
    minutes: dict[str, float] = {}
    for r in records:
        key = f"{r['split']}/{r['role']}"
        minutes[key] = minutes.get(key, 0.0) + r["duration_s"] / 60
    return ", ".join(f"{k} {v:.1f} min" for k, v in sorted(minutes.items()))
