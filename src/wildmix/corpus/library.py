"""The sound library: the catalogue's sounds decoded once into a memory-mapped cache.

Layout of a library folder::

    DIR/index.json        the catalogue's fingerprint, then one row per sound:
                          package, name, kind, split, offset, length (samples at 16 kHz)
    DIR/{split}.f16       the split's sounds end to end, float16 mono at 16 kHz

Training reads crops straight from the memory map (no Ogg decoding in the loop). A cache
whose fingerprint differs from the catalogue's is rebuilt by :func:`build`; :func:`open_split`
refuses a stale one in one line.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import io
import json
import os
import struct
import zipfile
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wildmix import audio
from wildmix.corpus import CorpusError, catalogue
from wildmix.corpus.catalogue import Sound

SAMPLE_RATE = 16000
MIN_SECONDS = 0.2  # shorter sounds (blips) are left out
SILENT_DB = -60.0  # a sound this far below full scale is silent


class LibraryError(CorpusError):
    """The library cannot be built or read (missing packages, a stale cache)."""


@dataclass(frozen=True)
class Entry:
    package: str
    name: str
    kind: str
    split: str
    offset: int
    length: int


def package_root(package: str, roots: list[str]) -> str | None:
    """The first of ``roots`` that holds ``package``'s files: ``ROOT/PACKAGE`` (a package
    unpacked with ``dpkg-deb``) or ``ROOT`` itself (``/`` for installed packages)."""
    for root in roots:
        for base in (os.path.join(root, package), root):
            if os.path.isdir(os.path.join(base, "usr/share/doc", package)):
                return base
    return None


def members(sound: Sound, base: str) -> list[tuple[str, str]]:
    """``(name, locator)`` of every file of ``sound`` under ``base``; a locator is a path,
    ``ARCHIVE::MEMBER`` or ``CATALOGUE.cat#K``."""
    if "::" in sound.where:
        archive, pattern = sound.where.split("::")
        path = os.path.join(base, archive)
        if not os.path.isfile(path):
            return []
        with zipfile.ZipFile(path) as z:
            names = sorted(n for n in z.namelist() if fnmatch.fnmatch(n, pattern))
        found = [(n, f"{path}::{n}") for n in names]
    elif sound.where.endswith(".cat"):
        path = os.path.join(base, sound.where)
        found = ([(f"{os.path.basename(path)}#{k}", f"{path}#{k}")
                  for k in range(len(opensfx(path)))] if os.path.isfile(path) else [])
    else:
        paths = sorted(glob.glob(os.path.join(base, sound.where), recursive=True))
        found = [(os.path.relpath(p, base), p) for p in paths
                 if p.lower().endswith((".ogg", ".wav", ".flac"))]
    return [(n, loc) for n, loc in found if not (sound.exclude and sound.exclude in n)]


@functools.lru_cache(maxsize=4)
def _zip(path: str) -> zipfile.ZipFile:
    """An open archive, kept per worker process (0 A.D.'s holds 3 GB)."""
    return zipfile.ZipFile(path)


@functools.lru_cache(maxsize=4)
def opensfx(path: str) -> list[bytes]:
    """The WAV files inside OpenTTD's sound catalogue: a table of (offset, size) pairs with
    the high bit set, then at each offset a name (its length in the first byte) and the
    WAV."""
    data = Path(path).read_bytes()
    count = (struct.unpack_from("<I", data)[0] & 0x7FFFFFFF) // 8
    out = []
    for k in range(count):
        offset, size = struct.unpack_from("<II", data, 8 * k)
        offset &= 0x7FFFFFFF
        out.append(data[offset + 1 + data[offset]:offset + size])
    return out


def decode(locator: str) -> np.ndarray:
    """One sound as float32 mono at 16 kHz, peak-normalised to 0.9; empty if unreadable,
    silent or shorter than MIN_SECONDS."""
    import soundfile as sf

    try:
        if "::" in locator:
            archive, member = locator.split("::")
            x, sr = sf.read(io.BytesIO(_zip(archive).read(member)), dtype="float32",
                            always_2d=True)
        elif ".cat#" in locator:
            path, k = locator.rsplit("#", 1)
            x, sr = sf.read(io.BytesIO(opensfx(path)[int(k)]), dtype="float32",
                            always_2d=True)
        else:
            x, sr = sf.read(locator, dtype="float32", always_2d=True)
    except Exception:  # noqa: BLE001 - a broken game file is skipped, not fatal
        return np.zeros(0, np.float32)
    x = audio.resample(audio.to_mono(x), sr, SAMPLE_RATE)
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if len(x) < MIN_SECONDS * SAMPLE_RATE or peak < 10 ** (SILENT_DB / 20):
        return np.zeros(0, np.float32)
    return (x * (0.9 / peak)).astype(np.float32)


def plan(roots: list[str], sounds: list[Sound] | None = None
         ) -> tuple[list[tuple[Sound, str, str]], list[str]]:
    """``([(sound, name, locator)], missing packages)`` for the catalogue (``sounds``,
    default :data:`catalogue.LIBRARY`)."""
    files, missing = [], []
    for sound in catalogue.LIBRARY if sounds is None else sounds:
        base = package_root(sound.package, roots)
        if base is None:
            missing.append(sound.package)
            continue
        files += [(sound, name, loc) for name, loc in members(sound, base)]
    return files, list(dict.fromkeys(missing))


def fingerprint(sounds: list[Sound] | None = None) -> str:
    """The catalogue's fingerprint and the decoding settings: what the cache depends on."""
    sounds = catalogue.LIBRARY if sounds is None else sounds
    return f"{catalogue.fingerprint(sounds)}-{SAMPLE_RATE}-{MIN_SECONDS}-{SILENT_DB}"


