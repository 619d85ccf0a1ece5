"""Command line: argument parsing only; the work is done by the library modules.

Heavy modules are imported inside each command so that ``wildmix --help`` is instant.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys

log = logging.getLogger("wildmix")


def _corpus_build(args) -> int:
    from wildmix import corpus

    manifest = corpus.build(args.dir, size=args.size, seed=args.seed,
                            sample_rate=args.sample_rate, kind=args.kind,
                            snr_range=tuple(args.snr), workers=args.workers,
                            progress=lambda msg: print(msg, file=sys.stderr))
    print(f"built {args.kind} corpus '{args.size}' in {args.dir}: "
          f"{corpus.describe(args.dir)}; manifest {manifest}")
    return 0


def _library_build(args) -> int:
    from wildmix.corpus import library

    fresh = library.is_fresh(args.dir)
    library.build(args.dir, [*args.packages, "/"], workers=args.workers,
                  progress=not args.no_progress)
    print(("up to date: " if fresh else "built: ") + f"{args.dir}\n"
          + library.summary(args.dir))
    return 0


def _library_show(args) -> int:
    from wildmix.corpus import catalogue, library

    if args.packages_only:
        print(" ".join(catalogue.packages(args.split)))
        return 0
    print(library.summary(args.dir) if library.is_library(args.dir) else
          f"{args.dir}: no sound library (wildmix corpus library build {args.dir})")
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
    for key in ("relative_gain_db", "augment_speed", "mix_snr_db"):
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
    from wildmix import enhance
    from wildmix.lock import folder_lock

    model, inputs = enhance.model_and_inputs(args.model, args.paths)
    enhancer = enhance.Enhancer.from_checkpoint(model, chunk_seconds=args.chunk_seconds,
                                                device=args.device,
                                                atten_lim_db=args.atten_lim_db,
                                                shifts=args.shifts)
    with folder_lock(args.out, "enhance"):
        jobs = enhance.plan_jobs(inputs, args.out, args.task or enhancer.task,
                                 enhancer.n_sources, write_noise=args.write_noise)
        failed = enhance.enhance_files(enhancer, jobs, progress=not args.no_progress)
    print(f"wrote {len(jobs) - failed} of {len(jobs)} files to {args.out}"
          + (f"; {failed} skipped (see warnings)" if failed else ""))
    return 1 if failed else 0


def _separate(args) -> int:
    from wildmix import enhance
    from wildmix.config import SEPARATION_MODEL
    from wildmix.lock import folder_lock

    model, inputs = enhance.model_and_inputs(args.model, args.paths, SEPARATION_MODEL)
    enhancer = enhance.Enhancer.from_checkpoint(model, task="separate",
                                                chunk_seconds=args.chunk_seconds,
                                                device=args.device, lone_share=args.lone_share,
                                                coherence=args.coherence)
    dropped = merged = lone = 0
    with folder_lock(args.out, "separate"):
        jobs = enhance.plan_jobs(inputs, args.out, "separate", enhancer.n_sources,
                                 folders=True)
        failed = enhance.enhance_files(enhancer, jobs, progress=not args.no_progress)
        for src, outputs in jobs:
            if not all(p.exists() for p in outputs.values()):
                continue  # skipped
            plan = enhance.merge_pieces_files(outputs, args.lone_share, args.coherence)
            merged += len(plan) - len(set(plan))
            lone += len(set(plan)) == 1
            if not args.keep_silent:
                dropped += len(enhance.drop_silent(src, outputs, args.silence_db))
    print(f"separated {len(jobs) - failed} of {len(jobs)} files into {args.out} "
          f"(NAME/s0.wav ... s{enhancer.n_sources - 1}.wav), {merged} outputs merged into "
          f"others ({lone} files kept whole as one sound), {dropped} silent outputs dropped"
          + (f"; {failed} skipped (see warnings)" if failed else ""))
    return 1 if failed else 0


def _adapt(args) -> int:
    from wildmix import teachers

    done = teachers.adapt(args.data, args.out, teacher=args.teacher, start=args.start,
                          strategy=args.strategy, noise=args.noise, valid=args.valid,
                          select=args.select, max_steps=args.max_steps,
                          max_minutes=args.max_minutes, lr=args.lr, seed=args.seed,
                          device=args.device, ema=args.ema, overlap=args.overlap,
                          speech=args.speech, refresh=args.refresh,
                          check_speech=args.check_speech,
                          progress=not args.no_progress)
    summary, estimates = done.summary, done.estimates
    if estimates:
        print(f"{done.teacher}; its estimates: {estimates.computed} recordings computed, "
              f"{estimates.reused} reused, {estimates.seconds:.0f} s = "
              f"{100 * estimates.seconds / max(done.seconds, 1e-9):.0f}% of this run's "
              f"{done.seconds:.0f} s")
    print(f"{summary.out}: adapted {args.start} with {args.strategy} for {summary.step} steps"
          + (f" (stopped by {summary.stopped}; rerun to resume)" if summary.stopped else "")
          + f"; enhance with: wildmix enhance {summary.out} INPUT... --out DIR")
    return 0


def _export(args) -> int:
    from wildmix import models

    fmt = args.format or ("onnx" if args.out.endswith(".onnx") else "safetensors")
    if fmt == "onnx" and args.shifts is not None:
        raise ValueError("--shifts is for .safetensors exports: the ONNX graph is the "
                         "streaming step, one hop at a time")
    if fmt == "onnx":
        from wildmix import stream

        info = stream.export_run(args.run, args.out)
        print(f"wrote {args.out} ({info['megabytes']:.1f} MB): one {info['hop']}-sample hop "
              f"per call, state as inputs/outputs {', '.join(stream.STATE_NAMES)}; latency "
              f"{info['latency_ms']:.1f} ms; from {info['source']}")
        return 0
    info = models.export_run(args.run, args.out, shifts=args.shifts)
    print(f"wrote {args.out} ({info['megabytes']:.1f} MB, {info['parameters']} parameters) "
          f"from {info['source']}; sha256 {info['sha256']}")
    return 0


def _stream(args) -> int:
    import torch

    from wildmix import stream

    torch.set_num_threads(args.threads)
    streamer = stream.load(args.model, engine=args.engine, threads=args.threads,
                           atten_lim_db=args.atten_lim_db)
    if args.soundcard:
        from wildmix.config import EXTRAS, require

        require("live", EXTRAS["live"], "wildmix stream --soundcard")
        log.info("enhancing the microphone live (latency %.1f ms); Ctrl-C stops",
                 streamer.latency_ms)
        stream.stream_soundcard(streamer, seconds=args.seconds)
        return 0
    if not (args.input and args.output):
        raise ValueError("give IN and OUT (files, or - for raw 16-bit PCM on stdin/stdout), "
                         "or --soundcard")
    chunk = streamer.hop if args.chunk is None else args.chunk
    if chunk < 1:
        raise ValueError(f"--chunk must be a positive number of samples, got {chunk}")
    if args.input == "-" or args.output == "-":
        if args.input != "-" or args.output != "-":
            raise ValueError("raw PCM runs pipe to pipe: use - for both IN and OUT")
        n = stream.stream_pipe(streamer, sys.stdin.buffer, sys.stdout.buffer, chunk)
    else:
        n = stream.stream_file(streamer, args.input, args.output, chunk)
    log.info("streamed %.1f s (latency %.1f ms)", n / streamer.sample_rate,
             streamer.latency_ms)
    return 0


def _score(args) -> int:
    from wildmix.evaluate import score_folder

    scores = score_folder(args.data, args.enhanced)
    print(f"{args.enhanced}: {scores.summary()}")
    return 0


def _evaluate(args) -> int:
    from wildmix import evaluate

    metrics = evaluate.ready(args.data, args.metrics.split(",") if args.metrics else None)
    methods = evaluate.methods(args.data, models=args.model, enhanced=args.enhanced,
                               baselines=args.baseline, device=args.device,
                               lone_share=args.lone_share, coherence=args.coherence,
                               atten_lim_db=args.atten_lim_db, shifts=args.shifts)
    results = evaluate.evaluate(args.data, methods, metrics=metrics, limit=args.limit,
                                keep_outputs=args.examples, progress=not args.no_progress)
    paths = results.save(args.out, examples=args.examples)
    print(results.table())
    print(f"\nreport: {paths['html']}  (results: {paths['json']}, {paths['markdown']})")
    return 0


def _serve(args) -> int:
    from wildmix.config import EXTRAS, require

    require("serve", EXTRAS["serve"], "wildmix serve")
    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    from wildmix import serve

    serve.serve(args.host, args.port, args.runs, args.max_upload_mb)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every command's flags; choices and defaults come from the library (config, corpus,
    data), so that there is one place per setting (tests/test_cli.py holds them equal)."""
    parser = argparse.ArgumentParser(
        prog="wildmix",
        description="Learn speech enhancement and sound separation from noisy recordings.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_corpus, _add_data, _add_train, _add_adapt, _add_export, _add_enhance,
                _add_separate, _add_stream, _add_score, _add_evaluate, _add_serve):
        add(commands)
    return parser


