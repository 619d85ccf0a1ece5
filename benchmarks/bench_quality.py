"""SI-SNR improvement against training time, as a table and a PNG.

    python benchmarks/bench_quality.py [--minutes 60] [--model stft] [--out runs/quality]
    python benchmarks/bench_quality.py --compare [--steps 2000]   # MixIT remedies, supervised

Builds the built-in 'small' corpus if needed, trains with MixIT (no clean speech) for the
given wall-clock budget, validating on the paired valid split, then enhances the test split
with the best checkpoint and prints its mean SI-SNR improvement. The curve is read from the
run's log.jsonl, so it can also be drawn for any existing run (--plot-only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# MixIT's weak spots for enhancement and their remedies, each a flag set of `wildmix train`
VARIANTS = {
    "mixit, noise-only mixture at -5..+5 dB": ["--relative-gain-db", "-5", "5"],
    "mixit, noise-only mixture at -15..0 dB": ["--relative-gain-db", "-15", "0"],
    "mixit, -15..0 dB + noise augmentation 0.5": ["--relative-gain-db", "-15", "0",
                                                  "--noise-augment", "0.5"],
    "mixit, -15..0 dB, M=4 + sparsity 0.5": ["--relative-gain-db", "-15", "0",
                                             "--n-sources", "4", "--sparsity", "0.5"],
    "mixit, default (-25..0 dB, M=3)": [],
    "supervised (clean targets)": ["--supervised"],
}


def curve(run: Path) -> list[tuple[float, int, float]]:
    """``(minutes, step, valid SI-SNRi)`` of every validation in a run's log."""
    rows = []
    for line in (run / "log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "valid_sisnri" in entry:
            rows.append((entry["time_s"] / 60, entry["step"], entry["valid_sisnri"]))
    return rows


def plot(runs: list[Path], png: Path, labels: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run, label in zip(runs, labels or [r.name for r in runs], strict=True):
        rows = curve(run)
        ax.plot([r[0] for r in rows], [r[2] for r in rows], marker="o", ms=3, label=label)
    ax.set_xlabel("training time (minutes, 2-core CPU)")
    ax.set_ylabel("valid SI-SNR improvement (dB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)


def compare(cli, data: Path, out: Path, steps: int) -> None:
    if not (data / "manifest.jsonl").exists():
        cli(["corpus", "build", str(data), "--size", "small"])
    rows = []
    for i, (name, flags) in enumerate(VARIANTS.items()):
        run = out / f"compare-{i}"
        cli(["train", "--data", str(data), "--out", str(run), "--max-steps", str(steps),
             "--valid-every", "250", "--no-progress", *flags])
        values = [v for _, _, v in curve(run)]
        rows.append((name, max(values), values[-1]))
    print(f"\nvalid SI-SNRi after {steps} steps (batch 8 x 4 s), small corpus")
    print(f"{'variant':<45} | {'best dB':>7} | {'last dB':>7}")
    print("-" * 65)
    for name, best, last in rows:
        print(f"{name:<45} | {best:7.2f} | {last:7.2f}")
    plot([out / f"compare-{i}" for i in range(len(VARIANTS))], out / "compare.png",
         labels=list(VARIANTS))
    print(f"curves: {out / 'compare.png'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--model", default="stft")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--data", default="data/corpus-small")
    parser.add_argument("--out", default="runs/quality")
    parser.add_argument("--plot-only", nargs="*", help="draw the curve of existing runs")
    parser.add_argument("--compare", action="store_true",
                        help="train each variant of VARIANTS for --steps (default 2000)")
    args = parser.parse_args(argv)

    from wildmix.cli import main as cli

    if args.compare:
        return compare(cli, Path(args.data), Path(args.out),
                       2000 if args.steps == 20000 else args.steps)
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
