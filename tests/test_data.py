import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from wildmix import data
from wildmix.cli import main
from wildmix.config import resolve


def _sine(freq, sr, seconds=3.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_freq(x, sr):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)]


GOOD = {  # name -> (rate, frequency of its sine, expected amplitude after down-mix)
    "mono16k.wav": (16000, 440.0, 0.5),
    "stereo16k.wav": (16000, 700.0, 0.25),
    "rate8k.wav": (8000, 300.0, 0.5),
    "rate44k.flac": (44100, 1000.0, 0.5),
    "sub/rate48k.wav": (48000, 3000.0, 0.5),
    "rate22k.ogg": (22050, 2000.0, 0.5),
}
BAD = {  # name -> reason the loader must give
    "corrupt.wav": "unreadable",
    "zero_bytes.wav": "unreadable",
    "no_frames.wav": "empty",
    "zeros.wav": "silent",
    "nan.wav": "NaN or Inf",
    "inf.wav": "NaN or Inf",
    "tiny.wav": "too short",
}


@pytest.fixture
def salted(tmp_path):
    for name, (sr, freq, _) in GOOD.items():
        x = _sine(freq, sr)
        if name.startswith("stereo"):
            x = np.stack([x, np.zeros_like(x)], 1)  # mean of channels: half the amplitude
        (tmp_path / name).parent.mkdir(exist_ok=True)
        sf.write(str(tmp_path / name), x, sr)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF" + bytes(range(256)) * 8)
    (tmp_path / "zero_bytes.wav").write_bytes(b"")
    sf.write(str(tmp_path / "no_frames.wav"), np.zeros(0, np.float32), 16000)
    sf.write(str(tmp_path / "zeros.wav"), np.zeros(32000, np.float32), 16000)
    x = _sine(440, 16000)
    x[5000] = np.nan
    sf.write(str(tmp_path / "nan.wav"), x, 16000, subtype="FLOAT")
    x = _sine(440, 16000)
    x[-3] = np.inf
    sf.write(str(tmp_path / "inf.wav"), x, 16000, subtype="FLOAT")
    sf.write(str(tmp_path / "tiny.wav"), _sine(440, 16000, seconds=0.1), 16000)
    (tmp_path / "notes.txt").write_text("not audio")
    return tmp_path


def test_index_skips_bad_files_by_name(salted, caplog):
    with caplog.at_level(logging.WARNING, logger="wildmix"):
        index = data.index_folder(salted)
    kept = {str(c.path) for c in index.clips}
    assert kept == {str(salted / n) for n in GOOD}
    skipped = {p: r for p, r in index.skipped}
    assert set(skipped) == {str(salted / n) for n in BAD}
    for name, reason in BAD.items():
        assert reason in skipped[str(salted / name)]
        lines = [m for m in caplog.messages if m.startswith(f"skipping {salted / name}:")]
        assert len(lines) == 1 and reason in lines[0] and "\n" not in lines[0]
    assert "6 usable files" in index.summary() and "7 skipped" in index.summary()


@pytest.mark.parametrize("name", sorted(GOOD))
def test_crops_are_mono_resampled_and_level_preserving(salted, name):
    index = data.index_folder(salted)
    clip = next(c for c in index.clips if c.path.endswith(name))
    sr_in, freq, amp = GOOD[name]
    x = data.read_crop(clip, 16000, 32000, np.random.default_rng(0))
    assert x.shape == (32000,) and x.dtype == np.float32
    assert abs(_peak_freq(x, 16000) - freq) < 2.0
    rms = np.sqrt(np.mean(x[1000:-1000].astype(np.float64) ** 2))
    assert rms == pytest.approx(amp / np.sqrt(2), rel=0.02)


def test_dataset_yields_valid_mixtures(salted):
    index = data.index_folder(salted)
    ds = data.MixtureDataset(index.clips[:3], index.clips[3:], segment_seconds=4.0,
                             examples_per_epoch=16, seed=3)
    for i in range(len(ds)):
        item = ds[i]
        assert item.shape == (2, 64000) and item.dtype == torch.float32
        assert torch.isfinite(item).all()
        rms = item.pow(2).mean(-1).sqrt()
        assert (rms > 0).all()
    # items depend on (seed, epoch, index) only
    torch.testing.assert_close(ds[5], data.MixtureDataset(
        index.clips[:3], index.clips[3:], segment_seconds=4.0, examples_per_epoch=16,
        seed=3)[5])
    ds.set_epoch(1)
    assert not torch.equal(ds[5], data.MixtureDataset(
        index.clips[:3], index.clips[3:], segment_seconds=4.0, examples_per_epoch=16,
        seed=3)[5])


