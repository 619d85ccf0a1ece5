"""The training loop: MixIT, supervised training and RemixIT as strategies of one loop.

One loop for every strategy: data, model, optimiser, learning-rate schedule, progress bar,
JSONL log, validation, atomic checkpoints (``last.pt`` every validation, ``best.pt`` by
validation score), automatic resume from ``last.pt``, a clean stop on Ctrl-C or SIGTERM,
skipped steps on NaN/Inf losses, mixed precision on CUDA, and DistributedDataParallel under
``torchrun`` (nccl on GPU, gloo on CPU). A strategy turns a batch into a loss, and may
hold state that checkpoints keep (RemixIT's teacher).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wildmix import data as wdata
from wildmix import losses, models
from wildmix.lock import folder_lock
from wildmix.mixit import enhancement_constraint, mixit_loss

log = logging.getLogger("wildmix")


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and where the last checkpoint is."""


@dataclass
class TrainConfig:
    """Every training setting, in one place; the run folder stores the resolved copy."""

    data: str = ""
    out: str = "runs/run"
    noise: str | None = None  # folder of noise-only clips, "auto" (VAD), or None
    valid: str | None = None  # paired folder (noisy/, clean/) or unlabeled recordings
    clean: str | None = None  # clean references of --data, for the supervised strategy
    task: str = "enhance"  # enhance | separate
    strategy: str = "mixit"  # mixit | supervised | remixit
    model: str = "stft"
    preset: str = "cpu"
    n_sources: int | None = None  # default: 3 for enhance, 4 for separate
    causal: bool = False
    sample_rate: int = 16000
    segment_seconds: float = 4.0
    batch_size: int = 8
    lr: float | None = None  # default: 3e-3 from scratch, 5e-4 for a RemixIT student
    weight_decay: float = 0.0
    warmup_steps: int = 100
    max_steps: int = 3000
    max_minutes: float | None = None
    loss: str = "snr"  # snr | sisnr
    snr_max: float = 30.0
    search: str | None = None  # exact | efficient; default exact up to M=12
    sparsity: float = 0.0  # weight of the L1/L2 output-RMS sparsity loss
    noise_augment: float = 0.0  # probability of extra noise in the noisy mixture
    augment: bool = False  # supervised: speed, EQ and noise remixing of the clean speech
    augment_speed: tuple[float, float] = (0.85, 1.15)  # range of the speed factor
    # level of the second mixture relative to the first, in dB. Default for enhance:
    # (-25, 0), the noise-only mixture 0 to 25 dB below the noisy one, where the noise inside
    # noisy recordings lies; louder draws teach "remove the loud noise, keep the quiet one
    # with the speech" (best valid SI-SNRi on the small corpus after 2000 steps: +1.8 dB at
    # (-5, 5), +5.0 at (-15, 0), +5.3 at (-25, 0)). For separate: (-5, 5).
    relative_gain_db: tuple[float, float] | None = None
    grad_clip: float = 5.0
    valid_every: int = 250
    valid_mixtures: int = 64
    valid_files: int = 40
    log_every: int = 25
    workers: int = 2
    seed: int = 0
    device: str | None = None
    amp: bool = True
    max_bad_steps: int = 20
    threads: int | None = None
    # start from these weights (a run folder, a checkpoint or a shipped model's name, e.g.
    # "default"), whose model, outputs and sample rate the run takes: fine-tuning
    init: str | None = None
    # RemixIT: the teacher (a run folder or checkpoint) whose model the student copies
    teacher: str | None = None
    teacher_update: str = "ema"  # ema | replace | frozen
    teacher_momentum: float = 0.9  # ema: teacher <- m * teacher + (1 - m) * student
    teacher_every: str = "epoch"  # "step", "epoch", "N steps" or "N epochs"
    extra: dict = field(default_factory=dict)

    def resolved(self) -> TrainConfig:
        """Fill defaults that depend on other settings; resolve a built-in corpus root."""
        c = dataclasses.replace(self)
        if c.task not in ("enhance", "separate"):
            raise ValueError(f"task must be 'enhance' or 'separate', got {c.task!r}")
        if c.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, "
                             f"got {c.strategy!r}")
        if c.strategy == "remixit":
            if not c.teacher:
                raise ValueError("RemixIT needs a teacher: --teacher RUN_OR_CHECKPOINT")
            if c.task != "enhance":
                raise ValueError("RemixIT is for speech enhancement (--task enhance)")
            if c.init:
                raise ValueError("RemixIT starts the student from its teacher; drop --init")
            _adopt_model(c, c.teacher, "teacher")
            if c.teacher_update not in ("ema", "replace", "frozen"):
                raise ValueError(f"teacher_update must be ema, replace or frozen, got "
                                 f"{c.teacher_update!r}")
            if not 0.0 <= c.teacher_momentum < 1.0:
                raise ValueError(f"teacher_momentum must be in [0, 1), got "
                                 f"{c.teacher_momentum}")
            _interval_steps(c.teacher_every, 1)  # fail early on a typo
        if c.init:
            _adopt_model(c, c.init, "init")
        if c.lr is None:
            c.lr = 5e-4 if c.strategy == "remixit" or c.init else 3e-3
        root = Path(c.data)
        if (root / "manifest.jsonl").is_file() and (root / "train" / "mixture").is_dir():
            c.data = str(root / "train" / "mixture")  # a --kind sounds corpus
            if c.valid is None and (root / "valid" / "mixture").is_dir():
                c.valid = str(root / "valid" / "mixture")
        elif (root / "manifest.jsonl").is_file() and (root / "train").is_dir():
            c.data = str(root / "train" / "noisy")
            if c.task == "enhance" and c.noise is None:
                c.noise = str(root / "train" / "noise")
            if c.valid is None and (root / "valid").is_dir():
                c.valid = str(root / "valid")
            if c.clean is None and (root / "train" / "clean").is_dir():
                c.clean = str(root / "train" / "clean")
        if c.n_sources is None:
            c.n_sources = 3 if c.task == "enhance" else 4
        if c.relative_gain_db is None:
            c.relative_gain_db = (-25.0, 0.0) if c.task == "enhance" else (-5.0, 5.0)
        if c.search is None:
            c.search = "exact" if c.n_sources <= 12 else "efficient"
        if c.augment and c.strategy != "supervised":
            raise ValueError("--augment changes clean speech: it is for --supervised training")
        if c.strategy == "supervised" and not c.clean:
            raise ValueError("the supervised strategy needs clean references (--clean DIR)")
        if c.task == "enhance" and c.strategy == "mixit" and c.noise is None:
            raise ValueError("enhancement with MixIT needs noise-only clips: --noise DIR or "
                             "--noise auto (speech-free stretches found by a VAD)")
        if c.n_sources < 2:
            raise ValueError(f"n_sources must be at least 2, got {c.n_sources}")
        return c


