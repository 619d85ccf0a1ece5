"""Mixture invariant training: the search over mixing matrices.

MixIT (Wisdom et al., NeurIPS 2020, eq. 2) scores M estimated sources ``s`` against N
recorded mixtures ``x`` by the best remix::

    L(x, s) = min_A  sum_n  loss(x_n, (A s)_n),   A in {0,1}^(N x M), each column one-hot.

Exact search never builds the N^M remixed waveforms. For the losses of
:mod:`wildmix.losses` a candidate's score depends only on ``|x_n|^2``, ``<x_n, (A s)_n>`` and
``|(A s)_n|^2``, which follow from the Gram matrices ``S S^T`` (M x M) and ``X S^T`` (N x M).
The outputs are split in two halves ("meet in the middle"): with ``z = [u; v]`` the
indicator of the sources given to one mixture, ``z^T G z = u^T G11 u + v^T G22 v +
2 u^T G12 v``, so all N^M quadratic forms come from one matrix product between the
N^(M/2) half-assignments of each side. The search is done without gradients in float64;
the chosen matrix is then scored on the waveforms with gradients.

Efficient search (Wisdom et al., WASPAA 2021): the least-squares mixing matrix
``X S^T (S S^T)^+``, binarised by an argmax over mixtures for each source.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

import torch

from wildmix.losses import (
    neg_sisnr,
    neg_sisnr_from_stats,
    neg_snr,
    neg_snr_from_stats,
    silence_from_stats,
)
from wildmix.models.consistency import mixture_consistency  # re-exported: part of the API

__all__ = ["MixITResult", "constraint", "enhancement_constraint", "mixit_loss",
           "mixture_consistency", "pit_loss"]

MAX_CANDIDATES = 2**20  # N^M above this: use search="efficient"
_CHUNK_ELEMENTS = 2**22  # bound on one block of remixed waveforms (search for any loss)
# bound on one float64 block of candidate scores in the exact search (2 MB); 32 MB blocks
# made the M=16 step up to 2.4x slower on a 2-core CPU, as the allocator's state came and
# went (bench_mixit.py)
_SCORE_BLOCK = 2**18


class MixITResult(NamedTuple):
    loss: torch.Tensor
    """Scalar mean over the batch, or ``(B,)`` with ``reduction="none"``."""
    mixing: torch.Tensor
    """Chosen binary mixing matrices, ``(B, N, M)``, in the estimates' dtype."""


def constraint(
    n_mixtures: int,
    n_sources: int,
    force: Mapping[int, int] | None = None,
    forbid: Iterable[tuple[int, int]] = (),
) -> torch.Tensor:
    """Build an ``allowed`` mask for :func:`mixit_loss`.

    Args:
        n_mixtures: N.
        n_sources: M.
        force: ``{source: mixture}``: that output always goes to that mixture.
        forbid: ``(source, mixture)`` pairs that are never chosen.
    Returns:
        ``(N, M)`` bool, ``allowed[n, m]`` is True when output m may go to mixture n.
    """
    allowed = torch.ones(n_mixtures, n_sources, dtype=torch.bool)
    for source, mixture in (force or {}).items():
        _check_index(source, n_sources, "source")
        _check_index(mixture, n_mixtures, "mixture")
        allowed[:, source] = False
        allowed[mixture, source] = True
    for source, mixture in forbid:
        _check_index(source, n_sources, "source")
        _check_index(mixture, n_mixtures, "mixture")
        allowed[mixture, source] = False
    return allowed


