"""Metrics and baselines over paired data, and the report that shows them.

Two layouts are understood, both as the built-in corpus writes them:

- enhancement: ``DIR/noisy/X.wav`` with its reference ``DIR/clean/X.wav``. Each method
  turns the noisy file into a speech estimate, scored by SI-SNR, SI-SNR improvement, PESQ
  (wide band at 16 kHz, narrow band at 8 kHz; other rates are resampled to 16 kHz) and
  ESTOI.
- unlabeled: a folder of recordings (or ``DIR/noisy/`` without ``clean/``), as users have
  them. Without a reference, each method's output is scored by DNSMOS P.835 (SIG, BAK,
  OVR; :mod:`wildmix.mos`), which paired sets can ask for too.
- separation: ``DIR/mixture/X.wav`` with its active sources ``DIR/sources/X/sK.wav``. Each
  method returns several outputs; the references are matched to distinct outputs by the
  best total SI-SNR, and scored as in FUSS (Wisdom et al. 2021): MSi, the mean SI-SNR
  improvement over the sources of mixtures with two or more, and 1S, the SI-SNR of the
  output matched to the only source of single-source mixtures. Silent outputs do not count
  (fewer outputs than sources: they are reused, as the input is for the ``noisy`` row).

A method is a function ``(waveform (T,), sample_rate) -> (T,)`` (enhancement) or
``(M, T)`` (separation). Baselines, trained models (:func:`model_method`) and folders of
outputs of other systems (:func:`folder_method`) are all methods. A metric that fails on
one file is recorded as missing with its reason; the evaluation goes on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wildmix import audio, corpus, losses, mos, peers
from wildmix.config import EXTRAS, require
from wildmix.report import LABELS, format_mean, write_html

log = logging.getLogger("wildmix")

Method = Callable[[np.ndarray, int], np.ndarray]

REFERENCE_METRICS = ("si_snr", "si_snri", "pesq", "estoi")  # the default on paired sets
ENHANCE_METRICS = REFERENCE_METRICS + mos.METRICS
SEPARATE_METRICS = ("msi", "1s")


# --- metrics ------------------------------------------------------------------------------


def si_snr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """SI-SNR in dB of two ``(T,)`` arrays."""
    return float(losses.sisnr(torch.from_numpy(np.asarray(estimate, np.float64)),
                              torch.from_numpy(np.asarray(reference, np.float64))))


def pesq_score(estimate: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    """PESQ (ITU-T P.862): narrow band at 8 kHz, else wide band at 16 kHz (resampled).

    Raises whatever the ``pesq`` package raises (e.g. no utterances in a silent file).
    """
    from pesq import pesq

    if sample_rate not in (8000, 16000):
        estimate = audio.resample(np.asarray(estimate, np.float32), sample_rate, 16000)
        reference = audio.resample(np.asarray(reference, np.float32), sample_rate, 16000)
        sample_rate = 16000
    mode = "nb" if sample_rate == 8000 else "wb"
    return float(pesq(sample_rate, np.asarray(reference, np.float64),
                      np.asarray(estimate, np.float64), mode))


def estoi_score(estimate: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    """Extended STOI (Jensen & Taal 2016) in [0, 1]."""
    from pystoi import stoi

    return float(stoi(np.asarray(reference, np.float64), np.asarray(estimate, np.float64),
                      sample_rate, extended=True))


def mean_ci(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, half-width of its 95% confidence interval (Student's t), and count."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if len(v) == 0:
        return math.nan, math.nan, 0
    if len(v) == 1:
        return float(v[0]), math.nan, 1
    from scipy import stats

    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half), len(v)


# --- methods ------------------------------------------------------------------------------


def spectral_gating(stationary: bool) -> Method:
    """The classic denoiser: spectral gating of the ``noisereduce`` package."""

    def run(x: np.ndarray, sample_rate: int) -> np.ndarray:
        import noisereduce

        y = noisereduce.reduce_noise(y=x, sr=sample_rate, stationary=stationary, n_jobs=1)
        return np.asarray(y, np.float32)[: len(x)]

    return run


def _identity(x: np.ndarray, sample_rate: int) -> np.ndarray:
    return x


BASELINES: dict[str, Method] = {
    "noisy": _identity,  # the input itself: SI-SNRi 0 by definition
    "spectral-gating": spectral_gating(stationary=False),
    "spectral-gating-stationary": spectral_gating(stationary=True),
    # pretrained denoisers of other projects (the 'peers' extra; see wildmix.peers)
    **{name: peers.method(name) for name in peers.NAMES},
}


def model_method(path: str | os.PathLike, task: str, device: str | None = None,
                 **options) -> Method:
    """A trained model (run folder or checkpoint) as a method, through the chunked Enhancer
    with its ``options`` (``atten_lim_db``; separation: ``lone_share`` and ``coherence``,
    see :func:`wildmix.enhance.merge_plan`)."""
    from wildmix.enhance import Enhancer

    enhancer = Enhancer.from_checkpoint(path, device=device, **options)
    if task == "separate":
        return lambda x, sr: enhancer.separate(x, sr)
    return lambda x, sr: enhancer.enhance(x, sr)


def folder_method(folder: str | os.PathLike) -> Method:
    """Outputs another system wrote: ``folder/X.wav`` for the input ``X``.

    The returned function takes the input's relative name as a third argument.
    """
    folder = Path(folder)

    def run(x: np.ndarray, sample_rate: int, name: str) -> np.ndarray:
        path = (folder / name).with_suffix(".wav")
        if not path.is_file():
            raise ValueError(f"{path}: no output file for {name}")
        return audio.read(path, sample_rate, check=False)

    run.wants_name = True
    return run


def methods(data: str | os.PathLike, models: list[str] | None = None,
            enhanced: list[str] | None = None, baselines: str | None = None,
            device: str | None = None, **options) -> dict[str, Method]:
    """Named methods for :func:`evaluate`: ``baselines`` (comma-separated names of
    :data:`BASELINES`, "none", or None for every one that fits the task and can run here:
    the peers only with their extra), trained
    ``models`` (run folders, checkpoints, shipped names; run with the Enhancer's
    ``options``) and ``enhanced`` output folders.

    Raises:
        ValueError: an unknown baseline or one that does not fit the task, or nothing to
            evaluate.
    """
    task = task_of(data)
    if baselines is None:  # every one that can run here
        ready = peers.available()
        names = [b for b in BASELINES if ready.get(b, True)] if task != "separate" \
            else ["noisy"]
    else:
        names = [b for b in baselines.split(",") if b and b != "none"]
    found: dict[str, Method] = {}
    for b in names:
        if b not in BASELINES:
            raise ValueError(f"unknown baseline {b!r}; choose from {', '.join(BASELINES)} "
                             "or none")
        if task == "separate" and b != "noisy":
            raise ValueError(f"baseline {b!r} is for enhancement; {data} is a separation set")
        if b in peers.REQUIRES:
            peers.check(b)
        found[b] = BASELINES[b]
    for path in models or []:
        found[method_name(path, found)] = model_method(path, task, device, **options)
    for folder in enhanced or []:
        found[method_name(folder, found)] = folder_method(folder)
    if not found:
        raise ValueError("nothing to evaluate: give --model, --enhanced or --baseline")
    return found


def method_name(path: str, taken: dict) -> str:
    """A short unique name for a model or folder: the run folder's, not ``best``."""
    p = Path(path)
    name = p.parent.name if p.is_file() and p.stem in ("best", "last") else p.name
    name = name.removesuffix(".pt").removesuffix(".safetensors") or str(p)
    base, k = name, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


