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


def test_separate_command_writes_one_folder_per_input_and_drops_silent_outputs(tmp_path,
                                                                                capsys):
    """A stand-in separation model whose outputs are known: the input, half of it, and
    silence; the silent one is dropped, the others written as NAME/sK.wav at any length."""
    import soundfile as sf
    import torch

    from wildmix import models
    from wildmix.cli import main

    args = models.model_args("stft", "tiny", n_sources=3)
    model = models.build("stft", args)
    with torch.no_grad():  # masks: output 0 and 1 share the mixture, output 2 gets nothing
        model.out.weight.zero_()
        model.out.bias.copy_(torch.cat([torch.zeros(2 * 129), torch.full((129,), -60.0)]))
    ckpt = tmp_path / "sep.pt"
    models.save_checkpoint(ckpt, model_name="stft", model_args=args, task="separate",
                           state_dict=model.state_dict(), sample_rate=16000)
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for name, seconds in (("a", 1.5), ("b", 25.0)):  # b: several blocks
        sf.write(tmp_path / "in" / f"{name}.wav",
                 0.1 * rng.standard_normal(int(seconds * 16000)).astype(np.float32), 16000)
    assert main(["separate", "--model", str(ckpt), str(tmp_path / "in"), "--out",
                 str(tmp_path / "out"), "--no-progress"]) == 0
    assert "2 silent outputs dropped" in capsys.readouterr().out
    for name in ("a", "b"):
        assert sorted(p.name for p in (tmp_path / "out" / name).iterdir()) == ["s0.wav",
                                                                              "s1.wav"]
        x, _ = sf.read(tmp_path / "in" / f"{name}.wav")
        y, _ = sf.read(tmp_path / "out" / name / "s0.wav")
        assert len(y) == len(x) and np.allclose(y, 0.5 * x, atol=1e-3)
    rc = main(["separate", str(tmp_path / "in"), "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert rc == 2 and "needs a separation model" in err and len(err.strip().splitlines()) == 1
