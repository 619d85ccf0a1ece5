import math

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
    enhancer = Enhancer(Gain(), 16000, chunk_seconds=1.0, overlap_seconds=0.25, device="cpu",
                        atten_lim_db=math.inf)
    t = np.arange(int(3.7 * rate)) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = enhancer.enhance(x, rate)
    assert y.shape == x.shape and y.dtype == x.dtype
    tol = 1e-5 if rate == 16000 else 2e-3  # resampling there and back
    np.testing.assert_allclose(y[100:-100], 0.25 * x[100:-100], atol=tol)


@pytest.mark.parametrize("limit", [0.0, 12.0, 26.0])
def test_attenuation_limit_keeps_the_input_that_far_below(limit, tmp_path):
    """Speech s + f (x - s), f = 10^(-limit/20); the noise outputs scaled by 1 - f."""
    f = 10 ** (-limit / 20)
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 30000)).astype(np.float32)
    y = Enhancer(Gain(), 16000, chunk_seconds=1.0, overlap_seconds=0.2, device="cpu",
                 atten_lim_db=limit).separate(x, 16000)
    np.testing.assert_allclose(y[:, 0], (0.25 + f * 0.75) * x, atol=1e-5)
    np.testing.assert_allclose(y[:, 1], (1 - f) * 0.75 * x, atol=1e-5)
    assert np.abs(np.sum(y, 1) - x).max() < 1e-5  # the outputs still sum to the input
    sep = Enhancer(Gain(), 16000, task="separate", device="cpu", atten_lim_db=limit,
                   lone_share=1.0, coherence=1.0).separate(x[0], 16000)
    np.testing.assert_allclose(sep[0], 0.25 * x[0], atol=1e-5)  # separation: no limit
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="atten_lim_db"):
            Enhancer(Gain(), 16000, device="cpu", atten_lim_db=bad)
    from wildmix.cli import main

    sf.write(tmp_path / "a.wav", x[0], 16000)
    assert main(["enhance", "--atten-lim-db", "-3", str(tmp_path / "a.wav"), "--out",
                 str(tmp_path / "o")]) == 2


def test_channels_and_types():
    enhancer = Enhancer(Gain(), 16000, chunk_seconds=1.0, overlap_seconds=0.2, device="cpu",
                        atten_lim_db=math.inf)
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


def test_shifts_average_the_outputs_of_delayed_inputs():
    from wildmix import models

    torch.manual_seed(0)
    model = models.build("stft", models.model_args("stft", "tiny")).eval()  # hop 128
    x = (torch.randn(16000) * 0.1).numpy()
    with torch.no_grad():  # the oracle: the model by hand on x and on x delayed by 64
        own = model(torch.from_numpy(x)[None])[0, 0].numpy()
        late = model(torch.nn.functional.pad(torch.from_numpy(x), (64, 0))[None])[0, 0]
    expected = (own + late[64:].numpy()) / 2
    once = Enhancer(model, 16000, device="cpu", atten_lim_db=math.inf).enhance(x, 16000)
    twice = Enhancer(model, 16000, device="cpu", atten_lim_db=math.inf,
                     shifts=2).enhance(x, 16000)
    np.testing.assert_allclose(once, own, atol=1e-5)
    np.testing.assert_allclose(twice, expected, atol=1e-5)
    assert np.abs(twice - once).max() > 1e-4  # the frame grid matters to this model
    for bad in ({"shifts": 0}, {"shifts": 2, "task": "separate"}):
        with pytest.raises(ValueError, match="shifts must be"):
            Enhancer(model, 16000, device="cpu", **bad)