# --- the evaluation -----------------------------------------------------------------------


@dataclass
class Example:
    name: str
    duration_s: float
    reference: list[np.ndarray] = field(repr=False)  # clean speech, or each source
    inputs: np.ndarray = field(repr=False)  # noisy or mixture (T,)
    sample_rate: int = 16000


def task_of(data: str | os.PathLike) -> str:
    """``'enhance'`` for noisy/ + clean/, ``'separate'`` for mixture/ + sources/,
    ``'unlabeled'`` for a folder of recordings (or noisy/ alone)."""
    task = corpus.paired_task(data)
    if task:
        return task
    if Path(data).is_dir():
        return "unlabeled"
    raise FileNotFoundError(f"{data}: no such folder")


def _inputs_dir(data: Path, task: str) -> Path:
    if task == "unlabeled":
        return data / "noisy" if (data / "noisy").is_dir() else data
    return data / corpus.PAIRED[task][0]


def pairs(data: str | os.PathLike, limit: int | None = None
          ) -> list[tuple[str, Path, list[Path]]]:
    """``(name, input file, reference files)`` of a paired folder, checked up front.

    Raises:
        ValueError: a missing reference or a length mismatch, naming the file.
    """
    data = Path(data)
    task = task_of(data)
    inputs_dir = _inputs_dir(data, task)
    names = [p.relative_to(inputs_dir) for p in audio.find_audio(inputs_dir)]
    if not names:
        raise ValueError(f"no audio files in {inputs_dir}")
    found = []
    for name in names[:limit]:
        src = inputs_dir / name
        if task == "unlabeled":
            refs = []
        elif task == "enhance":
            refs = [_match(data / "clean" / name)]
        else:
            refs = sorted((data / "sources" / name.with_suffix("")).glob("s*.*"))
            if not refs:
                raise ValueError(f"{src}: no reference sources in "
                                 f"{data / 'sources' / name.with_suffix('')}")
        try:
            head, infos = audio.info(src), [audio.info(ref) for ref in refs]
        except audio.AudioError as e:  # one unusable file: skip it, evaluate the rest
            log.warning("skipping %s", e)
            continue
        for ref, r in zip(refs, infos, strict=True):
            if r.frames * head.sample_rate != head.frames * r.sample_rate:
                raise ValueError(f"{name}: lengths differ ({src.relative_to(data)} "
                                 f"{head.frames} samples at {head.sample_rate} Hz, "
                                 f"{ref.relative_to(data)} {r.frames} at {r.sample_rate} Hz)")
        found.append((str(name), src, refs))
    if not found:
        raise ValueError(f"no usable pairs in {data} (see the warnings)")
    return found


