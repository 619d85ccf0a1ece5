"""Shipped model, export to safetensors, fine-tuning from weights, and `wildmix adapt`."""

import hashlib
import json
import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wildmix import losses, models, train
from wildmix.cli import main
from wildmix.config import resolve
from wildmix.enhance import Enhancer

CARD = Path(__file__).resolve().parents[1] / "MODEL_CARD.md"


def _tiny_checkpoint(tmp_path, seed=0):
    torch.manual_seed(seed)
    args = models.model_args("stft", "tiny", n_sources=3)
    model = models.build("stft", args)
    path = tmp_path / "tiny.pt"
    models.save_checkpoint(path, model_name="stft", model_args=args, step=7,
                           state_dict=model.state_dict(), sample_rate=16000, task="enhance",
                           train_config={"strategy": "supervised", "seed": 3})
    return path, model


def test_export_round_trip(tmp_path, capsys):
    path, model = _tiny_checkpoint(tmp_path)
    out = tmp_path / "model.safetensors"
    assert main(["export", str(path), "--out", str(out)]) == 0
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest in capsys.readouterr().out
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask  # not the writer's private 0600
    ckpt = models.load_checkpoint(out)
    assert ckpt["model_name"] == "stft" and ckpt["model_args"] == models.model_args(
        "stft", "tiny", n_sources=3)
    assert ckpt["sample_rate"] == 16000
    assert ckpt["metadata"]["step"] == "7" and ckpt["metadata"]["strategy"] == "supervised"
    x = torch.randn(1, 16000)
    with torch.no_grad():
        torch.testing.assert_close(models.from_checkpoint(ckpt)(x), model.eval()(x))


