"""A local web page and its HTTP API: enhance audio by ear, compare models, adapt to your
recordings (the ``serve`` extra: Starlette, uvicorn, python-multipart).

The page (``wildmix/web/``, served by this module: no CDN, it works offline) uses the same
API as any client::

    GET  /                    the page
    GET  /api/models          [{"name", "kind": "shipped" | "run" | "peer", "label"}]
    POST /api/enhance         multipart: audio (a file), model (optional, a name of
                              /api/models), dnsmos (optional, 1: score input and output);
                              answers the enhanced WAV (float), with the input's length, rate
                              and channels; with dnsmos=1 and the 'mos' extra, the header
                              X-Wildmix-DNSMOS (JSON)
    POST /api/adapt           multipart: audio (one or more files, or a .zip), minutes,
                              max_steps (optional); starts `wildmix adapt` on them: {"job"}
    GET  /api/jobs            every adaptation started here, newest first
    GET  /api/jobs/{job}      {"state": running | done | failed, "step", "max_steps",
                              "criterion", "seconds_left", "error", "model"}

Errors are JSON ``{"error": "..."}`` with a 4xx status (413: over the upload limit). Uploaded
names never become paths: an enhancement works in memory, an adaptation's recordings are
stored under numbered names in a folder of its own; each model is loaded once.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

from wildmix import audio, mos, peers

log = logging.getLogger("wildmix")

WEB = Path(__file__).parent / "web"
# enhancement models in wildmix/weights
SHIPPED = ("default", "causal", "v4", "v3", "v2", "v1", "causal-v2", "causal-v1")
MAX_SECONDS = 600.0  # longest audio /api/enhance takes (10 minutes)
ADAPT_MINUTES = (1.0, 60.0)  # the range of an adaptation's budget from the page
JOB_FILE = "web-job.json"  # marks a run folder as an adaptation started from the page


class RequestError(Exception):
    """A client error: one line for the JSON answer, and its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --- models ---------------------------------------------------------------------------------


class Models:
    """The models a page can choose, each loaded once (thread-safe)."""

    def __init__(self, runs: Path | None):
        self.runs = runs
        self._loaded: dict[str, object] = {}
        self._lock = threading.Lock()

    def listing(self) -> list[dict]:
        found = [{"name": n, "kind": "shipped", "label": f"{n} (shipped)"} for n in SHIPPED]
        for run in self._runs():
            found.append({"name": f"run:{run.name}", "kind": "run",
                          "label": f"{run.name} (adapted)"})
        ready = peers.available()
        found += [{"name": p, "kind": "peer", "label": f"{p} (peer)"}
                  for p in peers.NAMES if ready[p]]
        return found

    def _runs(self) -> list[Path]:
        if not self.runs or not self.runs.is_dir():
            return []
        from wildmix.lock import LOCK_NAME

        # a run still training is offered once it is done: loaded earlier, its weights
        # would be cached half-trained
        return sorted((d for d in self.runs.iterdir() if d.is_dir() and
                       not (d / LOCK_NAME).exists() and
                       ((d / "best.pt").is_file() or (d / "last.pt").is_file())),
                      key=lambda d: d.name)

    def method(self, name: str):
        """``(x (T, C), sample_rate) -> (T, C)`` of a listed model."""
        if name in peers.NAMES:
            if not peers.available()[name]:
                raise RequestError(f"the peer {name!r} is not installed here")
            return lambda x, sr: peers.enhance(name, x, sr)
        if name in SHIPPED:
            path = name
        elif name.startswith("run:") and name[4:] in {r.name for r in self._runs()}:
            path = str(self.runs / name[4:])
        else:
            raise RequestError(f"unknown model {name!r}; GET /api/models lists them")
        with self._lock:
            if name not in self._loaded:
                from wildmix.enhance import Enhancer

                self._loaded[name] = (Enhancer.from_checkpoint(path, device="cpu"),
                                      threading.Lock())
            enhancer, lock = self._loaded[name]

        def run(x, sr):
            with lock:  # one request at a time per model; the others wait their turn
                return enhancer.enhance(x.T, sr).T

        return run


