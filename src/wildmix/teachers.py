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
          progress: bool = True, **options) -> Adapted:
    """``wildmix adapt``: RemixIT on the recordings in ``data`` from ``options["start"]``
    (default: the shipped model), its targets from ``teacher``: ``"auto"`` (the best
    available, :func:`best_available`), or names (:func:`parse`). A teacher other than the
    start model is run once over the recordings (:func:`estimate_folder`, into
    ``out/teacher``) and stays fixed; the start model as teacher follows the student, as in
    :func:`wildmix.config.adapt_config`. Other strategies take no teacher.

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
    folder = Path(out) / "teacher"
    config = adapt_config(data, out, **options)
    if names != [start]:
        config = dataclasses.replace(config, teacher_update="frozen",
                                     teacher_targets=str(folder))
        check(names)
    resolve(config)  # bad settings or an unusable --from: refused before anything is written
    estimates = None
    with folder_lock(out, "adapt"):  # a folder in use: refused before any work
        if line:
            log.info("%s", line)
        if names != [start]:
            estimates = estimate_folder(wdata.index_folder(data).clips, data, names, folder,
                                        workers, progress)
    summary = train(config, progress)
    return Adapted(summary, line, estimates, time.perf_counter() - begin)
