"""Teachers for adaptation: speech estimates of a folder of recordings, computed once.

A teacher is a pretrained peer (:data:`wildmix.peers.NAMES`), a wildmix model (a shipped
name such as ``default``, a run folder or a checkpoint), or several of them: an ensemble,
whose estimate is its members' consensus (:func:`combine`: each member's waveform weighted
by how well it agrees with the others, so that one that fails on these recordings counts
less; on the sound library's valid situation the consensus of the four peers and the
shipped model scores above every member, and above their plain mean on SI-SNRi).

The estimates are the slow part of an adaptation (the peers run frame by frame on one
thread each), so :func:`estimate_folder` computes them once, in worker processes, into a
folder beside the run (``NAME.wav`` for each recording ``NAME``, same length and rate), and
reuses them when the teachers and the recordings are unchanged. RemixIT then trains on
those estimates (:class:`wildmix.strategies.RemixIT` with cached targets).

The label-free check (:func:`check_set`) judges teachers and students without a label from
the user: known speech (:data:`SPEECH`, utterances of unseen voices that ship with wildmix)
mixed with the noise of recordings held back from training, heard in their pauses, at
their own SNR. It scores the teachers (:func:`score_teachers`), chooses best.pt, and when
the student joins the teacher (:func:`join`).
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

# the peers of `wildmix adapt`'s default teacher (with the model being adapted)
ENSEMBLE = ("nsnet2", "gtcrn", "dtln", "dfn3")
MANIFEST = "teacher.json"
CHECK_SECONDS = 10.0  # of each check file (speech), and of each held-back recording (noise)
CHECK_SNR_DB = (-5.0, 20.0)  # the held-back recordings' estimated SNR, kept within this
SPEECH = Path(__file__).resolve().parent / "speech"  # the check's speech (scripts/check_speech.py)
# an ensemble's weights (:func:`combine`): softmax of the members' agreement (dB) over this
# temperature, chosen on the library's valid situation (1, 2, 4 dB; 4 kept PESQ and ESTOI)
CONSENSUS_DB = 4.0
CONSENSUS_SECONDS = 10.0  # the weights are computed per block of this length
# how cached estimates were combined: estimates made otherwise are computed again
COMBINE = f"consensus, {CONSENSUS_DB:g} dB, blocks of {CONSENSUS_SECONDS:g} s"


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
    """The teachers this install has, and one line saying which: where the ``peers`` extra is
    installed, the consensus (:func:`combine`) of the peers of :data:`ENSEMBLE` and
    ``start``, the model being adapted (``wildmix adapt``); else ``start`` alone (RemixIT's
    own teacher, following the student)."""
    ready = [p for p in ENSEMBLE if peers.available()[p]]
    if len(ready) >= 2:
        return [*ready, start], (f"teacher: the consensus of {', '.join(ready)} and {start} "
                                 "(the model being adapted), each weighted by its agreement "
                                 "with the others")
    return [start], (f"teacher: {start}, the model being adapted (install wildmix[peers] for "
                     "the peers, stronger teachers)")


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


def estimator(name: str):
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
    _WORKER["estimators"] = [estimator(n) for n in names]


def _estimate_file(src: str, dst: str) -> None:
    """The ensemble's estimate of ``src`` written to ``dst``.

    Raises:
        DataError: no teacher gave a finite estimate of it (named).
    """
    from wildmix.data import DataError

    x = audio.read(src, check=False)
    rate = audio.info(src).sample_rate
    try:
        estimate = combine([f(x, rate) for f in _WORKER["estimators"]], rate)
    except ValueError as e:
        raise DataError(f"{src}: {e}") from None
    audio.write(dst, estimate, rate)


def agreement(estimates: np.ndarray) -> np.ndarray:
    """``(K,)``: the SI-SNR (dB) of each of ``estimates (K, T)`` (K >= 2) against the mean of
    the others: how well each member agrees with the rest of the ensemble."""
    import torch

    from wildmix.losses import sisnr

    e = torch.from_numpy(np.asarray(estimates, np.float64))
    return sisnr(e, (e.sum(0) - e) / (len(e) - 1)).numpy()


def combine(estimates, rate: int, temperature_db: float = CONSENSUS_DB,
            seconds: float = CONSENSUS_SECONDS) -> np.ndarray:
    """An ensemble's speech estimate ``(T,)`` from its members' ``estimates`` (K of ``(T,)``):
    in each block of about ``seconds``, each member weighted by the softmax of its
    :func:`agreement` over ``temperature_db``, the weights changing linearly from one
    block's middle to the next. A member that removes speech, or keeps noise, where the
    others agree counts less; members that agree equally count equally (their mean). One
    or two members: their mean (two have no majority). A member whose estimate is not
    finite is left out.

    Raises:
        ValueError: no member's estimate is finite.
    """
    e = np.asarray(estimates, np.float32)  # float32 and in chunks below: hour-long files
    e = e[np.isfinite(e).all(1)]
    if not len(e):
        raise ValueError("no teacher gave a finite estimate")
    if len(e) <= 2:
        return e.mean(0, dtype=np.float64).astype(np.float32)
    length = e.shape[1]
    edges = np.linspace(0, length, max(1, round(length / (seconds * rate))) + 1).astype(int)
    weights = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        z = agreement(e[:, a:b]) / temperature_db
        w = np.exp(z - z.max())
        weights.append(w / w.sum())
    middles, weights = (edges[:-1] + edges[1:]) / 2, np.array(weights).T  # (K, blocks)
    out = np.empty(length, np.float32)
    for a in range(0, length, 1 << 20):
        t = np.arange(a, min(a + (1 << 20), length))
        w = np.stack([np.interp(t, middles, row) for row in weights])
        out[t[0]:t[-1] + 1] = np.sum(w * e[:, t[0]:t[-1] + 1], 0)
    return out


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
    """The teachers' speech estimate (:func:`combine`) of every recording, into ``out``.

    Args:
        recordings: :class:`wildmix.data.Clip` of whole files under ``root``.
        names: the teachers (peers and/or wildmix models).
        workers: processes (default: all cores); each runs every teacher on whole files.
    Files already estimated by the same teachers, combined the same way (:data:`COMBINE`),
    from an unchanged recording are kept.
    """
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    old = json.loads(manifest.read_text()) if manifest.exists() else {}
    same = old.get("teachers") == names and old.get("combine") == COMBINE
    done = old.get("files", {}) if same else {}
    jobs, files = [], {}
    for clip in recordings:
        rel = os.path.relpath(clip.path, root)
        dst = (out / rel).with_suffix(".wav")
        files[rel] = _stamp(clip.path)
        if done.get(rel) != files[rel] or not dst.exists():
            jobs.append((clip.path, str(dst)))
    if jobs:
        _run_jobs(jobs, names, workers, progress)
    audio.write_json(manifest, {"teachers": names, "combine": COMBINE, "files": files})
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
          progress: bool = True, refresh: str = "better", check_speech: str | None = None,
          **options) -> Adapted:
    """``wildmix adapt``: RemixIT on the recordings in ``data`` from ``options["start"]``
    (default: the shipped model), its targets from ``teacher``: ``"auto"`` (the teachers
    available, :func:`best_available`), or names (:func:`parse`); several are combined by
    :func:`combine`. Such a teacher is
    scored on the label-free check (:func:`check_set`: ``check_speech``, a folder, default
    the speech that ships with wildmix, with the noise of a fifth of the recordings, held back; into
    ``out/check``), then run once over the recordings (:func:`estimate_folder`, into
    ``out/teacher``, copied to ``out/targets`` for training); ``refresh``: how the student
    joins the teacher at the validations (:data:`wildmix.config.REFRESH`, :func:`join`).
    The start model as teacher follows the student, as in
    :func:`wildmix.config.adapt_config`. Other strategies take no teacher.

    ``options``: the keyword arguments of :func:`wildmix.config.adapt_config`.
    Raises:
        ValueError, MissingExtra, CheckpointError, DataError: before any slow work.
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
                                     teacher_targets=str(targets), check=str(check_dir),
                                     teacher_refresh=refresh)
        check(names)
        voices = speech_files(check_speech)
    resolve(config)  # bad settings or an unusable --from: refused before anything is written
    estimates = None
    with folder_lock(out, "adapt"):  # a folder in use: refused before any work
        if line:
            log.info("%s", line)
        if cached:
            index = wdata.index_folder(data)
            new = not (Path(out) / "last.pt").exists()
            if new:  # built again from this run's recordings
                import shutil

                shutil.rmtree(check_dir, ignore_errors=True)
            config = _check(config, index, names, voices, start, workers, progress)
            estimates = estimate_folder(index.clips, data, names, folder, workers, progress)
            if new:  # a new run starts from the teacher (a resumed one keeps its refreshes)
                _restart(folder, targets)
    summary = train(config, progress)
    return Adapted(summary, line, estimates, time.perf_counter() - begin)