def enhancement_constraint(n_sources: int, n_mixtures: int = 2) -> torch.Tensor:
    """Output 0 (speech) is forced into mixture 0 (the noisy recording); ``(N, M)`` bool."""
    return constraint(n_mixtures, n_sources, force={0: 0})


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mixit_loss(
    mixtures: torch.Tensor,
    estimates: torch.Tensor,
    loss: str | LossFn = "snr",
    search: str = "exact",
    allowed: torch.Tensor | None = None,
    snr_max: float | None = 30.0,
    reduction: str = "mean",
) -> MixITResult:
    """MixIT loss of estimated sources against the mixtures they were separated from.

    Args:
        mixtures: ``(B, N, T)`` reference mixtures; the network input is their sum.
        estimates: ``(B, M, T)`` separated sources, ``M >= N``.
        loss: ``"snr"`` / :func:`~wildmix.losses.neg_snr` (soft-thresholded at ``snr_max``)
            or ``"sisnr"`` / :func:`~wildmix.losses.neg_sisnr`, searched through their Gram
            matrices; or any other ``(estimate (..., T), reference (..., T)) -> (...)``
            function, lower is better, searched by remixing the waveforms for every
            candidate (batched, without gradients).
        search: ``"exact"`` (all N^M matrices) or ``"efficient"`` (least squares, binarised).
        allowed: optional ``(N, M)`` or ``(B, N, M)`` bool mask from :func:`constraint`.
        snr_max: threshold of the SNR loss in dB; ignored by SI-SNR.
        reduction: ``"mean"`` over the batch, or ``"none"`` for ``(B,)``.
    Returns:
        ``MixITResult(loss, mixing)``; the loss of an example is the sum over its N mixtures.
    Raises:
        ValueError: on shapes that do not fit, NaN or Inf input, or a constraint that leaves
            no valid mixing matrix.
    """
    kind = _loss_kind(loss)
    if search not in ("exact", "efficient"):
        raise ValueError(f"search must be 'exact' or 'efficient', got {search!r}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    allowed = _check_inputs(mixtures, estimates, allowed)
    n_mix, n_src = mixtures.shape[1], estimates.shape[1]
    stats = _gram(mixtures, estimates, zero_mean=search == "exact" and kind == "sisnr")
    _check_finite(mixtures, estimates, stats)
    score = _scorer(kind, snr_max)
    if search == "efficient":
        mixing = _efficient_search(stats, allowed)
    elif callable(kind):
        mixing = _remix_search(mixtures, estimates, allowed, score)
    else:
        mixing = _exact_search(stats, allowed, kind, snr_max)
    mixing = mixing.to(estimates.dtype)  # (B, N, M)
    assert mixing.shape[1:] == (n_mix, n_src)

    remixed = mixing @ estimates  # (B, N, T)
    per_mixture = score(remixed, mixtures)  # (B, N)
    per_example = per_mixture.sum(-1)  # (B,)
    return MixITResult(per_example.mean() if reduction == "mean" else per_example, mixing)


def pit_loss(
    references: torch.Tensor,
    estimates: torch.Tensor,
    loss: str = "snr",
    snr_max: float | None = 30.0,
    reduction: str = "mean",
    mixtures: torch.Tensor | None = None,
) -> MixITResult:
    """Permutation-invariant training loss: the supervised reference of MixIT.

    Each of the R references gets its own estimate (M >= R; unmatched estimates are free),
    the assignment with the lowest total loss. The R x M pairwise losses come from the same
    Gram statistics as MixIT's search (``|y_r|^2``, ``<y_r, s_m>``, ``|s_m|^2``), every
    one-to-one assignment is scored from them without gradients, and the chosen one is
    scored on the waveforms with gradients.

    Args:
        references: ``(B, R, T)`` reference sources.
        estimates: ``(B, M, T)``, ``M >= R``.
        loss: ``"snr"`` (soft-thresholded at ``snr_max``) or ``"sisnr"``.
        reduction: ``"mean"`` over the batch, or ``"none"`` for ``(B,)``.
        mixtures: ``(B, T)``, the inputs, for references that are all zeros (padding for
            mixtures of fewer sources, ``loss="snr"`` only): such a reference scores its
            estimate's energy against the mixture's, ``10 log10(|s|^2 + tau |x|^2) -
            10 log10(|x|^2)`` (Wisdom et al. 2021, FUSS), which pushes it to silence and
            has the same floor ``-snr_max`` as an active reference.
    Returns:
        ``MixITResult(loss, mixing)``: the sum over the references, and the assignment as a
        ``(B, R, M)`` matrix with one 1 per row and at most one per column.
    """
    kind = _loss_kind(loss)
    if callable(kind):
        raise ValueError("pit_loss takes loss='snr' or 'sisnr'")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    _check_inputs(references, estimates, None, least=1, what="references")
    n_ref, n_src = references.shape[1], estimates.shape[1]
    energy, cross, gram = _gram(references, estimates, zero_mean=kind == "sisnr")
    _check_finite(references, estimates, (energy, cross, gram))
    ref = energy[:, :, None]  # (B, R, 1)
    est = gram.diagonal(dim1=-2, dim2=-1)[:, None, :]  # (B, 1, M)
    if kind == "snr":
        pairs = neg_snr_from_stats(ref, (ref - 2.0 * cross + est).clamp_min(0.0), snr_max)
    else:
        pairs = neg_sisnr_from_stats(ref, est, cross)  # (B, R, M)
    inactive = _inactive(references, mixtures, kind)  # (B, R) bool, or None
    if inactive is not None:
        x_energy = mixtures.detach().double().pow(2).sum(-1)[:, None, None]  # (B, 1, 1)
        silent = silence_from_stats(est, x_energy, snr_max)  # (B, 1, M)
        pairs = torch.where(inactive[..., None], silent, pairs)
    perms = _injections(n_ref, n_src, str(estimates.device))  # (K, R)
    total = pairs[:, torch.arange(n_ref, device=perms.device), perms].sum(-1)  # (B, K)
    choice = perms[total.argmin(-1)]  # (B, R)
    mixing = torch.nn.functional.one_hot(choice, n_src).to(estimates.dtype)  # (B, R, M)
    chosen = mixing @ estimates  # (B, R, T)
    per_ref = _scorer(kind, snr_max)(chosen, references)  # (B, R)
    if inactive is not None:
        silence = silence_from_stats(chosen.pow(2).sum(-1),
                                     mixtures.pow(2).sum(-1, keepdim=True), snr_max)
        per_ref = torch.where(inactive, silence, per_ref)
    per_example = per_ref.sum(-1)  # (B,)
    return MixITResult(per_example.mean() if reduction == "mean" else per_example, mixing)


def _inactive(references: torch.Tensor, mixtures: torch.Tensor | None, kind
              ) -> torch.Tensor | None:
    """``(B, R)`` True for all-zero references, when ``mixtures (B, T)`` is given."""
    if mixtures is None:
        return None
    if kind != "snr":
        raise ValueError("silent references (mixtures=...) need loss='snr'")
    if mixtures.shape != (references.shape[0], references.shape[-1]):
        raise ValueError(f"mixtures must have shape (B, T)=({references.shape[0]}, "
                         f"{references.shape[-1]}), got {tuple(mixtures.shape)}")
    return references.detach().abs().amax(-1) == 0



@functools.lru_cache(maxsize=32)
def _injections(n_ref: int, n_src: int, device: str) -> torch.Tensor:
    """Every one-to-one assignment of ``n_ref`` references to ``n_src`` outputs, (K, R)."""
    count = math.perm(n_src, n_ref)
    if count > MAX_CANDIDATES:
        raise ValueError(f"PIT over {count} assignments (R={n_ref}, M={n_src}) is too large "
                         f"(limit {MAX_CANDIDATES})")
    return torch.tensor(list(itertools.permutations(range(n_src), n_ref)), dtype=torch.long,
                        device=device)


# --- search ---------------------------------------------------------------------------


def _gram(mixtures: torch.Tensor, estimates: torch.Tensor, zero_mean: bool):
    """Detached float64 statistics: ``|x|^2 (B, N)``, ``X S^T (B, N, M)``, ``S S^T (B, M, M)``."""
    with torch.no_grad():
        x, s = mixtures.detach(), estimates.detach()
        if zero_mean:
            x = x - x.mean(-1, keepdim=True)
            s = s - s.mean(-1, keepdim=True)
        st = s.transpose(1, 2)
        energy = x.pow(2).sum(-1).double()  # (B, N)
        cross = (x @ st).double()  # (B, N, M)
        gram = (s @ st).double()  # (B, M, M)
    return energy, cross, gram


@functools.lru_cache(maxsize=128)
def _half_candidates(choices: tuple[tuple[int, ...], ...], n_mix: int, device: str):
    """All assignments of some outputs to mixtures, each output within its own choices.

    Returns ``(assign (K, m) long, onehot (K, N, m) float64)``.
    """
    assign = torch.tensor(list(itertools.product(*choices)), dtype=torch.long, device=device)
    onehot = torch.nn.functional.one_hot(assign, n_mix).permute(0, 2, 1).double()
    return assign, onehot


def _choices(allowed: torch.Tensor) -> tuple[tuple[int, ...], ...]:
    """For each output, the mixtures it may go to in some example; checks the search size."""
    _, n_mix, n_src = allowed.shape
    choices = tuple(tuple(torch.nonzero(allowed[:, :, m].any(0)).flatten().tolist())
                    for m in range(n_src))
    n_candidates = 1
    for c in choices:
        n_candidates *= len(c)
    if n_candidates > MAX_CANDIDATES:
        raise ValueError(
            f"exact search over {n_candidates} mixing matrices (N={n_mix}, M={n_src}) is too "
            f"large (limit {MAX_CANDIDATES}); use search='efficient'"
        )
    return choices


def _remix_search(mixtures, estimates, allowed, score) -> torch.Tensor:
    """Exact search for any loss: remix the waveforms for every candidate, in chunks."""
    n_batch, n_mix, length = mixtures.shape
    n_src = estimates.shape[1]
    assign, onehot = _half_candidates(_choices(allowed), n_mix, str(estimates.device))
    cols = torch.arange(n_src, device=estimates.device)
    valid = allowed[:, assign, cols].all(-1)  # (B, K)
    candidates = onehot.to(estimates.dtype)  # (K, N, M)
    best = torch.full((n_batch,), float("inf"), dtype=torch.float64, device=estimates.device)
    best_index = torch.zeros(n_batch, dtype=torch.long, device=estimates.device)
    step = max(1, _CHUNK_ELEMENTS // (n_batch * n_mix * length))
    with torch.no_grad():
        x, s = mixtures.detach(), estimates.detach()
        for start in range(0, len(candidates), step):
            a = candidates[start:start + step]  # (k, N, M)
            remixed = torch.einsum("knm,bmt->bknt", a, s)  # (B, k, N, T)
            value = score(remixed, x[:, None].expand_as(remixed)).sum(-1).double()  # (B, k)
            value = value.masked_fill(~valid[:, start:start + step], float("inf"))
            value, index = value.min(-1)  # (B,)
            better = value < best
            best = torch.where(better, value, best)
            best_index = torch.where(better, index + start, best_index)
    return onehot[best_index]  # (B, N, M)


def _exact_search(stats, allowed, kind, snr_max) -> torch.Tensor:
    energy, cross, gram = stats  # (B, N), (B, N, M), (B, M, M)
    n_batch, n_mix, n_src = cross.shape
    device = str(cross.device)
    choices = _choices(allowed)
    h = n_src // 2
    assign_h, a_h = _half_candidates(choices[:h], n_mix, device)  # (Kh, h), (Kh, N, h)
    assign_l, a_l = _half_candidates(choices[h:], n_mix, device)  # (Kl, l), (Kl, N, l)
    k_h, k_l = a_h.shape[0], a_l.shape[0]
    # a candidate is valid for example b when each output goes to an allowed mixture
    cols_h = torch.arange(h, device=device)
    cols_l = torch.arange(h, n_src, device=device)
    valid_h = allowed[:, assign_h, cols_h].all(-1)  # (B, Kh)
    valid_l = allowed[:, assign_l, cols_l].all(-1)  # (B, Kl)

    # <x_n, (A s)_n> = cross_h + cross_l
    cross_h = torch.einsum("knm,bnm->bnk", a_h, cross[:, :, :h]).unsqueeze(-1)  # (B, N, Kh, 1)
    cross_l = torch.einsum("knm,bnm->bnk", a_l, cross[:, :, h:]).unsqueeze(-2)  # (B, N, 1, Kl)
    # |(A s)_n|^2 = u^T G11 u + v^T G22 v + 2 u^T G12 v
    quad_h = torch.einsum("knm,bmp,knp->bnk", a_h, gram[:, :h, :h], a_h).unsqueeze(-1)
    quad_l = torch.einsum("knm,bmp,knp->bnk", a_l, gram[:, h:, h:], a_l).unsqueeze(-2)
    half_h = torch.einsum("knm,bmp->bnkp", a_h, gram[:, :h, h:])  # (B, N, Kh, l)
    a_l_t = a_l.permute(1, 2, 0)  # (N, l, Kl)
    ref = energy[:, :, None, None]  # (B, N, 1, 1)

    best = torch.full((n_batch,), float("inf"), dtype=torch.float64, device=device)
    best_index = torch.zeros(n_batch, dtype=torch.long, device=device)
    step = max(1, _SCORE_BLOCK // (n_batch * n_mix * k_l))
    for start in range(0, k_h, step):
        rows = slice(start, start + step)
        est = quad_h[:, :, rows] + quad_l + 2.0 * (half_h[:, :, rows] @ a_l_t)  # (B, N, k, Kl)
        dot = cross_h[:, :, rows] + cross_l  # (B, N, k, Kl)
        if kind == "snr":
            err = (ref - 2.0 * dot + est).clamp_min(0.0)
            score = neg_snr_from_stats(ref, err, snr_max=snr_max).sum(1)  # (B, k, Kl)
        else:
            score = neg_sisnr_from_stats(ref, est, dot).sum(1)  # (B, k, Kl)
        valid = valid_h[:, rows, None] & valid_l[:, None, :]  # (B, k, Kl)
        score = score.masked_fill(~valid, float("inf")).flatten(1)  # (B, k * Kl)
        value, index = score.min(-1)  # (B,)
        better = value < best
        best = torch.where(better, value, best)
        best_index = torch.where(better, index + start * k_l, best_index)
    return torch.cat([a_h[best_index // k_l], a_l[best_index % k_l]], dim=-1)  # (B, N, M)


def _efficient_search(stats, allowed) -> torch.Tensor:
    _, cross, gram = stats  # (B, N, M), (B, M, M)
    least_squares = cross @ torch.linalg.pinv(gram, hermitian=True)  # (B, N, M)
    least_squares = least_squares.masked_fill(~allowed, float("-inf"))
    choice = least_squares.argmax(1)  # (B, M)
    return torch.nn.functional.one_hot(choice, cross.shape[1]).permute(0, 2, 1)  # (B, N, M)


# --- checks ---------------------------------------------------------------------------


def _loss_kind(loss) -> str | LossFn:
    """``"snr"`` or ``"sisnr"`` for the built-ins (Gram-matrix search); other callables as
    they are (waveform remix search)."""
    if loss in ("snr", neg_snr):
        return "snr"
    if loss in ("sisnr", neg_sisnr):
        return "sisnr"
    if callable(loss):
        return loss
    raise ValueError(f"loss must be 'snr', 'sisnr' or a function (estimate, reference) -> "
                     f"loss, got {loss!r}")


def _scorer(kind, snr_max) -> LossFn:
    if kind == "snr":
        return lambda est, ref: neg_snr(est, ref, snr_max=snr_max)
    if kind == "sisnr":
        return neg_sisnr
    return kind


def _check_index(value: int, size: int, what: str) -> None:
    if not 0 <= value < size:
        raise ValueError(f"{what} index {value} out of range 0..{size - 1}")


def _check_finite(mixtures, estimates, stats) -> None:
    """Any NaN or Inf in the inputs reaches the energies; scan the inputs only then."""
    energy, _, gram = stats
    if torch.isfinite(energy).all() and torch.isfinite(gram.diagonal(dim1=-2, dim2=-1)).all():
        return
    for name, t in (("mixtures", mixtures), ("estimates", estimates)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contain NaN or Inf")
    raise ValueError("mixtures or estimates are too large: their energy overflows "
                     f"{energy.dtype}")


def _check_inputs(mixtures, estimates, allowed, least: int = 2, what: str = "mixtures"
                  ) -> torch.Tensor:
    """Validate shapes and values; return ``allowed`` as ``(B, N, M)`` bool. ``least``:
    the fewest mixtures (or, for PIT, references) allowed."""
    for name, t in ((what, mixtures), ("estimates", estimates)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name} must have 3 dimensions (B, N|M, T), got shape "
                             f"{tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {t.dtype}")
    (b_x, n_mix, t_x), (b_s, n_src, t_s) = mixtures.shape, estimates.shape
    if b_x != b_s:
        raise ValueError(f"batch sizes differ: {what} {b_x}, estimates {b_s}")
    if t_x != t_s:
        raise ValueError(f"lengths differ: {what} {t_x} samples, estimates {t_s} samples")
    if n_mix < least:
        raise ValueError(f"MixIT needs at least 2 mixtures, got N={n_mix}")
    if n_mix > n_src:
        raise ValueError(f"more {what} than estimated sources: N={n_mix} > M={n_src}")
    if allowed is None:
        return torch.ones(b_x, n_mix, n_src, dtype=torch.bool, device=estimates.device)
    allowed = torch.as_tensor(allowed, device=estimates.device)
    if allowed.dtype != torch.bool:
        raise ValueError(f"allowed must be a bool mask, got {allowed.dtype}")
    if allowed.shape not in ((n_mix, n_src), (b_x, n_mix, n_src)):
        raise ValueError(f"allowed must have shape (N, M)=({n_mix}, {n_src}) or (B, N, M), "
                         f"got {tuple(allowed.shape)}")
    allowed = allowed.expand(b_x, n_mix, n_src)
    empty = (~allowed.any(1)).nonzero()
    if len(empty):
        b, m = empty[0].tolist()
        raise ValueError(f"constraint leaves no valid mixing matrix: output {m} of example {b} "
                         "may go to no mixture")
    return allowed
