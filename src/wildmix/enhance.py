"""Inference: chunking with cross-faded overlaps, any rate and channel count; the Enhancer API.

Long inputs are cut into overlapping blocks at the input's own rate; each block is
resampled to the model's rate, separated, resampled back, and cross-faded linearly with its
neighbour over the overlap. Files are streamed block by block, so memory stays bounded
whatever their length. Each channel is processed on its own and the output keeps the
input's channels and rate.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from wildmix import audio, models
from wildmix.config import ATTEN_LIM_DB, CHUNK_SECONDS, COHERENCE, ENVELOPE_HOP_SECONDS, LONE_SHARE

log = logging.getLogger("wildmix")


def input_share(atten_lim_db: float) -> float:
    """The share ``f`` of the input that an attenuation limit of ``atten_lim_db`` keeps in
    the speech output (``s + f (x - s)``): ``10^(-atten_lim_db / 20)``, 0 for ``inf``."""
    if not atten_lim_db >= 0:
        raise ValueError(f"atten_lim_db must be >= 0 dB (inf: no limit), got {atten_lim_db}")
    return 10 ** (-atten_lim_db / 20)


class Enhancer:
    """Speech enhancement (or separation) with a trained model.

    ``shifts`` > 1 averages the outputs of the input delayed by that many offsets within one
    STFT hop (``shifts`` times the work; enhancement only).

    To enhance, the speech output keeps the input ``atten_lim_db`` below it (an attenuation
    limit: output 0 becomes ``s + f (x - s)`` with ``f = 10^(-atten_lim_db / 20)``, the
    other outputs are scaled by ``1 - f``, so the outputs still sum to the input); ``inf``
    gives the model's own outputs, 0 the input.

    >>> enhancer = Enhancer.default()                             # doctest: +SKIP
    >>> enhancer = Enhancer.from_checkpoint("runs/demo")          # doctest: +SKIP
    >>> speech = enhancer.enhance(waveform, sample_rate=44100)     # doctest: +SKIP
    """

    def __init__(self, model: torch.nn.Module, sample_rate: int, task: str = "enhance",
                 chunk_seconds: float = CHUNK_SECONDS, overlap_seconds: float = 1.0,
                 device: str | torch.device | None = None, lone_share: float = LONE_SHARE,
                 coherence: float = COHERENCE, atten_lim_db: float = ATTEN_LIM_DB,
                 shifts: int = 1):
        if overlap_seconds * 2 >= chunk_seconds:
            raise ValueError("overlap must be less than half the chunk length")
        if not 0.5 < lone_share <= 1.0:
            raise ValueError(f"lone_share must be in (0.5, 1], got {lone_share}")
        if not 0.0 < coherence <= 1.0:
            raise ValueError(f"coherence must be in (0, 1], got {coherence}")
        self.lone_share, self.coherence = lone_share, coherence  # separation: merge_plan
        self.floor = input_share(atten_lim_db)  # enhancement
        if shifts < 1 or (shifts > 1 and task != "enhance"):
            raise ValueError(f"shifts must be >= 1, and 1 to separate (the outputs of "
                             f"shifted inputs would need matching), got {shifts}")
        self.shifts = shifts
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.sample_rate, self.task = sample_rate, task
        self.chunk_seconds, self.overlap_seconds = chunk_seconds, overlap_seconds

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs) -> Enhancer:
        """Load ``best.pt`` (else ``last.pt``) of a run folder, or a checkpoint file; the
        task and ``shifts`` are the checkpoint's unless given."""
        ckpt = models.load_checkpoint(path)
        kwargs.setdefault("task", ckpt.get("task", "enhance"))
        if kwargs.get("shifts") is None:  # the model file's own, else 1
            kwargs["shifts"] = models.default_shifts(ckpt) if kwargs["task"] == "enhance" else 1
        return cls(models.from_checkpoint(ckpt), ckpt["sample_rate"], **kwargs)

    @classmethod
    def default(cls, **kwargs) -> Enhancer:
        """The model shipped with wildmix (see MODEL_CARD.md); no download, no training."""
        return cls.from_checkpoint(models.pretrained_path(), **kwargs)

    @property
    def n_sources(self) -> int:
        return self.model.n_sources

    # --- arrays ---------------------------------------------------------------------------

    def separate(self, waveform, sample_rate: int):
        """All M outputs. ``(T,)`` -> ``(M, T)``; ``(C, T)`` -> ``(C, M, T)``. A separation
        model's pieces of one sound are merged, and a lone sound is kept whole
        (:func:`merge_pieces` with ``lone_share`` and ``coherence``).

        numpy in, numpy out; torch in, torch out.
        """
        is_torch = isinstance(waveform, torch.Tensor)
        x = waveform.detach().cpu().numpy() if is_torch else np.asarray(waveform)
        if x.ndim not in (1, 2):
            raise ValueError(f"waveform must be (T,) or (C, T), got shape {x.shape}")
        if x.shape[-1] == 0:
            raise ValueError("waveform is empty")
        if not np.isfinite(x).all():
            raise ValueError("waveform contains NaN or Inf")
        frames = np.atleast_2d(x).T.astype(np.float32)  # (T, C)
        length = len(frames)
        blocks = (frames[s:s + n] for s, n in self._plan(length, sample_rate))
        out = np.concatenate(list(self._stream(blocks, length, sample_rate)), -1)
        out = out[0] if x.ndim == 1 else out  # (M, T) or (C, M, T)
        if self.task == "separate":
            out = merge_pieces(out, sample_rate, self.lone_share, self.coherence)
        return torch.from_numpy(out).to(waveform.dtype) if is_torch else out.astype(x.dtype)

    def enhance(self, waveform, sample_rate: int):
        """The speech estimate, output 0: ``(T,)`` -> ``(T,)``, ``(C, T)`` -> ``(C, T)``."""
        return self.separate(waveform, sample_rate)[..., 0, :]

    # --- files ----------------------------------------------------------------------------

    def enhance_file(self, src: str | os.PathLike, outputs: dict[str, str | os.PathLike]
                     ) -> None:
        """Stream ``src`` through the model and write float WAV files atomically.

        Args:
            outputs: ``{"speech": path}`` and optionally ``"noise"`` (the sum of outputs
                1..M-1) or ``"s0"``, ``"s1"``... (single outputs).
        Raises:
            audio.AudioError: unreadable, empty or non-finite input.
        """
        info = audio.info(src)
        try:
            with contextlib.ExitStack() as stack:
                writers = {}
                for key, dst in outputs.items():
                    tmp = stack.enter_context(audio.atomic_path(dst))
                    writers[key] = stack.enter_context(sf.SoundFile(
                        tmp, "w", info.sample_rate, info.channels, subtype="FLOAT",
                        format="WAV"))
                f = stack.enter_context(sf.SoundFile(str(src)))

                def blocks():
                    for start, n in self._plan(info.frames, info.sample_rate):
                        f.seek(start)
                        block = f.read(n, dtype="float32", always_2d=True)
                        if not np.isfinite(block).all():
                            raise audio.AudioError(src, "contains NaN or Inf")
                        yield block

                for out in self._stream(blocks(), info.frames, info.sample_rate):
                    for key, w in writers.items():  # out: (C, M, n)
                        if key == "speech":
                            y = out[:, 0]
                        elif key == "noise":
                            y = out[:, 1:].sum(1)
                        else:
                            y = out[:, int(key[1:])]
                        w.write(y.T)
                # leaving the stack closes the writers, then renames every file into place
        except (sf.LibsndfileError, RuntimeError) as e:
            raise audio.AudioError(src, f"unreadable ({audio.first_line(e)})") from None

    # --- the chunk machinery --------------------------------------------------------------

    def _plan(self, length: int, sample_rate: int) -> list[tuple[int, int]]:
        """``(start, frames)`` of overlapping blocks covering ``length`` samples."""
        block = max(1, int(self.chunk_seconds * sample_rate))
        overlap = int(self.overlap_seconds * sample_rate)
        plan, start = [], 0
        while True:
            plan.append((start, min(block, length - start)))
            if start + block >= length:
                return plan
            start += block - overlap

    @torch.no_grad()
    def _separate_block(self, block: np.ndarray, sample_rate: int) -> np.ndarray:
        """``(n, C)`` at the input rate -> ``(C, M, n)`` at the input rate."""
        n = len(block)
        x = np.stack([audio.resample(block[:, ch], sample_rate, self.sample_rate)
                      for ch in range(block.shape[1])])  # (C, n')
        if x.shape[1] < 2 * getattr(self.model, "n_fft", 32):  # too short for the STFT
            x = np.pad(x, ((0, 0), (0, 2 * getattr(self.model, "n_fft", 32) - x.shape[1])))
        y = self._outputs(x)  # (C, M, n')
        if self.task == "enhance" and self.floor:
            y *= 1 - self.floor
            y[:, 0] += self.floor * x
        out = np.stack([np.stack([
            audio.fit_length(audio.resample(y[c, m], self.sample_rate, sample_rate), n)
            for m in range(y.shape[1])]) for c in range(y.shape[0])])
        return out  # (C, M, n)

    def _outputs(self, x: np.ndarray) -> np.ndarray:
        """``(C, n)`` -> ``(C, M, n)``: the model's outputs, averaged over ``shifts`` offsets
        of the input spread over one STFT hop (the frame grid), as demucs's ``shifts``."""
        hop = getattr(self.model, "hop", 1)
        total = 0.0
        for k in range(self.shifts):
            s = k * hop // self.shifts
            shifted = torch.from_numpy(np.pad(x, ((0, 0), (s, 0)))).to(self.device)
            total = total + self.model(shifted).float().cpu().numpy()[..., s:]
        return total / self.shifts

    def _stream(self, blocks: Iterator[np.ndarray], length: int, sample_rate: int
                ) -> Iterator[np.ndarray]:
        """Separate blocks and cross-fade their overlaps; yields ``(C, M, n)`` pieces."""
        overlap = int(self.overlap_seconds * sample_rate)
        plan = self._plan(length, sample_rate)
        tail = None
        for k, block in enumerate(blocks):
            y = self._separate_block(block, sample_rate)
            last = k == len(plan) - 1
            if tail is not None:
                if self.task == "separate":
                    y = y[:, _best_permutation(tail, y[..., :overlap])]
                w = np.linspace(0.0, 1.0, overlap, dtype=np.float32)
                y[..., :overlap] = tail * (1 - w) + y[..., :overlap] * w
            if last:
                yield y
            else:
                tail = y[..., -overlap:].copy() if overlap else None
                yield y[..., : y.shape[-1] - overlap]