def _defaults(fn) -> dict:
    """A library function's keyword defaults."""
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _add_corpus(commands) -> None:
    from wildmix import corpus

    d = _defaults(corpus.build)
    sub = commands.add_parser("corpus", help="the built-in corpus").add_subparsers(
        dest="corpus_command", required=True)
    build = sub.add_parser("build", help="build the built-in corpus offline from "
                                         "Debian-packaged audio")
    build.add_argument("dir", help="output folder")
    build.add_argument("--size", choices=tuple(corpus.SIZES), default="small",
                       help="(default: %(default)s)")
    build.add_argument("--kind", choices=corpus.KINDS, default=d["kind"],
                       help="speech in noise (enhancement) or FUSS-style sound mixtures")
    build.add_argument("--seed", type=int, default=d["seed"])
    build.add_argument("--sample-rate", type=int, default=d["sample_rate"],
                       help="(default: %(default)s)")
    build.add_argument("--snr", type=float, nargs=2, default=d["snr_range"],
                       metavar=("LOW", "HIGH"), help="SNR range in dB (default: %(default)s)")
    build.add_argument("--workers", type=int, default=d["workers"],
                       help="processes (default: all cores)")
    build.set_defaults(func=_corpus_build)
    packages = sub.add_parser("packages", help="Debian packages a build needs")
    packages.add_argument("--size", choices=tuple(corpus.SIZES), default="small")
    packages.add_argument("--kind", choices=corpus.KINDS, default=d["kind"])
    packages.add_argument("--missing", action="store_true", help="only those not installed")
    packages.set_defaults(func=_corpus_packages)
    lib = sub.add_parser("library", help="the sound library: hours of recorded noise from "
                                         "Debian packages, decoded once for dynamic mixing"
                         ).add_subparsers(dest="library_command", required=True)
    lb = lib.add_parser("build", help="decode every sound of the catalogue "
                                      "(wildmix/corpus/catalogue.py) into DIR; nothing to do "
                                      "when DIR is up to date")
    lb.add_argument("dir")
    lb.add_argument("--packages", nargs="*", default=["data/library/packages"],
                    help="folders of unpacked packages (ROOT/NAME/usr/...), searched before "
                         "/ (default: %(default)s; `make library` unpacks them there)")
    lb.add_argument("--workers", type=int, default=2)
    lb.add_argument("--no-progress", action="store_true")
    lb.set_defaults(func=_library_build)
    ls = lib.add_parser("show", help="minutes per package, kind and split")
    ls.add_argument("dir", nargs="?", default="data/library/cache")
    ls.add_argument("--packages-only", action="store_true",
                    help="print the catalogue's package names (of --split) and stop")
    ls.add_argument("--split", choices=("train", "valid", "test"))
    ls.set_defaults(func=_library_show)