def _restart(estimates: Path, targets: Path) -> None:
    """The training targets of a new run: a copy of the teacher's estimates (the refresh
    changes the copy)."""
    import shutil

    tmp = targets.with_name(targets.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(estimates, tmp)
    shutil.rmtree(targets, ignore_errors=True)
    tmp.rename(targets)


def _check(config, index, names: list[str], speech: list, start: str, workers: int | None,
           progress: bool):
    """The label-free check's files, and the scores on it of each of ``names`` and of their
    combination, the teacher; without the check (too few recordings, or no pauses) the run
    goes on without a refresh and keeps its last weights, said in one line. Returns the
    config."""
    from wildmix import data as wdata
    from wildmix.train import hold_back

    held = hold_back(index.clips, config.valid_files, True)[1]
    try:
        if not held:
            raise wdata.DataError(f"{len(index.clips)} recordings are too few to hold any "
                                  "back (10 or more)")
        check_set(held, config.check, estimator(start), speech, config.seed)
    except wdata.DataError as e:
        log.warning("no label-free check: %s; the teacher stays fixed and the last weights "
                    "are kept", e)
        return dataclasses.replace(config, check=None, teacher_refresh="none",
                                   select="none" if config.select in ("auto", "check")
                                   else config.select)
    state, scores = score_teachers(config.check, names, workers, progress)
    if scores:
        log.info("label-free check on %d held-back recordings' noise, SI-SNR dB: %s", len(held),
                 "; ".join(f"{k} {v:.2f}" for k, v in sorted(scores.items(),
                                                              key=lambda kv: -kv[1])))
    log.info("teacher: %s (check %.2f dB)%s", " + ".join(state.names), state.score,
             {"better": "; the student joins it when that raises its check score",
              "always": "; the student joins it at every validation"}.get(
                 config.teacher_refresh, ""))
    return config


# --- the label-free check, the choice of the teacher and the teacher refresh ---------------


def speech_files(folder: str | os.PathLike | None = None) -> list[Path]:
    """The clean half of the check: the audio files in ``folder`` (default :data:`SPEECH`,
    dry utterances, shipped with wildmix, of voices that no shipped model trained on: a
    model that knows the check's voices would score itself too high).

    Raises:
        DataError: no audio file there.
    """
    from wildmix import data as wdata

    folder = Path(folder or SPEECH)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in audio.AUDIO_EXTENSIONS) \
        if folder.is_dir() else []
    if not files:
        raise wdata.DataError(f"{folder}: no audio files for the check's speech")
    return files


