"""Datasets of unlabeled recordings and mixture-of-mixtures sampling.

A folder of recordings (any format libsndfile reads, any rate, any channel count, any
length) is indexed once: every file is checked in bounded-memory blocks and a bad one
(unreadable, empty, all zeros, NaN or Inf, too short) is skipped with one warning line that
names it. Only headers are kept; audio is decoded lazily, a random crop at a time, then
down-mixed and resampled. :class:`MixtureDataset` draws pairs of such crops: noisy + noisy
(separation) or noisy + noise-only (enhancement), with random relative gains.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wildmix import audio

log = logging.getLogger("wildmix")


class DataError(ValueError):
    """A data set that cannot be used at all (no usable audio, bad settings)."""


@dataclass(frozen=True)
class Clip:
    """A stretch of one file, in the file's own sample rate."""

    path: str
    sample_rate: int
    start: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


@dataclass
class Index:
    clips: list[Clip]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def hours(self) -> float:
        return sum(c.duration for c in self.clips) / 3600

    def summary(self, what: str = "files") -> str:
        text = f"{len(self.clips)} usable {what} ({self.hours * 60:.1f} min)"
        if self.skipped:
            reasons = Counter(r.split(" (")[0] for _, r in self.skipped)
            text += f", {len(self.skipped)} skipped: " + ", ".join(
                f"{n} {r}" for r, n in reasons.most_common())
        return text


def index_folder(
    root: str | os.PathLike,
    min_seconds: float = 0.5,
    workers: int = 4,
) -> Index:
    """Check every audio file under ``root``; keep the usable ones.

    Args:
        min_seconds: files shorter than this are skipped as too short.
    Raises:
        DataError: when no file is usable (the message says why for each kind of problem).
    """
    paths = audio.find_audio(root)
    if not paths:
        raise DataError(f"no audio files found in {root} (looked for "
                        f"{', '.join(audio.AUDIO_EXTENSIONS)})")

    def check(path) -> Clip | tuple[str, str]:
        try:
            i, _ = audio.scan(path)
        except audio.AudioError as e:
            return (e.path, e.reason)
        if i.duration < min_seconds:
            return (str(path), f"too short ({i.duration:.2f} s < {min_seconds} s)")
        return Clip(str(path), i.sample_rate, 0, i.frames)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(check, paths))
    index = Index([r for r in results if isinstance(r, Clip)],
                  [r for r in results if not isinstance(r, Clip)])
    for path, reason in index.skipped:
        log.warning("skipping %s: %s", path, reason)
    if not index.clips:
        raise DataError(f"no usable audio in {root}: {index.summary()}")
    return index


def harvest_noise(
    index: Index,
    min_seconds: float = 1.0,
    aggressiveness: int = 3,
    margin_seconds: float = 0.2,
) -> Index:
    """Find stretches without speech in noisy recordings (WebRTC VAD), as noise-only clips.

    Each file is analysed at 16 kHz in 30 ms frames; runs of non-speech frames at least
    ``min_seconds`` long (after trimming ``margin_seconds`` on each side) become clips.
    """
    import webrtcvad

    vad = webrtcvad.Vad(aggressiveness)
    sr, hop = 16000, 480
    clips = []
    for clip in index.clips:
        x = audio.read(clip.path, sample_rate=sr, start=clip.start, frames=clip.frames,
                       check=False)
        peak = float(np.abs(x).max()) or 1.0
        pcm = (np.clip(x / peak, -1, 1) * 32767).astype("<i2")
        n = len(pcm) // hop
        speech = np.array([vad.is_speech(pcm[k * hop:(k + 1) * hop].tobytes(), sr)
                           for k in range(n)], dtype=bool)
        margin = int(round(margin_seconds * sr / hop))
        for start, stop in _runs(~speech):
            start, stop = start + margin, stop - margin
            if (stop - start) * hop >= min_seconds * sr:
                scale = clip.sample_rate / sr
                clips.append(Clip(clip.path, clip.sample_rate,
                                  clip.start + int(start * hop * scale),
                                  int((stop - start) * hop * scale)))
    return Index(clips)