def test_a_model_file_carries_its_shifts(tmp_path, capsys):
    from wildmix import models
    from wildmix.cli import main

    torch.manual_seed(0)
    args = models.model_args("stft", "tiny")
    ckpt = {"format": models.FORMAT, "model_name": "stft", "model_args": args,
            "state_dict": models.build("stft", args).state_dict(), "sample_rate": 16000}
    torch.save(ckpt, tmp_path / "run.pt")
    assert main(["export", str(tmp_path / "run.pt"), "--out", str(tmp_path / "two.safetensors"),
                 "--shifts", "2"]) == 0
    models.export_run(tmp_path / "run.pt", tmp_path / "one.safetensors")
    assert Enhancer.from_checkpoint(tmp_path / "one.safetensors").shifts == 1
    assert Enhancer.from_checkpoint(tmp_path / "two.safetensors").shifts == 2
    assert Enhancer.from_checkpoint(tmp_path / "two.safetensors", shifts=1).shifts == 1
    x = (torch.randn(16000) * 0.1).numpy()
    own = Enhancer.from_checkpoint(tmp_path / "two.safetensors").enhance(x, 16000)
    asked = Enhancer.from_checkpoint(tmp_path / "one.safetensors", shifts=2).enhance(x, 16000)
    np.testing.assert_allclose(own, asked, atol=1e-6)
    with pytest.raises(ValueError, match="shifts must be"):
        models.export_run(tmp_path / "run.pt", tmp_path / "zero.safetensors", shifts=0)
    # the CLI refuses in one line what it cannot honour, and writes nothing
    assert main(["export", str(tmp_path / "run.pt"), "--out",
                 str(tmp_path / "zero.safetensors"), "--shifts", "0"]) == 2
    assert "shifts must be >= 1" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "run.pt"), "--out", str(tmp_path / "x.onnx"),
                 "--shifts", "2"]) == 2
    assert "--shifts is for .safetensors exports" in capsys.readouterr().err
    assert not (tmp_path / "zero.safetensors").exists() and not (tmp_path / "x.onnx").exists()


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
                 str(tmp_path / "out"), "--coherence", "1", "--no-progress"]) == 0
    assert "2 silent outputs dropped" in capsys.readouterr().out
    for name in ("a", "b"):
        assert sorted(p.name for p in (tmp_path / "out" / name).iterdir()) == ["s0.wav",
                                                                              "s1.wav"]
        x, _ = sf.read(tmp_path / "in" / f"{name}.wav")
        y, _ = sf.read(tmp_path / "out" / name / "s0.wav")
        assert len(y) == len(x) and np.allclose(y, 0.5 * x, atol=1e-3)