def _add_data(commands) -> None:
    check = commands.add_parser("data", help="inspect a folder of recordings").add_subparsers(
        dest="data_command", required=True).add_parser(
        "check", help="index a folder, report unusable files and, with --noise auto, "
                      "how much speech-free noise a VAD finds")
    check.add_argument("dir")
    check.add_argument("--noise", default=None, help="a folder of noise-only clips, or 'auto'")
    check.add_argument("--min-seconds", type=float, default=0.5,
                       help="shorter files are skipped (default: %(default)s)")
    check.add_argument("--min-noise-seconds", type=float, default=1.0,
                       help="--noise auto: shortest stretch kept (default: %(default)s)")
    check.set_defaults(func=_data_check)


_TRAIN_NUMBERS = (  # (flag, type, help) of plain numeric training settings
    ("--max-steps", int, "step budget"),
    ("--max-minutes", float, "time budget: stop (and save) after this much training time"),
    ("--batch-size", int, ""), ("--segment-seconds", float, ""),
    ("--lr", float, "peak learning rate (default: 3e-3, 5e-4 when fine-tuning)"),
    ("--sparsity", float, "weight of the sparsity loss"),
    ("--sparsity-start", int, "MixIT: the sparsity loss is off for this many steps, then "
                              "rises to its weight over as many again"),
    ("--leakage", float, "MixIT enhancement: weight of the energy that the noise outputs give "
                         "to the noisy recording"),
    ("--overlap", float, "MixIT: weight of the time-frequency overlap of the outputs, from "
                         "step 1000 (default: 30 for enhancement, 0 for separation)"),
    ("--noise-augment", float, "probability of extra noise in the noisy mixture (Saito et "
                               "al.)"),
    ("--ema", float, "validate, choose and give an exponential moving average of the "
                     "weights with this decay; 0: the trained weights"),
    ("--valid-every", int, ""), ("--workers", int, ""), ("--seed", int, ""),
    ("--grow-blocks", int, "add this many residual blocks to the --init model (an stft "
                           "tcn), each the identity at first: a larger model that starts "
                           "where the smaller one stands"))


