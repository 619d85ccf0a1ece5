"""Real-time enhancement: a causal STFT model run one hop at a time, with its state carried.

:class:`StreamStep` is one hop of a causal :class:`~wildmix.models.stft.STFTMasker` as a
pure function ``(hop of input, state) -> (hop of speech, state)``: the STFT frame buffer,
the running level, the dilated convolutions' past inputs and the overlap-add tail are
explicit tensors, so the same step exports to ONNX with its state as inputs and outputs.
:class:`Streamer` feeds it chunks of any size and returns as many samples as it is given,
``latency`` samples late; what it returns, less those first ``latency`` samples and followed
by :meth:`Streamer.flush`, is the model's offline output for the whole signal.

Algorithmic latency: ``n_fft - 1`` samples (the hop being gathered and the overlap with the
next frame): 19.9 ms for the ``stream`` preset (20 ms window, 10 ms hop at 16 kHz).
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from wildmix.config import ATTEN_LIM_DB, STREAM_ENGINES, STREAM_MODEL
from wildmix.enhance import input_share
from wildmix.models.stft import STFTMasker

log = logging.getLogger("wildmix")

STATE_NAMES = ("frame", "level", "conv", "ola", "envelope")


class StreamError(ValueError):
    """A model that cannot stream, or input that does not fit it; one line."""


def latency(model: STFTMasker) -> int:
    """Algorithmic latency in samples: the hop being gathered and the overlap with the
    next frame."""
    return model.n_fft - 1


def check_streamable(model: nn.Module) -> None:
    """:class:`StreamError` unless ``model`` is a causal TCN STFT masker with hop n_fft/2."""
    if not isinstance(model, STFTMasker):
        raise StreamError(f"only the stft model streams, not {type(model).__name__}")
    problems = [text for bad, text in (
        (not model.causal, "it looks ahead (train with --causal or --preset stream)"),
        (model.arch != "tcn", "its arch is not tcn"),
        (model.n_fft != 2 * model.hop, "its n_fft is not twice its hop"),
        (model.consistency is not None, "its mixture consistency needs the whole signal"),
    ) if bad]
    if problems:
        raise StreamError(f"this model cannot stream: {'; '.join(problems)}")


class StreamStep(nn.Module):
    """One hop of a causal :class:`STFTMasker`, its state explicit; output 0 (speech).

    ``forward(x, frame, level, conv, ola, envelope)`` with ``x`` the next ``(hop,)``
    samples returns ``(y, frame, level, conv, ola, envelope)``: ``y`` ``(hop,)`` is the
    overlap-added output ``n_fft / 2`` samples before ``x``'s first sample. State shapes:
    ``frame`` ``(n_fft - hop,)`` the last input samples, ``level`` ``(2,)`` the sum and
    count of the frames' mean log-power, ``conv`` ``(hidden, sum of pads)`` each block's
    past normalised inputs, ``ola`` and ``envelope`` ``(n_fft - hop,)`` the overlap-add tail
    and its summed squared window. The DFTs are matrix products (bases taken from
    ``torch.fft``), so the graph exports to ONNX without FFT operators.
    """

    def __init__(self, model: STFTMasker):
        super().__init__()
        check_streamable(model)
        self.model = model.eval()
        n, bins = model.n_fft, model.n_fft // 2 + 1
        eye = torch.eye(n, dtype=torch.float64)
        spectrum = torch.fft.rfft(eye)  # row i: the rfft of a unit impulse at i
        dtype = model.window.dtype  # computed in float64, kept in the model's precision
        self.register_buffer("analysis", torch.cat([spectrum.real, spectrum.imag], 1).to(dtype))
        kbins = torch.eye(bins, dtype=torch.complex128)
        synthesis = torch.cat([torch.fft.irfft(kbins, n), torch.fft.irfft(1j * kbins, n)])
        self.register_buffer("synthesis", synthesis.to(dtype))  # (2K, N)
        self.pads = [block.pad for block in model.net]
        # each block's weights as plain tensors, taken once: a hop's dozens of small ops cost
        # less without a module call and a parameter lookup each (a third of the step's time
        # for 12 blocks); they share the model's storage, so build the step after .double()
        self.blocks = [(b.norm.normalized_shape, b.norm.weight.detach(), b.norm.bias.detach(),
                        b.norm.eps, b.depthwise.weight.detach()[:, 0], b.depthwise.bias.detach(),
                        b.act.weight.detach(), b.pointwise.weight.detach()[:, :, 0],
                        b.pointwise.bias.detach(), b.pad, b.depthwise.dilation[0])
                       for b in model.net]

    def initial_state(self) -> tuple[torch.Tensor, ...]:
        m = self.model
        rest, like = m.n_fft - m.hop, {"dtype": m.window.dtype}
        return (torch.zeros(rest, **like), torch.zeros(2, **like),
                torch.zeros(m.inp.out_channels, sum(self.pads), **like),
                torch.zeros(rest, **like), torch.zeros(rest, **like))

    def forward(self, x, frame, level, conv, ola, envelope):
        m = self.model
        bins = m.n_fft // 2 + 1
        samples = torch.cat([frame, x])  # (N,)
        spec = (samples * m.window) @ self.analysis  # (2K,): real parts, then imaginary
        re, im = spec[:bins], spec[bins:]
        logp = torch.log(re * re + im * im + 1e-8)
        level = level + torch.stack([logp.mean(), torch.ones_like(level[0])])
        h = _pointwise(m.inp, (logp - level[0] / level[1]) / 4.0)  # (H,)
        h, conv = self._blocks(h, conv)
        h = m.out_norm(h)
        logits = _pointwise(m.out, h).view(m.n_sources, bins)
        mask = logits.softmax(0)[0] if m.mask == "softmax" else logits[0].sigmoid()
        y = (torch.cat([mask * re, mask * im]) @ self.synthesis) * m.window  # (N,)
        zeros = torch.zeros_like(x)
        ola = torch.cat([ola, zeros]) + y
        envelope = torch.cat([envelope, zeros]) + m.window * m.window
        out = ola[:m.hop] / envelope[:m.hop].clamp_min(1e-11)
        return out, samples[m.hop:], level, conv, ola[m.hop:], envelope[m.hop:]

    def _blocks(self, h, conv):
        caches, start = [], 0
        for shape, norm_w, norm_b, eps, dw, db, slope, pw, pb, pad, dilation in self.blocks:
            y = F.layer_norm(h, shape, norm_w, norm_b, eps)
            past = torch.cat([conv[:, start:start + pad], y[:, None]], 1)  # (H, pad + 1)
            z = (past[:, ::dilation] * dw).sum(1) + db  # the causal depthwise conv's taps
            z = torch.where(z >= 0, z, slope * z)  # PReLU, one slope per channel
            h = h + F.linear(z, pw, pb)  # the pointwise conv, residual
            caches.append(past[:, 1:])
            start += pad
        return h, torch.cat(caches, 1)


def _pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-1 convolution applied to one frame ``(C_in,)`` -> ``(C_out,)``."""
    return F.linear(x, conv.weight[:, :, 0], conv.bias)


