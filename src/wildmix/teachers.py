"""Teachers for adaptation: speech estimates of a folder of recordings, computed once.

A teacher is a pretrained peer (:data:`wildmix.peers.NAMES`), a wildmix model (a shipped
name such as ``default``, a run folder or a checkpoint), or several of them: an ensemble,
whose estimate is the plain mean of its members' waveforms (measured on independent real
recordings, the mean of NSNet2, GTCRN, DTLN and DeepFilterNet3 scores above each of them).

The estimates are the slow part of an adaptation (the peers run frame by frame on one
thread each), so :func:`estimate_folder` computes them once, in worker processes, into a
folder beside the run (``NAME.wav`` for each recording ``NAME``, same length and rate), and
reuses them when the teachers and the recordings are unchanged. RemixIT then trains on
those estimates (:class:`wildmix.strategies.RemixIT` with cached targets).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from wildmix import audio, peers

log = logging.getLogger("wildmix")

# the ensemble of `wildmix adapt`'s default: the four peers whose mean was measured best
ENSEMBLE = ("nsnet2", "gtcrn", "dtln", "dfn3")
MANIFEST = "teacher.json"
CHECK_SECONDS = 10.0  # of each held-back recording in the consistency check
CHECK_SNR_DB = (0.0, 10.0)  # how far below the recording the added noise lies


def parse(spec: str) -> list[str]:
    """``"gtcrn,dtln"`` -> ``["gtcrn", "dtln"]``; each a peer or a wildmix model.

    Raises:
        ValueError: an empty list, or a name twice.
    """
    names = [t.strip() for t in spec.split(",") if t.strip()]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"--teacher needs one or more distinct names, got {spec!r}")
    return names


def best_available(start: str = "default") -> tuple[list[str], str]:
    """The best teacher this install has, and one line saying which: the peers' ensemble
    where the ``peers`` extra is installed, else ``start``, the model being adapted
    (RemixIT's own teacher)."""
    ready = [p for p in ENSEMBLE if peers.available()[p]]
    if len(ready) >= 2:
        return ready, (f"teacher: the ensemble of {', '.join(ready)} (the mean of their "
                       "estimates; the 'peers' extra)")
    return [start], (f"teacher: {start}, the model being adapted (install wildmix[peers] for "
                     "the peers' ensemble, a stronger teacher)")


def check(names: list[str]) -> None:
    """Fail before any work: a peer whose wheel is missing, a model that does not load.

    Raises:
        MissingExtra, CheckpointError, FileNotFoundError.
    """
    from wildmix import models

    for name in names:
        if name in peers.NAMES:
            peers.check(name)
        else:
            models.load_checkpoint(name)


def _estimator(name: str):
    """``(x (T,), sample_rate) -> (T,)``: the teacher's speech estimate, no attenuation
    limit (a model's own output 0)."""
    if name in peers.NAMES:
        return peers.method(name)
    from wildmix.enhance import Enhancer

    enhancer = Enhancer.from_checkpoint(name, device="cpu", atten_lim_db=math.inf)
    return enhancer.enhance


_WORKER: dict = {}


def _init_worker(names: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER["estimators"] = [_estimator(n) for n in names]


def _estimate_file(src: str, dst: str) -> None:
    """The ensemble's estimate of ``src`` written to ``dst``."""
    x = audio.read(src, check=False)
    rate = audio.info(src).sample_rate
    estimate = np.mean([f(x, rate) for f in _WORKER["estimators"]], axis=0)
    audio.write(dst, estimate.astype(np.float32), rate)


@dataclass
class Estimates:
    folder: Path  # NAME.wav for each recording NAME
    computed: int  # files estimated now
    reused: int  # files whose estimates were already there
    seconds: float  # wall-clock time spent here


def _stamp(path: str) -> list[int]:
    s = os.stat(path)
    return [s.st_size, s.st_mtime_ns]


def estimate_folder(recordings: list, root: str | os.PathLike, names: list[str],
                    out: str | os.PathLike, workers: int | None = None,
                    progress: bool = True) -> Estimates:
    """The teachers' (mean) speech estimate of every recording, into ``out``.

    Args:
        recordings: :class:`wildmix.data.Clip` of whole files under ``root``.
        names: the teachers (peers and/or wildmix models).
        workers: processes (default: all cores); each runs every teacher on whole files.
    Files already estimated by the same teachers from an unchanged recording are kept.
    """
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    old = json.loads(manifest.read_text()) if manifest.exists() else {}
    done = old.get("files", {}) if old.get("teachers") == names else {}
    jobs, files = [], {}
    for clip in recordings:
        rel = os.path.relpath(clip.path, root)
        dst = (out / rel).with_suffix(".wav")
        files[rel] = _stamp(clip.path)
        if done.get(rel) != files[rel] or not dst.exists():
            jobs.append((clip.path, str(dst)))
    if jobs:
        _run_jobs(jobs, names, workers, progress)
    audio.write_json(manifest, {"teachers": names, "files": files})
    return Estimates(out, len(jobs), len(files) - len(jobs), time.perf_counter() - start)


def _run_jobs(jobs: list[tuple[str, str]], names: list[str], workers: int | None,
              progress: bool) -> None:
    from tqdm import tqdm

    for _, dst in jobs:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    log.info("estimating %d recordings with %s (%d processes)", len(jobs), ", ".join(names),
             workers)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                             initializer=_init_worker, initargs=(names,)) as pool:
        results = pool.map(_estimate_file, *zip(*jobs, strict=True))
        for _ in tqdm(results, total=len(jobs), unit="file", desc="teacher",
                      disable=not progress):
            pass


@dataclass
class Adapted:
    summary: object  # wildmix.train.TrainSummary
    teacher: str  # one line: which teacher
    estimates: Estimates | None  # None: the model taught itself, on the fly
    seconds: float  # the whole call, estimates and training


def adapt(data: str, out: str, teacher: str = "auto", workers: int | None = None,
          progress: bool = True, refresh: str = "better", **options) -> Adapted:
    """``wildmix adapt``: RemixIT on the recordings in ``data`` from ``options["start"]``
    (default: the shipped model), its targets from ``teacher``: ``"auto"`` (the best
    available, :func:`best_available`), or names (:func:`parse`). A teacher other than the
    start model is run once over the recordings (:func:`estimate_folder`, into
    ``out/teacher``, copied to ``out/targets`` for training) and over the consistency
    check's files (:func:`consistency_set`, from a fifth of the recordings held back, into
    ``out/check``); ``refresh``: how the student joins the teacher at the validations
    (:data:`wildmix.config.REFRESH`, :func:`join`). The start model as teacher follows the
    student, as in :func:`wildmix.config.adapt_config`. Other strategies take no teacher.

    ``options``: the keyword arguments of :func:`wildmix.config.adapt_config`.
    Raises:
        ValueError, MissingExtra, CheckpointError: before any slow work.
    """
    from wildmix import data as wdata
    from wildmix.config import adapt_config, resolve
    from wildmix.lock import folder_lock
    from wildmix.train import train

    begin = time.perf_counter()
    start = options.get("start", "default")
    if options.get("strategy", "remixit") != "remixit":
        if teacher != "auto":
            raise ValueError("--teacher is for --strategy remixit")
        names, line = [start], ""
    else:
        names, line = best_available(start) if teacher == "auto" else \
            (parse(teacher), f"teacher: {teacher}")
    folder, targets, check_dir = (Path(out) / n for n in ("teacher", "targets", "check"))
    config = adapt_config(data, out, **options)
    cached = names != [start]
    if cached:
        config = dataclasses.replace(config, teacher_update="frozen",
                                     teacher_targets=str(targets), consistency=str(check_dir),
                                     teacher_refresh=refresh)
        check(names)
    resolve(config)  # bad settings or an unusable --from: refused before anything is written
    estimates = None
    with folder_lock(out, "adapt"):  # a folder in use: refused before any work
        if line:
            log.info("%s", line)
        if cached:
            index = wdata.index_folder(data)
            estimates = estimate_folder(index.clips, data, names, folder, workers, progress)
            if not (Path(out) / "last.pt").exists():  # a new run starts from the teacher
                _restart(folder, targets, check_dir)  # (a resumed one keeps its refreshes)
            config = _check(config, index, names, workers, progress)
    summary = train(config, progress)
    return Adapted(summary, line, estimates, time.perf_counter() - begin)


def _restart(estimates: Path, targets: Path, check_dir: Path) -> None:
    """The training targets of a new run: a copy of the teacher's estimates (the refresh
    changes the copy), and no check yet (built again from this run's recordings)."""
    import shutil

    tmp = targets.with_name(targets.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(estimates, tmp)
    shutil.rmtree(targets, ignore_errors=True)
    tmp.rename(targets)
    shutil.rmtree(check_dir, ignore_errors=True)


def _check(config, index, names: list[str], workers: int | None, progress: bool):
    """The consistency check's files and the teacher's score on them; without them (too
    few recordings, or no pauses) the run goes on without the check, said in one line."""
    from wildmix import data as wdata
    from wildmix.train import hold_back

    held = {c.path for c in hold_back(index.clips, config.valid_files, True)[1]}
    pairs = [p for p in wdata.paired_clips(config.data, config.teacher_targets)
             if p[0].path in held]
    try:
        if not pairs:
            raise wdata.DataError(f"{len(index.clips)} recordings are too few to hold any "
                                  "back (10 or more)")
        consistency_set(pairs, config.consistency, config.seed)
    except wdata.DataError as e:
        log.warning("no label-free check: %s; the teacher stays fixed and the last weights "
                    "are kept", e)
        return dataclasses.replace(config, consistency=None, teacher_refresh="none",
                                   select="none" if config.select in ("auto", "consistency")
                                   else config.select)
    state = score_teacher(config.consistency, names, workers, progress)
    log.info("label-free check on %d held-back recordings: the teacher's consistency %.2f dB"
             "%s", len(pairs), state.score,
             {"better": "; the student joins the teacher when that raises it",
              "always": "; the student joins the teacher at every validation"}.get(
                 config.teacher_refresh, ""))
    return config


# --- the label-free criterion and the teacher refresh -------------------------------------


def consistency_set(held: list[tuple], out: str | os.PathLike, seed: int = 0) -> Path:
    """The files of the consistency check, from held-back recordings and a speech estimate
    of each, ``held = [(recording clip, estimate clip)]``: ``out/clean/NAME.wav``, the
    first :data:`CHECK_SECONDS` of the recording, and ``out/noisy/NAME.wav``, the same with
    more noise of the same place: the pauses (:func:`wildmix.data.pauses` of the estimate)
    of another held-back recording, :data:`CHECK_SNR_DB` below it. Written once.

    Raises:
        DataError: no held-back recording has 0.25 s of pauses.
    """
    from wildmix import data as wdata

    out = Path(out)
    if (out / "noisy").is_dir():
        return out
    crops, noise = [], []
    for k, (rec, est) in enumerate(held):
        rate = rec.sample_rate
        frames = min(rec.frames, int(CHECK_SECONDS * rate))
        x = audio.read(rec.path, start=rec.start, frames=frames, check=False)
        t = audio.read(est.path, start=est.start, frames=frames, check=False)
        crops.append((Path(rec.path).stem, x, rate))
        pause = wdata.join_stretches(x, wdata.pauses(t, rate), rate)
        if len(pause) >= 0.25 * rate:
            noise.append((k, pause))
    if not noise:
        raise wdata.DataError("no held-back recording has 0.25 s without speech: the "
                              "consistency check needs some pauses; use --select none")
    rng = np.random.default_rng(seed)
    for k, (name, x, rate) in enumerate(crops):
        others = [n for j, n in noise if j != k] or [noise[0][1]]
        n = others[int(rng.integers(len(others)))]
        n = np.tile(n, len(x) // len(n) + 1)
        start = int(rng.integers(len(n) - len(x) + 1))
        n = n[start:start + len(x)].astype(np.float64)
        n *= np.sqrt(np.sum(np.square(x, dtype=np.float64)) / max(
            np.sum(n ** 2) * 10 ** (rng.uniform(*CHECK_SNR_DB) / 10), 1e-20))
        y = x + n
        peak = max(1.0, float(np.abs(y).max()) / 0.99)
        audio.write(out / "clean" / f"{name}.wav", (x / peak).astype(np.float32), rate)
        audio.write(out / "noisy" / f"{name}.wav", (y / peak).astype(np.float32), rate)
    return out


def consistency(noisier: list[np.ndarray], plain: list[np.ndarray]) -> float:
    """The label-free criterion: mean SI-SNR (dB) between a denoiser's speech estimates of
    each held-back recording with added noise (``noisier``) and of the recording itself
    (``plain``). A denoiser that removes the noise gives the same speech from both; one that
    leaves noise or distorts the speech by the noise gives different outputs."""
    from wildmix.evaluate import si_snr

    return float(np.mean([si_snr(a, b) for a, b in zip(noisier, plain, strict=True)]))


@dataclass
class Teacher:
    """The state of a cached teacher during a run, kept in ``check/teacher.json``."""

    members: int  # models averaged in its estimates (peers, then students that joined)
    score: float  # its consistency on the check files


def teacher_state(check: str | os.PathLike) -> Teacher:
    return Teacher(**json.loads((Path(check) / MANIFEST).read_text()))


def score_teacher(check: str | os.PathLike, names: list[str], workers: int | None = None,
                  progress: bool = True) -> Teacher:
    """Run the teachers over the check files (into ``check/teacher``) and keep their
    consistency in ``check/teacher.json``; done once (a resumed run keeps it)."""
    check = Path(check)
    if (check / MANIFEST).exists():
        return teacher_state(check)
    from wildmix import data as wdata

    clips = [c for sub in ("noisy", "clean") for c in wdata.index_folder(check / sub).clips]
    estimate_folder(clips, check, names, check / "teacher", workers, progress)
    state = Teacher(len(names), _teacher_consistency(check))
    audio.write_json(check / MANIFEST, dataclasses.asdict(state))
    return state


def _teacher_consistency(check: Path) -> float:
    names = sorted(p.name for p in (check / "noisy").glob("*.wav"))
    read = [[audio.read(check / "teacher" / sub / n, check=False) for n in names]
            for sub in ("noisy", "clean")]
    return consistency(*read)


def join(check: str | os.PathLike, targets: str | os.PathLike, recordings: list,
         root: str | os.PathLike, speech, always: bool = False) -> Teacher:
    """The teacher refresh: the student (``speech(x, sample_rate) -> (T,)``) joins the
    teacher when the mean of the teacher's ``members`` and the student is more consistent
    on the check files than the teacher alone (or ``always``); then every cached estimate
    (of the training ``recordings`` under ``root``, in ``targets``, and of the check files)
    becomes that mean. Returns the teacher, joined or not."""
    check, targets = Path(check), Path(targets)
    state = teacher_state(check)
    k = state.members
    names = sorted(p.name for p in (check / "noisy").glob("*.wav"))
    joined = {sub: [_mean(check / sub / n, check / "teacher" / sub / n, speech, k)
                    for n in names] for sub in ("noisy", "clean")}
    score = consistency(joined["noisy"], joined["clean"])
    if score <= state.score and not always:
        return state
    for sub, estimates in joined.items():
        for n, y in zip(names, estimates, strict=True):
            audio.write(check / "teacher" / sub / n, y, audio.info(check / sub / n).sample_rate)
    for clip in recordings:
        dst = (targets / os.path.relpath(clip.path, root)).with_suffix(".wav")
        audio.write(dst, _mean(clip.path, dst, speech, k), clip.sample_rate)
    new = Teacher(k + 1, score)
    audio.write_json(check / MANIFEST, dataclasses.asdict(new))
    log.info("the student joins the teacher: %d members, consistency %.2f -> %.2f dB",
             new.members, state.score, new.score)
    return new


def _mean(src, estimate, speech, members: int) -> np.ndarray:
    """The mean of a teacher of ``members`` models (its ``estimate`` file of ``src``) and
    the student's speech estimate of ``src``."""
    x, rate = audio.read(src, check=False), audio.info(src).sample_rate
    return ((members * audio.read(estimate, check=False) + speech(x, rate)) /
            (members + 1)).astype(np.float32)