def pauses(speech: np.ndarray, sample_rate: int, floor_db: float = -30.0,
           margin_seconds: float = 0.1, frame_seconds: float = 0.01) -> np.ndarray:
    """Where a recording holds no speech, judged by a speech estimate of it: the samples of
    frames more than ``floor_db`` below the estimate's loudest frame and at least
    ``margin_seconds`` from any louder frame (a trailing partial frame counts as speech).

    Args:
        speech: ``(T,)`` speech estimate (e.g. a model's output 0).
    Returns:
        ``(T,)`` bool, True in the pauses.
    """
    hop = max(1, int(round(frame_seconds * sample_rate)))
    n = len(speech) // hop
    mask = np.zeros(len(speech), dtype=bool)
    if n == 0:
        return mask
    energy = np.square(speech[:n * hop].astype(np.float64)).reshape(n, hop).mean(1)
    loud = energy > energy.max() * 10 ** (floor_db / 10)
    width = 2 * int(round(margin_seconds / frame_seconds)) + 1
    near = np.convolve(loud.astype(float), np.ones(width), "same") > 0.5
    mask[:n * hop] = np.repeat(~near, hop)
    return mask


def join_stretches(x: np.ndarray, mask: np.ndarray, sample_rate: int,
                   fade_seconds: float = 0.005) -> np.ndarray:
    """The stretches of ``x`` where ``mask`` is True, one after the other, each faded in and
    out over ``fade_seconds`` so that the joins do not click; ``(T,)`` -> ``(<= T,)``."""
    parts = []
    for start, stop in _runs(mask):
        part = x[start:stop].astype(np.float32)
        k = min(int(fade_seconds * sample_rate), len(part) // 2)
        if k:
            ramp = np.linspace(0.0, 1.0, k, dtype=np.float32)
            part[:k] *= ramp
            part[-k:] *= ramp[::-1]
        parts.append(part)
    return np.concatenate(parts) if parts else x[:0].astype(np.float32)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def read_crop(clip: Clip, sample_rate: int, length: int, rng: np.random.Generator,
              pad: bool = True) -> np.ndarray:
    """A random crop of ``length`` samples at ``sample_rate`` from a clip, mono float32.

    A clip shorter than the crop is placed at a random offset in zeros (``pad=True``).
    """
    need = math.ceil(length * clip.sample_rate / sample_rate) + 16  # resampler margin
    if clip.frames > need:
        start = clip.start + int(rng.integers(clip.frames - need + 1))
        x = audio.read(clip.path, sample_rate, start=start, frames=need, check=False)
    else:
        x = audio.read(clip.path, sample_rate, start=clip.start, frames=clip.frames,
                       check=False)
    if not np.isfinite(x).all():
        raise audio.AudioError(clip.path, "contains NaN or Inf")
    if len(x) >= length:
        return x[:length]
    if not pad:
        raise audio.AudioError(clip.path, f"too short ({len(x) / sample_rate:.2f} s)")
    out = np.zeros(length, np.float32)
    offset = int(rng.integers(length - len(x) + 1))
    out[offset:offset + len(x)] = x
    return out


class _SegmentDataset(torch.utils.data.Dataset):
    """Fixed-length random segments; item ``i`` of epoch ``e`` depends only on ``(seed, e, i)``."""

    def __init__(self, sample_rate: int, segment_seconds: float, examples_per_epoch: int,
                 seed: int):
        self.sample_rate = sample_rate
        self.length = int(round(segment_seconds * sample_rate))
        self.examples_per_epoch, self.seed, self.epoch = examples_per_epoch, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.examples_per_epoch

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])


def _duration_weights(clips: Sequence[Clip]) -> np.ndarray:
    durations = np.array([c.duration for c in clips])
    return durations / durations.sum()


