"""Metrics over paired data: SI-SNR of the noisy input and of enhanced outputs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wildmix import audio, losses


@dataclass
class Scores:
    files: list[str]
    noisy: np.ndarray  # SI-SNR of each noisy input, dB
    enhanced: np.ndarray  # SI-SNR of each enhanced output, dB

    @property
    def improvement(self) -> np.ndarray:
        return self.enhanced - self.noisy

    def summary(self) -> str:
        return (f"{len(self.files)} files: SI-SNR noisy {self.noisy.mean():.2f} dB, enhanced "
                f"{self.enhanced.mean():.2f} dB, improvement {self.improvement.mean():+.2f} dB "
                f"(median {np.median(self.improvement):+.2f})")


def si_snr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """SI-SNR in dB of two ``(T,)`` arrays."""
    return float(losses.sisnr(torch.from_numpy(np.asarray(estimate, np.float64)),
                              torch.from_numpy(np.asarray(reference, np.float64))))


def score_folder(data: str | os.PathLike, enhanced: str | os.PathLike) -> Scores:
    """SI-SNR of ``data/noisy/X`` and ``enhanced/X`` against ``data/clean/X``.

    Raises:
        ValueError: a missing enhanced file or a length mismatch, naming the file.
    """
    data, enhanced = Path(data), Path(enhanced)
    names = [p.relative_to(data / "noisy") for p in audio.find_audio(data / "noisy")]
    if not names:
        raise ValueError(f"no noisy files in {data / 'noisy'}")
    noisy_scores, enhanced_scores = [], []
    for name in names:
        clean = audio.read(data / "clean" / name, check=False)
        noisy = audio.read(data / "noisy" / name, check=False)
        est_path = (enhanced / name).with_suffix(".wav")
        if not est_path.is_file():
            raise ValueError(f"{est_path}: no enhanced file for {data / 'noisy' / name}")
        est = audio.read(est_path, check=False)
        if not len(clean) == len(noisy) == len(est):
            raise ValueError(f"{name}: lengths differ (clean {len(clean)}, noisy {len(noisy)},"
                             f" enhanced {len(est)} samples)")
        noisy_scores.append(si_snr(noisy, clean))
        enhanced_scores.append(si_snr(est, clean))
    return Scores([str(n) for n in names], np.array(noisy_scores), np.array(enhanced_scores))
