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

import glob
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from wildmix import audio
from wildmix.config import EXTRAS, require

SPLITS = ("train", "valid", "test")
KINDS = ("speech", "sounds")


class CorpusError(RuntimeError):
    """A corpus cannot be built here (missing packages, bad arguments)."""


# --- sources ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    name: str
    licence: str
    # a glob that matches only files this package installs, for systems without dpkg (a
    # folder that sibling packages also create, such as another language pack's, is no proof)
    probe: str


PACKAGES = {
    p.name: p
    for p in [
        Package("flite", "BSD-style (CMU Flite); /usr/share/doc/flite/copyright", "/usr/bin/flite"),
        Package("festival", "BSD-style (CSTR); /usr/share/doc/festival/copyright",
                "/usr/bin/festival"),
        Package("festvox-us-slt-hts", "BSD-3-clause / EST-2003",
                "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts"),
        Package("festvox-kallpc16k", "BSD-style (CMU)",
                "/usr/share/festival/voices/english/kal_diphone"),
        Package("festvox-kdlpc16k", "BSD-style (CMU)",
                "/usr/share/festival/voices/english/ked_diphone"),
        Package("espeak-ng", "GPL-3+", "/usr/bin/espeak-ng"),
        Package("fillets-ng-data-cs", "GPL-2+", "/usr/share/games/fillets-ng/sound/*/cs/*.ogg"),
        Package("qabcs-data", "GPL-3+ / CC0-1.0 / public domain",
                "/usr/share/qabcs/abcs/all/noises/*.ogg"),
        Package("bucklespring-data", "GPL-2+", "/usr/share/buckle/wav/*.wav"),
        Package("sonic-pi-samples", "CC0 / CC-BY-SA-4.0 / MIT",
                "/usr/share/sonic-pi/samples/*.flac"),
        Package("wesnoth-1.16-data", "GPL-2+",
                "/usr/share/games/wesnoth/1.16/data/core/sounds/ambient/*.ogg"),
        # recorded human speech (the 'real' size)
        *[Package(f"asterisk-core-sounds-{lang}-g722",
                  "CC-BY-3.0" if lang == "ru" else "CC-BY-SA-3.0",
                  f"/usr/share/asterisk/sounds/{folder}/*.g722")
          for lang, folder in (("en", "en_US_f_Allison"), ("es", "es_MX_f_Allison"),
                               ("fr", "fr_CA_f_June"), ("it", "it_IT_m_Carlo"),
                               ("ru", "ru_RU_f_IvrvoiceRU"))],
        Package("festvox-ru", "BSD-style (MSU), see /usr/share/doc/festvox-ru/copyright",
                "/usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav/*.wav"),
        Package("ktuberling-data", "GPL-2+", "/usr/share/ktuberling/sounds/*/*.ogg"),
        Package("klettres-data", "GPL-2+", "/usr/share/klettres/*/alpha/*.ogg"),
        Package("redeclipse-data", "CC-BY-SA-3.0 / CC-BY-3.0 (Red Eclipse ambience)",
                "/usr/share/games/redeclipse/data/sounds/ambience/*.ogg"),
    ]
}


@dataclass(frozen=True)
class Voice:
    engine: str  # flite | festival | espeak | czech
    voice: str  # engine's voice name (czech: character code)
    speaker: str  # the person behind it: one speaker never spans two splits
    split: str

    @property
    def name(self) -> str:
        return f"{self.engine}:{self.voice}"


