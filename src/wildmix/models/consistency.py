"""Mixture consistency: the layer that makes a separation model's outputs add up."""

from __future__ import annotations

import torch

from wildmix.losses import EPS


def mixture_consistency(
    estimates: torch.Tensor, mixture: torch.Tensor, weights: str = "uniform", eps: float = EPS
) -> torch.Tensor:
    """Project estimates so that they sum to the mixture (Wisdom et al., ICASSP 2019).

    ``s_m + w_m (x - sum_k s_k)`` with ``w_m = 1/M`` (``"uniform"``) or
    ``w_m ~ |s_m|^2`` (``"energy"``; uniform when every output is silent).

    Args:
        estimates: ``(..., M, T)``.
        mixture: ``(..., T)``.
    Returns:
        ``(..., M, T)`` whose sum over M equals ``mixture``.
    """
    if estimates.shape[:-2] + estimates.shape[-1:] != mixture.shape:
        raise ValueError(
            f"estimates (..., M, T) {tuple(estimates.shape)} do not match mixture (..., T) "
            f"{tuple(mixture.shape)}"
        )
    residual = (mixture - estimates.sum(-2)).unsqueeze(-2)  # (..., 1, T)
    n_src = estimates.shape[-2]
    if weights == "uniform":
        return estimates + residual / n_src
    if weights == "energy":
        energy = estimates.pow(2).sum(-1, keepdim=True)  # (..., M, 1)
        w = (energy + eps / n_src) / (energy.sum(-2, keepdim=True) + eps)  # sums to 1
        return estimates + w * residual
    raise ValueError(f"weights must be 'uniform' or 'energy', got {weights!r}")