def is_library(folder: str | os.PathLike | None) -> bool:
    """Whether ``folder`` is a sound library (fresh or not)."""
    return bool(folder) and (Path(folder) / "index.json").is_file() and any(
        (Path(folder) / f"{split}.f16").is_file() for split in ("train", "valid", "test"))


def is_fresh(out: str | os.PathLike, sounds: list[Sound] | None = None) -> bool:
    """Whether ``out`` holds a library built from today's catalogue (or ``sounds``)."""
    try:
        return (json.loads((Path(out) / "index.json").read_text())["fingerprint"]
                == fingerprint(sounds))
    except (OSError, ValueError, KeyError):
        return False


def build(out: str | os.PathLike, roots: list[str], workers: int = 2,
          progress: bool = True, sounds: list[Sound] | None = None) -> Path:
    """Decode every sound of the catalogue found under ``roots`` into ``out`` (see the
    module's docstring); nothing is done when ``out`` is already fresh. A package missing
    from every root is refused in one line naming it."""
    out = Path(out)
    if is_fresh(out, sounds):
        return out
    files, missing = plan(roots, sounds)
    if missing:
        raise LibraryError(f"sound library: packages not found under {', '.join(roots)}: "
                           f"{', '.join(missing)} (make library unpacks them)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.json").unlink(missing_ok=True)  # stale until the new one is written
    rows = []
    handles = {split: open(out / f"{split}.f16.tmp", "wb") for split in ("train", "valid",
                                                                        "test")}
    offsets = defaultdict(int)
    try:
        with ProcessPoolExecutor(max(1, workers)) as pool:
            decoded = pool.map(decode, [loc for _, _, loc in files], chunksize=4)
            pairs = zip(files, decoded, strict=True)
            for (sound, name, _), x in _progress(pairs, len(files), progress):
                if not len(x):
                    continue
                handles[sound.split].write(x.astype(np.float16).tobytes())
                rows.append({"package": sound.package, "name": name, "kind": sound.kind,
                             "split": sound.split, "offset": offsets[sound.split],
                             "length": len(x)})
                offsets[sound.split] += len(x)
    finally:
        for h in handles.values():
            h.close()
    if not rows:
        raise LibraryError(f"sound library: no usable sound under {', '.join(roots)}")
    for split in handles:
        os.replace(out / f"{split}.f16.tmp", out / f"{split}.f16")
    audio.write_json(out / "index.json", {"fingerprint": fingerprint(sounds),
                                          "sample_rate": SAMPLE_RATE, "sounds": rows})
    return out


def _progress(it, total: int, show: bool):
    if not show:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc="sound library", unit="file")


class Split:
    """The sounds of one split: ``entries`` and a float16 memory map ``samples``."""

    def __init__(self, folder: str | os.PathLike, split: str,
                 kinds: tuple[str, ...] | None = None, sounds: list[Sound] | None = None):
        folder = Path(folder)
        if not is_fresh(folder, sounds):
            raise LibraryError(f"{folder}: no sound library built from today's catalogue "
                               f"(wildmix library build {folder})")
        index = json.loads((folder / "index.json").read_text())
        self.entries = [Entry(**r) for r in index["sounds"]
                        if r["split"] == split and (kinds is None or r["kind"] in kinds)]
        if not self.entries:
            raise LibraryError(f"{folder}: no {split} sounds"
                               + (f" of kinds {', '.join(kinds)}" if kinds else ""))
        self.samples = np.memmap(folder / f"{split}.f16", dtype=np.float16, mode="r")
        # every kind equally likely (music is most of the seconds), then every second of it
        lengths = np.array([e.length for e in self.entries], np.float64)
        kinds = [e.kind for e in self.entries]
        per_kind: dict[str, float] = defaultdict(float)
        for n, k in zip(lengths, kinds, strict=True):
            per_kind[k] += n
        self.weights = np.array([n / per_kind[k] for n, k in zip(lengths, kinds, strict=True)])
        self.weights /= self.weights.sum()

    def __len__(self) -> int:
        return len(self.entries)

    def sound(self, i: int) -> np.ndarray:
        e = self.entries[i]
        return np.asarray(self.samples[e.offset:e.offset + e.length], np.float32)

    def crop(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, Entry]:
        """A random stretch of ``n`` samples (a sound drawn in proportion to its length;
        a shorter sound repeats), float32."""
        e = self.entries[int(rng.choice(len(self.entries), p=self.weights))]
        if e.length >= n:
            start = e.offset + int(rng.integers(e.length - n + 1))
            return np.asarray(self.samples[start:start + n], np.float32), e
        x = np.asarray(self.samples[e.offset:e.offset + e.length], np.float32)
        return np.resize(x, n), e


def summary(folder: str | os.PathLike) -> str:
    """A markdown table of minutes per package, kind and split."""
    index = json.loads((Path(folder) / "index.json").read_text())
    minutes = defaultdict(float)
    for r in index["sounds"]:
        minutes[(r["split"], r["package"], r["kind"])] += r["length"] / SAMPLE_RATE / 60
    lines = ["| split | package | kind | minutes |", "|---|---|---|---|"]
    lines += [f"| {s} | {p} | {k} | {m:.1f} |" for (s, p, k), m in sorted(minutes.items())]
    for split in ("train", "valid", "test"):
        total = sum(m for (s, _, _), m in minutes.items() if s == split)
        n = len({p for (s, p, _) in minutes if s == split})
        lines.append(f"| **{split}** | {n} packages | | **{total:.1f}** |")
    return "\n".join(lines)