def _add_train(commands) -> None:
    from wildmix import config as cf

    def opt(flag, help="", **kw):  # None: the TrainConfig default applies
        name = flag.lstrip("-").replace("-", "_")
        shown = cf.default(name) if name in cf.TrainConfig.__dataclass_fields__ else None
        tr.add_argument(flag, dest=name, help=f"{help} (default: {shown})".strip()
                        if shown not in (None, "", False) else help, **kw)

    tr = commands.add_parser(
        "train", help="train a separation model from noisy recordings (MixIT), adapt a model "
                      "to them (RemixIT), or train with clean references (--supervised); "
                      "rerun the same command to resume")
    tr.add_argument("--data", default="",
                    help="folder of noisy recordings, or a built-in corpus folder (not "
                         "needed for --supervised --speech DIR --noise LIBRARY)")
    tr.add_argument("--out", required=True, help="run folder (checkpoints, log, config)")
    opt("--noise", "folder of noise-only clips, 'auto' to find speech-free stretches in "
                   "--data with a VAD, 'teacher' for the --init model's noise estimates "
                   "of --data, or 'pauses' for the stretches of --data where the --init "
                   "model hears no speech")
    opt("--valid", "validation folder: paired (noisy/, clean/) or unlabeled")
    opt("--select", "what chooses best.pt: sisnri (paired --valid), dnsmos (label-free: "
                    "DNSMOS of the speech output on --valid's recordings, or on files of "
                    "--data held back from training), agreement (label-free: SI-SNR of the "
                    "speech output against --teacher-targets on files of --data held back), "
                    "mixit (the MixIT loss), none (keep the last); auto: sisnri with a paired "
                    "--valid, else agreement with --teacher-targets, else mixit for MixIT, "
                    "else none", choices=cf.SELECTIONS)
    opt("--clean", "clean references of --data, for --supervised (--task separate: the "
        "sources folder, NAME/sK.wav; a sounds corpus brings its own)")
    opt("--speech", "--supervised without --clean, or beside --strategy remixit: clean "
                    "speech (any voices) mixed on the fly with the --noise clips; with "
                    "--noise a sound library (wildmix library build), dynamic mixing: "
                    "rooms, several noises, microphones and codecs, SNR -10..20 dB")
    opt("--task", choices=cf.TASKS)
    opt("--strategy", "mixit (noisy recordings only), supervised (clean references), "
                      "remixit (self-training from --teacher)", choices=cf.STRATEGIES)
    tr.add_argument("--supervised", action="store_true", help="same as --strategy supervised")
    opt("--teacher", "RemixIT: the teacher's run folder or checkpoint; the student starts "
                     "as a copy of it")
    opt("--teacher-targets", "RemixIT: a folder of a teacher's speech estimates of --data "
                             "(NAME.wav for each recording; see wildmix adapt --teacher), "
                             "trained on instead of --teacher's; needs --teacher-update frozen")
    opt("--teacher-update", "RemixIT: how the teacher follows the student",
        choices=cf.TEACHER_UPDATES)
    opt("--teacher-momentum", "RemixIT ema: teacher <- m teacher + (1 - m) student",
        type=float)
    opt("--teacher-every", "RemixIT: 'step', 'epoch', 'N steps' or 'N epochs'")
    opt("--init", "start from these weights (run folder, checkpoint or 'default', the "
                  "shipped model) and take their model")
    opt("--model", choices=cf.MODELS)
    opt("--preset", choices=cf.PRESETS)
    opt("--n-sources", "outputs M (default: 3 to enhance, 4 to separate)", type=int)
    tr.add_argument("--causal", action="store_true", default=None, help="no look-ahead")
    for flag, kind, text in _TRAIN_NUMBERS:
        opt(flag, text, type=kind)
    opt("--loss", choices=cf.LOSSES)
    opt("--search", "mixing-matrix search (default: exact up to M=12)", choices=cf.SEARCHES)
    tr.add_argument("--augment", action="store_true", default=None,
                    help="supervised: change the clean speech (speed, random EQ) and remix "
                         "it with other noise, for voices unlike the training ones; MixIT: "
                         "change the speed and EQ of each mixture, against over-fitting")
    opt("--augment-speed", "--augment: speed factor range", type=float, nargs=2,
        metavar=("LOW", "HIGH"))
    opt("--augment-noise", "supervised --augment: probability that the noise too is changed "
                           "(speed, EQ, a second noise), for kinds of noise unlike the "
                           "training ones", type=float)
    opt("--mix-snr-db", "--noise a sound library: SNR range of dynamic mixing, dB (default: "
                        "-10 20)", type=float, nargs=2, metavar=("LOW", "HIGH"))
    opt("--relative-gain-db", "level of the second mixture, dB (default: -25 0 to enhance, "
                              "-5 5 to separate)", type=float, nargs=2)
    opt("--device")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_train)