# The same CMU ARCTIC speakers appear under flite and festival, so splits go by speaker.
VOICES = [
    Voice("flite", "slt", "slt", "train"),
    Voice("flite", "rms", "rms", "train"),
    Voice("flite", "awb", "awb", "valid"),
    Voice("flite", "kal16", "kal", "test"),
    Voice("festival", "voice_cmu_us_slt_arctic_hts", "slt", "train"),
    Voice("festival", "voice_ked_diphone", "ked", "train"),
    Voice("festival", "voice_kal_diphone", "kal", "test"),
    Voice("czech", "v", "fillets-big-fish", "train"),
    Voice("czech", "other", "fillets-other-characters", "valid"),
    Voice("czech", "m", "fillets-small-fish", "test"),
    Voice("espeak", "en-us+m3", "espeak-en-us-m3", "train"),
    Voice("espeak", "en+f2", "espeak-en-f2", "train"),
    Voice("espeak", "de+m1", "espeak-de-m1", "train"),
    Voice("espeak", "fr+f3", "espeak-fr-f3", "train"),
    Voice("espeak", "en-gb-scotland+m2", "espeak-en-gb-scotland-m2", "valid"),
    Voice("espeak", "es+f4", "espeak-es-f4", "test"),
]
# Real voices (the 'real' size): professional prompts (Asterisk, five speakers; en and es
# are one speaker, Allison), a Russian studio voice (festvox-ru), Czech game dialogue, and
# isolated words of the KDE games KTuberling and KLettres, one folder per language. Words
# are split by language across both games, so that a speaker who recorded for both stays in
# one split. Valid and test hold real voices only, in languages and voices that never train.
ASTERISK_ROOT = "/usr/share/asterisk/sounds"
KTUBERLING_ROOT = "/usr/share/ktuberling/sounds"
KLETTRES_ROOT = "/usr/share/klettres"
FESTVOX_RU = "/usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav"
WORD_SPLITS = {"it": "test", "pt": "test", "pt_BR": "test", "sl": "test", "hu": "test",
               "ro": "test", "fr": "valid", "fi": "valid", "he": "valid", "gl": "valid"}
WORD_LANGUAGES = {  # engine -> languages (folders); the rest of a folder list is not speech
    "ktuberling": ("ca", "da", "de", "el", "en", "es", "fi", "fr", "ga", "gl", "it", "lt",
                   "nds", "nl", "nn", "pt", "ro", "ru", "sl", "sr", "sv", "uk", "wa"),
    "klettres": ("ar", "cs", "da", "de", "en", "en_GB", "es", "fr", "he", "hu", "id", "it",
                 "lt", "ml", "nb", "nds", "nl", "nn", "pt_BR", "ru", "tn", "uk"),
}
REAL_VOICES = [
    Voice("asterisk", "en_US_f_Allison", "asterisk-allison", "train"),
    Voice("asterisk", "es_MX_f_Allison", "asterisk-allison", "train"),
    Voice("asterisk", "ru_RU_f_IvrvoiceRU", "asterisk-ru", "train"),
    Voice("asterisk", "fr_CA_f_June", "asterisk-june", "valid"),
    Voice("asterisk", "it_IT_m_Carlo", "asterisk-carlo", "test"),
    Voice("festvox-ru", "msu_ru_nsh", "festvox-ru-nsh", "train"),
    Voice("qabcs", "en", "qabcs-en", "train"),  # the English word recordings (real voice)
    *[Voice(engine, lang, f"{engine}-{lang}", WORD_SPLITS.get(lang, "train"))
      for engine, langs in WORD_LANGUAGES.items() for lang in langs],
]
VOICES += REAL_VOICES
RECORDED_ENGINES = ("czech", "asterisk", "festvox-ru", "ktuberling", "klettres", "qabcs")
WORD_ENGINES = ("ktuberling", "klettres", "qabcs")  # isolated words: several per item
QABCS_WORDS = "/usr/share/qabcs/abcs"  # LANG/sounds/words/*.ogg

