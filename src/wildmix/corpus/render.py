"""Rendering the built-in corpus: TTS synthesis, reading recorded speech and noise, rooms,
mixing at the planned SNR, writing WAV files and the manifest (:func:`build`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from wildmix import audio
from wildmix.config import EXTRAS, require
from wildmix.corpus.catalogue import ENGINE_PACKAGES, KINDS, PACKAGES, SPLITS, CorpusError
from wildmix.corpus.plan import (
    Item,
    _noise_files,
    _plan_speech,
    _size,
    missing_packages,
)


def _synth_batch(engine: str, voice: str, jobs: list[tuple[str, str]]) -> None:
    """Synthesise ``(text, out_path)`` jobs with one engine and voice."""
    if engine == "flite":
        for text, out in jobs:
            subprocess.run(["flite", "-voice", voice, "-t", text, "-o", out], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elif engine == "espeak":
        for text, out in jobs:
            subprocess.run(["espeak-ng", "-v", voice, "-w", out, text], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elif engine == "festival":
        lines = [f"({voice})"]
        for text, out in jobs:
            escaped = text.replace("\\", "").replace('"', "")
            lines.append(f'(utt.save.wave (SynthText "{escaped}") "{out}" \'riff)')
        with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as f:
            f.write("\n".join(lines) + "\n")
        try:
            subprocess.run(["festival", "-b", f.name], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            os.unlink(f.name)
    else:
        raise CorpusError(f"unknown TTS engine {engine!r}")
    missing = [out for _, out in jobs if not os.path.exists(out)]
    if missing:
        raise CorpusError(f"{engine} voice {voice} produced no audio for {missing[0]}")


def _load(path: str, sr: int) -> np.ndarray:
    return audio.read(path, sample_rate=sr, check=False)


def _generated_noise(kind: str, n: int, sr: int, rng: np.random.Generator,
                     babble: list[np.ndarray]) -> np.ndarray:
    if kind in ("white", "pink", "brown", "hum"):
        from wildmix.mixing import stationary  # (mixing imports the corpus package)

        return stationary(kind, n, sr, rng)
    if kind == "babble":
        x = np.zeros(n, np.float32)
        for _ in range(int(rng.integers(3, 7))):
            s = babble[int(rng.integers(len(babble)))]
            x += _fit(s / (audio.rms(s) + 1e-8), n, rng)
        return x
    raise CorpusError(f"unknown generated noise {kind!r}")


def _fit(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of length n, tiling x when it is shorter."""
    if len(x) < n:
        x = np.tile(x, n // len(x) + 1)
    start = int(rng.integers(len(x) - n + 1))
    return x[start:start + n].astype(np.float32)


def _tts_path(cache: Path, voice: str, text: str) -> str:
    digest = hashlib.sha1(f"{voice}|{text}".encode()).hexdigest()[:16]
    return str(cache / f"{digest}.wav")


def _speech_paths(item: Item, cache: Path) -> list[str]:
    """Audio files of an item's utterances: recorded clips, or its TTS renderings."""
    return item.speech_files or [_tts_path(cache, item.voice, t) for t in item.texts]


def _synthesise(items: list[Item], cache: Path, workers: int,
                progress: Callable[[str], None]) -> None:
    """Render every TTS sentence of the plan into ``cache``."""
    by_voice: dict[str, list[tuple[str, str]]] = {}
    for item in items:
        if item.texts:
            jobs = by_voice.setdefault(item.voice, [])
            jobs += [(t, _tts_path(cache, item.voice, t)) for t in item.texts]
    batches = []
    for name, jobs in sorted(by_voice.items()):
        engine, voice = name.split(":", 1)
        jobs = sorted(set(jobs))
        step = 40 if engine == "festival" else 25
        batches += [(engine, voice, jobs[i:i + step]) for i in range(0, len(jobs), step)]
    progress(f"synthesising {sum(len(b[2]) for b in batches)} sentences with "
             f"{len(by_voice)} TTS voices")
    _run_parallel(_synth_batch_args, batches, workers)


def _synth_batch_args(args):
    _synth_batch(*args)


def _run_parallel(fn, args_list, workers: int) -> list:
    if workers <= 1 or len(args_list) <= 1:
        return [fn(a) for a in args_list]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(fn, args_list, chunksize=1))


