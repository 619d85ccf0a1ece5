"""How to combine teachers: what `wildmix adapt` trains toward, before any student.

    python benchmarks/bench_ensemble.py [--situations library-valid library-test real]
        [--temperatures 1 2 4]

On the paired test files of `make bench-adapt`'s situations (built here the same way: the
sound library's valid and test situations, packages that trained no shipped model, and the
'real' corpus's test voices), each teacher alone (the four peers of
:data:`wildmix.teachers.ENSEMBLE` and the shipped model, without its attenuation limit, as
`wildmix adapt` runs them), their plain mean and their consensus
(:func:`wildmix.teachers.combine`) at each temperature, for the four peers and for the
four with the shipped model (`wildmix adapt`'s default). SI-SNRi, PESQ, ESTOI with 95%
intervals, then per voice. The temperature is chosen on library-valid only; the other
two situations report it. The RTF column is not a speed measure here: the members' outputs
are computed together, once per file, and counted in the first member's row (NSNet2's);
the other rows count only what they add (the combinations: the combining).

Then how much each teacher changes clean speech (its SI-SNR against its input, median over
files; a denoiser should leave clean speech as it is): the test sets' clean references
(the first ``--identity-files`` of each) and the label-free check's speech
(:data:`wildmix.teachers.SPEECH`). Where the peers change a test set's references and the
shipped model does not, that set rewards what the shipped model learned of those voices'
packages, which the check, of other voices, cannot see.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import bench_adapt
import bench_quality
import numpy as np

from wildmix import evaluate, teachers


class Members:
    """Each member's speech estimate of the last input, computed once for all the methods
    that combine them (:func:`wildmix.evaluate.evaluate` runs every method on one file
    before the next)."""

    def __init__(self, names: list[str]):
        self.run = {n: teachers.estimator(n) for n in names}
        self.key, self.outputs = None, {}

    def __call__(self, x: np.ndarray, rate: int) -> dict[str, np.ndarray]:
        key = (len(x), rate, hash(x.tobytes()))
        if key != self.key:
            self.key, self.outputs = key, {n: f(x, rate) for n, f in self.run.items()}
        return self.outputs


def methods(members: Members, sets: dict[str, list[str]], temperatures: list[float]) -> dict:
    """Each member alone, then for each set its mean and its consensus per temperature."""
    out = {n: (lambda x, rate, n=n: members(x, rate)[n]) for n in members.run}
    for label, names in sets.items():
        def pick(x, rate, names=names):
            return [members(x, rate)[n] for n in names]
        out[f"mean {label}"] = lambda x, rate, pick=pick: np.mean(pick(x, rate), 0)
        for t in temperatures:
            out[f"consensus {t:g} dB {label}"] = (
                lambda x, rate, pick=pick, t=t: teachers.combine(pick(x, rate), rate, t))
    return out


def identity(members: Members, files: list[Path]) -> dict[str, float]:
    """Median SI-SNR (dB) of each member's output of the clean ``files`` against them."""
    from wildmix import audio

    scores: dict[str, list[float]] = {n: [] for n in members.run}
    for path in files:
        x, rate = audio.read(path, check=False), audio.info(path).sample_rate
        for name, y in members(x, rate).items():
            scores[name].append(evaluate.si_snr(y, x))
    return {n: float(np.median(v)) for n, v in scores.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--situations", nargs="+", default=["library-valid", "library-test",
                                                            "real"],
                        choices=[*bench_adapt.LIBRARY_SITUATIONS, "real"])
    parser.add_argument("--temperatures", nargs="+", type=float, default=[1.0, 2.0, 4.0])
    parser.add_argument("--library", default="data/library")
    parser.add_argument("--real-data", default="data/corpus-real")
    parser.add_argument("--out", default="runs/adapt-bench")
    parser.add_argument("--report", default="reports/ensemble")
    parser.add_argument("--limit", type=int, help="only the first N files of each (a smoke test)")
    parser.add_argument("--identity-files", type=int, default=30,
                        help="clean references of each test set run through each teacher")
    args = parser.parse_args(argv)
    names = [*teachers.ENSEMBLE, "default"]
    members = Members(names)
    sets = {"(4 peers)": list(teachers.ENSEMBLE), "(4 peers + v5)": names}
    found = {n: bench_adapt.teacher_situation(n, Path(args.out), Path(args.library),
                                      Path(args.real_data)) for n in args.situations}
    print(f"temperatures {', '.join(f'{t:g}' for t in args.temperatures)} dB; "
          f"the default: {teachers.CONSENSUS_DB:g} dB, blocks of "
          f"{teachers.CONSENSUS_SECONDS:g} s")
    for name, (folder, manifest) in found.items():
        test = folder / "test"
        results = evaluate.evaluate(test, {"noisy": evaluate.BASELINES["noisy"],
                                           **methods(members, sets, args.temperatures)},
                                    limit=args.limit, keep_outputs=0, progress=False)
        report = Path(args.report) / name
        results.save(report, examples=0)
        print(f"\n## {name}: {test}\n\n{results.table()}\n")
        bench_quality.per_voice_ci(manifest, report)
    rows = {"the check's speech": teachers.speech_files()}
    for name, (folder, _) in found.items():
        rows[f"{name} clean references"] = sorted((folder / "test" / "clean").glob("*.wav"))[
            :args.identity_files]
    print("\nHow much each teacher changes clean speech: SI-SNR (dB) of its output against "
          "its clean input, median\n")
    print(f"| input | files | {' | '.join(members.run)} |\n|---|---|"
          + "---|" * len(members.run))
    for label, files in rows.items():
        scores = identity(members, files)
        print(f"| {label} | {len(files)} | "
              + " | ".join(f"{scores[n]:.1f}" for n in members.run) + " |")


if __name__ == "__main__":
    main()