def _best_permutation(tail: np.ndarray, head: np.ndarray) -> list[int]:
    """Order of the new block's outputs that best continues the previous block's."""
    n_src = tail.shape[1]
    sim = np.einsum("cmt,cnt->mn", tail, head)  # (M_prev, M_new)
    if n_src <= 8:
        best = max(itertools.permutations(range(n_src)),
                   key=lambda p: sum(sim[m, p[m]] for m in range(n_src)))
        return list(best)
    order, free = [], set(range(n_src))
    for m in range(n_src):
        j = max(free, key=lambda j: sim[m, j])
        order.append(j)
        free.remove(j)
    return order


# --- files and folders: what `wildmix enhance` does -----------------------------------------


def is_model(path: str | os.PathLike) -> bool:
    """A run folder or a checkpoint file, rather than audio to enhance."""
    path = Path(path)
    if path.is_dir():
        return (path / "best.pt").is_file() or (path / "last.pt").is_file()
    return path.suffix in (".pt", ".safetensors")


def model_and_inputs(model: str | None, paths: list[str], default: str = "default"
                     ) -> tuple[str, list[str]]:
    """``[RUN] INPUT...``: the model (``model``, else a leading run folder or checkpoint,
    else the shipped ``default``) and the audio inputs."""
    if model is None and len(paths) > 1 and is_model(paths[0]):
        return paths[0], list(paths[1:])
    if model is None and is_model(paths[0]):
        raise ValueError(f"{paths[0]} is a model; give the audio after it")
    return model or default, list(paths)


