"""The sound library (catalogue, decoding cache) and dynamic mixing, on fake packages."""

import json
import zipfile

import numpy as np
import pytest
import soundfile as sf

from wildmix import mixing
from wildmix.corpus import catalogue, library
from wildmix.corpus.catalogue import Sound
from wildmix.data import Clip


def test_catalogue_leaves_whole_packages_out():
    splits = {}
    for s in catalogue.LIBRARY:
        splits.setdefault(s.package, set()).add(s.split)
    assert all(len(v) == 1 for v in splits.values())
    assert len(catalogue.packages()) >= 15
    assert {s.kind for s in catalogue.LIBRARY if s.split == "train"} == set(catalogue.SOUND_KINDS)
    for split in ("valid", "test"):
        assert catalogue.packages(split) and not (set(catalogue.packages(split))
                                                  & set(catalogue.packages("train")))


def _tone(freq: float, seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture()
def packages(tmp_path):
    """Three fake packages under ROOT/NAME: files, a folder to exclude, a zip archive."""
    root = tmp_path / "packages"
    for name in ("pa", "pb", "pc"):
        (root / name / "usr/share/doc" / name).mkdir(parents=True)
    music = root / "pa/usr/share/pa"
    (music / "voices").mkdir(parents=True)
    sf.write(music / "song.ogg", _tone(440, 2.0, 44100, 2), 44100)
    sf.write(music / "hum.flac", _tone(100, 1.0, 22050), 22050)
    sf.write(music / "blip.wav", _tone(1000, 0.05, 16000), 16000)  # too short: left out
    sf.write(music / "silent.wav", np.zeros(16000, np.float32), 16000)  # silent: left out
    sf.write(music / "voices/hello.wav", _tone(200, 1.0, 16000), 16000)  # excluded
    (root / "pb/usr/share/pb").mkdir(parents=True)
    sf.write(root / "pb/usr/share/pb/rain.wav", _tone(300, 3.0, 48000), 48000)
    (root / "pb/usr/share/pb/broken.ogg").write_bytes(b"not audio")  # skipped
    wav = tmp_path / "engine.wav"
    sf.write(wav, _tone(150, 1.5, 16000), 16000)
    (root / "pc/usr/share/pc").mkdir(parents=True)
    with zipfile.ZipFile(root / "pc/usr/share/pc/data.zip", "w") as z:
        z.write(wav, "audio/engines/engine.wav")
        z.write(wav, "other/engine.wav")
    sounds = [Sound("pa", "usr/share/pa/**/*.*", "music", "train", "GPL", exclude="voices/"),
              Sound("pb", "usr/share/pb/*.*", "ambience", "valid", "CC0"),
              Sound("pc", "usr/share/pc/data.zip::audio/*/*.wav", "vehicles", "train", "MIT")]
    return root, sounds


def test_build_decodes_every_sound_once_into_a_memory_map(packages, tmp_path):
    root, sounds = packages
    out = library.build(tmp_path / "lib", [str(root)], workers=1, progress=False,
                        sounds=sounds)
    index = json.loads((out / "index.json").read_text())
    by_name = {r["name"].split("/")[-1]: r for r in index["sounds"]}
    assert set(by_name) == {"hum.flac", "song.ogg", "rain.wav", "engine.wav"}
    assert by_name["song.ogg"]["length"] == 32000 and by_name["rain.wav"]["length"] == 48000
    assert by_name["rain.wav"]["split"] == "valid" and by_name["engine.wav"]["kind"] == "vehicles"
    train = library.Split(out, "train", sounds=sounds)
    song = train.sound([e.name for e in train.entries].index(by_name["song.ogg"]["name"]))
    # the oracle: the tone itself at 16 kHz (Vorbis is lossy: up to a gain), peak 0.9
    expected = np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)[100:-100]
    gain = song[100:-100] @ expected / (expected @ expected)
    error = song[100:-100] - gain * expected
    assert 10 * np.log10(np.sum((gain * expected) ** 2) / np.sum(error ** 2)) > 30
    assert np.max(np.abs(song)) == pytest.approx(0.9, abs=1e-3)
    assert library.is_fresh(out, sounds) and not library.is_fresh(out)


def test_a_changed_catalogue_rebuilds_and_a_missing_package_is_one_line(packages, tmp_path):
    root, sounds = packages
    out = library.build(tmp_path / "lib", [str(root)], workers=1, progress=False,
                        sounds=sounds)
    changed = [sounds[0], sounds[1]]
    assert not library.is_fresh(out, changed)
    library.build(out, [str(root)], workers=1, progress=False, sounds=changed)
    rows = json.loads((out / "index.json").read_text())["sounds"]
    assert {r["package"] for r in rows} == {"pa", "pb"}
    with pytest.raises(library.LibraryError, match="not found.*: pz"):
        library.build(tmp_path / "other", [str(root)], workers=1, progress=False,
                      sounds=[*sounds, Sound("pz", "x/*.ogg", "music", "test", "GPL")])
    assert not (tmp_path / "other" / "index.json").exists()
    with pytest.raises(library.LibraryError, match="no sound library"):
        library.Split(out, "train")  # built from another catalogue than today's


