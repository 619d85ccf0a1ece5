"""MixIT search against an independent brute-force oracle."""

import itertools

import pytest
import torch

from wildmix.losses import neg_sisnr, neg_snr
from wildmix.mixit import constraint, enhancement_constraint, mixit_loss, mixture_consistency


def brute_force(mixtures, estimates, loss_fn, allowed=None):
    """Loop over every binary mixing matrix, remix the waveforms, evaluate, take the min."""
    n_batch, n_mix, _ = mixtures.shape
    n_src = estimates.shape[1]
    losses, matrices = [], []
    for b in range(n_batch):
        best, best_a = float("inf"), None
        for assign in itertools.product(range(n_mix), repeat=n_src):
            a = torch.zeros(n_mix, n_src, dtype=estimates.dtype)
            for m, n in enumerate(assign):
                a[n, m] = 1.0
            if allowed is not None:
                mask = allowed if allowed.dim() == 2 else allowed[b]
                if (a.bool() & ~mask).any():
                    continue
            value = sum(
                loss_fn(a[n] @ estimates[b], mixtures[b, n]).item() for n in range(n_mix)
            )
            if value < best:
                best, best_a = value, a
        losses.append(best)
        matrices.append(best_a)
    return torch.tensor(losses, dtype=torch.float64), torch.stack(matrices)


