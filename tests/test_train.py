import json
import os
import signal
import threading

import numpy as np
import pytest
import torch

from wildmix import models, train
from wildmix.cli import main
from wildmix.enhance import Enhancer
from wildmix.evaluate import score_folder


def _config(corpus, out, **kw):
    base = dict(data=str(corpus), out=str(out), preset="tiny", batch_size=4,
                segment_seconds=2.0, max_steps=40, valid_every=20, log_every=5, workers=0,
                valid_files=6, valid_mixtures=8)
    return train.TrainConfig(**{**base, **kw})


def _weights(path):
    return models.load_checkpoint(path)["state_dict"]


def test_end_to_end_mixit(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    summary = train.train(_config(tiny_corpus, out, preset="cpu", max_steps=250,
                                  batch_size=8, segment_seconds=3.0, valid_every=125,
                                  warmup_steps=25), progress=False)
    assert summary["step"] == 250 and summary["bad_steps"] == 0
    entries = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in entries if "loss" in e]
    assert np.mean(losses[-4:]) < np.mean(losses[:2]) - 1.0  # the MixIT loss falls
    config = json.loads((out / "config.json").read_text())
    assert config["data"].endswith("train/noisy") and config["n_sources"] == 3
    assert {"best.pt", "last.pt"} <= {p.name for p in out.iterdir()}
    # enhance the test split: output SI-SNR above the input's
    enhanced = tmp_path / "enhanced"
    assert main(["enhance", str(out), str(tiny_corpus / "test" / "noisy"), "--out",
                 str(enhanced), "--no-progress"]) == 0
    scores = score_folder(tiny_corpus / "test", enhanced)
    assert scores.enhanced.mean() > scores.noisy.mean()


def test_resume_after_sigterm_matches_uninterrupted(tiny_corpus, tmp_path):
    whole = train.train(_config(tiny_corpus, tmp_path / "a", max_steps=300,
                                valid_every=1000), progress=False)
    assert whole["step"] == 300
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    part = train.train(_config(tiny_corpus, tmp_path / "b", max_steps=300, valid_every=1000),
                       progress=False)
    timer.cancel()
    assert part["stopped"] == "SIGTERM" and 0 < part["step"] < 300
    assert models.load_checkpoint(tmp_path / "b" / "last.pt")["step"] == part["step"]
    rest = train.train(_config(tiny_corpus, tmp_path / "b", max_steps=300, valid_every=1000),
                       progress=False)
    assert rest["step"] == 300
    a, b = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # and a finished run is left alone
    assert train.train(_config(tiny_corpus, tmp_path / "b", max_steps=300, valid_every=1000),
                       progress=False)["step"] == 300


def test_nan_steps_skipped_then_stopped(tiny_corpus, tmp_path, monkeypatch):
    real = train.STRATEGIES["mixit"]
    calls = {"n": 0}

    def flaky(model, batch, c, allowed):
        calls["n"] += 1
        loss = real(model, batch, c, allowed)
        return loss * float("nan") if calls["n"] % 3 == 0 or calls["n"] > 20 else loss

    monkeypatch.setitem(train.STRATEGIES, "mixit", flaky)
    with pytest.raises(train.TrainingError, match="NaN/Inf losses in a row.*last.pt"):
        train.train(_config(tiny_corpus, tmp_path / "r", max_steps=100, max_bad_steps=10),
                    progress=False)
    ckpt = models.load_checkpoint(tmp_path / "r" / "last.pt")
    assert ckpt["bad_steps"] == 6 + 10  # every third of the first 20, then 10 in a row
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    Enhancer.from_checkpoint(tmp_path / "r" / "last.pt").enhance(np.ones(8000) * 0.1, 16000)


def _ddp_worker(rank, corpus, out, port):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    summary = train.train(_config(corpus, out, max_steps=12, valid_every=6), progress=False)
    torch.save(summary["model"].state_dict(), os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_ddp_two_gloo_processes_keep_identical_weights(tiny_corpus, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(str(tiny_corpus), str(tmp_path), port),
                                nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = models.build("stft", models.model_args("stft", "tiny")).state_dict()
    changed = False
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        changed |= not torch.equal(a[key], init[key])
    assert changed


def test_supervised_strategy(tiny_corpus, tmp_path):
    summary = train.train(_config(tiny_corpus, tmp_path / "s", strategy="supervised",
                                  max_steps=10), progress=False)
    assert summary["step"] == 10
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["clean"].endswith("train/clean")


def test_cli_errors_are_one_line(tiny_corpus, tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["enhance", str(tmp_path / "bad.pt"), str(tiny_corpus / "test" / "noisy"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.pt" in err
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r"),
                 "--noise", "auto"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_corpus / "train" / "noisy"), "--out",
                 str(tmp_path / "r")]) == 2
    assert "needs noise-only clips" in capsys.readouterr().err


def test_enhance_never_overwrites_inputs(tiny_corpus, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    train.train(_config(tiny_corpus, run, max_steps=2), progress=False)
    src = tmp_path / "in"
    shutil.copytree(tiny_corpus / "test" / "noisy", src)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    assert main(["enhance", str(run), str(src), "--out", str(src), "--no-progress"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_separation_on_sounds_corpus(tiny_sounds, tmp_path):
    out = tmp_path / "sep"
    summary = train.train(_config(tiny_sounds, out, task="separate", max_steps=6,
                                  valid_every=3), progress=False)
    assert summary["step"] == 6
    config = json.loads((out / "config.json").read_text())
    assert config["data"].endswith("train/mixture") and config["n_sources"] == 4
    assert any("valid_mixit" in line for line in (out / "log.jsonl").read_text().splitlines())
    assert main(["enhance", str(out), str(tiny_sounds / "test" / "mixture"), "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 0
    assert len(list((tmp_path / "o").glob("*_s3.wav"))) == len(
        list((tiny_sounds / "test" / "mixture").iterdir()))


def test_unexpected_error_keeps_progress(tiny_corpus, tmp_path, monkeypatch):
    real = train.STRATEGIES["mixit"]
    calls = {"n": 0}

    def failing(model, batch, c, allowed):
        calls["n"] += 1
        if calls["n"] == 15:
            raise RuntimeError("disk on fire")
        return real(model, batch, c, allowed)

    monkeypatch.setitem(train.STRATEGIES, "mixit", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train.train(_config(tiny_corpus, tmp_path / "r", max_steps=40, valid_every=100),
                    progress=False)
    assert models.load_checkpoint(tmp_path / "r" / "last.pt")["step"] == 14
    monkeypatch.setitem(train.STRATEGIES, "mixit", real)
    assert train.train(_config(tiny_corpus, tmp_path / "r", max_steps=40, valid_every=100),
                       progress=False)["step"] == 40
