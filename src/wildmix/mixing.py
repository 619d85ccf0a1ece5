"""Dynamic mixing: every training example drawn fresh from clean speech and the sound library.

One example: a crop of clean speech, perhaps in a room (an exponentially decaying random
impulse response, RT60 0.1-1.0 s); one to three noises, each a library sound, a generated
stationary noise (white, pink, brown, mains hum, fan) or babble of other speech; the noise
at an SNR drawn from ``snr_db``; then what a microphone and a channel do to both, in order:
colouration (a random equaliser), band limiting (a low-pass at 3.4 to 7 kHz), and, on the
noisy signal only, 8-bit mu-law coding or clipping; the sum at an RMS level drawn from
``level_db``. The target is the speech after the same room and linear filters.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wildmix import audio
from wildmix.corpus.library import Split
from wildmix.data import Clip, _SegmentDataset, at_snr, random_eq_db, read_crop


@dataclass(frozen=True)
class Mixing:
    """The probabilities and ranges of :class:`DynamicMixDataset`."""

    snr_db: tuple[float, float] = (-10.0, 20.0)
    level_db: tuple[float, float] = (-40.0, -15.0)
    room: float = 0.3  # probability of reverberation
    rt60: tuple[float, float] = (0.1, 1.0)
    extra_noises: tuple[float, float] = (0.25, 0.05)  # P(a second noise), P(a third)
    generated: float = 0.1  # probability that a noise is generated, not recorded
    babble: float = 0.1  # probability that a noise is babble of other speech
    colour: float = 0.5  # probability of a random equaliser (microphone, EQ)
    band_limit: float = 0.15
    codec: float = 0.05  # 8-bit mu-law
    clip: float = 0.05


# evaluation sets: real noise at -5..15 dB (for per-band tables), rooms and colouration as
# in training, one or two noises, no generated noise, codecs or clipping
EVAL_MIXING = Mixing(snr_db=(-5.0, 15.0), level_db=(-35.0, -20.0), extra_noises=(0.25, 0.0),
                     generated=0.0, babble=0.1, band_limit=0.0, codec=0.0, clip=0.0)


STATIONARY = ("white", "pink", "brown", "hum", "fan")


def room_response(rt60: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A room impulse response: a direct path, then Gaussian noise decaying by 60 dB in
    ``rt60`` seconds after a 1-5 ms gap, at a direct-to-reverberant ratio of -3..+9 dB."""
    n = int(rt60 * sample_rate)
    gap = int(rng.uniform(0.001, 0.005) * sample_rate)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail *= 10 ** (-rng.uniform(-3.0, 9.0) / 20) / max(np.sqrt(np.sum(tail ** 2)), 1e-8)
    h = np.zeros(gap + n)
    h[0] = 1.0
    h[gap:] += tail
    return h


def convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``x * h`` cut to ``len(x)``."""
    from scipy.signal import fftconvolve  # transforms of a fast length

    return fftconvolve(x, h.astype(np.float32))[:len(x)].astype(np.float32)


def response(n: int, sample_rate: int, rng: np.random.Generator, max_db: float = 10.0,
             cutoff: float | None = None) -> np.ndarray:
    """A magnitude response on ``rfft`` bins of ``n`` samples: the training equaliser's
    (:func:`wildmix.data.random_eq_db`, none for ``max_db=0``), and a steep low-pass at
    ``cutoff``."""
    db = random_eq_db(n, sample_rate, rng, max_db) if max_db else np.zeros(n // 2 + 1)
    db = db.astype(np.float32)
    if cutoff is not None:
        f = np.fft.rfftfreq(n, 1.0 / sample_rate).astype(np.float32)
        db -= 60.0 / (1.0 + np.exp((cutoff - f) / 100.0))
    return np.exp(db * np.float32(np.log(10) / 20))


def filtered(x: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """``x`` through the magnitude response ``gains`` (single precision: the loader's
    transforms cost a third of numpy's double-precision ones)."""
    fft = _fft()
    x = np.asarray(x, np.float32)
    return fft.irfft(fft.rfft(x) * gains, len(x)).astype(np.float32, copy=False)


@functools.cache  # found once: a failed import searches the path again at each call
def _fft():
    """``scipy.fft`` (single precision for single-precision input) where SciPy is installed;
    else ``numpy.fft`` (double precision): the built-in corpus draws :func:`stationary`
    noise in the core install too, which has no SciPy."""
    try:
        from scipy import fft
    except ImportError:
        return np.fft
    return fft


def mu_law(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """``x`` (peak-normalised inside) through ``bits``-bit mu-law coding and back."""
    peak = max(float(np.max(np.abs(x))), 1e-8)
    mu = 2 ** bits - 1
    y = np.sign(x) * np.log1p(mu * np.abs(x / peak)) / np.log1p(mu)
    y = np.round((y + 1) / 2 * mu) / mu * 2 - 1
    return (np.sign(y) * ((1 + mu) ** np.abs(y) - 1) / mu * peak).astype(np.float32)


def stationary(kind: str, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A stationary noise of ``kind``: white, pink, brown, mains hum with harmonics, or a fan
    (brown noise with a blade tone, slowly modulated). The built-in corpus draws its
    generated noise here too."""
    if kind == "white":
        return rng.standard_normal(n).astype(np.float32)
    if kind == "hum":
        t = np.arange(n) / sample_rate
        base = 50.0 if rng.random() < 0.5 else 60.0
        x = sum(rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3))
                for k in range(1, 8))
        return (x + 0.05 * rng.standard_normal(n)).astype(np.float32)
    fft = _fft()
    spectrum = fft.rfft(rng.standard_normal(n).astype(np.float32))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate).astype(np.float32)
    f[0] = f[1]
    spectrum /= f ** {"pink": 0.5, "brown": 1.0, "fan": 1.0}[kind]
    x = fft.irfft(spectrum, n)
    if kind == "fan":
        t = np.arange(n) / sample_rate
        x = x / audio.rms(x) + 0.3 * np.sin(2 * np.pi * rng.uniform(80, 400) * t)
        x *= 1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t)
    return x.astype(np.float32)


def generated(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One of the :func:`stationary` noises, drawn at random."""
    return stationary(str(rng.choice(STATIONARY)), n, sample_rate, rng)


def mix(speech: np.ndarray, noise, rng: np.random.Generator, mixing: Mixing = Mixing(),
        sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(noisy, clean, info)`` from a crop of clean ``speech`` (see the module's docstring);
    ``noise(speech, rng)`` draws one noise of ``speech``'s length. ``info``: the SNR and
    what was done."""
    m, s = mixing, speech
    info = {"room": bool(rng.random() < m.room)}
    if info["room"]:
        s = convolve(s, room_response(rng.uniform(*m.rt60), sample_rate, rng))
    noise_, kinds = noise(s, rng)
    info["noises"] = [kinds]
    for p in m.extra_noises:
        if rng.random() >= p:
            break
        extra, kind = noise(s, rng)
        noise_ = noise_ + at_snr(extra, noise_, rng.uniform(0.0, 10.0))
        info["noises"].append(kind)
    info["snr_db"] = float(rng.uniform(*m.snr_db))
    x = s + at_snr(noise_, s, info["snr_db"])
    colour = rng.random() < m.colour
    cutoff = rng.uniform(3400, 7000) if rng.random() < m.band_limit else None
    if colour or cutoff:
        gains = response(len(s), sample_rate, rng, 10.0 if colour else 0.0, cutoff)
        x, s = filtered(x, gains), filtered(s, gains)
    info.update(colour=colour, band_limit=cutoff)
    info["codec"] = bool(rng.random() < m.codec)
    if info["codec"]:
        x = mu_law(x)
    info["clip"] = bool(rng.random() < m.clip)
    if info["clip"]:
        limit = np.quantile(np.abs(x), rng.uniform(0.9, 0.99))
        x = np.clip(x, -limit, limit)
    gain = 10 ** (rng.uniform(*m.level_db) / 20) / max(audio.rms(x), 1e-8)
    return (x * gain).astype(np.float32), (s * gain).astype(np.float32), info


class Noises:
    """Draws one noise: a library sound of ``split``, generated, or babble of ``speech``
    (a callable returning other speech crops); ``(noise, label)``."""

    def __init__(self, library: str, split: str, mixing: Mixing, speech, sample_rate: int):
        self.library, self.split, self.mixing = library, split, mixing
        self.speech, self.sample_rate = speech, sample_rate
        self._sounds: Split | None = None  # opened in each worker (a memory map)

    @property
    def sounds(self) -> Split:
        if self._sounds is None:
            self._sounds = Split(self.library, self.split)
        return self._sounds

    def __getstate__(self):  # a worker opens its own memory map
        return {**self.__dict__, "_sounds": None}

    def __call__(self, like: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        m, n = self.mixing, len(like)
        draw = rng.random()
        if draw < m.generated:
            return generated(n, self.sample_rate, rng), "generated"
        if draw < m.generated + m.babble:
            return sum(at_snr(self.speech(n, rng), like, rng.uniform(0.0, 6.0))
                       for _ in range(int(rng.integers(3, 7)))).astype(np.float32), "babble"
        x, entry = self.sounds.crop(n, rng)
        return x, f"{entry.kind}:{entry.package}"


class DynamicMixDataset(_SegmentDataset):
    """Noisy speech drawn fresh for supervised training: ``(2, T)`` = ``[noisy, clean]``
    made by :func:`mix` from a crop of ``speech`` and noises of the library's ``split``.
    Item ``i`` of epoch ``e`` depends only on ``(seed, e, i)``."""

    def __init__(self, speech: Sequence[Clip], library: str, split: str = "train",
                 sample_rate: int = 16000, segment_seconds: float = 4.0,
                 examples_per_epoch: int = 1000, seed: int = 0, mixing: Mixing = Mixing()):
        super().__init__(sample_rate, segment_seconds, examples_per_epoch, seed)
        if sample_rate != 16000:
            raise ValueError("the sound library is at 16 kHz")
        self.speech, self.mixing = list(speech), mixing
        durations = np.array([c.duration for c in self.speech])
        self._p = durations / durations.sum()
        self.noises = Noises(library, split, mixing, self._crop, sample_rate)

    def _crop(self, n: int, rng: np.random.Generator) -> np.ndarray:
        clip = self.speech[int(rng.choice(len(self.speech), p=self._p))]
        return read_crop(clip, self.sample_rate, n, rng)

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = self._rng(index)
        x, s, _ = mix(self._crop(self.length, rng), self.noises, rng, self.mixing,
                      self.sample_rate)
        return torch.from_numpy(np.stack([x, s]))


def render(out: str | os.PathLike, speech: Sequence[tuple[str, str]], library: str,
           split: str, seed: int = 0, mixing: Mixing = EVAL_MIXING) -> Path:
    """A paired evaluation folder: for each ``(path, voice)`` of clean ``speech``, the whole
    file mixed by :func:`mix` with noises of the library's ``split``, written as
    ``out/{noisy,clean}/NAME.wav`` and one ``manifest.jsonl`` row (voice, SNR, noise kinds
    and packages). Deterministic for a seed; written into a temporary folder, then renamed."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for part in ("noisy", "clean"):
        (tmp / part).mkdir(parents=True)
    rows = []
    babble = [p for p, _ in speech]
    noises = Noises(library, split, mixing,
                    lambda n, rng: _fit(audio.read(babble[int(rng.integers(len(babble)))],
                                                   16000), n, rng), 16000)
    for k, (path, voice) in enumerate(speech):
        rng = np.random.default_rng([seed, k])
        x, s, info = mix(audio.read(path, 16000), noises, rng, mixing)
        name = f"{split}_{k:05d}"
        for part, y in (("noisy", x), ("clean", s)):
            audio.write(tmp / part / f"{name}.wav", y, 16000)
        rows.append({"name": name, "split": "test", "voice": voice, "speech_file": path,
                     **info, "input_snr_db": snr_db(s, x - s)})
    (tmp / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    """The energy ratio of ``speech`` to ``noise`` in dB (the SNR a listener gets, after
    rooms and filters)."""
    return float(10 * np.log10(np.sum(np.square(speech, dtype=np.float64))
                               / max(np.sum(np.square(noise, dtype=np.float64)), 1e-20)))


def _fit(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of ``x``: a random crop, or ``x`` repeated."""
    if len(x) >= n:
        start = int(rng.integers(len(x) - n + 1))
        return x[start:start + n]
    return np.resize(x, n)
