"""wildmix: learn speech enhancement and sound separation from noisy recordings alone."""

from wildmix.losses import neg_sisnr, neg_snr, sisnr, sparsity
from wildmix.mixit import (
    MixITResult,
    constraint,
    enhancement_constraint,
    mixit,
    mixture_consistency,
)

__version__ = "0.1.0"

__all__ = [
    "MixITResult",
    "constraint",
    "enhancement_constraint",
    "mixit",
    "mixture_consistency",
    "neg_sisnr",
    "neg_snr",
    "sisnr",
    "sparsity",
]