def _adopt_model(c: TrainConfig, source: str, role: str) -> None:
    """Take model, outputs, causality and sample rate from the checkpoint ``source``."""
    ckpt = models.load_checkpoint(source)
    c.model, c.sample_rate = ckpt["model_name"], ckpt["sample_rate"]
    c.n_sources = ckpt["model_args"].get("n_sources", c.n_sources)
    c.causal = bool(ckpt["model_args"].get("causal", c.causal))
    c.preset = role


# --- strategies: a batch in, a loss out ---------------------------------------------------


class Strategy:
    """How a batch becomes a loss. Subclasses may keep state (a teacher) in checkpoints."""

    def __init__(self, c: TrainConfig, device: torch.device, allowed):
        self.c, self.device, self.allowed = c, device, allowed

    def model_spec(self) -> tuple[str, dict] | None:
        """``(model name, model args)`` the strategy imposes, or None to use the config's."""
        return None

    def start(self, model: torch.nn.Module, state: dict | None, epoch_steps: int) -> None:
        """Called once before the loop; ``state`` is ``state_dict()`` of a resumed run."""

    def loss(self, net, batch: torch.Tensor, step: int) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, model: torch.nn.Module, step: int) -> None:
        """Called after each optimiser step with the (unwrapped) model and the new step."""

    def state_dict(self) -> dict:
        return {}


class MixIT(Strategy):
    """``batch (B, 2, T)`` reference mixtures; the model separates their sum."""

    def loss(self, net, batch, step):
        c = self.c
        estimates = net(batch.sum(1)).float()  # (B, M, T)
        if not torch.isfinite(estimates).all():
            return estimates.new_tensor(float("nan"))
        result = mixit_loss(batch, estimates, loss=c.loss, search=c.search,
                            allowed=self.allowed, snr_max=c.snr_max)
        loss = result.loss
        if c.sparsity:
            loss = loss + c.sparsity * losses.sparsity(estimates).mean()
        return loss


