"""Separation models, registered by name, with presets; checkpoints as plain data.

A checkpoint is a dict of plain types and tensors (model name and arguments, weights,
sample rate, training config, versions), saved atomically and loaded with
``torch.load(weights_only=True)``: loading never executes code from the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from wildmix.models import stft, tdcn

REGISTRY: dict[str, tuple[type[nn.Module], dict[str, dict]]] = {
    "stft": (stft.STFTMasker, stft.PRESETS),
    "tdcn": (tdcn.TDCN, tdcn.PRESETS),
}
FORMAT = "wildmix-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable wildmix checkpoint; one line naming it."""


def model_args(name: str, preset: str = "cpu", **overrides) -> dict:
    """The constructor arguments of a registered model: its preset plus overrides."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(REGISTRY)}")
    presets = REGISTRY[name][1]
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for {name}; choose from "
                         f"{', '.join(presets)}")
    return {**presets[preset], **{k: v for k, v in overrides.items() if v is not None}}


def build(name: str, args: dict) -> nn.Module:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(REGISTRY)}")
    return REGISTRY[name][0](**args)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def versions() -> dict:
    from wildmix import __version__

    return {"wildmix": str(__version__), "torch": str(torch.__version__)}


def save_checkpoint(path: str | os.PathLike, **content) -> None:
    """Write ``content`` (plain data and tensors) atomically: temporary file, then rename."""
    from wildmix.audio import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(),
                    **content}, tmp)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint without executing code; :class:`CheckpointError` if unusable."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise CheckpointError(f"{path}: no best.pt or last.pt in this run folder")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path}: not a readable checkpoint ({first[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a wildmix checkpoint")
    for key in ("model_name", "model_args", "state_dict", "sample_rate"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    ckpt["path"] = str(path)
    return ckpt


def from_checkpoint(ckpt: dict) -> nn.Module:
    model = build(ckpt["model_name"], ckpt["model_args"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt.get('path', 'checkpoint')}: weights do not fit "
                              f"{ckpt['model_name']} ({str(e).splitlines()[0]})") from None
    return model.eval()