ENGINE_PACKAGES = {
    "flite": ("flite",),
    "festival": ("festival", "festvox-us-slt-hts", "festvox-kallpc16k", "festvox-kdlpc16k"),
    "espeak": ("espeak-ng",),
    "czech": ("fillets-ng-data-cs",),
    "asterisk": tuple(f"asterisk-core-sounds-{lang}-g722"
                      for lang in ("en", "es", "fr", "it", "ru")),
    "festvox-ru": ("festival", "festvox-ru"),
    "ktuberling": ("ktuberling-data",),
    "klettres": ("klettres-data",),
    "qabcs": ("qabcs-data",),
}
CZECH_ROOT = "/usr/share/games/fillets-ng/sound"  # */cs/*.ogg: fillets-ng-data-cs
NOISE_SOURCES = {  # package -> (folder, extensions)
    "qabcs-data": ("/usr/share/qabcs/abcs/all/noises", (".ogg",)),
    "bucklespring-data": ("/usr/share/buckle/wav", (".wav",)),
    "sonic-pi-samples": ("/usr/share/sonic-pi/samples", (".flac",)),
    "wesnoth-1.16-data": ("/usr/share/games/wesnoth/1.16/data/core/sounds/ambient", (".ogg",)),
    # real ambience: wind, water, fire, crickets, distant cars, machines (the 'real' size)
    "redeclipse-data": ("/usr/share/games/redeclipse/data/sounds/ambience", (".ogg",)),
}
GENERATED_NOISES = ("white", "pink", "brown", "hum", "babble")


@dataclass(frozen=True)
class SizeSpec:
    engines: tuple[str, ...]
    noise_packages: tuple[str, ...]
    items: dict[str, int]  # split -> number of noisy items; "train_noise" -> noise-only clips
    max_sentences: int = 3
    noise_files_per_package: int | None = None  # cap, for a fast tiny build
    real_eval: bool = False  # valid and test hold recorded real voices only
    room_fraction: float = 0.0  # share of noisy items whose speech is in a simulated room


SIZES = {
    "tiny": SizeSpec(("flite",), ("qabcs-data",),
                     {"train": 24, "train_noise": 12, "valid": 6, "test": 6},
                     max_sentences=2, noise_files_per_package=40),
    "small": SizeSpec(("flite", "festival", "czech"),
                      ("qabcs-data", "bucklespring-data", "sonic-pi-samples"),
                      {"train": 300, "train_noise": 100, "valid": 40, "test": 60}),
    "large": SizeSpec(("flite", "festival", "czech", "espeak"),
                      ("qabcs-data", "bucklespring-data", "sonic-pi-samples",
                       "wesnoth-1.16-data"),
                      {"train": 3600, "train_noise": 800, "valid": 120, "test": 200}),
    # voices and recorded noises that 'small' does not have (espeak in five languages, game
    # ambience): the source domain of domain-shift experiments evaluated on 'small'
    "shift": SizeSpec(("espeak",), ("wesnoth-1.16-data",),
                      {"train": 400, "train_noise": 100, "valid": 40, "test": 40}),
    # real human voices in ~30 languages beside the TTS voices, all recorded noise (with Red
    # Eclipse's real ambience), a third of the speech in simulated rooms; valid and test:
    # real voices that never train
    "real": SizeSpec(("flite", "festival", "espeak") + RECORDED_ENGINES, tuple(NOISE_SOURCES),
                     {"train": 4000, "train_noise": 800, "valid": 160, "test": 240},
                     max_sentences=2, real_eval=True, room_fraction=0.33),
    # for --kind sounds (universal sound separation): every recorded noise package, and
    # recorded real voices only (no speech synthesis), speakers and noise files disjoint
    # across splits
    "sounds": SizeSpec(RECORDED_ENGINES, tuple(NOISE_SOURCES),
                       {"train": 2000, "valid": 100, "test": 200}, real_eval=True),
}


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


# --- synthesis and source audio --------------------------------------------------------


