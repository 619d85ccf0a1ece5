import math

import pytest
import torch

from wildmix.losses import leakage, neg_sisnr, neg_snr, overlap, sisnr, sparsity


def _noisy(snr_db: float, n: int = 16000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(n, generator=g, dtype=torch.float64)
    noise = torch.randn(n, generator=g, dtype=torch.float64)
    noise = noise - noise.mean()
    clean = clean - clean.mean()
    # make the noise orthogonal to clean so that SNR and SI-SNR are known in closed form
    noise = noise - (noise @ clean) / (clean @ clean) * clean
    noise = noise * (clean.norm() / noise.norm()) * 10 ** (-snr_db / 20)
    return clean, noise


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 12.0, 25.0])
def test_snr_closed_form(snr_db):
    clean, noise = _noisy(snr_db)
    value = -neg_snr(clean + noise, clean, snr_max=None)
    assert value.item() == pytest.approx(snr_db, abs=1e-6)
    value = -neg_sisnr(clean + noise, clean)
    assert value.item() == pytest.approx(snr_db, abs=1e-6)


def test_snr_soft_threshold_formula():
    clean, noise = _noisy(40.0)
    tau = 10 ** (-3.0)
    expected = 10 * math.log10(noise.pow(2).sum() + tau * clean.pow(2).sum()) - 10 * math.log10(
        clean.pow(2).sum()
    )
    assert neg_snr(clean + noise, clean).item() == pytest.approx(expected, abs=1e-6)
    # at most 30 dB however good the estimate
    assert neg_snr(clean, clean).item() == pytest.approx(-30.0, abs=1e-6)


def test_sisnr_scale_invariant_snr_not():
    clean, noise = _noisy(7.0)
    est = clean + noise
    assert sisnr(3.5 * est, clean).item() == pytest.approx(sisnr(est, clean).item(), abs=1e-9)
    assert sisnr(est + 2.0, clean).item() == pytest.approx(sisnr(est, clean).item(), abs=1e-9)
    assert neg_snr(3.5 * est, clean).item() != pytest.approx(neg_snr(est, clean).item(), abs=1)


def test_leading_dims():
    x = torch.randn(2, 3, 4, 100)
    assert neg_snr(x, x.flip(-1)).shape == (2, 3, 4)
    assert neg_sisnr(x, x.flip(-1)).shape == (2, 3, 4)
    assert sparsity(x).shape == (2, 3)
    with pytest.raises(ValueError, match="same shape"):
        neg_snr(x, x[..., :50])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fn", [neg_snr, neg_sisnr])
@pytest.mark.parametrize("case", ["silent_ref", "silent_est", "both"])
def test_finite_on_silence(dtype, fn, case):
    ref = torch.randn(3, 800, dtype=dtype)
    est = torch.randn(3, 800, dtype=dtype)
    if case in ("silent_ref", "both"):
        ref = torch.zeros_like(ref)
    if case in ("silent_est", "both"):
        est = torch.zeros_like(est)
    est.requires_grad_(True)
    ref.requires_grad_(True)
    value = fn(est, ref)
    value.sum().backward()
    assert torch.isfinite(value).all()
    assert torch.isfinite(est.grad).all() and torch.isfinite(ref.grad).all()


def test_sparsity_range():
    one_active = torch.zeros(4, 1000)
    one_active[1] = torch.randn(1000)
    assert sparsity(one_active).item() == pytest.approx(1.0, abs=1e-3)
    equal = torch.randn(1, 1000).repeat(4, 1)
    assert sparsity(equal).item() == pytest.approx(2.0, abs=1e-6)
    silent = torch.zeros(4, 1000, requires_grad=True)
    sparsity(silent).backward()
    assert torch.isfinite(silent.grad).all()


def test_leakage_is_the_energy_noise_outputs_give_to_mixture_0():
    g = torch.Generator().manual_seed(0)
    estimates = torch.randn(2, 4, 500, generator=g, dtype=torch.float64)
    mixture = torch.randn(2, 500, generator=g, dtype=torch.float64)
    mixing = torch.tensor([[[1, 1, 0, 1], [0, 0, 1, 0]],    # outputs 1 and 3 to mixture 0
                           [[1, 0, 0, 0], [0, 1, 1, 1]]],   # none
                          dtype=torch.float64)
    got = leakage(estimates, mixing, mixture)
    given = estimates[0, 1] + estimates[0, 3]
    assert got[0].item() == pytest.approx(float(given @ given / (mixture[0] @ mixture[0])))
    assert got[1].item() == 0.0


def _tone(hz: float, n: int = 16000, sr: int = 16000) -> torch.Tensor:
    return torch.sin(2 * math.pi * hz * torch.arange(n, dtype=torch.float64) / sr)


def test_overlap_closed_forms():
    speech, noise = _tone(500), _tone(3000)  # tones two octaves apart share (almost) no bin
    assert overlap(torch.stack([speech, noise])[None]).item() < 2e-3
    # half of output 1's energy in bins of output 0 (and all of output 0's): 1 / sqrt(2)
    both = torch.stack([speech + noise, noise])[None]
    assert overlap(both, floor=0).item() == pytest.approx(2 ** -0.5, rel=1e-3)
    y = torch.randn(4000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    copies = torch.stack([y, 0.5 * y, 2 * y, 0 * y])[None]  # scaled copies, and silence
    assert overlap(copies[:, :3], "first", floor=0).item() == pytest.approx(1.0)
    # the floor: 1e-3 of the mean energy (1 + 0.25 + 4 + 0) / 4 under each root
    f = 1e-3 * 5.25 / 4
    pair = [0.5 / (0.5 + f), 2 / (2 + f), 0.0, 1 / (1 + f), 0.0, 0.0]  # 01 02 03 12 13 23
    assert overlap(copies, "all").item() == pytest.approx(sum(pair) / 6, rel=1e-6)
    with pytest.raises(ValueError, match="pairs"):
        overlap(copies, "some")


def test_overlap_of_silence_is_zero_with_finite_gradient():
    silent = torch.zeros(2, 3, 1000, requires_grad=True)
    value = overlap(silent, "all")
    value.sum().backward()
    assert value.tolist() == [0.0, 0.0] and torch.isfinite(silent.grad).all()
