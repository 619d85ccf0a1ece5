"""Streaming: one hop at a time equals the offline causal model; ONNX export; the CLI."""

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wildmix import audio, models, stream
from wildmix.cli import main
from wildmix.config import ATTEN_LIM_DB

TEST_AUDIO = Path(__file__).parent / "data"
_find_spec = importlib.util.find_spec
needs_onnx = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")),
    reason="the onnx extra is not installed (make install)")


def _model(preset="stream", seed=0, **overrides):
    """A causal model with random, non-trivial weights (masks far from uniform)."""
    torch.manual_seed(seed)
    model = models.build("stft", models.model_args("stft", preset, **overrides))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.08)
    return model.eval()


def _speech(seconds=None):
    """Committed real-rate speech in noise, 16 kHz, its length no multiple of the hop."""
    paths = sorted((TEST_AUDIO / "speech" / "flite").rglob("*.flac"))
    x = np.concatenate([audio.read(p, 16000) for p in paths[:2]])
    x = x + 0.02 * np.random.default_rng(1).standard_normal(len(x)).astype(np.float32)
    return x[:int(seconds * 16000)] if seconds else x[:len(x) // 160 * 160 + 77]


def _offline(model, x, atten_lim_db=ATTEN_LIM_DB):
    """The offline speech output with the attenuation limit: s + 10^(-A/20) (x - s)."""
    with torch.no_grad():
        s = model(torch.from_numpy(x)[None])[0, 0].numpy()
    return s + 10 ** (-atten_lim_db / 20) * (x - s)


def _relative_error(y, ref):
    return float(np.abs(y - ref).max() / np.abs(ref).max())


def _random_chunks(streamer, x, seed):
    rng = np.random.default_rng(seed)
    pieces, start = [], 0
    while start < len(x):
        size = int(rng.choice([1, 7, 159, 160, 161, 333, 1000, 4096]))
        y = streamer.process(x[start:start + size])
        assert len(y) == len(x[start:start + size])  # as many samples out as in
        pieces.append(y)
        start += size
    pieces.append(streamer.flush())
    return np.concatenate(pieces)


def test_streaming_in_random_chunks_equals_the_offline_causal_model():
    model, x = _model(), _speech()
    ref = _offline(model, x)
    streamer = stream.Streamer(model, 16000)
    for seed in range(3):  # flush() resets: the same streamer serves the next stream
        out = _random_chunks(streamer, x, seed)
        assert len(out) == len(x) + streamer.latency
        assert np.all(out[:streamer.latency] == 0)  # the latency is silence at first
        assert _relative_error(out[streamer.latency:], ref) < 1e-5


@pytest.mark.parametrize("name", ["random", "causal"])
def test_in_float64_the_step_is_exactly_the_offline_model(name):
    """The algorithm is exact: in float64 (bases computed in float64), hop-by-hop steps equal
    the offline forward to rounding, for random weights and for the shipped causal model,
    whose float32 outputs of the two paths differ by float32 rounding only."""
    model = _model() if name == "random" else models.from_checkpoint(
        models.load_checkpoint("causal"))
    model = model.double()
    x = _speech(2.0).astype(np.float64)
    step = stream.StreamStep(model)
    state, outs = step.initial_state(), []
    with torch.no_grad():
        for s in range(0, len(x), model.hop):
            y, *state = step(torch.from_numpy(x[s:s + model.hop]), *state)
            outs.append(y.numpy())
        ref = model(torch.from_numpy(x)[None])[0, 0].numpy()
    y = np.concatenate(outs)[model.hop:]  # the first hop lies in the STFT's padding
    n = len(y)  # every output a whole frame after it has been emitted
    assert np.abs(y - ref[:n]).max() < 1e-9 * np.abs(ref).max()


@pytest.mark.parametrize("atten_lim_db", [0.0, 12.0, np.inf])
def test_attenuation_limit_meets_the_input_of_the_same_instant(atten_lim_db):
    """As the offline Enhancer: s + f (x - s) with x delayed by the latency to meet s;
    0 dB gives back the input itself, inf the model's own output."""
    model, x = _model(), _speech(1.0)[:5077]
    out = _random_chunks(stream.Streamer(model, 16000, atten_lim_db=atten_lim_db), x, 2)
    latency = stream.latency(model)
    assert _relative_error(out[latency:], _offline(model, x, atten_lim_db)) < 1e-5
    if atten_lim_db == 0:
        assert np.abs(out[latency:] - x).max() < 1e-6


@pytest.mark.parametrize("length", [1, 100, 160, 320, 481])
def test_short_streams_and_streams_ending_mid_frame_are_flushed(length):
    model = _model(seed=1)
    x = _speech(1.0)[:length]
    y = stream.stream_array(stream.Streamer(model, 16000), x, chunk=60)
    assert len(y) == length
    assert _relative_error(y, _offline(model, x)) < 1e-5


def test_no_output_depends_on_input_more_than_the_latency_ahead():
    """The latency is a bound on the offline model's look-ahead: changing the input from
    sample k on leaves every output before k - latency unchanged (k at several phases of
    the hop), and changes the outputs near k."""
    model, x = _model(), _speech(1.0)
    streamer = stream.Streamer(model, 16000)
    assert streamer.latency == model.n_fft - 1 and round(streamer.latency_ms, 1) == 19.9
    ref = _offline(model, x)
    for k in (50 * model.hop, 50 * model.hop + 1, 50 * model.hop + 99, 8319):
        changed = x.copy()
        changed[k:] += 0.3 * np.random.default_rng(k).standard_normal(len(x) - k)
        out = _offline(model, changed)
        np.testing.assert_allclose(out[:k - streamer.latency], ref[:k - streamer.latency],
                                   atol=1e-6)
        assert np.abs(out[k:k + 100] - ref[k:k + 100]).max() > 1e-3


def test_models_that_cannot_stream_are_refused_in_one_line():
    for preset, overrides, reason in (("cpu", {}, "looks ahead"),
                                      ("gpu", {"causal": True}, "n_fft is not twice its hop"),
                                      ("stream", {"arch": "gru"}, "arch is not tcn")):
        with pytest.raises(stream.StreamError, match=reason):
            stream.Streamer(_model(preset, **overrides), 16000)
    streamer = stream.Streamer(_model(), 16000)
    with pytest.raises(stream.StreamError, match="one channel"):
        streamer.process(np.zeros((2, 160), np.float32))
    with pytest.raises(stream.StreamError, match="NaN"):
        streamer.process(np.full(160, np.nan, np.float32))


@needs_onnx
def test_onnx_step_carries_its_state_and_matches_torch(tmp_path):
    import onnx

    model, x = _model(seed=2), _speech()
    path = tmp_path / "step.onnx"
    stream.export_onnx(model, path)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    assert [i.name for i in graph.graph.input] == ["x", *stream.STATE_NAMES]
    assert [o.name for o in graph.graph.output] == ["y", *(f"{n}_out" for n in
                                                          stream.STATE_NAMES)]
    torch_out = _random_chunks(stream.Streamer(model, 16000), x, 0)
    onnx_out = _random_chunks(stream.Streamer(model, 16000, engine="onnx", onnx_path=path),
                              x, 1)
    assert _relative_error(onnx_out, torch_out) < 1e-4
    assert _relative_error(onnx_out[model.n_fft - 1:], _offline(model, x)) < 1e-4


def _save(model, path, preset="stream"):
    models.save_checkpoint(path, model_name="stft", model_args=models.model_args(
        "stft", preset), state_dict=model.state_dict(), sample_rate=16000)
    return path


def test_cli_streams_files_and_raw_pcm_pipes(tmp_path, capsys):
    model, x = _model(), _speech()
    ckpt = _save(model, tmp_path / "causal.pt")
    sf.write(tmp_path / "in.wav", x, 16000, subtype="FLOAT")
    assert main(["stream", "--model", str(ckpt), str(tmp_path / "in.wav"),
                 str(tmp_path / "out.wav")]) == 0
    y, rate = sf.read(tmp_path / "out.wav", dtype="float32")
    assert rate == 16000 and len(y) == len(x)
    assert _relative_error(y, _offline(model, x)) < 1e-5

    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    run = subprocess.run([sys.executable, "-m", "wildmix", "stream", "--model", str(ckpt),
                          "--chunk", "100", "-", "-"], input=pcm.tobytes() + b"\x01",
                         capture_output=True, check=True)  # ends mid-frame and mid-sample
    piped = np.frombuffer(run.stdout, "<i2").astype(np.float32) / 32768
    assert len(piped) == len(x)
    expected = _offline(model, pcm.astype(np.float32) / 32768)
    assert np.abs(piped - expected).max() < 2 / 32768  # rounding to 16 bits only
    assert b"last byte is dropped" in run.stderr


def test_cli_bad_streams_get_one_line(tmp_path, capsys):
    ckpt = _save(_model(), tmp_path / "causal.pt")
    sf.write(tmp_path / "44k.wav", np.zeros(4410, np.float32), 44100)
    sf.write(tmp_path / "stereo.wav", np.zeros((1600, 2), np.float32), 16000)
    cases = [(["44k.wav", "o.wav"], "44100 Hz; the streaming model runs at 16000 Hz"),
             (["stereo.wav", "o.wav"], "2 channels; a stream is one channel"),
             (["--chunk", "0", "stereo.wav", "o.wav"], "--chunk must be a positive number"),
             (["-", "o.wav"], "pipe to pipe"),
             (["stereo.wav"], "give IN and OUT"),
             (["--atten-lim-db", "-3", "stereo.wav", "o.wav"], "atten_lim_db must be >= 0")]
    for args, message in cases:
        capsys.readouterr()
        code = main(["stream", "--model", str(ckpt), *[str(tmp_path / a) if a.endswith(".wav")
                                                        else a for a in args]])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o.wav").exists()
    offline = _save(models.build("stft", models.model_args("stft", "tiny")).eval(),
                    tmp_path / "offline.pt", preset="tiny")
    assert main(["stream", "--model", str(offline), str(tmp_path / "stereo.wav"),
                 str(tmp_path / "o.wav")]) == 2
    assert "cannot stream: it looks ahead" in capsys.readouterr().err


@needs_onnx
def test_cli_exports_onnx_and_streams_with_it(tmp_path, capsys):
    import onnx

    model, x = _model(seed=3), _speech(2.0)
    ckpt = _save(model, tmp_path / "causal.pt")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "step.onnx")]) == 0
    assert "latency 19.9 ms" in capsys.readouterr().out
    onnx.checker.check_model(str(tmp_path / "step.onnx"))
    sf.write(tmp_path / "in.wav", x, 16000, subtype="FLOAT")
    assert main(["stream", "--model", str(ckpt), "--engine", "onnx", str(tmp_path / "in.wav"),
                 str(tmp_path / "out.wav")]) == 0
    y, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    assert _relative_error(y, _offline(model, x)) < 1e-4
    assert main(["export", str(ckpt), "--format", "safetensors",
                 "--out", str(tmp_path / "m.safetensors")]) == 0
    assert models.load_checkpoint(tmp_path / "m.safetensors")["model_args"]["causal"]


