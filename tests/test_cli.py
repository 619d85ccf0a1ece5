import subprocess
import sys

from wildmix.cli import main


def test_help_does_not_import_torch():
    code = ("import sys, wildmix.cli\n"
            "try:\n    wildmix.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported for --help'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_public_api_names():
    import wildmix

    assert callable(wildmix.mixit_loss) and callable(wildmix.Enhancer)
    assert wildmix.mixit_loss.__module__ == "wildmix.mixit"


def test_corpus_packages_command(capsys):
    assert main(["corpus", "packages", "--size", "tiny"]) == 0
    assert capsys.readouterr().out.split() == ["flite", "qabcs-data"]


def test_evaluate_command(tiny_corpus, tmp_path, capsys):

    from wildmix import models

    args = models.model_args("stft", "tiny", n_sources=3)
    model = models.build("stft", args)
    run = tmp_path / "runs" / "tinyrun"
    models.save_checkpoint(run / "best.pt", model_name="stft", model_args=args,
                           state_dict=model.state_dict(), sample_rate=16000, task="enhance")
    out = tmp_path / "report"
    assert main(["evaluate", "--data", str(tiny_corpus / "test"), "--model", str(run),
                 "--baseline", "noisy", "--metrics", "si_snr,si_snri", "--limit", "2",
                 "--examples", "1", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| tinyrun |" in printed and "| noisy |" in printed and "report.html" in printed
    assert (out / "report.html").is_file() and (out / "results.json").is_file()

    for argv, message in (
            (["--baseline", "wiener"], "unknown baseline 'wiener'"),
            (["--metrics", "mos"], "unknown metrics"),
            (["--model", str(tmp_path / "nothing")], "nothing"),
    ):
        rc = main(["evaluate", "--data", str(tiny_corpus / "test"), "--out", str(out),
                   "--no-progress", *argv])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and message in err and len(err.splitlines()) == 1, err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["evaluate", "--data", str(empty), "--baseline", "noisy", "--out", str(out)])
    assert rc == 2 and "no audio files" in capsys.readouterr().err
    rc = main(["evaluate", "--data", str(tmp_path / "absent"), "--out", str(out)])
    assert rc == 2 and "no such folder" in capsys.readouterr().err


def test_choices_and_defaults_come_from_the_library():
    import dataclasses
    import inspect

    import pytest

    from wildmix import config, corpus, enhance, evaluate, models, strategies
    from wildmix.cli import build_parser

    assert config.MODELS == tuple(models.REGISTRY)
    presets = [tuple(p) for _, p in models.REGISTRY.values()]
    assert set(config.PRESETS) == set().union(*presets)
    assert all(p == config.PRESETS[:len(p)] for p in presets)
    # pit is not a choice: supervised training of the separation task uses it
    assert config.STRATEGIES + ("pit",) == tuple(strategies.REGISTRY)
    assert config.BASELINES == tuple(evaluate.BASELINES)
    assert config.METRICS == evaluate.ENHANCE_METRICS
    assert inspect.signature(enhance.Enhancer).parameters["chunk_seconds"].default == \
        config.CHUNK_SECONDS
    parser = build_parser()
    # train: no flag has a default of its own, so TrainConfig's apply
    args = parser.parse_args(["train", "--data", "d", "--out", "o"])
    fields = {f.name for f in dataclasses.fields(config.TrainConfig)}
    assert {k for k in vars(args) if k in fields} >= {"lr", "max_steps", "model", "preset"}
    assert all(v is None for k, v in vars(args).items() if k in fields - {"data", "out"})
    args = parser.parse_args(["adapt", "--data", "d", "--out", "o"])
    for name, p in inspect.signature(config.adapt_config).parameters.items():
        if p.default is not inspect.Parameter.empty:
            assert getattr(args, name) == p.default, name
    args = parser.parse_args(["corpus", "build", "x"])
    build = inspect.signature(corpus.build).parameters
    assert tuple(args.snr) == build["snr_range"].default
    assert args.sample_rate == build["sample_rate"].default and args.kind == "speech"
    for size in corpus.SIZES:
        assert parser.parse_args(["corpus", "build", "x", "--size", size]).size == size
    for argv in (["corpus", "build", "x", "--size", "huge"],
                 ["train", "--data", "d", "--out", "o", "--model", "unet"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)


def test_missing_extra_is_one_line(tiny_corpus, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pesq" else real(name, *a))
    rc = main(["evaluate", "--data", str(tiny_corpus / "test"), "--baseline", "noisy",
               "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "pesq" in err and "pip install 'wildmix[eval]'" in err