def _problem(seed, n_batch, n_mix, n_src, length, structured=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    sources = torch.randn(n_batch, n_src, length, generator=g, dtype=dtype)
    sources = sources * torch.rand(n_batch, n_src, 1, generator=g, dtype=dtype) * 3
    if structured:
        # mixtures are remixes of the sources plus noise: a clear, non-trivial optimum
        truth = torch.randint(0, n_mix, (n_batch, n_src), generator=g)
        a = torch.nn.functional.one_hot(truth, n_mix).permute(0, 2, 1).to(dtype)
        mixtures = a @ sources + 0.3 * torch.randn(n_batch, n_mix, length, generator=g,
                                                   dtype=dtype)
        estimates = sources + 0.5 * torch.randn(sources.shape, generator=g, dtype=dtype)
    else:
        mixtures = torch.randn(n_batch, n_mix, length, generator=g, dtype=dtype)
        estimates = sources
    return mixtures, estimates


LOSSES = {"snr": lambda e, r: neg_snr(e, r), "sisnr": neg_sisnr}


@pytest.mark.parametrize("loss", ["snr", "sisnr"])
@pytest.mark.parametrize(
    "n_mix,n_src", [(2, 2), (2, 3), (2, 4), (2, 5), (2, 6), (2, 7), (2, 8), (3, 3), (3, 4),
                    (3, 5), (3, 6)]
)
def test_exact_matches_brute_force(loss, n_mix, n_src):
    seed = 100 * n_mix + n_src
    for structured in (True, False):
        n_batch = 1 + seed % 3
        length = 50 + 37 * (seed % 5)
        x, s = _problem(seed, n_batch, n_mix, n_src, length, structured)
        result = mixit_loss(x, s, loss=loss, reduction="none")
        oracle, _ = brute_force(x.double(), s.double(), LOSSES[loss])
        torch.testing.assert_close(result.loss.double(), oracle, rtol=1e-4, atol=1e-4)
        assert result.mixing.shape == (n_batch, n_mix, n_src)
        assert torch.all(result.mixing.sum(1) == 1)


@pytest.mark.parametrize("block", [1, 7, 64])
def test_exact_scored_in_small_blocks_matches_brute_force(monkeypatch, block):
    """The candidates' scores are computed block by block (a few rows of the first half's
    assignments at a time); the best over all blocks is the brute-force optimum, whatever
    the block size, with the constraint of enhancement."""
    import wildmix.mixit

    monkeypatch.setattr(wildmix.mixit, "_SCORE_BLOCK", block)
    for seed, (n_mix, n_src) in enumerate([(2, 6), (3, 5), (2, 7)]):
        x, s = _problem(seed, 3, n_mix, n_src, 90, structured=seed % 2 == 0)
        allowed = enhancement_constraint(n_src, n_mix)
        result = mixit_loss(x, s, allowed=allowed, reduction="none")
        oracle, matrices = brute_force(x.double(), s.double(), LOSSES["snr"], allowed)
        torch.testing.assert_close(result.loss.double(), oracle, rtol=1e-4, atol=1e-4)
        assert torch.equal(result.mixing, matrices.to(result.mixing.dtype))


@pytest.mark.parametrize("loss", ["snr", "sisnr"])
def test_exact_with_constraints_matches_brute_force(loss):
    for seed, (n_mix, n_src) in enumerate([(2, 3), (2, 6), (3, 4), (3, 5)]):
        x, s = _problem(seed, 3, n_mix, n_src, 120, structured=False)
        allowed = constraint(n_mix, n_src, force={0: 0}, forbid=[(n_src - 1, 1)])
        result = mixit_loss(x, s, loss=loss, allowed=allowed, reduction="none")
        oracle, _ = brute_force(x.double(), s.double(), LOSSES[loss], allowed)
        torch.testing.assert_close(result.loss.double(), oracle, rtol=1e-4, atol=1e-4)
        assert torch.all(result.mixing[:, 0, 0] == 1)
        assert torch.all(result.mixing[:, 1, n_src - 1] == 0)
        # per-example constraints
        per_example = torch.ones(3, n_mix, n_src, dtype=torch.bool)
        per_example[1, 1:, 1] = False  # example 1: output 1 forced to mixture 0
        per_example[2, 0, 0] = False  # example 2: output 0 never in mixture 0
        result = mixit_loss(x, s, loss=loss, allowed=per_example, reduction="none")
        oracle, _ = brute_force(x.double(), s.double(), LOSSES[loss], per_example)
        torch.testing.assert_close(result.loss.double(), oracle, rtol=1e-4, atol=1e-4)
        assert result.mixing[1, 0, 1] == 1 and result.mixing[2, 0, 0] == 0


def _l1(estimate, reference):
    """A loss no Gram matrix can express: mean absolute error, (..., T) -> (...)."""
    return (estimate - reference).abs().mean(-1)


def _log_spectral(estimate, reference):
    """Log-magnitude spectral distance, (..., T) -> (...)."""
    spec = lambda x: torch.fft.rfft(x).abs().clamp_min(1e-6).log()  # noqa: E731
    return (spec(estimate) - spec(reference)).pow(2).mean(-1)


@pytest.mark.parametrize("loss_fn", [_l1, _log_spectral])
@pytest.mark.parametrize("n_mix,n_src", [(2, 2), (2, 4), (2, 7), (3, 4)])
def test_any_callable_loss_matches_brute_force(loss_fn, n_mix, n_src):
    for seed, structured in enumerate((True, False)):
        x, s = _problem(seed + 7 * n_src, 3, n_mix, n_src, 96, structured)
        allowed = constraint(n_mix, n_src, force={0: 0}) if seed else None
        result = mixit_loss(x, s, loss=loss_fn, allowed=allowed, reduction="none")
        oracle, matrices = brute_force(x.double(), s.double(), loss_fn, allowed)
        torch.testing.assert_close(result.loss.double(), oracle, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(result.mixing, matrices.float())


def test_callable_loss_has_gradients_and_equals_builtin():
    x, s = _problem(3, 2, 2, 4, 200)
    s.requires_grad_(True)
    custom = mixit_loss(x, s, loss=lambda e, r: neg_snr(e, r, snr_max=30.0))
    builtin = mixit_loss(x, s, loss="snr")
    torch.testing.assert_close(custom.loss, builtin.loss)
    torch.testing.assert_close(custom.mixing, builtin.mixing)
    custom.loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    efficient = mixit_loss(x, s, loss=_l1, search="efficient")
    assert torch.isfinite(efficient.loss)


def test_enhancement_constraint_forces_speech_into_noisy_mixture():
    # output 0 matches the noise-only mixture, yet must be assigned to mixture 0
    noise = torch.randn(1, 1, 400)
    speech = torch.randn(1, 1, 400)
    x = torch.cat([speech + noise, noise], 1)
    s = torch.cat([noise, speech, torch.zeros(1, 1, 400)], 1)
    free = mixit_loss(x, s)
    assert free.mixing[0, 1, 0] == 1
    forced = mixit_loss(x, s, allowed=enhancement_constraint(3))
    assert forced.mixing[0, 0, 0] == 1
    assert forced.loss > free.loss


@pytest.mark.parametrize("loss", ["snr", "sisnr"])
@pytest.mark.parametrize("n_mix,n_src", [(2, 4), (2, 8), (3, 6), (2, 16)])
def test_efficient_exact_on_partition(loss, n_mix, n_src):
    g = torch.Generator().manual_seed(n_src)
    sources = torch.randn(4, n_src, 300, generator=g)
    truth = torch.randint(0, n_mix, (4, n_src), generator=g)
    truth[:, :n_mix] = torch.arange(n_mix)  # every mixture non-empty
    a = torch.nn.functional.one_hot(truth, n_mix).permute(0, 2, 1).float()
    x = a @ sources
    eff = mixit_loss(x, sources, loss=loss, search="efficient", reduction="none")
    exact = mixit_loss(x, sources, loss=loss, search="exact", reduction="none")
    torch.testing.assert_close(eff.mixing, a)
    torch.testing.assert_close(exact.mixing, a)
    torch.testing.assert_close(eff.loss, exact.loss)


@pytest.mark.parametrize("loss", ["snr", "sisnr"])
def test_efficient_never_below_exact(loss):
    for seed in range(20):
        n_mix, n_src = (2, 3 + seed % 6) if seed % 3 else (3, 4)
        x, s = _problem(seed, 4, n_mix, n_src, 200, structured=seed % 2 == 0)
        eff = mixit_loss(x, s, loss=loss, search="efficient", reduction="none")
        exact = mixit_loss(x, s, loss=loss, search="exact", reduction="none")
        assert torch.all(eff.loss >= exact.loss - 1e-4)


def test_efficient_large_m_and_constraint():
    x, s = _problem(0, 2, 2, 64, 500)
    result = mixit_loss(x, s, search="efficient", allowed=enhancement_constraint(64))
    assert result.mixing.shape == (2, 2, 64)
    assert torch.all(result.mixing[:, 0, 0] == 1)
    assert torch.isfinite(result.loss)


def test_gradcheck_float64():
    x, s = _problem(3, 2, 2, 4, 30, dtype=torch.float64)
    s.requires_grad_(True)
    for loss in ("snr", "sisnr"):
        for search in ("exact", "efficient"):
            assert torch.autograd.gradcheck(
                lambda est, loss=loss, search=search: mixit_loss(x, est, loss=loss,
                                                            search=search).loss, (s,)
            )


@pytest.mark.parametrize("loss", ["snr", "sisnr"])
@pytest.mark.parametrize("search", ["exact", "efficient"])
@pytest.mark.parametrize("case", ["silent_ref", "silent_out", "identical_out", "all_silent"])
def test_no_nan(loss, search, case):
    x = torch.randn(2, 2, 256)
    s = torch.randn(2, 4, 256)
    if case in ("silent_ref", "all_silent"):
        x[:, 1] = 0
    if case in ("silent_out", "all_silent"):
        s[:, 1:] = 0
    if case == "identical_out":
        s[:] = s[:, :1]
    if case == "all_silent":
        x[:] = 0
    s.requires_grad_(True)
    result = mixit_loss(x, s, loss=loss, search=search)
    result.loss.backward()
    assert torch.isfinite(result.loss)
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize(
    "x_shape,s_shape,kwargs,message",
    [
        ((2, 2, 100), (2, 4, 90), {}, "lengths differ"),
        ((2, 2, 100), (3, 4, 100), {}, "batch sizes differ"),
        ((2, 3, 100), (2, 2, 100), {}, "N=3 > M=2"),
        ((2, 100), (2, 4, 100), {}, "3 dimensions"),
        ((2, 2, 100), (4, 100), {}, "3 dimensions"),
        ((2, 1, 100), (2, 4, 100), {}, "at least 2 mixtures"),
        ((2, 2, 100), (2, 4, 100), {"search": "greedy"}, "search must be"),
        ((2, 2, 100), (2, 4, 100), {"loss": "l1"}, "loss must be"),
        ((2, 2, 100), (2, 4, 100), {"allowed": torch.ones(3, 4, dtype=torch.bool)},
         "allowed must have shape"),
        ((2, 2, 100), (2, 4, 100),
         {"allowed": constraint(2, 4, force={1: 0}, forbid=[(1, 0)])},
         "no valid mixing matrix: output 1"),
        ((2, 2, 100), (2, 24, 100), {}, "use search='efficient'"),
    ],
)
def test_bad_calls(x_shape, s_shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mixit_loss(torch.randn(x_shape), torch.randn(s_shape), **kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["mixtures", "estimates"])
def test_non_finite_input(bad, where):
    x, s = torch.randn(2, 2, 100), torch.randn(2, 4, 100)
    (x if where == "mixtures" else s)[1, 0, 7] = bad
    with pytest.raises(ValueError, match=f"{where} contain NaN or Inf"):
        mixit_loss(x, s)


def test_constraint_bad_index():
    with pytest.raises(ValueError, match="source index 5"):
        constraint(2, 4, force={5: 0})
    with pytest.raises(ValueError, match="mixture index 2"):
        constraint(2, 4, forbid=[(0, 2)])


@pytest.mark.parametrize("weights", ["uniform", "energy"])
def test_mixture_consistency(weights):
    s = torch.randn(3, 4, 200)
    s[0] = 0  # all silent: energy weights fall back to uniform
    x = torch.randn(3, 200)
    out = mixture_consistency(s, x, weights=weights)
    torch.testing.assert_close(out.sum(1), x, rtol=1e-5, atol=1e-5)
    if weights == "uniform":
        torch.testing.assert_close(out - s, ((x - s.sum(1)) / 4).unsqueeze(1).expand_as(s))
    else:
        # a silent output receives (almost) none of the residual
        s2 = torch.randn(1, 3, 200)
        s2[0, 2] = 0
        out2 = mixture_consistency(s2, torch.randn(1, 200), weights="energy")
        assert out2[0, 2].abs().max() < 1e-6
    with pytest.raises(ValueError, match="do not match"):
        mixture_consistency(s, x[:, :100])


def test_cuda_if_available():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x, s = _problem(1, 2, 2, 6, 400)
    cpu = mixit_loss(x, s, reduction="none")
    gpu = mixit_loss(x.cuda(), s.cuda(), reduction="none")
    torch.testing.assert_close(gpu.loss.cpu(), cpu.loss, rtol=1e-4, atol=1e-4)


def test_overflowing_input():
    x, s = torch.randn(2, 2, 100), torch.randn(2, 4, 100)
    s[0, 0, 3] = 1e30  # finite, but its float32 energy is not
    with pytest.raises(ValueError, match="too large"):
        mixit_loss(x, s)


@pytest.mark.parametrize("loss", ["snr", "sisnr"])
@pytest.mark.parametrize("n_ref,n_src", [(1, 3), (2, 2), (3, 4), (4, 8)])
def test_pit_matches_brute_force_over_every_assignment(loss, n_ref, n_src):
    import itertools

    from wildmix.losses import neg_sisnr, neg_snr
    from wildmix.mixit import pit_loss

    torch.manual_seed(n_ref * 10 + n_src)
    refs = torch.randn(5, n_ref, 400, dtype=torch.float64)
    est = torch.randn(5, n_src, 400, dtype=torch.float64)
    est[:, :n_ref] += 2.0 * refs[:, torch.randperm(n_ref)]  # a true match to find
    est.requires_grad_(True)
    fn = neg_snr if loss == "snr" else neg_sisnr
    result = pit_loss(refs, est, loss=loss, reduction="none")
    for b in range(5):
        best = min((sum(float(fn(est[b, p[r]].detach(), refs[b, r])) for r in range(n_ref)), p)
                   for p in itertools.permutations(range(n_src), n_ref))
        assert float(result.loss[b].detach()) == pytest.approx(best[0], abs=1e-6)
        assert result.mixing[b].argmax(-1).tolist() == list(best[1])
    assert (result.mixing.sum(-1) == 1).all() and (result.mixing.sum(-2) <= 1).all()
    result.loss.sum().backward()
    assert est.grad is not None and torch.isfinite(est.grad).all()


def test_pit_scores_silent_references_by_output_energy_against_brute_force():
    """Padding references (all zeros) score 10 log10(|s|^2 + tau |x|^2) - 10 log10(|x|^2):
    the assignment and the value equal a brute-force search written from that formula."""
    import itertools
    import math

    from wildmix.losses import neg_snr
    from wildmix.mixit import pit_loss

    torch.manual_seed(7)
    refs = torch.randn(6, 4, 300, dtype=torch.float64)
    for b, active in enumerate([1, 2, 3, 4, 1, 2]):
        refs[b, active:] = 0.0
    mix = refs.sum(1)
    est = torch.randn(6, 4, 300, dtype=torch.float64) * 0.05
    est[:, :2] += 1.5 * refs[:, [1, 0]]
    est.requires_grad_(True)
    result = pit_loss(refs, est, reduction="none", mixtures=mix)
    tau = 10 ** (-30 / 10)

    def term(e, r, x):
        if not r.abs().max():
            return 10 * math.log10(float(e.pow(2).sum()) + tau * float(x.pow(2).sum())) \
                - 10 * math.log10(float(x.pow(2).sum()))
        return float(neg_snr(e, r))

    for b in range(6):
        e = est[b].detach()
        best = min((sum(term(e[p[r]], refs[b, r], mix[b]) for r in range(4)), p)
                   for p in itertools.permutations(range(4)))
        assert float(result.loss[b].detach()) == pytest.approx(best[0], abs=1e-6)
        active = int((refs[b].abs().amax(-1) > 0).sum())  # silent refs tie among themselves
        assert result.mixing[b].argmax(-1).tolist()[:active] == list(best[1])[:active]
    result.loss.sum().backward()
    assert torch.isfinite(est.grad).all()
    # a silent reference pushes its output to silence: the floor is -snr_max
    silent = pit_loss(refs[:1, :1] * 0, torch.zeros(1, 1, 300, dtype=torch.float64),
                      mixtures=mix[:1])
    assert float(silent.loss) == pytest.approx(-30.0, abs=1e-6)
    with pytest.raises(ValueError, match="loss='snr'"):
        pit_loss(refs, est, loss="sisnr", mixtures=mix)