class MixtureDataset(_SegmentDataset):
    """Mixtures of mixtures for MixIT: each item is ``(2, T)``, the two reference mixtures.

    Enhancement (``noise`` given): ``[noisy speech, noise only]``; separation (``noise`` is
    None): ``[noisy, noisy]`` from two different draws. Crops are drawn with probability
    proportional to clip duration; the first mixture is set to an RMS level drawn from
    ``level_db`` and the second to that level plus a gain drawn from ``relative_gain_db``.
    With ``noise_augment=p`` (enhancement), the first mixture gets, with probability p, extra
    noise from the noise set 0 to 10 dB below it (noise augmentation, Saito et al. 2021).
    With ``augment=True`` each mixture is played at its own speed (a factor drawn from
    ``speed``) through its own smooth random equaliser: MixIT's targets are the mixtures
    themselves, so any change of a mixture keeps them exact, and a few recordings stand for
    many (against over-fitting them).
    Items depend only on ``(seed, epoch, index)``, so worker processes do not change them.
    """

    def __init__(
        self,
        recordings: Sequence[Clip],
        noise: Sequence[Clip] | None = None,
        sample_rate: int = 16000,
        segment_seconds: float = 4.0,
        examples_per_epoch: int = 1000,
        relative_gain_db: tuple[float, float] = (-5.0, 5.0),
        level_db: tuple[float, float] = (-30.0, -20.0),
        pad_short: bool = True,
        noise_augment: float = 0.0,
        seed: int = 0,
        augment: bool = False,
        speed: tuple[float, float] = (0.85, 1.15),
    ):
        if not recordings:
            raise DataError("no recordings to draw mixtures from")
        if noise is not None and not noise:
            raise DataError("noise-only set is empty")
        super().__init__(sample_rate, segment_seconds, examples_per_epoch, seed)
        self.recordings, self.noise = list(recordings), None if noise is None else list(noise)
        self.relative_gain_db, self.level_db = relative_gain_db, level_db
        self.pad_short, self.noise_augment = pad_short, noise_augment
        self.augment, self.speed = augment, speed
        self._p_recordings = _duration_weights(self.recordings)
        self._p_noise = None if self.noise is None else _duration_weights(self.noise)
        self._bad: set[str] = set()

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = self._rng(index)
        first = self._draw(self.recordings, self._p_recordings, rng)
        if self.noise is None:
            second = self._draw(self.recordings, self._p_recordings, rng)
        else:
            second = self._draw(self.noise, self._p_noise, rng)
        if self.augment:
            first, second = (equalise(change_speed(x, rng.uniform(*self.speed),
                                                   self.sample_rate, rng), self.sample_rate, rng)
                             for x in (first, second))
        level = rng.uniform(*self.level_db)
        gain = rng.uniform(*self.relative_gain_db)
        if self.noise is not None and rng.random() < self.noise_augment:
            extra = self._draw(self.noise, self._p_noise, rng)
            first = first + _at_level(extra, 20 * np.log10(max(audio.rms(first), 1e-8))
                                      - rng.uniform(0, 10))
        first = _at_level(first, level)
        second = _at_level(second, level + gain)
        return torch.from_numpy(np.stack([first, second]))

    def _draw(self, clips: list[Clip], p: np.ndarray, rng: np.random.Generator,
              tries: int = 20) -> np.ndarray:
        """A usable crop from ``clips`` drawn with probabilities ``p``."""
        for _ in range(tries):
            clip = clips[int(rng.choice(len(clips), p=p))]
            if clip.path in self._bad:
                continue
            try:
                x = read_crop(clip, self.sample_rate, self.length, rng, pad=self.pad_short)
            except audio.AudioError as e:
                self._bad.add(clip.path)
                log.warning("skipping %s: %s", e.path, e.reason)
                continue
            if audio.rms(x) > 1e-5:  # skip a digitally silent stretch
                return x
        raise DataError(f"could not draw a usable crop in {tries} tries "
                        f"({len(self._bad)} files failed while loading)")



class RecordingDataset(MixtureDataset):
    """Single crops ``(1, T)`` of the recordings at a level drawn from ``level_db``: the
    in-domain noisy input of self-training (RemixIT), where a teacher supplies the targets."""

    def __init__(self, recordings: Sequence[Clip], sample_rate: int = 16000,
                 segment_seconds: float = 4.0, examples_per_epoch: int = 1000,
                 level_db: tuple[float, float] = (-30.0, -20.0), pad_short: bool = True,
                 seed: int = 0):
        super().__init__(recordings, None, sample_rate, segment_seconds, examples_per_epoch,
                         level_db=level_db, pad_short=pad_short, seed=seed)

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = self._rng(index)
        x = self._draw(self.recordings, self._p_recordings, rng)
        return torch.from_numpy(_at_level(x, rng.uniform(*self.level_db))[None])

