import pytest
import torch

from wildmix import models


@pytest.mark.parametrize("name", ["stft", "tdcn"])
@pytest.mark.parametrize("causal", [False, True])
def test_shapes_and_mixture_consistency(name, causal):
    model = models.build(name, models.model_args(name, "tiny", n_sources=3, causal=causal))
    x = torch.randn(2, 8000)
    y = model(x)
    assert y.shape == (2, 3, 8000)
    torch.testing.assert_close(y.sum(1), x, rtol=1e-4, atol=1e-4)
    y.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["stft", "tdcn"])
def test_causal_mode_does_not_look_ahead(name):
    torch.manual_seed(0)
    model = models.build(name, models.model_args(name, "tiny", causal=True)).eval()
    x = torch.randn(1, 16000)
    changed = x.clone()
    changed[:, 12000:] = torch.randn(1, 4000)
    with torch.no_grad():
        a, b = model(x), model(changed)
    # STFT frames reach n_fft samples back from 12000; nothing before that may change
    limit = 12000 - 2 * getattr(model, "n_fft", 16)
    torch.testing.assert_close(a[..., :limit], b[..., :limit], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[..., 12500:], b[..., 12500:])
    # the non-causal model does look ahead
    model = models.build(name, models.model_args(name, "tiny", causal=False)).eval()
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert not torch.allclose(a[..., :limit], b[..., :limit], atol=1e-5)


def test_stft_level_invariant():
    model = models.build("stft", models.model_args("stft", "tiny")).eval()
    x = torch.randn(1, 8000)
    with torch.no_grad():
        torch.testing.assert_close(model(10 * x), 10 * model(x), rtol=1e-3, atol=1e-4)


def test_checkpoint_round_trip_and_errors(tmp_path):
    args = models.model_args("stft", "tiny")
    model = models.build("stft", args)
    models.save_checkpoint(tmp_path / "m.pt", model_name="stft", model_args=args,
                           state_dict=model.state_dict(), sample_rate=16000, train_config={})
    ckpt = models.load_checkpoint(tmp_path / "m.pt")
    loaded = models.from_checkpoint(ckpt)
    x = torch.randn(1, 4000)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert not list(tmp_path.glob("*.tmp"))

    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(models.CheckpointError, match="truncated.pt: not a readable"):
        models.load_checkpoint(tmp_path / "truncated.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(models.CheckpointError, match="garbage.pt"):
        models.load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(models.CheckpointError, match="not a wildmix checkpoint"):
        models.load_checkpoint(tmp_path / "foreign.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"format": "wildmix-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(models.CheckpointError, match="evil.pt: refused: the file holds Python"):
        models.load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(models.CheckpointError, match="no best.pt or last.pt"):
        models.load_checkpoint(tmp_path)
    with pytest.raises(models.CheckpointError, match="no such checkpoint"):
        models.load_checkpoint(tmp_path / "missing.pt")


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown model"):
        models.model_args("wavenet")
    with pytest.raises(ValueError, match="unknown preset"):
        models.model_args("stft", "huge")


@pytest.mark.parametrize("causal", [False, True])
def test_grow_keeps_the_function_then_trains_the_new_blocks(causal):
    torch.manual_seed(0)
    args = models.model_args("stft", "tiny", causal=causal)
    small = models.build("stft", args)
    for p in small.parameters():  # not an untrained identity-like model
        p.data.add_(0.05 * torch.randn_like(p))
    ckpt = {"model_name": "stft", "model_args": args, "state_dict": small.state_dict(),
            "sample_rate": 16000}
    grown_ckpt = models.grow(ckpt, 3)
    assert grown_ckpt["model_args"]["blocks"] == args["blocks"] + 3
    assert ckpt["model_args"]["blocks"] == args["blocks"]  # the original is untouched
    grown = models.from_checkpoint(grown_ckpt)
    assert models.n_parameters(grown) > models.n_parameters(small)
    x = torch.randn(2, 8000)
    with torch.no_grad():
        torch.testing.assert_close(grown(x), small.eval()(x))
    # one step on a loss moves the new blocks: they are not dead
    grown.train()
    grown(x)[:, 0].pow(2).mean().backward()
    assert grown.net[-1].pointwise.weight.grad.abs().sum() > 0


def test_grow_refuses_other_models():
    args = models.model_args("tdcn", "tiny")
    ckpt = {"model_name": "tdcn", "model_args": args,
            "state_dict": models.build("tdcn", args).state_dict(), "sample_rate": 16000}
    with pytest.raises(ValueError, match="only an stft model"):
        models.grow(ckpt, 2)


def test_grow_blocks_needs_an_init_model():
    from wildmix.config import resolve
    from wildmix.train import TrainConfig

    with pytest.raises(ValueError, match="--grow-blocks adds blocks to the --init model"):
        resolve(TrainConfig(data="x", strategy="supervised", clean="y", grow_blocks=2))
    plan = resolve(TrainConfig(data="x", strategy="supervised", clean="y", init="default",
                               grow_blocks=2))
    shipped = models.load_checkpoint(models.pretrained_path("default"))
    assert plan.model_args["blocks"] == shipped["model_args"]["blocks"] + 2
    assert plan.init["model_args"] == plan.model_args
