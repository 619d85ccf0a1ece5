"""Inference real-time factor, training speed, and memory enhancing a 1-hour file.

    python benchmarks/bench_enhance.py [--threads 2] [--hour-minutes 60]
    python benchmarks/bench_enhance.py --shipped [--threads 1]

RTF = processing time / audio duration at 16 kHz, median of repeats, for each model and
preset; training steps/s for batch 8 x 4 s with MixIT (M=3, exact search); peak resident
memory of a separate process that streams a long file through the CPU default.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wildmix import models
from wildmix.mixit import enhancement_constraint, mixit_loss


def _median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_mb() -> float:
    """This process's own peak RSS. (ru_maxrss would include the parent's peak: Linux keeps
    it across fork and exec.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(path: str) -> None:
    from wildmix.enhance import Enhancer

    model = models.build("stft", models.model_args("stft", "cpu"))
    start = time.perf_counter()
    Enhancer(model, 16000, device="cpu").enhance_file(path, {"speech": path + ".out.wav"})
    print(time.perf_counter() - start, _peak_mb())


def shipped(repeats: int) -> None:
    """RTF of every shipped enhancement model on a 60-s input, as ``wildmix enhance`` runs
    it (the Enhancer, 26 dB attenuation limit), median of ``repeats``."""
    from wildmix.enhance import Enhancer

    audio = np.random.default_rng(0).standard_normal(16000 * 60).astype(np.float32) * 0.1
    print(f"| shipped model | parameters | blocks | causal | shifts | RTF "
          f"({torch.get_num_threads()} thread(s), median of {repeats}) |")
    print("|---|---|---|---|---|---|")
    for path in sorted(models.WEIGHTS_DIR.glob("*.safetensors")):
        enhancer = Enhancer.from_checkpoint(path, device="cpu")  # the file's own shifts
        if enhancer.task != "enhance":
            continue
        rtf = _median_time(lambda e=enhancer: e.enhance(audio, 16000), repeats) / 60.0
        model = enhancer.model
        print(f"| {path.stem} | {models.n_parameters(model):,d} | {len(model.net)} | "
              f"{'yes' if model.causal else 'no'} | {enhancer.shifts} | {rtf:.4f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hour-minutes", type=float, default=60.0,
                        help="length of the long file (default: one hour)")
    parser.add_argument("--shipped", action="store_true",
                        help="only the RTF of the shipped enhancement models")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.shipped:
        return shipped(args.repeats)
    if args.memory_child:
        return _memory_child(args.memory_child)

    print(f"inference and training on {args.threads} threads, 16 kHz")
    print(f"{'model':>6} {'preset':>6} | {'params':>9} | {'RTF':>7} | {'train steps/s':>13}")
    print("-" * 52)
    audio = torch.randn(1, 16000 * 10) * 0.1
    batch = torch.randn(8, 2, 64000) * 0.1
    for name in ("stft", "tdcn"):
        for preset in ("tiny", "cpu", "gpu"):
            model = models.build(name, models.model_args(name, preset, n_sources=3))
            with torch.no_grad():
                rtf = _median_time(lambda m=model: m.eval()(audio), args.repeats) / 10.0
            heavy = name == "tdcn" and preset != "tiny"
            if heavy:  # a single step takes tens of seconds on a CPU: time one
                steps = "-"
            else:
                model.train()
                opt = torch.optim.AdamW(model.parameters())
                allowed = enhancement_constraint(3)

                def step(m=model, o=opt, a=allowed):
                    loss = mixit_loss(batch, m(batch.sum(1)), allowed=a).loss
                    o.zero_grad()
                    loss.backward()
                    o.step()

                steps = f"{1 / _median_time(step, args.repeats):.2f}"
            print(f"{name:>6} {preset:>6} | {models.n_parameters(model):9,d} | {rtf:7.4f} | "
                  f"{steps:>13}")

    with tempfile.TemporaryDirectory() as tmp:
        import soundfile as sf

        path = str(Path(tmp) / "long.wav")
        seconds = int(args.hour_minutes * 60)
        with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as f:
            rng = np.random.default_rng(0)
            for _ in range(seconds // 60):
                f.write((0.1 * rng.standard_normal(16000 * 60)).astype(np.float32))
        out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                              "--memory-child", path], capture_output=True, text=True,
                             check=True).stdout.split()
        print(f"\nenhancing a {seconds / 60:.0f}-minute 16 kHz file with stft/cpu: "
              f"{float(out[0]):.0f} s, peak memory {float(out[1]):.0f} MB (whole process)")


if __name__ == "__main__":
    main()
