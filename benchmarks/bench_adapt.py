"""Adaptation to a user's noisy recordings, without labels, on real voices; peers beside.

    python benchmarks/bench_adapt.py [--minutes 6] [--situations real small]

Situations built like a user's:

- real: the real-voice test split of the 'real' corpus (voices, languages and noise files
  that no shipped model trained on), its nine voices split in two. The noisy files of five
  voices are the user's folder of recordings (no labels); the noise parts of those same
  files are the optional folder of noise-only clips; the other four voices, in the same
  kinds of noise, are the paired test set.
- small: the built-in corpus as `make demo` uses it: train/noisy as the recordings,
  train/noise as the noise clips, the test split as the test set.

Methods, each starting from the shipped model with the same time budget (``--minutes``):
`wildmix adapt` with RemixIT (recordings only, the default), with RemixIT choosing best.pt
by DNSMOS on held-back recordings (recordings only, label-free), with MixIT and VAD-found
noise (recordings only), with MixIT whose noise-only mixtures are the shipped model's noise
estimates of the recordings (recordings only), and with MixIT and the noise clips. Beside
them: the noisy input, the shipped model, NSNet2 and RNNoise. One table per situation
(SI-SNRi, PESQ, ESTOI with 95% CIs, then per voice), the issue's targets checked, and the
rank correlation between
DNSMOS and SI-SNRi over the validations of a run that logs both (MixIT with the noise
clips, validated every 250 steps on the 'real' corpus's paired valid split: real voices
that are in neither the recordings nor the test set).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import bench_quality
import numpy as np

REAL_ADAPT_VOICES = 5  # of the 9 test voices (sorted, every other one): the recordings


def build_real(corpus: Path, out: Path) -> Path:
    """The 'real' situation as a folder of links: recordings/, noise/, test/{noisy,clean}."""
    records = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text()
               .splitlines()[1:]]
    test = [r for r in records if r.get("split") == "test" and "voice" in r]
    voices = sorted({r["voice"] for r in test})
    adapt = set(voices[::2])
    assert len(adapt) == REAL_ADAPT_VOICES, voices
    for r in test:
        targets = ({"recordings": r["files"]["noisy"], "noise": r["files"]["noise"]}
                   if r["voice"] in adapt else
                   {"test/noisy": r["files"]["noisy"], "test/clean": r["files"]["clean"]})
        for folder, rel in targets.items():
            link = out / folder / Path(rel).name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                os.symlink((corpus / rel).resolve(), link)
    print(f"real situation in {out}: recordings and noise of {', '.join(sorted(adapt))}; "
          f"test set: {', '.join(v for v in voices if v not in adapt)}")
    return out


def methods(folder: Path, noise: Path, minutes: float) -> dict[str, list[str]]:
    """Run name -> `wildmix adapt` arguments."""
    common = ["--data", str(folder), "--max-minutes", str(minutes), "--no-progress"]
    return {
        "adapt-remixit": common,
        "adapt-remixit-dnsmos": [*common, "--select", "dnsmos"],
        "adapt-mixit-vad": [*common, "--strategy", "mixit", "--noise", "auto"],
        "adapt-mixit-teacher": [*common, "--strategy", "mixit", "--noise", "teacher"],
        "adapt-mixit-noise": [*common, "--strategy", "mixit", "--noise", str(noise)],
    }


def situation(cli, name: str, recordings: Path, noise: Path, test: Path, corpus: Path,
              runs: Path, report: Path, minutes: float) -> dict:
    plan = methods(recordings, noise, minutes)
    for run, args in plan.items():
        cli(["adapt", "--out", str(runs / run), *args])
    cli(["evaluate", "--data", str(test), "--out", str(report), "--baseline",
         "noisy,nsnet2,rnnoise", "--model", "default", *[str(runs / r) for r in plan],
         "--no-progress"])
    print(f"\n## {name}: {recordings} (recordings), {test} (test)\n")
    print((report / "results.md").read_text())
    bench_quality.per_voice_ci(corpus, report)
    return json.loads((report / "results.json").read_text())["summary"]


def check(name: str, summary: dict) -> None:
    mean = {m: {k: v["mean"] for k, v in entry.items() if isinstance(v, dict)}
            for m, entry in summary.items()}
    start = mean["default"]
    print(f"\ntargets, {name}:")
    for run in ("adapt-remixit", "adapt-remixit-dnsmos", "adapt-mixit-vad",
                "adapt-mixit-teacher"):
        gain = mean[run]["si_snri"] - start["si_snri"]
        kept = all(mean[run][m] >= start[m] for m in ("pesq", "estoi"))
        ok = gain >= 1.5 and kept
        print(f"  {'met ' if ok else 'MISSED'}  {run} (recordings only): {gain:+.2f} dB over "
              f"the shipped model (target +1.5), PESQ {mean[run]['pesq']:.2f} vs "
              f"{start['pesq']:.2f}, ESTOI {mean[run]['estoi']:.3f} vs {start['estoi']:.3f}")
    gap = mean["adapt-mixit-noise"]["si_snri"] - mean["nsnet2"]["si_snri"]
    print(f"  {'met ' if gap >= 1 else 'MISSED'}  adapt-mixit-noise (with noise clips): "
          f"{gap:+.2f} dB over NSNet2 (target +1)")


def spearman(a: list[float], b: list[float]) -> float:
    ranks = [np.argsort(np.argsort(x)) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def correlation(cli, recordings: Path, noise: Path, valid: Path, run: Path,
                minutes: float) -> None:
    """Spearman correlation of DNSMOS OVR and SI-SNRi over a run's validations."""
    cli(["adapt", "--data", str(recordings), "--out", str(run), "--strategy", "mixit",
         "--noise", str(noise), "--valid", str(valid), "--select", "dnsmos",
         "--max-minutes", str(minutes), "--no-progress"])
    entries = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    rows = [(e["step"], e["valid_dnsmos_ovr"], e["valid_sisnri"]) for e in entries
            if "valid_dnsmos_ovr" in e and "valid_sisnri" in e]
    print(f"\nlabel-free selection, {run}: {len(rows)} validations on {valid}")
    print("| step | DNSMOS OVR | SI-SNRi dB |\n|---|---|---|")
    for step, ovr, sisnri in rows:
        print(f"| {step} | {ovr:.3f} | {sisnri:+.2f} |")
    if len(rows) >= 3:
        rho = spearman([r[1] for r in rows], [r[2] for r in rows])
        best_by_dnsmos = max(rows, key=lambda r: r[1])
        best = max(rows, key=lambda r: r[2])
        print(f"\nSpearman rank correlation (DNSMOS OVR, SI-SNRi): {rho:+.2f}; DNSMOS picks "
              f"step {best_by_dnsmos[0]} ({best_by_dnsmos[2]:+.2f} dB), the best by SI-SNRi "
              f"is step {best[0]} ({best[2]:+.2f} dB)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0,
                        help="time budget of each adaptation (default: %(default)s)")
    parser.add_argument("--situations", nargs="+", default=["real", "small"],
                        choices=["real", "small"])
    parser.add_argument("--real-data", default="data/corpus-real")
    parser.add_argument("--small-data", default="data/corpus-small")
    parser.add_argument("--out", default="runs/adapt-bench")
    parser.add_argument("--report", default="reports/adapt")
    parser.add_argument("--no-correlation", action="store_true")
    args = parser.parse_args(argv)

    from wildmix.cli import main as wildmix

    def cli(argv):
        if wildmix(argv) != 0:
            raise SystemExit(f"failed: wildmix {' '.join(argv)}")

    out, report = Path(args.out), Path(args.report)
    real, small = Path(args.real_data), Path(args.small_data)
    for corpus, size in ((real, "real"), (small, "small")):
        if not (corpus / "manifest.jsonl").exists():
            cli(["corpus", "build", str(corpus), "--size", size])
    if "real" in args.situations:
        folder = build_real(real, out / "real-situation")
        check("real", situation(cli, "real voices", folder / "recordings", folder / "noise",
                                folder / "test", real, out / "real", report / "real",
                                args.minutes))
    if "small" in args.situations:
        check("small", situation(cli, "built-in small corpus", small / "train" / "noisy",
                                 small / "train" / "noise", small / "test", small,
                                 out / "small", report / "small", args.minutes))
    if not args.no_correlation:
        folder = out / "real-situation"
        correlation(cli, folder / "recordings", folder / "noise", real / "valid",
                    out / "correlation", args.minutes)


if __name__ == "__main__":
    main()
