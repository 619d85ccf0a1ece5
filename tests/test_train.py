import json
import math
import os
import signal
import threading

import numpy as np
import pytest
import torch

from wildmix import models, strategies, train
from wildmix.cli import main
from wildmix.config import MissingExtra, interval_steps, resolve
from wildmix.enhance import Enhancer
from wildmix.evaluate import score_folder


def _config(corpus, out, **kw):
    base = dict(data=str(corpus), out=str(out), preset="tiny", batch_size=4,
                segment_seconds=2.0, max_steps=40, valid_every=20, log_every=5, workers=0,
                valid_files=6, valid_mixtures=8)
    return train.TrainConfig(**{**base, **kw})


def _weights(path):
    return models.load_checkpoint(path)["state_dict"]


def test_end_to_end_mixit(debian_tiny_corpus, tmp_path):
    """On the corpus as users build it (the committed test audio is too small to learn
    from)."""
    out = tmp_path / "run"
    summary = train.train(_config(debian_tiny_corpus, out, preset="cpu", max_steps=250,
                                  batch_size=8, segment_seconds=3.0, valid_every=125,
                                  warmup_steps=25), progress=False)
    assert summary.step == 250 and summary.bad_steps == 0
    entries = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in entries if "loss" in e]
    assert np.mean(losses[-4:]) < np.mean(losses[:2]) - 1.0  # the MixIT loss falls
    config = json.loads((out / "config.json").read_text())
    assert config["data"].endswith("train/noisy") and config["n_sources"] == 3
    assert {"best.pt", "last.pt"} <= {p.name for p in out.iterdir()}
    # enhance the test split: output SI-SNR above the input's
    enhanced = tmp_path / "enhanced"
    assert main(["enhance", str(out), str(debian_tiny_corpus / "test" / "noisy"), "--out",
                 str(enhanced), "--no-progress"]) == 0
    scores = score_folder(debian_tiny_corpus / "test", enhanced)
    assert scores.enhanced.mean() > scores.noisy.mean()


def test_resume_after_sigterm_matches_uninterrupted(tiny_corpus, tmp_path):
    whole = train.train(_config(tiny_corpus, tmp_path / "a", max_steps=300,
                                valid_every=1000), progress=False)
    assert whole.step == 300
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    part = train.train(_config(tiny_corpus, tmp_path / "b", max_steps=300, valid_every=1000),
                       progress=False)
    timer.cancel()
    assert part.stopped == "SIGTERM" and 0 < part.step < 300
    assert models.load_checkpoint(tmp_path / "b" / "last.pt")["step"] == part.step
    rest = train.train(_config(tiny_corpus, tmp_path / "b", max_steps=300, valid_every=1000),
                       progress=False)
    assert rest.step == 300
    a, b = (models.load_checkpoint(tmp_path / x / "last.pt") for x in ("a", "b"))
    for weights in ("state_dict", "trained_state_dict"):  # the average, the trained weights
        for key in a[weights]:
            torch.testing.assert_close(a[weights][key], b[weights][key], rtol=0, atol=0)
    # and a finished run is left alone
    assert train.train(_config(tiny_corpus, tmp_path / "b", max_steps=300, valid_every=1000),
                       progress=False).step == 300