class Streamer:
    """Stateful enhancement of a live signal with a causal model.

    >>> streamer = Streamer(model)                        # doctest: +SKIP
    >>> for chunk in chunks: play(streamer.process(chunk))  # doctest: +SKIP
    >>> play(streamer.flush())                             # doctest: +SKIP

    ``process(chunk)`` takes any number of float samples at the model's rate and returns as
    many: the enhanced signal delayed by ``latency`` samples (silence at first).
    ``flush()`` ends the stream: it returns the last ``latency`` samples and resets.

    Args:
        model: a causal stft model (:func:`check_streamable`).
        sample_rate: the model's rate; the input must have it.
        engine: ``"torch"``, or ``"onnx"`` with ``onnx_path`` (see :func:`export_onnx`).
        atten_lim_db: the attenuation limit, as :class:`wildmix.enhance.Enhancer`'s: the
            speech ``s`` becomes ``s + f (x - s)`` with the input ``x`` delayed to meet it,
            ``f = 10^(-atten_lim_db / 20)``; ``inf``: the model's own output.
    """

    def __init__(self, model: nn.Module, sample_rate: int, engine: str = "torch",
                 onnx_path: str | os.PathLike | None = None, threads: int = 1,
                 atten_lim_db: float = ATTEN_LIM_DB):
        if engine not in STREAM_ENGINES:
            raise StreamError(f"engine must be one of {', '.join(STREAM_ENGINES)}, got "
                              f"{engine!r}")
        self.floor = input_share(atten_lim_db)
        self.step = StreamStep(model)
        self.sample_rate, self.hop = sample_rate, model.hop
        self.latency = latency(model)
        self._run = (self._torch_step if engine == "torch"
                     else _onnx_runner(onnx_path or _onnx_bytes(model), threads))
        self.reset()

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency / self.sample_rate

    def reset(self) -> None:
        self._state = tuple(s.numpy() for s in self.step.initial_state())
        self._pending = np.zeros(0, np.float32)
        self._queue = [np.zeros(self.latency, np.float32)]
        self._queued, self._steps = self.latency, 0
        self._delayed = np.zeros(self.latency, np.float32)  # the input the output is due to meet

    def process(self, chunk) -> np.ndarray:
        """``(n,)`` float samples -> ``(n,)`` enhanced samples, ``latency`` late."""
        x = np.asarray(chunk, dtype=np.float32)
        if x.ndim != 1:
            raise StreamError(f"a stream is one channel: expected (n,) samples, got shape "
                              f"{x.shape}")
        if not np.isfinite(x).all():
            raise StreamError("the stream contains NaN or Inf")
        self._pending = np.concatenate([self._pending, x])
        while len(self._pending) >= self.hop:
            self._advance(self._pending[:self.hop])
            self._pending = self._pending[self.hop:]
        return self._limit(self._take(len(x)), x)

    def flush(self) -> np.ndarray:
        """The rest of the stream (``latency`` samples, the end of its last frame); then
        the streamer is ready for a new stream."""
        rest = len(self._pending)
        if self._steps or rest:  # the last frame, zero-padded like the offline STFT
            self._advance(np.pad(self._pending, (0, self.hop - rest)))
            ola, envelope = self._state[3], self._state[4]
            self._put(ola[:rest] / np.maximum(envelope[:rest], 1e-11))
        out = self._limit(self._take(self._queued), np.zeros(0, np.float32))
        self.reset()
        return out

    def _limit(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``y + f (x' - y)``, ``x'`` the input ``latency`` samples earlier, which ``y``
        (the output of the same instant) is the speech of; ``x`` comes in."""
        if not self.floor:  # no limit: no input to hold back
            return y
        held = np.concatenate([self._delayed, x])
        self._delayed = held[len(y):]
        return y + self.floor * (held[:len(y)] - y)

    def _advance(self, x: np.ndarray) -> None:
        y, *self._state = self._run(x, *self._state)
        if self._steps:  # the first hop of output lies in the STFT's front padding
            self._put(y)
        self._steps += 1

    def _put(self, y: np.ndarray) -> None:
        self._queue.append(np.asarray(y, np.float32))
        self._queued += len(y)

    def _take(self, n: int) -> np.ndarray:
        queue = np.concatenate(self._queue)
        self._queue, self._queued = [queue[n:]], len(queue) - n
        return queue[:n]

    @torch.inference_mode()
    def _torch_step(self, x, *state):
        out = self.step(torch.from_numpy(x), *(torch.from_numpy(s) for s in state))
        return tuple(t.numpy() for t in out)


def load(model: str | os.PathLike = STREAM_MODEL, engine: str = "torch",
         threads: int = 1, atten_lim_db: float = ATTEN_LIM_DB) -> Streamer:
    """A :class:`Streamer` for a run folder, checkpoint or shipped model name."""
    from wildmix import models

    ckpt = models.load_checkpoint(model)
    return Streamer(models.from_checkpoint(ckpt), ckpt["sample_rate"], engine=engine,
                    threads=threads, atten_lim_db=atten_lim_db)


def stream_array(streamer: Streamer, signal: np.ndarray, chunk: int) -> np.ndarray:
    """Stream ``signal`` through ``streamer`` in ``chunk``-sample pieces; aligned output."""
    pieces = [streamer.process(signal[s:s + chunk]) for s in range(0, len(signal), chunk)]
    return np.concatenate([*pieces, streamer.flush()])[streamer.latency:]


# --- files, pipes, sound cards -----------------------------------------------------------

def stream_file(streamer: Streamer, src: str | os.PathLike, dst: str | os.PathLike,
                chunk: int) -> int:
    """Stream a mono file at the model's rate through ``streamer`` into ``dst`` (float WAV,
    written atomically, aligned with the input). Returns the number of samples.

    Raises:
        audio.AudioError: unreadable input, another rate, more than one channel, NaN.
    """
    import soundfile as sf

    from wildmix import audio

    info = audio.info(src)
    _check_format(src, info.sample_rate, info.channels, streamer.sample_rate)
    with audio.atomic_path(dst) as tmp, sf.SoundFile(str(src)) as f, sf.SoundFile(
            tmp, "w", streamer.sample_rate, 1, subtype="FLOAT", format="WAV") as out:
        writer = _Aligned(streamer, out.write)
        for block in f.blocks(chunk, dtype="float32"):
            if not np.isfinite(block).all():
                raise audio.AudioError(src, "contains NaN or Inf")
            writer.write(block)
        writer.close()
    return info.frames


def stream_pipe(streamer: Streamer, reader, writer, chunk: int) -> int:
    """Raw 16-bit little-endian mono PCM from the binary file ``reader`` to ``writer``,
    ``chunk`` samples at a time, aligned with the input; a last partial frame is flushed.
    Returns the number of samples."""
    aligned = _Aligned(streamer, lambda y: (writer.write(_to_pcm16(y)), writer.flush()))
    total = 0
    while data := reader.read(2 * chunk):  # blocks until a whole chunk, or the end
        if len(data) % 2:
            log.warning("the stream ended inside a sample: its last byte is dropped")
            data = data[:-1]
        x = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
        aligned.write(x)
        total += len(x)
    aligned.close()
    return total


def stream_soundcard(streamer: Streamer, device=None, seconds: float | None = None) -> None:
    """Enhance the default (or ``device``) microphone live to the speakers until Ctrl-C or
    ``seconds``; needs the ``sounddevice`` package."""
    import sounddevice as sd

    def callback(indata, outdata, frames, time, status):
        outdata[:, 0] = streamer.process(indata[:, 0])

    with sd.Stream(samplerate=streamer.sample_rate, blocksize=streamer.hop, channels=1,
                   dtype="float32", device=device, callback=callback, latency="low"):
        sd.sleep(int(1000 * seconds) if seconds else 2 ** 31 - 1)


class _Aligned:
    """Feeds a streamer and writes its output without the first ``latency`` samples."""

    def __init__(self, streamer: Streamer, write):
        self.streamer, self.write_out, self.skip = streamer, write, streamer.latency

    def write(self, x: np.ndarray) -> None:
        y = self.streamer.process(x.reshape(-1))
        drop = min(self.skip, len(y))
        self.skip -= drop
        if len(y) > drop:
            self.write_out(y[drop:])

    def close(self) -> None:
        y = self.streamer.flush()[self.skip:]
        if len(y):
            self.write_out(y)


def _to_pcm16(y: np.ndarray) -> bytes:
    return (np.clip(y, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes()


def _check_format(src, rate: int, channels: int, model_rate: int) -> None:
    from wildmix import audio

    if rate != model_rate:
        raise audio.AudioError(src, f"{rate} Hz; the streaming model runs at {model_rate} Hz "
                                    "(resample first, or use `wildmix enhance`, which does)")
    if channels != 1:
        raise audio.AudioError(src, f"{channels} channels; a stream is one channel (mix it "
                                    "down first, or use `wildmix enhance`)")


# --- ONNX -----------------------------------------------------------------------------------

def export_onnx(model: nn.Module, path: str | os.PathLike) -> None:
    """Write the streaming step of a causal model as an ONNX graph, atomically.

    Inputs ``x`` ``(hop,)`` and the state (``frame``, ``level``, ``conv``, ``ola``,
    ``envelope``; zeros to start, shapes in :class:`StreamStep`); outputs ``y`` ``(hop,)``
    and the next state, named with an ``_out`` suffix. Run it once per hop and feed each
    state output back as the next call's input.
    """
    from wildmix.audio import atomic_path
    from wildmix.config import EXTRAS, require

    require("onnx", EXTRAS["onnx"][:1], "ONNX export")
    step = StreamStep(model)
    args = (torch.zeros(model.hop), *step.initial_state())
    with atomic_path(path) as tmp, torch.inference_mode(False), torch.no_grad(), \
            warnings.catch_warnings():
        # the TorchScript exporter: torch's newer one needs onnxscript, and this graph is
        # plain (no control flow)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(step, args, str(tmp), input_names=["x", *STATE_NAMES],
                          output_names=["y", *(f"{n}_out" for n in STATE_NAMES)],
                          opset_version=17, dynamo=False)


def export_run(source: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Export a causal run, checkpoint or shipped model's streaming step as ``out`` (.onnx).

    Returns:
        ``{"source", "megabytes", "hop", "latency_ms"}``.
    """
    from wildmix import models

    if not str(out).endswith(".onnx"):
        raise ValueError(f"{out}: the output name must end in .onnx")
    ckpt = models.load_checkpoint(source)
    model = models.from_checkpoint(ckpt)
    export_onnx(model, out)
    return {"source": ckpt["path"], "megabytes": os.path.getsize(out) / 1e6,
            "hop": model.hop, "latency_ms": 1000.0 * latency(model) / ckpt["sample_rate"]}


def _onnx_bytes(model: nn.Module) -> bytes:
    """The exported step in memory, for onnxruntime (nothing left on disk)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="wildmix-onnx-") as folder:
        path = os.path.join(folder, "step.onnx")
        export_onnx(model, path)
        with open(path, "rb") as f:
            return f.read()


def _onnx_runner(model: str | os.PathLike | bytes, threads: int):
    """``model``: an .onnx file or its bytes."""
    from wildmix.config import EXTRAS, require

    require("onnx", EXTRAS["onnx"][1:], "the onnx engine")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(x, *state):
        return session.run(None, dict(zip(names, (x, *state), strict=True)))

    return run