# --- rendering -------------------------------------------------------------------------


def _speech(paths: list[str], sr: int, rng: np.random.Generator) -> np.ndarray:
    """Concatenate utterances with short pauses."""
    parts = []
    for k, path in enumerate(paths):
        if k:
            parts.append(np.zeros(int(sr * rng.uniform(0.2, 0.8)), np.float32))
        parts.append(_load(path, sr))
    lead = np.zeros(int(sr * rng.uniform(0.1, 0.5)), np.float32)
    tail = np.zeros(int(sr * rng.uniform(0.1, 0.5)), np.float32)
    return np.concatenate([lead, *parts, tail])


def _noise(item: Item, n: int, sr: int, rng: np.random.Generator,
           babble: list[np.ndarray]) -> np.ndarray:
    source, _, ref = item.noise.partition(":")
    if source == "generated":
        x = _generated_noise(ref, n, sr, rng, babble)
    else:
        x = _fit(_load(ref, sr), n, rng)
        if audio.rms(x) < 1e-5:  # a silent stretch of a recording: fall back to pink noise
            item.noise = "generated:pink"
            x = _generated_noise("pink", n, sr, rng, babble)
    return x


def _render_speech(args) -> dict:
    item, out, sr, cache, babble_files = args
    rng = np.random.default_rng(item.seed)
    babble = [_load(p, sr) for p in babble_files] if item.noise == "generated:babble" else []
    record = {k: v for k, v in asdict(item).items()
              if k != "seed" and not (k == "room" and v is None)}
    if item.role == "noise":
        n = int(sr * rng.uniform(4.0, 10.0))
        noise = _noise(item, n, sr, rng, babble)
        gain = 10 ** (item.level_db / 20) / (audio.rms(noise) + 1e-12)
        noise = (noise * gain).astype(np.float32)
        gain *= _limit(noise)
        noise = _scaled(noise, _limit(noise))
        audio.write(Path(out, item.split, "noise", item.name + ".wav"), noise, sr)
        record.update(noise=item.noise, noise_gain=gain, duration_s=n / sr,
                      files={"noise": f"{item.split}/noise/{item.name}.wav"})
        return record
    clean = _speech(_speech_paths(item, Path(cache)), sr, rng)
    if item.room:
        clean = _reverberate(clean, item.room, sr)
    noise = _noise(item, len(clean), sr, rng, babble)
    speech_gain = 10 ** (item.level_db / 20) / (audio.rms(clean) + 1e-12)
    clean = (clean * speech_gain).astype(np.float32)
    # scale the noise for the drawn SNR, in float64, then fix both as float32
    noise_gain = np.sqrt(np.sum(np.square(clean, dtype=np.float64))
                         / (np.sum(np.square(noise, dtype=np.float64)) * 10 ** (item.snr_db / 10)))
    noise = (noise * noise_gain).astype(np.float32)
    peak = _limit(clean + noise)
    clean, noise = _scaled(clean, peak), _scaled(noise, peak)
    noisy = clean + noise  # float32: noisy == clean + noise exactly
    names = {"noisy": noisy, "clean": clean, "noise": noise}
    files = {}
    for role, x in names.items():
        if item.split == "train" and role == "noise":
            continue  # train pairs keep clean for a supervised reference; noise is implied
        rel = f"{item.split}/{role}/{item.name}.wav"
        audio.write(Path(out, rel), x, sr)
        files[role] = rel
    record.update(noise=item.noise, speech_gain=float(speech_gain * peak),
                  noise_gain=float(noise_gain * peak), duration_s=len(noisy) / sr, files=files)
    return record


def _reverberate(x: np.ndarray, room: dict, sr: int) -> np.ndarray:
    """``x`` as heard at the microphone of a simulated shoebox room (image source method,
    pyroomacoustics), cut to ``x``'s length: the reverberant speech is the target."""
    import pyroomacoustics as pra

    absorption, order = pra.inverse_sabine(room["rt60"], room["dims"])
    shoebox = pra.ShoeBox(room["dims"], fs=sr, materials=pra.Material(absorption),
                          max_order=min(order, 40))
    shoebox.add_source(room["source"])
    shoebox.add_microphone(room["mic"])
    shoebox.compute_rir()
    rir = np.asarray(shoebox.rir[0][0], np.float64)
    n = len(x) + len(rir) - 1
    y = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(rir, n), n)[: len(x)]
    return y.astype(np.float32)


