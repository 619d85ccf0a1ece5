import numpy as np
import pytest
import soundfile as sf
import torch

from wildmix.enhance import Enhancer


class Gain(torch.nn.Module):
    """A pointwise 'model': output 0 = 0.25 x, output 1 = 0.75 x."""

    n_sources = 2
    n_fft = 64

    def forward(self, x):
        return torch.stack([0.25 * x, 0.75 * x], 1)


@pytest.mark.parametrize("rate", [16000, 8000, 44100])
def test_chunked_pointwise_model_is_exact(rate):
    enhancer = Enhancer(Gain(), 16000, chunk_seconds=1.0, overlap_seconds=0.25, device="cpu")
    t = np.arange(int(3.7 * rate)) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = enhancer.enhance(x, rate)
    assert y.shape == x.shape and y.dtype == x.dtype
    tol = 1e-5 if rate == 16000 else 2e-3  # resampling there and back
    np.testing.assert_allclose(y[100:-100], 0.25 * x[100:-100], atol=tol)


def test_channels_and_types():
    enhancer = Enhancer(Gain(), 16000, chunk_seconds=1.0, overlap_seconds=0.2, device="cpu")
    x = np.random.default_rng(0).standard_normal((3, 20000)).astype(np.float32)
    y = enhancer.separate(x, 16000)
    assert y.shape == (3, 2, 20000)
    np.testing.assert_allclose(y[:, 1], 0.75 * x, atol=1e-5)
    yt = enhancer.enhance(torch.from_numpy(x[0]).double(), 16000)
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float64 and yt.shape == (20000,)
    for bad, message in ((np.zeros((2, 2, 10)), "shape"), (np.zeros(0), "empty"),
                         (np.full(100, np.nan), "NaN")):
        with pytest.raises(ValueError, match=message):
            enhancer.enhance(bad, 16000)


def test_real_model_chunked_close_to_whole():
    from wildmix import models

    torch.manual_seed(0)
    model = models.build("stft", models.model_args("stft", "tiny"))
    x = torch.randn(48000).numpy() * 0.1
    whole = Enhancer(model, 16000, chunk_seconds=100.0, device="cpu").enhance(x, 16000)
    chunked = Enhancer(model, 16000, chunk_seconds=1.0, overlap_seconds=0.3,
                       device="cpu").enhance(x, 16000)
    err = np.sum((whole - chunked) ** 2) / np.sum(whole ** 2)
    assert err < 0.05


def test_file_streaming_matches_arrays(tmp_path):
    enhancer = Enhancer(Gain(), 16000, chunk_seconds=1.0, overlap_seconds=0.2, device="cpu")
    t = np.arange(44100 * 3) / 44100
    # band-limited below the model's 8 kHz Nyquist, so speech + noise must give x back
    x = np.stack([0.3 * np.sin(2 * np.pi * 300 * t), 0.2 * np.sin(2 * np.pi * 5000 * t)],
                 1).astype(np.float32)
    sf.write(tmp_path / "in.wav", x, 44100, subtype="FLOAT")
    enhancer.enhance_file(tmp_path / "in.wav", {"speech": tmp_path / "out.wav",
                                                "noise": tmp_path / "noise.wav"})
    y, sr = sf.read(tmp_path / "out.wav", dtype="float32")
    n, _ = sf.read(tmp_path / "noise.wav", dtype="float32")
    assert sr == 44100 and y.shape == x.shape
    np.testing.assert_allclose(y, enhancer.enhance(x.T, 44100).T, atol=1e-6)
    np.testing.assert_allclose((y + n)[50:-50], x[50:-50], atol=1e-2)  # resampler edges
    assert not list(tmp_path.glob(".*tmp"))