def test_weight_average_follows_its_formula():
    """WeightAverage against the recursion written out by hand: a_t = d_t a_(t-1) +
    (1 - d_t) w_t with d_t = min(decay, t / (9 + t)), starting from the model's weights."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    average = train.WeightAverage(model, 0.9)
    expected = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for t in range(1, 30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        average.update(model, t)
        d = min(0.9, t / (9 + t))
        for k, v in model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v
    for k, v in average.model.state_dict().items():
        torch.testing.assert_close(v, expected[k])
    assert not any(p.requires_grad for p in average.model.parameters())
    assert train.WeightAverage(model, 0.0).model is model
    with pytest.raises(ValueError, match="ema"):
        train.WeightAverage(model, 1.0)


@pytest.mark.parametrize("kind", ["init", "remixit"])
def test_weight_average_starts_at_the_starting_weights(tiny_corpus, tmp_path, kind):
    """Fine-tuning and RemixIT with a zero learning rate give back their start (the average
    begins at the loaded weights, not at a fresh initialisation)."""
    start = tmp_path / "start"
    train.train(_config(tiny_corpus, start, max_steps=5, valid_every=100), progress=False)
    kw = dict(init=str(start)) if kind == "init" else dict(strategy="remixit",
                                                          teacher=str(start))
    train.train(_config(tiny_corpus, tmp_path / "run", max_steps=5, valid_every=100, lr=0.0,
                        select="none", **kw), progress=False)
    a, b = _weights(start / "last.pt"), _weights(tmp_path / "run" / "last.pt")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)


def test_nan_steps_skipped_then_stopped(tiny_corpus, tmp_path, monkeypatch):
    calls = {"n": 0}

    class Flaky(train.MixIT):
        def loss(self, net, batch, step):
            calls["n"] += 1
            loss = super().loss(net, batch, step)
            return loss * float("nan") if calls["n"] % 3 == 0 or calls["n"] > 20 else loss

    monkeypatch.setitem(train.STRATEGIES, "mixit", Flaky)
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
    torch.save(summary.model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
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
    assert summary.step == 10
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
    # rerunning a finished run through the CLI reports it and changes nothing
    assert main(["train", "--data", str(tiny_corpus), "--out", str(run), "--preset", "tiny",
                 "--max-steps", "2", "--no-progress"]) == 0
    assert f"{run}: 2 steps" in capsys.readouterr().out
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
    assert summary.step == 6
    config = json.loads((out / "config.json").read_text())
    assert config["data"].endswith("train/mixture") and config["n_sources"] == 4
    log_text = (out / "log.jsonl").read_text()
    assert "valid_mixit" in log_text and "dnsmos" not in log_text  # DNSMOS is for speech
    assert main(["enhance", str(out), str(tiny_sounds / "test" / "mixture"), "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 0
    assert len(list((tmp_path / "o").glob("*_s3.wav"))) == len(
        list((tiny_sounds / "test" / "mixture").iterdir()))


def test_sources_dataset_crops_add_up_to_the_corpus_mixture(tiny_sounds):
    """Each item holds every source of one mixture (zero rows after them), cropped alike:
    with crops as long as the files, their sum is the corpus's own mixture file up to one
    gain, and the item's level is drawn from level_db."""
    import soundfile as sf

    from wildmix import data as wdata

    root = tiny_sounds / "train"
    groups = wdata.source_groups(root / "mixture", root / "sources", 4)
    names = sorted(p.stem for p in (root / "mixture").iterdir())
    assert len(groups) == len(names) and {len(g) for g in groups} <= {1, 2, 3, 4}
    mixes = np.stack([sf.read(str(root / "mixture" / f"{n}.wav"), dtype="float32")[0]
                      for n in names]).astype(np.float64)
    width = max(map(len, groups))
    seconds = mixes.shape[1] / 16000
    ds = wdata.SourcesDataset(groups, width, 16000, seconds, 12, level_db=(-30, -20), seed=3)
    for i in range(12):
        item = ds[i].numpy().astype(np.float64)
        assert item.shape == (width, mixes.shape[1])
        total = item.sum(0)
        gains = mixes @ total / (mixes ** 2).sum(1)
        k = int(np.argmin(((total - gains[:, None] * mixes) ** 2).sum(1)))
        assert np.allclose(total, gains[k] * mixes[k], atol=1e-6 * np.abs(total).max())
        active = np.abs(item).max(-1) > 0
        assert active[:len(groups[k])].all() and not active[len(groups[k]):].any()
        assert -30.01 <= 10 * np.log10(np.mean(total ** 2)) <= -19.99
    with pytest.raises(wdata.DataError, match="more than the model's"):
        wdata.source_groups(root / "mixture", root / "sources", width - 1)


def test_supervised_separation_uses_pit_on_the_sources(tiny_sounds, tmp_path):
    out = tmp_path / "pit"
    summary = train.train(_config(tiny_sounds, out, task="separate", strategy="supervised",
                                  max_steps=30, valid_every=15, lr=3e-3, log_every=2),
                          progress=False)
    assert summary.step == 30 and summary.bad_steps == 0
    config = json.loads((out / "config.json").read_text())
    assert config["clean"].endswith("train/sources")
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])  # the PIT loss falls


