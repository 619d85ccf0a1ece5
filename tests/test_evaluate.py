import numpy as np
import pytest
import soundfile as sf

from wildmix import evaluate, mos
from wildmix.evaluate import score_folder, si_snr


def _paired(root, snr_db, n=16000):
    rng = np.random.default_rng(0)
    clean = rng.standard_normal(n)
    clean -= clean.mean()
    noise = rng.standard_normal(n)
    noise -= noise.mean()
    noise -= (noise @ clean) / (clean @ clean) * clean  # orthogonal: SI-SNR known exactly
    noise *= np.linalg.norm(clean) / np.linalg.norm(noise) * 10 ** (-snr_db / 20)
    for sub, x in (("clean", clean), ("noisy", clean + noise)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        sf.write(root / sub / "a.wav", (0.1 * x).astype(np.float32), 16000, subtype="FLOAT")
    return 0.1 * clean


def test_scores_against_closed_form(tmp_path):
    clean = _paired(tmp_path / "data", 4.0)
    (tmp_path / "enh").mkdir()
    sf.write(tmp_path / "enh" / "a.wav", (3 * clean).astype(np.float32), 16000,
             subtype="FLOAT")
    scores = score_folder(tmp_path / "data", tmp_path / "enh")
    assert scores.noisy[0] == pytest.approx(4.0, abs=0.05)
    assert scores.enhanced[0] > 60  # a scaled copy of the reference
    assert "improvement" in scores.summary()
    est = clean + 0.05 * np.sin(np.arange(len(clean)))
    assert si_snr(0.5 * est, clean) == pytest.approx(si_snr(est, clean), abs=1e-6)


def test_errors_name_the_file(tmp_path):
    _paired(tmp_path / "data", 0.0)
    (tmp_path / "enh").mkdir()
    with pytest.raises(ValueError, match="no output file"):
        score_folder(tmp_path / "data", tmp_path / "enh")
    sf.write(tmp_path / "enh" / "a.wav", np.zeros(100, np.float32) + 0.1, 16000)
    with pytest.raises(ValueError, match="a.wav: lengths differ"):
        score_folder(tmp_path / "data", tmp_path / "enh")


# --- metrics against known answers ----------------------------------------------------------



def test_si_snr_of_white_noise_at_known_snr():
    rng = np.random.default_rng(1)
    t = np.arange(16000 * 20) / 16000
    clean = np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 1330 * t + 1.0)
    noise = rng.standard_normal(len(t))
    for snr in (-5.0, 0.0, 10.0, 20.0):
        gain = np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) * 10 ** (-snr / 10))
        assert si_snr(clean + gain * noise, clean) == pytest.approx(snr, abs=0.05)
        assert si_snr(-7.0 * (clean + gain * noise), clean) == pytest.approx(snr, abs=0.05)


def _speech(tiny_corpus, split="test"):
    path = sorted((tiny_corpus / split / "clean").glob("*.wav"))[0]
    x, sr = sf.read(path, dtype="float32")
    return x, sr


def test_pesq_and_estoi_known_answers(tiny_corpus):
    clean, sr = _speech(tiny_corpus)
    assert sr == 16000
    assert evaluate.pesq_score(clean, clean, 16000) == pytest.approx(4.64, abs=0.01)
    assert evaluate.estoi_score(clean, clean, 16000) == pytest.approx(1.0, abs=1e-6)
    from wildmix import audio

    nb = audio.resample(clean, 16000, 8000)
    assert evaluate.pesq_score(nb, nb, 8000) == pytest.approx(4.55, abs=0.01)  # P.862.1 top
    noisy = clean + 0.05 * np.random.default_rng(0).standard_normal(len(clean)).astype(
        np.float32)
    assert 1.0 <= evaluate.pesq_score(noisy, clean, 16000) < 3.0
    assert evaluate.estoi_score(noisy, clean, 16000) < 0.9
    # other rates are resampled to 16 kHz wide band
    hi = audio.resample(clean, 16000, 22050)
    assert evaluate.pesq_score(hi, hi, 22050) == pytest.approx(4.64, abs=0.01)


def test_mean_and_confidence_interval():
    mean, half, n = evaluate.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0, None, float("nan")])
    # t(0.975, 4) = 2.7764; sample std = sqrt(2.5)
    assert (mean, n) == (3.0, 5)
    assert half == pytest.approx(2.7764 * np.sqrt(2.5) / np.sqrt(5), abs=1e-3)
    assert evaluate.mean_ci([])[2] == 0 and np.isnan(evaluate.mean_ci([2.0])[1])


