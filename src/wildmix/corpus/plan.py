"""Planning the built-in corpus: which packages a size needs, the sentence grammar, and
every item drawn (voice, text or recorded files, noise, SNR, room) before any audio is made.
Deterministic: ``numpy.random.default_rng([seed, ...])`` per item."""

from __future__ import annotations

import glob
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wildmix import audio
from wildmix.corpus.catalogue import (
    ASTERISK_ROOT,
    CZECH_ROOT,
    ENGINE_PACKAGES,
    FESTVOX_RU,
    GENERATED_NOISES,
    KLETTRES_ROOT,
    KTUBERLING_ROOT,
    NOISE_SOURCES,
    PACKAGES,
    QABCS_WORDS,
    RECORDED_ENGINES,
    SIZES,
    SPLITS,
    VOICES,
    WORD_ENGINES,
    CorpusError,
    SizeSpec,
    Voice,
)


def required_packages(size: str, kind: str = "speech") -> list[str]:
    """Debian packages a build needs."""
    spec = _size(size)
    names = [p for e in spec.engines for p in ENGINE_PACKAGES[e]] + list(spec.noise_packages)
    if kind == "sounds":
        names += [p for p in ("bucklespring-data", "sonic-pi-samples") if p not in names]
    return list(dict.fromkeys(names))


def missing_packages(size: str, kind: str = "speech") -> list[str]:
    """The required packages that are not installed (see :func:`installed`)."""
    names = required_packages(size, kind)
    status = installed(names)
    return [p for p in names if not status[p]]


def installed(names: list[str]) -> dict[str, bool]:
    """Whether each Debian package is installed: dpkg's word where dpkg exists, else
    whether files that only that package installs are present."""
    if shutil.which("dpkg-query"):
        result = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *names],
                                capture_output=True, text=True)
        ok = {line.split()[0] for line in result.stdout.splitlines()
              if line.endswith(" installed") and " ok " in line}
        return {n: n in ok for n in names}
    return {n: any(glob.iglob(PACKAGES[n].probe)) for n in names}


# --- text ------------------------------------------------------------------------------

_ADJ = ("small", "bright", "old", "quiet", "heavy", "green", "wooden", "sharp", "warm", "cold",
        "empty", "narrow", "golden", "broken", "clean", "dark", "soft", "tall", "young", "red",
        "round", "lazy", "proud", "strange", "gentle", "busy", "silver", "plain", "wide", "rich")
_NOUN = ("farmer", "river", "basket", "teacher", "window", "horse", "garden", "letter", "engine",
         "candle", "village", "doctor", "bottle", "forest", "sailor", "bridge", "kitten",
         "market", "ladder", "painter", "station", "pencil", "island", "tower", "blanket",
         "mountain", "kettle", "soldier", "orchard", "violin", "harbour", "carpet", "lantern",
         "wagon", "meadow", "cousin", "pocket", "jacket", "rabbit", "castle")
_VERB = ("carried", "painted", "found", "opened", "watched", "followed", "repaired", "washed",
         "counted", "dropped", "pushed", "lifted", "cleaned", "visited", "checked", "packed",
         "burned", "covered", "filled", "pulled", "sold", "bought", "fixed", "moved")
_ADV = ("slowly", "quickly", "early", "late", "again", "quietly", "carefully", "twice",
        "happily", "at noon", "at dawn", "last winter", "before supper", "after the rain",
        "near the gate", "by the lake", "in the morning", "under the stars")
_TEMPLATES = (
    "The {a1} {n1} {v} the {a2} {n2} {adv}.",
    "A {a1} {n1} {v} {adv}, and the {n2} was {a2}.",
    "Did the {n1} see the {a1} {n2} {adv}?",
    "We {v} the {a1} {n1} beside the {a2} {n2}.",
    "Her {n1} {v} a {a1} {n2} {adv}.",
    "The {n1} and the {n2} were {a1} {adv}.",
    "Nobody {v} the {a1} {n1} near the {a2} {n2}.",
    "They {v} {n1}s and {a1} {n2}s {adv}.",
)


