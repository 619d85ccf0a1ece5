"""Command line: argument parsing only; the work is done by the library modules.

Heavy modules are imported inside each command so that ``wildmix --help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("wildmix")


def _corpus_build(args) -> int:
    from wildmix import corpus

    manifest = corpus.build(args.dir, size=args.size, seed=args.seed,
                            sample_rate=args.sample_rate, kind=args.kind,
                            snr_range=tuple(args.snr), workers=args.workers,
                            progress=lambda msg: print(msg, file=sys.stderr))
    header, records = corpus.read_manifest(args.dir)
    minutes: dict[str, float] = {}
    for r in records:
        key = f"{r['split']}/{r['role']}"
        minutes[key] = minutes.get(key, 0.0) + r["duration_s"] / 60
    parts = ", ".join(f"{k} {v:.1f} min" for k, v in sorted(minutes.items()))
    print(f"built {args.kind} corpus '{args.size}' in {args.dir}: {parts}; manifest {manifest}")
    return 0


def _corpus_packages(args) -> int:
    from wildmix import corpus

    names = (corpus.missing_packages if args.missing else corpus.required_packages)(
        args.size, args.kind)
    print(" ".join(names))
    return 0


def _data_check(args) -> int:
    from wildmix import data

    index = data.index_folder(args.dir, min_seconds=args.min_seconds)
    print(f"{args.dir}: {index.summary()}")
    if args.noise == "auto":
        noise = data.harvest_noise(index, min_seconds=args.min_noise_seconds)
        print(f"noise found without speech (VAD): {noise.summary('stretches')} "
              f"in {len({c.path for c in noise.clips})} files")
    elif args.noise:
        noise = data.index_folder(args.noise, min_seconds=args.min_seconds)
        print(f"{args.noise}: {noise.summary()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wildmix",
        description="Learn speech enhancement and sound separation from noisy recordings.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    corpus = commands.add_parser("corpus", help="the built-in corpus")
    corpus_cmd = corpus.add_subparsers(dest="corpus_command", required=True)
    build = corpus_cmd.add_parser(
        "build", help="build the built-in corpus offline from Debian-packaged audio")
    build.add_argument("dir", help="output folder")
    build.add_argument("--size", choices=("tiny", "small", "large"), default="small")
    build.add_argument("--kind", choices=("speech", "sounds"), default="speech",
                       help="speech in noise (enhancement) or FUSS-style sound mixtures")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--sample-rate", type=int, default=16000)
    build.add_argument("--snr", type=float, nargs=2, default=(-5.0, 15.0),
                       metavar=("LOW", "HIGH"), help="SNR range in dB (default: -5 15)")
    build.add_argument("--workers", type=int, default=None,
                       help="processes (default: all cores)")
    build.set_defaults(func=_corpus_build)
    packages = corpus_cmd.add_parser("packages", help="Debian packages a build needs")
    packages.add_argument("--size", choices=("tiny", "small", "large"), default="small")
    packages.add_argument("--kind", choices=("speech", "sounds"), default="speech")
    packages.add_argument("--missing", action="store_true", help="only those not installed")
    packages.set_defaults(func=_corpus_packages)

    data = commands.add_parser("data", help="inspect a folder of recordings")
    data_cmd = data.add_subparsers(dest="data_command", required=True)
    check = data_cmd.add_parser(
        "check", help="index a folder, report unusable files and, with --noise auto, "
                      "how much speech-free noise a VAD finds")
    check.add_argument("dir")
    check.add_argument("--noise", default=None, help="a folder of noise-only clips, or 'auto'")
    check.add_argument("--min-seconds", type=float, default=0.5)
    check.add_argument("--min-noise-seconds", type=float, default=1.0)
    check.set_defaults(func=_data_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s")
    from wildmix.audio import AudioError
    from wildmix.corpus import CorpusError
    from wildmix.data import DataError

    try:
        return args.func(args)
    except (AudioError, CorpusError, DataError, FileNotFoundError) as e:
        print(f"wildmix: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wildmix: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
