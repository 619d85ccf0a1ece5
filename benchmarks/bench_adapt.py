"""Adaptation to a user's noisy recordings, without labels, on real voices; peers beside.

    python benchmarks/bench_adapt.py --teachers [auto nsnet2 ...] --situations library [real]
        [--real-teachers auto ...] [--jobs 2]
    python benchmarks/bench_adapt.py [--minutes 6] [--situations new-noise small [real]]
        [--methods adapt-remixit ...]

``--teachers`` (`make bench-adapt`): `wildmix adapt` from the shipped model with each
teacher (``auto``: plain `wildmix adapt`, the consensus of the four peers and the shipped
model; ``ensemble``: the consensus of the four peers) in the
sound library's valid and test situations (:func:`build_library`: packages that trained no
shipped model, every other voice's noisy files the recordings), optionally the 'real'
situation below; every peer beside, per voice, each run's steps and wall time, the issue's
targets, and the rank correlation of the label-free check with SI-SNRi over the runs'
checkpoints. ``--jobs 2`` runs two at a time, each on one thread. A run whose folder holds
``wall.json`` is not run again (delete the folder to rerun it).

Without it, the adaptation methods without a teacher:

Situations built like a user's:

- new-noise: the voices, files and SNRs of 'real' below, each clean file mixed again with
  noise that no wildmix corpus or model has used: vehicles and machines (OpenTTD's sound
  set), music (X-Moto) and water, fire and tools (Minetest), sounds of 1 s or more,
  alternate sounds to the recordings and to the test set. The shipped model has never
  heard these noises, as a user's recordings would be new to it.
- real: the real-voice test split of the 'real' corpus (voices, languages and noise files
  that no shipped model trained on), its nine voices split in two. The noisy files of five
  voices are the user's folder of recordings (no labels); the noise parts of those same
  files are the optional folder of noise-only clips; the other four voices, in the same
  kinds of noise, are the paired test set.
- small: the built-in corpus as `make demo` uses it: train/noisy as the recordings,
  train/noise as the noise clips, the test split as the test set.

Methods, each starting from the shipped model with the same time budget (``--minutes``):
`wildmix adapt` with RemixIT on the consensus of the peers and the shipped model (recordings
only, the default: ``--teacher auto``), with RemixIT taught by the shipped
model itself (``--teacher default``, as every other RemixIT row; recordings only), with
RemixIT choosing best.pt by DNSMOS on held-back recordings (recordings only, label-free),
with MixIT and VAD-found noise (recordings only), with MixIT whose noise-only mixtures are
the shipped model's noise estimates of the recordings (recordings only), with MixIT on the
pauses of the recordings where the shipped model hears no speech (recordings only), with
MixIT and the noise clips, and supervised fine-tuning on clean speech of the 'real'
corpus's training voices mixed with the pauses (recordings only) or with the noise clips,
and RemixIT with that supervised fine-tuning beside it (`wildmix adapt --speech`: each
batch trains on both; pauses or noise clips). Beside them: the noisy input, the shipped
model, the five peers, and a ceiling that is not label-free (``oracle-own-clean``):
supervised fine-tuning on the recordings themselves, paired with their true clean speech
(the recordings minus their noise), what a method that learned from these recordings
without mistakes could reach at this budget. One table per situation (SI-SNRi, PESQ, ESTOI
with 95% CIs, then per voice, then DNSMOS of the test set's noisy and clean files as a
sanity check), the issue's targets checked, and the rank correlation between DNSMOS and
SI-SNRi over the validations of a run that logs both (RemixIT on the new-noise recordings,
validated every 250 steps on paired files of the 'real' corpus's valid voices in new-noise
sounds of the recordings' half: voices and noise files in neither the recordings nor the
test set). The default situations are new-noise and small (about 2 h 20 min on 2 cores at
6 minutes per method); ``real`` adds an hour; ``--situations new-noise-valid`` runs the
methods on those valid voices instead, for choosing settings. """

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import bench_quality
import numpy as np

from wildmix import teachers

