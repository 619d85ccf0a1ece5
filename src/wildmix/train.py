"""The training loop: one loop for every strategy, in named phases.

1. :func:`wildmix.config.resolve` turns a :class:`TrainConfig` into a plan (settings,
   corpus layout and checkpoints, read once).
2. :func:`setup_device` picks the device and joins DistributedDataParallel under
   ``torchrun`` (nccl on GPU, gloo on CPU).
3. :class:`Checkpointer` resumes from ``last.pt`` and writes ``last.pt`` (everything a
   resume needs) and ``best.pt`` (by validation score) atomically.
4. :class:`Loop` runs the steps: learning-rate schedule over whichever budget (steps or
   minutes) ends first, NaN/Inf steps skipped (every rank agreeing), a clean stop on
   Ctrl-C or SIGTERM, JSONL log, progress bar, and :func:`validate` with evaluate's metrics.
5. :func:`train` returns a :class:`TrainSummary`.

A strategy (:mod:`wildmix.strategies`) turns a batch into a loss and may hold state that
checkpoints keep (RemixIT's teacher). The run folder is locked for the whole run.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wildmix import audio, corpus, evaluate, mixing, models, mos, teachers
from wildmix import data as wdata
from wildmix.config import Plan, TrainConfig, resolve
from wildmix.corpus import library
from wildmix.lock import folder_lock
from wildmix.mixit import enhancement_constraint
from wildmix.strategies import REGISTRY as STRATEGIES
from wildmix.strategies import MixIT, RemixIT, Strategy, Supervised, ema_update

__all__ = ["TrainConfig", "TrainSummary", "TrainingError", "train", "lr_at", "validate"]

log = logging.getLogger("wildmix")


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and where the last checkpoint is."""


@dataclass
class TrainSummary:
    """What a run did."""

    out: str
    step: int
    best_score: float | None  # SI-SNRi (paired validation) or minus the MixIT loss
    bad_steps: int  # skipped NaN/Inf steps
    stopped: str | None  # "SIGINT", "SIGTERM", "time budget", or None when finished
    model: torch.nn.Module | None = None


def train(config: TrainConfig, progress: bool = True) -> TrainSummary:
    """Train (or resume) a run in ``config.out``.

    The run folder is locked for the whole run (by rank 0 under DDP).

    Raises:
        TrainingError: too many NaN/Inf steps in a row (the last good weights are saved),
            or a run folder that holds a run with another model.
        DataError: no usable training audio.
        LockError: another process is training in the same folder.
    """
    plan = resolve(config)
    rank, _ = distributed()
    with folder_lock(plan.config.out, plan.config.strategy) if rank == 0 \
            else contextlib.nullcontext():
        return _run(plan, progress)


def _run(plan: Plan, progress: bool) -> TrainSummary:
    c = plan.config
    device, rank, world = setup_device(c.device, c.threads)
    strategy = make_strategy(plan, device)  # before seeding: the teacher is built first
    torch.manual_seed(c.seed)
    model = models.build(plan.model_name, plan.model_args).to(device)
    if plan.init:
        model.load_state_dict(plan.init["state_dict"])  # a resumed run overwrites it below
    opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    average = WeightAverage(model, c.ema)
    ckpt = Checkpointer(Path(c.out), plan, model, opt, strategy, rank, average)
    state = ckpt.resume(device)
    if state.step >= c.max_steps:
        log.info("%s already finished (%d steps)", c.out, state.step)
        return TrainSummary(c.out, state.step, state.best, state.bad_total, None)
    train_set, valid, seconds = datasets(c, c.max_steps * c.batch_size * world)
    epoch_steps = math.ceil(seconds / (c.segment_seconds * c.batch_size * world))
    strategy.start(model, state.strategy, epoch_steps)
    if state.step == 0:  # the average starts at the starting weights (RemixIT: the teacher's)
        average.model.load_state_dict(model.state_dict())
    loader = make_loader(train_set, c, state.step, rank, world, device)
    if rank == 0:
        audio.write_json(Path(c.out) / "config.json", dataclasses.asdict(c))
    loop = Loop(c, model, opt, strategy, ckpt, state, device, world, average)
    stopped = loop.run(loader, lambda: validate(average.model, valid, device, c.batch_size,
                                                strategy, c.sample_rate), progress and rank == 0)
    return TrainSummary(c.out, loop.state.step, loop.state.best, loop.state.bad_total,
                        stopped, average.model)


