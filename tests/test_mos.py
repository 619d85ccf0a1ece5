"""DNSMOS P.835 from speechmos' ONNX file: clean speech must score above noisy speech."""

from pathlib import Path

import numpy as np
import pytest

from wildmix import audio, mos

TEST_AUDIO = Path(__file__).parent / "data"
pytestmark = pytest.mark.skipif(not mos.available(),
                                reason="the mos extra is not installed (make install)")


def test_clean_speech_scores_above_the_same_speech_in_noise():
    rng = np.random.default_rng(0)
    clean_scores, noisy_scores = [], []
    for path in sorted((TEST_AUDIO / "speech").rglob("*.flac"))[:6]:
        clean = audio.read(path, 16000)
        noise = rng.standard_normal(len(clean)).astype(np.float32)
        noisy = clean + noise * np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2))  # 0 dB
        clean_scores.append(mos.dnsmos(clean, 16000))
        noisy_scores.append(mos.dnsmos(noisy, 16000))
    for m in ("dnsmos_bak", "dnsmos_ovr"):  # on every file, by a margin
        assert all(c[m] > n[m] + 0.5 for c, n in zip(clean_scores, noisy_scores,
                                                      strict=True)), m
    assert all(1 <= s[m] <= 5 for s in clean_scores + noisy_scores for m in mos.METRICS)


def test_any_rate_and_length():
    clean = audio.read(sorted((TEST_AUDIO / "speech").rglob("*.flac"))[0], 16000)
    at_16k = mos.dnsmos(clean, 16000)
    at_48k = mos.dnsmos(audio.resample(clean, 16000, 48000), 48000)
    assert all(abs(at_16k[m] - at_48k[m]) < 0.05 for m in mos.METRICS)
    long = np.tile(clean, 5)  # about 15 s: several 9 s windows, averaged
    assert all(1 <= v <= 5 for v in mos.dnsmos(long, 16000).values())
    with pytest.raises(ValueError, match="empty"):
        mos.dnsmos(np.zeros(0, np.float32), 16000)