def _add_adapt(commands) -> None:
    from wildmix import teachers
    from wildmix.config import ADAPT_LR, ADAPT_STRATEGIES, REFRESH, SELECTIONS, adapt_config
    from wildmix.peers import NAMES

    d = _defaults(adapt_config)
    ad = commands.add_parser(
        "adapt", help="adapt the shipped model (or another) to your noisy recordings, "
                      "without clean speech; rerun the same command to resume",
        description="Adaptation to your own noisy recordings: RemixIT self-training "
                    "(default) from the shipped model, MixIT fine-tuning with noise-only "
                    "clips, or supervised fine-tuning on clean speech of other voices mixed "
                    "with the noise found in your recordings. The result is a run folder "
                    "for `wildmix enhance RUN INPUT... --out DIR`.")
    ad.add_argument("--data", required=True, help="folder of your noisy recordings")
    ad.add_argument("--out", required=True, help="run folder for the adapted model")
    ad.add_argument("--from", dest="start", default=d["start"],
                    help="model to adapt: 'default' (shipped), a run folder or a checkpoint")
    ad.add_argument("--teacher", default=_defaults(teachers.adapt)["teacher"],
                    help=f"remixit: where the targets come from: peers ({', '.join(NAMES)}), "
                         "wildmix models ('default', 'causal', a run folder or checkpoint), or "
                         "several, comma-separated, combined by consensus (each weighted by "
                         "its agreement with the others); run once over the recordings and "
                         "cached in OUT/teacher (default: %(default)s: where wildmix[peers] "
                         f"is installed, the consensus of {', '.join(teachers.ENSEMBLE)} and "
                         "the --from model; else the --from model)")
    ad.add_argument("--strategy", choices=ADAPT_STRATEGIES, default=d["strategy"],
                    help="remixit (recordings only), mixit fine-tuning, or supervised "
                         "fine-tuning on --speech mixed with --noise (default: %(default)s)")
    ad.add_argument("--noise", default=d["noise"],
                    help="mixit, supervised and remixit with --speech: folder of noise-only "
                         "clips, 'auto' (mixit's default) for speech-free stretches found "
                         "by a VAD, 'teacher' for the starting model's noise estimates of "
                         "your recordings, or 'pauses' (the default with --speech) for the "
                         "stretches of your recordings where it hears no speech")
    ad.add_argument("--speech", default=d["speech"],
                    help="a folder of clean speech of any voices, e.g. train/clean of a "
                         "`wildmix corpus build` folder, mixed with --noise: supervised "
                         "trains on it; remixit trains on it beside your recordings (each "
                         "batch both)")
    ad.add_argument("--valid", default=d["valid"],
                    help="optional paired folder (noisy/, clean/) to monitor and pick the "
                         "best checkpoint; without it the last is kept")
    ad.add_argument("--select", choices=SELECTIONS, default=d["select"],
                    help="what chooses best.pt; check, dnsmos and agreement need no "
                         "labels: the SI-SNR on known speech (--check-speech) mixed with the "
                         "noise of recordings held back from --data at their own SNR, "
                         "DNSMOS of the output, or its SI-SNR against the --teacher's "
                         "estimates (default: %(default)s: SI-SNRi with a paired --valid, "
                         "else check with a --teacher other than the --from model, "
                         "else the last weights)")
    ad.add_argument("--check-speech", default=_defaults(teachers.adapt)["check_speech"],
                    help="a folder of clean speech for the label-free check (voices other "
                         "than your recordings'; default: 12 utterances that ship with "
                         "wildmix, of voices no shipped model trained on)")
    ad.add_argument("--refresh", choices=REFRESH, default=_defaults(teachers.adapt)["refresh"],
                    help="how a --teacher other than the --from model follows the student, "
                         "at each validation: 'better': the student joins the teacher (the "
                         "estimates become the mean of the teacher's members and the "
                         "student's) when that raises the teacher's score on the check; "
                         "'always'; 'none': the estimates stay fixed (default: %(default)s)")
    ad.add_argument("--max-steps", type=int, default=d["max_steps"],
                    help="step budget (default: %(default)s)")
    ad.add_argument("--max-minutes", type=float, default=d["max_minutes"],
                    help="time budget in minutes (default: %(default)s)")
    rates = {k: f"{v:.0e}".replace("e-0", "e-") for k, v in ADAPT_LR.items()}
    ad.add_argument("--lr", type=float, default=d["lr"],
                    help=f"peak learning rate (default: {rates['remixit']} for RemixIT, "
                         f"{rates['supervised']} for supervised, 5e-4 for MixIT)")
    ad.add_argument("--ema", type=float, default=d["ema"],
                    help="keep an exponential moving average of the weights with this decay; "
                         "0: the trained weights (default: %(default)s)")
    ad.add_argument("--overlap", type=float, default=d["overlap"],
                    help="mixit: weight of the overlap penalty from step 1000 (default: 30; "
                         "0 turns it off)")
    ad.add_argument("--seed", type=int, default=d["seed"])
    ad.add_argument("--device", default=d["device"])
    ad.add_argument("--no-progress", action="store_true")
    ad.set_defaults(func=_adapt)


