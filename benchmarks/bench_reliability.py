"""Fault campaign: wildmix used as a hostile but fair user would, counted in one table.

    python benchmarks/bench_reliability.py [--kills 20] [--seed 0] [--work DIR]

1. A folder salted with bad inputs (zero-byte, random bytes, text, NaN, Inf, silent, 10 ms,
   clipped, 8-channel 48 kHz, 24-bit stereo FLAC, truncated, a non-ASCII name, a dangling
   link, a folder named like a WAV) beside good files, and a separate 30-minute file. It
   runs ``data check``, ``enhance``, ``train``, ``adapt`` and ``evaluate`` on it.
2. SIGKILLs a training run at random moments (a third of them while a checkpoint is being
   written, a third right after a validation), rerunning after each.
3. Two concurrent processes on one run folder (train + train, train + adapt) and on one
   enhance output folder.
4. A pickle-bomb checkpoint through ``--model``, ``--init``, ``--teacher`` and ``--from``.
5. With ``--profiles VENV...`` (``make bench-reliability`` passes the core-only and the
   core + eval venvs): ``scripts/profile_smoke.py`` in each, what a user of that install
   does, and every command that needs a missing extra, which must be refused at once.

Every command runs as a separate ``python -m wildmix`` process. The table counts what must
be zero; the script exits 1 when any of them is not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SR = 16000
PEAK_CHILD = ("import sys\nfrom pathlib import Path\nfrom wildmix.cli import main\n"
              "rc = main(sys.argv[1:])\n"
              "hwm = [l for l in Path('/proc/self/status').read_text().splitlines()"
              " if l.startswith('VmHWM:')]\n"
              "print('PEAK_KB', hwm[0].split()[1] if hwm else 0, file=sys.stderr)\n"
              "sys.exit(rc)\n")


class Tally:
    """Counters and the commands behind them."""

    def __init__(self):
        self.inputs = 0
        self.commands = 0
        self.tracebacks: list[str] = []
        self.crashes: list[str] = []
        self.nan_outputs: list[str] = []
        self.bad_outputs: list[str] = []
        self.corrupt: list[str] = []
        self.restarts: list[str] = []
        self.not_refused: list[str] = []
        self.bomb_ran = False
        self.profiles: dict[str, dict] = {}  # venv -> profile_smoke.py's counts
        self.kills_in_write = 0
        self.kills_after_valid = 0
        self.peak_mb = {}

    def run(self, argv: list[str], ok=(0,), peak=None, **kw) -> subprocess.CompletedProcess:
        """``python -m wildmix ARGV``; a traceback or an unexpected exit code is counted."""
        self.commands += 1
        cmd = ([sys.executable, "-c", PEAK_CHILD] if peak else
               [sys.executable, "-m", "wildmix"]) + argv
        result = subprocess.run(cmd, capture_output=True, text=True, **kw)
        label = "wildmix " + " ".join(argv[:2])
        if "Traceback" in result.stderr:
            self.tracebacks.append(f"{label}: {result.stderr.strip().splitlines()[-1]}")
        elif result.returncode not in ok:
            self.crashes.append(f"{label}: exit {result.returncode}: "
                                f"{result.stderr.strip()[-200:]}")
        if peak:
            kb = [line.split()[1] for line in result.stderr.splitlines()
                  if line.startswith("PEAK_KB")]
            self.peak_mb[peak] = int(kb[0]) / 1024 if kb else float("nan")
        return result


# --- 1. the salted folder ---------------------------------------------------------------


def _speechlike(rng, seconds: float, sr: int = SR) -> np.ndarray:
    """Harmonic tone bursts with a moving pitch: something a model can tell from noise."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 60 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = (np.sin(2 * np.pi * rng.uniform(1.5, 3) * t) > -0.2).astype(float)
    return (0.1 * x * envelope).astype(np.float32)