def test_unexpected_error_keeps_progress(tiny_corpus, tmp_path, monkeypatch):
    real = train.STRATEGIES["mixit"]
    calls = {"n": 0}

    class Failing(train.MixIT):
        def loss(self, net, batch, step):
            calls["n"] += 1
            if calls["n"] == 15:
                raise RuntimeError("disk on fire")
            return super().loss(net, batch, step)

    monkeypatch.setitem(train.STRATEGIES, "mixit", Failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train.train(_config(tiny_corpus, tmp_path / "r", max_steps=40, valid_every=100),
                    progress=False)
    assert models.load_checkpoint(tmp_path / "r" / "last.pt")["step"] == 14
    monkeypatch.setitem(train.STRATEGIES, "mixit", real)
    assert train.train(_config(tiny_corpus, tmp_path / "r", max_steps=40, valid_every=100),
                       progress=False).step == 40


# --- RemixIT ---------------------------------------------------------------------------------


def _teacher(tmp_path, seed=0, name="stft"):
    torch.manual_seed(seed)
    args = models.model_args(name, "tiny", n_sources=3)
    model = models.build(name, args)
    path = tmp_path / f"teacher-{name}.pt"
    models.save_checkpoint(path, model_name=name, model_args=args,
                           state_dict=model.state_dict(), sample_rate=16000, task="enhance")
    return path, model


def test_remixit_teacher_gets_no_gradient_and_ema_matches_formula(tiny_corpus, tmp_path):
    path, _ = _teacher(tmp_path)
    plan = resolve(_config(tiny_corpus, tmp_path / "r", strategy="remixit", teacher=str(path),
                           teacher_every="step", teacher_momentum=0.75))
    strategy = train.make_strategy(plan, torch.device("cpu"))
    student = models.build(plan.model_name, plan.model_args)
    strategy.start(student, None, epoch_steps=10)
    for t, s in zip(strategy.teacher.parameters(), student.parameters(), strict=True):
        assert torch.equal(t, s)  # the student starts as the teacher
    before = {k: v.clone() for k, v in strategy.teacher.state_dict().items()}
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    batch = 0.05 * torch.randn(4, 1, 16000)
    loss = strategy.loss(student, batch, step=0)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in strategy.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    opt.step()
    for k, v in strategy.teacher.state_dict().items():  # the optimiser leaves it alone
        assert torch.equal(v, before[k]), k
    strategy.after_step(student, 1)
    s_state = student.state_dict()
    for k, v in strategy.teacher.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.75 * before[k] + 0.25 * s_state[k])
    # replace every 2 epochs of 10 steps: nothing at step 10, a copy at step 20
    strategy.update, strategy.interval = "replace", 20
    with torch.no_grad():
        next(student.parameters()).add_(1.0)
    snapshot = {k: v.clone() for k, v in strategy.teacher.state_dict().items()}
    strategy.after_step(student, 10)
    assert all(torch.equal(v, snapshot[k]) for k, v in strategy.teacher.state_dict().items())
    strategy.after_step(student, 20)
    assert all(torch.equal(v, student.state_dict()[k])
               for k, v in strategy.teacher.state_dict().items())


def test_remixit_targets_are_teacher_estimates_with_deranged_noise(tiny_corpus, tmp_path):
    path, model = _teacher(tmp_path)
    plan = resolve(_config(tiny_corpus, tmp_path / "r", strategy="remixit", teacher=str(path)))
    c = plan.config
    strategy = train.make_strategy(plan, torch.device("cpu"))
    noisy = 0.05 * torch.randn(6, 8000)
    speech, noise = strategy.targets(noisy, step=3)
    with torch.no_grad():
        est = model.eval()(noisy)
    torch.testing.assert_close(speech, est[:, 0])
    perm = strategies.derangement(6, c.seed, 3, "cpu")
    assert sorted(perm.tolist()) == list(range(6)) and all(perm[i] != i for i in range(6))
    torch.testing.assert_close(noise, est[:, 1:].sum(1)[perm])
    assert not torch.equal(perm, strategies.derangement(6, c.seed, 4, "cpu"))
    for text, steps in (("step", 1), ("epoch", 7), ("3 epochs", 21), ("50 steps", 50)):
        assert interval_steps(text, 7) == steps
    with pytest.raises(ValueError, match="teacher_every"):
        interval_steps("weekly", 7)


def test_remixit_end_to_end_loss_falls_and_resumes(tiny_corpus, tmp_path):
    teacher = tmp_path / "teacher"
    train.train(_config(tiny_corpus, teacher, max_steps=60, valid_every=60), progress=False)
    kw = dict(strategy="remixit", teacher=str(teacher), max_steps=120, valid_every=1000,
              teacher_every="10 steps", lr=3e-3, select="none")  # no step-0 validation
    whole = train.train(_config(tiny_corpus, tmp_path / "a", **kw), progress=False)
    assert whole.step == 120 and whole.bad_steps == 0
    entries = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text()
               .splitlines()]
    losses = [e["loss"] for e in entries if "loss" in e]
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.5  # the RemixIT loss falls
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["strategy"] == "remixit" and config["preset"] == "teacher"

    timer = threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    part = train.train(_config(tiny_corpus, tmp_path / "b", **kw), progress=False)
    timer.cancel()
    assert part.stopped == "SIGTERM" and 0 < part.step < 120
    assert "teacher" in models.load_checkpoint(tmp_path / "b" / "last.pt")["strategy_state"]
    assert train.train(_config(tiny_corpus, tmp_path / "b", **kw), progress=False).step \
        == 120
    a, b = (models.load_checkpoint(tmp_path / x / "last.pt") for x in ("a", "b"))
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0)
    for key in a["strategy_state"]["teacher"]:
        torch.testing.assert_close(a["strategy_state"]["teacher"][key],
                                   b["strategy_state"]["teacher"][key], rtol=0, atol=0)