def test_relative_gain(salted):
    index = data.index_folder(salted)
    ds = data.MixtureDataset(index.clips, index.clips, relative_gain_db=(6.0, 6.0),
                             level_db=(-20.0, -20.0), examples_per_epoch=4)
    item = ds[0].double()
    levels = 10 * torch.log10(item.pow(2).mean(-1))
    assert levels[0].item() == pytest.approx(-20.0, abs=0.01)
    assert (levels[1] - levels[0]).item() == pytest.approx(6.0, abs=0.01)


def test_loader_workers_match_in_process(tiny_corpus):
    index = data.index_folder(tiny_corpus / "train" / "noisy")
    noise = data.index_folder(tiny_corpus / "train" / "noise")
    ds = data.MixtureDataset(index.clips, noise.clips, examples_per_epoch=8, seed=1)
    with_workers = torch.cat(list(data.make_loader(ds, batch_size=4, workers=2)))
    in_process = torch.cat(list(data.make_loader(ds, batch_size=4, workers=0)))
    assert with_workers.shape == (8, 2, 64000)
    torch.testing.assert_close(with_workers, in_process)


def test_file_broken_after_indexing_is_skipped(salted, caplog):
    index = data.index_folder(salted)
    victim = next(c for c in index.clips if c.path.endswith("mono16k.wav"))
    (salted / "mono16k.wav").write_bytes(b"garbage")
    ds = data.MixtureDataset([victim] + [c for c in index.clips if c is not victim],
                             examples_per_epoch=20)
    with caplog.at_level(logging.WARNING, logger="wildmix"):
        items = [ds[i] for i in range(20)]
    assert all(torch.isfinite(x).all() for x in items)
    assert sum("mono16k.wav" in m for m in caplog.messages) == 1  # warned once


def test_no_usable_audio(tmp_path, capsys):
    with pytest.raises(data.DataError, match="no audio files"):
        data.index_folder(tmp_path)
    sf.write(str(tmp_path / "z.wav"), np.zeros(16000, np.float32), 16000)
    with pytest.raises(data.DataError, match="no usable audio.*1 silent"):
        data.index_folder(tmp_path)
    assert main(["data", "check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no usable audio" in err
    with pytest.raises(FileNotFoundError):
        data.index_folder(tmp_path / "missing")


def test_short_files_pad_or_skip(salted):
    index = data.index_folder(salted, min_seconds=0.05)
    short = next(c for c in index.clips if c.path.endswith("tiny.wav"))
    x = data.read_crop(short, 16000, 16000, np.random.default_rng(0))
    assert x.shape == (16000,) and (x == 0).sum() >= 16000 - 1700
    with pytest.raises(data.audio.AudioError, match="too short"):
        data.read_crop(short, 16000, 16000, np.random.default_rng(0), pad=False)


def test_harvest_noise_finds_only_speech_free_stretches(tiny_corpus, tmp_path, capsys):
    speech, sr = sf.read(str(next((tiny_corpus / "test" / "clean").iterdir())),
                         dtype="float32")
    rng = np.random.default_rng(0)
    pad = np.zeros(3 * sr, np.float32)
    clean = np.concatenate([pad, speech, pad])
    x = clean + 0.003 * rng.standard_normal(len(clean)).astype(np.float32)
    sf.write(str(tmp_path / "rec.wav"), x, sr)
    index = data.index_folder(tmp_path)
    noise = data.harvest_noise(index, min_seconds=1.0)
    assert len(noise.clips) >= 2
    voiced = np.flatnonzero(np.abs(speech) > 0.01 * np.abs(speech).max())
    first, last = 3 * sr + voiced[0], 3 * sr + voiced[-1]
    total = 0
    for c in noise.clips:
        assert c.start + c.frames <= first or c.start >= last
        total += c.frames
    assert total >= 3 * sr  # most of the 6 s of padding is found
    assert main(["data", "check", str(tmp_path), "--noise", "auto"]) == 0
    assert "noise found without speech (VAD)" in capsys.readouterr().out


def test_pauses_are_the_quiet_frames_away_from_speech():
    """Hand-placed bursts: 0.5-1.0 s and 1.5-2.0 s loud, a -40 dB murmur between them, 2.5 s
    in all; with a -30 dB floor and a 0.1 s margin the pauses are exactly [0, 0.4),
    [1.1, 1.4) and [2.1, 2.5) s."""
    sr = 16000
    t = np.arange(int(2.5 * sr)) / sr
    speech = np.where(((t >= 0.5) & (t < 1.0)) | ((t >= 1.5) & (t < 2.0)), 0.5,
                      np.where((t >= 1.0) & (t < 1.5), 0.005, 0.0)) * np.sin(2 * np.pi * 200 * t)
    got = data.pauses(speech.astype(np.float32), sr, floor_db=-30, margin_seconds=0.1)
    expected = (t < 0.4) | ((t >= 1.1) & (t < 1.4)) | (t >= 2.1)
    np.testing.assert_array_equal(got, expected)
    assert not data.pauses(speech, sr, floor_db=-50)[(t > 0.9) & (t < 1.6)].any()  # murmur
    assert not data.pauses(np.zeros(100, np.float32), sr).any()  # shorter than a frame


def test_join_stretches_keeps_the_masked_samples_with_short_fades():
    sr = 1000
    x = np.arange(1, 5001, dtype=np.float32)
    mask = np.zeros(5000, bool)
    mask[100:1100] = True
    mask[3000:5000] = True
    y = data.join_stretches(x, mask, sr, fade_seconds=0.01)
    assert len(y) == 3000
    np.testing.assert_array_equal(y[10:990], x[110:1090])  # untouched between the fades
    np.testing.assert_array_equal(y[1010:2990], x[3010:4990])
    assert y[0] == 0 and y[999] == 0 and y[1000] == 0  # each stretch fades in and out
    np.testing.assert_allclose(y[5], x[105] * 5 / 9, rtol=1e-6)
    assert len(data.join_stretches(x, np.zeros(5000, bool), sr)) == 0


def test_noise_augment_adds_noise_to_first_mixture(salted):
    index = data.index_folder(salted)
    speech = [c for c in index.clips if c.path.endswith("mono16k.wav")]  # 440 Hz
    noise = [c for c in index.clips if c.path.endswith("rate48k.wav")]  # 3 kHz
    plain = data.MixtureDataset(speech, noise, examples_per_epoch=4)[0][0].numpy()
    mixed = data.MixtureDataset(speech, noise, noise_augment=1.0, examples_per_epoch=4)
    first = mixed[0][0].numpy()
    spectrum = np.abs(np.fft.rfft(first))
    freqs = np.fft.rfftfreq(len(first), 1 / 16000)
    assert spectrum[np.argmin(np.abs(freqs - 3000))] > 100 * spectrum[np.argmin(
        np.abs(freqs - 3000)) + 400]  # the noise's tone is now in the noisy mixture
    assert abs(_peak_freq(plain, 16000) - 440) < 2


def _peak_hz(x, rate):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)]


