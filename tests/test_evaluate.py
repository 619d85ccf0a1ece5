import numpy as np
import pytest
import soundfile as sf

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
    with pytest.raises(ValueError, match="no enhanced file"):
        score_folder(tmp_path / "data", tmp_path / "enh")
    sf.write(tmp_path / "enh" / "a.wav", np.zeros(100, np.float32) + 0.1, 16000)
    with pytest.raises(ValueError, match="a.wav: lengths differ"):
        score_folder(tmp_path / "data", tmp_path / "enh")