# --- 2. device ----------------------------------------------------------------------------


def distributed() -> tuple[int, int]:
    """``(rank, world size)`` from torchrun's environment; ``(0, 1)`` without it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def setup_device(name: str | None, threads: int | None) -> tuple[torch.device, int, int]:
    """The device, and this process's rank and world size, with DDP joined when world > 1."""
    rank, world = distributed()
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, rank, world


def make_strategy(plan: Plan, device: torch.device) -> Strategy:
    """The plan's strategy, built from plain arguments."""
    c = plan.config
    if c.strategy == "remixit":
        teacher = models.from_checkpoint(plan.teacher).to(device)
        return STRATEGIES["remixit"](teacher, update=c.teacher_update,
                                     momentum=c.teacher_momentum, every=c.teacher_every,
                                     seed=c.seed, loss=c.loss, snr_max=c.snr_max,
                                     cached=bool(c.teacher_targets))
    if c.strategy == "supervised":
        return STRATEGIES["supervised" if c.task == "enhance" else "pit"](
            loss=c.loss, snr_max=c.snr_max)
    allowed = enhancement_constraint(c.n_sources).to(device) if c.task == "enhance" else None
    return STRATEGIES["mixit"](loss=c.loss, search=c.search, allowed=allowed,
                               snr_max=c.snr_max, sparsity=c.sparsity, leakage=c.leakage,
                               overlap=c.overlap, sparsity_start=c.sparsity_start)


# --- 3. checkpoints -----------------------------------------------------------------------


@dataclass
class RunState:
    """What ``last.pt`` carries besides the weights, so that a rerun resumes exactly."""

    step: int = 0
    best: float | None = None
    bad_total: int = 0
    elapsed_s: float = 0.0
    strategy: dict | None = None