@pytest.mark.parametrize("factor", [0.85, 1.0, 1.15])
def test_change_speed_moves_pitch_by_the_factor(factor):
    rate = 16000
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    y = data.change_speed(tone, factor, rate, np.random.default_rng(0))
    assert y.shape == tone.shape and y.dtype == np.float32
    voiced = y[np.abs(y) > 0][: rate // 2]
    assert abs(_peak_hz(voiced, rate) - 440 * factor) < 4


def test_equalise_applies_the_drawn_gain_at_each_node():
    rate = 16000
    t = np.arange(rate) / rate
    nodes = np.geomspace(100.0, rate / 2, 6)
    gains = np.random.default_rng(3).uniform(-8, 8, 6)  # the draw equalise will make
    for k in (1, 2, 3, 4):  # tones at interior nodes: the gain there is exactly gains[k]
        tone = np.sin(2 * np.pi * round(nodes[k]) * t).astype(np.float32)
        y = data.equalise(tone, rate, np.random.default_rng(3))
        got = 20 * np.log10(np.sqrt(np.mean(y**2)) / np.sqrt(np.mean(tone**2)))
        assert abs(got - gains[k]) < 0.1
    flat = data.equalise(tone, rate, np.random.default_rng(3), max_db=0.0)
    np.testing.assert_allclose(flat, tone, atol=1e-5)


def test_paired_augment_transforms_every_clean_crop_deterministically(tiny_corpus):
    from wildmix.train import TrainConfig

    c = resolved(TrainConfig(data=str(tiny_corpus), strategy="supervised"))
    pairs = data.paired_clips(c.data, c.clean)
    plain = data.PairedDataset(pairs, 16000, 2.0, 16, seed=1)
    aug = data.PairedDataset(pairs, 16000, 2.0, 16, seed=1, augment=True)
    changed = 0
    for i in range(8):
        item = aug[i]
        assert item.shape == (2, 32000) and torch.isfinite(item).all()
        torch.testing.assert_close(aug[i], item)  # deterministic per (seed, epoch, index)
        changed += not torch.allclose(item[1], plain[i][1])
    assert changed == 8  # every clean crop is transformed


def test_paired_noise_change_gives_other_noise_at_the_same_snr(tiny_corpus):
    from wildmix.train import TrainConfig

    c = resolved(TrainConfig(data=str(tiny_corpus), strategy="supervised"))
    pairs = data.paired_clips(c.data, c.clean)
    kept = data.PairedDataset(pairs, 16000, 2.0, 16, seed=1, augment=True)
    changed = data.PairedDataset(pairs, 16000, 2.0, 16, seed=1, augment=True, noise_change=1.0)
    for i in range(6):
        a, b = kept[i].double(), changed[i].double()
        assert torch.isfinite(b).all()
        noise_a, noise_b = a[0] - a[1], b[0] - b[1]
        snr = [10 * torch.log10((x[1] ** 2).sum() / (n ** 2).sum())
               for x, n in ((a, noise_a), (b, noise_b))]
        assert abs(snr[0] - snr[1]) < 0.01  # the same speech at the same SNR...
        torch.testing.assert_close(b[1] / b[1].norm(), a[1] / a[1].norm())
        corr = (noise_a @ noise_b).abs() / (noise_a.norm() * noise_b.norm())
        assert corr < 0.5  # ...in another noise
        torch.testing.assert_close(changed[i], changed[i].clone())


def test_augment_noise_is_for_supervised_augment():
    from wildmix.train import TrainConfig

    with pytest.raises(ValueError, match="--augment-noise is for"):
        resolve(TrainConfig(data="x", strategy="supervised", clean="y", augment_noise=0.5))
    with pytest.raises(ValueError, match="probability"):
        resolve(TrainConfig(data="x", strategy="supervised", clean="y", augment=True,
                            augment_noise=2.0))


def resolved(c):
    """The config after resolve(): every default filled in."""
    return resolve(c).config


def test_mixit_augment_changes_each_mixtures_speed_and_keeps_levels(salted):
    """A 440 Hz tone played 1.1 times faster peaks at 484 Hz (the equaliser moves no
    peak); the levels are set after the change, as drawn."""
    index = data.index_folder(salted)
    tone = [c for c in index.clips if c.path.endswith("mono16k.wav")]  # 440 Hz
    ds = data.MixtureDataset(tone, tone, relative_gain_db=(6.0, 6.0), level_db=(-20.0, -20.0),
                             examples_per_epoch=4, augment=True, speed=(1.1, 1.1))
    item = ds[0].double()
    for x in item.numpy():
        assert abs(_peak_freq(x.astype(np.float32), 16000) - 484) < 3
    levels = 10 * torch.log10(item.pow(2).mean(-1))
    assert levels[0].item() == pytest.approx(-20.0, abs=0.01)
    assert (levels[1] - levels[0]).item() == pytest.approx(6.0, abs=0.01)
    torch.testing.assert_close(ds[2], data.MixtureDataset(
        tone, tone, relative_gain_db=(6.0, 6.0), level_db=(-20.0, -20.0),
        examples_per_epoch=4, augment=True, speed=(1.1, 1.1))[2])  # reproducible


def test_speech_noise_dataset_mixes_clean_speech_with_noise_at_the_drawn_snr(salted):
    """Speech is a 440 Hz tone, noise a 3 kHz tone: the clean row is all 440 Hz, noisy minus
    clean is all 3 kHz, 6 dB below it, and the noisy row sits at the drawn level."""
    index = data.index_folder(salted)
    speech = [c for c in index.clips if c.path.endswith("mono16k.wav")]  # 440 Hz
    noise = [c for c in index.clips if c.path.endswith("rate48k.wav")]  # 3 kHz
    ds = data.SpeechNoiseDataset(speech, noise, 16000, 2.0, 4, snr_db=(6.0, 6.0),
                                 level_db=(-25.0, -25.0))
    noisy, clean = ds[1].double().numpy()
    rest = noisy - clean
    assert abs(_peak_freq(clean.astype(np.float32), 16000) - 440) < 3
    assert abs(_peak_freq(rest.astype(np.float32), 16000) - 3000) < 3
    assert 10 * np.log10(np.mean(clean**2) / np.mean(rest**2)) == pytest.approx(6.0, abs=0.01)
    assert 10 * np.log10(np.mean(noisy**2)) == pytest.approx(-25.0, abs=0.01)
    torch.testing.assert_close(ds[1], data.SpeechNoiseDataset(
        speech, noise, 16000, 2.0, 4, snr_db=(6.0, 6.0), level_db=(-25.0, -25.0))[1])
    with pytest.raises(data.DataError, match="noise-only set is empty"):
        data.SpeechNoiseDataset(speech, [], 16000, 2.0, 4)
