"""Reading, resampling, down-mixing, validating and writing audio.

The only module that touches audio files. Arrays are float32 numpy, mono ``(T,)`` unless
stated. Every problem with a file is raised as :class:`AudioError` with the file's name and
the reason in one line, so that callers can skip the file with a warning.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au")
SILENCE_PEAK = 1e-6  # a file whose peak is below this is treated as silent
_SFC_SET_ADD_PEAK_CHUNK = 0x1050  # from libsndfile's sndfile.h

log = logging.getLogger("wildmix")


class AudioError(ValueError):
    """A file that cannot be used, with the reason; ``str()`` is one line naming the file."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def find_audio(root: str | os.PathLike) -> list[Path]:
    """Audio files under ``root`` (a file or a folder tree), sorted, by extension.

    A path with an audio extension that is not a readable file (a dangling link, a folder
    named ``x.wav``, a device) is skipped with one warning naming it.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or folder")
    found = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        problem = _not_a_file(p)
        if problem:
            log.warning("skipping %s: %s", p, problem)
        else:
            found.append(p)
    return found


def _not_a_file(p: Path) -> str | None:
    """Why ``p`` cannot be read as an audio file, or None when it is a regular file."""
    if p.is_file():
        return None
    if p.is_symlink() and not p.exists():
        return f"dangling link (to {os.readlink(p)})"
    if p.is_dir():
        return "a folder, not a file"
    return "not a regular file"


def info(path: str | os.PathLike) -> AudioInfo:
    """Header of an audio file; raises :class:`AudioError` if it is unreadable or empty."""
    try:
        i = sf.info(str(path))
    except Exception as e:  # libsndfile raises several types
        raise AudioError(path, f"unreadable ({first_line(e)})") from None
    if i.samplerate <= 0 or i.channels <= 0:
        raise AudioError(path, f"invalid header ({i.samplerate} Hz, {i.channels} channels)")
    if i.frames <= 0:
        raise AudioError(path, "empty (no samples)")
    return AudioInfo(str(path), int(i.samplerate), int(i.frames), int(i.channels))


def to_mono(x: np.ndarray) -> np.ndarray:
    """``(T,)`` or ``(T, C)`` to ``(T,)`` by averaging channels."""
    return x if x.ndim == 1 else x.mean(axis=1)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling (libsoxr, high quality); ``(T,)`` float32."""
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(x.astype(np.float32, copy=False), sr_in, sr_out, quality="HQ")


def content_problem(x: np.ndarray) -> str | None:
    """The reason a block of samples is unusable, or None."""
    if not np.isfinite(x).all():
        return "contains NaN or Inf"
    if x.size == 0 or np.abs(x).max() < SILENCE_PEAK:
        return "silent (all zeros)"
    return None


def read(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    start: int = 0,
    frames: int = -1,
    check: bool = True,
) -> np.ndarray:
    """Read a file (or ``frames`` frames from ``start``, in the file's own rate) as mono.

    Args:
        sample_rate: resample to this rate; None keeps the file's.
        check: raise :class:`AudioError` on NaN/Inf or all-zero content.
    Returns:
        ``(T,)`` float32.
    """
    try:
        if Path(path).suffix == ".g722":
            x, sr = _read_g722(path, start, frames)
        else:
            x, sr = sf.read(str(path), start=start, frames=frames, dtype="float32",
                            always_2d=True)
    except Exception as e:
        raise AudioError(path, f"unreadable ({first_line(e)})") from None
    x = to_mono(x)
    if check:
        problem = content_problem(x)
        if problem:
            raise AudioError(path, problem)
    return resample(x, sr, sample_rate) if sample_rate else x


def _read_g722(path, start: int, frames: int) -> tuple[np.ndarray, int]:
    """Raw G.722 at 64 kbit/s (Asterisk's prompts), decoded to 16 kHz ``(T, 1)`` float32
    with the PyPI ``G722`` package (the 'corpus' extra)."""
    import G722

    pcm = np.asarray(G722.G722(16000, 64000).decode(Path(path).read_bytes()), np.int16)
    x = pcm[start:] if frames < 0 else pcm[start:start + frames]
    return (x.astype(np.float32) / 32768.0)[:, None], 16000


def scan(path: str | os.PathLike, block_seconds: float = 30.0) -> tuple[AudioInfo, float]:
    """Check a whole file in blocks (bounded memory): header, NaN/Inf, silence.

    Returns:
        ``(info, peak)``. Raises :class:`AudioError` naming the problem.
    """
    i = info(path)
    peak = 0.0
    try:
        blocksize = max(1024, int(block_seconds * i.sample_rate))
        for block in sf.blocks(str(path), blocksize=blocksize, dtype="float32", always_2d=True):
            if not np.isfinite(block).all():
                raise AudioError(path, "contains NaN or Inf")
            if block.size:
                peak = max(peak, float(np.abs(block).max()))
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(path, f"unreadable ({first_line(e)})") from None
    if peak < SILENCE_PEAK:
        raise AudioError(path, "silent (all zeros)")
    return i, peak


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside ``path``, renamed onto it when the block succeeds.

    Readers never see a half-written file; on any error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes the file private (0600), and some writers (safetensors) make their
        # own: give the result the mode a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj) -> None:
    """``obj`` as indented JSON, written atomically (run configs, manifests of caches)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")


@functools.cache
def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; read once, as it is process-wide
    os.umask(mask)
    return mask


def rms(x: np.ndarray) -> float:
    """Root mean square in float64; 0 for an empty array."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` cut or zero-padded at the end to ``n`` samples."""
    return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))


def write(path: str | os.PathLike, x: np.ndarray, sample_rate: int,
          subtype: str = "FLOAT") -> None:
    """Write ``(T,)`` or ``(T, C)`` atomically (temporary file, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        channels = 1 if x.ndim == 1 else x.shape[1]
        with sf.SoundFile(tmp, "w", sample_rate, channels, subtype=subtype,
                          format=_format(path)) as f:
            # libsndfile stamps float WAVs with a PEAK chunk holding the time of writing;
            # without it the same audio gives the same bytes
            sf._snd.sf_command(f._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
            f.write(x)


def _format(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    return {"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}.get(ext, "WAV")


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when it has none), for
    one-line error messages."""
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:limit]