def _add_export(commands) -> None:
    ex = commands.add_parser(
        "export", help="write a model as one safetensors file (weights and model "
                       "description, no optimiser), or a causal model's streaming step as "
                       "ONNX")
    ex.add_argument("run", help="run folder (its best.pt), checkpoint or shipped model name")
    ex.add_argument("--out", required=True, help="output .safetensors or .onnx file")
    ex.add_argument("--format", choices=("safetensors", "onnx"),
                    help="default: from --out's suffix")
    ex.add_argument("--shifts", type=int,
                    help="safetensors: the shifts that wildmix enhance uses with this model "
                         "unless told otherwise (default: the run's own, e.g. 2 for a model "
                         "fine-tuned from the shipped one; see wildmix enhance --help)")
    ex.set_defaults(func=_export)


def _add_separate(commands) -> None:
    se = commands.add_parser(
        "separate", help="separate sounds: every output of a separation model, one folder "
                         "per input file",
        description="wildmix separate [RUN] INPUT... --out DIR writes DIR/NAME/s0.wav ... "
                    "sM-1.wav for each input (any length, in blocks), merges the pieces of "
                    "one sound, keeps a lone sound whole, and drops the silent outputs. "
                    "Without RUN: the shipped 'separate' model.")
    se.add_argument("paths", nargs="+", metavar="[RUN] INPUT",
                    help="a run folder or checkpoint (or --model), then audio files or "
                         "folders")
    se.add_argument("--model", help="separation run folder or checkpoint (default: the "
                                     "shipped 'separate' model)")
    se.add_argument("--out", required=True, help="output folder (inputs are never "
                                                 "overwritten)")
    se.add_argument("--silence-db", type=float, default=-40.0,
                    help="drop outputs this far below the input's energy (default: "
                         "%(default)s dB)")
    se.add_argument("--keep-silent", action="store_true", help="keep every output")
    _add_merging(se)
    _add_block_options(se)
    se.set_defaults(func=_separate)


