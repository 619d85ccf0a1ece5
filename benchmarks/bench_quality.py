"""SI-SNR improvement against training time, as a table and a PNG.

    python benchmarks/bench_quality.py [--minutes 60] [--model stft] [--out runs/quality]

Builds the built-in 'small' corpus if needed, trains with MixIT (no clean speech) for the
given wall-clock budget, validating on the paired valid split, then enhances the test split
with the best checkpoint and prints its mean SI-SNR improvement. The curve is read from the
run's log.jsonl, so it can also be drawn for any existing run (--plot-only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curve(run: Path) -> list[tuple[float, int, float]]:
    """``(minutes, step, valid SI-SNRi)`` of every validation in a run's log."""
    rows = []
    for line in (run / "log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "valid_sisnri" in entry:
            rows.append((entry["time_s"] / 60, entry["step"], entry["valid_sisnri"]))
    return rows


def plot(runs: list[Path], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        rows = curve(run)
        ax.plot([r[0] for r in rows], [r[2] for r in rows], marker="o", ms=3, label=run.name)
    ax.set_xlabel("training time (minutes, 2-core CPU)")
    ax.set_ylabel("valid SI-SNR improvement (dB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--model", default="stft")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--data", default="data/corpus-small")
    parser.add_argument("--out", default="runs/quality")
    parser.add_argument("--plot-only", nargs="*", help="draw the curve of existing runs")
    args = parser.parse_args(argv)

    from wildmix.cli import main as cli

    if args.plot_only:
        runs = [Path(r) for r in args.plot_only]
    else:
        data = Path(args.data)
        if not (data / "manifest.jsonl").exists():
            cli(["corpus", "build", str(data), "--size", "small"])
        run = Path(args.out) / f"{args.model}-{args.preset}-{args.minutes:g}min"
        cli(["train", "--data", str(data), "--out", str(run), "--model", args.model,
             "--preset", args.preset, "--max-minutes", str(args.minutes),
             "--max-steps", str(args.steps)])
        cli(["enhance", str(run), str(data / "test" / "noisy"), "--out",
             str(run / "enhanced-test"), "--no-progress"])
        cli(["score", str(data / "test"), str(run / "enhanced-test")])
        runs = [run]
    for run in runs:
        print(f"\n{run}: validation SI-SNRi against training time")
        print(f"{'minutes':>8} | {'step':>6} | {'SI-SNRi dB':>10}")
        print("-" * 31)
        for minutes, step, sisnri in curve(run):
            print(f"{minutes:8.1f} | {step:6d} | {sisnri:10.2f}")
    png = runs[0] / "sisnri_vs_time.png"
    plot(runs, png)
    print(f"\ncurve: {png}")


if __name__ == "__main__":
    main()