REAL_ADAPT_VOICES = 5  # of the 9 test voices (sorted, every other one): the recordings
NEW_NOISE = {  # Debian package -> its sounds: noise that no wildmix corpus or model has used
    "openttd-opensfx": "/usr/share/games/openttd/baseset/opensfx/opensfx.cat",  # vehicles
    "xmoto-data": "/usr/share/games/xmoto/Textures/Musics/*.ogg",  # music
    "minetest-data": "/usr/share/games/minetest/games/minetest_game/mods/*/sounds/*.ogg",
}
# methods without noise clips
RECORDINGS_ONLY = ("adapt-remixit-peers", "adapt-remixit", "adapt-remixit-dnsmos",
                   "adapt-mixit-vad", "adapt-mixit-teacher", "adapt-mixit-pauses",
                   "adapt-supervised-pauses", "adapt-remixit-speech-pauses")
WITH_NOISE_CLIPS = ("adapt-mixit-noise", "adapt-supervised-noise", "adapt-remixit-speech-noise")
ORACLE = "oracle-own-clean"  # supervised on the recordings' own clean speech: a ceiling
ORACLE_LR = 2e-4  # the best of 5e-5, 2e-4, 1e-3 on new-noise-valid (see the README)
MIN_NOISE_SECONDS = 1.0  # shorter sounds (footsteps, clicks) would loop into a buzz


def split_voices(corpus: Path, split: str = "test") -> tuple[list[dict], set[str]]:
    """A split's records of the 'real' corpus and its voices (every other one) that are the
    user's recordings."""
    records = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text()
               .splitlines()[1:]]
    test = [r for r in records if r.get("split") == split and "voice" in r]
    voices = sorted({r["voice"] for r in test})
    adapt = set(voices[::2])
    assert split != "test" or len(adapt) == REAL_ADAPT_VOICES, voices
    print(f"recordings of {', '.join(sorted(adapt))}; test set: "
          f"{', '.join(v for v in voices if v not in adapt)}")
    return test, adapt


def build_real(corpus: Path, out: Path) -> Path:
    """The 'real' situation as a folder of links: recordings/, noise/, test/{noisy,clean}."""
    test, adapt = split_voices(corpus)
    for r in test:
        targets = ({"recordings": r["files"]["noisy"], "noise": r["files"]["noise"]}
                   if r["voice"] in adapt else
                   {"test/noisy": r["files"]["noisy"], "test/clean": r["files"]["clean"]})
        for folder, rel in targets.items():
            link = out / folder / Path(rel).name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                os.symlink((corpus / rel).resolve(), link)
    return out


def build_library(rendered: Path, out: Path) -> Path:
    """A situation from a rendered set of the sound library (``make library-sets``): the
    noisy files of every other voice are the recordings (no labels), the other voices'
    noisy/clean pairs the test set; links, like :func:`build_real`."""
    records = [json.loads(line) for line in (rendered / "manifest.jsonl").read_text()
               .splitlines()]
    voices = sorted({r["voice"] for r in records})
    adapt = set(voices[::2])
    for r in records:
        file = r["name"] + ".wav"
        targets = ({"recordings": rendered / "noisy" / file} if r["voice"] in adapt else
                   {"test/noisy": rendered / "noisy" / file,
                    "test/clean": rendered / "clean" / file})
        for folder, src in targets.items():
            link = out / folder / file
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                os.symlink(src.resolve(), link)
    return out


def opensfx(path: Path) -> list[tuple[str, bytes]]:
    """``(name, WAV bytes)`` of every sound in OpenTTD's sound catalogue."""
    from wildmix.corpus.library import opensfx as sounds

    return [(f"{path.name}#{k}", wav) for k, wav in enumerate(sounds(str(path)))]


def new_noises(sample_rate: int) -> list[tuple[str, np.ndarray]]:
    """Every sound of NEW_NOISE at least MIN_NOISE_SECONDS long, mono at ``sample_rate``."""
    import soundfile as sf

    from wildmix import audio

    sounds = []
    for package, pattern in NEW_NOISE.items():
        paths = sorted(glob.glob(pattern))
        if not paths:
            raise SystemExit(f"no {pattern}: install the Debian package {package}")
        for path in paths:
            entries = opensfx(Path(path)) if path.endswith(".cat") else [(path, path)]
            for name, source in entries:
                try:
                    x, sr = sf.read(io.BytesIO(source) if isinstance(source, bytes) else source,
                                    dtype="float32", always_2d=True)
                except sf.LibsndfileError:  # the set's empty placeholder entries
                    continue
                x = audio.resample(audio.to_mono(x), sr, sample_rate)
                if len(x) >= MIN_NOISE_SECONDS * sample_rate and audio.rms(x) > 1e-4:
                    sounds.append((f"{package}:{name}", x))
    return sounds


