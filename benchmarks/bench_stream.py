"""Real-time streaming: latency, per-frame compute and quality, beside RNNoise, in one run.

    python benchmarks/bench_stream.py [--model causal] [--real-data data/corpus-real]

1. Algorithmic latency and per-frame compute on ONE thread (median, 99th percentile, real-time
   factor = median / frame duration) of the causal model through ``wildmix.stream.Streamer``
   with the torch and the onnxruntime engine, and of the streaming peers
   (``wildmix.peers.stream``: RNNoise's and DeepFilterNet3's C libraries on 10 ms frames at
   48 kHz, GTCRN's and DTLN's ONNX graphs on 16 ms and 8 ms hops at 16 kHz) on the same
   machine, the same 20 s of speech in noise.
2. Quality on the real-voice test split of the 'real' corpus (unseen voices and languages):
   every test file streamed hop by hop through the causal model (``wildmix.stream``), beside
   the offline shipped model, every installed peer and the noisy input: SI-SNRi, PESQ, ESTOI with
   95% CIs, overall and per voice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wildmix import audio, peers, stream
from wildmix.cli import main as cli_main

sys.path.insert(0, str(Path(__file__).parent))
from bench_quality import per_voice_ci  # noqa: E402 (a sibling script)


def _speech(seconds: float) -> np.ndarray:
    """Committed speech in white noise at 5 dB, repeated to ``seconds`` (16 kHz)."""
    folder = Path(__file__).parent.parent / "tests" / "data" / "speech"
    clean = np.concatenate([audio.read(p, 16000) for p in sorted(folder.rglob("*.flac"))])
    clean = np.tile(clean, int(np.ceil(seconds * 16000 / len(clean))))[:int(seconds * 16000)]
    noise = np.random.default_rng(0).standard_normal(len(clean)).astype(np.float32)
    return clean + noise * np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10 ** 0.5)


def _frame_times(process, frames: list[np.ndarray]) -> list[float]:
    for frame in frames[:50]:  # warm-up
        process(frame)
    times = []
    for frame in frames:
        start = time.perf_counter()
        process(frame)
        times.append(time.perf_counter() - start)
    return times


PEER_LABELS = {"rnnoise": "RNNoise (C library)", "dfn3": "DeepFilterNet3 (C runtime)",
               "gtcrn": "GTCRN (ONNX)", "dtln": "DTLN (ONNX)"}


def _peer_frames(name: str, x16: np.ndarray) -> tuple[list[float], float]:
    """Per-hop times of a streaming peer (``wildmix.peers.stream``) at its own rate."""
    s = peers.stream(name)
    x = audio.resample(x16, 16000, s.rate)
    frames = [x[i:i + s.hop] for i in range(0, len(x) - s.hop + 1, s.hop)]
    return _frame_times(s.push, frames), s.hop / s.rate


def speed(model: str, seconds: float) -> list[tuple[str, bool]]:
    torch.set_num_threads(1)
    x = _speech(seconds)
    rows = []
    for engine in ("torch", "onnx"):
        streamer = stream.load(model, engine=engine, threads=1)
        hop = streamer.hop
        frames = [x[s:s + hop] for s in range(0, len(x) - hop + 1, hop)]
        rows.append((f"wildmix {model} ({engine})", streamer.latency_ms,
                     _frame_times(streamer.process, frames), hop / streamer.sample_rate))
    ready = peers.available()
    for name in (n for n in peers.STREAMING if ready[n]):
        times, frame_s = _peer_frames(name, x)
        latency = 1000.0 * peers.DELAYS[name] / peers.RATES[name]
        rows.append((PEER_LABELS[name], latency, times, frame_s))
    print(f"\nstreaming on 1 thread, {seconds:.0f} s of speech in noise, frame by frame\n")
    print("| system | algorithmic latency ms | frame ms | per-frame median ms | "
          "99th percentile ms | RTF (median) | 99th percentile under the frame |")
    print("|---|---|---|---|---|---|---|")
    checks = []
    for name, latency, times, frame_s in rows:
        median, p99 = statistics.median(times), float(np.percentile(times, 99))
        print(f"| {name} | {latency:.1f} | {1000 * frame_s:.0f} | {1000 * median:.3f} | "
              f"{1000 * p99:.3f} | {median / frame_s:.4f} | {'yes' if p99 < frame_s else 'NO'} "
              "|")
        if name.startswith("wildmix"):
            checks += [(f"{name}: latency {latency:.1f} ms <= 20", latency <= 20.0),
                       (f"{name}: RTF {median / frame_s:.4f} <= 0.1, 99th percentile frame "
                        "under the hop", median / frame_s <= 0.1 and p99 < frame_s)]
    return checks


def quality(model: str, data: Path, report: Path, limit: int | None
            ) -> list[tuple[str, bool]]:
    if not (data / "manifest.jsonl").exists():
        cli_main(["corpus", "build", str(data), "--size", "real"])
    files = sorted((data / "test" / "noisy").glob("*.wav"))[:limit]
    streamer = stream.load(model, engine="onnx")
    with tempfile.TemporaryDirectory() as tmp:
        streamed = Path(tmp) / f"{Path(model).name}-streamed"
        streamed.mkdir()
        start = time.perf_counter()
        for path in files:
            stream.stream_file(streamer, path, streamed / path.name, streamer.hop)
        print(f"\nstreamed {len(files)} test files hop by hop in "
              f"{time.perf_counter() - start:.0f} s (onnxruntime, 1 thread)")
        argv = ["evaluate", "--data", str(data / "test"), "--out", str(report), "--baseline",
                ",".join(["noisy", *(n for n, ok in peers.available().items() if ok)]),
                "--model", "default", "--enhanced", str(streamed),
                "--no-progress"]
        if cli_main(argv + (["--limit", str(limit)] if limit else [])):
            raise SystemExit("evaluate failed")
    per_voice_ci(data, report)
    summary = json.loads((report / "results.json").read_text())["summary"]
    ours, rnnoise = summary[streamed.name], summary["rnnoise"]
    return [(f"{streamed.name} {m} {ours[m]['mean']:.3f} >= RNNoise {rnnoise[m]['mean']:.3f}",
             ours[m]["mean"] >= rnnoise[m]["mean"]) for m in ("si_snri", "pesq", "estoi")]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="causal",
                        help="causal run, checkpoint or shipped name (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--real-data", default="data/corpus-real")
    parser.add_argument("--report", default="reports/stream")
    parser.add_argument("--limit", type=int, help="only the first N test files")
    parser.add_argument("--speed-only", action="store_true")
    args = parser.parse_args(argv)
    checks = speed(args.model, args.seconds)
    if not args.speed_only:
        checks += quality(args.model, Path(args.real_data), Path(args.report), args.limit)
    print("\ntargets")
    for text, ok in checks:
        print(f"  {'met ' if ok else 'MISSED'}  {text}")


if __name__ == "__main__":
    main()