def plan_jobs(inputs: list[str], out: str | os.PathLike, task: str, n_sources: int,
              write_noise: bool = False, folders: bool = False
              ) -> list[tuple[Path, dict[str, Path]]]:
    """``(source, {output kind: path})`` for every audio file of ``inputs`` (files or folder
    trees, whose layout ``out`` mirrors). ``folders``: separated outputs as ``NAME/sK.wav``
    rather than ``NAME_sK.wav``.

    Raises:
        FileNotFoundError: a missing input, or no audio at all.
        FileExistsError: an output that would overwrite an input.
    """
    sources = []  # (source, relative output stem)
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            sources += [(p, p.relative_to(root).with_suffix("")) for p in audio.find_audio(root)]
        elif root.is_file():
            sources.append((root, Path(root.stem)))
        else:
            raise FileNotFoundError(f"{root}: no such file or folder")
    if not sources:
        raise FileNotFoundError("no audio files in the inputs")
    out, taken = Path(out), {p.resolve() for p, _ in sources}
    jobs = []
    for src, stem in sources:
        if task == "separate":
            outputs = {f"s{m}": (out / stem / f"s{m}.wav" if folders else
                                 out / f"{stem}_s{m}.wav") for m in range(n_sources)}
        else:
            outputs = {"speech": out / f"{stem}.wav"}
            if write_noise:
                outputs["noise"] = out / f"{stem}_noise.wav"
        clash = [p for p in outputs.values() if p.resolve() in taken]
        if clash:
            raise FileExistsError(f"{clash[0]} is an input; refusing to overwrite it "
                                  "(choose another --out)")
        jobs.append((src, outputs))
    return jobs