def test_crops_draw_every_kind_equally_often(packages, tmp_path, monkeypatch):
    root, sounds = packages
    out = library.build(tmp_path / "lib", [str(root)], workers=1, progress=False,
                        sounds=sounds)
    train = library.Split(out, "train", sounds=sounds)
    rng = np.random.default_rng(0)
    kinds = [train.crop(8000, rng)[1].kind for _ in range(2000)]
    # music holds 3 s (two files), vehicles 1.5 s: yet each kind is half of the draws
    assert abs(kinds.count("music") / 2000 - 0.5) < 0.05
    x, _ = train.crop(100000, rng)  # longer than any sound: repeated
    assert len(x) == 100000 and x.dtype == np.float32 and np.isfinite(x).all()


def test_mix_puts_the_noise_at_the_drawn_snr_and_keeps_the_target_clean():
    rng = np.random.default_rng(1)
    speech = rng.standard_normal(32000).astype(np.float32)
    plain = mixing.Mixing(snr_db=(3.0, 3.0), room=0.0, extra_noises=(0.0, 0.0), colour=0.0,
                          band_limit=0.0, codec=0.0, clip=0.0, level_db=(-20.0, -20.0))

    def noise(like, r):
        return r.uniform(-1, 1, len(like)).astype(np.float32), "test"

    x, s, info = mixing.mix(speech, noise, rng, plain)
    n = x - s
    snr = 10 * np.log10(np.sum(s.astype(np.float64) ** 2) / np.sum(n.astype(np.float64) ** 2))
    assert snr == pytest.approx(3.0, abs=1e-3) and info["snr_db"] == 3.0
    level = 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    assert level == pytest.approx(-20, abs=1e-3)
    np.testing.assert_allclose(s / np.max(np.abs(s)), speech / np.max(np.abs(speech)),
                               atol=1e-5)  # no room, no filter: the speech itself


def test_room_response_decays_by_60_db_in_rt60():
    rng = np.random.default_rng(2)
    h = mixing.room_response(0.5, 16000, rng)
    tail = h[200:] ** 2  # after the direct path and gap
    edc = 10 * np.log10(np.cumsum(tail[::-1])[::-1] / tail.sum())  # Schroeder integral
    t20 = (np.argmax(edc < -25) - np.argmax(edc < -5)) / 16000 * 3  # T20 extrapolated
    assert t20 == pytest.approx(0.5, rel=0.15)


def test_mu_law_and_band_limit_do_what_they_say():
    rng = np.random.default_rng(3)
    x = (0.3 * rng.standard_normal(16000)).astype(np.float32)
    y = mixing.mu_law(x)
    snr = 10 * np.log10(np.sum(x ** 2) / np.sum((x - y) ** 2))
    assert 20 < snr < 45  # 8-bit companding: audible, not destructive
    gains = mixing.response(16000, 16000, rng, max_db=0.0, cutoff=4000.0)
    z = mixing.filtered(x, gains)
    spectrum = np.abs(np.fft.rfft(z)) ** 2
    f = np.fft.rfftfreq(16000, 1 / 16000)
    assert spectrum[f > 5000].sum() < 1e-4 * spectrum[f < 3000].sum()


def test_dynamic_items_are_fresh_finite_and_reproducible(packages, tmp_path, monkeypatch):
    root, sounds = packages
    out = library.build(tmp_path / "lib", [str(root)], workers=1, progress=False,
                        sounds=sounds)
    monkeypatch.setattr(catalogue, "LIBRARY", sounds)
    path = tmp_path / "speech.wav"
    sf.write(path, _tone(220, 3.0, 16000) * np.linspace(0, 1, 48000, dtype=np.float32), 16000)
    clip = Clip(str(path), 16000, 0, 48000)
    ds = mixing.DynamicMixDataset([clip], str(out), segment_seconds=1.0, examples_per_epoch=20,
                                  seed=4)
    items = [ds[i] for i in range(20)]
    assert all(item.shape == (2, 16000) and np.isfinite(item.numpy()).all() for item in items)
    assert np.array_equal(items[3].numpy(), ds[3].numpy())
    assert not np.array_equal(items[3].numpy(), items[4].numpy())
    ds.set_epoch(1)
    assert not np.array_equal(items[3].numpy(), ds[3].numpy())


