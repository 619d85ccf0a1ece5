import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wildmix import corpus
from wildmix.cli import main
from wildmix.corpus import plan, render  # noqa: F401 - corpus.plan, corpus.render


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic(debian_tiny_corpus, tmp_path, capsys):
    # a second build through the CLI, with one worker instead of all cores
    assert main(["corpus", "build", str(tmp_path / "again"), "--size", "tiny", "--seed", "0",
                 "--workers", "1"]) == 0
    assert "built speech corpus 'tiny'" in capsys.readouterr().out
    first, second = _hashes(debian_tiny_corpus), _hashes(tmp_path / "again")
    assert len(first) > 90
    assert first == second
    # and another seed gives other audio
    corpus.build(tmp_path / "other", size="tiny", seed=1)
    third = _hashes(tmp_path / "other")
    assert third["test/noisy/test_noisy_00000.wav"] != first["test/noisy/test_noisy_00000.wav"]


def test_layout_and_manifest(debian_tiny_corpus):
    header, records = corpus.read_manifest(debian_tiny_corpus)
    assert header["size"] == "tiny" and header["sample_rate"] == 16000
    roles = {(r["split"], r["role"]) for r in records}
    assert roles == {("train", "noisy"), ("train", "noise"), ("valid", "noisy"),
                     ("test", "noisy")}
    for r in records:
        for rel in r["files"].values():
            assert (debian_tiny_corpus / rel).is_file()
            assert sf.info(str(debian_tiny_corpus / rel)).samplerate == 16000
        assert r["noise_licence"] and r["noise_package"]
        if r["role"] == "noisy":
            assert r["voice"] and r["speech_licence"] and r["speech_package"] == "flite"
            assert -5.0 <= r["snr_db"] <= 15.0
    for split in ("valid", "test"):
        names = [sorted(p.name for p in (debian_tiny_corpus / split / d).iterdir())
                 for d in ("noisy", "clean", "noise")]
        assert names[0] == names[1] == names[2] and names[0]
    assert len(list((debian_tiny_corpus / "train" / "noisy").iterdir())) == 24
    assert len(list((debian_tiny_corpus / "train" / "noise").iterdir())) == 12


def test_splits_disjoint(debian_tiny_corpus):
    _, records = corpus.read_manifest(debian_tiny_corpus)
    speakers = {s: set() for s in corpus.SPLITS}
    noises = {s: set() for s in corpus.SPLITS}
    for r in records:
        if r["role"] == "noisy":
            speakers[r["split"]].add(r["speaker"])
        if r["noise_package"] != "generated":
            noises[r["split"]].add(r["noise_file"])
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not speakers[a] & speakers[b]
        assert not noises[a] & noises[b]
    assert all(speakers.values()) and noises["train"]


def test_noisy_is_clean_plus_noise_at_manifest_snr(debian_tiny_corpus):
    _, records = corpus.read_manifest(debian_tiny_corpus)
    paired = [r for r in records if r["split"] in ("valid", "test")]
    assert len(paired) == 12
    for r in paired:
        noisy, clean, noise = (sf.read(str(debian_tiny_corpus / r["files"][k]), dtype="float32")[0]
                               for k in ("noisy", "clean", "noise"))
        assert noisy.dtype == np.float32 and len(noisy) == len(clean) == len(noise)
        np.testing.assert_array_equal(noisy, clean + noise)
        snr = 10 * np.log10(np.sum(clean.astype(np.float64) ** 2)
                            / np.sum(noise.astype(np.float64) ** 2))
        assert abs(snr - r["snr_db"]) < 0.1
        assert np.abs(noisy).max() <= 0.95 + 1e-6  # never clipped


def test_sounds_kind(debian_tiny_sounds):
    header, records = corpus.read_manifest(debian_tiny_sounds)
    assert header["kind"] == "sounds"
    files = {s: set() for s in corpus.SPLITS}
    counts = set()
    for r in records:
        mixture = sf.read(str(debian_tiny_sounds / r["files"]["mixture"]), dtype="float32")[0]
        sources = [sf.read(str(debian_tiny_sounds / p), dtype="float32")[0]
                   for p in r["files"]["sources"]]
        assert 1 <= len(sources) <= 4 and len(sources) == r["n_sources"]
        np.testing.assert_allclose(np.sum(sources, 0), mixture, atol=1e-6)
        counts.add(len(sources))
        files[r["split"]] |= {s["source_file"] for s in r["sources"]
                              if s["source_package"] not in ("speech", "generated")}
    assert len(counts) >= 3
    assert not files["train"] & files["test"] and not files["train"] & files["valid"]


