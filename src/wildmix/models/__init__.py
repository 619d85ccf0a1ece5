"""Separation models, registered by name, with presets; checkpoints as plain data.

A checkpoint is a dict of plain types and tensors (model name and arguments, weights,
sample rate, training config, versions), saved atomically and loaded with
``torch.load(weights_only=True)``: loading never executes code from the file.

Shipped models (``wildmix/weights/NAME.safetensors``) hold the weights and, as string
metadata, the model name, its arguments (JSON) and the sample rate; ``load_checkpoint``
reads them like any checkpoint, and ``pretrained_path()`` finds the one in the package.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from wildmix.audio import atomic_path, first_line
from wildmix.models import stft, tdcn

REGISTRY: dict[str, tuple[type[nn.Module], dict[str, dict]]] = {
    "stft": (stft.STFTMasker, stft.PRESETS),
    "tdcn": (tdcn.TDCN, tdcn.PRESETS),
}
FORMAT = "wildmix-checkpoint"
FORMAT_VERSION = 1
PRETRAINED_FORMAT = "wildmix-pretrained"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


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


def grow(ckpt: dict, blocks: int) -> dict:
    """``ckpt`` with ``blocks`` more residual blocks after its own (an ``stft`` model of
    ``arch="tcn"``), each starting as the identity (its output convolution zero), so the
    grown model computes what ``ckpt`` computes until training moves the new blocks."""
    args = ckpt["model_args"]
    if ckpt["model_name"] != "stft" or args.get("arch", "tcn") != "tcn":
        raise ValueError(f"only an stft model with arch='tcn' can grow, not "
                         f"{ckpt['model_name']} {args.get('arch', '')}".rstrip())
    if blocks < 1:
        raise ValueError(f"blocks to add must be >= 1, got {blocks}")
    args = {**args, "blocks": args["blocks"] + blocks}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build("stft", args)
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    assert not unexpected and all(k.startswith("net.") for k in missing), (missing, unexpected)
    for block in list(model.net)[-blocks:]:
        nn.init.zeros_(block.pointwise.weight)
        nn.init.zeros_(block.pointwise.bias)
    return {**ckpt, "model_args": args, "state_dict": model.state_dict()}


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def versions() -> dict:
    from wildmix import __version__

    return {"wildmix": str(__version__), "torch": str(torch.__version__)}


def save_checkpoint(path: str | os.PathLike, **content) -> None:
    """Write ``content`` (plain data and tensors) atomically: temporary file, then rename."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(),
                    **content}, tmp)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a run folder (its best.pt, else last.pt), a checkpoint file (.pt, .safetensors)
    or a shipped model by name ("default"), without executing code from it;
    :class:`CheckpointError` if unusable."""
    path = Path(path)
    if not path.exists() and len(path.parts) == 1 and (WEIGHTS_DIR / f"{path}.safetensors"
                                                       ).is_file():
        path = WEIGHTS_DIR / f"{path}.safetensors"  # a shipped model by name: "default"
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise CheckpointError(f"{path}: no best.pt or last.pt in this run folder")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise CheckpointError(f"{path}: not a readable checkpoint ({first_line(e)})") \
                from None
        # PyTorch's own message suggests weights_only=False, which would run the file's code
        raise CheckpointError(f"{path}: refused: the file holds Python objects, which could "
                              "run code when loaded; wildmix loads only plain-data "
                              "checkpoints (weights, numbers, strings)") from None
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({first_line(e)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a wildmix checkpoint")
    for key in ("model_name", "model_args", "state_dict", "sample_rate"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    ckpt["path"] = str(path)
    return ckpt


def default_shifts(ckpt: dict) -> int:
    """The shifts a shipped model's file asks for (``wildmix export --shifts``), else 1."""
    try:
        return max(1, int((ckpt.get("metadata") or {}).get("shifts", 1)))
    except ValueError:
        raise CheckpointError(f"{ckpt.get('path', 'checkpoint')}: bad shifts metadata") \
            from None


def from_checkpoint(ckpt: dict) -> nn.Module:
    model = build(ckpt["model_name"], ckpt["model_args"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt.get('path', 'checkpoint')}: weights do not fit "
                              f"{ckpt['model_name']} ({first_line(e)})") from None
    return model.eval()


def pretrained_path(name: str = "default") -> Path:
    """The shipped model ``name`` inside the installed package."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        shipped = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
        raise CheckpointError(f"no shipped model {name!r} in {WEIGHTS_DIR} (shipped: "
                              f"{', '.join(shipped) or 'none'})")
    return path


def export_safetensors(ckpt: dict, path: str | os.PathLike, **metadata: str) -> None:
    """Write a checkpoint's weights (float32) and model description as safetensors,
    atomically; ``metadata`` (strings: provenance) goes into the file's header."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
               .contiguous() for k, v in ckpt["state_dict"].items()}
    header = {"format": PRETRAINED_FORMAT, "model_name": ckpt["model_name"],
              "model_args": json.dumps(ckpt["model_args"], sort_keys=True),
              "sample_rate": str(ckpt["sample_rate"]), "task": ckpt.get("task", "enhance"),
              **{k: str(v) for k, v in metadata.items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def _load_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({first_line(e)})") \
            from None
    if meta.get("format") != PRETRAINED_FORMAT:
        raise CheckpointError(f"{path}: not a wildmix model (no {PRETRAINED_FORMAT!r} "
                              f"metadata)")
    try:
        args, rate = json.loads(meta["model_args"]), int(meta["sample_rate"])
        name = meta["model_name"]
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: bad model metadata ({e})") from None
    return {"format": FORMAT, "model_name": name, "model_args": args, "state_dict": state,
            "sample_rate": rate, "task": meta.get("task", "enhance"), "metadata": meta,
            "path": str(path)}


def export_run(source: str | os.PathLike, out: str | os.PathLike,
               shifts: int | None = None) -> dict:
    """Export a run (its best.pt) or checkpoint as ``out`` (.safetensors) with provenance
    (source file, step, strategy, seed, wildmix version) in its header, and the ``shifts``
    that :class:`wildmix.enhance.Enhancer` uses for it unless told otherwise (None: the
    checkpoint's own, e.g. a model fine-tuned from the shipped one keeps its shifts).

    Returns:
        ``{"source", "sha256", "megabytes", "parameters"}``.
    """
    import hashlib

    if not str(out).endswith(".safetensors"):
        raise ValueError(f"{out}: the output name must end in .safetensors")
    if shifts is not None and shifts < 1:
        raise ValueError(f"shifts must be >= 1, got {shifts}")
    ckpt = load_checkpoint(source)
    shifts = default_shifts(ckpt) if shifts is None else shifts
    config = ckpt.get("train_config") or {}
    provenance = {"source": Path(ckpt["path"]).name, "step": ckpt.get("step", ""),
                  "strategy": config.get("strategy", ""), "seed": config.get("seed", ""),
                  "wildmix": (ckpt.get("versions") or {}).get("wildmix", "")}
    export_safetensors(ckpt, out, **provenance, **({"shifts": shifts} if shifts > 1 else {}))
    data = Path(out).read_bytes()
    return {"source": ckpt["path"], "sha256": hashlib.sha256(data).hexdigest(),
            "megabytes": len(data) / 1e6, "parameters": n_parameters(from_checkpoint(ckpt))}