class WeightAverage:
    """An exponential moving average of a model's weights (Polyak averaging), ``model``
    itself when ``decay`` is 0. Its decay at step t is ``min(decay, (1 + t) / (10 + t))``,
    so that early weights fade fast."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False) if decay else model

    def update(self, model: torch.nn.Module, step: int) -> None:
        """After optimiser step ``step`` (1, 2, ...)."""
        if self.model is not model:
            ema_update(self.model, model, min(self.decay, step / (9.0 + step)))


class Checkpointer:
    """``last.pt`` (weights, optimiser, run state) and ``best.pt``, written atomically."""

    def __init__(self, out: Path, plan: Plan, model, opt, strategy: Strategy, rank: int,
                 average: WeightAverage):
        self.out, self.plan, self.model, self.opt = out, plan, model, opt
        self.strategy, self.rank, self.average = strategy, rank, average
        self.last, self.best = out / "last.pt", out / "best.pt"

    def resume(self, device) -> RunState:
        """The state of ``last.pt`` (weights and optimiser loaded), or a fresh one."""
        if not self.last.exists():
            return RunState()
        ckpt = models.load_checkpoint(self.last, map_location=device)
        if (ckpt["model_name"], ckpt["model_args"]) != (self.plan.model_name,
                                                        self.plan.model_args):
            raise TrainingError(f"{self.out} holds a run of another model "
                                f"({ckpt['model_name']} {ckpt['model_args']}); choose "
                                "another --out")
        self.model.load_state_dict(ckpt.get("trained_state_dict", ckpt["state_dict"]))
        self.average.model.load_state_dict(ckpt["state_dict"])
        self.opt.load_state_dict(ckpt["optimizer"])
        log.info("resuming %s from step %d", self.out, ckpt["step"])
        return RunState(ckpt["step"], ckpt.get("best_score"), ckpt.get("bad_steps", 0),
                        ckpt.get("elapsed_s", 0.0), ckpt.get("strategy_state", {}))

    def save(self, kind: str, state: RunState, metrics: dict | None = None) -> None:
        """Write ``last.pt`` (``kind="last"``) or ``best.pt``; only rank 0 writes."""
        if self.rank != 0:
            return
        c = self.plan.config
        content = dict(model_name=self.plan.model_name, model_args=self.plan.model_args,
                       state_dict=self.average.model.state_dict(), sample_rate=c.sample_rate,
                       train_config=dataclasses.asdict(c), step=state.step, task=c.task,
                       metrics=metrics or {})
        start = self.plan.init or self.plan.teacher
        if start is not None and models.default_shifts(start) > 1 and c.task == "enhance":
            # a fine-tuned model enhances as the model it started from (wildmix export
            # --shifts): the same averaging over shifted inputs
            content.update(metadata={"shifts": models.default_shifts(start)})
        if kind == "last":
            if self.average.model is not self.model:  # the trained weights, to resume
                content.update(trained_state_dict=self.model.state_dict())
            content.update(optimizer=self.opt.state_dict(), best_score=state.best,
                           bad_steps=state.bad_total, elapsed_s=state.elapsed_s,
                           strategy_state=self.strategy.state_dict())
        models.save_checkpoint(self.last if kind == "last" else self.best, **content)


# --- data ---------------------------------------------------------------------------------


@dataclass
class ValidSets:
    """What validation scores: fixed MixIT mixtures, paired files, recordings for DNSMOS."""

    mixtures: object = None  # a MixtureDataset
    paired: list = field(default_factory=list)  # (noisy clip, clean clip)
    recordings: list = field(default_factory=list)  # clips scored by DNSMOS (--select dnsmos)
    # (held-back recording, the teacher's cached estimate of it): --select agreement
    agreement: list = field(default_factory=list)
    # (known speech + a held-back recording's noise, the speech): --select check, label-free
    check: list = field(default_factory=list)


def datasets(c: TrainConfig, total_examples: int):
    """Training dataset, the validation sets, and the duration of the training recordings
    in seconds."""
    train_set, recordings, noise_clips, held = _train_set(c, total_examples)
    valid = _valid_sets(c, noise_clips)
    if c.select == "dnsmos":
        valid.recordings = held or [n for n, _ in valid.paired] or valid.recordings
    elif c.select == "agreement":
        valid.agreement = held
    if c.check:
        check = Path(c.check)
        valid.check = wdata.paired_clips(check / "noisy", check / "clean")
    if c.select != "dnsmos":  # DNSMOS costs seconds a file: only where it chooses
        valid.recordings = []
    if valid.mixtures is not None or valid.paired or valid.recordings or valid.agreement \
            or valid.check:
        log.info("validation computes: %s", ", ".join(valid_metrics(valid)))
    return train_set, valid, sum(r.duration for r in recordings)


def valid_metrics(valid: ValidSets) -> list[str]:
    """The names :func:`validate` reports for these sets."""
    return ((["valid_mixit"] if valid.mixtures is not None else [])
            + (["valid_agreement"] if valid.agreement else [])
            + (["valid_check"] if valid.check else [])
            + (["valid_sisnr", "valid_sisnr_noisy", "valid_sisnri"] if valid.paired else [])
            + ([f"valid_{m}" for m in mos.METRICS] if valid.recordings else []))


def _train_set(c: TrainConfig, total_examples: int):
    """``(dataset, recordings, noise clips or None, held-back recordings)`` for the
    strategy; with --select agreement the held-back recordings come with their cached
    estimates, ``(recording, estimate)``."""
    if c.strategy == "supervised" and c.task == "separate":
        groups = wdata.source_groups(c.data, c.clean, c.n_sources)
        log.info("supervised separation (PIT) of %d mixtures with their sources", len(groups))
        return (wdata.SourcesDataset(groups, max(map(len, groups)), c.sample_rate,
                                     c.segment_seconds, total_examples, seed=c.seed),
                [g[0] for g in groups], None, [])
    if c.strategy == "supervised" and not c.speech:
        pairs = wdata.paired_clips(c.data, c.clean)
        log.info("supervised training on %d noisy/clean pairs", len(pairs))
        return (wdata.PairedDataset(pairs, c.sample_rate, c.segment_seconds, total_examples,
                                    seed=c.seed, augment=c.augment, speed=c.augment_speed,
                                    noise_change=c.augment_noise),
                [n for n, _ in pairs], None, [])
    if c.strategy == "supervised" and library.is_library(c.noise):
        speech = wdata.index_folder(c.speech)
        log.info("dynamic mixing: clean speech %s (%s) with the sound library %s",
                 c.speech, speech.summary(), c.noise)
        return (mixing.DynamicMixDataset(speech.clips, c.noise, "train", c.sample_rate,
                                         c.segment_seconds, total_examples, seed=c.seed,
                                         mixing=mixing.Mixing(snr_db=c.mix_snr_db)),
                speech.clips, None, [])
    index = wdata.index_folder(c.data)
    log.info("recordings %s: %s", c.data, index.summary())
    # held back to choose best.pt label-free: by DNSMOS without a --valid folder, always by
    # agreement with the teacher (a valid folder has no cached estimates); with the
    # label-free check (wildmix adapt with a cached teacher), the recordings of its noise
    clips, held = hold_back(index.clips, c.valid_files, bool(c.check)) if (
        c.select == "dnsmos" and not c.valid) or c.select == "agreement" or c.check \
        else (index.clips, [])
    if held:
        log.info("%d recordings held back from training to choose best.pt by %s",
                 len(held), "DNSMOS" if c.select == "dnsmos" else
                 "the label-free check" if c.check else "agreement with the teacher")
    recordings = None  # RemixIT's input: the teacher supplies the targets
    if c.strategy == "remixit" and c.teacher_targets:  # [recording, its cached estimate]
        pairs = wdata.paired_clips(c.data, c.teacher_targets)
        kept = {clip.path for clip in clips}
        if c.select == "agreement":
            held = [(r, e) for r, e in pairs if r.path not in kept]
        recordings = wdata.PairedDataset([(r, e) for r, e in pairs if r.path in kept],
                                         c.sample_rate, c.segment_seconds, total_examples,
                                         seed=c.seed)
    elif c.strategy == "remixit":
        recordings = wdata.RecordingDataset(clips, c.sample_rate, c.segment_seconds,
                                            total_examples, seed=c.seed)
    if recordings is not None and not c.speech:
        return recordings, clips, None, held
    # clean --speech mixed with the noise (supervised, or beside RemixIT); indexed first,
    # so that a bad folder fails before the noise is searched for
    speech = wdata.index_folder(c.speech) if c.speech else None
    noise_clips = _noise_clips(c, index) if c.task == "enhance" else None
    if speech is not None:
        log.info("clean speech %s: %s", c.speech, speech.summary())
        seed = c.seed if recordings is None else c.seed + 1  # not the recordings' draws
        pairs = wdata.SpeechNoiseDataset(speech.clips, noise_clips, c.sample_rate,
                                         c.segment_seconds, total_examples, seed=seed,
                                         augment=c.augment, speed=c.augment_speed)
        both = pairs if recordings is None else wdata.JointDataset(recordings, pairs)
        return both, clips, noise_clips, held
    return (wdata.MixtureDataset(clips, noise_clips, c.sample_rate, c.segment_seconds,
                                 total_examples, relative_gain_db=c.relative_gain_db,
                                 noise_augment=c.noise_augment, seed=c.seed,
                                 augment=c.augment, speed=c.augment_speed),
            clips, noise_clips, held)


def hold_back(clips: list, most: int, fifth: bool = False) -> tuple[list, list]:
    """``(kept, held back)``: every k-th recording, at most ``most`` and a tenth of them
    (a fifth with ``fifth``: the label-free check needs more)."""
    n = min(most, len(clips) // (5 if fifth else 10))
    if n == 0:
        return clips, []
    held = clips[::len(clips) // n][:n]
    chosen = {id(h) for h in held}
    return [x for x in clips if id(x) not in chosen], held


def _noise_clips(c: TrainConfig, index: wdata.Index) -> list[wdata.Clip]:
    model = c.init or c.teacher  # the model that starts the run
    if c.noise == "teacher":
        noise = teacher_noise(model, index.clips, Path(c.out) / "teacher-noise", c.device)
        log.info("noise estimated by %s: %s", model, noise.summary())
        return noise.clips
    if c.noise == "pauses":
        noise = pause_noise(model, index.clips, Path(c.out) / "pause-noise",
                            c.segment_seconds, c.device)
        log.info("noise from the pauses that %s hears: %s", model,
                 noise.summary("recordings' pauses"))
        return noise.clips
    if c.noise == "auto":
        noise = wdata.harvest_noise(index)
        if not noise.clips:
            raise wdata.DataError(f"the VAD found no speech-free stretch of 1 s or more in "
                                  f"{c.data}; give noise-only clips with --noise DIR")
        log.info("noise harvested by VAD: %s", noise.summary("stretches"))
        return noise.clips
    noise = wdata.index_folder(c.noise)
    log.info("noise %s: %s", c.noise, noise.summary())
    return noise.clips


def _write_once(folder: Path, write) -> None:
    """Run ``write()`` (which fills ``folder``) on rank 0 unless ``folder/.complete`` says an
    earlier, resumed run already did; every rank waits for it."""
    done = folder / ".complete"
    if not done.exists() and distributed()[0] == 0:
        write()
        folder.mkdir(parents=True, exist_ok=True)
        done.touch()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def teacher_noise(model: str, clips: list, folder: Path, device=None) -> wdata.Index:
    """Noise-only clips from recordings alone: ``model``'s noise estimate (the sum of its
    outputs 1..M-1) of every recording, written once into ``folder`` (a resumed run finds
    them there)."""
    from wildmix.enhance import Enhancer, enhance_files

    def write():
        jobs = [(Path(clip.path), {"noise": folder / f"{i:05d}.wav"})
                for i, clip in enumerate(clips)]
        enhance_files(Enhancer.from_checkpoint(model, device=device, atten_lim_db=math.inf),
                      jobs, progress=False)

    _write_once(folder, write)
    return wdata.index_folder(folder)


def pause_noise(model: str, clips: list, folder: Path, seconds: float, device=None,
                min_seconds: float = 0.25) -> wdata.Index:
    """Noise-only clips from recordings alone: for each recording, the stretches where
    ``model``'s speech estimate is silent (:func:`wildmix.data.pauses`), joined and looped
    to at least ``seconds``, written once into ``folder``; recordings with less than
    ``min_seconds`` of pauses give none.

    Raises:
        DataError: no recording has enough pauses.
    """
    from wildmix.enhance import Enhancer

    def write():
        enhancer = Enhancer.from_checkpoint(model, device=device, atten_lim_db=math.inf)
        for i, clip in enumerate(clips):
            x = audio.read(clip.path, start=clip.start, frames=clip.frames, check=False)
            sr = clip.sample_rate
            noise = wdata.join_stretches(
                x, wdata.pauses(enhancer.separate(x, sr)[0], sr), sr)
            if len(noise) >= min_seconds * sr:
                reps = int(np.ceil(seconds * sr / len(noise)))
                audio.write(folder / f"{i:05d}.wav", np.tile(noise, reps), sr)

    _write_once(folder, write)
    if not any(folder.glob("*.wav")):
        raise wdata.DataError(f"{model} hears speech almost everywhere in the recordings: "
                              f"no recording has {min_seconds} s of pauses; give noise-only "
                              f"clips with --noise DIR")
    return wdata.index_folder(folder)


def _valid_sets(c: TrainConfig, noise_clips) -> ValidSets:
    """Fixed MixIT validation mixtures (MixIT only), paired files (a paired folder), and
    the valid recordings."""
    if not c.valid:
        return ValidSets()
    vroot, paired = Path(c.valid), []
    if corpus.paired_task(vroot) == "enhance":
        paired = wdata.paired_clips(vroot / "noisy", vroot / "clean")[: c.valid_files]
        vrec = [n for n, _ in paired]
        if (vroot / "noise").is_dir():
            noise_clips = wdata.index_folder(vroot / "noise").clips
    else:
        vrec = wdata.index_folder(vroot).clips
    # DNSMOS scores speech: the valid recordings are for enhancement only
    valid = ValidSets(None, paired, vrec[:c.valid_files] if c.task == "enhance" else [])
    if c.strategy == "mixit":
        valid.mixtures = wdata.MixtureDataset(
            vrec, noise_clips if c.task == "enhance" else None, c.sample_rate,
            c.segment_seconds, c.valid_mixtures, seed=c.seed + 1)
    return valid


class StepSampler(torch.utils.data.Sampler):
    """Indices of the examples of steps ``start..stop`` for one rank: resumable mid-run."""

    def __init__(self, start: int, stop: int, batch: int, rank: int, world: int):
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, batch, rank, world

    def __iter__(self):
        for step in range(self.start, self.stop):
            base = (step * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self):
        return (self.stop - self.start) * self.batch


def make_loader(dataset, c: TrainConfig, start: int, rank: int, world: int, device):
    return torch.utils.data.DataLoader(
        dataset, batch_size=c.batch_size,
        sampler=StepSampler(start, c.max_steps, c.batch_size, rank, world),
        num_workers=c.workers, worker_init_fn=_ignore_signals if c.workers else None,
        prefetch_factor=4 if c.workers else None, pin_memory=device.type == "cuda")


def _ignore_signals(_):
    # Ctrl-C and a scheduler's SIGTERM reach the whole process group: the main process saves
    # and stops the workers itself, so they must not die first
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# --- 4. the loop --------------------------------------------------------------------------


def lr_at(step: int, elapsed_s: float, peak: float, warmup_steps: int, max_steps: int,
          max_seconds: float | None = None) -> float:
    """Linear warm-up, then cosine decay to 5% of ``peak`` at whichever budget ends first:
    ``max_steps`` or ``max_seconds`` of training time."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    if max_seconds:
        progress = max(progress, elapsed_s / max_seconds)
    progress = min(1.0, progress)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


