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


def _train(args) -> int:
    import dataclasses

    from wildmix.config import TrainConfig
    from wildmix.train import train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.supervised:
        overrides["strategy"] = "supervised"
    for key in ("relative_gain_db", "augment_speed"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    summary = train(TrainConfig(**overrides), progress=not args.no_progress)
    best = summary.best_score
    print(f"{summary.out}: {summary.step} steps"
          + (f", best validation score {best:.2f}" if best is not None else "")
          + (f", {summary.bad_steps} skipped NaN/Inf steps" if summary.bad_steps else "")
          + (f" (stopped by {summary.stopped}; rerun to resume)" if summary.stopped else ""))
    return 0


def _enhance(args) -> int:
    from pathlib import Path

    from wildmix import audio
    from wildmix.enhance import Enhancer
    from wildmix.lock import folder_lock

    model, inputs = args.model, list(args.paths)
    if model is None and len(inputs) > 1 and _is_model(Path(inputs[0])):
        model, inputs = inputs[0], inputs[1:]  # wildmix enhance RUN INPUT...
    elif model is None and _is_model(Path(inputs[0])):
        raise ValueError(f"{inputs[0]} is a model; give the audio to enhance after it")
    enhancer = Enhancer.from_checkpoint(model or "default", chunk_seconds=args.chunk_seconds,
                                        device=args.device)
    task = args.task or enhancer.task
    jobs = []  # (source, relative output stem)
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            jobs += [(p, p.relative_to(root).with_suffix("")) for p in audio.find_audio(root)]
        elif root.is_file():
            jobs.append((root, Path(root.stem)))
        else:
            raise FileNotFoundError(f"{root}: no such file or folder")
    if not jobs:
        raise FileNotFoundError("no audio files in the inputs")
    out = Path(args.out)
    with folder_lock(out, "enhance"):
        failed = _enhance_jobs(enhancer, jobs, out, task, args)
    print(f"wrote {len(jobs) - failed} of {len(jobs)} files to {out}"
          + (f"; {failed} skipped (see warnings)" if failed else ""))
    return 1 if failed else 0


def _enhance_jobs(enhancer, jobs, out, task, args) -> int:
    from tqdm import tqdm

    from wildmix import audio

    inputs = {p.resolve() for p, _ in jobs}
    failed = 0
    for src, stem in tqdm(jobs, unit="file", disable=args.no_progress or len(jobs) < 2):
        if task == "separate":
            outputs = {f"s{m}": out / f"{stem}_s{m}.wav" for m in range(enhancer.n_sources)}
        else:
            outputs = {"speech": out / f"{stem}.wav"}
            if args.write_noise:
                outputs["noise"] = out / f"{stem}_noise.wav"
        clash = [p for p in outputs.values() if p.resolve() in inputs]
        if clash:
            raise FileExistsError(f"{clash[0]} is an input; refusing to overwrite it "
                                  "(choose another --out)")
        try:
            enhancer.enhance_file(src, outputs)
        except audio.AudioError as e:
            failed += 1
            log.warning("skipping %s", e)
    return failed


def _adapt(args) -> int:
    from wildmix.config import adapt_config
    from wildmix.train import train

    config = adapt_config(args.data, args.out, start=args.start, strategy=args.strategy,
                          noise=args.noise, valid=args.valid, max_steps=args.max_steps,
                          max_minutes=args.max_minutes, lr=args.lr, seed=args.seed,
                          device=args.device)
    summary = train(config, progress=not args.no_progress)
    print(f"{summary.out}: adapted {args.start} with {args.strategy} for {summary.step} steps"
          + (f" (stopped by {summary.stopped}; rerun to resume)" if summary.stopped else "")
          + f"; enhance with: wildmix enhance {summary.out} INPUT... --out DIR")
    return 0


def _export(args) -> int:
    import hashlib
    from pathlib import Path

    from wildmix import models

    if not str(args.out).endswith(".safetensors"):
        raise ValueError(f"{args.out}: the output name must end in .safetensors")
    ckpt = models.load_checkpoint(args.run)
    config = ckpt.get("train_config") or {}
    provenance = {"source": Path(ckpt["path"]).name, "step": ckpt.get("step", ""),
                  "strategy": config.get("strategy", ""), "seed": config.get("seed", ""),
                  "wildmix": (ckpt.get("versions") or {}).get("wildmix", "")}
    models.export_safetensors(ckpt, args.out, **provenance)
    digest = hashlib.sha256(Path(args.out).read_bytes()).hexdigest()
    size = Path(args.out).stat().st_size / 1e6
    print(f"wrote {args.out} ({size:.1f} MB, {models.n_parameters(models.from_checkpoint(ckpt))}"
          f" parameters) from {ckpt['path']}; sha256 {digest}")
    return 0


def _is_model(path) -> bool:
    """A run folder or a checkpoint file, rather than audio to enhance."""
    if path.is_dir():
        return (path / "best.pt").is_file() or (path / "last.pt").is_file()
    return path.suffix in (".pt", ".safetensors")


def _score(args) -> int:
    from wildmix.evaluate import score_folder

    scores = score_folder(args.data, args.enhanced)
    print(f"{args.enhanced}: {scores.summary()}")
    return 0


def _method_name(path: str, taken: dict) -> str:
    from pathlib import Path

    p = Path(path)
    name = p.parent.name if p.is_file() and p.stem in ("best", "last") else p.name
    name = name.removesuffix(".pt").removesuffix(".safetensors") or str(p)
    base, k = name, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


def _evaluate(args) -> int:
    from wildmix import evaluate

    task = evaluate.task_of(args.data)
    methods = {}
    baselines = [b for b in (args.baseline or "").split(",") if b and b != "none"]
    if args.baseline is None:
        baselines = list(evaluate.BASELINES) if task == "enhance" else ["noisy"]
    for b in baselines:
        if b not in evaluate.BASELINES:
            raise ValueError(f"unknown baseline {b!r}; choose from "
                             f"{', '.join(evaluate.BASELINES)} or none")
        if task == "separate" and b != "noisy":
            raise ValueError(f"baseline {b!r} is for enhancement; {args.data} is a "
                             "separation set")
        methods[b] = evaluate.BASELINES[b]
    for path in args.model or []:
        methods[_method_name(path, methods)] = evaluate.model_method(path, task, args.device)
    for folder in args.enhanced or []:
        methods[_method_name(folder, methods)] = evaluate.folder_method(folder)
    if not methods:
        raise ValueError("nothing to evaluate: give --model, --enhanced or --baseline")
    metrics = args.metrics.split(",") if args.metrics else None
    results = evaluate.evaluate(args.data, methods, metrics=metrics, limit=args.limit,
                                keep_outputs=args.examples, progress=not args.no_progress)
    paths = results.save(args.out, examples=args.examples)
    print(results.table())
    print(f"\nreport: {paths['html']}  (results: {paths['json']}, {paths['markdown']})")
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
    build.add_argument("--size", choices=("tiny", "small", "large", "shift"),
                       default="small")
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
    packages.add_argument("--size", choices=("tiny", "small", "large", "shift"),
                       default="small")
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

    tr = commands.add_parser(
        "train", help="train a separation model from noisy recordings (MixIT), adapt a model "
                      "to them (RemixIT), or train with clean references (--supervised); "
                      "rerun the same command to resume")
    tr.add_argument("--data", required=True,
                    help="folder of noisy recordings, or a built-in corpus folder")
    tr.add_argument("--noise", help="folder of noise-only clips, or 'auto' to find "
                                    "speech-free stretches in --data with a VAD")
    tr.add_argument("--valid", help="validation folder: paired (noisy/, clean/) or unlabeled")
    tr.add_argument("--clean", help="clean references of --data, for --supervised")
    tr.add_argument("--task", choices=("enhance", "separate"))
    tr.add_argument("--strategy", choices=("mixit", "supervised", "remixit"),
                    help="mixit (default: noisy recordings only), supervised (clean "
                         "references), remixit (self-training from --teacher)")
    tr.add_argument("--supervised", action="store_true", help="same as --strategy supervised")
    tr.add_argument("--teacher", help="RemixIT: the teacher's run folder or checkpoint; the "
                                      "student starts as a copy of it")
    tr.add_argument("--teacher-update", choices=("ema", "replace", "frozen"),
                    dest="teacher_update", help="RemixIT: how the teacher follows the student "
                                                "(default: ema)")
    tr.add_argument("--teacher-momentum", type=float, dest="teacher_momentum",
                    help="RemixIT ema: teacher <- m teacher + (1 - m) student (default 0.9)")
    tr.add_argument("--teacher-every", dest="teacher_every",
                    help="RemixIT: 'step', 'epoch' (default), 'N steps' or 'N epochs'")
    tr.add_argument("--init", help="start from these weights (run folder, checkpoint or "
                                   "'default', the shipped model) and take their model")
    tr.add_argument("--model", choices=("stft", "tdcn"))
    tr.add_argument("--preset", choices=("tiny", "cpu", "gpu"))
    tr.add_argument("--n-sources", type=int, dest="n_sources")
    tr.add_argument("--causal", action="store_true", default=None, help="no look-ahead")
    tr.add_argument("--out", required=True, help="run folder (checkpoints, log, config)")
    tr.add_argument("--max-steps", type=int, dest="max_steps")
    tr.add_argument("--max-minutes", type=float, dest="max_minutes",
                    help="stop (and save) after this much training time")
    tr.add_argument("--batch-size", type=int, dest="batch_size")
    tr.add_argument("--segment-seconds", type=float, dest="segment_seconds")
    tr.add_argument("--lr", type=float)
    tr.add_argument("--loss", choices=("snr", "sisnr"))
    tr.add_argument("--search", choices=("exact", "efficient"))
    tr.add_argument("--sparsity", type=float, help="weight of the sparsity loss")
    tr.add_argument("--augment", action="store_true", default=None,
                    help="supervised: change the clean speech (speed 0.85..1.15, random EQ) "
                         "and remix it with other noise, for voices unlike the training ones")
    tr.add_argument("--augment-speed", type=float, nargs=2, dest="augment_speed",
                    metavar=("LOW", "HIGH"), help="--augment: speed factor range "
                                                  "(default 0.85 1.15)")
    tr.add_argument("--noise-augment", type=float, dest="noise_augment",
                    help="probability of extra noise in the noisy mixture (Saito et al.)")
    tr.add_argument("--relative-gain-db", type=float, nargs=2, dest="relative_gain_db")
    tr.add_argument("--valid-every", type=int, dest="valid_every")
    tr.add_argument("--workers", type=int)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--device")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_train)

    ad = commands.add_parser(
        "adapt", help="adapt the shipped model (or another) to your noisy recordings, "
                      "without clean speech; rerun the same command to resume",
        description="Self-training on your own noisy recordings: RemixIT (default) from the "
                    "shipped model, or MixIT fine-tuning with noise-only clips. The result "
                    "is a run folder for `wildmix enhance RUN INPUT... --out DIR`.")
    ad.add_argument("--data", required=True, help="folder of your noisy recordings")
    ad.add_argument("--out", required=True, help="run folder for the adapted model")
    ad.add_argument("--from", dest="start", default="default",
                    help="model to adapt: 'default' (shipped), a run folder or a checkpoint")
    ad.add_argument("--strategy", choices=("remixit", "mixit"), default="remixit",
                    help="remixit (default: recordings only) or mixit fine-tuning")
    ad.add_argument("--noise", help="mixit: folder of noise-only clips, or 'auto' (default) "
                                    "for speech-free stretches found by a VAD")
    ad.add_argument("--valid", help="optional paired folder (noisy/, clean/) to monitor and "
                                    "pick the best checkpoint; without it the last is kept")
    ad.add_argument("--max-steps", type=int, default=3000, dest="max_steps",
                    help="step budget (default 3000)")
    ad.add_argument("--max-minutes", type=float, default=20.0, dest="max_minutes",
                    help="time budget in minutes (default 20)")
    ad.add_argument("--lr", type=float, help="peak learning rate (default 5e-4)")
    ad.add_argument("--seed", type=int, default=0)
    ad.add_argument("--device")
    ad.add_argument("--no-progress", action="store_true")
    ad.set_defaults(func=_adapt)

    ex = commands.add_parser(
        "export", help="write a run's model as one safetensors file (weights and model "
                       "description, no optimiser), loadable wherever a checkpoint is")
    ex.add_argument("run", help="run folder (its best.pt) or checkpoint file")
    ex.add_argument("--out", required=True, help="output .safetensors file")
    ex.set_defaults(func=_export)

    en = commands.add_parser(
        "enhance", help="enhance (or separate) audio files; the shipped model by default",
        description="wildmix enhance [RUN] INPUT... --out DIR: with no RUN (a run folder or "
                    "checkpoint file first, or --model), the model shipped with wildmix")
    en.add_argument("paths", nargs="+", metavar="[RUN] INPUT",
                    help="an optional run folder or checkpoint, then audio files or folders")
    en.add_argument("--model", help="run folder, checkpoint file or shipped model name "
                                    "(default: 'default', the shipped model)")
    en.add_argument("--out", required=True, help="output folder (inputs are never overwritten)")
    en.add_argument("--task", choices=("enhance", "separate"),
                    help="separate: write every output (default: the model's task)")
    en.add_argument("--write-noise", action="store_true", help="also write NAME_noise.wav")
    en.add_argument("--chunk-seconds", type=float, default=10.0)
    en.add_argument("--device")
    en.add_argument("--no-progress", action="store_true")
    en.set_defaults(func=_enhance)

    sc = commands.add_parser("score", help="mean SI-SNR of noisy and enhanced files of a "
                                           "paired folder (noisy/, clean/)")
    sc.add_argument("data", help="paired folder with noisy/ and clean/")
    sc.add_argument("enhanced", help="folder of enhanced files with the noisy files' names")
    sc.set_defaults(func=_score)

    ev = commands.add_parser(
        "evaluate", help="score models and baselines on a paired set (SI-SNRi, PESQ, ESTOI; "
                         "MSi and 1S for separation) and write a report with audio")
    ev.add_argument("--data", required=True,
                    help="paired folder: noisy/ + clean/, or mixture/ + sources/")
    ev.add_argument("--model", nargs="+", help="run folders or checkpoints")
    ev.add_argument("--enhanced", nargs="+",
                    help="folders of outputs of other systems, named like the inputs")
    ev.add_argument("--baseline", help="comma-separated: noisy, spectral-gating, "
                                       "spectral-gating-stationary, or none (default: all)")
    ev.add_argument("--metrics", help="comma-separated subset of si_snr,si_snri,pesq,estoi")
    ev.add_argument("--out", required=True, help="report folder")
    ev.add_argument("--limit", type=int, help="only the first N files")
    ev.add_argument("--examples", type=int, default=3,
                    help="files with spectrograms and audio in the report")
    ev.add_argument("--device")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s")
    from wildmix.audio import AudioError
    from wildmix.corpus import CorpusError
    from wildmix.data import DataError
    from wildmix.lock import LockError

    expected = (AudioError, CorpusError, DataError, LockError, FileNotFoundError,
                FileExistsError)
    if args.command in ("train", "adapt", "export", "enhance", "score", "evaluate"):
        from wildmix.models import CheckpointError
        from wildmix.train import TrainingError

        expected += (CheckpointError, TrainingError, ValueError)
    try:
        return args.func(args)
    except expected as e:
        print(f"wildmix: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wildmix: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
