"""The evaluation report: one HTML page with the table, spectrograms and audio players.

Everything the page shows lives beside it (PNG images, 16-bit WAV files), with relative
links and no scripts or web fonts, so the folder can be opened offline or copied anywhere.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import numpy as np

from wildmix import audio

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 1100px;
       color: #222; line-height: 1.4; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
.example { border-top: 1px solid #ddd; margin-top: 2em; padding-top: 1em; }
.players { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px;
           align-items: center; }
img { max-width: 100%; }
.small { color: #666; font-size: 90%; }
"""


LABELS = {"si_snr": "SI-SNR dB", "si_snri": "SI-SNRi dB", "pesq": "PESQ", "estoi": "ESTOI",
          "msi": "MSi dB", "1s": "1S dB", "rtf": "RTF", "dnsmos_sig": "DNSMOS SIG",
          "dnsmos_bak": "DNSMOS BAK", "dnsmos_ovr": "DNSMOS OVR"}


def format_mean(entry: dict, metric: str) -> tuple[str, str | None]:
    """A summary entry as text: ``(mean, half-width of the CI or None)``; "n/a" if empty."""
    if entry["n"] == 0:
        return "n/a", None
    digits = 3 if metric == "estoi" else 2
    half = None if math.isnan(entry["ci95"]) else f"{entry['ci95']:.{digits}f}"
    return f"{entry['mean']:.{digits}f}", half


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def spectrogram_png(path: Path, signals: list[tuple[str, np.ndarray]], sample_rate: int
                    ) -> None:
    """Log-magnitude spectrograms of ``signals`` stacked in one PNG, on one colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import stft

    specs = []
    for _, x in signals:
        x = audio.fit_length(x, max(len(x), 512))  # a very short file: padded to one frame
        f, t, z = stft(x, sample_rate, nperseg=512, noverlap=384)
        specs.append(20 * np.log10(np.abs(z) + 1e-8))
    top = max(float(s.max()) for s in specs)
    fig, axes = plt.subplots(len(signals), 1, figsize=(9, 1.6 * len(signals)), sharex=True,
                             squeeze=False)
    for ax, (label, _), s in zip(axes[:, 0], signals, specs, strict=True):
        ax.imshow(s, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                  extent=(t[0], t[-1], f[0] / 1000, f[-1] / 1000))
        ax.set_ylabel("kHz")
        ax.set_title(label, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    with audio.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def _cell(entry: dict, metric: str) -> str:
    mean, half = format_mean(entry, metric)
    text = mean + (f" <span class=small>± {half}</span>" if half else "")
    if entry["missing"]:
        text += f" <span class=small>({entry['missing']} missing)</span>"
    return text


def _example_html(results, ex, media: Path) -> list[str]:
    """One example: spectrograms of every signal, and a player with scores for each."""
    e = html.escape
    parts = []
    stem = _slug(Path(ex.name).with_suffix("").as_posix())
    if results.task != "separate":
        signals = [("noisy", ex.inputs)] + [("clean", r) for r in ex.reference]
    else:
        signals = [("mixture", ex.inputs)] + [
            (f"reference s{k}", r) for k, r in enumerate(ex.reference)]
    for method in results.methods:
        est = results.outputs.get((method, ex.name))
        if est is None or method == "noisy":
            continue
        if est.ndim == 1:
            signals.append((method, est))
        else:
            signals += [(f"{method} output {m}", y) for m, y in enumerate(est)]
    png = media / f"{stem}.png"
    spectrogram_png(png, signals, ex.sample_rate)
    scores = {r["method"]: r for r in results.rows if r["file"] == ex.name}
    parts.append(f"<div class=example><h2>{e(ex.name)}</h2>"
                 f"<img src='media/{png.name}' alt='spectrograms of {e(ex.name)}'>"
                 "<div class=players>")
    for label, x in signals:
        wav = media / f"{stem}__{_slug(label)}.wav"
        peak = float(np.abs(x).max(initial=0.0))
        # 16-bit PCM plays in every browser; scale down only what would clip
        audio.write(wav, (x / max(1.0, peak)).astype(np.float32), ex.sample_rate,
                    subtype="PCM_16")
        method = label.split(" output ")[0]
        row = scores.get(method)
        note = ""
        if row:
            note = ", ".join(f"{LABELS[m]} {v:.2f}" for m, v in row["scores"].items())
        parts.append(f"<span>{e(label)} <span class=small>{e(note)}</span></span>"
                     f"<audio controls preload=metadata src='media/{wav.name}'></audio>")
    parts.append("</div></div>")
    return parts


def write_html(results, out: Path, examples: int = 3) -> Path:
    """Write ``out/report.html`` and its media for a :class:`wildmix.evaluate.Results`."""
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    summary = results.summary()
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>wildmix evaluation"
             f"</title><style>{_STYLE}</style></head><body>",
             "<h1>wildmix evaluation</h1>",
             f"<p>Data: <code>{e(results.data)}</code>, "
             f"{len({r['file'] for r in results.rows})} files ({e(results.task)}). "
             "Mean ± half-width of the 95% confidence interval; RTF = processing time / "
             "audio duration.</p>",
             "<table><tr><th>method</th>"
             + "".join(f"<th>{e(LABELS[m])}</th>" for m in results.metrics)
             + "<th>RTF</th></tr>"]
    for method, entry in summary.items():
        parts.append(f"<tr><td>{e(method)}</td>"
                     + "".join(f"<td>{_cell(entry[m], m)}</td>" for m in results.metrics)
                     + f"<td>{entry['rtf']:.4f}</td></tr>")
    parts.append("</table>")

    for ex in results.examples[:examples]:
        parts += _example_html(results, ex, media)
    parts.append("</body></html>")
    path = out / "report.html"
    with audio.atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(parts) + "\n")
    return path