class Loop:
    """The steps of one run, from ``state.step`` to ``max_steps`` (or a stop)."""

    def __init__(self, c: TrainConfig, model, opt, strategy: Strategy, ckpt: Checkpointer,
                 state: RunState, device, world: int, average: WeightAverage):
        self.c, self.model, self.opt, self.strategy = c, model, opt, strategy
        self.average = average
        self.ckpt, self.state, self.device, self.world = ckpt, state, device, world
        self.net = model if world == 1 else torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        self.amp = c.amp and device.type == "cuda"
        self.signal: str | None = None
        self.consecutive_bad = 0
        self.start_elapsed, self.start_time = state.elapsed_s, time.perf_counter()

    def elapsed(self) -> float:
        """Training seconds over every session of this run."""
        return self.start_elapsed + time.perf_counter() - self.start_time

    def run(self, loader, validate_fn, progress: bool) -> str | None:
        """Run to the end; returns what stopped it early, if anything."""
        start_step, stopped = self.state.step, None
        log_file = _Log(Path(self.c.out) / "log.jsonl", self.c, progress, self.state.step) \
            if self.ckpt.rank == 0 else None
        with _signals_to(self), log_file or contextlib.nullcontext():
            try:
                if self.state.step == 0 and (self.c.init or self.c.teacher) and \
                        self.c.select != "none":
                    # the starting weights are a candidate: fine-tuning never ends worse
                    # than where it began, by the run's criterion
                    self._validate(validate_fn, log_file)
                for batch in loader:
                    stopped = self._should_stop()
                    if stopped:
                        break
                    loss = self.step(batch)
                    if loss is not None and log_file:
                        log_file.step(self.state.step, loss, self._lr(self.state.step - 1),
                                      self.elapsed(), self.state.bad_total)
                    if self.state.step % self.c.valid_every == 0 or \
                            self.state.step == self.c.max_steps:
                        self._validate(validate_fn, log_file)
                self._finish(stopped)
            except TrainingError:
                raise
            except BaseException:
                self._keep_progress(start_step)
                raise
        return stopped

    def _lr(self, step: int) -> float:
        c = self.c
        return lr_at(step, self.elapsed(), c.lr, c.warmup_steps, c.max_steps,
                     60 * c.max_minutes if c.max_minutes else None)

    def _should_stop(self) -> str | None:
        """A signal or the time budget, agreed by every rank (all stop at the same step)."""
        reason = self.signal or ("time budget" if self.c.max_minutes and
                                 self.elapsed() > 60 * self.c.max_minutes else None)
        if self.world > 1:
            flag = torch.tensor([1.0 if reason else 0.0], device=self.device)
            torch.distributed.all_reduce(flag)
            reason = reason or ("another rank's stop" if flag.item() else None)
        return reason

    def step(self, batch) -> float | None:
        """One optimiser step; None when the loss (or gradient) was not finite: skipped."""
        batch = batch.to(self.device, non_blocking=True)
        for g in self.opt.param_groups:
            g["lr"] = self._lr(self.state.step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss = self.strategy.loss(self.net, batch, self.state.step)
        finite = bool(torch.isfinite(loss))
        if finite:
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.c.grad_clip)
            finite = bool(torch.isfinite(norm))
        if self.world > 1:  # every rank must agree to skip, or weights drift apart
            flag = torch.tensor([0.0 if finite else 1.0], device=self.device)
            torch.distributed.all_reduce(flag)
            finite = flag.item() == 0
        if not finite:
            self._skip()
            return None
        self.consecutive_bad = 0
        self.opt.step()
        self.state.step += 1
        self.average.update(self.model, self.state.step)
        self.strategy.after_step(self.model, self.state.step)
        return float(loss.detach())

    def _skip(self) -> None:
        self.state.bad_total += 1
        self.consecutive_bad += 1
        self.opt.zero_grad(set_to_none=True)
        if self.consecutive_bad >= self.c.max_bad_steps:
            self._save("last")
            raise TrainingError(
                f"{self.consecutive_bad} NaN/Inf losses in a row at step {self.state.step}; "
                f"stopped. The last good weights are in {self.ckpt.last}. Lower --lr or "
                "check the data")
        self.state.step += 1

    def _save(self, kind: str, metrics: dict | None = None) -> None:
        self.state.elapsed_s = self.elapsed()
        self.ckpt.save(kind, self.state, metrics)

    def _validate(self, validate_fn, log_file) -> None:
        if self.ckpt.rank == 0:
            metrics = validate_fn()
            if self.c.teacher_refresh != "none":
                metrics["teacher_check"] = refresh(self.c, self.average.model, self.device)
            score = score_of(metrics, self.c.select)
            if score is not None and (self.state.best is None or score > self.state.best):
                self.state.best = score
                self._save("best", metrics)
            self._save("last", metrics)
            log_file.validation(self.state.step, self.elapsed(), metrics)
        if self.world > 1:
            torch.distributed.barrier()

    def _finish(self, stopped: str | None) -> None:
        if stopped:
            self._save("last")
            log.info("stopped by %s at step %d; rerun the same command to resume from %s",
                     stopped, self.state.step, self.ckpt.last)
        if self.ckpt.rank == 0 and not self.ckpt.best.exists():
            self._save("best")  # no validation set: the last weights are the best we know

    def _keep_progress(self, start_step: int) -> None:
        if self.state.step > start_step:  # keep what was learnt since the last save
            self._save("last")
            log.error("training failed at step %d; progress saved in %s", self.state.step,
                      self.ckpt.last)