def _synth_batch(engine: str, voice: str, jobs: list[tuple[str, str]]) -> None:
    """Synthesise ``(text, out_path)`` jobs with one engine and voice."""
    if engine == "flite":
        for text, out in jobs:
            subprocess.run(["flite", "-voice", voice, "-t", text, "-o", out], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elif engine == "espeak":
        for text, out in jobs:
            subprocess.run(["espeak-ng", "-v", voice, "-w", out, text], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elif engine == "festival":
        lines = [f"({voice})"]
        for text, out in jobs:
            escaped = text.replace("\\", "").replace('"', "")
            lines.append(f'(utt.save.wave (SynthText "{escaped}") "{out}" \'riff)')
        with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as f:
            f.write("\n".join(lines) + "\n")
        try:
            subprocess.run(["festival", "-b", f.name], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            os.unlink(f.name)
    else:
        raise CorpusError(f"unknown TTS engine {engine!r}")
    missing = [out for _, out in jobs if not os.path.exists(out)]
    if missing:
        raise CorpusError(f"{engine} voice {voice} produced no audio for {missing[0]}")


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


def _load(path: str, sr: int) -> np.ndarray:
    return audio.read(path, sample_rate=sr, check=False)


def _generated_noise(kind: str, n: int, sr: int, rng: np.random.Generator,
                     babble: list[np.ndarray]) -> np.ndarray:
    if kind == "white":
        return rng.standard_normal(n).astype(np.float32)
    if kind in ("pink", "brown"):
        spectrum = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1.0 / sr)
        f[0] = f[1]
        spectrum /= f ** (0.5 if kind == "pink" else 1.0)
        return np.fft.irfft(spectrum, n).astype(np.float32)
    if kind == "hum":
        t = np.arange(n) / sr
        base = 50.0 if rng.random() < 0.5 else 60.0
        x = sum(rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3))
                for k in range(1, 8))
        return (x + 0.05 * rng.standard_normal(n)).astype(np.float32)
    if kind == "babble":
        x = np.zeros(n, np.float32)
        for _ in range(int(rng.integers(3, 7))):
            s = babble[int(rng.integers(len(babble)))]
            x += _fit(s / (audio.rms(s) + 1e-8), n, rng)
        return x
    raise CorpusError(f"unknown generated noise {kind!r}")


def _fit(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of length n, tiling x when it is shorter."""
    if len(x) < n:
        x = np.tile(x, n // len(x) + 1)
    start = int(rng.integers(len(x) - n + 1))
    return x[start:start + n].astype(np.float32)


# --- plan ------------------------------------------------------------------------------


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


def _tts_path(cache: Path, voice: str, text: str) -> str:
    digest = hashlib.sha1(f"{voice}|{text}".encode()).hexdigest()[:16]
    return str(cache / f"{digest}.wav")


def _speech_paths(item: Item, cache: Path) -> list[str]:
    """Audio files of an item's utterances: recorded clips, or its TTS renderings."""
    return item.speech_files or [_tts_path(cache, item.voice, t) for t in item.texts]


def _synthesise(items: list[Item], cache: Path, workers: int,
                progress: Callable[[str], None]) -> None:
    """Render every TTS sentence of the plan into ``cache``."""
    by_voice: dict[str, list[tuple[str, str]]] = {}
    for item in items:
        if item.texts:
            jobs = by_voice.setdefault(item.voice, [])
            jobs += [(t, _tts_path(cache, item.voice, t)) for t in item.texts]
    batches = []
    for name, jobs in sorted(by_voice.items()):
        engine, voice = name.split(":", 1)
        jobs = sorted(set(jobs))
        step = 40 if engine == "festival" else 25
        batches += [(engine, voice, jobs[i:i + step]) for i in range(0, len(jobs), step)]
    progress(f"synthesising {sum(len(b[2]) for b in batches)} sentences with "
             f"{len(by_voice)} TTS voices")
    _run_parallel(_synth_batch_args, batches, workers)


def _synth_batch_args(args):
    _synth_batch(*args)


def _run_parallel(fn, args_list, workers: int) -> list:
    if workers <= 1 or len(args_list) <= 1:
        return [fn(a) for a in args_list]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(fn, args_list, chunksize=1))


# --- rendering -------------------------------------------------------------------------


def _speech(paths: list[str], sr: int, rng: np.random.Generator) -> np.ndarray:
    """Concatenate utterances with short pauses."""
    parts = []
    for k, path in enumerate(paths):
        if k:
            parts.append(np.zeros(int(sr * rng.uniform(0.2, 0.8)), np.float32))
        parts.append(_load(path, sr))
    lead = np.zeros(int(sr * rng.uniform(0.1, 0.5)), np.float32)
    tail = np.zeros(int(sr * rng.uniform(0.1, 0.5)), np.float32)
    return np.concatenate([lead, *parts, tail])


