"""Losses as plain functions.

Every waveform loss takes ``(estimate, reference)`` of shape ``(..., T)`` (leading
dimensions broadcast) and returns ``(...)``: one value per signal, in dB, lower is better.
The ``*_from_stats`` twins compute the same value from signal energies and inner
products; :mod:`wildmix.mixit` uses them to score every candidate mixing matrix from Gram
matrices without building remixed waveforms.

All functions stay finite, with finite gradients, when the reference, the estimate or both
are all zeros: each energy that enters a logarithm or a division carries ``eps``.
"""

from __future__ import annotations

import torch

EPS = 1e-8


def _db(x: torch.Tensor) -> torch.Tensor:
    return 10.0 * torch.log10(x)


def neg_snr_from_stats(
    ref_energy: torch.Tensor,
    err_energy: torch.Tensor,
    snr_max: float | None = 30.0,
    eps: float = EPS,
) -> torch.Tensor:
    """Negative soft-thresholded SNR from ``|y|^2`` and ``|y - yhat|^2`` (any equal shapes).

    ``10 log10(|y - yhat|^2 + tau |y|^2) - 10 log10(|y|^2)`` with ``tau = 10^(-snr_max/10)``
    (Wisdom et al. 2020, eq. 4). ``snr_max=None`` gives the plain negative SNR.
    """
    tau = 0.0 if snr_max is None else 10.0 ** (-snr_max / 10.0)
    return _db(err_energy + tau * ref_energy + eps) - _db(ref_energy + eps)


def silence_from_stats(
    est_energy: torch.Tensor,
    mix_energy: torch.Tensor,
    snr_max: float | None = 30.0,
    eps: float = EPS,
) -> torch.Tensor:
    """The loss of an estimate whose reference is silent, from ``|s|^2`` and the input
    mixture's ``|x|^2`` (broadcasting shapes): ``10 log10(|s|^2 + tau |x|^2) - 10 log10(|x|^2)``
    with ``tau = 10^(-snr_max/10)`` (30 dB when None), after FUSS (Wisdom et al. 2021). Its
    floor, ``-snr_max`` at ``s = 0``, is that of :func:`neg_snr`.
    """
    tau = 10.0 ** (-(30.0 if snr_max is None else snr_max) / 10.0)
    return _db(est_energy + tau * mix_energy + eps) - _db(mix_energy + eps)


def neg_snr(
    estimate: torch.Tensor,
    reference: torch.Tensor,
    snr_max: float | None = 30.0,
    eps: float = EPS,
) -> torch.Tensor:
    """Negative SNR soft-thresholded at ``snr_max`` dB, the MixIT paper's loss.

    Args:
        estimate: ``(..., T)``.
        reference: ``(..., T)``.
    Returns:
        ``(...)`` in dB; its minimum is ``-snr_max`` (reached when ``estimate == reference``).
    """
    _check_same_shape(estimate, reference)
    ref_energy = reference.pow(2).sum(-1)
    err_energy = (reference - estimate).pow(2).sum(-1)
    return neg_snr_from_stats(ref_energy, err_energy, snr_max=snr_max, eps=eps)


def neg_sisnr_from_stats(
    ref_energy: torch.Tensor,
    est_energy: torch.Tensor,
    cross: torch.Tensor,
    eps: float = EPS,
) -> torch.Tensor:
    """Negative SI-SNR from zero-mean statistics ``|y|^2``, ``|yhat|^2`` and ``<yhat, y>``.

    With ``a = <yhat, y> / |y|^2``: ``|s_target|^2 = a^2 |y|^2`` and
    ``|e|^2 = |yhat|^2 - 2 a <yhat, y> + a^2 |y|^2``.
    """
    scale = cross / (ref_energy + eps)
    target_energy = scale.pow(2) * ref_energy
    noise_energy = (est_energy - 2.0 * scale * cross + target_energy).clamp_min(0.0)
    return _db(noise_energy + eps) - _db(target_energy + eps)