@contextlib.contextmanager
def _signals_to(loop: Loop):
    """Ctrl-C and SIGTERM set ``loop.signal``; the loop saves and stops at the next step."""
    def on_signal(signum, _frame):
        loop.signal = signal.Signals(signum).name

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} \
        if main else {}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class _Log:
    """``log.jsonl`` (mean loss every ``log_every`` steps, each validation) and the bar."""

    def __init__(self, path: Path, c: TrainConfig, progress: bool, step: int):
        self.path, self.c = path, c
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=c.max_steps, initial=step, unit="step", dynamic_ncols=True,
                            desc=f"{c.strategy} {c.model}")
        self.running: list[float] = []
        self.t_log, self.since = time.perf_counter(), 0

    def __enter__(self):
        self.file = open(self.path, "a")  # noqa: SIM115 (closed in __exit__)
        return self

    def __exit__(self, *exc):
        self.file.close()
        if self.bar:
            self.bar.close()

    def write(self, **entry) -> None:
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()

    def step(self, step: int, loss: float, lr: float, elapsed: float, bad: int) -> None:
        self.running.append(loss)
        self.since += 1
        if self.bar:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.2f}", refresh=False)
        if step % self.c.log_every == 0 or step == self.c.max_steps:
            now = time.perf_counter()
            self.write(step=step, time_s=elapsed, loss=float(np.mean(self.running)), lr=lr,
                       steps_per_s=self.since / (now - self.t_log), bad_steps=bad)
            self.running, self.since, self.t_log = [], 0, now

    def validation(self, step: int, elapsed: float, metrics: dict) -> None:
        self.write(step=step, time_s=elapsed, **metrics)
        if self.bar:
            self.bar.write(f"step {step}: " + ", ".join(f"{k} {v:.2f}"
                                                        for k, v in metrics.items()))