def _library_and_speech(packages, tmp_path, monkeypatch, files: int):
    """A built library of the test packages, and a folder of ``files`` 2-s tones."""
    root, sounds = packages
    lib = library.build(tmp_path / "lib", [str(root)], workers=1, progress=False,
                        sounds=sounds)
    monkeypatch.setattr(catalogue, "LIBRARY", sounds)
    speech = tmp_path / "speech"
    speech.mkdir()
    for k in range(files):
        sf.write(speech / f"s{k}.wav", _tone(200 + 50 * k, 2.0, 16000), 16000)
    return lib, speech


def test_train_mixes_speech_with_the_library_on_the_fly(packages, tmp_path, monkeypatch):
    from wildmix.cli import main

    lib, speech = _library_and_speech(packages, tmp_path, monkeypatch, 3)
    out = tmp_path / "run"
    assert main(["train", "--supervised", "--speech", str(speech), "--noise", str(lib),
                 "--preset", "tiny", "--max-steps", "3", "--batch-size", "2",
                 "--workers", "0", "--out", str(out), "--no-progress"]) == 0
    logged = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert max(e["step"] for e in logged) == 3
    assert all(np.isfinite(e["loss"]) for e in logged if "loss" in e)
    # without a library, --data is still needed: one line, no run folder
    assert main(["train", "--supervised", "--speech", str(speech), "--noise", str(speech),
                 "--out", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()


def test_train_draws_the_snr_from_mix_snr_db(packages, tmp_path, monkeypatch, capsys):
    from wildmix.cli import main

    lib, speech = _library_and_speech(packages, tmp_path, monkeypatch, 1)
    drawn, mix = [], mixing.mix

    def recording_mix(*args, **kwargs):
        x, s, info = mix(*args, **kwargs)
        drawn.append(info["snr_db"])
        return x, s, info

    monkeypatch.setattr(mixing, "mix", recording_mix)
    argv = ["train", "--supervised", "--speech", str(speech), "--noise", str(lib), "--preset",
            "tiny", "--max-steps", "3", "--batch-size", "4", "--workers", "0", "--no-progress"]
    assert main(argv + ["--mix-snr-db", "4", "6", "--out", str(tmp_path / "run")]) == 0
    assert len(drawn) >= 12 and all(4 <= v <= 6 for v in drawn)
    for bad in (["6", "4"], ["0", "inf"]):
        assert main(argv + ["--mix-snr-db", *bad, "--out", str(tmp_path / "bad")]) == 2
        assert "--mix-snr-db needs LOW < HIGH" in capsys.readouterr().err


def test_render_writes_paired_files_with_their_true_snr(packages, tmp_path, monkeypatch):
    root, sounds = packages
    lib = library.build(tmp_path / "lib", [str(root)], workers=1, progress=False,
                        sounds=sounds)
    monkeypatch.setattr(catalogue, "LIBRARY", sounds)
    speech = []
    for k in range(4):
        path = tmp_path / f"v{k}.wav"
        sf.write(path, _tone(180 + 40 * k, 1.5, 16000), 16000)
        speech.append((str(path), f"voice{k % 2}"))
    out = mixing.render(tmp_path / "set", speech, str(lib), "valid", seed=3)
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["voice"] for r in rows] == ["voice0", "voice1", "voice0", "voice1"]
    for r in rows:
        x, _ = sf.read(out / "noisy" / f"{r['name']}.wav", dtype="float32")
        s, _ = sf.read(out / "clean" / f"{r['name']}.wav", dtype="float32")
        assert len(x) == len(s) == 24000
        assert r["noises"][0] in ("ambience:pb", "babble")  # the valid split's package
        true = 10 * np.log10(np.sum(s.astype(np.float64) ** 2)
                             / np.sum((x - s).astype(np.float64) ** 2))
        assert true == pytest.approx(r["input_snr_db"], abs=0.05)
        assert -5.5 <= r["snr_db"] <= 15.5
    again = mixing.render(tmp_path / "again", speech, str(lib), "valid", seed=3)
    assert (again / "manifest.jsonl").read_text() == (out / "manifest.jsonl").read_text()
    assert not list(tmp_path.glob("*.tmp"))


def test_cli_names_the_missing_packages_in_one_line(tmp_path, capsys):
    from wildmix.cli import main

    assert main(["corpus", "library", "build", str(tmp_path / "lib"), "--packages",
                 str(tmp_path / "nothing"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not found" in err and "make library" in err
    assert not (tmp_path / "lib" / "index.json").exists()
    assert main(["corpus", "library", "show", str(tmp_path / "lib")]) == 0
    assert "no sound library" in capsys.readouterr().out
