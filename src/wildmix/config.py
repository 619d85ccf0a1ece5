"""Training settings as pure data, and the one step that turns them into a plan.

:class:`TrainConfig` holds every setting with its default, in one place; the command line
overrides fields and the run folder stores the resolved copy. :func:`resolve` is the only
step that reads the disk: it checks the settings, finds the parts of a built-in corpus
through :func:`wildmix.corpus.layout`, and loads the ``init`` or ``teacher`` checkpoint
once, handing it on in the :class:`Plan`. This module does not import torch, so the
command line takes its choices and defaults from here at no cost.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

log = logging.getLogger("wildmix")

STRATEGIES = ("mixit", "supervised", "remixit")
TASKS = ("enhance", "separate")
MODELS = ("stft", "tdcn")  # wildmix.models.REGISTRY; a test holds them equal
PRESETS = ("tiny", "cpu", "gpu", "stream")  # the models' presets; a test holds them equal
LOSSES = ("snr", "sisnr")
SEARCHES = ("exact", "efficient")
TEACHER_UPDATES = ("ema", "replace", "frozen")
REFRESH = ("better", "always", "none")  # how a cached teacher follows the student
SELECTIONS = ("auto", "sisnri", "dnsmos", "check", "agreement", "mixit", "none")
# what `wildmix evaluate` offers: wildmix.evaluate.BASELINES and ENHANCE_METRICS (a test
# holds them equal); named here so that the command line need not import torch
BASELINES = ("noisy", "spectral-gating", "spectral-gating-stationary", "nsnet2", "rnnoise",
             "dfn3", "gtcrn", "dtln")
METRICS = ("si_snr", "si_snri", "pesq", "estoi", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovr")
CHUNK_SECONDS = 10.0  # block length of wildmix.enhance.Enhancer
# enhancement: the speech output keeps the input ATTEN_LIM_DB below it (an attenuation limit,
# as DeepFilterNet's); the masks' deepest cuts cost more PESQ and ESTOI than the noise they
# remove. 26 dB (a floor of 0.05) chosen on the valid splits (see MODEL_CARD.md); inf: off
ATTEN_LIM_DB = 26.0
# separation (wildmix.enhance.merge_plan): outputs whose loudness envelopes (frames of
# ENVELOPE_HOP_SECONDS) correlate at least COHERENCE are merged, pieces of one sound; then,
# when one output carries LONE_SHARE of the energy, the input is one sound and all outputs
# are merged into it. Chosen on the sounds corpus's valid split with the M=8 MixIT model
# (see the README); 1: off
COHERENCE = 0.8
LONE_SHARE = 0.95
ENVELOPE_HOP_SECONDS = 0.016
STREAM_ENGINES = ("torch", "onnx")  # wildmix.stream.Streamer's engines
STREAM_MODEL = "causal"  # the shipped causal model, wildmix stream's default
SEPARATION_MODEL = "separate"  # the shipped separation model, wildmix separate's default


@dataclass
class TrainConfig:
    """Every training setting, in one place; the run folder stores the resolved copy."""

    data: str = ""
    out: str = "runs/run"
    # folder of noise-only clips, "auto" (VAD), "teacher" (the init model's noise estimates
    # of the recordings), "pauses" (the stretches where the init model hears no speech), or
    # None
    noise: str | None = None
    valid: str | None = None  # paired folder (noisy/, clean/) or unlabeled recordings
    clean: str | None = None  # clean references of --data, for the supervised strategy
    # supervised without references (or beside RemixIT): clean speech (any voices) mixed on
    # the fly with the --noise clips (a folder, or noise found in the recordings of --data)
    speech: str | None = None
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
    # stop (and save) after this much training time; the learning rate then decays over
    # whichever budget ends first
    max_minutes: float | None = None
    loss: str = "snr"  # snr | sisnr
    snr_max: float = 30.0
    search: str | None = None  # exact | efficient; default exact up to M=12
    sparsity: float = 0.0  # weight of the L1/L2 output-RMS sparsity loss
    # MixIT: the sparsity loss is off for this many steps, then rises to its weight over as
    # many again (0: full weight from the first step)
    sparsity_start: int = 0
    # MixIT enhancement: weight of the energy that noise outputs give to the noisy recording
    # (speech leaking out of output 0)
    leakage: float = 0.0
    # MixIT: weight (dB for a full overlap) of the time-frequency overlap of the outputs
    # (enhancement: speech output against each noise output; separation: every pair), from
    # step 1000; default 30 for MixIT enhancement (it stops MixIT's drift), else 0
    overlap: float | None = None
    noise_augment: float = 0.0  # probability of extra noise in the noisy mixture
    # supervised (and RemixIT's --speech): speed, EQ and noise remixing of the clean speech;
    # MixIT: speed and EQ of each mixture
    augment: bool = False
    augment_speed: tuple[float, float] = (0.85, 1.15)  # range of the speed factor
    # supervised --augment: probability that the noise too is changed (speed, EQ, a second
    # noise), for kinds of noise unlike the training ones
    augment_noise: float = 0.0
    # dynamic mixing (--noise a sound library): the range of the SNR drawn for each example
    mix_snr_db: tuple[float, float] = (-10.0, 20.0)
    # level of the second mixture relative to the first, in dB. Default for enhance:
    # (-25, 0), the noise-only mixture 0 to 25 dB below the noisy one, where the noise inside
    # noisy recordings lies; louder draws teach "remove the loud noise, keep the quiet one
    # with the speech" (best valid SI-SNRi on the small corpus after 2000 steps: +1.8 dB at
    # (-5, 5), +5.0 at (-15, 0), +5.3 at (-25, 0)). For separate: (-5, 5).
    relative_gain_db: tuple[float, float] | None = None
    grad_clip: float = 5.0
    # validation, best.pt and the weights a run gives score an exponential moving average
    # of the trained weights (Polyak averaging; decay min(ema, (1 + t) / (10 + t)) at step
    # t); 0: the trained weights themselves. MixIT's valid SI-SNRi jumps by up to 1.5 dB
    # between validations 250 steps apart at the peak learning rate without it (small
    # corpus, make bench-curve)
    ema: float = 0.999
    valid_every: int = 250
    valid_mixtures: int = 64
    valid_files: int = 40
    # what chooses best.pt: sisnri (a paired valid set), dnsmos (DNSMOS OVR of the speech
    # output on the valid recordings, label-free; without --valid, on files of --data held
    # back from training), mixit (the MixIT loss on held-out mixtures); auto: sisnri with a
    # paired valid set, else mixit for MixIT, else none (the last weights are kept)
    select: str = "auto"
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
    grow_blocks: int = 0  # add this many residual blocks to the init model (identity at first)
    # RemixIT: the teacher (a run folder or checkpoint) whose model the student copies
    teacher: str | None = None
    teacher_update: str = "ema"  # ema | replace | frozen
    teacher_momentum: float = 0.9  # ema: teacher <- m * teacher + (1 - m) * student
    teacher_every: str = "epoch"  # "step", "epoch", "N steps" or "N epochs"
    # RemixIT with cached targets: a folder of a teacher's speech estimates of --data (NAME.wav
    # for each recording NAME, wildmix.teachers); the --teacher model then only starts the
    # student, and stays frozen
    teacher_targets: str | None = None
    # the label-free check of wildmix adapt with a cached teacher (wildmix.teachers): known
    # speech (clean/) and the same with the noise of held-back recordings (noisy/), and the
    # teacher's estimates (teacher/, teacher.json); validation scores the model's SI-SNR on
    # it (valid_check)
    check: str | None = None
    # with `check`, at each validation: "better": the student joins the teacher (its
    # estimates become the mean of the teacher's members and the student's) when that
    # raises the teacher's score on the check; "always": it joins; "none": it stays fixed
    teacher_refresh: str = "none"
    extra: dict = field(default_factory=dict)


def default(name: str):
    """The default of a :class:`TrainConfig` field (for help texts)."""
    f = TrainConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


@dataclass
class Plan:
    """A resolved config and what it needs from the disk, read once."""

    config: TrainConfig  # every default filled in
    model_name: str
    model_args: dict
    init: dict | None = None  # checkpoint to start from
    teacher: dict | None = None  # RemixIT's teacher checkpoint


def resolve(config: TrainConfig) -> Plan:
    """Check the settings, fill the defaults that depend on others, read the corpus layout
    and load the ``init``/``teacher`` checkpoint (once).

    Raises:
        ValueError: settings that do not fit together, naming the flag.
        CheckpointError: an unusable ``init``/``teacher``.
    """
    from wildmix import models

    c = dataclasses.replace(config)
    _check_choices(c)
    teacher = models.load_checkpoint(c.teacher) if c.strategy == "remixit" else None
    init = models.load_checkpoint(c.init) if c.init else None
    if c.grow_blocks:
        if not init:
            raise ValueError("--grow-blocks adds blocks to the --init model: give --init")
        init = models.grow(init, c.grow_blocks)
    for ckpt, role in ((teacher, "teacher"), (init, "init")):
        if ckpt:
            _adopt(c, ckpt, role)
    if c.lr is None:
        c.lr = 5e-4 if c.strategy == "remixit" or c.init else 3e-3
    _apply_layout(c)
    _fill_defaults(c)
    _check_combination(c)
    spec = teacher or init
    if spec:
        name, args = spec["model_name"], spec["model_args"]
    else:
        name, args = c.model, models.model_args(c.model, c.preset, n_sources=c.n_sources,
                                                causal=c.causal or None)
    c.causal = bool(args.get("causal", False))  # a preset may be causal
    return Plan(c, name, args, init=init, teacher=teacher)


def _check_choices(c: TrainConfig) -> None:
    for name, choices in (("task", TASKS), ("strategy", STRATEGIES)):
        if getattr(c, name) not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, got "
                             f"{getattr(c, name)!r}")
    if c.strategy != "remixit":
        return
    if not c.teacher:
        raise ValueError("RemixIT needs a teacher: --teacher RUN_OR_CHECKPOINT")
    if c.task != "enhance":
        raise ValueError("RemixIT is for speech enhancement (--task enhance)")
    if c.init:
        raise ValueError("RemixIT starts the student from its teacher; drop --init")
    if c.teacher_update not in TEACHER_UPDATES:
        raise ValueError(f"teacher_update must be ema, replace or frozen, got "
                         f"{c.teacher_update!r}")
    if not 0.0 <= c.teacher_momentum < 1.0:
        raise ValueError(f"teacher_momentum must be in [0, 1), got {c.teacher_momentum}")
    interval_steps(c.teacher_every, 1)  # fail early on a typo
    if c.teacher_targets and c.teacher_update != "frozen":
        raise ValueError("RemixIT on cached teacher estimates (teacher_targets) keeps its "
                         "teacher frozen: teacher_update='frozen'")


def _adopt(c: TrainConfig, ckpt: dict, role: str) -> None:
    """Take model, outputs, causality and sample rate from a checkpoint."""
    c.model, c.sample_rate = ckpt["model_name"], ckpt["sample_rate"]
    c.n_sources = ckpt["model_args"].get("n_sources", c.n_sources)
    c.causal = bool(ckpt["model_args"].get("causal", c.causal))
    c.preset = role


def _apply_layout(c: TrainConfig) -> None:
    """A built-in corpus root as --data: its parts fill the folders not given."""
    from wildmix import corpus

    parts = corpus.layout(c.data)
    if parts is None:
        return
    c.data = parts.train
    if parts.noise and c.task == "enhance" and c.noise is None:
        c.noise = parts.noise
    if c.valid is None:
        c.valid = parts.valid
    if c.clean is None:
        c.clean = parts.clean


def _fill_defaults(c: TrainConfig) -> None:
    if c.n_sources is None:
        c.n_sources = 3 if c.task == "enhance" else 4
    if c.relative_gain_db is None:
        c.relative_gain_db = (-25.0, 0.0) if c.task == "enhance" else (-5.0, 5.0)
    if c.search is None:
        c.search = "exact" if c.n_sources <= 12 else "efficient"
    if c.overlap is None:
        c.overlap = 30.0 if c.strategy == "mixit" and c.task == "enhance" else 0.0
    c.relative_gain_db = tuple(c.relative_gain_db)
    c.augment_speed = tuple(c.augment_speed)
    c.mix_snr_db = tuple(c.mix_snr_db)


def _selection(c: TrainConfig) -> str | None:
    """The criterion that chooses best.pt (``c.select`` resolved), or None."""
    from wildmix import corpus

    paired = bool(c.valid) and corpus.paired_task(c.valid) == "enhance"
    if c.select == "auto":
        if paired:
            return "sisnri"
        if c.check:
            return "check"
        if c.teacher_targets:
            return "agreement"
        return "mixit" if c.strategy == "mixit" and c.valid else None
    if c.select == "agreement" and not c.teacher_targets:
        raise ValueError("--select agreement compares the output with a teacher's cached "
                         "estimates: it is for wildmix adapt with a --teacher other than "
                         "the model being adapted")
    if c.teacher_refresh not in REFRESH:
        raise ValueError(f"teacher refresh must be one of {', '.join(REFRESH)}, got "
                         f"{c.teacher_refresh!r}")
    if (c.select == "check" or c.teacher_refresh != "none") and not c.check:
        raise ValueError("--select check and the teacher refresh need the check files "
                         "that wildmix adapt builds with a --teacher other than the model "
                         "being adapted")
    if c.select == "sisnri" and not paired:
        raise ValueError("--select sisnri needs a paired --valid folder (noisy/, clean/)")
    if c.select == "mixit" and not (c.strategy == "mixit" and c.valid):
        raise ValueError("--select mixit needs --strategy mixit and a --valid folder")
    if c.select == "none":
        return None
    if c.select == "dnsmos":
        if c.task != "enhance":
            raise ValueError("--select dnsmos scores speech: it is for --task enhance")
        require("mos", EXTRAS["mos"], "--select dnsmos")
    return c.select


def _check_combination(c: TrainConfig) -> None:
    # loss weights: a negative one rewards the fault it is meant to penalise
    for name in ("sparsity", "leakage", "overlap"):
        if not math.isfinite(getattr(c, name)) or getattr(c, name) < 0:
            raise ValueError(f"--{name} must be a weight >= 0, got {getattr(c, name)}")
    if c.sparsity_start < 0:
        raise ValueError(f"--sparsity-start must be a step count >= 0, got {c.sparsity_start}")
    if c.leakage and not (c.strategy == "mixit" and c.task == "enhance"):
        raise ValueError("--leakage is for MixIT enhancement (output 0 is the speech)")
    if c.overlap and c.strategy != "mixit":
        raise ValueError("--overlap is for MixIT training")
    if c.augment and c.strategy == "remixit" and not c.speech:
        raise ValueError("--augment is for --supervised and MixIT training (RemixIT takes its "
                         "targets from the teacher; with --speech it changes that speech)")
    if not (all(map(math.isfinite, c.mix_snr_db)) and c.mix_snr_db[0] < c.mix_snr_db[1]):
        raise ValueError(f"--mix-snr-db needs LOW < HIGH, both finite, got "
                         f"{c.mix_snr_db[0]:g} {c.mix_snr_db[1]:g}")
    if not 0 <= c.augment_noise <= 1:
        raise ValueError(f"--augment-noise must be a probability, got {c.augment_noise}")
    if c.augment_noise and not (c.augment and c.strategy == "supervised" and c.clean):
        raise ValueError("--augment-noise is for --supervised --augment training on "
                         "noisy/clean pairs")
    if c.strategy == "supervised" and not (c.clean or c.speech):
        raise ValueError("the supervised strategy needs clean references (--clean DIR) or "
                         "clean speech to mix with noise (--speech DIR --noise ...)")
    from wildmix.corpus import library

    if not c.data and not (c.strategy == "supervised" and c.speech
                           and library.is_library(c.noise)):
        raise ValueError("--data is needed: a folder of noisy recordings or a corpus (only "
                         "--supervised --speech DIR --noise LIBRARY trains without one)")
    if c.speech and not (c.strategy in ("supervised", "remixit") and c.task == "enhance"
                         and c.noise):
        raise ValueError("--speech is for enhancement, supervised or beside RemixIT, with "
                         "--noise (the noise to mix it with)")
    if c.task == "enhance" and c.strategy == "mixit" and c.noise is None:
        raise ValueError("enhancement with MixIT needs noise-only clips: --noise DIR, "
                         "--noise auto (speech-free stretches found by a VAD), --noise "
                         "teacher (the --init model's noise estimates of the recordings) or "
                         "--noise pauses (where the --init model hears no speech)")
    if c.noise in ("teacher", "pauses") and not (
            (c.init or c.teacher) and (c.strategy == "mixit" or c.speech)):
        raise ValueError(f"--noise {c.noise} takes its noise from the --init model: it "
                         f"needs --init (RemixIT: --teacher), and --strategy mixit or --speech")
    if c.n_sources < 2:
        raise ValueError(f"n_sources must be at least 2, got {c.n_sources}")
    if c.select not in SELECTIONS:
        raise ValueError(f"select must be one of {', '.join(SELECTIONS)}, got {c.select!r}")
    c.select = _selection(c) or "none"


def interval_steps(text: str, epoch_steps: int) -> int:
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


# --- wildmix adapt: the policy, as one function ----------------------------------------


ADAPT_STRATEGIES = ("remixit", "mixit", "supervised")
# wildmix adapt's peak learning rates, chosen on valid sets only. RemixIT: 1e-4 beat 5e-4 on
# both (valid voices in new noise: +0.17 dB over the start against -0.64; small's valid
# split: +0.34 against +0.20). Supervised on the pauses, valid voices in new noise (start
# +4.98 dB): 5e-4 +4.55, 2e-4 +5.13, 1e-4 +5.44, 5e-5 +5.54. MixIT keeps TrainConfig's
# fine-tuning rate.
ADAPT_LR = {"remixit": 1e-4, "supervised": 5e-5}


def adapt_config(data: str, out: str, start: str = "default", strategy: str = "remixit",
                 noise: str | None = None, valid: str | None = None, select: str = "auto",
                 max_steps: int = 3000,
                 max_minutes: float | None = 20.0, lr: float | None = None, seed: int = 0,
                 device: str | None = None, ema: float = TrainConfig.ema,
                 overlap: float | None = None, speech: str | None = None) -> TrainConfig:
    """The training settings of ``wildmix adapt``: RemixIT from ``start`` (recordings only),
    MixIT fine-tuning from it with ``noise`` clips (default: "auto", found by a VAD) and
    the ``overlap`` penalty (None: :class:`TrainConfig`'s default), or supervised
    fine-tuning on clean ``speech`` of other voices mixed with ``noise`` (default: "pauses",
    found in the recordings), the speech augmented. RemixIT with ``speech`` also trains on
    that supervised task, each batch on both. ``lr`` None: ``ADAPT_LR`` of the strategy.

    Raises:
        ValueError: an unknown strategy.
    """
    common = dict(data=data, out=out, valid=valid, select=select, max_steps=max_steps,
                  max_minutes=max_minutes, seed=seed, device=device, task="enhance", lr=lr,
                  ema=ema, overlap=overlap)
    # clean speech of other voices, in the recordings' noise, the speech augmented
    with_speech = dict(speech=speech, noise=noise or "pauses", augment=True)
    if strategy == "remixit":
        if noise and not speech:
            log.warning("--noise is for --strategy mixit or supervised, or RemixIT with "
                        "--speech; RemixIT alone takes the noise from the teacher's "
                        "estimates and ignores it")
        return TrainConfig(strategy="remixit", teacher=start, **(with_speech if speech else {}),
                           **{**common, "lr": ADAPT_LR["remixit"] if lr is None else lr})
    if strategy == "mixit":
        return TrainConfig(strategy="mixit", init=start, noise=noise or "auto", **common)
    if strategy == "supervised":
        if not speech:
            raise ValueError("adapt --strategy supervised needs clean speech of any voices: "
                             "--speech DIR (e.g. train/clean of a `wildmix corpus build` "
                             "folder)")
        return TrainConfig(strategy="supervised", init=start, **with_speech,
                           **{**common, "lr": ADAPT_LR["supervised"] if lr is None else lr})
    raise ValueError(f"adapt strategy must be one of {', '.join(ADAPT_STRATEGIES)}, got "
                     f"{strategy!r}")



# --- optional extras ----------------------------------------------------------------------

# the modules of each extra that wildmix checks for (the peers': wildmix.peers.REQUIRES)
EXTRAS = {"eval": ("scipy", "pesq", "pystoi", "noisereduce", "matplotlib"),
          "onnx": ("onnx", "onnxruntime"), "live": ("sounddevice",),
          "mos": ("onnxruntime", "speechmos"), "corpus": ("G722", "pyroomacoustics"),
          "serve": ("starlette", "uvicorn", "multipart")}


class MissingExtra(ImportError):
    """A command needs an optional extra that is not installed; one line saying which."""


def require(extra: str, modules: tuple[str, ...], what: str) -> None:
    """Raise :class:`MissingExtra` naming ``pip install 'wildmix[extra]'`` when any of
    ``modules`` cannot be imported."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"{what} needs the optional extra '{extra}' (missing: "
                           f"{', '.join(missing)}); install it with: pip install "
                           f"'wildmix[{extra}]'")