def test_export_and_load_errors_are_one_line(tmp_path, capsys):
    path, _ = _tiny_checkpoint(tmp_path)
    assert main(["export", str(path), "--out", str(tmp_path / "m.pt")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(models.CheckpointError, match="bad.safetensors"):
        models.load_checkpoint(bad)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(models.CheckpointError, match="not a wildmix model"):
        models.load_checkpoint(foreign)
    sf.write(str(tmp_path / "a.wav"), np.zeros(1600, np.float32), 16000)
    assert main(["enhance", str(bad), str(tmp_path / "a.wav"), "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.safetensors" in err


def test_init_starts_from_the_given_weights(tiny_corpus, tmp_path):
    path, model = _tiny_checkpoint(tmp_path)
    c = train.TrainConfig(data=str(tiny_corpus), out=str(tmp_path / "ft"), init=str(path),
                          preset="cpu", max_steps=1, lr=1e-12, warmup_steps=1, batch_size=2,
                          segment_seconds=1.0, workers=0, valid_files=2, valid_mixtures=2)
    assert resolved(c).lr == 1e-12 and resolved(c).preset == "init"
    summary = train.train(c, progress=False)
    assert summary.step == 1
    got = models.load_checkpoint(tmp_path / "ft" / "last.pt")
    assert got["model_args"] == models.model_args("stft", "tiny", n_sources=3)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(got["state_dict"][k], v, atol=1e-6, rtol=0)
    assert resolved(train.TrainConfig(data=str(tiny_corpus), init=str(path))).lr == 5e-4
    assert resolved(train.TrainConfig(data=str(tiny_corpus), init=str(path), augment=True))
    with pytest.raises(ValueError, match="RemixIT takes its targets"):
        resolved(train.TrainConfig(data=str(tiny_corpus), strategy="remixit", teacher=str(path),
                                   augment=True))
    with pytest.raises(ValueError, match="drop --init"):
        resolved(train.TrainConfig(data=str(tiny_corpus), strategy="remixit", teacher=str(path),
                          init=str(path)))


@pytest.mark.parametrize("strategy", ["remixit", "mixit"])
def test_adapt_command_then_enhance(tiny_corpus, tmp_path, capsys, strategy):
    path, _ = _tiny_checkpoint(tmp_path)
    run = tmp_path / "adapted"
    argv = ["adapt", "--data", str(tiny_corpus / "train" / "noisy"), "--out", str(run),
            "--from", str(path), "--strategy", strategy, "--max-steps", "4", "--no-progress"]
    if strategy == "remixit":  # the model teaching itself (the peers' ensemble: test_teachers)
        argv += ["--teacher", str(path)]
    if strategy == "mixit":
        argv += ["--noise", str(tiny_corpus / "train" / "noise")]
    assert main(argv) == 0
    assert "adapted" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["strategy"] == strategy
    assert config["valid"] is None and config["clean"] is None  # no labels used
    assert (run / "best.pt").is_file()
    assert main(["enhance", str(run), str(tiny_corpus / "test" / "noisy"), "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 0
    assert len(list((tmp_path / "o").glob("*.wav"))) == 6
    assert main(["enhance", str(run), "--out", str(tmp_path / "o2")]) == 2
    assert "give the audio after it" in capsys.readouterr().err


# --- the shipped model ------------------------------------------------------------------------


def test_shipped_model_checksum_matches_the_model_card():
    path = models.pretrained_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    stated = re.findall(r"sha256[^0-9a-f]*([0-9a-f]{64})", CARD.read_text())
    assert stated and stated[0] == digest
    assert path.stat().st_size < 5e6  # a few MB at most


@pytest.mark.parametrize("name, digest", [
    ("v1", "c640c75678ac63c747295a28d89377a7ed461f01f9e0e2d10c03f0e711031d43"),
    ("v2", "39a4a76a4a247219176b11b1567e4fbed8510d3c04a4e7d50b0382efc63c9efb"),
    ("v3", "d5352010beb775a37f352a535ad5625309ba3a342643236344d36bccd2015224"),
    ("v4", "c5ea5cd8b81dbe8ad867a993a60febda993289f885a9e3fc0fe8867381d04246"),
    ("causal-v1", "dd94884e1d60b409d7e60029a1ad313d3e05862d3a28bcb922677359bc07fc89"),
    ("causal-v2", "c952357574e3c42586ab15d4c981b94d8982cb4ce6bc3759d0d2187de490ef94")])
def test_earlier_shipped_models_kept(name, digest):
    """The earlier shipped models stay in the package under their names ("v1" to "v4"), the
    baselines of newer ones, byte for byte as they were shipped."""
    path = models.pretrained_path(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    ckpt = models.load_checkpoint(name)
    assert ckpt["model_name"] == "stft" and ckpt["sample_rate"] == 16000


@pytest.fixture()
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access during a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_shipped_model_loads_offline_and_enhances(tiny_corpus, offline, tmp_path, capsys):
    enhancer = Enhancer.default()
    assert enhancer.sample_rate == 16000 and enhancer.n_sources >= 2
    # the CLI with no model argument: the shipped model
    noisy_dir = tiny_corpus / "test" / "noisy"
    assert main(["enhance", str(noisy_dir), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    gains = []
    for noisy_path in sorted(noisy_dir.glob("*.wav")):
        clean, _ = sf.read(str(tiny_corpus / "test" / "clean" / noisy_path.name),
                           dtype="float32")
        noisy, _ = sf.read(str(noisy_path), dtype="float32")
        out, rate = sf.read(str(tmp_path / "o" / noisy_path.name), dtype="float32")
        assert rate == 16000 and out.shape == noisy.shape and np.isfinite(out).all()
        ref = torch.from_numpy(clean)
        gains.append(float(losses.sisnr(torch.from_numpy(out), ref)
                           - losses.sisnr(torch.from_numpy(noisy), ref)))
    # a working enhancer on unseen TTS speech in noise; the card has the real figures
    assert np.mean(gains) > 3.0


def resolved(c):
    """The config after resolve(): every default filled in."""
    return resolve(c).config


def test_shipped_causal_model_streams_and_enhances(tiny_corpus, offline):
    """`wildmix stream`'s default: checksum as in the card, causal, streams as `wildmix
    enhance --model causal` enhances offline (both with the attenuation limit),
    and enhances unseen speech in noise."""
    from wildmix import stream

    path = models.pretrained_path("causal")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest in CARD.read_text() and path.stat().st_size < 5e6
    streamer = stream.load("causal")
    assert round(streamer.latency_ms, 1) == 19.9
    enhancer = Enhancer.from_checkpoint("causal", device="cpu")
    gains = []
    for noisy_path in sorted((tiny_corpus / "test" / "noisy").glob("*.wav")):
        clean, _ = sf.read(str(tiny_corpus / "test" / "clean" / noisy_path.name),
                           dtype="float32")
        noisy, _ = sf.read(str(noisy_path), dtype="float32")
        out = stream.stream_array(streamer, noisy, 160)
        offline_out = enhancer.enhance(noisy, 16000)  # `wildmix enhance --model causal`
        # float32 rounding, which this trained model amplifies, differs between the two paths
        # (offline float32 is itself up to 4e-5 from float64); in float64 they agree to 1e-9
        # (tests/test_stream.py)
        assert np.linalg.norm(out - offline_out) < 1e-4 * np.linalg.norm(offline_out)
        ref = torch.from_numpy(clean)
        gains.append(float(losses.sisnr(torch.from_numpy(out), ref)
                           - losses.sisnr(torch.from_numpy(noisy), ref)))
    assert np.mean(gains) > 3.0


def test_fine_tuning_keeps_the_starting_weights_when_they_stay_best(tiny_corpus, tmp_path):
    """The starting weights (the shipped model) are validated at step 0: a run that only
    makes them worse (a learning rate far too high) leaves them as best.pt."""
    model = models.from_checkpoint(models.load_checkpoint("default"))
    c = train.TrainConfig(data=str(tiny_corpus), out=str(tmp_path / "ft"), init="default",
                          preset="cpu", max_steps=4, lr=5.0, warmup_steps=1, batch_size=2,
                          segment_seconds=1.0, workers=0, valid_files=3, valid_mixtures=2,
                          valid_every=2, strategy="supervised")
    summary = train.train(c, progress=False)
    entries = [json.loads(line) for line in (tmp_path / "ft" / "log.jsonl").read_text()
               .splitlines()]
    scores = {e["step"]: e["valid_sisnri"] for e in entries if "valid_sisnri" in e}
    assert set(scores) == {0, 2, 4}
    assert summary.best_score == max(scores.values())
    assert scores[0] > max(scores[2], scores[4])  # lr 5 wrecks the model
    best = models.load_checkpoint(tmp_path / "ft" / "best.pt")
    for k, v in model.state_dict().items():  # so the starting weights are kept
        torch.testing.assert_close(best["state_dict"][k], v, atol=1e-6, rtol=0)


def test_shipped_separation_model_separates_and_keeps_lone_sounds_whole(tiny_sounds, offline,
                                                                        tmp_path, capsys):
    """`wildmix separate`'s default: checksum as in the card, M=8 outputs; on the tiny
    sounds corpus's test mixtures (sources it never heard) its outputs as trained improve
    every mixture of several sounds by more than 2 dB SI-SNR, and with the default merging
    every lone sound comes out whole (1S > 30 dB)."""
    from wildmix import evaluate

    path = models.pretrained_path("separate")
    assert hashlib.sha256(path.read_bytes()).hexdigest() in CARD.read_text()
    assert path.stat().st_size < 5e6
    ckpt = models.load_checkpoint("separate")
    assert ckpt["task"] == "separate" and ckpt["sample_rate"] == 16000
    data = tiny_sounds / "test"
    res = evaluate.evaluate(data, {
        "raw": evaluate.model_method("separate", "separate", lone_share=1.0, coherence=1.0),
        "merged": evaluate.model_method("separate", "separate")}, progress=False)
    scores = {(r["method"], r["file"]): r["scores"] for r in res.rows}
    multi = [f for (m, f), s in scores.items() if m == "raw" and "msi" in s]
    lone = [f for (m, f), s in scores.items() if m == "raw" and "1s" in s]
    assert multi and lone
    assert all(scores["raw", f]["msi"] > 2.0 for f in multi)
    assert all(scores["merged", f]["1s"] > 30.0 for f in lone)
    # the command without a model takes it
    assert main(["separate", str(data / "mixture"), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    assert "kept whole as one sound" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(
        p.stem for p in (data / "mixture").iterdir())