def enhance_files(enhancer: Enhancer, jobs: list[tuple[Path, dict[str, Path]]],
                  progress: bool = True) -> int:
    """Run :meth:`Enhancer.enhance_file` on every job; an unusable input is skipped with one
    warning. Returns the number skipped."""
    from tqdm import tqdm

    failed = 0
    for src, outputs in tqdm(jobs, unit="file", disable=not progress or len(jobs) < 2):
        try:
            enhancer.enhance_file(src, outputs)
        except audio.AudioError as e:
            failed += 1
            log.warning("skipping %s", e)
    return failed


def merge_plan(power: np.ndarray, share: float = LONE_SHARE, coherence: float = COHERENCE,
               floor_db: float = -40.0) -> np.ndarray:
    """Where each separation output goes, ``(M,)`` output indices, from the outputs' frame
    powers ``(M, F)`` (:func:`frame_power`).

    MixIT never trains on a lone sound (every input is a sum of two mixtures) and learns to
    spread a sound over several outputs. Pieces of one sound rise and fall together: the
    two audible outputs (within ``-floor_db`` of the total) whose log-RMS envelopes
    correlate best are merged into the louder (their frame powers added), again and again
    while that correlation is at least ``coherence``. Then, when one output carries at
    least ``share`` of the energy, the input is taken for one sound and every output goes
    to that one. 1 turns either rule off.
    """
    power = np.array(power, dtype=np.float64)
    target = np.arange(len(power))
    floor = power.sum() * 10.0 ** (floor_db / 10.0)
    while coherence < 1.0:
        live = np.flatnonzero(power.sum(1) > floor)
        if len(live) < 2:
            break
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.corrcoef(np.log(np.sqrt(power[live]) + 1e-6))
        r = np.nan_to_num(r, nan=-1.0) - 3.0 * np.eye(len(live))
        a, b = np.unravel_index(int(np.argmax(r)), r.shape)
        if r[a, b] < coherence:
            break
        a, b = sorted((live[a], live[b]), key=lambda m: -power[m].sum())  # into the louder
        power[a] += power[b]
        power[b] = 0.0
        target[target == b] = a
    energy = power.sum(1)
    top = int(np.argmax(energy))
    if share < 1.0 and energy.sum() > 0 and energy[top] >= share * energy.sum():
        target[:] = top
    return target


