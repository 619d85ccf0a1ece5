"""Non-intrusive speech quality without a clean reference: DNSMOS P.835 (SIG, BAK, OVR).

Microsoft's DNSMOS P.835 (Reddy et al., ICASSP 2022) predicts the ITU-T P.835 ratings of
speech signal quality (SIG), background noise intrusiveness (BAK) and overall quality (OVR),
1 to 5, from the waveform alone. Its ONNX file ships in the ``speechmos`` package (MIT);
wildmix runs that file with onnxruntime and does not import speechmos' Python (which needs
librosa). As in the DNS Challenge's ``dnsmos_local.py``: 16 kHz, windows of 9.01 s hopped by
1 s (a shorter clip is repeated until it fills one), each window's outputs mapped by the
published polynomials, then averaged over the windows.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from wildmix import audio
from wildmix.config import EXTRAS, require

METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovr")
REQUIRES = EXTRAS["mos"]
RATE = 16000
WINDOW = int(9.01 * RATE)
# raw model output -> MOS, per rating (numpy.poly1d coefficients, highest power first)
POLYNOMIALS = {"dnsmos_sig": (-0.08397278, 1.22083953, 0.0052439),
               "dnsmos_bak": (-0.13166888, 1.60915514, -0.39604546),
               "dnsmos_ovr": (-0.06766283, 1.11546468, 0.04602535)}


@functools.cache
def _session():
    require("mos", REQUIRES, "DNSMOS")
    import onnxruntime

    spec = importlib.util.find_spec("speechmos")
    path = Path(next(iter(spec.submodule_search_locations))) / "dnsmos_models" / \
        "sig_bak_ovr.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in the installed speechmos")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options,
                                        providers=["CPUExecutionProvider"])


def dnsmos(x: np.ndarray, sample_rate: int) -> dict[str, float]:
    """DNSMOS P.835 of a ``(T,)`` signal at any rate: ``{"dnsmos_sig", "dnsmos_bak",
    "dnsmos_ovr"}``, each 1 (bad) to 5 (excellent)."""
    x = np.clip(audio.resample(np.asarray(x, np.float32), sample_rate, RATE), -1.0, 1.0)
    if len(x) == 0:
        raise ValueError("empty signal")
    while len(x) < WINDOW:
        x = np.concatenate([x, x])
    windows = int(np.floor(len(x) / RATE) - WINDOW / RATE) + 1  # as dnsmos_local.py counts
    batch = np.stack([x[i * RATE:i * RATE + WINDOW] for i in range(windows)])
    session = _session()
    raw = session.run(None, {session.get_inputs()[0].name: batch})[0]  # (windows, 3)
    return {m: float(np.mean(np.poly1d(POLYNOMIALS[m])(raw[:, i])))
            for i, m in enumerate(METRICS)}


def available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in REQUIRES)