# --- audio in and out -----------------------------------------------------------------------


def decode(data: bytes, max_seconds: float = MAX_SECONDS) -> tuple[np.ndarray, int]:
    """Uploaded bytes -> ``(x (T, C) float32, sample_rate)``.

    Raises:
        RequestError: empty, unreadable, too long (413), silent, NaN/Inf.
    """
    import soundfile as sf

    if not data:
        raise RequestError("the file is empty")
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:
        reason = audio.first_line(e).rsplit(": ", 1)[-1]  # without the buffer's repr
        raise RequestError(f"not a readable audio file ({reason})") from None
    if len(x) == 0:
        raise RequestError("the file holds no samples")
    if len(x) > max_seconds * sr:
        raise RequestError(f"the audio is {len(x) / sr:.0f} s long; this server takes at most "
                           f"{max_seconds:.0f} s", 413)
    problem = audio.content_problem(x)
    if problem:
        raise RequestError(f"the audio {problem}")
    return x, sr


def encode(x: np.ndarray, sample_rate: int) -> bytes:
    """``(T, C)`` -> WAV bytes (32-bit float)."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, x, sample_rate, subtype="FLOAT", format="WAV")
    return buffer.getvalue()


_DNSMOS_LOCK = threading.Lock()  # one scoring at a time: bounded memory under load


def enhance_bytes(models: Models, data: bytes, model: str, max_seconds: float = MAX_SECONDS,
                  dnsmos: bool = False) -> tuple[bytes, dict | None]:
    """The enhanced WAV of an uploaded file, and DNSMOS of input and output (``dnsmos`` and
    the 'mos' extra installed; else None)."""
    x, sr = decode(data, max_seconds)
    y = np.asarray(models.method(model)(x, sr), np.float32).reshape(x.shape)
    if not np.isfinite(y).all():
        raise RequestError(f"{model} gave NaN or Inf on this file", 422)
    scores = None
    if dnsmos and mos.available():
        with _DNSMOS_LOCK:
            scores = {"noisy": mos.dnsmos(x.mean(1), sr),
                      "enhanced": mos.dnsmos(y.mean(1), sr)}
    return encode(y, sr), scores


# --- adaptation jobs --------------------------------------------------------------------------


class Jobs:
    """`wildmix adapt` runs started from the page, each a process of its own writing a run
    folder under ``runs``; their state is read back from the folder, so that a page reload
    (or a server restart) finds them."""

    def __init__(self, runs: Path):
        self.runs = runs
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def start(self, files: list[tuple[str, bytes]], minutes: float, max_steps: int | None,
              max_bytes: int) -> str:
        job = time.strftime("adapt-%Y%m%d-%H%M%S-") + os.urandom(3).hex()
        data = self.runs / ".uploads" / job
        try:
            _check_uploads(_store_uploads(files, data, max_bytes), data)
        except RequestError:
            shutil.rmtree(data, ignore_errors=True)  # a refused upload leaves nothing
            raise
        count = len(list(data.iterdir()))
        run = self.runs / job
        run.mkdir(parents=True)
        argv = [sys.executable, "-m", "wildmix", "adapt", "--data", str(data), "--out",
                str(run), "--max-minutes", f"{minutes:g}", "--no-progress"]
        if max_steps:
            argv += ["--max-steps", str(max_steps)]
        audio.write_json(run / JOB_FILE, {"job": job, "files": count, "minutes": minutes,
                                           "started": time.time(), "argv": argv[3:]})
        with open(run / "web-job.log", "wb") as logfile, self._lock:
            self._procs[job] = subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        log.info("adaptation %s started on %d files", job, count)
        return job

    def listing(self) -> list[dict]:
        runs = sorted((d for d in self.runs.glob("adapt-*") if (d / JOB_FILE).is_file()),
                      key=lambda d: d.name, reverse=True)
        return [self.status(d.name) for d in runs]

    def status(self, job: str) -> dict:
        run = self.runs / job
        if "/" in job or job.startswith(".") or not (run / JOB_FILE).is_file():
            raise RequestError(f"no adaptation {job!r}", 404)
        meta = json.loads((run / JOB_FILE).read_text())
        proc = self._procs.get(job)
        code = proc.poll() if proc else _exit_code(run)
        state = "running" if code is None else ("done" if code == 0 else "failed")
        rows = _log_rows(run)
        steps = [r for r in rows if "loss" in r]
        valid = [r for r in rows if any(k.startswith("valid_") for k in r)]
        config = _read_json(run / "config.json")
        max_steps = config.get("max_steps")
        out = {"job": job, "state": state, "files": meta["files"], "step": 0,
               "max_steps": max_steps, "criterion": None, "seconds_left": None,
               "model": f"run:{job}" if state == "done" else None, "error": None}
        if steps:
            last = steps[-1]
            out["step"] = last["step"]
            rate = last.get("steps_per_s") or 0.0
            left = [meta["minutes"] * 60 - last["time_s"]]
            if max_steps and rate > 0:
                left.append((max_steps - last["step"]) / rate)
            out["seconds_left"] = max(0.0, min(left)) if state == "running" else 0.0
        if valid:
            key = next((k for k in ("valid_agreement", "valid_sisnri", "valid_dnsmos_ovr")
                        if k in valid[-1]), None)
            out["criterion"] = {"name": key, "value": valid[-1][key]} if key else None
        if state == "failed":
            out["error"] = _last_error(run)
        return out


def _check_uploads(count: int, folder: Path) -> None:
    """At least one usable recording among the stored uploads, else a 400 saying why."""
    from wildmix import data as wdata

    if not count:
        raise RequestError("no audio file among the uploads (or in the .zip)")
    try:
        wdata.index_folder(folder)
    except wdata.DataError as e:
        raise RequestError(str(e)) from None


def _store_uploads(files: list[tuple[str, bytes]], folder: Path, max_bytes: int) -> int:
    """Uploaded files (or the members of uploaded .zip files) as ``folder/NNNN.ext``: only
    the extension of an audio file's name is kept, never the name itself."""
    folder.mkdir(parents=True, exist_ok=True)
    count, total = 0, 0

    def keep(name: str, content: bytes) -> None:
        nonlocal count, total
        suffix = Path(name).suffix.lower()
        if suffix not in audio.AUDIO_EXTENSIONS or not content:
            return
        total += len(content)
        if total > max_bytes:
            raise RequestError(f"the uploads hold more than {max_bytes / 1e6:.0f} MB", 413)
        (folder / f"{count:04d}{suffix}").write_bytes(content)
        count += 1

    for name, content in files:
        if Path(name).suffix.lower() == ".zip":
            try:
                with zipfile.ZipFile(io.BytesIO(content)) as z:
                    for member in z.infolist():
                        if member.is_dir():
                            continue
                        if total + member.file_size > max_bytes:  # before inflating it
                            raise RequestError(f"the .zip holds more than "
                                               f"{max_bytes / 1e6:.0f} MB", 413)
                        keep(member.filename, z.read(member))
            except zipfile.BadZipFile:
                raise RequestError(f"{Path(name).name!r} is not a readable .zip") from None
        else:
            keep(name, content)
    return count