def test_pipe_function_on_byte_streams():
    """stream_pipe reads whole chunks from a binary reader and writes aligned PCM."""
    model, x = _model(seed=4), _speech(0.5)
    pcm = (x * 32767).astype("<i2")
    out = io.BytesIO()
    n = stream.stream_pipe(stream.Streamer(model, 16000), io.BytesIO(pcm.tobytes()), out,
                           chunk=37)
    y = np.frombuffer(out.getvalue(), "<i2").astype(np.float32) / 32768
    assert n == len(x) == len(y)
    assert np.abs(y - _offline(model, pcm.astype(np.float32) / 32768)).max() < 2 / 32768


def test_soundcard_mode_feeds_the_streamer_block_by_block(tmp_path, monkeypatch, capsys):
    """A stand-in for sounddevice: its stream calls back with hop-sized blocks, as PortAudio
    does; the output blocks are the streamer's. Without the package: one line."""
    import types

    model = _model(seed=5)
    x = _speech(0.5)
    played = []

    class FakeStream:
        def __init__(self, samplerate, blocksize, channels, dtype, device, callback, latency):
            assert (samplerate, channels, dtype) == (16000, 1, "float32")
            self.blocksize, self.callback = blocksize, callback

        def __enter__(self):
            for s in range(0, len(x) - self.blocksize + 1, self.blocksize):
                out = np.zeros((self.blocksize, 1), np.float32)
                self.callback(x[s:s + self.blocksize, None], out, self.blocksize, None, None)
                played.append(out[:, 0].copy())
            return self

        def __exit__(self, *exc):
            return False

    fake = types.SimpleNamespace(Stream=FakeStream, sleep=lambda ms: None)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    streamer = stream.Streamer(model, 16000)
    stream.stream_soundcard(streamer, seconds=0.5)
    n = len(played) * model.hop
    expected = _offline(model, x[:n])
    got = np.concatenate(played)[streamer.latency:]
    assert _relative_error(got, expected[:len(got)]) < 1e-5

    ckpt = _save(model, tmp_path / "causal.pt")
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sounddevice" else _find_spec(name, *a))
    assert main(["stream", "--model", str(ckpt), "--soundcard"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'wildmix[live]'" in err and len(err.splitlines()) == 1