def build_new(corpus: Path, out: Path, split: str = "test") -> Path:
    """The 'new-noise' situation: the same voices and SNRs as 'real', each clean file mixed
    again with a sound of NEW_NOISE (alternate sounds to the recordings and to the test set,
    so the two share kinds of noise but no file), as real files with a sources.json.
    ``split="valid"``, for choosing settings: the 'real' corpus's valid voices, with sounds
    of the recordings' half only, so that no test voice or test noise file is in it."""
    from wildmix import audio

    if (out / "sources.json").exists():
        return out
    sr = json.loads((corpus / "manifest.jsonl").open().readline())["header"]["sample_rate"]
    test, adapt = split_voices(corpus, split)
    sounds = new_noises(sr)
    pools = ({True: sounds[::2], False: sounds[1::2]} if split == "test" else
             {True: sounds[::4], False: sounds[2::4]})
    used = {}
    for k, r in enumerate(test):
        rng = np.random.default_rng(k)
        clean = audio.read(corpus / r["files"]["clean"]).astype(np.float64)
        pool = pools[r["voice"] in adapt]
        name, x = pool[int(rng.integers(len(pool)))]
        x = np.tile(x, len(clean) // len(x) + 1)
        start = int(rng.integers(len(x) - len(clean) + 1))
        noise = x[start:start + len(clean)].astype(np.float64)
        noise *= np.sqrt(np.sum(clean ** 2) / (np.sum(noise ** 2) * 10 ** (r["snr_db"] / 10)))
        peak = max(1.0, np.abs(clean + noise).max() / 0.99)
        clean, noise = (clean / peak).astype(np.float32), (noise / peak).astype(np.float32)
        file = r["name"] + ".wav"
        parts = ({"recordings": clean + noise, "noise": noise} if r["voice"] in adapt else
                 {"test/noisy": clean + noise, "test/clean": clean})
        for folder, y in parts.items():
            audio.write(out / folder / file, y, sr)
        used[file] = name
    packages = {p: f"/usr/share/doc/{p}/copyright" for p in NEW_NOISE}
    (out / "sources.json").write_text(json.dumps({"licences": packages, "noise": used},
                                                 indent=1))
    print(f"new-noise situation in {out}: {len(sounds)} sounds of {', '.join(NEW_NOISE)}")
    return out


def methods(folder: Path, noise: Path, speech: Path, minutes: float) -> dict[str, list[str]]:
    """Run name -> `wildmix adapt` arguments; ``speech``: clean speech of other voices."""
    common = ["--data", str(folder), "--max-minutes", str(minutes), "--no-progress"]
    supervised = [*common, "--strategy", "supervised", "--speech", str(speech)]
    own = [*common, "--teacher", "default"]  # RemixIT taught by the shipped model itself
    return {
        "adapt-remixit-peers": common,  # the default: the peers' and the model's consensus
        "adapt-remixit": own,
        "adapt-remixit-dnsmos": [*own, "--select", "dnsmos"],
        "adapt-mixit-vad": [*common, "--strategy", "mixit", "--noise", "auto"],
        "adapt-mixit-teacher": [*common, "--strategy", "mixit", "--noise", "teacher"],
        "adapt-mixit-pauses": [*common, "--strategy", "mixit", "--noise", "pauses"],
        "adapt-mixit-noise": [*common, "--strategy", "mixit", "--noise", str(noise)],
        "adapt-supervised-pauses": supervised,
        "adapt-supervised-noise": [*supervised, "--noise", str(noise)],
        "adapt-remixit-speech-pauses": [*own, "--speech", str(speech)],
        "adapt-remixit-speech-noise": [*own, "--speech", str(speech), "--noise", str(noise)],
    }


def own_clean(recordings: Path, noise: Path, out: Path) -> Path:
    """The recordings' own clean speech, each recording minus its noise (same file names),
    written once to ``out``; for the oracle only."""
    from wildmix import audio

    if not out.is_dir():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted run
        for path in sorted(recordings.glob("*.wav")):
            if not (noise / path.name).is_file():
                raise SystemExit(f"{noise / path.name}: missing; the ceiling needs the noise "
                                 f"of every recording in {recordings} (delete the situation "
                                 "folder to rebuild it)")
            x, sr = audio.read(path), audio.info(path).sample_rate
            audio.write(tmp / path.name, x - audio.read(noise / path.name, sr), sr)
        tmp.rename(out)
    return out


def oracle(recordings: Path, clean: Path, minutes: float) -> list[str]:
    """`wildmix train` arguments of the ceiling: `wildmix adapt --strategy supervised`'s
    settings (start, augmentation, steps, time) but its own learning rate, the clean speech
    the recordings' own."""
    return ["train", "--strategy", "supervised", "--data", str(recordings), "--clean",
            str(clean), "--init", "default", "--augment", "--lr", str(ORACLE_LR),
            "--select", "none", "--max-minutes", str(minutes), "--no-progress"]


def situation(cli, name: str, recordings: Path, noise: Path, test: Path, corpus: Path,
              runs: Path, report: Path, minutes: float, speech: Path, clean: Path,
              only: list[str] | None = None) -> dict:
    done = []
    planned = {run: ["adapt", *args] for run, args in
               methods(recordings, noise, speech, minutes).items()}
    planned[ORACLE] = oracle(recordings, clean, minutes)
    for run, args in planned.items():
        if only is not None and run not in only:
            continue
        try:
            cli([*args, "--out", str(runs / run)])
            done.append(run)
        except SystemExit as e:  # a method that cannot run here is a result too
            print(f"{run}: {e} (its line above says why)")
    cli(["evaluate", "--data", str(test), "--out", str(report), "--baseline",
         ",".join(["noisy", *bench_quality.PEERS]), "--model", "default",
         *[str(runs / r) for r in done],
         "--no-progress"])
    print(f"\n## {name}: {recordings} (recordings), {test} (test)\n")
    print((report / "results.md").read_text())
    bench_quality.per_voice_ci(corpus, report)
    dnsmos_sanity(test)
    return json.loads((report / "results.json").read_text())["summary"]


def dnsmos_sanity(test: Path) -> None:
    """DNSMOS of a paired test set's noisy and clean files, beside each other (`wildmix
    evaluate`'s scoring): a non-intrusive score worth anything must rate the clean higher."""
    from wildmix import evaluate, mos

    results = evaluate.evaluate(test, {"noisy": evaluate.BASELINES["noisy"],
                                       "clean": evaluate.folder_method(test / "clean")},
                                metrics=mos.METRICS, keep_outputs=0, progress=False)
    print(f"\nDNSMOS sanity check\n\n{results.table()}")
    mean = {k: {m: v[m]["mean"] for m in mos.METRICS} for k, v in results.summary().items()}
    ok = all(mean["clean"][m] > mean["noisy"][m] for m in mos.METRICS)
    print(f"clean above noisy on {'every measure' if ok else 'NOT every measure'}")


def check(name: str, summary: dict, only: list[str] | None = None) -> None:
    mean = {m: {k: v["mean"] for k, v in entry.items() if isinstance(v, dict)}
            for m, entry in summary.items()}
    start = mean["default"]
    print(f"\ntargets, {name}:")
    for run in (*RECORDINGS_ONLY, *WITH_NOISE_CLIPS):
        if run not in mean and (only is None or run in only):
            print(f"  MISSED  {run}: did not run (see above)")
    for run in (r for r in RECORDINGS_ONLY if r in mean):
        gain = mean[run]["si_snri"] - start["si_snri"]
        kept = all(mean[run][m] >= start[m] for m in ("pesq", "estoi"))
        ok = gain >= 1.5 and kept
        print(f"  {'met ' if ok else 'MISSED'}  {run} (recordings only): {gain:+.2f} dB over "
              f"the shipped model (target +1.5), PESQ {mean[run]['pesq']:.2f} vs "
              f"{start['pesq']:.2f}, ESTOI {mean[run]['estoi']:.3f} vs {start['estoi']:.3f}")
    for run in (r for r in WITH_NOISE_CLIPS if r in mean):
        gap = mean[run]["si_snri"] - mean["nsnet2"]["si_snri"]
        print(f"  {'met ' if gap >= 1 else 'MISSED'}  {run} (with noise clips): {gap:+.2f} dB "
              f"over NSNet2 (target +1)")
    if ORACLE in mean:
        print(f"  ceiling: {ORACLE} (not label-free: the recordings' own clean speech) "
              f"{mean[ORACLE]['si_snri'] - start['si_snri']:+.2f} dB over the shipped model, "
              f"PESQ {mean[ORACLE]['pesq']:.2f}, ESTOI {mean[ORACLE]['estoi']:.3f}")


def spearman(a: list[float], b: list[float]) -> float:
    ranks = [np.argsort(np.argsort(x)) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


CRITERIA = {"dnsmos": ("valid_dnsmos_ovr", "DNSMOS OVR", ["--teacher", "default"]),
            "agreement": ("valid_agreement", "agreement dB", [])}  # key, label, adapt flags


def correlation(cli, recordings: Path, valid: Path, run: Path, minutes: float,
                criterion: str = "dnsmos") -> float | None:
    """Spearman correlation of a label-free criterion and SI-SNRi over the validations of
    `wildmix adapt` on ``recordings``, validated on the paired ``valid``: DNSMOS OVR with
    RemixIT taught by the shipped model, or the agreement with the teacher with the default
    teacher (``--teacher auto``)."""
    key, label, flags = CRITERIA[criterion]
    cli(["adapt", "--data", str(recordings), "--out", str(run), *flags, "--valid", str(valid),
         "--select", criterion, "--max-minutes", str(minutes), "--no-progress"])
    entries = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    rows = [(e["step"], e[key], e["valid_sisnri"]) for e in entries
            if key in e and "valid_sisnri" in e]
    print(f"\nlabel-free selection, {run}: {len(rows)} validations on {valid}")
    print(f"| step | {label} | SI-SNRi dB |\n|---|---|---|")
    for step, score, sisnri in rows:
        print(f"| {step} | {score:.3f} | {sisnri:+.2f} |")
    if len(rows) < 3:
        return None
    rho = spearman([r[1] for r in rows], [r[2] for r in rows])
    picked, best = max(rows, key=lambda r: r[1]), max(rows, key=lambda r: r[2])
    print(f"\nSpearman rank correlation ({label}, SI-SNRi): {rho:+.2f}; it picks step "
          f"{picked[0]} ({picked[2]:+.2f} dB), the best by SI-SNRi is step {best[0]} "
          f"({best[2]:+.2f} dB)")
    return rho


def agreement_correlations(cli, real: Path, small: Path, out: Path, minutes: float) -> None:
    """The agreement criterion against SI-SNRi in three situations, each validated on
    voices (and noise files) of neither its recordings nor the test sets."""
    new = build_new(real, out / "new-noise-situation") / "recordings"
    situations = {
        "new-noise": (new, build_new(real, out / "new-noise-valid-situation", "valid") / "test"),
        "real": (build_real(real, out / "real-situation") / "recordings", real / "valid"),
        "small": (small / "train" / "noisy", small / "valid")}
    rhos = {name: correlation(cli, rec, valid, out / f"agreement-{name}", minutes, "agreement")
            for name, (rec, valid) in situations.items()}
    print("\n| situation | Spearman (agreement, SI-SNRi) |\n|---|---|")
    for name, rho in rhos.items():
        print(f"| {name} | {'too few validations' if rho is None else f'{rho:+.2f}'} |")


# --- teachers: `wildmix adapt --teacher T` for each peer and the ensemble ----------------

TEACHERS = ("auto", "ensemble", "nsnet2", "gtcrn", "dtln", "dfn3", "rnnoise")
# auto: plain wildmix adapt; ensemble: the consensus of the four peers of its default teacher
FLAGS = {"auto": [], "ensemble": ["--teacher", ",".join(teachers.ENSEMBLE)]}
LIBRARY_SITUATIONS = {"library-valid": "valid-set", "library-test": "test-set"}


def teacher_situation(name: str, out: Path, library: Path, real: Path) -> tuple[Path, Path]:
    """A teacher situation (a name of :data:`LIBRARY_SITUATIONS`, or ``"real"``): its folder
    (recordings/, test/) and the rendered set or corpus whose manifest names the voices."""
    if name == "real":
        return build_real(real, out / "real-situation"), real
    rendered = library / LIBRARY_SITUATIONS[name]
    return build_library(rendered, out / f"{name}-situation"), rendered


def teacher_argv(folder: Path, run: Path, teacher: str, minutes: float) -> list[str]:
    """`wildmix adapt` from the shipped model with ``teacher`` (``auto``: no --teacher, the
    default), validated label-free (the check, which chooses best.pt) and, for the
    criterion's rank correlation only, on the paired test files."""
    return ["adapt", "--data", str(folder / "recordings"), "--out", str(run),
            *FLAGS.get(teacher, ["--teacher", teacher]), "--select", "check",
            "--valid", str(folder / "test"), "--max-minutes", str(minutes),
            "--max-steps", "1000000", "--no-progress"]


def run_all(cli, planned: list[tuple[Path, list[str]]], jobs: int) -> None:
    """Each planned run whose folder has no ``wall.json`` yet (delete the folder to rerun
    it); its wall time goes there. ``jobs`` > 1: that many at a time, each a process on
    one thread (OMP_NUM_THREADS=1), so that they share the cores fairly."""
    todo = [(run, argv) for run, argv in planned if not (run / "wall.json").exists()]
    if jobs <= 1:
        for run, argv in todo:
            begin = time.perf_counter()
            cli(argv)
            (run / "wall.json").write_text(json.dumps({"seconds": time.perf_counter() - begin}))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    active: dict = {}
    while todo or active:
        while todo and len(active) < jobs:
            run, argv = todo.pop(0)
            shutil.rmtree(run, ignore_errors=True)  # an interrupted run starts again
            run.parent.mkdir(parents=True, exist_ok=True)
            log = open(run.parent / f"{run.name}.log", "w")
            proc = subprocess.Popen([sys.executable, "-m", "wildmix", *argv], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            active[proc] = (run, time.perf_counter(), log)
            print(f"started {run} (log: {log.name})", flush=True)
        proc = next((p for p in active if p.poll() is not None), None)
        if proc is None:
            time.sleep(2)
            continue
        run, begin, log = active.pop(proc)
        log.close()
        if proc.returncode != 0:
            raise SystemExit(f"failed: {run} (see {log.name})")
        (run / "wall.json").write_text(json.dumps({"seconds": time.perf_counter() - begin}))


def teacher_report(cli, name: str, folder: Path, rendered: Path, report: Path,
                   minutes: float, runs: dict[str, Path]) -> None:
    """One situation's runs (:func:`teacher_argv`, one per teacher, the same budget each):
    the test table with every peer beside, per voice, the wall time of each run, the
    issue's targets and the criterion's rank correlation over the checkpoints."""
    cli(["evaluate", "--data", str(folder / "test"), "--out", str(report / name), "--baseline",
         ",".join(["noisy", *bench_quality.PEERS]), "--model", "default",
         *[str(r) for r in runs.values()], "--no-progress"])
    print(f"\n## {name}: {folder / 'recordings'} (recordings), {folder / 'test'} (test)\n")
    print((report / name / "results.md").read_text())
    bench_quality.per_voice_ci(rendered, report / name)
    summary = json.loads((report / name / "results.json").read_text())["summary"]
    mean = {m: {k: v["mean"] for k, v in e.items() if isinstance(v, dict)}
            for m, e in summary.items()}
    print("\n| run | budget | steps | teacher (members at the end) | wall time |\n"
          "|---|---|---|---|---|")
    for run in runs.values():
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        steps = max((r.get("step", 0) for r in rows), default=0)
        state = teachers.teacher_state(run / "check") \
            if (run / "check" / "teacher.json").exists() else None
        members = f"{' + '.join(state.names)} ({state.members})" if state else "-"
        wall = json.loads((run / "wall.json").read_text())["seconds"]
        print(f"| {run.name} | {minutes:g} min | {steps} | {members} | {wall / 60:.1f} min |")
    teacher_targets(name, mean, {t: r.name for t, r in runs.items()})
    check_correlation(name, list(runs.values()))


def teacher_targets(name: str, mean: dict, runs: dict[str, str]) -> None:
    """The issue's targets: --teacher nsnet2 >= NSNet2 + 1 dB with its PESQ and ESTOI; the
    ensemble >= the best peer on each measure; plain adapt as good as the best run."""
    measures = ("si_snri", "pesq", "estoi")
    print(f"\ntargets, {name}:")
    if "nsnet2" in runs and runs["nsnet2"] in mean:
        got, peer = mean[runs["nsnet2"]], mean["nsnet2"]
        ok = got["si_snri"] >= peer["si_snri"] + 1 and all(got[m] >= peer[m] for m in
                                                           ("pesq", "estoi"))
        print(f"  {'met ' if ok else 'MISSED'}  --teacher nsnet2: {got['si_snri']:+.2f} dB vs "
              f"NSNet2 {peer['si_snri']:+.2f} (target +1), PESQ {got['pesq']:.2f} vs "
              f"{peer['pesq']:.2f}, ESTOI {got['estoi']:.3f} vs {peer['estoi']:.3f}")
    for teacher, label in (("ensemble", "the ensemble teacher"), ("auto", "plain adapt")):
        if teacher not in runs or runs[teacher] not in mean:
            continue
        got = mean[runs[teacher]]
        for m in measures:
            best = max(bench_quality.PEERS, key=lambda p: mean[p][m])
            print(f"  {'met ' if got[m] >= mean[best][m] else 'MISSED'}  {label} on {m}: "
                  f"{got[m]:.3f} vs the best peer, {best}, {mean[best][m]:.3f}")
    if "auto" in runs and runs["auto"] in mean:
        got = mean[runs["auto"]]
        top = max((r for r in runs.values() if r in mean), key=lambda r: mean[r]["si_snri"])
        print(f"  {'met ' if top == runs['auto'] else 'MISSED'}  plain wildmix adapt the best "
              f"run: the best is {top} ({mean[top]['si_snri']:+.2f} dB; plain "
              f"{got['si_snri']:+.2f})")


def check_correlation(name: str, runs: list[Path]) -> None:
    """Spearman rank correlation of the label-free check and the true SI-SNRi over
    the validations of each run, and over all checkpoints of the situation together."""
    pooled = []
    print(f"\n| {name}: run | validations | Spearman (check, SI-SNRi) | picked | best |"
          "\n|---|---|---|---|---|")
    for run in runs:
        rows = [(e["step"], e["valid_check"], e["valid_sisnri"]) for e in
                (json.loads(line) for line in (run / "log.jsonl").read_text().splitlines())
                if "valid_check" in e and "valid_sisnri" in e]
        pooled += rows
        if len(rows) < 3:
            print(f"| {run.name} | {len(rows)} | too few | | |")
            continue
        picked, best = max(rows, key=lambda r: r[1]), max(rows, key=lambda r: r[2])
        rho = spearman([r[1] for r in rows], [r[2] for r in rows])
        print(f"| {run.name} | {len(rows)} | {rho:+.2f} | step {picked[0]} "
              f"({picked[2]:+.2f} dB) | step {best[0]} ({best[2]:+.2f} dB) |")
    if len(pooled) >= 3:
        print(f"\nall {len(pooled)} checkpoints of {name}: Spearman "
              f"{spearman([r[1] for r in pooled], [r[2] for r in pooled]):+.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0,
                        help="time budget of each adaptation (default: %(default)s)")
    parser.add_argument("--situations", nargs="+", default=["new-noise", "small"],
                        choices=["new-noise", "real", "small", "new-noise-valid", "valid",
                                 "test", "library"],
                        help="with --teachers: valid, test or library (both)")
    parser.add_argument("--real-data", default="data/corpus-real")
    parser.add_argument("--small-data", default="data/corpus-small")
    parser.add_argument("--out", default="runs/adapt-bench")
    parser.add_argument("--report", default="reports/adapt")
    parser.add_argument("--methods", nargs="+",
                        choices=[*methods(*[Path()] * 3, 0), ORACLE],
                        help="only these adaptation methods (default: all)")
    parser.add_argument("--no-correlation", action="store_true")
    parser.add_argument("--agreement", action="store_true",
                        help="only the agreement criterion's rank correlation with SI-SNRi "
                             "in three situations (new noise, real, small)")
    parser.add_argument("--teachers", nargs="*", choices=TEACHERS, default=None,
                        help="adapt with each of these teachers (none given: all) in the "
                             "sound library's valid and test situations, peers beside; "
                             "the issue's targets and the criterion's correlations")
    parser.add_argument("--real-teachers", nargs="+", choices=TEACHERS,
                        help="with --teachers and --situations real: the teachers there "
                             "(default: those of --teachers)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="with --teachers: runs at a time, each on one thread "
                             "(default: %(default)s)")
    parser.add_argument("--library", default="data/library",
                        help="the sound library with its rendered valid/test sets "
                             "(make library-sets)")
    parser.add_argument("--baselines-only", action="store_true",
                        help="build the situations and evaluate the shipped model and the "
                             "peers on them, nothing adapted (minutes)")
    args = parser.parse_args(argv)
    if args.baselines_only:
        args.methods, args.no_correlation = [], True

    from wildmix.cli import main as wildmix

    def cli(argv):
        if wildmix(argv) != 0:
            raise SystemExit(f"failed: wildmix {' '.join(argv)}")

    out, report = Path(args.out), Path(args.report)
    if args.teachers is not None:
        names = [n for n in LIBRARY_SITUATIONS
                 if n.split("-")[1] in args.situations or "library" in args.situations]
        # the 'real' corpus's test voices, in noise the shipped model knows
        names += ["real"] if "real" in args.situations else []
        situations = {}  # name -> (folder, rendered or corpus, teachers)
        for name in names:
            teachers_ = (args.real_teachers if name == "real" else None) or args.teachers
            folder, rendered = teacher_situation(name, out, Path(args.library),
                                                 Path(args.real_data))
            situations[name] = (folder, rendered, list(teachers_ or TEACHERS))
        runs = {name: {t: out / name / f"adapt-{t}" for t in ts}
                for name, (_, _, ts) in situations.items()}
        run_all(cli, [(run, teacher_argv(situations[name][0], run, t, args.minutes))
                      for name, rs in runs.items() for t, run in rs.items()], args.jobs)
        print(f"each run: {args.minutes:g} minutes of training from the shipped model; "
              f"{args.jobs} run(s) at a time" + (", one thread each" if args.jobs > 1 else ""))
        for name, (folder, rendered, _) in situations.items():
            teacher_report(cli, name, folder, rendered, report, args.minutes, runs[name])
        return
    real, small = Path(args.real_data), Path(args.small_data)
    for corpus, size in ((real, "real"), (small, "small")):
        if not (corpus / "manifest.jsonl").exists():
            cli(["corpus", "build", str(corpus), "--size", size])
    if args.agreement:
        agreement_correlations(cli, real, small, out, args.minutes)
        return
    speech = real / "train" / "clean"  # the supervised methods' clean speech: the 'real'
    # corpus's training voices, none of them in any situation's recordings or test set

    def measure(name: str, title: str, folder: Path, corpus: Path, recordings: str = "recordings",
                noise: str = "noise", test: str = "test", clean: Path | None = None) -> None:
        clean = clean or own_clean(folder / recordings, folder / noise, folder / "own-clean")
        check(name, situation(cli, title, folder / recordings, folder / noise, folder / test,
                              corpus, out / name, report / name, args.minutes, speech, clean,
                              args.methods), args.methods)

    if "real" in args.situations:
        measure("real", "real voices", build_real(real, out / "real-situation"), real)
    if "new-noise" in args.situations:
        measure("new-noise", "real voices in new noise",
                build_new(real, out / "new-noise-situation"), real)
    if "new-noise-valid" in args.situations:  # for choosing settings, not in the default
        measure("new-noise-valid", "valid voices in new noise",
                build_new(real, out / "new-noise-valid-situation", split="valid"), real)
    if "small" in args.situations:
        measure("small", "built-in small corpus", small, small, "train/noisy", "train/noise",
                clean=small / "train" / "clean")
    if not args.no_correlation:  # voices and noise files in neither recordings nor test
        valid = build_new(real, out / "new-noise-valid-situation", split="valid") / "test"
        correlation(cli, build_new(real, out / "new-noise-situation") / "recordings", valid,
                    out / "correlation", args.minutes)


if __name__ == "__main__":
    main()
