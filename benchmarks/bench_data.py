"""Built-in corpus build times, and data-loader throughput and memory.

    python benchmarks/bench_data.py [--sizes tiny small large] [--out DIR]

Builds each corpus size into DIR (default: a temporary folder; 'large' is several GB), then
draws 4 s enhancement mixtures (noisy + noise-only, two 4 s segments each) from the largest
corpus built, in-process and with 2 worker processes.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from wildmix import corpus, data


def _peak_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "large"])
    parser.add_argument("--out", default=None)
    parser.add_argument("--items", type=int, default=800)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="wildmix-bench-") as tmp:
        out = Path(args.out or tmp)
        print("corpus build (2 cores)")
        print(f"{'size':>6} | {'build s':>8} | {'train noisy min':>15} | {'files':>6}")
        print("-" * 46)
        built = None
        for size in args.sizes:
            root = out / f"corpus-{size}"
            start = time.perf_counter()
            corpus.build(root, size=size, seed=0)
            seconds = time.perf_counter() - start
            _, records = corpus.read_manifest(root)
            minutes = sum(r["duration_s"] for r in records
                          if r["split"] == "train" and r["role"] == "noisy") / 60
            files = sum(1 for p in root.rglob("*.wav"))
            print(f"{size:>6} | {seconds:8.1f} | {minutes:15.1f} | {files:6d}")
            built = root

        noisy = data.index_folder(built / "train" / "noisy")
        noise = data.index_folder(built / "train" / "noise")
        ds = data.MixtureDataset(noisy.clips, noise.clips, segment_seconds=4.0,
                                 examples_per_epoch=args.items, seed=0)
        print(f"\nloader on {built.name}: 4 s mixtures of 2 segments, batch 8")
        print(f"{'workers':>7} | {'mixtures/s':>10} | {'segments/s':>10} | "
              f"{'peak RSS MB, main':>17}")
        print("-" * 55)
        for workers in (0, 2):
            loader = data.make_loader(ds, batch_size=8, workers=workers)
            start, count = time.perf_counter(), 0
            for batch in loader:
                count += batch.shape[0]
            rate = count / (time.perf_counter() - start)
            peak = _peak_mb()  # this process; each worker holds a copy of the index only
            print(f"{workers:>7} | {rate:10.0f} | {2 * rate:10.0f} | {peak:17.0f}")
            del loader


if __name__ == "__main__":
    main()