def _noise(item: Item, n: int, sr: int, rng: np.random.Generator,
           babble: list[np.ndarray]) -> np.ndarray:
    source, _, ref = item.noise.partition(":")
    if source == "generated":
        x = _generated_noise(ref, n, sr, rng, babble)
    else:
        x = _fit(_load(ref, sr), n, rng)
        if audio.rms(x) < 1e-5:  # a silent stretch of a recording: fall back to pink noise
            item.noise = "generated:pink"
            x = _generated_noise("pink", n, sr, rng, babble)
    return x


def _render_speech(args) -> dict:
    item, out, sr, cache, babble_files = args
    rng = np.random.default_rng(item.seed)
    babble = [_load(p, sr) for p in babble_files] if item.noise == "generated:babble" else []
    record = {k: v for k, v in asdict(item).items()
              if k != "seed" and not (k == "room" and v is None)}
    if item.role == "noise":
        n = int(sr * rng.uniform(4.0, 10.0))
        noise = _noise(item, n, sr, rng, babble)
        gain = 10 ** (item.level_db / 20) / (audio.rms(noise) + 1e-12)
        noise = (noise * gain).astype(np.float32)
        gain *= _limit(noise)
        noise = _scaled(noise, _limit(noise))
        audio.write(Path(out, item.split, "noise", item.name + ".wav"), noise, sr)
        record.update(noise=item.noise, noise_gain=gain, duration_s=n / sr,
                      files={"noise": f"{item.split}/noise/{item.name}.wav"})
        return record
    clean = _speech(_speech_paths(item, Path(cache)), sr, rng)
    if item.room:
        clean = _reverberate(clean, item.room, sr)
    noise = _noise(item, len(clean), sr, rng, babble)
    speech_gain = 10 ** (item.level_db / 20) / (audio.rms(clean) + 1e-12)
    clean = (clean * speech_gain).astype(np.float32)
    # scale the noise for the drawn SNR, in float64, then fix both as float32
    noise_gain = np.sqrt(np.sum(np.square(clean, dtype=np.float64))
                         / (np.sum(np.square(noise, dtype=np.float64)) * 10 ** (item.snr_db / 10)))
    noise = (noise * noise_gain).astype(np.float32)
    peak = _limit(clean + noise)
    clean, noise = _scaled(clean, peak), _scaled(noise, peak)
    noisy = clean + noise  # float32: noisy == clean + noise exactly
    names = {"noisy": noisy, "clean": clean, "noise": noise}
    files = {}
    for role, x in names.items():
        if item.split == "train" and role == "noise":
            continue  # train pairs keep clean for a supervised reference; noise is implied
        rel = f"{item.split}/{role}/{item.name}.wav"
        audio.write(Path(out, rel), x, sr)
        files[role] = rel
    record.update(noise=item.noise, speech_gain=float(speech_gain * peak),
                  noise_gain=float(noise_gain * peak), duration_s=len(noisy) / sr, files=files)
    return record


def _reverberate(x: np.ndarray, room: dict, sr: int) -> np.ndarray:
    """``x`` as heard at the microphone of a simulated shoebox room (image source method,
    pyroomacoustics), cut to ``x``'s length: the reverberant speech is the target."""
    import pyroomacoustics as pra

    absorption, order = pra.inverse_sabine(room["rt60"], room["dims"])
    shoebox = pra.ShoeBox(room["dims"], fs=sr, materials=pra.Material(absorption),
                          max_order=min(order, 40))
    shoebox.add_source(room["source"])
    shoebox.add_microphone(room["mic"])
    shoebox.compute_rir()
    rir = np.asarray(shoebox.rir[0][0], np.float64)
    n = len(x) + len(rir) - 1
    y = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(rir, n), n)[: len(x)]
    return y.astype(np.float32)


def _limit(x: np.ndarray, ceiling: float = 0.95) -> float:
    """Gain that keeps the peak at or below ``ceiling``: 1 unless it would clip."""
    peak = float(np.abs(x).max()) if x.size else 0.0
    return ceiling / peak if peak > ceiling else 1.0