def snr_estimate(x: np.ndarray, pause: np.ndarray) -> float:
    """The SNR (dB) of a recording ``x`` whose noise alone is heard in ``pause``: the power
    of ``x`` less that of the noise, over that of the noise (at least -30 dB)."""
    px, pn = (float(np.mean(np.square(v, dtype=np.float64))) for v in (x, pause))
    return 10 * math.log10(max(px - pn, 1e-3 * pn) / max(pn, 1e-20))


def check_set(held: list, out: str | os.PathLike, estimate, speech: list,
              seed: int = 0) -> Path:
    """The files of the label-free check, from recordings held back from training (clips):
    for each, ``out/clean/NAME.wav``, an utterance of ``speech`` (the files in turn, at the
    recording's rate, at most :data:`CHECK_SECONDS`), and ``out/noisy/NAME.wav``, the same
    with the recording's own noise: its pauses (:func:`wildmix.data.pauses` of
    ``estimate(x, sample_rate) -> (T,)``, in its first :data:`CHECK_SECONDS`) one after the
    other, at the recording's estimated SNR (:func:`snr_estimate`, within
    :data:`CHECK_SNR_DB`). The user's noise at the user's SNR, speech whose truth is known.
    Written once.

    Raises:
        DataError: no held-back recording has 0.25 s of pauses.
        AudioError: a speech file that is unreadable, silent or not finite.
    """
    from wildmix import data as wdata

    out = Path(out)
    if (out / "noisy").is_dir():
        return out
    rng, written = np.random.default_rng(seed), 0
    for rec in held:
        rate = rec.sample_rate
        x = audio.read(rec.path, start=rec.start, frames=min(rec.frames, int(CHECK_SECONDS *
                                                                             rate)), check=False)
        pause = wdata.join_stretches(x, wdata.pauses(estimate(x, rate), rate), rate)
        if len(pause) < 0.25 * rate:
            continue
        s = audio.read(speech[written % len(speech)], rate)  # silent, NaN: AudioError
        s = s[:int(CHECK_SECONDS * rate)].astype(np.float64)
        n = np.tile(pause, len(s) // len(pause) + 1)
        begin = int(rng.integers(len(n) - len(s) + 1))
        n = n[begin:begin + len(s)].astype(np.float64)
        snr = float(np.clip(snr_estimate(x, pause), *CHECK_SNR_DB))
        n *= math.sqrt(np.sum(s ** 2) / max(np.sum(n ** 2) * 10 ** (snr / 10), 1e-20))
        peak = max(1.0, float(np.abs(s + n).max()) / 0.99)
        name = f"{Path(rec.path).stem}.wav"
        audio.write(out / "clean" / name, (s / peak).astype(np.float32), rate)
        audio.write(out / "noisy" / name, ((s + n) / peak).astype(np.float32), rate)
        written += 1
    if not written:
        raise wdata.DataError("no held-back recording has 0.25 s without speech: the "
                              "label-free check takes its noise from the pauses; use "
                              "--select none")
    return out


def check_score(estimates: list[np.ndarray], clean: list[np.ndarray]) -> float:
    """The label-free criterion: mean SI-SNR (dB) of a denoiser's speech estimates of the
    check's noisy files against their clean speech."""
    from wildmix.evaluate import si_snr

    return float(np.mean([si_snr(e, c) for e, c in zip(estimates, clean, strict=True)]))


@dataclass
class Teacher:
    """The state of a cached teacher during a run, kept in ``check/teacher.json``."""

    members: int  # models averaged in its estimates (teachers, then students that joined)
    score: float  # its score on the check (:func:`check_score`)
    names: list = dataclasses.field(default_factory=list)  # the teachers it started from


def teacher_state(check: str | os.PathLike) -> Teacher:
    return Teacher(**json.loads((Path(check) / MANIFEST).read_text()))


def _clean(check: Path) -> tuple[list[str], list[np.ndarray]]:
    names = sorted(p.name for p in (check / "noisy").glob("*.wav"))
    return names, [audio.read(check / "clean" / n, check=False) for n in names]


def score_teachers(check: str | os.PathLike, names: list[str], workers: int | None = None,
                   progress: bool = True) -> tuple[Teacher, dict]:
    """Run each teacher over the check's noisy files (into ``check/members/K``) and score
    it; the teacher is their combination (:func:`combine`), its estimates in
    ``check/teacher``, its state in ``check/teacher.json``. Done once (a resumed run keeps
    it). Returns the teacher and the scores: each of ``names``, and ``"A + B ..."`` for
    their combination."""
    check = Path(check)
    if (check / MANIFEST).exists():
        return teacher_state(check), {}
    from wildmix import data as wdata

    clips = wdata.index_folder(check / "noisy").clips
    folders = [check / "members" / f"{k}" for k in range(len(names))]
    for name, folder in zip(names, folders, strict=True):
        estimate_folder(clips, check / "noisy", [name], folder, workers, progress)
    files, clean = _clean(check)
    ests = [[audio.read(folder / f, check=False) for f in files] for folder in folders]
    scores = {n: check_score(ys, clean) for n, ys in zip(names, ests, strict=True)}
    combined = []
    for f, ys in zip(files, zip(*ests, strict=True), strict=True):
        rate = audio.info(check / "noisy" / f).sample_rate
        combined.append(combine(ys, rate))
        audio.write(check / "teacher" / f, combined[-1], rate)
    state = Teacher(len(names), check_score(combined, clean), names)
    audio.write_json(check / MANIFEST, dataclasses.asdict(state))
    if len(names) > 1:
        scores[" + ".join(names)] = state.score
    return state, scores


def join(check: str | os.PathLike, targets: str | os.PathLike, recordings: list,
         root: str | os.PathLike, speech, always: bool = False) -> Teacher:
    """The teacher refresh: the student (``speech(x, sample_rate) -> (T,)``) joins the
    teacher when the mean of the teacher's ``members`` and the student scores higher on the
    check than the teacher alone (or ``always``); then every cached estimate (of the
    training ``recordings`` under ``root``, in ``targets``, and of the check's noisy files)
    becomes that mean. Returns the teacher, joined or not."""
    check, targets = Path(check), Path(targets)
    state = teacher_state(check)
    k = state.members
    files, clean = _clean(check)
    joined = [_mean(check / "noisy" / f, check / "teacher" / f, speech, k) for f in files]
    score = check_score(joined, clean)
    if score <= state.score and not always:
        return state
    for f, y in zip(files, joined, strict=True):
        audio.write(check / "teacher" / f, y, audio.info(check / "noisy" / f).sample_rate)
    for clip in recordings:
        dst = (targets / os.path.relpath(clip.path, root)).with_suffix(".wav")
        audio.write(dst, _mean(clip.path, dst, speech, k), clip.sample_rate)
    new = Teacher(k + 1, score, state.names)
    audio.write_json(check / MANIFEST, dataclasses.asdict(new))
    log.info("the student joins the teacher: %d members, check %.2f -> %.2f dB",
             new.members, state.score, new.score)
    return new


def _mean(src, estimate, speech, members: int) -> np.ndarray:
    """The mean of a teacher of ``members`` models (its ``estimate`` file of ``src``) and
    the student's speech estimate of ``src``."""
    x, rate = audio.read(src, check=False), audio.info(src).sample_rate
    return ((members * audio.read(estimate, check=False) + speech(x, rate)) /
            (members + 1)).astype(np.float32)
