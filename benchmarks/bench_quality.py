"""Quality of every training strategy against the baselines, on the built-in test split.

    python benchmarks/bench_quality.py [--steps 3000] [--remixit-steps 1500]   # the table
    python benchmarks/bench_quality.py --curve 60 [--augment] [--overlap W]  # SI-SNRi vs time
    python benchmarks/bench_quality.py --compare [--steps 2000]   # MixIT remedies
    python benchmarks/bench_quality.py --voices default runs/x    # per voice, valid + test
    python benchmarks/bench_quality.py --real [MODEL...]   # real voices: peers, v1, v2, default

The table (default): builds the 'small' corpus and the 'shift' corpus (other voices and
noises) if needed, then trains, each on the same model (stft/cpu) and step budget:

- mixit: MixIT on small's noisy training recordings and noise clips (no clean speech);
- supervised: the same with small's clean training references (the reference point);
- remixit: a RemixIT student of the mixit model on small's noisy recordings (no labels);
- shift-supervised: supervised on the shift corpus (a model trained elsewhere);
- shift-remixit: its RemixIT student adapted on small's noisy recordings (no labels);
- default: the model shipped in the package (made by `make pretrained` from 'large' and
  'real'; the voices of small's test split and its noise files are held out), untouched;
- adapted: `wildmix adapt` of the shipped model on small's noisy training recordings (no
  labels, its default budget), as `make demo` runs it.

Then `wildmix evaluate` scores them with the noisy input and spectral gating on small's test
split (SI-SNRi, PESQ, ESTOI, with 95% confidence intervals), writes the report, takes a
screenshot of it with headless Chromium when one is installed, and checks the targets.
Runs that already finished are reused, so a rerun only evaluates.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from wildmix.peers import NAMES as PEERS  # every pretrained peer, in every table

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


# --curve: the training weights that can be passed on to wildmix train
CURVE_WEIGHTS = ("leakage", "overlap", "noise-augment")


def curve(run: Path) -> list[tuple[float, int, float]]:
    """``(minutes, step, valid SI-SNRi)`` of every validation in a run's log."""
    rows = []
    for line in (run / "log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "valid_sisnri" in entry:
            rows.append((entry["time_s"] / 60, entry["step"], entry["valid_sisnri"]))
    return rows


def drift(run: Path, limit: float = 0.5) -> float:
    """Print and return the largest fall of valid SI-SNRi below its best so far."""
    rows = curve(run)
    best, fall, where = float("-inf"), 0.0, rows[0]
    for row in rows:
        best = max(best, row[2])
        if best - row[2] > fall:
            fall, where = best - row[2], row
    top = max(rows, key=lambda r: r[2])
    print(f"best {top[2]:+.2f} dB at {top[0]:.1f} min (step {top[1]}); last {rows[-1][2]:+.2f} "
          f"dB; largest fall below the best so far: {fall:.2f} dB at {where[0]:.1f} min "
          f"({'met' if fall <= limit else 'MISSED'}: target <= {limit} dB)")
    return fall


def speech_share(run: Path, data: Path, files: int = 40) -> None:
    """Where the clean speech of the valid files goes, for best.pt and last.pt: the
    least-squares gain of the clean speech in each output (1 = all of it)."""
    import torch

    from wildmix import audio, models

    paths = sorted((data / "valid" / "noisy").glob("*.wav"))[:files]
    for name in ("best.pt", "last.pt"):
        ckpt = models.load_checkpoint(run / name)
        model = models.from_checkpoint(ckpt)
        gains = []
        for path in paths:
            x = audio.read(path, ckpt["sample_rate"])
            s = audio.read(data / "valid" / "clean" / path.name, ckpt["sample_rate"])
            with torch.no_grad():
                y = model(torch.from_numpy(x)[None]).float()[0].numpy()
            gains.append(y @ s / np.dot(s, s))
        share = " / ".join(f"{g:.3f}" for g in np.mean(gains, 0))
        print(f"{name} (step {ckpt['step']}): clean speech in outputs 0 / 1 / ...: {share}")


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


def runs(data: Path, shift: Path, out: Path, steps: int, remixit_steps: int
         ) -> dict[str, list[str]]:
    """Run name -> `wildmix train` arguments, in the order they must run."""
    return {
        "mixit": ["--data", str(data), "--max-steps", str(steps)],
        "supervised": ["--data", str(data), "--supervised", "--max-steps", str(steps)],
        "remixit": ["--data", str(data), "--strategy", "remixit", "--teacher",
                    str(out / "mixit"), "--max-steps", str(remixit_steps)],
        "shift-supervised": ["--data", str(shift), "--supervised", "--max-steps", str(steps)],
        "shift-remixit": ["--data", str(data), "--strategy", "remixit", "--teacher",
                          str(out / "shift-supervised"),
                          "--max-steps", str(remixit_steps)],
    }


def adapt_args(data: Path, out: Path) -> list[str]:
    """`wildmix adapt` of the shipped model on the corpus's noisy training recordings."""
    return ["adapt", "--data", str(data / "train" / "noisy"), "--out", str(out)]


def table(cli, data: Path, shift: Path, out: Path, report: Path, steps: int,
          remixit_steps: int) -> None:
    for corpus, size in ((data, "small"), (shift, "shift")):
        if not (corpus / "manifest.jsonl").exists():
            cli(["corpus", "build", str(corpus), "--size", size])
    plan = runs(data, shift, out, steps, remixit_steps)
    for name, args in plan.items():
        cli(["train", "--out", str(out / name), "--no-progress", *args])
    cli([*adapt_args(data, out / "adapted"), "--no-progress"])
    cli(["evaluate", "--data", str(data / "test"), "--out", str(report),
         "--model", *[str(out / name) for name in plan], "default", str(out / "adapted")])
    png = report / "screenshot.png"
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", "--window-size=1100,2400",
                        f"--screenshot={png.resolve()}", (report / "report.html").resolve()
                        .as_uri()], check=True, capture_output=True, timeout=120)
        print(f"screenshot of the report: {png}")
    else:
        print("no chromium: no screenshot (apt-get install chromium)")
    voices = by_voice(data, report)
    summary = json.loads((report / "results.json").read_text())["summary"]
    sisnri = {k: v["si_snri"]["mean"] for k, v in summary.items()}
    pesq = {k: v["pesq"]["mean"] for k, v in summary.items()}
    gating = max(sisnri["spectral-gating"], sisnri["spectral-gating-stationary"])
    real = voices[REAL_VOICE]
    checks = [
        ("default >= 8 dB SI-SNRi", sisnri["default"], 8.0),
        ("adapted - default >= 1 dB SI-SNRi", sisnri["adapted"] - sisnri["default"], 1.0),
        *((f"default improves {metric} on the real Czech voice",
           real["default"][metric] - real["noisy"][metric], 1e-9)
          for metric in ("si_snr", "pesq", "estoi")),
        ("mixit - best spectral gating >= 3 dB SI-SNRi", sisnri["mixit"] - gating, 3.0),
        ("supervised - mixit <= 1.5 dB SI-SNRi", sisnri["mixit"] - sisnri["supervised"],
         -1.5),
        ("remixit - mixit >= 1 dB SI-SNRi", sisnri["remixit"] - sisnri["mixit"], 1.0),
        ("remixit PESQ > mixit PESQ", pesq["remixit"] - pesq["mixit"], 1e-9),
        ("shift-remixit - shift-supervised >= 1 dB SI-SNRi",
         sisnri["shift-remixit"] - sisnri["shift-supervised"], 1.0),
        ("shift-remixit PESQ > shift-supervised PESQ",
         pesq["shift-remixit"] - pesq["shift-supervised"], 1e-9),
    ]
    print(f"\ntargets (budget: {steps} steps from scratch, {remixit_steps} RemixIT steps; "
          "batch 8 x 4 s)")
    for label, value, bound in checks:
        print(f"  {'met ' if value >= bound else 'MISSED'}  {label}: {value:+.2f}")