def _scaled(x: np.ndarray, gain: float) -> np.ndarray:
    return x if gain == 1.0 else (x * np.float32(gain)).astype(np.float32)


# --- sounds (FUSS-style) ---------------------------------------------------------------


def _render_sounds(args) -> dict:
    split, name, seed, out, sr, pool, speech_files, clip_s = args
    rng = np.random.default_rng(seed)
    n = int(clip_s * sr)
    k = int(rng.integers(1, 5))
    sources, record_sources = [], []
    for j in range(k):
        if j > 0 and speech_files and rng.random() < 0.3:
            origin = ("speech", speech_files[int(rng.integers(len(speech_files)))])
        else:
            origin = pool[int(rng.integers(len(pool)))]
        x = _load(origin[1], sr)
        if audio.rms(x) < 1e-5:
            x = _generated_noise("pink", n, sr, rng, [])
            origin = ("generated", "pink")
        s = np.zeros(n, np.float32)
        if j == 0:  # background: the whole clip
            s[:] = _fit(x, n, rng)
        else:  # foreground event at a random place
            length = min(len(x), int(sr * rng.uniform(0.5, clip_s * 0.6)))
            start = int(rng.integers(0, n - length + 1))
            s[start:start + length] = x[:length]
        level = float(rng.uniform(-35, -20)) if j == 0 else float(rng.uniform(-30, -15))
        active = s[np.abs(s) > 0]
        s = (s * 10 ** (level / 20) / (audio.rms(active) + 1e-12)).astype(np.float32)
        sources.append(s)
        source_file = origin[1] if origin[0] != "speech" else Path(origin[1]).name
        record_sources.append({"source_package": origin[0], "source_file": source_file,
                               "level_db": level})
    peak = _limit(np.sum(sources, 0))
    sources = [_scaled(s, peak) for s in sources]
    mixture = np.zeros(n, np.float32)
    for s in sources:
        mixture += s
    files = {"mixture": f"{split}/mixture/{name}.wav", "sources": []}
    audio.write(Path(out, files["mixture"]), mixture, sr)
    for j, s in enumerate(sources):
        rel = f"{split}/sources/{name}/s{j}.wav"
        audio.write(Path(out, rel), s, sr)
        files["sources"].append(rel)
    return {"split": split, "name": name, "role": "mixture", "n_sources": k,
            "sources": record_sources, "gain": peak, "duration_s": clip_s, "files": files}


# --- build -----------------------------------------------------------------------------


def build(
    out: str | os.PathLike,
    size: str = "tiny",
    seed: int = 0,
    sample_rate: int = 16000,
    kind: str = "speech",
    snr_range: tuple[float, float] = (-5.0, 15.0),
    workers: int | None = None,
    progress: Callable[[str], None] = lambda msg: None,
    sources: str | os.PathLike | None = None,
) -> Path:
    """Build the built-in corpus into ``out`` and return the manifest's path.

    Args:
        sources: instead of TTS and installed Debian packages, a folder of recordings:
            ``speech/ENGINE/VOICE/*`` for each voice of the size and ``noise/PACKAGE/*``
            for each noise package (the unit tests' ``tests/data``). Same plan, same
            splits; no package is needed.
    Raises:
        CorpusError: missing Debian packages, or bad arguments.
    """
    spec = _size(size)
    _check_build(size, kind, sample_rate, snr_range, sources)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.jsonl").exists():
            raise CorpusError(f"{out} exists and is not a wildmix corpus; choose another folder")
        for split in SPLITS:  # rebuild from scratch: no stale files from another size
            shutil.rmtree(out / split, ignore_errors=True)
    workers = workers or os.cpu_count() or 1
    out.mkdir(parents=True, exist_ok=True)
    sources = str(sources) if sources else None
    items = _plan_speech(spec, seed, snr_range, sources)
    with tempfile.TemporaryDirectory(prefix="wildmix-tts-") as cache:
        _synthesise(items, Path(cache), workers, progress)
        speech = {split: sorted({p for it in items if it.split == split
                                 for p in _speech_paths(it, Path(cache))}) for split in SPLITS}
        if kind == "speech":
            progress(f"mixing {len(items)} clips")
            jobs = [(it, str(out), sample_rate, cache, speech[it.split][:40]) for it in items]
            records = _run_parallel(_render_speech, jobs, workers)
        else:
            records = _build_sounds(spec, speech, seed, out, sample_rate, workers, progress,
                                    sources)
    header = {"corpus": "wildmix-builtin", "kind": kind, "size": size, "seed": seed,
              "sample_rate": sample_rate, "snr_range_db": list(snr_range)}
    if sources:
        header["sources"] = sources
    return _write_manifest(out, header, records)