def _limit(x: np.ndarray, ceiling: float = 0.95) -> float:
    """Gain that keeps the peak at or below ``ceiling``: 1 unless it would clip."""
    peak = float(np.abs(x).max()) if x.size else 0.0
    return ceiling / peak if peak > ceiling else 1.0


def _scaled(x: np.ndarray, gain: float) -> np.ndarray:
    return x if gain == 1.0 else (x * np.float32(gain)).astype(np.float32)


# --- sounds (FUSS-style) ---------------------------------------------------------------


def _render_sounds(args) -> dict:
    split, name, seed, out, sr, pool, speech_files, clip_s = args
    rng = np.random.default_rng(seed)
    n = int(clip_s * sr)
    k = int(rng.integers(1, 5))
    sources, record_sources = [], []
    for j in range(k):
        if j > 0 and speech_files and rng.random() < 0.3:
            origin = ("speech", speech_files[int(rng.integers(len(speech_files)))])
        else:
            origin = pool[int(rng.integers(len(pool)))]
        x = _load(origin[1], sr)
        if audio.rms(x) < 1e-5:
            x = _generated_noise("pink", n, sr, rng, [])
            origin = ("generated", "pink")
        s = np.zeros(n, np.float32)
        if j == 0:  # background: the whole clip
            s[:] = _fit(x, n, rng)
        else:  # foreground event at a random place
            length = min(len(x), int(sr * rng.uniform(0.5, clip_s * 0.6)))
            start = int(rng.integers(0, n - length + 1))
            s[start:start + length] = x[:length]
        level = float(rng.uniform(-35, -20)) if j == 0 else float(rng.uniform(-30, -15))
        active = s[np.abs(s) > 0]
        s = (s * 10 ** (level / 20) / (audio.rms(active) + 1e-12)).astype(np.float32)
        sources.append(s)
        source_file = origin[1] if origin[0] != "speech" else Path(origin[1]).name
        record_sources.append({"source_package": origin[0], "source_file": source_file,
                               "level_db": level})
    peak = _limit(np.sum(sources, 0))
    sources = [_scaled(s, peak) for s in sources]
    mixture = np.zeros(n, np.float32)
    for s in sources:
        mixture += s
    files = {"mixture": f"{split}/mixture/{name}.wav", "sources": []}
    audio.write(Path(out, files["mixture"]), mixture, sr)
    for j, s in enumerate(sources):
        rel = f"{split}/sources/{name}/s{j}.wav"
        audio.write(Path(out, rel), s, sr)
        files["sources"].append(rel)
    return {"split": split, "name": name, "role": "mixture", "n_sources": k,
            "sources": record_sources, "gain": peak, "duration_s": clip_s, "files": files}


# --- build -----------------------------------------------------------------------------


def build(
    out: str | os.PathLike,
    size: str = "tiny",
    seed: int = 0,
    sample_rate: int = 16000,
    kind: str = "speech",
    snr_range: tuple[float, float] = (-5.0, 15.0),
    workers: int | None = None,
    progress: Callable[[str], None] = lambda msg: None,
    sources: str | os.PathLike | None = None,
) -> Path:
    """Build the built-in corpus into ``out`` and return the manifest's path.

    Args:
        sources: instead of TTS and installed Debian packages, a folder of recordings:
            ``speech/ENGINE/VOICE/*`` for each voice of the size and ``noise/PACKAGE/*``
            for each noise package (the unit tests' ``tests/data``). Same plan, same
            splits; no package is needed.
    Raises:
        CorpusError: missing Debian packages, or bad arguments.
    """
    spec = _size(size)
    _check_build(size, kind, sample_rate, snr_range, sources)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.jsonl").exists():
            raise CorpusError(f"{out} exists and is not a wildmix corpus; choose another folder")
        for split in SPLITS:  # rebuild from scratch: no stale files from another size
            shutil.rmtree(out / split, ignore_errors=True)
    workers = workers or os.cpu_count() or 1
    out.mkdir(parents=True, exist_ok=True)
    sources = str(sources) if sources else None
    items = _plan_speech(spec, seed, snr_range, sources)
    with tempfile.TemporaryDirectory(prefix="wildmix-tts-") as cache:
        _synthesise(items, Path(cache), workers, progress)
        speech = {split: sorted({p for it in items if it.split == split
                                 for p in _speech_paths(it, Path(cache))}) for split in SPLITS}
        if kind == "speech":
            progress(f"mixing {len(items)} clips")
            jobs = [(it, str(out), sample_rate, cache, speech[it.split][:40]) for it in items]
            records = _run_parallel(_render_speech, jobs, workers)
        else:
            records = _build_sounds(spec, speech, seed, out, sample_rate, workers, progress,
                                    sources)
    header = {"corpus": "wildmix-builtin", "kind": kind, "size": size, "seed": seed,
              "sample_rate": sample_rate, "snr_range_db": list(snr_range)}
    if sources:
        header["sources"] = sources
    return _write_manifest(out, header, records)