def test_missing_packages_named(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(corpus.plan, "installed", lambda names: {n: n != "flite" for n in names})
    with pytest.raises(corpus.CorpusError, match="missing Debian packages.*flite"):
        corpus.build(tmp_path / "c", size="tiny")
    assert main(["corpus", "build", str(tmp_path / "c"), "--size", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "flite" in err and len(err.strip().splitlines()) == 1


def test_bad_arguments(tmp_path):
    with pytest.raises(corpus.CorpusError, match="size must be"):
        corpus.build(tmp_path, size="huge")
    with pytest.raises(corpus.CorpusError, match="sample rate"):
        corpus.build(tmp_path, sample_rate=100)
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(corpus.CorpusError, match="not a wildmix corpus"):
        corpus.build(tmp_path, size="tiny", sources=Path(__file__).parent / "data")
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_sentences_vary():
    rng = np.random.default_rng(0)
    sentences = {corpus.sentence(rng) for _ in range(200)}
    assert len(sentences) > 190


def test_noise_split_agrees_across_sizes(monkeypatch):
    # fake package listings: the split of a recorded noise file must not depend on the size,
    # or a model trained on 'large' would hear the noise files of 'small''s test split
    def listing(packages, cap, sources=None):
        return [(p, f"/fake/{p}/{i:03d}.wav") for p in packages for i in range(60)]

    monkeypatch.setattr(corpus.plan, "_noise_files", listing)
    pools = {size: corpus.plan._noise_pools(corpus.SIZES[size], seed=0)
             for size in ("small", "large", "shift")}
    for small_like in ("small", "shift"):
        for split in ("valid", "test"):
            assert set(pools[small_like][split]) <= set(pools["large"][split])
            assert not set(pools[small_like][split]) & set(pools["large"]["train"])
        assert set(pools[small_like]["train"]) <= set(pools["large"]["train"])
    every = [f for split in corpus.SPLITS for f in pools["large"][split]]
    assert len(every) == len(set(every)) == 60 * len(corpus.SIZES["large"].noise_packages)


def test_bundled_sources_follow_the_same_plan(debian_tiny_corpus, tiny_corpus):
    """The test audio build (tests/data) has the same items, voices and splits (what is drawn
    after the voice differs: recordings are picked where sentences were made up)."""
    keys = ("split", "name", "role", "voice", "speaker")
    plans = []
    for root in (debian_tiny_corpus, tiny_corpus):
        _, records = corpus.read_manifest(root)
        plans.append([tuple(r.get(k) for k in keys) for r in records])
    assert plans[0] == plans[1] and len(plans[0]) == 48
    header, records = corpus.read_manifest(tiny_corpus)
    assert header["sources"].endswith("data")
    for r in records:
        if r["role"] == "noisy":
            assert r["speech_files"] and all("tests/data/speech" in f for f in
                                             r["speech_files"])
        if r["noise_package"] != "generated":
            assert "tests/data/noise" in r["noise_file"]


def test_bundled_sources_missing_voice(tmp_path):
    (tmp_path / "speech").mkdir()
    with pytest.raises(corpus.CorpusError, match="voice flite:slt has no recordings"):
        corpus.build(tmp_path / "c", size="tiny", sources=tmp_path)


def test_real_size_plan_keeps_voices_languages_and_eval_apart(monkeypatch):
    """The 'real' plan, with fake recordings: valid and test hold real voices only, and no
    speaker nor word language appears in two splits."""
    def fake(v):
        return [f"/fake/{v.engine}/{v.voice}/{k}.wav" for k in range(20)], "fake"

    monkeypatch.setattr(corpus.plan, "_recorded_files", fake)
    monkeypatch.setattr(corpus.plan, "_noise_files", lambda packages, cap, sources=None: [
        (p, f"/fake/{p}/{i:03d}.wav") for p in packages for i in range(40)])
    items = corpus.plan._plan_speech(corpus.SIZES["real"], 0, (-5.0, 15.0))
    voices = {v.name: v for v in corpus.VOICES}
    speakers, languages = {}, {}
    for it in (i for i in items if i.role == "noisy"):
        v = voices[it.voice]
        if it.split != "train":
            assert v.engine in corpus.RECORDED_ENGINES and it.speech_files, it.voice
        speakers.setdefault(it.speaker, set()).add(it.split)
        if v.engine in corpus.WORD_ENGINES:
            languages.setdefault(v.voice.split("_")[0], set()).add(it.split)
            assert 2 <= len(it.speech_files) <= 5
    assert all(len(s) == 1 for s in speakers.values()), speakers
    assert all(len(s) == 1 for s in languages.values()), languages
    assert sum("test" in s for s in speakers.values()) >= 6
    rooms = [it.room for it in items if it.role == "noisy" and it.split == "train"]
    share = sum(r is not None for r in rooms) / len(rooms)
    assert 0.28 < share < 0.38
    for r in filter(None, rooms):
        assert all(0.5 <= c <= d - 0.5 for p in ("source", "mic")
                   for c, d in zip(r[p], r["dims"], strict=True))
        assert np.linalg.norm(np.subtract(r["source"], r["mic"])) >= 0.5
    # the older sizes draw no rooms and keep their voices: their builds are unchanged
    tiny = corpus.plan._plan_speech(corpus.SIZES["tiny"], 0, (-5.0, 15.0))
    assert all(it.room is None for it in tiny)
    assert {it.voice for it in tiny if it.role == "noisy"} == {
        "flite:slt", "flite:rms", "flite:awb", "flite:kal16"}


def test_sounds_size_plans_recorded_voices_and_every_noise_package(monkeypatch, tmp_path):
    """The 'sounds' size (for --kind sounds), with fake recordings and noise files: no speech
    to synthesise, every recorded noise package drawn, and no speaker nor noise file in two
    splits."""
    def fake(v):
        return [f"/fake/{v.engine}/{v.voice}/{k}.wav" for k in range(20)], "fake"

    monkeypatch.setattr(corpus.plan, "_recorded_files", fake)
    monkeypatch.setattr(corpus.plan, "_noise_files", lambda packages, cap, sources=None: [
        (p, f"/fake/{p}/{i:03d}.wav") for p in packages for i in range(40)])
    spec = corpus.SIZES["sounds"]
    assert set(spec.noise_packages) == set(corpus.NOISE_SOURCES)
    items = corpus.plan._plan_speech(spec, 0, (-5.0, 15.0))
    assert not any(it.texts for it in items)  # recorded voices only: nothing to synthesise
    speakers = {}
    for it in items:
        speakers.setdefault(it.speaker, set()).add(it.split)
    assert all(len(s) == 1 for s in speakers.values()), speakers
    jobs = []
    monkeypatch.setattr(corpus.render, "_run_parallel", lambda fn, args, workers: jobs.extend(args))
    corpus.render._build_sounds(spec, {s: [] for s in corpus.SPLITS}, 0, tmp_path, 16000, 1,
                         lambda msg: None)
    pools = {split: {f for job in jobs if job[0] == split for f in job[5]}
             for split in corpus.SPLITS}
    assert not (pools["train"] & pools["valid"] or pools["train"] & pools["test"]
                or pools["valid"] & pools["test"])
    assert {p for p, _ in pools["train"]} == set(corpus.NOISE_SOURCES)
    assert sum(job[0] == "train" for job in jobs) == spec.items["train"]


def test_room_reverberation_has_the_planned_decay():
    pra = pytest.importorskip("pyroomacoustics")
    sr = 16000
    for rt60 in (0.3, 0.7):
        room = {"dims": [6.0, 5.0, 3.0], "rt60": rt60, "source": [2.0, 3.0, 1.5],
                "mic": [4.0, 2.0, 1.2]}
        impulse = np.zeros(sr, np.float32)
        impulse[0] = 1.0
        rir = corpus.render._reverberate(impulse, room, sr)
        distance = np.linalg.norm(np.subtract(room["source"], room["mic"]))
        first = int(np.argmax(np.abs(rir) > 0.5 * np.abs(rir).max()))
        assert abs(first - distance / 343.0 * sr) < 45  # direct path (+ the filter's delay)
        measured = pra.experimental.measure_rt60(rir, fs=sr, decay_db=30)
        assert 0.6 * rt60 < measured < 1.4 * rt60, (rt60, measured)


def test_g722_prompts_decode(tmp_path):
    g722 = pytest.importorskip("G722")
    t = np.arange(16000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    pcm = np.asarray(np.round(x * 32767), np.int16)
    (tmp_path / "a.g722").write_bytes(bytes(g722.G722(16000, 64000).encode(pcm)))
    from wildmix import audio
    from wildmix.evaluate import si_snr

    y = audio.read(tmp_path / "a.g722")
    assert len(y) == len(x)
    lag = int(np.argmax(np.correlate(y[:4000], x[:400], "valid")))  # the codec's delay
    assert si_snr(y[lag:], x[: len(x) - lag]) > 20