def load_example(name: str, src: Path, refs: list[Path]) -> Example:
    """Read one pair; references are resampled to the input's rate."""
    sr = audio.info(src).sample_rate
    x = audio.read(src, check=False)
    return Example(name, len(x) / sr, [audio.fit_length(audio.read(r, sr, check=False), len(x))
                                       for r in refs], x, sr)


def _match(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.parent.glob(path.stem + ".*"))
    if not found:
        raise ValueError(f"{path}: no clean reference for this noisy file")
    return found[0]


def _enhance_scores(est: np.ndarray, ex: Example, metrics: tuple[str, ...]
                    ) -> tuple[dict, dict]:
    scores, missing = {}, {}
    if set(metrics) & set(mos.METRICS):
        try:
            scores.update(mos.dnsmos(est, ex.sample_rate))
        except ValueError as e:
            missing.update({m: _reason(e) for m in mos.METRICS})
    referenced = [m for m in metrics if m in REFERENCE_METRICS]
    if not referenced:
        return {m: scores[m] for m in metrics if m in scores}, missing
    clean, noisy, sr = ex.reference[0], ex.inputs, ex.sample_rate
    problem = audio.content_problem(clean)
    if problem:
        reason = "silent reference" if problem.startswith("silent") else f"reference {problem}"
        return {m: scores[m] for m in metrics if m in scores}, \
            {**missing, **{m: reason for m in referenced}}
    for m in referenced:
        try:
            if m in ("si_snr", "si_snri") and "si_snr" not in scores:
                scores["si_snr"] = si_snr(est, clean)
            if m == "si_snri":
                scores[m] = scores["si_snr"] - si_snr(noisy, clean)
            if m == "pesq":
                scores[m] = pesq_score(est, clean, sr)
            if m == "estoi":
                scores[m] = estoi_score(est, clean, sr)
        except Exception as e:  # a metric library failing on one file must not stop the run
            missing[m] = _reason(e)
    return {m: scores[m] for m in metrics if m in scores}, missing


def _separate_scores(est: np.ndarray, ex: Example) -> tuple[dict, dict]:
    """FUSS-style MSi (two or more sources) or 1S (one source) of one mixture."""
    from scipy.optimize import linear_sum_assignment

    refs = [r for r in ex.reference if np.abs(r).max(initial=0.0) >= audio.SILENCE_PEAK]
    if not refs:
        return {}, {"msi": "no active source", "1s": "no active source"}
    est = np.atleast_2d(est)
    audible = np.abs(est).max(-1) >= audio.SILENCE_PEAK
    if audible.any():  # silent outputs do not count (wildmix separate drops them): an
        est = est[audible]  # all-zero one would score 0 dB SI-SNR against any source
    if len(est) < len(refs):  # fewer outputs than sources: reuse them (e.g. the input)
        est = np.concatenate([est] * math.ceil(len(refs) / len(est)))
    table = np.array([[si_snr(e, r) for e in est] for r in refs])  # (K, M)
    rows, cols = linear_sum_assignment(-table)
    matched = table[rows, cols]
    if len(refs) == 1:
        return {"1s": float(matched[0])}, {"msi": "single-source mixture"}
    improvement = [matched[i] - si_snr(ex.inputs, refs[r]) for i, r in enumerate(rows)]
    return {"msi": float(np.mean(improvement))}, {"1s": "multi-source mixture"}


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {audio.first_line(e)}"