def _check_build(size, kind, sample_rate, snr_range, sources) -> None:
    if kind not in KINDS:
        raise CorpusError(f"kind must be 'speech' or 'sounds', got {kind!r}")
    if not 4000 <= sample_rate <= 96000:
        raise CorpusError(f"sample rate must be between 4000 and 96000 Hz, got {sample_rate}")
    if snr_range[0] > snr_range[1]:
        raise CorpusError(f"SNR range {snr_range} is empty")
    if sources:
        if not Path(sources).is_dir():
            raise CorpusError(f"{sources}: no such folder of corpus sources")
        return
    spec = _size(size)
    if "asterisk" in spec.engines or spec.room_fraction:  # G.722 prompts, simulated rooms
        require("corpus", EXTRAS["corpus"], f"the '{size}' corpus")
    missing = missing_packages(size, kind)
    if missing:
        raise CorpusError(
            "missing Debian packages for the built-in corpus: " + " ".join(missing)
            + "; install them with `sudo apt-get install --no-install-recommends "
            + " ".join(missing) + "` or run `make corpus`")


def _write_manifest(out: Path, header: dict, records: list[dict]) -> Path:
    for r in records:
        _annotate(r)
    manifest = out / "manifest.jsonl"
    with audio.atomic_path(manifest) as tmp, open(tmp, "w") as f:
        f.write(json.dumps({"header": header}) + "\n")
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    return manifest


def _build_sounds(spec, speech, seed, out, sr, workers, progress, sources=None) -> list[dict]:
    counts = {"train": spec.items["train"], "valid": spec.items["valid"],
              "test": spec.items["test"]}
    packages = tuple(dict.fromkeys(spec.noise_packages + ("bucklespring-data",
                                                          "sonic-pi-samples")))
    files = _noise_files(packages, spec.noise_files_per_package, sources)
    order = np.random.default_rng([seed, 11]).permutation(len(files))
    cut1, cut2 = int(0.7 * len(order)), int(0.85 * len(order))
    parts = {"train": order[:cut1], "valid": order[cut1:cut2], "test": order[cut2:]}
    jobs = []
    for si, split in enumerate(SPLITS):
        pool = [files[i] for i in sorted(parts[split])]
        for i in range(counts[split]):
            jobs.append((split, f"{split}_{i:05d}", [seed, 12, si, i], str(out), sr, pool,
                         speech[split], 6.0))
    progress(f"mixing {len(jobs)} sound clips")
    return _run_parallel(_render_sounds, jobs, workers)


def _annotate(record: dict) -> None:
    """Add source package and licence to a manifest record."""
    voice = record.get("voice", "")
    if voice:
        engine = voice.split(":", 1)[0]
        pkgs = ENGINE_PACKAGES[engine]
        record["speech_package"] = pkgs[0] if engine != "festival" else ", ".join(pkgs)
        record["speech_licence"] = "; ".join(PACKAGES[p].licence for p in pkgs[:1])
    noise = record.get("noise", "")
    if noise:
        source, _, path = noise.partition(":")
        record["noise_package"] = source
        record["noise_file"] = path
        record["noise_licence"] = (PACKAGES[source].licence if source in PACKAGES
                                   else "generated by wildmix (no licence restrictions)")
    for s in record.get("sources", []):
        p = s["source_package"]
        s["licence"] = PACKAGES[p].licence if p in PACKAGES else "see speech voices"


def _size(size: str) -> SizeSpec:
    if size not in SIZES:
        raise CorpusError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    return SIZES[size]


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