def test_remixit_with_the_time_domain_family(tiny_corpus, tmp_path):
    path, _ = _teacher(tmp_path, name="tdcn")
    plan = resolve(_config(tiny_corpus, tmp_path / "r", strategy="remixit", teacher=str(path)))
    assert plan.config.model == "tdcn" and plan.config.n_sources == 3
    strategy = train.make_strategy(plan, torch.device("cpu"))
    student = models.build(plan.model_name, plan.model_args)
    strategy.start(student, None, epoch_steps=5)
    loss = strategy.loss(student, 0.05 * torch.randn(3, 1, 8000), step=0)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None for p in strategy.teacher.parameters())


def test_remixit_config_errors(tiny_corpus, tmp_path):
    path, _ = _teacher(tmp_path)
    for kw, message in ((dict(), "needs a teacher"),
                        (dict(teacher=str(path), task="separate"), "for speech enhancement"),
                        (dict(teacher=str(path), teacher_update="sometimes"), "ema, replace"),
                        (dict(teacher=str(path), teacher_every="often"), "teacher_every"),
                        (dict(teacher=str(tmp_path / "none.pt")), "none.pt"),
                        (dict(teacher=str(path), augment=True), "takes its targets"),
                        (dict(teacher=str(path), speech="s", valid=None,  # and no --noise
                              data=str(tiny_corpus / "train" / "noisy")), "--speech is for"),
                        (dict(teacher=str(path), noise="pauses"), "needs --init")):
        with pytest.raises((ValueError, models.CheckpointError), match=message):
            resolved(_config(tiny_corpus, tmp_path / "r", strategy="remixit", **kw))