# --- validation ---------------------------------------------------------------------------


@torch.no_grad()
def validate(model, valid: ValidSets, device, batch_size: int, strategy: Strategy,
             sample_rate: int) -> dict:
    """MixIT loss on fixed held-out mixtures (``valid_mixit``); SI-SNR of output 0 on paired
    files and its improvement over the noisy input (``valid_sisnr(i)``), with
    :func:`wildmix.evaluate.si_snr`; DNSMOS P.835 of output 0 on the valid recordings
    (``valid_dnsmos_sig/bak/ovr``, label-free); the SI-SNR of output 0 against a teacher's
    cached estimates of held-back recordings (``valid_agreement``, label-free)."""
    model.eval()
    out = {}
    if valid.mixtures is not None and isinstance(strategy, MixIT):
        values = []
        for start in range(0, len(valid.mixtures), batch_size):
            batch = torch.stack([valid.mixtures[i] for i in
                                 range(start, min(len(valid.mixtures), start + batch_size))])
            batch = batch.to(device)
            values.append(strategy.mixit(batch, model(batch.sum(1)).float(), "none").loss)
        out["valid_mixit"] = float(torch.cat(values).mean())
    if valid.paired:
        est, noisy = [], []
        for noisy_clip, clean_clip in valid.paired:
            x = wdata.audio.read(noisy_clip.path, sample_rate, check=False)
            ref = wdata.audio.read(clean_clip.path, sample_rate, check=False)
            est.append(evaluate.si_snr(_speech(model, x, device), ref))
            noisy.append(evaluate.si_snr(x, ref))
        out["valid_sisnr"], out["valid_sisnr_noisy"] = float(np.mean(est)), float(np.mean(noisy))
        out["valid_sisnri"] = out["valid_sisnr"] - out["valid_sisnr_noisy"]
    if valid.recordings:
        out.update(_dnsmos(model, valid.recordings, device, sample_rate))
    if valid.check:
        out["valid_check"] = teachers.check_score(
            [_speech(model, _read(noisy, sample_rate), device) for noisy, _ in valid.check],
            [_read(clean, sample_rate) for _, clean in valid.check])
    if valid.agreement:
        out["valid_agreement"] = float(np.mean([
            evaluate.si_snr(_speech(model, _read(r, sample_rate), device), _read(e, sample_rate))
            for r, e in valid.agreement]))
    model.train()
    return out