def _speech_noise_loss(estimates: torch.Tensor, speech: torch.Tensor, noise: torch.Tensor,
                       c: TrainConfig) -> torch.Tensor:
    """Output 0 against ``speech (B, T)``, the sum of the others against ``noise (B, T)``."""
    est = torch.stack([estimates[:, 0], estimates[:, 1:].sum(1)], 1)  # (B, 2, T)
    refs = torch.stack([speech, noise], 1)  # (B, 2, T)
    if c.loss == "sisnr":
        return losses.neg_sisnr(est, refs).sum(1).mean()
    return losses.neg_snr(est, refs, snr_max=c.snr_max).sum(1).mean()


class Supervised(Strategy):
    """``batch (B, 2, T)`` = ``[noisy, clean]``: output 0 is the speech, the rest the noise."""

    def loss(self, net, batch, step):
        noisy, clean = batch[:, 0], batch[:, 1]
        return _speech_noise_loss(net(noisy).float(), clean, noisy - clean, self.c)


class RemixIT(Strategy):
    """Self-training with bootstrapped remixing (Tzinis et al., IEEE JSTSP 2022).

    ``batch (B, 1, T)`` in-domain noisy recordings. The frozen teacher estimates speech
    ``s`` and noise ``n`` (the sum of its other outputs) of each; the noises are permuted
    across the batch (a derangement: every example gets another's noise) and added back,
    ``s_b + n_pi(b)``; the student learns to recover ``s_b`` and ``n_pi(b)`` from that new
    mixture. The teacher follows the student: an exponential moving average
    (``teacher <- m teacher + (1 - m) student``) or a replacement, every
    ``teacher_every``; or it stays frozen.
    """

    def __init__(self, c, device, allowed):
        super().__init__(c, device, allowed)
        ckpt = models.load_checkpoint(c.teacher, map_location=device)
        self.spec = (ckpt["model_name"], ckpt["model_args"])
        self.teacher = models.from_checkpoint(ckpt).to(device).requires_grad_(False)
        self.interval = 1

    def model_spec(self):
        return self.spec

    def start(self, model, state, epoch_steps):
        if state and "teacher" in state:
            self.teacher.load_state_dict(state["teacher"])
        elif state is None:
            model.load_state_dict(self.teacher.state_dict())  # the student starts as teacher
        self.interval = _interval_steps(self.c.teacher_every, epoch_steps)
        log.info("RemixIT: teacher %s, update %s every %d steps", self.c.teacher,
                 self.c.teacher_update, self.interval)

    @torch.no_grad()
    def targets(self, noisy: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher's ``speech (B, T)`` and permuted ``noise (B, T)`` of ``noisy (B, T)``."""
        self.teacher.eval()
        est = self.teacher(noisy).float()  # (B, M, T)
        speech, noise = est[:, 0], est[:, 1:].sum(1)
        return speech, noise[_derangement(len(noisy), self.c.seed, step, noisy.device)]

    def loss(self, net, batch, step):
        speech, noise = self.targets(batch[:, 0], step)
        estimates = net(speech + noise).float()  # (B, M, T)
        return _speech_noise_loss(estimates, speech, noise, self.c)

    def after_step(self, model, step):
        c = self.c
        if c.teacher_update == "frozen" or step % self.interval:
            return
        m = c.teacher_momentum if c.teacher_update == "ema" else 0.0
        ema_update(self.teacher, model, m)

    def state_dict(self):
        return {"teacher": self.teacher.state_dict()}


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student``, parameters and float
    buffers; other buffers (counters) are copied."""
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for key, t in t_state.items():
        s = s_state[key].detach().to(t.device)
        if t.is_floating_point():
            t.mul_(momentum).add_(s.to(t.dtype), alpha=1.0 - momentum)
        else:
            t.copy_(s)


def _derangement(n: int, seed: int, step: int, device) -> torch.Tensor:
    """A random permutation of ``n`` items without fixed points (for n > 1), from
    ``(seed, step)``: resumable, and the same on every rank's own batch."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    order = torch.randperm(n, generator=g)
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(-1)  # a random cycle through all items
    return perm.to(device)


def _interval_steps(text: str, epoch_steps: int) -> int:
    """``"step"``, ``"epoch"``, ``"N steps"`` or ``"N epochs"`` as a number of steps."""
    words = str(text).replace("_", " ").split()
    try:
        count = float(words[0]) if len(words) == 2 else 1.0
        unit = words[-1].rstrip("s")
        if unit not in ("step", "epoch") or count <= 0 or len(words) > 2:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError(f"teacher_every must be 'step', 'epoch', 'N steps' or 'N epochs', "
                         f"got {text!r}") from None
    return max(1, round(count * (epoch_steps if unit == "epoch" else 1)))


STRATEGIES: dict[str, type[Strategy]] = {"mixit": MixIT, "supervised": Supervised,
                                         "remixit": RemixIT}


# --- data ---------------------------------------------------------------------------------


class _StepSampler(torch.utils.data.Sampler):
    """Indices of the examples of steps ``start..stop`` for one rank: resumable mid-run."""

    def __init__(self, start: int, stop: int, batch: int, rank: int, world: int):
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, batch, rank, world

    def __iter__(self):
        for step in range(self.start, self.stop):
            base = (step * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self):
        return (self.stop - self.start) * self.batch


def _ignore_signals(_):
    # Ctrl-C and a scheduler's SIGTERM reach the whole process group: the main process saves
    # and stops the workers itself, so they must not die first
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _datasets(c: TrainConfig, total_examples: int):
    """Training dataset, fixed validation mixtures, paired validation files, and the
    duration of the training recordings in seconds."""
    noise_clips = None
    if c.strategy == "supervised":
        pairs = wdata.paired_clips(c.data, c.clean)
        train = wdata.PairedDataset(pairs, c.sample_rate, c.segment_seconds,
                                    total_examples, seed=c.seed, augment=c.augment,
                                    speed=tuple(c.augment_speed))
        recordings = [n for n, _ in pairs]
        log.info("supervised training on %d noisy/clean pairs", len(pairs))
    else:
        index = wdata.index_folder(c.data)
        recordings = index.clips
        log.info("recordings %s: %s", c.data, index.summary())
        if c.strategy == "remixit":  # the teacher supplies the noise: recordings only
            train = wdata.RecordingDataset(recordings, c.sample_rate, c.segment_seconds,
                                           total_examples, seed=c.seed)
        elif c.noise == "auto":
            noise = wdata.harvest_noise(index)
            if not noise.clips:
                raise wdata.DataError(f"the VAD found no speech-free stretch of 1 s or more "
                                      f"in {c.data}; give noise-only clips with --noise DIR")
            log.info("noise harvested by VAD: %s", noise.summary("stretches"))
            noise_clips = noise.clips
        elif c.noise:
            noise = wdata.index_folder(c.noise)
            log.info("noise %s: %s", c.noise, noise.summary())
            noise_clips = noise.clips
        if c.strategy == "mixit":
            train = wdata.MixtureDataset(
                recordings, noise_clips if c.task == "enhance" else None, c.sample_rate,
                c.segment_seconds, total_examples, relative_gain_db=c.relative_gain_db,
                noise_augment=c.noise_augment, seed=c.seed)

    valid_mix, paired = None, []
    if c.valid:
        vroot = Path(c.valid)
        if (vroot / "noisy").is_dir() and (vroot / "clean").is_dir():
            paired = wdata.paired_clips(vroot / "noisy", vroot / "clean")[: c.valid_files]
            vrec = [n for n, _ in paired]
            vnoise = (wdata.index_folder(vroot / "noise").clips
                      if (vroot / "noise").is_dir() else noise_clips)
        else:
            vrec, vnoise = wdata.index_folder(vroot).clips, noise_clips
        if c.strategy == "mixit":
            valid_mix = wdata.MixtureDataset(vrec, vnoise if c.task == "enhance" else None,
                                             c.sample_rate, c.segment_seconds,
                                             c.valid_mixtures, seed=c.seed + 1)
    seconds = sum(r.duration for r in recordings)
    return train, valid_mix, paired, seconds


# --- the loop -----------------------------------------------------------------------------


def _lr_at(step: int, c: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak at ``max_steps``."""
    if step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    progress = min(1.0, (step - c.warmup_steps) / max(1, c.max_steps - c.warmup_steps))
    return c.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world


@torch.no_grad()
def validate(model, c: TrainConfig, valid_mix, paired, device, allowed) -> dict:
    """MixIT loss on fixed held-out mixtures; SI-SNR(i) of output 0 on paired files."""
    model.eval()
    out = {}
    if valid_mix is not None:
        values = []
        for start in range(0, len(valid_mix), c.batch_size):
            batch = torch.stack([valid_mix[i] for i in
                                 range(start, min(len(valid_mix), start + c.batch_size))])
            batch = batch.to(device)
            est = model(batch.sum(1)).float()
            values.append(mixit_loss(batch, est, loss=c.loss, search=c.search,
                                     allowed=allowed, snr_max=c.snr_max,
                                     reduction="none").loss)
        out["valid_mixit"] = float(torch.cat(values).mean())
    if paired:
        est_scores, noisy_scores = [], []
        for noisy_clip, clean_clip in paired:
            noisy = wdata.audio.read(noisy_clip.path, c.sample_rate, check=False)
            clean = wdata.audio.read(clean_clip.path, c.sample_rate, check=False)
            x = torch.from_numpy(noisy).to(device)[None]
            speech = model(x).float()[0, 0].cpu()
            ref = torch.from_numpy(clean)
            est_scores.append(float(losses.sisnr(speech, ref)))
            noisy_scores.append(float(losses.sisnr(torch.from_numpy(noisy), ref)))
        out["valid_sisnr"] = float(np.mean(est_scores))
        out["valid_sisnr_noisy"] = float(np.mean(noisy_scores))
        out["valid_sisnri"] = out["valid_sisnr"] - out["valid_sisnr_noisy"]
    model.train()
    return out


def _score(metrics: dict) -> float | None:
    """Higher is better: SI-SNRi when a paired set is given, else minus the MixIT loss."""
    if "valid_sisnri" in metrics:
        return metrics["valid_sisnri"]
    if "valid_mixit" in metrics:
        return -metrics["valid_mixit"]
    return None


def train(config: TrainConfig, progress: bool = True) -> dict:
    """Train (or resume) a run in ``config.out``; returns a summary dict.

    The run folder is locked for the whole run (by rank 0 under DDP).

    Raises:
        TrainingError: too many NaN/Inf steps in a row (the last good weights are saved),
            or a run folder that holds a run with another model.
        DataError: no usable training audio.
        LockError: another process is training in the same folder.
    """
    c = config.resolved()
    rank, _ = _distributed()
    with folder_lock(c.out, c.strategy) if rank == 0 else contextlib.nullcontext():
        return _train(c, progress)


def _train(c: TrainConfig, progress: bool) -> dict:
    rank, world = _distributed()
    if c.threads:
        torch.set_num_threads(c.threads)
    device = torch.device(c.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    out = Path(c.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    allowed = (enhancement_constraint(c.n_sources).to(device)
               if c.task == "enhance" else None)
    strategy = STRATEGIES[c.strategy](c, device, allowed)
    init = models.load_checkpoint(c.init, map_location=device) if c.init else None
    name, args = strategy.model_spec() or (
        (init["model_name"], init["model_args"]) if init else
        (c.model, models.model_args(c.model, c.preset, n_sources=c.n_sources, causal=c.causal)))
    torch.manual_seed(c.seed)
    model = models.build(name, args).to(device)
    if init:
        model.load_state_dict(init["state_dict"])  # a resumed run overwrites it below
    opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    step, best, bad_total, elapsed0, strategy_state = 0, None, 0, 0.0, None
    last_path, best_path = out / "last.pt", out / "best.pt"
    if last_path.exists():
        ckpt = models.load_checkpoint(last_path, map_location=device)
        if ckpt["model_name"] != name or ckpt["model_args"] != args:
            raise TrainingError(f"{out} holds a run of another model ({ckpt['model_name']} "
                                f"{ckpt['model_args']}); choose another --out")
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        step, best = ckpt["step"], ckpt.get("best_score")
        bad_total, elapsed0 = ckpt.get("bad_steps", 0), ckpt.get("elapsed_s", 0.0)
        strategy_state = ckpt.get("strategy_state", {})
        log.info("resuming %s from step %d", out, step)
    if step >= c.max_steps:
        log.info("%s already finished (%d steps)", out, step)
        return {"step": step, "best_score": best, "bad_steps": bad_total, "stopped": False,
                "out": str(out)}

    total_examples = c.max_steps * c.batch_size * world
    train_set, valid_mix, paired, seconds = _datasets(c, total_examples)
    epoch_steps = math.ceil(seconds / (c.segment_seconds * c.batch_size * world))
    strategy.start(model, strategy_state, epoch_steps)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=c.batch_size,
        sampler=_StepSampler(step, c.max_steps, c.batch_size, rank, world),
        num_workers=c.workers, worker_init_fn=_ignore_signals if c.workers else None,
        prefetch_factor=4 if c.workers else None, pin_memory=device.type == "cuda")
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    amp = c.amp and device.type == "cuda"

    if rank == 0:
        _write_json(out / "config.json", dataclasses.asdict(c))
    logfile = open(out / "log.jsonl", "a") if rank == 0 else None  # noqa: SIM115

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signal.Signals(signum).name

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} \
        if _main_thread() else {}

    def save(kind: str, metrics: dict | None = None):
        if rank != 0:
            return
        content = dict(model_name=name, model_args=args, state_dict=model.state_dict(),
                       sample_rate=c.sample_rate, train_config=dataclasses.asdict(c),
                       step=step, task=c.task, metrics=metrics or {})
        if kind == "last":
            content.update(optimizer=opt.state_dict(), best_score=best, bad_steps=bad_total,
                           elapsed_s=elapsed0 + time.perf_counter() - start_time,
                           strategy_state=strategy.state_dict())
            models.save_checkpoint(last_path, **content)
        else:
            models.save_checkpoint(best_path, **content)

    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=c.max_steps, initial=step, unit="step", dynamic_ncols=True,
                   desc=f"{c.strategy} {c.model}")
    start_time, start_step = time.perf_counter(), step
    deadline = start_time + 60 * c.max_minutes if c.max_minutes else None
    consecutive_bad, running, since_log, t_log = 0, [], 0, time.perf_counter()
    net.train()
    stopped_by = None
    try:
        for batch in loader:
            if stop["signal"]:
                stopped_by = stop["signal"]
                break
            if deadline and time.perf_counter() > deadline:
                stopped_by = "time budget"
                break
            batch = batch.to(device, non_blocking=True)
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, c)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = strategy.loss(net, batch, step)
            finite = bool(torch.isfinite(loss))
            if finite:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
                finite = bool(torch.isfinite(norm))
            if world > 1:  # every rank must agree to skip, or weights drift apart
                flag = torch.tensor([0.0 if finite else 1.0], device=device)
                torch.distributed.all_reduce(flag)
                finite = flag.item() == 0
            if not finite:
                bad_total += 1
                consecutive_bad += 1
                opt.zero_grad(set_to_none=True)
                if consecutive_bad >= c.max_bad_steps:
                    save("last")
                    raise TrainingError(
                        f"{consecutive_bad} NaN/Inf losses in a row at step {step}; stopped. "
                        f"The last good weights are in {last_path}. Lower --lr or check "
                        "the data")
                step += 1
                continue
            consecutive_bad = 0
            opt.step()
            step += 1
            strategy.after_step(model, step)
            running.append(float(loss.detach()))
            since_log += 1
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{running[-1]:.2f}", refresh=False)
            if logfile and (step % c.log_every == 0 or step == c.max_steps):
                now = time.perf_counter()
                _log(logfile, step=step, time_s=elapsed0 + now - start_time,
                     loss=float(np.mean(running)), lr=_lr_at(step - 1, c),
                     steps_per_s=since_log / (now - t_log), bad_steps=bad_total)
                running, since_log, t_log = [], 0, now
            if step % c.valid_every == 0 or step == c.max_steps:
                metrics = validate(model, c, valid_mix, paired, device, allowed) \
                    if rank == 0 else {}
                score = _score(metrics)
                if rank == 0:
                    if score is not None and (best is None or score > best):
                        best = score
                        save("best", metrics)
                    save("last", metrics)
                    _log(logfile, step=step, time_s=elapsed0 + time.perf_counter() - start_time,
                         **metrics)
                    if bar:
                        bar.write(f"step {step}: " + ", ".join(
                            f"{k} {v:.2f}" for k, v in metrics.items()))
                if world > 1:
                    torch.distributed.barrier()
        if stopped_by:
            save("last")
            log.info("stopped by %s at step %d; rerun the same command to resume from %s",
                     stopped_by, step, last_path)
        if rank == 0 and not best_path.exists():
            save("best")  # no validation set: the last weights are the best we know
    except TrainingError:
        raise
    except BaseException:
        if step > start_step:  # keep what was learnt since the last save, then fail
            save("last")
            log.error("training failed at step %d; progress saved in %s", step, last_path)
        raise
    finally:
        if bar:
            bar.close()
        if logfile:
            logfile.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return {"step": step, "best_score": best, "bad_steps": bad_total,
            "stopped": stopped_by, "out": str(out), "model": model}


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _log(f, **entry) -> None:
    f.write(json.dumps(entry) + "\n")
    f.flush()


def _write_json(path: Path, obj) -> None:
    with wdata.audio.atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")
