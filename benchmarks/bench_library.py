"""The sound library: its size, the loader's speed, and quality on noise no model trained on.

    python benchmarks/bench_library.py --build         # decode the catalogue (make library)
    python benchmarks/bench_library.py --render        # the valid and test sets
    python benchmarks/bench_library.py --loader [--steps 300] [--init v4]  # dynamic vs rendered
    python benchmarks/bench_library.py --split valid MODEL...   # for decisions
    python benchmarks/bench_library.py --split test MODEL...    # once, at the end

The valid and test sets mix the `real` corpus's valid and test voices (real voices that
never train) with the library's valid and test packages (whole packages that never train)
at -5..15 dB (``mixing.EVAL_MIXING``). The quality tables put every pretrained peer beside
the models, overall, per kind of noise, per input-SNR band and per voice.

The loader benchmark trains a shipped model (``--init``, default the `default`) for
``--steps`` steps on dynamic mixing and on pre-rendered items (the `real` corpus's
noisy/clean pairs), alternately, twice each, and prints the median steps/s of each and
their ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from wildmix.peers import NAMES as PEERS

LIBRARY = Path("data/library")
CACHE = LIBRARY / "cache"
REAL = Path("data/corpus-real")
BANDS = ((-99, 0, "< 0 dB"), (0, 5, "0-5 dB"), (5, 10, "5-10 dB"), (10, 99, ">= 10 dB"))


def cli(argv: list[str]) -> None:
    from wildmix.cli import main

    print("$ wildmix " + " ".join(argv), flush=True)
    code = main(argv)
    if code:
        raise SystemExit(code)


def render() -> None:
    """``data/library/{valid,test}-set``: each valid/test clean file of the `real` corpus
    (voices interleaved, so that the first files of a set span its voices) with noise of
    the library's split of the same name."""
    from wildmix import mixing

    voices = {}
    for line in (REAL / "manifest.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("split") in ("valid", "test") and "voice" in r:
            voices[(r["split"], r["name"])] = r["voice"]
    for split in ("valid", "test"):
        by_voice: dict[str, list] = {}
        for (s, name), voice in sorted(voices.items()):
            if s == split:
                by_voice.setdefault(voice, []).append((str(REAL / split / "clean" /
                                                           f"{name}.wav"), voice))
        speech = [v[k] for k in range(max(map(len, by_voice.values())))
                  for v in by_voice.values() if k < len(v)]
        out = mixing.render(LIBRARY / f"{split}-set", speech, str(CACHE), split, seed=1)
        print(f"{out}: {len(speech)} files, {len(by_voice)} voices")


def quality(split: str, models: list[str], limit: int | None) -> None:
    data = LIBRARY / f"{split}-set"
    report = Path("reports") / f"library-{split}"
    argv = ["evaluate", "--data", str(data), "--out", str(report), "--baseline",
            ",".join(["noisy", *PEERS]), "--model", *models]
    cli(argv + (["--limit", str(limit)] if limit else []))
    manifest = {r["name"] + ".wav": r for r in map(json.loads, (data / "manifest.jsonl")
                                                  .read_text().splitlines())}
    results = json.loads((report / "results.json").read_text())

    def band(r):
        return next(label for lo, hi, label in BANDS if lo <= r["input_snr_db"] < hi)

    groups = {"kind of noise": lambda r: r["noises"][0].split(":")[0],
              "noise package": lambda r: r["noises"][0].split(":")[-1],
              "input SNR": band, "voice": lambda r: r["voice"]}
    for title, key in groups.items():
        table(results, manifest, key, title)


def table(results: dict, manifest: dict, key, title: str) -> None:
    """SI-SNRi, PESQ and ESTOI of every method per group of files, as markdown."""
    from wildmix.evaluate import mean_ci

    rows = [r for r in results["files"] if r["file"] in manifest]
    names = sorted({key(manifest[r["file"]]) for r in rows})
    for metric, label, digits in (("si_snri", "SI-SNRi dB", 2), ("pesq", "PESQ", 2),
                                  ("estoi", "ESTOI", 3)):
        counts = {g: sum(1 for r in rows if r["method"] == "noisy"
                         and key(manifest[r["file"]]) == g) for g in names}
        print(f"\n{label} by {title} (files: "
              + ", ".join(f"{g} {n}" for g, n in counts.items()) + ")\n")
        print("| method | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for method in results["methods"]:
            cells = []
            for g in names:
                mean, _, _ = mean_ci(r["scores"].get(metric) for r in rows
                                     if r["method"] == method
                                     and key(manifest[r["file"]]) == g)
                cells.append(f"{mean:.{digits}f}")
            print(f"| {method} | " + " | ".join(cells) + " |")


def loader(steps: int, init: str) -> None:
    """Median steps/s of training ``init``'s architecture (from its weights) on dynamic mixing
    and on pre-rendered pairs."""
    setups = {
        "dynamic mixing (library)": ["--speech", str(REAL / "train" / "clean"), "--noise",
                                     str(CACHE)],
        "pre-rendered pairs": ["--data", str(REAL / "train" / "noisy"), "--clean",
                               str(REAL / "train" / "clean")],
    }
    speeds: dict[str, list[float]] = {name: [] for name in setups}
    for round_ in range(2):
        for name, flags in setups.items():
            out = Path("runs") / f"bench-loader-{round_}-{len(speeds[name])}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            cli(["train", "--supervised", *flags, "--init", init, "--max-steps",
                 str(steps), "--valid-every", str(10 * steps), "--select", "none",
                 "--out", str(out), "--no-progress"])
            logged = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
            rates = [e["steps_per_s"] for e in logged if "steps_per_s" in e]
            speeds[name].append(statistics.median(rates[len(rates) // 4:]))
            print(f"{name}: {speeds[name][-1]:.2f} steps/s "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    print(f"\n| loader | steps/s ({init}, batch 8 x 4 s, {steps} steps, median of 2) |"
          "\n|---|---|")
    medians = {name: statistics.median(v) for name, v in speeds.items()}
    for name, value in medians.items():
        print(f"| {name} | {value:.2f} ({', '.join(f'{v:.2f}' for v in speeds[name])}) |")
    ratio = medians["dynamic mixing (library)"] / medians["pre-rendered pairs"]
    print(f"\ndynamic / pre-rendered: {ratio:.3f} (target >= 0.90)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="store_true")
    parser.add_argument("--render", action="store_true")
    parser.add_argument("--loader", action="store_true")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--init", default="default",
                        help="the model whose architecture --loader trains (default: default)")
    parser.add_argument("--split", choices=("valid", "test"))
    parser.add_argument("--limit", type=int)
    parser.add_argument("models", nargs="*", default=["default", "causal"])
    args = parser.parse_args()
    if args.build:
        cli(["corpus", "library", "build", str(CACHE), "--packages", str(LIBRARY / "packages")])
    if args.render:
        render()
    if args.loader:
        loader(args.steps, args.init)
    if args.split:
        quality(args.split, args.models, args.limit)


if __name__ == "__main__":
    main()