DNSMOS_SECONDS = 10.0  # of each valid recording scored by DNSMOS or by agreement


def _dnsmos(model, clips, device, sample_rate: int) -> dict:
    scores = [mos.dnsmos(_speech(model, _read(clip, sample_rate), device), sample_rate)
              for clip in clips]
    return {f"valid_{m}": float(np.mean([s[m] for s in scores])) for m in mos.METRICS}


def _read(clip, sample_rate: int) -> np.ndarray:
    """The first :data:`DNSMOS_SECONDS` of a valid recording (or of its teacher estimate)."""
    frames = min(clip.frames, int(DNSMOS_SECONDS * clip.sample_rate))
    return wdata.audio.read(clip.path, sample_rate, clip.start, frames, check=False)


def _speech(model, x: np.ndarray, device) -> np.ndarray:
    return model(torch.from_numpy(x).to(device)[None]).float()[0, 0].cpu().numpy()


@torch.no_grad()
def refresh(c: TrainConfig, model, device) -> float:
    """The teacher refresh of RemixIT on cached estimates: the student (``model``) joins the
    teacher when that raises the teacher's score on the label-free check
    (:func:`wildmix.teachers.join`); returns the teacher's score."""
    from wildmix.enhance import Enhancer

    # whole recordings in chunks, at their own rate, as the teachers' estimates were made
    speech = Enhancer(model, c.sample_rate, device=device, atten_lim_db=math.inf).enhance
    recordings = [r for r, _ in wdata.paired_clips(c.data, c.teacher_targets)]
    teacher = teachers.join(c.check, c.teacher_targets, recordings, c.data, speech,
                            always=c.teacher_refresh == "always")
    model.train()
    return teacher.score


def score_of(metrics: dict, select: str) -> float | None:
    """Higher is better, by the run's criterion (:data:`wildmix.config.SELECTIONS`)."""
    key = {"sisnri": "valid_sisnri", "dnsmos": "valid_dnsmos_ovr", "mixit": "valid_mixit",
           "agreement": "valid_agreement", "check": "valid_check"}
    if key.get(select) not in metrics:
        return None
    return -metrics["valid_mixit"] if select == "mixit" else metrics[key[select]]


# kept importable from here: the strategies moved to wildmix.strategies
__all__ += ["MixIT", "RemixIT", "Strategy", "Supervised", "STRATEGIES"]