def test_remixit_beside_clean_speech_adds_the_supervised_loss_of_the_pairs(tiny_corpus,
                                                                           tmp_path):
    """batch [recording, noisy, clean]: the RemixIT loss of the recordings plus the
    supervised loss of the pairs, each computed on its own by the plain strategies."""
    path, _ = _teacher(tmp_path)
    plan = resolve(_config(tiny_corpus, tmp_path / "r", strategy="remixit", teacher=str(path)))
    strategy = train.make_strategy(plan, torch.device("cpu"))
    student = models.build(plan.model_name, plan.model_args).eval()  # no dropout
    strategy.start(student, None, epoch_steps=10)
    with torch.no_grad():
        for p in student.parameters():  # a student that is no longer its teacher
            p.add_(0.01 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    clean = 0.05 * torch.randn(4, 8000, generator=g)
    noisy = clean + 0.05 * torch.randn(4, 8000, generator=g)
    recording = 0.05 * torch.randn(4, 1, 8000, generator=g)
    joint = strategy.loss(student, torch.cat([recording, torch.stack([noisy, clean], 1)], 1), 5)
    alone = strategy.loss(student, recording, 5)
    supervised = strategies.Supervised().loss(student, torch.stack([noisy, clean], 1), 5)
    torch.testing.assert_close(joint, alone + supervised, rtol=1e-4, atol=1e-4)
    assert abs(supervised.item()) > 1.0  # a term that matters


def test_adapt_remixit_with_speech_trains_on_recordings_and_speech_in_their_pauses(
        tiny_corpus, tmp_path):
    """`wildmix adapt --speech DIR` (RemixIT, the default): each example is a recording for
    RemixIT over clean speech mixed with the pauses the start model finds in the
    recordings; the speech is augmented."""
    from wildmix.config import ADAPT_LR, adapt_config

    out = tmp_path / "run"
    c = adapt_config(str(tiny_corpus / "train" / "noisy"), str(out),
                     speech=str(tiny_corpus / "valid" / "clean"), max_steps=3,
                     max_minutes=None)
    assert (c.strategy, c.teacher, c.noise, c.augment, c.lr) == (
        "remixit", "default", "pauses", True, ADAPT_LR["remixit"])
    assert train.train(c, progress=False).step == 3
    assert (out / "pause-noise" / ".complete").exists()
    dataset, _, noise, _ = train._train_set(resolve(c).config, 4)
    assert isinstance(dataset, train.wdata.JointDataset) and len(dataset) == 4
    item = dataset[2]
    assert item.shape == (3, int(c.segment_seconds * 16000))
    recordings, pairs = dataset.datasets
    assert torch.equal(item[:1], recordings[2]) and torch.equal(item[1:], pairs[2])
    assert {n.path for n in pairs.noise} == {n.path for n in noise}
    assert all("/valid/clean/" in s.path for s in pairs.recordings)
    assert not torch.equal(item[0], item[1])  # not the same draw
    plain = resolve(adapt_config(c.data, str(tmp_path / "p"))).config
    assert (plain.speech, plain.noise, plain.augment) == (None, None, False)


def resolved(c):
    """The config after resolve(): every default filled in."""
    return resolve(c).config


def test_lr_follows_whichever_budget_ends_first(tiny_corpus, tmp_path, monkeypatch):
    peak = 1e-3
    by_steps = [train.lr_at(s, 0.0, peak, 10, 110) for s in range(0, 111, 10)]
    assert by_steps[0] == pytest.approx(peak / 10) and by_steps[1] == pytest.approx(peak)
    assert by_steps[-1] == pytest.approx(0.05 * peak)
    assert all(a >= b for a, b in zip(by_steps[1:], by_steps[2:], strict=False))
    # the time budget ends first: half the time gone is half the cosine, whatever the step
    assert train.lr_at(20, 30.0, peak, 10, 10**6, 60.0) == pytest.approx(0.525 * peak)
    assert train.lr_at(20, 90.0, peak, 10, 10**6, 60.0) == pytest.approx(0.05 * peak)
    assert train.lr_at(110, 1.0, peak, 10, 110, 60.0) == pytest.approx(0.05 * peak)
    # a time-bounded run decays: its last logged rate is near the floor. Its clock moves
    # 20 ms at every reading, so that a loaded machine cannot starve the run of steps
    clock = iter(np.arange(0.0, 1e6, 0.02))
    monkeypatch.setattr(train.time, "perf_counter", lambda: float(next(clock)))
    summary = train.train(_config(tiny_corpus, tmp_path / "t", max_steps=10**6, log_every=5,
                                  warmup_steps=5, max_minutes=0.1, valid_every=10**6),
                          progress=False)
    assert summary.stopped == "time budget"
    rates = [json.loads(line)["lr"] for line in (tmp_path / "t" / "log.jsonl").read_text()
             .splitlines() if "lr" in json.loads(line)]
    assert len(rates) > 3 and rates[-1] < 0.15 * rates[1]


def test_hold_back_splits_recordings_without_overlap():
    clips = [object() for _ in range(95)]
    kept, held = train.hold_back(clips, most=40)
    assert len(held) == 9 and len(kept) == 86  # a tenth at most
    assert not {id(x) for x in held} & {id(x) for x in kept}
    assert {id(x) for x in held + kept} == {id(x) for x in clips}
    assert train.hold_back(clips, most=4)[1] == clips[::23][:4]
    assert train.hold_back(clips[:9], most=40) == (clips[:9], [])


def test_label_free_selection_by_dnsmos_on_held_back_recordings(tiny_corpus, tmp_path):
    from wildmix import mos

    if not mos.available():
        pytest.skip("the mos extra is not installed")
    out = tmp_path / "run"
    c = _config(tiny_corpus, out, data=str(tiny_corpus / "train" / "noisy"),
                noise=str(tiny_corpus / "train" / "noise"), valid=None, select="dnsmos",
                max_steps=20, valid_every=10, valid_files=2)
    summary = train.train(c, progress=False)
    entries = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    scores = [e for e in entries if "valid_dnsmos_ovr" in e]
    assert len(scores) == 2 and all(1 <= e["valid_dnsmos_ovr"] <= 5 for e in scores)
    assert summary.best_score == max(e["valid_dnsmos_ovr"] for e in scores)
    assert json.loads((out / "config.json").read_text())["select"] == "dnsmos"
    # with a paired valid set: both scores logged, DNSMOS chooses
    c = _config(tiny_corpus, tmp_path / "paired", select="dnsmos", max_steps=10,
                valid_every=10, valid_files=2, strategy="supervised")
    train.train(c, progress=False)
    entry = [json.loads(line) for line in (tmp_path / "paired" / "log.jsonl").read_text()
             .splitlines() if "valid_sisnri" in line][-1]
    assert "valid_dnsmos_ovr" in entry


def test_without_the_mos_extra_validation_scores_sisnri_and_chooses_by_it(tiny_corpus, tmp_path,
                                                                          monkeypatch, caplog):
    """The 'eval'-only install: DNSMOS is neither computed nor asked for; best.pt is the
    validation with the highest SI-SNRi (issue 31: training stopped at its first validation)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "speechmos" else real(name, *a))
    caplog.set_level("INFO", logger="wildmix")
    out = tmp_path / "run"
    summary = train.train(_config(tiny_corpus, out, max_steps=30, valid_every=10),
                          progress=False)
    valid = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()
             if "valid_sisnri" in line]
    assert len(valid) == 3 and not any(k.startswith("valid_dnsmos") for e in valid for k in e)
    best = max(valid, key=lambda e: e["valid_sisnri"])
    assert summary.best_score == best["valid_sisnri"]
    assert models.load_checkpoint(out / "best.pt")["step"] == best["step"]
    said = [r.getMessage() for r in caplog.records if "validation computes" in r.getMessage()]
    assert len(said) == 1 and "valid_sisnri" in said[0] and "dnsmos" not in said[0]
    with pytest.raises(MissingExtra, match="'mos'"):  # asked for: refused before any work
        resolve(_config(tiny_corpus, tmp_path / "never", select="dnsmos"))


def test_selection_errors(tiny_corpus, tmp_path):
    for kw, message in ((dict(select="sisnri", valid=str(tmp_path)), "paired --valid"),
                        (dict(select="mixit", strategy="supervised"), "--strategy mixit"),
                        (dict(select="best"), "select must be one of")):
        with pytest.raises(ValueError, match=message):
            resolve(_config(tiny_corpus, tmp_path / "r", **kw))
    assert resolve(_config(tiny_corpus, tmp_path / "r")).config.select == "sisnri"
    assert resolve(_config(tiny_corpus, tmp_path / "r", valid=None,
                           data=str(tiny_corpus / "train" / "noisy"),
                           noise=str(tiny_corpus / "train" / "noise"))).config.select == "none"


def test_mixit_with_the_teachers_noise_estimates(tiny_corpus, tmp_path):
    """--noise teacher: the init model's noise estimate of every recording becomes a
    noise-only clip (outputs 1..M-1 summed, checked against the model itself)."""
    import soundfile as sf

    from wildmix import audio

    path, model = _teacher(tmp_path)
    recordings = tiny_corpus / "train" / "noisy"
    out = tmp_path / "run"
    c = _config(tiny_corpus, out, data=str(recordings), valid=None, strategy="mixit",
                noise="teacher", init=str(path), max_steps=6, valid_every=10**6)
    assert train.train(c, progress=False).step == 6
    clips = sorted(audio.find_audio(recordings))
    written = sorted((out / "teacher-noise").glob("*.wav"))
    assert len(written) == len(clips) and (out / "teacher-noise" / ".complete").exists()
    first = sorted(train.wdata.index_folder(recordings).clips, key=lambda x: x.path)[0]
    x = audio.read(first.path, 16000)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)[None])[0, 1:].sum(0).numpy()
    index = [i for i, clip in enumerate(train.wdata.index_folder(recordings).clips)
             if clip.path == first.path][0]
    got, _ = sf.read(out / "teacher-noise" / f"{index:05d}.wav", dtype="float32")
    np.testing.assert_allclose(got, expected, atol=1e-4)
    with pytest.raises(ValueError, match="needs --init"):
        resolve(_config(tiny_corpus, tmp_path / "r", noise="teacher"))


def test_mixit_with_the_pauses_the_start_model_hears(tiny_corpus, tmp_path):
    """--noise pauses: the stretches where the shipped model hears no speech, joined and
    looped to a training segment; measured against the clean speech, they hold noise."""
    from wildmix import audio
    from wildmix.enhance import Enhancer

    recordings = tiny_corpus / "train" / "noisy"
    out = tmp_path / "run"
    c = _config(tiny_corpus, out, data=str(recordings), valid=None, strategy="mixit",
                noise="pauses", init="default", max_steps=2, valid_every=10**6)
    assert train.train(c, progress=False).step == 2
    written = sorted((out / "pause-noise").glob("*.wav"))
    clips = train.wdata.index_folder(recordings).clips
    assert len(written) >= len(clips) // 2 and (out / "pause-noise" / ".complete").exists()
    speech = noise = 0.0
    for file in written:
        clip = clips[int(file.stem)]
        x = audio.read(clip.path)
        clean = audio.read(tiny_corpus / "train" / "clean" / os.path.basename(clip.path))
        y = audio.read(file)
        assert len(y) >= c.segment_seconds * clip.sample_rate
        # the clip is the recording's pauses: the mask of the model's own speech estimate
        raw = Enhancer.default(atten_lim_db=math.inf)  # the model's own outputs
        mask = train.wdata.pauses(raw.separate(x, clip.sample_rate)[0], clip.sample_rate)
        joined = train.wdata.join_stretches(x, mask, clip.sample_rate)
        np.testing.assert_allclose(y[:len(joined)], joined, atol=1e-4)
        speech += float(np.sum(clean[mask] ** 2))
        noise += float(np.sum((x - clean)[mask] ** 2))
    assert 10 * np.log10(speech / noise) < -20  # the pauses hold noise, hardly any speech
    with pytest.raises(ValueError, match="needs --init"):
        resolve(_config(tiny_corpus, tmp_path / "r", noise="pauses"))


def test_mixit_overlap_penalty_breaks_the_tie_that_the_remix_cannot_see():
    from wildmix.mixit import enhancement_constraint

    t = torch.arange(16000) / 16000
    speech, noise, other = (torch.sin(2 * math.pi * hz * t) for hz in (500.0, 3000.0, 6000.0))
    batch = torch.stack([speech + noise, other])[None]  # noisy recording, noise-only clip
    kept = torch.stack([speech, noise, other])[None]  # the speech in output 0
    leaked = torch.stack([0.7 * speech, 0.3 * speech + noise, other])[None]  # 30% leaked
    plain = strategies.MixIT(allowed=enhancement_constraint(3))
    penalised = strategies.MixIT(allowed=enhancement_constraint(3), overlap=1.0)
    loss = {name: [s.loss(lambda x, e=est: e, batch, 2000).item() for s in (plain, penalised)]
            for name, est in (("kept", kept), ("leaked", leaked))}
    assert loss["kept"][0] == pytest.approx(loss["leaked"][0], abs=1e-4)  # the remix is blind
    # the overlap penalty is not: (0.7 * 0.3) / sqrt(0.7^2 (0.3^2 + 1)) for output 1, 0 for 2
    expected = 0.21 / (0.7 * 1.09 ** 0.5) / 2
    assert loss["leaked"][1] - loss["kept"][1] == pytest.approx(expected, abs=2e-3)
    # off for the first 1000 steps, then half the weight at 1500
    at = [penalised.loss(lambda x: leaked, batch, step).item() for step in (0, 1000, 1500)]
    assert at[0] == at[1] == pytest.approx(loss["leaked"][0])
    assert at[2] - at[0] == pytest.approx(expected / 2, abs=1e-3)
    with pytest.raises(ValueError, match="--overlap is for MixIT"):
        resolve(train.TrainConfig(data="d", strategy="supervised", clean="c", overlap=1.0))
    with pytest.raises(ValueError, match="--overlap must be a weight >= 0"):
        resolve(train.TrainConfig(data="d", noise="n", overlap=-0.5))
    # on by default for MixIT enhancement only
    default = {kw.get("task", kw.get("strategy")): resolve(train.TrainConfig(data="d", **kw))
               .config.overlap for kw in ({"noise": "n"}, {"task": "separate"},
                                          {"strategy": "supervised", "clean": "c"})}
    assert default == {None: 30.0, "separate": 0.0, "supervised": 0.0}
    # wildmix adapt: the same default for MixIT, 0 turns it off, RemixIT refuses it
    from wildmix.config import adapt_config

    adapted = [resolve(adapt_config("d", "o", start=None, strategy="mixit", noise="n",
                                    overlap=w)).config.overlap for w in (None, 0.0)]
    assert adapted == [30.0, 0.0]
    with pytest.raises(ValueError, match="--overlap is for MixIT"):
        resolve(adapt_config("d", "o", strategy="remixit", overlap=1.0))


def test_adapt_learning_rate_defaults_per_strategy_and_yields_to_the_flag():
    from wildmix.config import ADAPT_LR, adapt_config

    remixit = resolve(adapt_config("d", "o")).config
    mixit = resolve(adapt_config("d", "o", strategy="mixit", noise="n")).config
    assert (remixit.lr, mixit.lr) == (ADAPT_LR["remixit"], 5e-4) and remixit.lr < 5e-4
    assert resolve(adapt_config("d", "o", lr=3e-4)).config.lr == 3e-4
    supervised = resolve(adapt_config("d", "o", strategy="supervised", speech="s")).config
    assert (supervised.lr, supervised.noise, supervised.speech, supervised.init,
            supervised.augment) == (ADAPT_LR["supervised"], "pauses", "s", "default", True)
    with pytest.raises(ValueError, match="needs clean speech of any voices: --speech"):
        adapt_config("d", "o", strategy="supervised")


def test_adapt_help_states_each_strategys_learning_rate(capsys):
    with pytest.raises(SystemExit):
        main(["adapt", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "1e-4 for RemixIT, 5e-5 for supervised, 5e-4 for MixIT" in text


def test_mixit_leakage_penalty_adds_the_noise_outputs_energy_in_the_noisy_recording():
    from wildmix.mixit import enhancement_constraint, mixit_loss

    g = torch.Generator().manual_seed(0)
    batch = torch.randn(3, 2, 800, generator=g)
    torch.manual_seed(0)  # the net's weights: not whatever earlier tests left in the RNG
    net = torch.nn.Conv1d(1, 3, 5, padding=2)
    model = lambda x: net(x[:, None])  # noqa: E731  (B, T) -> (B, 3, T)
    allowed = enhancement_constraint(3)
    plain = strategies.MixIT(allowed=allowed).loss(model, batch, 0)
    penalised = strategies.MixIT(allowed=allowed, leakage=2.0).loss(model, batch, 0)
    with torch.no_grad():
        est = model(batch.sum(1))
        mixing = mixit_loss(batch, est, allowed=allowed).mixing
        given = (mixing[:, 0, 1:, None] * est[:, 1:]).sum(1)  # noise outputs in recording 0
        ratio = given.pow(2).sum(-1) / batch[:, 0].pow(2).sum(-1)
    assert ratio.min() > 0  # some noise output went to the recording
    torch.testing.assert_close(penalised - plain, 2.0 * ratio.mean())
    with pytest.raises(ValueError, match="--leakage is for MixIT enhancement"):
        resolve(train.TrainConfig(data="d", strategy="supervised", clean="c", leakage=1.0))
    for name, bad in (("leakage", -1.0), ("sparsity", float("nan"))):
        with pytest.raises(ValueError, match=f"--{name} must be a weight >= 0"):
            resolve(train.TrainConfig(data="d", noise="n", **{name: bad}))


def test_supervised_on_clean_speech_mixed_with_noise_from_the_recordings(tiny_corpus, tmp_path):
    """--supervised --speech DIR --noise pauses: clean speech of other voices mixed on the fly
    with the noise that the --init model's pauses find in --data (no reference of --data)."""
    out = tmp_path / "run"
    c = _config(tiny_corpus, out, data=str(tiny_corpus / "train" / "noisy"), valid=None,
                strategy="supervised", speech=str(tiny_corpus / "valid" / "clean"),
                noise="pauses", init="default", max_steps=3, valid_every=10**6)
    assert train.train(c, progress=False).step == 3
    assert (out / "pause-noise" / ".complete").exists()
    dataset, _, noise, _ = train._train_set(resolve(c).config, 4)
    assert isinstance(dataset, train.wdata.SpeechNoiseDataset)
    assert {n.path for n in dataset.noise} == {n.path for n in noise}
    assert all("/valid/clean/" in s.path for s in dataset.recordings)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(train.wdata.DataError, match="no audio files found in"):
        train.train(_config(tiny_corpus, tmp_path / "r2", data=c.data, valid=None,
                            strategy="supervised", speech=str(empty), noise="pauses",
                            init="default", max_steps=3), progress=False)
    assert not (tmp_path / "r2" / "pause-noise").exists()  # it failed before the search
    with pytest.raises(ValueError, match="--speech is for enhancement, supervised or beside"):
        resolve(_config(tiny_corpus, tmp_path / "r", strategy="supervised",
                        speech=str(tiny_corpus / "valid" / "clean"), noise=None,
                        data=str(tiny_corpus / "train" / "noisy"), valid=None))


def test_sparsity_penalty_waits_for_its_start_then_ramps_to_its_weight():
    """MixIT with --sparsity-start 100: the loss is plain MixIT up to step 100, adds half the
    weighted L1/L2 penalty at step 150 and all of it from step 200."""
    torch.manual_seed(0)
    mixtures = torch.randn(2, 2, 800)
    net = torch.nn.Linear(800, 4 * 800)

    def model(x):
        return net(x).reshape(len(x), 4, 800)

    plain = strategies.MixIT(search="exact")
    delayed = strategies.MixIT(search="exact", sparsity=3.0, sparsity_start=100)
    base = plain.loss(model, mixtures, 0).item()
    penalty = 3.0 * strategies.losses.sparsity(model(mixtures.sum(1)).float()).mean().item()
    for step, share in ((0, 0.0), (100, 0.0), (150, 0.5), (200, 1.0), (5000, 1.0)):
        got = delayed.loss(model, mixtures, step).item()
        assert got == pytest.approx(base + share * penalty, rel=1e-5, abs=1e-5)
    assert strategies.MixIT(sparsity=3.0).loss(model, mixtures, 0).item() == pytest.approx(
        base + penalty, rel=1e-5, abs=1e-5)  # sparsity_start 0: full weight at once
    with pytest.raises(ValueError, match="--sparsity-start must be a step count"):
        resolve(train.TrainConfig(data="d", out="o", sparsity_start=-1))