def build_salted(root: Path, rng) -> int:
    """``root/noisy``, ``root/clean`` (paired) and ``root/noise``; returns inputs tried."""
    noisy, clean, noise = (root / d for d in ("noisy", "clean", "noise"))
    for d in (noisy, clean, noise):
        d.mkdir(parents=True)
    for i in range(6):  # good pairs (with pauses a VAD can find), and noise-only clips
        pause = np.zeros(int(1.6 * SR), np.float32)
        s = np.concatenate([pause, _speechlike(rng, rng.uniform(2, 4)), pause])
        # quiet background noise: the WebRTC VAD of `--noise auto` takes louder broadband
        # noise for speech and would find no noise-only stretch
        n = (0.003 * rng.standard_normal(len(s))).astype(np.float32)
        sf.write(clean / f"good{i}.wav", s, SR, subtype="FLOAT")
        sf.write(noisy / f"good{i}.wav", s + n, SR, subtype="FLOAT")
        sf.write(noise / f"noise{i}.wav", 0.05 * rng.standard_normal(3 * SR), SR)
    s = _speechlike(rng, 3)
    bad = {
        "zero-byte.wav": b"",
        "random-bytes.wav": rng.bytes(5000),
        "text.wav": b"this is not audio\n" * 50,
    }
    for name, content in bad.items():
        (noisy / name).write_bytes(content)
    with_nan = s.copy()
    with_nan[100] = np.nan
    with_inf = s.copy()
    with_inf[200] = np.inf
    sf.write(noisy / "nan.wav", with_nan, SR, subtype="FLOAT")
    sf.write(noisy / "inf.wav", with_inf, SR, subtype="FLOAT")
    sf.write(noisy / "silent.wav", np.zeros(3 * SR, np.float32), SR)
    sf.write(noisy / "10ms.wav", s[: SR // 100], SR)
    sf.write(noisy / "clipped.wav", np.clip(8 * s, -1, 1), SR)
    multi = _speechlike(rng, 3, 48000)[:, None] * rng.uniform(0.2, 1, 8)[None]
    sf.write(noisy / "8ch-48k.wav", multi, 48000)
    stereo = _speechlike(rng, 3, 44100)[:, None] * np.array([[1.0, 0.5]])
    sf.write(noisy / "stereo-24bit.flac", stereo, 44100, subtype="PCM_24")
    sf.write(noisy / "whole.wav", s, SR)
    data = (noisy / "whole.wav").read_bytes()
    (noisy / "truncated.wav").write_bytes(data[: len(data) // 3])
    (noisy / "whole.wav").unlink()
    sf.write(noisy / "naïve Ωmega 声.wav", s + 0.02 * rng.standard_normal(len(s)), SR)
    (noisy / "dangling.wav").symlink_to(root / "no-such-file.wav")
    (noisy / "folder.wav").mkdir()
    for p in noisy.iterdir():  # every noisy file gets a clean partner for evaluate
        if not (clean / p.name).exists() and p.is_file():
            shutil.copy(p, clean / p.name)
    return sum(1 for _ in noisy.iterdir())


def write_long(path: Path, rng, minutes: float) -> None:
    """A long 16 kHz FLAC written in blocks (bounded memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
        for _ in range(int(minutes * 6)):
            f.write(_speechlike(rng, 10) + 0.03 * rng.standard_normal(10 * SR))


def check_outputs(tally: Tally, out: Path, source: Path) -> None:
    """Every output finite, with the rate, channels and length of its input."""
    for p in sorted(out.rglob("*.wav")):
        try:
            y, sr = sf.read(p, dtype="float32", always_2d=True)
        except Exception as e:  # an unreadable output is corrupt
            tally.corrupt.append(f"{p}: {e}")
            continue
        if not np.isfinite(y).all():
            tally.nan_outputs.append(str(p))
        src = source / p.relative_to(out)
        matches = [q for q in src.parent.glob(src.stem + ".*") if q.is_file()]
        if matches:
            i = sf.info(str(matches[0]))
            if (sr, y.shape[1], len(y)) != (i.samplerate, i.channels, i.frames):
                tally.bad_outputs.append(f"{p}: {sr} Hz x{y.shape[1]} {len(y)} frames, "
                                         f"input {i.samplerate} Hz x{i.channels} {i.frames}")


def stage_salted(tally: Tally, work: Path, rng) -> None:
    salted = work / "salted"
    tally.inputs += build_salted(salted, rng)
    write_long(work / "long" / "30min.flac", rng, 30)
    tally.inputs += 1
    noisy = str(salted / "noisy")
    tally.run(["data", "check", noisy, "--noise", "auto"])
    tally.run(["enhance", noisy, "--out", str(work / "enhanced"), "--no-progress"], ok=(0, 1))
    check_outputs(tally, work / "enhanced", salted / "noisy")
    tally.run(["enhance", str(work / "long"), "--out", str(work / "long-enhanced"),
               "--no-progress"], peak="30-minute file")
    check_outputs(tally, work / "long-enhanced", work / "long")
    tiny = ["--preset", "tiny", "--batch-size", "2", "--segment-seconds", "1",
            "--valid-every", "10", "--no-progress"]
    tally.run(["train", "--data", noisy, "--noise", str(salted / "noise"), "--out",
               str(work / "runs" / "salted"), "--max-steps", "20", *tiny])
    tally.run(["train", "--data", noisy, "--noise", "auto", "--out",
               str(work / "runs" / "salted-auto"), "--max-steps", "10", *tiny])
    tally.run(["adapt", "--data", noisy, "--out", str(work / "runs" / "adapted"),
               "--max-steps", "10", "--no-progress"])
    tally.run(["evaluate", "--data", str(salted), "--model", str(work / "runs" / "salted"),
               "default", "--out", str(work / "report"), "--no-progress"])


# --- 2. SIGKILL during training -----------------------------------------------------------


def _last_step(tally: Tally, run: Path) -> int | None:
    from wildmix import models

    if not (run / "last.pt").exists():
        return None
    try:
        return int(models.load_checkpoint(run / "last.pt")["step"])
    except Exception as e:  # a checkpoint the next run cannot read
        tally.corrupt.append(f"{run / 'last.pt'}: {e}")
        return None


def _kill_when(proc, run: Path, mode: str, rng: random.Random, limit: float = 20.0) -> bool:
    """SIGKILL ``proc``'s group: at a random moment, while a checkpoint is being written
    (a temporary file is present), or right after a validation (a new last.pt). Returns
    whether the chosen moment was hit (else it was killed at the time limit)."""
    start = time.monotonic()
    deadline = start + (rng.uniform(1.0, 8.0) if mode == "random" else limit)
    seen = (run / "last.pt").stat().st_mtime_ns if (run / "last.pt").exists() else 0
    hit = mode == "random"
    while time.monotonic() < deadline and proc.poll() is None:
        if mode == "write" and run.is_dir() and any(p.endswith(".tmp") for p in
                                                    os.listdir(run)):
            hit = True
            break
        if mode == "valid" and (run / "last.pt").exists() and \
                (run / "last.pt").stat().st_mtime_ns != seen:
            hit = True
            break
        time.sleep(0.0005 if mode == "write" else 0.005)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it ended on its own first (its whole group gone)
        pass
    proc.wait()
    return hit


def stage_kills(tally: Tally, work: Path, kills: int, rng: random.Random) -> None:
    run = work / "runs" / "killed"
    argv = [sys.executable, "-m", "wildmix", "train", "--data", str(work / "salted" / "noisy"),
            "--noise", str(work / "salted" / "noise"), "--out", str(run), "--preset", "tiny",
            "--batch-size", "2", "--segment-seconds", "1", "--max-steps", "100000",
            "--valid-every", "15", "--no-progress"]
    modes = ["random", "write", "valid"]
    for k in range(kills):
        before = _last_step(tally, run)
        log = work / f"kill{k}.log"
        with open(log, "w") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            mode = modes[k % 3]
            hit = _kill_when(proc, run, mode, rng)
        tally.commands += 1
        text = log.read_text()
        if "Traceback" in text:
            tally.tracebacks.append(f"killed run {k}: {text.strip().splitlines()[-1]}")
        tally.kills_in_write += hit and mode == "write"
        tally.kills_after_valid += hit and mode == "valid"
        after = _last_step(tally, run)
        if before and (after is None or after < before):
            tally.restarts.append(f"run {k}: last.pt went from step {before} to {after}")
        elif before and "resuming" in text and f"from step {before}" not in text:
            tally.restarts.append(f"run {k}: resumed, but not from step {before}")
    # a last rerun to the end: it must resume and leave nothing behind
    last = _last_step(tally, run) or 0
    result = tally.run([*argv[3:argv.index("--max-steps")], "--max-steps", str(last + 5),
                        "--valid-every", "5", "--no-progress"])
    if last and f"from step {last}" not in result.stderr:
        tally.restarts.append(f"final rerun did not resume from step {last}")


# --- 3. concurrent processes, 4. the pickle bomb ---------------------------------------


def _refused(tally: Tally, result, what: str, needle: str) -> None:
    err = result.stderr.strip()
    if result.returncode != 2 or needle not in err or len(err.splitlines()) != 1:
        tally.not_refused.append(f"{what}: exit {result.returncode}: {err[-200:]}")


def stage_concurrent(tally: Tally, work: Path) -> None:
    run = work / "runs" / "shared"
    common = ["--data", str(work / "salted" / "noisy"), "--out", str(run), "--no-progress"]
    first = subprocess.Popen([sys.executable, "-m", "wildmix", "train", *common, "--noise",
                              str(work / "salted" / "noise"), "--preset", "tiny",
                              "--max-steps", "100000"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while not (run / ".wildmix.lock").exists() and first.poll() is None:
            time.sleep(0.05)
        needle = f"PID {first.pid}"
        _refused(tally, tally.run(["train", *common, "--noise", str(work / "salted" / "noise"),
                                   "--preset", "tiny"], ok=(2,)), "second train", needle)
        _refused(tally, tally.run(["adapt", *common], ok=(2,)), "adapt beside train", needle)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    tally.run(["train", *common, "--noise", str(work / "salted" / "noise"), "--preset", "tiny",
               "--max-steps", "1"])  # after the kill: takes the lock over, finishes
    out = work / "shared-enhanced"
    first = subprocess.Popen([sys.executable, "-m", "wildmix", "enhance", str(work / "long"),
                              "--out", str(out), "--no-progress"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while not (out / ".wildmix.lock").exists() and first.poll() is None:
            time.sleep(0.05)
        _refused(tally, tally.run(["enhance", str(work / "salted" / "noisy"), "--out",
                                   str(out), "--no-progress"], ok=(2,)),
                 "second enhance", f"PID {first.pid}")
    finally:
        first.wait()


class _Bomb:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def stage_bomb(tally: Tally, work: Path) -> None:
    marker = work / "BOMB-EXPLODED"
    bomb = work / "bomb.pt"
    torch.save({"format": "wildmix-checkpoint", "model_name": _Bomb(str(marker)),
                "model_args": {}, "state_dict": {}, "sample_rate": SR}, bomb)
    noisy, b = str(work / "salted" / "noisy"), str(bomb)
    for argv in (["enhance", "--model", b, noisy, "--out", str(work / "bomb-out")],
                 ["enhance", b, noisy, "--out", str(work / "bomb-out")],
                 ["evaluate", "--data", str(work / "salted"), "--model", b, "--out",
                  str(work / "bomb-report")],
                 ["train", "--data", noisy, "--noise", "auto", "--init", b, "--out",
                  str(work / "runs" / "bomb-init")],
                 ["train", "--data", noisy, "--strategy", "remixit", "--teacher", b,
                  "--out", str(work / "runs" / "bomb-teacher")],
                 ["adapt", "--data", noisy, "--from", b, "--out", str(work / "runs" / "b")]):
        _refused(tally, tally.run([*argv, "--no-progress"], ok=(2,)),
                 " ".join(argv[:3]), "holds Python objects")
    tally.bomb_ran = marker.exists()


def stage_profiles(tally: Tally, work: Path, venvs: list[str]) -> None:
    """scripts/profile_smoke.py in each venv, its profile named after the venv's suffix."""
    smoke = Path(__file__).resolve().parent.parent / "scripts" / "profile_smoke.py"
    for venv in venvs:
        profile = Path(venv).name.rsplit("-", 1)[-1]
        result = subprocess.run([str(Path(venv) / "bin" / "python"), str(smoke), "--profile",
                                 profile, "--work", str(work / "profiles"), "--json"],
                                capture_output=True, text=True)
        tally.commands += 1
        try:
            tally.profiles[profile] = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            tally.crashes.append(f"profile_smoke.py --profile {profile}: exit "
                                 f"{result.returncode}: {result.stderr.strip()[-300:]}")


# --- the table ------------------------------------------------------------------------


def leftovers(tally: Tally, work: Path) -> None:
    """Temporary files left anywhere, and checkpoints that do not load."""
    from wildmix import models

    for p in work.rglob("*.tmp"):
        tally.corrupt.append(f"left over: {p}")
    for p in work.rglob("*.pt"):
        if p.name in ("best.pt", "last.pt"):
            try:
                models.load_checkpoint(p)
            except Exception as e:
                tally.corrupt.append(f"{p}: {e}")


def report(tally: Tally, seconds: float, kills: int) -> int:
    rows = [
        ("inputs tried (salted files + a 30-minute file)", tally.inputs, None),
        ("commands run", tally.commands, None),
        ("tracebacks", len(tally.tracebacks), 0),
        ("unexpected exit codes", len(tally.crashes), 0),
        ("NaN/Inf outputs", len(tally.nan_outputs), 0),
        ("outputs not matching the input's rate/channels/length", len(tally.bad_outputs), 0),
        ("corrupt or leftover files", len(tally.corrupt), 0),
        (f"SIGKILLs ({tally.kills_in_write} during a checkpoint write, "
         f"{tally.kills_after_valid} right after a validation)", kills, None),
        ("resumes that restarted from 0", len(tally.restarts), 0),
        ("concurrent or unsafe uses not refused in one line", len(tally.not_refused), 0),
        ("pickle-bomb payloads executed", int(tally.bomb_ran), 0),
    ]
    rows += [(f"peak memory, enhance of the {k} (MB)", f"{v:.0f}", None)
             for k, v in tally.peak_mb.items()]
    for profile, counts in tally.profiles.items():
        rows += [(f"install profile '{profile}': smoke checks run", counts["checks"], None),
                 (f"install profile '{profile}': smoke checks failed", len(counts["failed"]),
                  0),
                 (f"install profile '{profile}': commands needing a missing extra not "
                  "refused at once in one line", len(counts["not_refused"]), 0)]
    print("\n| check | result |\n|---|---|")
    failed = False
    for name, value, target in rows:
        bad = target is not None and value != target
        failed |= bad
        print(f"| {name} | {value}{'  **FAILED**' if bad else ''} |")
    print(f"\nrun time: {seconds / 60:.1f} min")
    for title, items in (("tracebacks", tally.tracebacks), ("exit codes", tally.crashes),
                         ("NaN", tally.nan_outputs), ("outputs", tally.bad_outputs),
                         ("files", tally.corrupt), ("resumes", tally.restarts),
                         ("refusals", tally.not_refused),
                         *((f"profile {k}", c["failed"] + c["not_refused"])
                           for k, c in tally.profiles.items())):
        for item in items:
            print(f"  {title}: {item}")
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", help="working folder (default: a temporary one, removed)")
    parser.add_argument("--profiles", nargs="*", default=[], metavar="VENV",
                        help="venvs of install profiles, named .venv-PROFILE (core, eval)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="wildmix-faults-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        stages = [("salted folder", lambda: stage_salted(tally, work,
                                                         np.random.default_rng(args.seed))),
                  ("SIGKILL", lambda: stage_kills(tally, work, args.kills,
                                                  random.Random(args.seed))),
                  ("concurrent", lambda: stage_concurrent(tally, work)),
                  ("pickle bomb", lambda: stage_bomb(tally, work)),
                  ("install profiles", lambda: stage_profiles(tally, work, args.profiles))]
        for name, stage in stages:
            print(f"[{time.perf_counter() - start:5.0f} s] {name}", file=sys.stderr, flush=True)
            stage()
        leftovers(tally, work)
    return report(tally, time.perf_counter() - start, args.kills)


if __name__ == "__main__":
    sys.exit(main())
