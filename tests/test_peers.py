"""NSNet2 and RNNoise as baselines: delay measured and compensated, quality, CLI."""

import numpy as np
import pytest

from wildmix import audio, peers
from wildmix.cli import main
from wildmix.evaluate import si_snr

READY = peers.available()
needs_peers = pytest.mark.skipif(not all(READY.values()),
                                 reason="the peers extra is not installed (make install)")


def test_measured_delay_of_a_known_delay():
    for lag in (0, 37, 480, -12):
        def shift(x, lag=lag):
            return np.roll(x, lag) * 0.5
        assert peers.measured_delay(shift, 16000) == lag


@needs_peers
@pytest.mark.parametrize("name", ["nsnet2", "rnnoise"])
def test_peer_is_aligned_and_denoises(name, tiny_corpus):
    method = getattr(peers, name)
    # compensated: no delay left, at 16 kHz and at a rate the system does not run at
    for rate in (16000, 44100):
        assert abs(peers.measured_delay(lambda x, r=rate: method(x, r), rate)) <= 1
    gains = []
    for noisy_path in sorted((tiny_corpus / "test" / "noisy").iterdir()):
        noisy = audio.read(noisy_path)
        clean = audio.read(tiny_corpus / "test" / "clean" / noisy_path.name)
        out = method(noisy, 16000)
        assert out.shape == noisy.shape and np.isfinite(out).all()
        gains.append(si_snr(out, clean) - si_snr(noisy, clean))
    assert np.mean(gains) > 1.0, gains  # real speech in real noise: both clearly help


@needs_peers
def test_evaluate_with_peers_and_without_the_extra(tiny_corpus, tmp_path, capsys, monkeypatch):
    rc = main(["evaluate", "--data", str(tiny_corpus / "test"), "--baseline",
               "noisy,nsnet2,rnnoise", "--metrics", "si_snri", "--examples", "0", "--out",
               str(tmp_path / "r"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "| nsnet2 |" in out and "| rnnoise |" in out
    monkeypatch.setattr(peers, "available", lambda: {"nsnet2": False, "rnnoise": True})
    rc = main(["evaluate", "--data", str(tiny_corpus / "test"), "--baseline", "nsnet2",
               "--out", str(tmp_path / "r2"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "wildmix[peers]" in err