@dataclass
class Results:
    """Per-file scores of every method; ``rows[i]`` = one file processed by one method."""

    data: str
    task: str
    methods: list[str]
    metrics: list[str]
    rows: list[dict]
    outputs: dict = field(default_factory=dict, repr=False)  # (method, file) -> estimate
    examples: list[Example] = field(default_factory=list, repr=False)  # kept for the report

    def summary(self) -> dict:
        """``{method: {metric: {"mean", "ci95", "n", "missing"}, "rtf": ...}}``."""
        out = {}
        for method in self.methods:
            rows = [r for r in self.rows if r["method"] == method]
            entry = {}
            for m in self.metrics:
                mean, half, n = mean_ci(r["scores"].get(m) for r in rows)
                entry[m] = {"mean": mean, "ci95": half, "n": n,
                            "missing": sum(m in r["missing"] for r in rows)}
            seconds = sum(r["time_s"] for r in rows)
            duration = sum(r["duration_s"] for r in rows)
            entry["rtf"] = seconds / duration if duration else math.nan
            entry["time_s"] = seconds
            out[method] = entry
        return out

    def table(self) -> str:
        """The summary as a markdown table: mean ± 95% CI per metric, real-time factor."""
        summary = self.summary()
        head = ["method"] + [LABELS[m] for m in self.metrics] + ["RTF"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        for method, entry in summary.items():
            cells = [method]
            for m in self.metrics:
                mean, half = format_mean(entry[m], m)
                cells.append(mean + (f" ± {half}" if half else ""))
            cells.append(f"{entry['rtf']:.4f}")
            lines.append("| " + " | ".join(cells) + " |")
        n_files = len({r["file"] for r in self.rows})
        lines.append("")
        lines.append(f"{n_files} files of {self.data}; mean ± 95% confidence interval; RTF = "
                     "processing time / audio duration.")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"data": self.data, "task": self.task, "methods": self.methods,
                "metrics": self.metrics, "summary": self.summary(), "files": self.rows}

    def save(self, out: str | os.PathLike, examples: int = 3) -> dict[str, Path]:
        """Write ``results.json``, ``results.md`` and ``report.html`` (with spectrograms and
        audio of ``examples`` files) into ``out``; returns their paths."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "results.json", "markdown": out / "results.md"}
        with audio.atomic_path(paths["json"]) as tmp:
            Path(tmp).write_text(json.dumps(_finite(self.to_json()), indent=2) + "\n")
        with audio.atomic_path(paths["markdown"]) as tmp:
            Path(tmp).write_text(self.table() + "\n")
        paths["html"] = write_html(self, out, examples)
        return paths


def _finite(obj):
    """JSON has no NaN: missing numbers become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def evaluate(data: str | os.PathLike, methods: dict[str, Method],
             metrics: Iterable[str] | None = None, limit: int | None = None,
             keep_outputs: int = 3, progress: bool = True) -> Results:
    """Run every method on every file of a paired folder and score the outputs.

    Args:
        methods: name -> method (see the module docstring).
        metrics: a subset of :data:`ENHANCE_METRICS` (default: :data:`REFERENCE_METRICS`,
            or DNSMOS on unlabeled recordings); separation sets always
            use :data:`SEPARATE_METRICS`.
        limit: only the first ``limit`` files.
        keep_outputs: keep the outputs of this many files, spread over the set, for the
            report's examples.
    Raises:
        ValueError: a missing reference or a length mismatch, naming the file.
        MissingExtra: the 'eval' extra is not installed.
    """
    metrics = ready(data, metrics)
    task = task_of(data)
    found = pairs(data, limit)
    keep = set(np.linspace(0, len(found) - 1, min(keep_outputs, len(found))
                           ).round().astype(int).tolist()) if keep_outputs else set()
    results = Results(str(data), task, list(methods), list(metrics), [])
    from tqdm import tqdm

    bar = tqdm(total=len(found) * len(methods), unit="run", desc="evaluate",
               disable=not progress)
    for i, pair in enumerate(found):
        ex = load_example(*pair)
        if i in keep:
            results.examples.append(ex)
        for name, method in methods.items():
            row, est = _run(name, method, ex, task, metrics)
            results.rows.append(row)
            if i in keep and est is not None:
                results.outputs[(name, ex.name)] = est
            bar.update(1)
    bar.close()
    return results