def _add_block_options(parser) -> None:
    """What enhance and separate share: the Enhancer's blocks, the device, the bar."""
    from wildmix.config import CHUNK_SECONDS

    parser.add_argument("--chunk-seconds", type=float, default=CHUNK_SECONDS,
                        help="block length in seconds (default: %(default)s)")
    parser.add_argument("--device")
    parser.add_argument("--no-progress", action="store_true")


def _add_stream(commands) -> None:
    from wildmix.config import STREAM_ENGINES, STREAM_MODEL

    st = commands.add_parser(
        "stream", help="enhance in real time with a causal model: file to file, raw PCM "
                       "pipe (- -) or the sound card",
        description="wildmix stream IN OUT: IN and OUT are mono files at the model's rate "
                    "(16 kHz), or both - for raw 16-bit little-endian PCM on stdin/stdout, "
                    "e.g. arecord -f S16_LE -r 16000 -c 1 -t raw | wildmix stream - - | "
                    "aplay -f S16_LE -r 16000 -c 1 -t raw. The output is aligned with the "
                    "input; each sample leaves one algorithmic latency (20 ms) after it came.")
    st.add_argument("input", nargs="?", metavar="IN")
    st.add_argument("output", nargs="?", metavar="OUT")
    st.add_argument("--model", default=STREAM_MODEL,
                    help="causal run folder, checkpoint or shipped name (default: "
                         "%(default)s)")
    st.add_argument("--engine", choices=STREAM_ENGINES, default=STREAM_ENGINES[0],
                    help="torch, or onnxruntime on the exported step (default: %(default)s)")
    st.add_argument("--chunk", type=int,
                    help="samples read at a time (default: the model's hop, 160 = 10 ms)")
    st.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    st.add_argument("--soundcard", action="store_true",
                    help="microphone to speakers, live (needs wildmix[live])")
    st.add_argument("--seconds", type=float, help="--soundcard: stop after this long")
    _add_atten_lim(st)
    st.set_defaults(func=_stream)


def _add_enhance(commands) -> None:
    from wildmix.config import TASKS

    en = commands.add_parser(
        "enhance", help="enhance (or separate) audio files; the shipped model by default",
        description="wildmix enhance [RUN] INPUT... --out DIR: with no RUN (a run folder or "
                    "checkpoint file first, or --model), the model shipped with wildmix")
    en.add_argument("paths", nargs="+", metavar="[RUN] INPUT",
                    help="an optional run folder or checkpoint, then audio files or folders")
    en.add_argument("--model", help="run folder, checkpoint file or shipped model name "
                                    "(default: 'default', the shipped model)")
    en.add_argument("--out", required=True, help="output folder (inputs are never overwritten)")
    en.add_argument("--task", choices=TASKS,
                    help="separate: write every output (default: the model's task)")
    en.add_argument("--write-noise", action="store_true", help="also write NAME_noise.wav")
    _add_atten_lim(en)
    _add_shifts(en)
    _add_block_options(en)
    en.set_defaults(func=_enhance)