def frame_power(y: np.ndarray, hop: int) -> np.ndarray:
    """``(..., T)`` -> ``(..., ceil(T / hop))``: the mean square of each frame."""
    y = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, -y.shape[-1] % hop)])
    return np.square(y.reshape(*y.shape[:-1], -1, hop), dtype=np.float64).mean(-1)


def hop_of(sample_rate: int) -> int:
    return max(1, round(ENVELOPE_HOP_SECONDS * sample_rate))


def apply_plan(estimates: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Outputs ``(..., M, T)`` with output m added into output ``target[m]``."""
    out = np.zeros_like(estimates)
    for m, t in enumerate(target):
        out[..., t, :] += estimates[..., m, :]
    return out


def merge_pieces(estimates: np.ndarray, sample_rate: int, share: float = LONE_SHARE,
                 coherence: float = COHERENCE) -> np.ndarray:
    """Separation outputs ``(M, T)`` or ``(C, M, T)`` with the pieces of one sound merged
    and a lone sound kept whole (:func:`merge_plan`, all channels together)."""
    power = frame_power(estimates, hop_of(sample_rate))
    target = merge_plan(power.reshape(-1, *power.shape[-2:]).sum(0), share, coherence)
    return estimates if _unmoved(target) else apply_plan(estimates, target)


def merge_pieces_files(outputs: dict[str, Path], share: float = LONE_SHARE,
                       coherence: float = COHERENCE) -> np.ndarray:
    """:func:`merge_pieces` on written output files ``{"s0": path, ...}``, block by block
    (any length; each file rewritten atomically). Returns the plan (:func:`merge_plan`)."""
    paths = list(outputs.values())
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(sf.SoundFile(str(p))) for p in paths]
        hop = hop_of(readers[0].samplerate)
        power = np.stack([np.concatenate([frame_power(b.T, hop).sum(0) for b in r.blocks(
            hop * 4096, dtype="float32", always_2d=True)] or [np.zeros(1)]) for r in readers])
        target = merge_plan(power, share, coherence)
        if _unmoved(target):
            return target
        writers = [stack.enter_context(sf.SoundFile(
            stack.enter_context(audio.atomic_path(p)), "w", r.samplerate, r.channels,
            subtype="FLOAT", format="WAV")) for p, r in zip(paths, readers, strict=True)]
        for r in readers:
            r.seek(0)
        for blocks in zip(*(r.blocks(65536, dtype="float32", always_2d=True)
                            for r in readers), strict=True):
            merged = apply_plan(np.stack(blocks, -2), target)  # (n, M, C)
            for m, w in enumerate(writers):
                w.write(merged[..., m, :])
    return target


def _unmoved(target: np.ndarray) -> bool:
    """Whether a plan leaves every output where it is."""
    return bool((target == np.arange(len(target))).all())


def drop_silent(src: str | os.PathLike, outputs: dict[str, Path], silence_db: float
                ) -> list[Path]:
    """Delete the outputs whose energy is more than ``-silence_db`` dB below the input's
    (read block by block: any length). Returns the deleted paths."""
    energy = {key: _energy(path) for key, path in outputs.items()}
    floor = _energy(src) * 10.0 ** (silence_db / 10.0)
    dropped = [path for key, path in outputs.items() if energy[key] <= floor]
    for path in dropped:
        path.unlink()
    return dropped


def _energy(path: str | os.PathLike) -> float:
    with sf.SoundFile(str(path)) as f:
        return float(sum(np.square(block, dtype=np.float64).sum()
                         for block in f.blocks(65536, dtype="float32", always_2d=True)))