def _at_level(x: np.ndarray, level_db: float) -> np.ndarray:
    return (x * (10 ** (level_db / 20) / max(audio.rms(x), 1e-8))).astype(np.float32)


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int, workers: int = 2,
                shuffle: bool = False) -> torch.utils.data.DataLoader:
    """A loader with worker processes; items are already random, so no shuffling needed."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
        persistent_workers=workers > 0, drop_last=True,
        prefetch_factor=4 if workers > 0 else None,
    )


def paired_clips(noisy_dir: str | os.PathLike, clean_dir: str | os.PathLike,
                 min_seconds: float = 0.5) -> list[tuple[Clip, Clip]]:
    """Pairs of files with the same relative name under ``noisy_dir`` and ``clean_dir``.

    Raises:
        DataError: no pairs, or a pair whose lengths or sample rates differ (named).
    """
    noisy = index_folder(noisy_dir, min_seconds=min_seconds)
    clean = {os.path.relpath(c.path, clean_dir): c
             for c in index_folder(clean_dir, min_seconds=min_seconds).clips}
    pairs = []
    for c in noisy.clips:
        ref = clean.get(os.path.relpath(c.path, noisy_dir))
        if ref is None:
            log.warning("skipping %s: no clean reference of the same name in %s", c.path,
                        clean_dir)
            continue
        if (ref.frames, ref.sample_rate) != (c.frames, c.sample_rate):
            raise DataError(f"{c.path}: noisy and clean differ in length or rate "
                            f"({c.frames} at {c.sample_rate} Hz vs {ref.frames} at "
                            f"{ref.sample_rate} Hz)")
        pairs.append((c, ref))
    if not pairs:
        raise DataError(f"no noisy/clean pairs of the same name in {noisy_dir} and {clean_dir}")
    return pairs


def source_groups(mixture_dir: str | os.PathLike, sources_dir: str | os.PathLike,
                  most: int) -> list[list[Clip]]:
    """The reference sources ``sources_dir/NAME/s*.wav`` of each ``mixture_dir/NAME.wav``
    (a ``kind="sounds"`` corpus split), in source order.

    Raises:
        DataError: no mixture with sources, more than ``most`` sources, or sources of
            different lengths or rates (named).
    """
    by_folder: dict[str, list[Clip]] = {}
    for clip in index_folder(sources_dir, min_seconds=0.0).clips:
        by_folder.setdefault(str(Path(clip.path).parent), []).append(clip)
    groups = []
    for mix in index_folder(mixture_dir).clips:
        folder = Path(sources_dir, Path(os.path.relpath(mix.path, mixture_dir)).with_suffix(""))
        if str(folder) not in by_folder:
            log.warning("skipping %s: no sources in %s", mix.path, folder)
            continue
        clips = sorted(by_folder[str(folder)],
                       key=lambda c: int(Path(c.path).stem.lstrip("s") or 0))
        if len(clips) > most:
            raise DataError(f"{folder}: {len(clips)} sources, more than the model's {most} "
                            "outputs")
        if {(c.frames, c.sample_rate) for c in clips} != {(mix.frames, mix.sample_rate)}:
            raise DataError(f"{folder}: sources differ in length or rate from {mix.path}")
        groups.append(clips)
    if not groups:
        raise DataError(f"no mixture of {mixture_dir} has its sources in {sources_dir}")
    return groups


class SourcesDataset(_SegmentDataset):
    """Aligned crops of every reference source of a mixture, ``(R, T)``, zero rows after
    the mixture's own sources: the mixture is their sum. For supervised separation (PIT).

    The sum is set to an RMS level drawn from ``level_db``, every source with the same gain.
    """

    def __init__(self, groups: Sequence[Sequence[Clip]], n_refs: int, sample_rate: int = 16000,
                 segment_seconds: float = 4.0, examples_per_epoch: int = 1000,
                 level_db: tuple[float, float] = (-30.0, -20.0), seed: int = 0):
        if not groups:
            raise DataError("no mixtures with reference sources")
        super().__init__(sample_rate, segment_seconds, examples_per_epoch, seed)
        self.groups, self.n_refs, self.level_db = [list(g) for g in groups], n_refs, level_db
        self._p = _duration_weights([g[0] for g in self.groups])

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = self._rng(index)
        group = self.groups[int(rng.choice(len(self.groups), p=self._p))]
        state = rng.bit_generator.state  # the same crop of every source
        out = np.zeros((self.n_refs, self.length), np.float32)
        for k, clip in enumerate(group):
            rng.bit_generator.state = state
            out[k] = read_crop(clip, self.sample_rate, self.length, rng)
        gain = 10 ** (rng.uniform(*self.level_db) / 20) / max(audio.rms(out.sum(0)), 1e-8)
        return torch.from_numpy(out * np.float32(gain))


class PairedDataset(_SegmentDataset):
    """Aligned crops ``(2, T)``: ``[noisy, clean]``, for supervised training.

    The noisy crop is set to an RMS level drawn from ``level_db``; the clean crop gets the
    same gain, so ``noisy - clean`` stays the noise.

    With ``augment=True`` the clean speech of every item is changed before it is mixed
    again with its noise (``noisy - clean``), so that a few training voices stand for many:
    a speed change by a factor drawn from ``speed`` (default 0.85..1.15; pitch and
    formants move together, as between speakers of different size), a smooth random
    equaliser (-8..+8 dB at six frequencies, as between microphones and rooms), and, half
    of the time, the noise of another item at an SNR drawn from ``snr_db``. With
    ``noise_change=p`` the noise too is changed, with probability p, so that a few kinds
    of noise stand for more (:func:`change_noise`).
    """

    def __init__(self, pairs: Sequence[tuple[Clip, Clip]], sample_rate: int = 16000,
                 segment_seconds: float = 4.0, examples_per_epoch: int = 1000,
                 level_db: tuple[float, float] = (-30.0, -20.0), seed: int = 0,
                 augment: bool = False, snr_db: tuple[float, float] = (-5.0, 15.0),
                 speed: tuple[float, float] = (0.85, 1.15), noise_change: float = 0.0):
        if not pairs:
            raise DataError("no noisy/clean pairs")
        super().__init__(sample_rate, segment_seconds, examples_per_epoch, seed)
        self.pairs, self.level_db = list(pairs), level_db
        self.augment, self.snr_db, self.speed = augment, snr_db, speed
        self.noise_change = noise_change
        self._p = _duration_weights([n for n, _ in self.pairs])

    def _pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        noisy, clean = self.pairs[int(rng.choice(len(self.pairs), p=self._p))]
        # the same random crop of both: draw it once and replay the generator state
        state = rng.bit_generator.state
        x = read_crop(noisy, self.sample_rate, self.length, rng)
        rng.bit_generator.state = state
        return x, read_crop(clean, self.sample_rate, self.length, rng)

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = self._rng(index)
        x, s = self._pair(rng)
        if self.augment:
            noise = x - s
            s = equalise(change_speed(s, rng.uniform(*self.speed), self.sample_rate, rng),
                         self.sample_rate, rng)
            if rng.random() < 0.5:
                other, other_clean = self._pair(rng)
                noise = at_snr(other - other_clean, s, rng.uniform(*self.snr_db))
            # (noise_change 0 draws nothing: the items of earlier recipes stay the same)
            if self.noise_change and rng.random() < self.noise_change:
                other, other_clean = self._pair(rng)
                changed = change_noise(noise, other - other_clean, self.sample_rate, rng)
                noise = at_snr(changed, noise, 0.0)  # at the noise's own energy: same SNR
            x = (s + noise).astype(np.float32)
        return _noisy_clean(x, s, rng.uniform(*self.level_db))


class SpeechNoiseDataset(MixtureDataset):
    """Noisy speech made on the fly for supervised training: ``(2, T)`` = ``[noisy, clean]``,
    a crop of clean ``speech`` plus a crop of ``noise`` (e.g. noise found in a user's own
    recordings) at an SNR drawn from ``snr_db``, the sum at an RMS level drawn from
    ``level_db``. With ``augment=True`` the speech is played at its own speed (a factor
    drawn from ``speed``) through a smooth random equaliser, as in :class:`PairedDataset`.
    """

    def __init__(self, speech: Sequence[Clip], noise: Sequence[Clip], sample_rate: int = 16000,
                 segment_seconds: float = 4.0, examples_per_epoch: int = 1000,
                 snr_db: tuple[float, float] = (-5.0, 15.0),
                 level_db: tuple[float, float] = (-30.0, -20.0), seed: int = 0,
                 augment: bool = False, speed: tuple[float, float] = (0.85, 1.15)):
        if not noise:
            raise DataError("noise-only set is empty")
        super().__init__(speech, noise, sample_rate, segment_seconds, examples_per_epoch,
                         level_db=level_db, seed=seed, augment=augment, speed=speed)
        self.snr_db = snr_db

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = self._rng(index)
        s = self._draw(self.recordings, self._p_recordings, rng)
        noise = self._draw(self.noise, self._p_noise, rng)
        if self.augment:
            s = equalise(change_speed(s, rng.uniform(*self.speed), self.sample_rate, rng),
                         self.sample_rate, rng)
        x = (s + at_snr(noise, s, rng.uniform(*self.snr_db))).astype(np.float32)
        return _noisy_clean(x, s, rng.uniform(*self.level_db))


class JointDataset(torch.utils.data.Dataset):
    """Item ``i`` of each dataset, stacked along the first axis: ``(C1 + C2 + ..., T)``
    (e.g. a recording for RemixIT over a noisy/clean pair for supervised training)."""

    def __init__(self, *datasets: torch.utils.data.Dataset):
        self.datasets = datasets

    def __len__(self) -> int:
        return min(len(d) for d in self.datasets)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.cat([d[index] for d in self.datasets])


def at_snr(noise: np.ndarray, speech: np.ndarray, snr_db: float) -> np.ndarray:
    """``noise`` scaled so that ``speech`` lies ``snr_db`` above it (energies over the
    whole crop)."""
    ratio = np.mean(np.square(speech, dtype=np.float64)) / (
        np.mean(np.square(noise, dtype=np.float64)) + 1e-20)
    return noise * math.sqrt(ratio / 10 ** (snr_db / 10))


def change_noise(noise: np.ndarray, other: np.ndarray, sample_rate: int,
                 rng: np.random.Generator) -> np.ndarray:
    """``noise`` as another kind of noise: played at a speed drawn from 0.6..1.6 (engines,
    fans and music at other pitches and tempos), through a random equaliser of -12..+12 dB,
    and half of the time with ``other`` added 0 to 10 dB below it; the caller sets the
    level."""
    y = equalise(change_speed(noise, rng.uniform(0.6, 1.6), sample_rate, rng), sample_rate,
                 rng, max_db=12.0)
    if rng.random() < 0.5:
        y = y + at_snr(other, y, rng.uniform(0.0, 10.0))
    return y.astype(np.float32)


def _noisy_clean(x: np.ndarray, s: np.ndarray, level_db: float) -> torch.Tensor:
    """``(2, T)`` ``[x, s]``, both with the gain that puts ``x`` at ``level_db`` RMS."""
    gain = 10 ** (level_db / 20) / max(audio.rms(x), 1e-8)
    return torch.from_numpy(np.stack([x * gain, s * gain]).astype(np.float32))


def change_speed(x: np.ndarray, factor: float, sample_rate: int,
                 rng: np.random.Generator) -> np.ndarray:
    """``x`` played ``factor`` times faster (pitch up by the same ratio), same length: a
    longer result is cropped at random, a shorter one placed at random in zeros."""
    import soxr

    y = soxr.resample(x, sample_rate * factor, sample_rate).astype(np.float32)
    n = len(x)
    if len(y) >= n:
        start = int(rng.integers(len(y) - n + 1))
        return y[start:start + n]
    out = np.zeros(n, np.float32)
    offset = int(rng.integers(n - len(y) + 1))
    out[offset:offset + len(y)] = y
    return out


def equalise(x: np.ndarray, sample_rate: int, rng: np.random.Generator,
             max_db: float = 8.0) -> np.ndarray:
    """``x`` through a smooth random equaliser (:func:`random_eq_db`)."""
    spectrum = np.fft.rfft(x.astype(np.float64))
    curve = random_eq_db(len(x), sample_rate, rng, max_db)
    return np.fft.irfft(spectrum * 10 ** (curve / 20), len(x)).astype(np.float32)


def random_eq_db(n: int, sample_rate: int, rng: np.random.Generator,
                 max_db: float) -> np.ndarray:
    """The dB curve of a smooth random equaliser on the ``rfft`` bins of ``n`` samples:
    gains in ``-max_db..max_db`` drawn at six log-spaced frequencies (100 Hz to Nyquist),
    interpolated on a log-frequency axis."""
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    nodes = np.geomspace(100.0, sample_rate / 2, 6)
    gains_db = rng.uniform(-max_db, max_db, len(nodes))
    return np.interp(np.log(np.maximum(freqs, 1.0)), np.log(nodes), gains_db)