def sentence(rng: np.random.Generator) -> str:
    """One sentence from the grammar above (about 2 to 4 seconds of speech)."""
    pick = lambda words: words[int(rng.integers(len(words)))]  # noqa: E731
    template = pick(_TEMPLATES)
    return template.format(a1=pick(_ADJ), a2=pick(_ADJ), n1=pick(_NOUN), n2=pick(_NOUN),
                           v=pick(_VERB), adv=pick(_ADV))


# --- source files ----------------------------------------------------------------------


def _czech_files(character: str) -> list[str]:
    files = sorted(str(p) for p in Path(CZECH_ROOT).glob("*/cs/*.ogg"))

    def code(path: str) -> str:
        parts = Path(path).stem.split("-")
        c = parts[1] if len(parts) > 2 else ""
        return c if c in ("m", "v") else "other"

    return [f for f in files if code(f) == character]


def _noise_files(packages: tuple[str, ...], cap: int | None,
                 sources: str | None = None) -> list[tuple[str, str]]:
    """``(package, path)`` of every recorded noise file, sorted; from the installed package,
    or from ``sources/noise/PACKAGE/`` (see :func:`build`)."""
    out = []
    for package in packages:
        folder, exts = NOISE_SOURCES[package]
        if sources:
            folder, exts = Path(sources, "noise", package), audio.AUDIO_EXTENSIONS
        files = sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in exts)
        if cap:
            files = files[:: max(1, len(files) // cap)][:cap]
        out += [(package, f) for f in files]
    return out


@dataclass
class Item:
    split: str
    name: str
    role: str  # noisy | noise
    voice: str = ""
    speaker: str = ""
    texts: list[str] = field(default_factory=list)
    speech_files: list[str] = field(default_factory=list)  # recorded clips (czech)
    noise: str = ""  # "package:path" or "generated:kind"
    snr_db: float | None = None
    level_db: float = -25.0
    seed: list[int] = field(default_factory=list)
    room: dict | None = None  # simulated room of the speech (see _plan_room)


# Recorded noise packages are split into train/valid/test group by group, so that a file
# lands in the same split in every corpus size that has its group: a model trained on
# 'large' never hears a noise file of 'small''s valid or test split.
NOISE_GROUPS = (("qabcs-data", "bucklespring-data", "sonic-pi-samples"),
                ("wesnoth-1.16-data",), ("redeclipse-data",))


def _noise_pools(spec: SizeSpec, seed: int, sources: str | None = None
                 ) -> dict[str, list[tuple[str, str]]]:
    """``split -> [(package, path)]``: a seeded 70 / 15 / 15 shuffle within each group."""
    pools: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    for group in NOISE_GROUPS:
        packages = tuple(p for p in spec.noise_packages if p in group)
        files = (_noise_files(packages, spec.noise_files_per_package, sources)
                 if packages else [])
        order = np.random.default_rng([seed, 1]).permutation(len(files))
        cut1, cut2 = int(0.7 * len(order)), int(0.85 * len(order))
        for split, part in zip(SPLITS, (order[:cut1], order[cut1:cut2], order[cut2:]), strict=True):
            pools[split] += [files[i] for i in sorted(part)]
    return pools


def _recordings(voices: list[Voice], sources: str | None) -> dict[str, list[str]]:
    """``voice name -> audio files`` of every voice read from recordings (the recorded
    engines), or of every voice when ``sources`` holds them (``speech/ENGINE/VOICE/*``)."""
    found = {}
    for v in voices:
        if sources:
            folder = Path(sources, "speech", v.engine, v.voice)
            files = sorted(str(p) for p in folder.glob("*") if p.suffix in
                           audio.AUDIO_EXTENSIONS)
            where = str(folder)
        elif v.engine in RECORDED_ENGINES:
            files, where = _recorded_files(v)
        else:
            continue
        if not files:
            raise CorpusError(f"voice {v.name} has no recordings in {where}")
        found[v.name] = files
    return found


def _recorded_files(v: Voice) -> tuple[list[str], str]:
    """The recordings of a real voice, and where they were looked for."""
    if v.engine == "czech":
        return _czech_files(v.voice), f"{CZECH_ROOT}/*/cs/ (is fillets-ng-data-cs installed?)"
    folder, pattern = {
        "asterisk": (Path(ASTERISK_ROOT, v.voice), "**/*.g722"),
        "festvox-ru": (Path(FESTVOX_RU), "*.wav"),
        "ktuberling": (Path(KTUBERLING_ROOT, v.voice), "*.[ow][ga][gv]"),
        "klettres": (Path(KLETTRES_ROOT, v.voice), "*/*.[ow][ga][gv]"),
        "qabcs": (Path(QABCS_WORDS, v.voice, "sounds", "words"), "*.ogg"),
    }[v.engine]
    return sorted(str(p) for p in folder.glob(pattern)), str(folder / pattern)


def _voices(spec: SizeSpec, split: str) -> list[Voice]:
    """The voices of a split: a word voice only where its language folder exists (package
    versions differ); with ``real_eval``, recorded real voices only outside train."""
    voices = []
    for v in VOICES:
        if v.engine not in spec.engines or v.split != split:
            continue
        if spec.real_eval and split != "train" and v.engine not in RECORDED_ENGINES:
            continue
        if v.engine in WORD_ENGINES and not _recorded_files(v)[0]:
            continue
        voices.append(v)
    return voices


def _plan_speech(spec: SizeSpec, seed: int, snr_range: tuple[float, float],
                 sources: str | None = None):
    split_voices = {split: _voices(spec, split) for split in SPLITS}
    pools = _noise_pools(spec, seed, sources)
    recorded = _recordings([v for vs in split_voices.values() for v in vs], sources)
    items = []
    for si, split in enumerate(SPLITS):
        if not split_voices[split] and spec.items[split]:
            raise CorpusError(f"no voice for the {split} split with engines "
                              f"{', '.join(spec.engines)}")
        for role, count in (("noisy", spec.items[split]),
                            ("noise", spec.items.get(f"{split}_noise", 0))):
            for i in range(count):
                rng = np.random.default_rng([seed, 2, si, role == "noise", i])
                item = Item(split, f"{split}_{role}_{i:05d}", role,
                            seed=[seed, 3, si, role == "noise", i])
                if role == "noisy":
                    _plan_utterance(item, split_voices[split], recorded, spec, rng)
                    item.snr_db = float(rng.uniform(*snr_range))
                    _plan_room(item, spec, np.random.default_rng([seed, 5, si, i]))
                item.level_db = float(rng.uniform(-32, -20))
                if rng.random() < 0.6 and pools[split]:
                    package, path = pools[split][int(rng.integers(len(pools[split])))]
                    item.noise = f"{package}:{path}"
                else:
                    item.noise = "generated:" + GENERATED_NOISES[int(rng.integers(5))]
                items.append(item)
    return items


def _plan_utterance(item: Item, voices: list[Voice], recorded: dict[str, list[str]],
                    spec: SizeSpec, rng: np.random.Generator) -> None:
    """A voice and what it says: sentences to synthesise, or recordings (2 to 5 isolated
    words for the word voices)."""
    v = voices[int(rng.integers(len(voices)))]
    item.voice, item.speaker = v.name, v.speaker
    if v.engine in WORD_ENGINES:
        k = int(rng.integers(2, 6))
    else:
        k = int(rng.integers(1, spec.max_sentences + 1))
    if v.name in recorded:
        files = recorded[v.name]
        item.speech_files = [files[int(j)] for j in rng.integers(len(files), size=k)]
    else:
        item.texts = [sentence(rng) for _ in range(k)]


def _plan_room(item: Item, spec: SizeSpec, rng: np.random.Generator) -> None:
    """With probability ``room_fraction``: a shoebox room (3-10 x 3-8 x 2.5-4 m), RT60 0.15
    to 0.9 s, and a source and microphone at least 0.5 m apart and from the walls."""
    if not spec.room_fraction or rng.random() >= spec.room_fraction:
        return
    dims = [float(rng.uniform(3, 10)), float(rng.uniform(3, 8)), float(rng.uniform(2.5, 4))]
    while True:
        src, mic = ([float(rng.uniform(0.5, d - 0.5)) for d in dims] for _ in range(2))
        if np.linalg.norm(np.subtract(src, mic)) >= 0.5:
            break
    item.room = {"dims": dims, "rt60": float(rng.uniform(0.15, 0.9)), "source": src,
                 "mic": mic}


def _size(size: str) -> SizeSpec:
    if size not in SIZES:
        raise CorpusError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    return SIZES[size]