# --- the evaluation ------------------------------------------------------------------------


def _copy_pairs(tiny_corpus, root, n=3):
    import shutil

    for sub in ("noisy", "clean"):
        (root / sub).mkdir(parents=True)
        for p in sorted((tiny_corpus / "test" / sub).glob("*.wav"))[:n]:
            shutil.copy(p, root / sub / p.name)
    return sorted(p.name for p in (root / "noisy").glob("*.wav"))


def test_evaluate_scores_records_failures_and_writes_report(tiny_corpus, tmp_path):
    import json
    import re

    data = tmp_path / "data"
    names = _copy_pairs(tiny_corpus, data)
    # a pair whose clean reference is silent: PESQ must be recorded as missing, not crash
    n = len(sf.read(data / "noisy" / names[0])[0])
    sf.write(data / "clean" / "zz_silent.wav", np.zeros(n, np.float32), 16000)
    sf.write(data / "noisy" / "zz_silent.wav",
             0.01 * np.random.default_rng(0).standard_normal(n).astype(np.float32), 16000)

    def oracle(x, sr, name):
        return sf.read(data / "clean" / name, dtype="float32")[0]

    oracle.wants_name = True

    def broken(x, sr):
        raise RuntimeError("boom")

    methods = {"noisy": evaluate.BASELINES["noisy"], "oracle": oracle, "broken": broken,
               "half": lambda x, sr: 0.5 * x}
    res = evaluate.evaluate(data, methods, keep_outputs=2, progress=False)
    s = res.summary()
    assert s["noisy"]["si_snri"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert s["half"]["si_snri"]["mean"] == pytest.approx(0.0, abs=1e-4)  # scale-invariant
    assert s["half"]["si_snr"]["mean"] == pytest.approx(s["noisy"]["si_snr"]["mean"], abs=1e-4)
    assert s["oracle"]["pesq"]["mean"] == pytest.approx(4.64, abs=0.01)
    assert s["oracle"]["estoi"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert s["oracle"]["si_snr"]["mean"] > 60
    assert s["broken"]["pesq"]["n"] == 0 and s["broken"]["pesq"]["missing"] == 4
    silent = [r for r in res.rows if r["file"] == "zz_silent.wav" and r["method"] == "noisy"]
    assert "silent reference" in silent[0]["missing"]["pesq"]
    assert s["oracle"]["pesq"]["n"] == 3 and s["oracle"]["pesq"]["missing"] == 1

    paths = res.save(tmp_path / "report", examples=2)
    saved = json.loads(paths["json"].read_text())  # valid JSON: no NaN
    assert saved["summary"]["broken"]["pesq"]["mean"] is None
    assert len(saved["files"]) == 4 * len(methods)
    table = paths["markdown"].read_text()
    assert "| oracle |" in table and "4.64" in table
    page = paths["html"].read_text()
    links = re.findall(r"src='([^']+)'", page)
    assert sum(link.endswith(".png") for link in links) == 2
    assert sum(link.endswith(".wav") for link in links) >= 2 * 4
    for link in links:
        assert not link.startswith(("http", "/")), link  # offline, relocatable
        assert (tmp_path / "report" / link).is_file(), link
    assert oct((tmp_path / "report" / "report.html").stat().st_mode & 0o777) != "0o600"


def test_nan_reference_is_recorded_as_missing(tiny_corpus, tmp_path):
    data = tmp_path / "data"
    names = _copy_pairs(tiny_corpus, data, n=1)
    clean, sr = sf.read(data / "clean" / names[0], dtype="float32")
    clean[100] = np.nan
    sf.write(data / "clean" / names[0], clean, sr, subtype="FLOAT")
    res = evaluate.evaluate(data, {"noisy": evaluate.BASELINES["noisy"]}, progress=False)
    row = res.rows[0]
    assert row["scores"] == {} and "NaN" in row["missing"]["si_snr"]
    assert res.summary()["noisy"]["si_snr"]["missing"] == 1


def test_evaluate_rejects_length_mismatch_naming_the_file(tiny_corpus, tmp_path):
    data = tmp_path / "data"
    names = _copy_pairs(tiny_corpus, data, n=2)
    x, sr = sf.read(data / "clean" / names[1])
    sf.write(data / "clean" / names[1], x[:-100], sr)
    with pytest.raises(ValueError, match=f"{names[1]}: lengths differ"):
        evaluate.evaluate(data, {"noisy": evaluate.BASELINES["noisy"]}, progress=False)


def test_spectral_gating_baselines_run(tiny_corpus, tmp_path):
    data = tmp_path / "data"
    _copy_pairs(tiny_corpus, data, n=1)
    methods = {k: evaluate.BASELINES[k] for k in ("spectral-gating",
                                                  "spectral-gating-stationary")}
    res = evaluate.evaluate(data, methods, metrics=["si_snr"], progress=False)
    assert all(np.isfinite(r["scores"]["si_snr"]) for r in res.rows)


def test_separation_msi_and_single_source(tiny_sounds):
    data = tiny_sounds / "test"

    def oracle(x, sr, name):
        refs = [sf.read(p, dtype="float32")[0]
                for p in sorted((data / "sources" / name[:-4]).glob("s*.wav"))]
        return np.stack(refs[::-1] + [np.zeros_like(x)])  # shuffled and padded

    oracle.wants_name = True
    def merged(x, sr):  # every source left in one output, the others silent
        return np.stack([x] + [np.zeros_like(x)] * 3)

    res = evaluate.evaluate(data, {"mixture": evaluate.BASELINES["noisy"], "oracle": oracle,
                                   "merged": merged}, progress=False)
    assert res.task == "separate" and res.metrics == ["msi", "1s"]
    s = res.summary()
    multi = s["oracle"]["msi"]["n"]
    single = s["oracle"]["1s"]["n"]
    assert multi >= 1 and single >= 1 and multi + single == 6
    assert s["mixture"]["msi"]["mean"] == pytest.approx(0.0, abs=1e-4)
    assert s["mixture"]["1s"]["mean"] > 60  # the mixture of one source is that source
    assert s["oracle"]["msi"]["mean"] > 60 and s["oracle"]["1s"]["mean"] > 60
    # silent outputs do not count (an all-zero one scores 0 dB SI-SNR against any source,
    # more than the input against a quiet one): the merged outputs score as the mixture
    for metric in ("msi", "1s"):
        assert s["merged"][metric]["mean"] == pytest.approx(s["mixture"][metric]["mean"],
                                                            abs=1e-4)


def test_report_of_a_file_shorter_than_one_spectrogram_frame(tmp_path):
    from wildmix import report

    short = np.sin(np.arange(160) / 3.0).astype(np.float32)  # 10 ms at 16 kHz
    report.spectrogram_png(tmp_path / "s.png", [("noisy", short), ("clean", short)], 16000)
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(not mos.available(), reason="the mos extra is not installed")
def test_unlabeled_recordings_are_scored_with_dnsmos(tiny_corpus, tmp_path, capsys):
    """A folder without clean/: DNSMOS of the input and of each method's output; an
    oracle that returns the clean speech must score above the noisy input."""
    import shutil

    from wildmix.cli import main

    recordings = tmp_path / "recordings"
    recordings.mkdir()
    names = sorted(p.name for p in (tiny_corpus / "test" / "noisy").glob("*.wav"))[:3]
    for name in names:
        shutil.copy(tiny_corpus / "test" / "noisy" / name, recordings / name)

    def oracle(x, sr, name):
        return sf.read(tiny_corpus / "test" / "clean" / name, dtype="float32")[0]

    oracle.wants_name = True
    res = evaluate.evaluate(recordings, {"noisy": evaluate.BASELINES["noisy"],
                                         "oracle": oracle}, progress=False)
    assert res.task == "unlabeled" and res.metrics == list(mos.METRICS)
    s = res.summary()
    for m in ("dnsmos_bak", "dnsmos_ovr"):
        assert s["oracle"][m]["mean"] > s["noisy"][m]["mean"] + 0.3, m
        assert s["noisy"][m]["n"] == 3
    res.save(tmp_path / "report")
    assert "DNSMOS OVR" in (tmp_path / "report" / "results.md").read_text()

    rc = main(["evaluate", "--data", str(recordings), "--baseline", "noisy", "--out",
               str(tmp_path / "cli"), "--no-progress"])
    assert rc == 0 and "DNSMOS SIG" in capsys.readouterr().out
    rc = main(["evaluate", "--data", str(recordings), "--metrics", "pesq", "--out",
               str(tmp_path / "cli"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "pesq need clean references" in err and len(err.splitlines()) == 1