REAL_VOICE = "czech:m"  # the one recorded (not synthesised) voice of small's test split


def by_voice(data: Path, report: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Mean scores per test voice (results.json joined with the corpus manifest), printed
    as tables; returns ``voice -> method -> metric -> mean``."""
    voices = {}
    for line in (data / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("split") == "test" and "voice" in record:
            voices[record["name"] + ".wav"] = record["voice"]
    results = json.loads((report / "results.json").read_text())
    names = sorted(set(voices.values()))
    means: dict[str, dict[str, dict[str, float]]] = {v: {} for v in names}
    for v in names:
        for method in results["methods"]:
            rows = [r["scores"] for r in results["files"]
                    if r["method"] == method and voices.get(r["file"]) == v]
            means[v][method] = {m: sum(x[m] for x in rows if m in x)
                                / max(1, sum(m in x for x in rows))
                                for m in ("si_snr", "si_snri", "pesq", "estoi")}
    for metric, label in (("si_snri", "SI-SNRi (dB)"), ("pesq", "PESQ"), ("estoi", "ESTOI")):
        print(f"\nmean {label} per test voice; files: "
              + ", ".join(f"{v} {sum(x == v for x in voices.values())}" for v in names))
        print(f"{'method':<28} | " + " | ".join(f"{v:>26}" for v in names))
        for method in results["methods"]:
            print(f"{method:<28} | " + " | ".join(f"{means[v][method][metric]:26.2f}"
                                                  for v in names))
    return means


def real_table(cli, data: Path, report: Path, models: list[str], limit: int | None) -> None:
    """The real-voice test split of the 'real' corpus: noisy, spectral gating, the five
    pretrained peers (``wildmix.peers``) and ``models`` (shipped names or runs), overall and
    per voice, with 95% CIs."""
    if not (data / "manifest.jsonl").exists():
        cli(["corpus", "build", str(data), "--size", "real"])
    argv = ["evaluate", "--data", str(data / "test"), "--out", str(report), "--baseline",
            ",".join(["noisy", "spectral-gating", *PEERS]), "--model", *models]
    cli(argv + (["--limit", str(limit)] if limit else []))
    per_voice_ci(data, report)
    per_voice_ci(data, report, group=language, title="language")


def language(voice: str) -> str:
    """The language of a test voice of the 'real' corpus: ``asterisk:it_IT_m_Carlo`` -> it,
    ``klettres:pt_BR`` -> pt, ``czech:m`` -> cs."""
    engine, name = voice.split(":", 1)
    return "cs" if engine == "czech" else name.split("_")[0]


def per_voice_ci(data: Path, report: Path, group=lambda voice: voice,
                 title: str = "voice") -> dict:
    """SI-SNRi, PESQ and ESTOI of every method per test voice (or per ``group(voice)``, e.g.
    its language), mean ± 95% CI, as one markdown table per metric; returns
    ``group -> method -> metric -> (mean, ci, n)``."""
    from wildmix.evaluate import mean_ci

    voice_of = {}
    for line in (data / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("split") == "test" and "voice" in record:
            voice_of[record["name"] + ".wav"] = group(record["voice"])
    results = json.loads((report / "results.json").read_text())
    names = sorted({voice_of[r["file"]] for r in results["files"] if r["file"] in voice_of})
    table: dict = {v: {} for v in names}
    for v in names:
        for method in results["methods"]:
            rows = [r["scores"] for r in results["files"]
                    if r["method"] == method and voice_of.get(r["file"]) == v]
            table[v][method] = {m: mean_ci(x.get(m) for x in rows)
                                for m in ("si_snri", "pesq", "estoi")}
    for metric, label in (("si_snri", "SI-SNRi dB"), ("pesq", "PESQ"), ("estoi", "ESTOI")):
        files = {v: table[v]["noisy"][metric][2] for v in names}
        print(f"\n{label} by test {title} (files: "
              + ", ".join(f"{v} {n}" for v, n in files.items()) + ")\n")
        print("| method | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        digits = 3 if metric == "estoi" else 2
        for method in results["methods"]:
            cells = [f"{m:.{digits}f} ± {c:.{digits}f}" for m, c, _ in
                     (table[v][method][metric] for v in names)]
            print(f"| {method} | " + " | ".join(cells) + " |")
    return table


def voices(data: Path, runs_: list[str]) -> None:
    """Per voice of the valid and test splits: mean SI-SNRi of each model on the noisy
    files, and how much of the clean speech alone it keeps (SI-SNR of its output for the
    clean file: a model that takes a voice for noise scores low here)."""
    import numpy as np
    import soundfile as sf
    import torch

    from wildmix import losses
    from wildmix.enhance import Enhancer

    records = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]
    items = [r for r in records if r.get("split") in ("valid", "test") and "voice" in r]
    print(f"\n{'model':<24} | {'split':<5} | {'voice':<28} | files | SI-SNRi dB | "
          "clean kept, SI-SNR dB")
    for run in runs_:
        enhancer = Enhancer.from_checkpoint(run)
        rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for r in items:
            noisy, _ = sf.read(str(data / r["files"]["noisy"]), dtype="float32")
            clean, rate = sf.read(str(data / r["files"]["clean"]), dtype="float32")
            ref = torch.from_numpy(clean)
            score = [float(losses.sisnr(torch.from_numpy(np.ascontiguousarray(x)), ref))
                     for x in (enhancer.enhance(noisy, rate), noisy,
                               enhancer.enhance(clean, rate))]
            rows.setdefault((r["split"], r["voice"]), []).append(
                (score[0] - score[1], score[2]))
        for (split, voice), values in sorted(rows.items()):
            gains, kept = zip(*values, strict=True)
            print(f"{run:<24} | {split:<5} | {voice:<28} | {len(values):5d} | "
                  f"{np.mean(gains):+10.2f} | {np.mean(kept):8.1f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000,
                        help="steps of each model trained from scratch (the demo's budget)")
    parser.add_argument("--remixit-steps", type=int, default=1500)
    parser.add_argument("--curve", type=float, metavar="MINUTES",
                        help="instead: MixIT for this many minutes, SI-SNRi against time")
    parser.add_argument("--model", default="stft")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--data", default="data/corpus-small")
    parser.add_argument("--shift-data", default="data/corpus-shift")
    parser.add_argument("--out", default="runs/quality")
    parser.add_argument("--report", default="reports/quality")
    parser.add_argument("--plot-only", nargs="*", help="draw the curve of existing runs")
    parser.add_argument("--augment", action="store_true",
                        help="--curve: train with wildmix train --augment (speed and EQ)")
    for flag in CURVE_WEIGHTS:
        parser.add_argument(f"--{flag}", type=float,
                            help=f"--curve: train with wildmix train --{flag} W")
    parser.add_argument("--by-voice", action="store_true",
                        help="only print SI-SNRi per test voice of an existing report")
    parser.add_argument("--voices", nargs="+", metavar="MODEL",
                        help="only per-voice SI-SNRi and kept clean speech of these models "
                             "on the valid and test splits")
    parser.add_argument("--real", nargs="*", metavar="MODEL",
                        help="instead: the real-voice test split of the 'real' corpus "
                             "(--real-data) with the peers, the shipped models and these")
    parser.add_argument("--real-data", default="data/corpus-real")
    parser.add_argument("--limit", type=int, help="--real: only the first N test files")
    parser.add_argument("--compare", action="store_true",
                        help="train each variant of VARIANTS for --steps (default 2000)")
    args = parser.parse_args(argv)

    from wildmix.cli import main as wildmix

    def cli(argv):
        if wildmix(argv) != 0:
            raise SystemExit(f"failed: wildmix {' '.join(argv)}")

    if args.real is not None:
        real_table(cli, Path(args.real_data), Path(args.report) / "real",
                   ["v1", "v2", "default", *args.real], args.limit)
        return None
    if args.voices:
        voices(Path(args.data), args.voices)
        return None
    if args.by_voice:
        by_voice(Path(args.data), Path(args.report))
        return None
    if args.compare:
        return compare(cli, Path(args.data), Path(args.out),
                       2000 if args.steps == 3000 else args.steps)
    if args.curve is None and args.plot_only is None:
        return table(cli, Path(args.data), Path(args.shift_data), Path(args.out),
                     Path(args.report), args.steps, args.remixit_steps)
    if args.plot_only:
        runs_ = [Path(r) for r in args.plot_only]
    else:
        data = Path(args.data)
        if not (data / "manifest.jsonl").exists():
            cli(["corpus", "build", str(data), "--size", "small"])
        weights = {flag: getattr(args, flag.replace("-", "_")) for flag in CURVE_WEIGHTS}
        name = (f"{args.model}-{args.preset}-{args.curve:g}min" + ("-augment" * args.augment)
                + "".join(f"-{flag}{w:g}" for flag, w in weights.items() if w is not None))
        run = Path(args.out) / name
        cli(["train", "--data", str(data), "--out", str(run), "--model", args.model,
             "--preset", args.preset, "--max-minutes", str(args.curve), "--max-steps", "100000",
             *(["--augment"] if args.augment else []),
             *[a for flag, w in weights.items() if w is not None
               for a in (f"--{flag}", str(w))]])
        cli(["enhance", str(run), str(data / "test" / "noisy"), "--out",
             str(run / "enhanced-test"), "--no-progress"])
        cli(["score", str(data / "test"), str(run / "enhanced-test")])
        runs_ = [run]
    for run in runs_:
        print(f"\n{run}: validation SI-SNRi against training time")
        print(f"{'minutes':>8} | {'step':>6} | {'SI-SNRi dB':>10}")
        print("-" * 31)
        for minutes, step, sisnri in curve(run):
            print(f"{minutes:8.1f} | {step:6d} | {sisnri:10.2f}")
        drift(run)
        speech_share(run, Path(args.data))
    png = runs_[0] / "sisnri_vs_time.png"
    plot(runs_, png)
    print(f"\ncurve: {png}")


if __name__ == "__main__":
    main()
