"""wildmix: learn speech enhancement and sound separation from noisy recordings alone.

The public names below are imported on first use, so that ``wildmix --help`` does not pay
for importing torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "neg_sisnr": "wildmix.losses",
    "neg_snr": "wildmix.losses",
    "sisnr": "wildmix.losses",
    "sparsity": "wildmix.losses",
    "MixITResult": "wildmix.mixit",
    "constraint": "wildmix.mixit",
    "enhancement_constraint": "wildmix.mixit",
    "mixit_loss": "wildmix.mixit",
    "mixture_consistency": "wildmix.mixit",
    "Enhancer": "wildmix.enhance",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wildmix' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