def _pieces(seconds=5.0, sr=16000):
    """Outputs (4, T): one sound split in two bands (the same envelope), another sound with
    its own envelope, and a faint output; and their sum."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    a_env = (np.sin(2 * np.pi * 1.3 * t) > 0).astype(np.float32)  # on/off, 1.3 Hz
    b_env = (np.sin(2 * np.pi * 0.7 * t + 1.0) > 0.3).astype(np.float32)
    low, high = np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 3000 * t)
    other = rng.standard_normal(len(t))
    out = np.stack([0.3 * a_env * low, 0.2 * b_env * other, 0.25 * a_env * high,
                    1e-4 * other]).astype(np.float32)
    return out


def test_merge_plan_merges_pieces_of_one_sound_and_keeps_a_lone_sound_whole():
    """merge_plan from frame powers: outputs that rise and fall together go into one; a
    sound with its own envelope and an output below the floor stay; one output with
    `share` of the energy takes all; 1 turns either rule off."""
    from wildmix.enhance import frame_power, merge_pieces, merge_plan

    out = _pieces()
    power = frame_power(out, 256)
    assert power.shape == (4, -(-out.shape[1] // 256))
    assert merge_plan(power, share=1.0, coherence=0.8).tolist() == [0, 1, 0, 3]
    assert merge_plan(power, share=1.0, coherence=1.0).tolist() == [0, 1, 2, 3]
    lone = out * np.array([[1.0], [0.05], [1.0], [1.0]], np.float32)  # 'other' faint
    assert merge_plan(frame_power(lone, 256), share=0.95, coherence=0.8).tolist() == [0] * 4
    assert merge_plan(frame_power(lone, 256), share=0.95, coherence=1.0).tolist() == \
        [0, 1, 2, 3]  # no output carries 95% before the pieces are merged
    merged = merge_pieces(out, 16000, share=1.0, coherence=0.8)
    np.testing.assert_allclose(merged[0], out[0] + out[2], rtol=1e-6)
    assert not merged[2].any() and np.array_equal(merged[[1, 3]], out[[1, 3]])
    assert merge_pieces(out, 16000, share=1.0, coherence=1.0) is out
    # channels decide together: (C, M, T), the plan of their summed powers
    stereo = np.stack([out, 0.5 * out])
    np.testing.assert_allclose(merge_pieces(stereo, 16000, 1.0, 0.8)[:, 0],
                               stereo[:, 0] + stereo[:, 2], rtol=1e-6)


def test_merge_pieces_files_matches_the_arrays(tmp_path):
    """The file version (blocks of 65536 frames) writes what merge_pieces gives."""
    from wildmix.enhance import merge_pieces, merge_pieces_files

    out = _pieces(seconds=9.0)  # 144000 frames: three blocks
    paths = {f"s{m}": tmp_path / f"s{m}.wav" for m in range(4)}
    for m, p in enumerate(paths.values()):
        sf.write(p, out[m], 16000, subtype="FLOAT")
    plan = merge_pieces_files(paths, share=1.0, coherence=0.8)
    assert plan.tolist() == [0, 1, 0, 3]
    want = merge_pieces(out, 16000, share=1.0, coherence=0.8)
    for m, p in enumerate(paths.values()):
        np.testing.assert_allclose(sf.read(p, dtype="float32")[0], want[m], atol=1e-7)
    assert merge_pieces_files(paths, share=1.0, coherence=0.8).tolist() == [0, 1, 2, 3]


def _lone_model(tmp_path):
    """A stand-in separation model whose output 0 takes about 99.8% of the energy."""
    from wildmix import models

    args = models.model_args("stft", "tiny", n_sources=3)
    model = models.build("stft", args)
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.copy_(torch.cat([torch.zeros(129), torch.full((129,), -3.0),
                                        torch.full((129,), -60.0)]))
    ckpt = tmp_path / "lone.pt"
    models.save_checkpoint(ckpt, model_name="stft", model_args=args, task="separate",
                           state_dict=model.state_dict(), sample_rate=16000)
    return ckpt


def test_separate_keeps_a_lone_sound_whole(tmp_path, capsys):
    """Arrays and files: outputs that hold a lone sound are merged into one (the input,
    by mixture consistency), the others dropped as silent; --lone-share 1 keeps them
    (this model's outputs share one envelope: --coherence 1 too)."""
    from wildmix.cli import main

    ckpt = _lone_model(tmp_path)
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal(3 * 16000)).astype(np.float32)
    est = Enhancer.from_checkpoint(ckpt, device="cpu").separate(x, 16000)
    np.testing.assert_allclose(est[0], x, atol=1e-4)
    assert not est[1:].any()
    raw = Enhancer.from_checkpoint(ckpt, device="cpu", lone_share=1.0,
                                   coherence=1.0).separate(x, 16000)
    assert np.abs(raw[1]).max() > 1e-3
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", x, 16000)
    assert main(["separate", "--model", str(ckpt), str(tmp_path / "in"), "--out",
                 str(tmp_path / "out"), "--no-progress"]) == 0
    assert "2 outputs merged into others (1 files kept whole as one sound), 2 silent outputs " \
        "dropped" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "out" / "a").iterdir()] == ["s0.wav"]
    y, _ = sf.read(tmp_path / "out" / "a" / "s0.wav")
    np.testing.assert_allclose(y, x, atol=1e-4)
    assert main(["separate", "--model", str(ckpt), str(tmp_path / "in"), "--out",
                 str(tmp_path / "raw"), "--lone-share", "1", "--coherence", "1",
                 "--no-progress"]) == 0
    assert "0 outputs merged into others (0 files kept whole" in capsys.readouterr().out
    assert len(list((tmp_path / "raw" / "a").iterdir())) == 2  # output 2 is silent
    rc = main(["separate", "--model", str(ckpt), str(tmp_path / "in"), "--out",
               str(tmp_path / "bad"), "--lone-share", "0.3"])
    err = capsys.readouterr().err
    assert rc == 2 and "lone_share must be in (0.5, 1]" in err