def _check_build(size, kind, sample_rate, snr_range, sources) -> None:
    if kind not in KINDS:
        raise CorpusError(f"kind must be 'speech' or 'sounds', got {kind!r}")
    if not 4000 <= sample_rate <= 96000:
        raise CorpusError(f"sample rate must be between 4000 and 96000 Hz, got {sample_rate}")
    if snr_range[0] > snr_range[1]:
        raise CorpusError(f"SNR range {snr_range} is empty")
    if sources:
        if not Path(sources).is_dir():
            raise CorpusError(f"{sources}: no such folder of corpus sources")
        return
    spec = _size(size)
    if "asterisk" in spec.engines or spec.room_fraction:  # G.722 prompts, simulated rooms
        require("corpus", EXTRAS["corpus"], f"the '{size}' corpus")
    missing = missing_packages(size, kind)
    if missing:
        raise CorpusError(
            "missing Debian packages for the built-in corpus: " + " ".join(missing)
            + "; install them with `sudo apt-get install --no-install-recommends "
            + " ".join(missing) + "` or run `make corpus`")


def _write_manifest(out: Path, header: dict, records: list[dict]) -> Path:
    for r in records:
        _annotate(r)
    manifest = out / "manifest.jsonl"
    with audio.atomic_path(manifest) as tmp, open(tmp, "w") as f:
        f.write(json.dumps({"header": header}) + "\n")
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    return manifest


def _build_sounds(spec, speech, seed, out, sr, workers, progress, sources=None) -> list[dict]:
    counts = {"train": spec.items["train"], "valid": spec.items["valid"],
              "test": spec.items["test"]}
    packages = tuple(dict.fromkeys(spec.noise_packages + ("bucklespring-data",
                                                          "sonic-pi-samples")))
    files = _noise_files(packages, spec.noise_files_per_package, sources)
    order = np.random.default_rng([seed, 11]).permutation(len(files))
    cut1, cut2 = int(0.7 * len(order)), int(0.85 * len(order))
    parts = {"train": order[:cut1], "valid": order[cut1:cut2], "test": order[cut2:]}
    jobs = []
    for si, split in enumerate(SPLITS):
        pool = [files[i] for i in sorted(parts[split])]
        for i in range(counts[split]):
            jobs.append((split, f"{split}_{i:05d}", [seed, 12, si, i], str(out), sr, pool,
                         speech[split], 6.0))
    progress(f"mixing {len(jobs)} sound clips")
    return _run_parallel(_render_sounds, jobs, workers)


def _annotate(record: dict) -> None:
    """Add source package and licence to a manifest record."""
    voice = record.get("voice", "")
    if voice:
        engine = voice.split(":", 1)[0]
        pkgs = ENGINE_PACKAGES[engine]
        record["speech_package"] = pkgs[0] if engine != "festival" else ", ".join(pkgs)
        record["speech_licence"] = "; ".join(PACKAGES[p].licence for p in pkgs[:1])
    noise = record.get("noise", "")
    if noise:
        source, _, path = noise.partition(":")
        record["noise_package"] = source
        record["noise_file"] = path
        record["noise_licence"] = (PACKAGES[source].licence if source in PACKAGES
                                   else "generated by wildmix (no licence restrictions)")
    for s in record.get("sources", []):
        p = s["source_package"]
        s["licence"] = PACKAGES[p].licence if p in PACKAGES else "see speech voices"