def ready(data: str | os.PathLike, metrics: Iterable[str] | None = None) -> tuple[str, ...]:
    """The metrics :func:`evaluate` will compute on ``data``, checked before any work: the
    'eval' extra (and 'mos' for DNSMOS) installed, the metrics known and fit for the data.

    Raises:
        MissingExtra: an extra the evaluation needs is not installed.
        ValueError: an unknown metric, or one that needs references the data lacks.
    """
    require("eval", EXTRAS["eval"], "wildmix evaluate")
    return _metrics(task_of(data), metrics)


def _metrics(task: str, asked: Iterable[str] | None) -> tuple[str, ...]:
    """The metrics to compute: those asked for, checked against the task, or its default."""
    if task == "separate":
        return SEPARATE_METRICS
    default = mos.METRICS if task == "unlabeled" else REFERENCE_METRICS
    metrics = tuple(asked or default)
    unknown = set(metrics) - set(ENHANCE_METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from "
                         f"{', '.join(ENHANCE_METRICS)}")
    if task == "unlabeled" and set(metrics) - set(mos.METRICS):
        raise ValueError(f"{', '.join(sorted(set(metrics) - set(mos.METRICS)))} need clean "
                         "references (a folder with noisy/ and clean/); without them: "
                         f"{', '.join(mos.METRICS)}")
    if set(metrics) & set(mos.METRICS):
        require("mos", mos.REQUIRES, "DNSMOS")
    return metrics


def _run(name: str, method: Method, ex: Example, task: str, metrics: tuple[str, ...]
         ) -> tuple[dict, np.ndarray | None]:
    """One method on one file: its row of scores (or reasons) and its output."""
    row = {"file": ex.name, "method": name, "duration_s": ex.duration_s,
           "scores": {}, "missing": {}}
    start = time.perf_counter()
    try:
        if getattr(method, "wants_name", False):
            est = method(ex.inputs, ex.sample_rate, ex.name)
        else:
            est = method(ex.inputs, ex.sample_rate)
        row["time_s"] = time.perf_counter() - start
        est = np.asarray(est, np.float32)
        if est.shape[-1] != len(ex.inputs):
            raise ValueError(f"output has {est.shape[-1]} samples, input {len(ex.inputs)}")
        if not np.isfinite(est).all():
            raise ValueError("output contains NaN or Inf")
    except Exception as e:  # one failing file must not end the evaluation
        row["time_s"] = time.perf_counter() - start
        row["missing"] = {m: f"method failed: {_reason(e)}" for m in metrics}
        log.warning("%s on %s: %s", name, ex.name, _reason(e))
        return row, None
    if task != "separate":
        row["scores"], row["missing"] = _enhance_scores(est, ex, metrics)
    else:
        row["scores"], row["missing"] = _separate_scores(est, ex)
    return row, est


# --- a quick score of an enhanced folder ---------------------------------------------------


@dataclass
class Scores:
    files: list[str]
    noisy: np.ndarray  # SI-SNR of each noisy input, dB
    enhanced: np.ndarray  # SI-SNR of each enhanced output, dB

    @property
    def improvement(self) -> np.ndarray:
        return self.enhanced - self.noisy

    def summary(self) -> str:
        return (f"{len(self.files)} files: SI-SNR noisy {self.noisy.mean():.2f} dB, enhanced "
                f"{self.enhanced.mean():.2f} dB, improvement {self.improvement.mean():+.2f} dB "
                f"(median {np.median(self.improvement):+.2f})")


def score_folder(data: str | os.PathLike, enhanced: str | os.PathLike) -> Scores:
    """SI-SNR of ``data/noisy/X`` and ``enhanced/X`` against ``data/clean/X``.

    Raises:
        ValueError: a missing enhanced file or a length mismatch, naming the file.
    """
    if task_of(data) != "enhance":
        raise ValueError(f"{data}: score needs noisy/ and clean/")
    method = folder_method(enhanced)
    noisy_scores, enhanced_scores, names = [], [], []
    for pair in pairs(data):
        ex = load_example(*pair)
        names.append(ex.name)
        est = method(ex.inputs, ex.sample_rate, ex.name)
        if len(est) != len(ex.inputs):
            raise ValueError(f"{ex.name}: lengths differ (noisy {len(ex.inputs)}, enhanced "
                             f"{len(est)} samples)")
        noisy_scores.append(si_snr(ex.inputs, ex.reference[0]))
        enhanced_scores.append(si_snr(est, ex.reference[0]))
    return Scores(names, np.array(noisy_scores),
                  np.array(enhanced_scores))

