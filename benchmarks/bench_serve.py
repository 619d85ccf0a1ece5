"""Load on `wildmix serve`: concurrent enhance requests against one real server process.

    python benchmarks/bench_serve.py [--requests 20] [--seconds 10] [--model default]

Starts ``python -m wildmix serve`` on a free port, sends ``--requests`` POST /api/enhance
at once (one thread each), every one a different file of committed speech in noise
(``--seconds`` long, 16 kHz), checks every answer (status, length, rate, and equal to what
the Enhancer gives the same file here), and prints the median and maximum latency and the
server's peak memory (VmHWM). Exits 1 when any answer is wrong.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from wildmix import audio
from wildmix.enhance import Enhancer


def files(count: int, seconds: float, sr: int = 16000) -> list[bytes]:
    """``count`` different WAV files of committed speech in white noise at 0..10 dB."""
    folder = Path(__file__).parent.parent / "tests" / "data" / "speech"
    speech = np.concatenate([audio.read(p, sr) for p in sorted(folder.rglob("*.flac"))])
    out = []
    for k in range(count):
        rng = np.random.default_rng(k)
        start = int(rng.integers(len(speech)))
        clean = np.roll(speech, -start)[: int(seconds * sr)]
        clean = np.tile(clean, int(np.ceil(seconds * sr / len(clean))))[: int(seconds * sr)]
        noise = rng.standard_normal(len(clean)).astype(np.float32)
        noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10 ** (rng.uniform(0, 10)
                                                                          / 10))
        buffer = io.BytesIO()
        sf.write(buffer, 0.5 * (clean + noise), sr, subtype="FLOAT", format="WAV")
        out.append(buffer.getvalue())
    return out


def post(url: str, data: bytes, model: str) -> tuple[int, bytes, float]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}"
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; "
            f"filename=\"x.wav\"\r\nContent-Type: audio/wav\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, body, {"Content-Type":
                                                 f"multipart/form-data; boundary={boundary}"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as answer:
            return answer.status, answer.read(), time.perf_counter() - start
    except urllib.error.HTTPError as e:
        return e.code, e.read(), time.perf_counter() - start


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--model", default="default")
    args = parser.parse_args(argv)
    inputs = files(args.requests, args.seconds)
    enhancer = Enhancer.from_checkpoint(args.model, device="cpu")
    expected = [enhancer.enhance(sf.read(io.BytesIO(d), dtype="float32")[0], 16000)
                for d in inputs]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as runs:
        server = subprocess.Popen([sys.executable, "-m", "wildmix", "serve", "--port",
                                   str(port), "--runs", runs], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            server.stdout.readline()  # its address: listening from here on
            time.sleep(1.0)
            url = f"http://127.0.0.1:{port}/api/enhance"
            post(url, inputs[0], args.model)  # loads the model once, as a first user would
            start = time.perf_counter()
            with ThreadPoolExecutor(args.requests) as pool:
                answers = list(pool.map(lambda d: post(url, d, args.model), inputs))
            wall = time.perf_counter() - start
            memory = peak_mb(server.pid)
        finally:
            server.terminate()
            server.wait(30)
    wrong = []
    for k, ((status, body, _), want) in enumerate(zip(answers, expected, strict=True)):
        if status != 200:
            wrong.append(f"request {k}: status {status}: {body[:200]!r}")
            continue
        got, sr = sf.read(io.BytesIO(body), dtype="float32")
        if sr != 16000 or got.shape != want.shape or not np.allclose(got, want, atol=1e-5):
            wrong.append(f"request {k}: {got.shape} at {sr} Hz, not the Enhancer's output")
    latencies = [t for _, _, t in answers]
    print(f"\n{args.requests} concurrent POST /api/enhance of {args.seconds:.0f} s files "
          f"(16 kHz), model {args.model}, one server process on this machine\n")
    print("| requests | answers correct | median latency s | max latency s | all done in s "
          "| server peak memory MB |\n|---|---|---|---|---|---|")
    print(f"| {args.requests} | {args.requests - len(wrong)} | "
          f"{statistics.median(latencies):.2f} | {max(latencies):.2f} | {wall:.2f} | "
          f"{memory:.0f} |")
    for line in wrong:
        print("  WRONG", line)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