def neg_sisnr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Negative scale-invariant SNR (Le Roux et al. 2019).

    Both signals are made zero-mean; ``s_target = <yhat, y> y / |y|^2``,
    ``e = yhat - s_target``, SI-SNR ``= 10 log10(|s_target|^2 / |e|^2)``.

    Args:
        estimate: ``(..., T)``.
        reference: ``(..., T)``.
    Returns:
        ``(...)`` in dB.
    """
    _check_same_shape(estimate, reference)
    estimate = estimate - estimate.mean(-1, keepdim=True)
    reference = reference - reference.mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (
        reference.pow(2).sum(-1, keepdim=True) + eps
    )
    target = scale * reference
    noise = estimate - target
    return _db(noise.pow(2).sum(-1) + eps) - _db(target.pow(2).sum(-1) + eps)


def sisnr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """SI-SNR in dB, ``(..., T) -> (...)``; higher is better."""
    return -neg_sisnr(estimate, reference, eps=eps)


def leakage(estimates: torch.Tensor, mixing: torch.Tensor, mixture: torch.Tensor,
            eps: float = EPS) -> torch.Tensor:
    """Energy that outputs 1.. give to mixture 0, over that mixture's energy.

    In MixIT for enhancement, output 0 (speech) always goes to the noisy recording, and the
    loss cannot tell whether the recording's speech is in output 0 or in a noise output
    that the remix also gives to it. This ratio breaks the tie in favour of output 0 (as a
    training penalty, weights 1 and 10 did not stop MixIT's drift: README, bench-curve).

    Args:
        estimates: ``(B, M, T)`` separated sources.
        mixing: ``(B, N, M)`` the chosen 0/1 mixing matrices.
        mixture: ``(B, T)`` mixture 0 (the noisy recording).
    Returns:
        ``(B,)``, 0 when output 0 alone explains mixture 0.
    """
    given = (mixing[:, 0, 1:, None] * estimates[:, 1:]).sum(1)  # (B, T)
    return given.pow(2).sum(-1) / (mixture.pow(2).sum(-1) + eps)


def overlap(estimates: torch.Tensor, pairs: str = "first", n_fft: int = 512,
            floor: float = 1e-3, eps: float = EPS) -> torch.Tensor:
    """Time-frequency overlap of outputs: the cosine of their STFT magnitudes,
    ``sum |Y_i| |Y_j| / sqrt(E_i E_j)`` over the bins, averaged over the pairs.

    0 for outputs that share no bin, 1 for scaled copies; it does not change when an output
    is scaled, so turning an output down does not lower it. In MixIT for enhancement the remix
    cannot tell speech in output 0 from speech that a noise output carries to the same
    recording (MixIT's drift); moving each bin into the output that dominates it lowers this
    overlap and leaves the remix unchanged. ``floor`` times the outputs' mean energy is added
    under the root, so a silent output overlaps nothing.

    Args:
        estimates: ``(B, M, T)``.
        pairs: ``"first"``: output 0 with each other output (speech against noise);
            ``"all"``: every pair ``i < j``.
    Returns:
        ``(B,)`` in [0, 1].
    """
    b, m, t = estimates.shape
    window = torch.hann_window(n_fft, device=estimates.device, dtype=estimates.dtype)
    stft = torch.stft(estimates.reshape(b * m, t), n_fft, n_fft // 2, window=window,
                      return_complex=True)
    power = torch.view_as_real(stft).pow(2).sum(-1).reshape(b, m, -1)  # (B, M, F*K)
    spec = (power + eps * eps).sqrt() - eps  # |Y|, 0 at 0 with a finite gradient there
    gram = spec @ spec.transpose(1, 2)  # (B, M, M)
    energy = gram.diagonal(dim1=1, dim2=2)  # (B, M)
    scale = (energy[:, :, None] * energy[:, None, :] + eps * eps).sqrt()
    cos = gram / (scale + floor * energy.mean(1)[:, None, None] + eps)
    if pairs == "first":
        return cos[:, 0, 1:].mean(1)
    if pairs == "all":
        i, j = torch.triu_indices(m, m, 1, device=estimates.device)
        return cos[:, i, j].mean(1)
    raise ValueError(f"pairs must be 'first' or 'all', got {pairs!r}")


def sparsity(estimates: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """L1/L2 ratio of the outputs' RMS, a penalty on over-separation.

    It is 1 when one output carries all the energy and ``sqrt(M)`` when all M outputs are
    equally loud (Wisdom et al. 2021, "Sparse, efficient and semantic MixIT").

    Args:
        estimates: ``(..., M, T)``.
    Returns:
        ``(...)``.
    """
    rms = (estimates.pow(2).mean(-1) + eps).sqrt()  # (..., M)
    return rms.sum(-1) / (rms.pow(2).sum(-1) + eps).sqrt()


def _check_same_shape(estimate: torch.Tensor, reference: torch.Tensor) -> None:
    """Same length T; leading dimensions must broadcast."""
    try:
        if estimate.shape[-1:] != reference.shape[-1:]:
            raise RuntimeError
        torch.broadcast_shapes(estimate.shape, reference.shape)
    except RuntimeError:
        raise ValueError(
            f"estimate and reference must have the same shape (..., T), got "
            f"{tuple(estimate.shape)} and {tuple(reference.shape)}"
        ) from None