def _log_rows(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return rows


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _exit_code(run: Path) -> int | None:
    """A job of an earlier server: finished when its best/last weights exist and its log's
    last line says so, else still running (its lock held) or failed."""
    text = _tail(run / "web-job.log")
    if "adapted" in text and "enhance with" in text:
        return 0
    if "wildmix: error" in text or "Traceback" in text:
        return 1
    from wildmix.lock import LOCK_NAME

    return None if (run / LOCK_NAME).exists() else 1


def _tail(path: Path, size: int = 4000) -> str:
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read().decode("utf-8", "replace")


def _last_error(run: Path) -> str:
    lines = [line for line in _tail(run / "web-job.log").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("wildmix: error")]
    return (errors or lines or ["the adaptation stopped without a message"])[-1]


# --- the app ----------------------------------------------------------------------------------


def create_app(runs: str | os.PathLike = "runs", max_upload_mb: float = 100.0,
               max_seconds: float = MAX_SECONDS):
    """The ASGI app: the page, its assets and the API (see the module docstring)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    runs = Path(runs)
    models, jobs = Models(runs), Jobs(runs)
    max_bytes = int(max_upload_mb * 1e6)

    def error(e: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=e.status)

    async def form(request: Request):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes + 1_000_000:
            raise RequestError(f"the upload is over the limit of {max_upload_mb:g} MB", 413)
        try:
            return await request.form(max_part_size=max_bytes)
        except Exception as e:
            status = getattr(e, "status_code", 400)
            raise RequestError(f"a bad upload ({audio.first_line(e)})",
                               413 if status == 413 else 400) from None

    async def page(request: Request):
        return FileResponse(WEB / "index.html")

    async def list_models(request: Request):
        return JSONResponse(models.listing())

    async def enhance(request: Request):
        try:
            fields = await form(request)
            upload = fields.get("audio")
            if upload is None or isinstance(upload, str):
                raise RequestError("send the audio as a multipart file field named 'audio'")
            data = await upload.read()
            name = fields.get("model") or "default"
            wav, scores = await run_in_threadpool(enhance_bytes, models, data, str(name),
                                                  max_seconds, fields.get("dnsmos") == "1")
        except RequestError as e:
            return error(e)
        headers = {"X-Wildmix-DNSMOS": json.dumps(scores)} if scores else {}
        return Response(wav, media_type="audio/wav", headers=headers)

    async def adapt(request: Request):
        try:
            fields = await form(request)
            files = [(u.filename or "", await u.read()) for u in fields.getlist("audio")
                     if not isinstance(u, str)]
            if not files:
                raise RequestError("send the recordings as multipart file fields named "
                                   "'audio' (or one .zip)")
            minutes = _number(fields.get("minutes"), 10.0, *ADAPT_MINUTES, "minutes")
            steps = fields.get("max_steps")
            steps = int(_number(steps, 0, 1, 1e6, "max_steps")) if steps else None
            job = await run_in_threadpool(jobs.start, files, minutes, steps, max_bytes)
        except RequestError as e:
            return error(e)
        return JSONResponse({"job": job}, status_code=202)

    async def list_jobs(request: Request):
        return JSONResponse(jobs.listing())

    async def job_status(request: Request):
        try:
            return JSONResponse(jobs.status(request.path_params["job"]))
        except RequestError as e:
            return error(e)

    async def not_found(request: Request, exc):
        return JSONResponse({"error": f"no such page: {request.url.path}"},
                            status_code=getattr(exc, "status_code", 404))

    routes = [Route("/", page), Route("/api/models", list_models),
              Route("/api/enhance", enhance, methods=["POST"]),
              Route("/api/adapt", adapt, methods=["POST"]),
              Route("/api/jobs", list_jobs), Route("/api/jobs/{job}", job_status),
              Mount("/static", StaticFiles(directory=WEB))]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


def _number(value, default: float, low: float, high: float, name: str) -> float:
    if value in (None, ""):
        return default
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(x) and low <= x <= high):
        raise RequestError(f"{name} must be between {low:g} and {high:g}, got {value}")
    return x


def serve(host: str = "127.0.0.1", port: int = 8000, runs: str = "runs",
          max_upload_mb: float = 100.0) -> None:
    """Serve the page until interrupted (uvicorn, one process)."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this machine can use the page",
                    host)
    Path(runs).mkdir(parents=True, exist_ok=True)
    app = create_app(runs, max_upload_mb)
    print(f"wildmix serve: http://{'localhost' if host == '127.0.0.1' else host}:{port}/ "
          f"(runs in {runs}; Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