def _add_score(commands) -> None:
    sc = commands.add_parser("score", help="mean SI-SNR of noisy and enhanced files of a "
                                           "paired folder (noisy/, clean/)")
    sc.add_argument("data", help="paired folder with noisy/ and clean/")
    sc.add_argument("enhanced", help="folder of enhanced files with the noisy files' names")
    sc.set_defaults(func=_score)


def _add_evaluate(commands) -> None:
    from wildmix.config import BASELINES, METRICS

    ev = commands.add_parser(
        "evaluate", help="score models and baselines on a paired set (SI-SNRi, PESQ, ESTOI; "
                         "MSi and 1S for separation) and write a report with audio")
    ev.add_argument("--data", required=True,
                    help="paired folder: noisy/ + clean/, or mixture/ + sources/; or a "
                         "folder of recordings without references (scored with DNSMOS)")
    ev.add_argument("--model", nargs="+", help="run folders, checkpoints or shipped names")
    ev.add_argument("--enhanced", nargs="+",
                    help="folders of outputs of other systems, named like the inputs")
    ev.add_argument("--baseline", help=f"comma-separated: {', '.join(BASELINES)}, or none "
                                       "(default: all)")
    ev.add_argument("--metrics", help=f"comma-separated subset of {','.join(METRICS)} "
                                      "(default: the first four with references, the "
                                      "DNSMOS ones without)")
    ev.add_argument("--out", required=True, help="report folder")
    ev.add_argument("--limit", type=int, help="only the first N files")
    ev.add_argument("--examples", type=int, default=3,
                    help="files with spectrograms and audio in the report "
                         "(default: %(default)s)")
    _add_atten_lim(ev)
    _add_shifts(ev)
    _add_merging(ev)
    ev.add_argument("--device")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_evaluate)


def _add_serve(commands) -> None:
    sv = commands.add_parser(
        "serve", help="a local web page: enhance files or the microphone by ear, compare "
                      "models, adapt to your recordings (needs wildmix[serve])")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: %(default)s, this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    sv.add_argument("--runs", default="runs",
                    help="folder of run folders: each adapted model in it is offered, and "
                         "adaptations started from the page go there (default: %(default)s)")
    sv.add_argument("--max-upload-mb", type=float, default=100.0,
                    help="larger uploads are refused with 413 (default: %(default)s)")
    sv.set_defaults(func=_serve)


def _add_atten_lim(parser) -> None:
    from wildmix.config import ATTEN_LIM_DB

    parser.add_argument("--atten-lim-db", type=float, default=ATTEN_LIM_DB,
                        help="enhancement: keep the input this far below the speech, an "
                             "attenuation limit (inf: none, 0: the input; default: "
                             "%(default)s)")


def _add_shifts(parser) -> None:
    parser.add_argument("--shifts", type=int,
                        help="enhancement: average the model's outputs over this many "
                             "offsets of the input within one STFT hop (that many times "
                             "the work; default: the model file's own, else 1)")


def _add_merging(parser) -> None:
    from wildmix.config import COHERENCE, LONE_SHARE

    parser.add_argument("--coherence", type=float, default=COHERENCE,
                        help="separation: merge outputs whose loudness envelopes correlate "
                             "at least this much, pieces of one sound (1: never; default: "
                             "%(default)s)")
    parser.add_argument("--lone-share", type=float, default=LONE_SHARE,
                        help="separation: when one output carries this share of the energy, "
                             "the input is one sound and all outputs are merged into that "
                             "one (1: never; default: %(default)s)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s")
    from wildmix.audio import AudioError
    from wildmix.config import MissingExtra
    from wildmix.corpus import CorpusError
    from wildmix.data import DataError
    from wildmix.lock import LockError

    expected = (AudioError, CorpusError, DataError, LockError, MissingExtra,
                FileNotFoundError, FileExistsError)
    if args.command in ("train", "adapt", "export", "enhance", "separate", "score", "evaluate",
                        "stream"):
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
