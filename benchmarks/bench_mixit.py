"""MixIT search speed: exact (Gram, meet in the middle), efficient (least squares), naive.

Median forward+backward time for B=8, N=2, 4 s at 16 kHz, M in {4, 8, 12, 16}. The naive
reference remixes every candidate waveform, as asteroid's MixITLossWrapper does, then
back-propagates through the best one; it is slow, so it runs only up to --naive-max-m.

    python benchmarks/bench_mixit.py [--repeats 7] [--naive-max-m 12]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from wildmix.losses import neg_snr
from wildmix.mixit import mixit_loss


def naive_mixit(mixtures: torch.Tensor, estimates: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Reference: build every remix (B, K, N, T) in chunks, score it, keep the best."""
    n_batch, n_mix, _ = mixtures.shape
    n_src = estimates.shape[1]
    best = torch.full((n_batch,), float("inf"))
    best_a = torch.zeros(n_batch, n_mix, n_src)
    candidates = list(itertools.product(range(n_mix), repeat=n_src))
    with torch.no_grad():
        for start in range(0, len(candidates), chunk):
            assign = torch.tensor(candidates[start:start + chunk])  # (k, M)
            a = torch.nn.functional.one_hot(assign, n_mix).permute(0, 2, 1).float()  # (k, N, M)
            remix = torch.einsum("knm,bmt->bknt", a, estimates)  # (B, k, N, T)
            loss = neg_snr(remix, mixtures.unsqueeze(1)).sum(-1)  # (B, k)
            value, index = loss.min(-1)
            better = value < best
            best = torch.where(better, value, best)
            best_a[better] = a[index[better]]
    return neg_snr(best_a @ estimates, mixtures).sum(-1).mean()


def median_seconds(fn, repeats: int, budget_s: float = float("inf")) -> float:
    """Median seconds of ``fn()`` after one warm-up call; fewer repeats when one is slow."""
    times = []
    start_all = time.perf_counter()
    for _ in range(repeats + 1):  # the first call warms up
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if time.perf_counter() - start_all > budget_s and len(times) >= 2:
            break
    return statistics.median(times[1:])


def timed(fn, mixtures, estimates, repeats: int, budget_s: float) -> float:
    """Median seconds of forward + backward of ``fn(mixtures, estimates)``."""

    def step():
        fn(mixtures, estimates.detach().requires_grad_(True)).backward()

    return median_seconds(step, repeats, budget_s)


def parts(mixtures: torch.Tensor, estimates: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds of each part of one MixIT step: the Gram statistics and the final
    scoring (the remix of the chosen matrix, its SNR and the backward pass), which both
    searches do, and each search itself."""
    from wildmix import mixit

    allowed = torch.ones(mixtures.shape[0], mixtures.shape[1], estimates.shape[1],
                         dtype=torch.bool)
    stats = mixit._gram(mixtures, estimates, zero_mean=False)
    mixing = mixit._efficient_search(stats, allowed).to(estimates.dtype)

    def score(x, est):
        return neg_snr(mixing @ est, x).sum(-1).mean()

    return {"statistics": median_seconds(lambda: mixit._gram(mixtures, estimates, False),
                                         repeats),
            "scoring": timed(score, mixtures, estimates, repeats, float("inf")),
            "exact search": median_seconds(
                lambda: mixit._exact_search(stats, allowed, "snr", 30.0), repeats),
            "efficient search": median_seconds(
                lambda: mixit._efficient_search(stats, allowed), repeats)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--naive-max-m", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)

    length = int(args.seconds * 16000)
    print(f"MixIT forward+backward, B={args.batch}, N=2, T={length} (4 s at 16 kHz), "
          f"float32, {torch.get_num_threads()} threads, median of up to {args.repeats}")
    header = (f"{'M':>3} | {'exact ms':>9} | {'efficient ms':>12} | {'naive ms':>10} | "
              f"{'naive/exact':>11} | {'exact/efficient':>15}")
    print(header)
    print("-" * len(header))
    g = torch.Generator().manual_seed(0)
    for n_src in (4, 8, 12, 16):
        mixtures = torch.randn(args.batch, 2, length, generator=g)
        estimates = torch.randn(args.batch, n_src, length, generator=g)
        exact = timed(lambda x, s: mixit_loss(x, s, search="exact").loss, mixtures, estimates,
                      args.repeats, 30)
        efficient = timed(lambda x, s: mixit_loss(x, s, search="efficient").loss, mixtures,
                          estimates, args.repeats, 30)
        if n_src <= args.naive_max_m:
            naive = timed(naive_mixit, mixtures, estimates, args.repeats, 60)
            naive_s, ratio = f"{naive * 1e3:10.0f}", f"{naive / exact:10.0f}x"
        else:
            naive_s, ratio = f"{'skipped':>10}", f"{'-':>11}"
        print(f"{n_src:>3} | {exact * 1e3:9.1f} | {efficient * 1e3:12.1f} | {naive_s} | "
              f"{ratio:>11} | {exact / efficient:14.1f}x")
    print(f"\nparts of one step at M={n_src} (ms; statistics and scoring are shared):")
    for name, seconds in parts(mixtures, estimates, args.repeats).items():
        print(f"  {name:>16}: {seconds * 1e3:6.2f}")


if __name__ == "__main__":
    main()
