"""`wildmix serve`'s HTTP API, in process (Starlette's test client): the page and its assets,
the model list, enhancement against the Enhancer itself, every bad input answered with one
JSON line and a 4xx, concurrent requests kept apart, an adaptation started, followed and
joining the model list."""

import io
import json
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("starlette")
pytest.importorskip("multipart")
pytest.importorskip("httpx2")  # starlette.testclient's client

from starlette.testclient import TestClient  # noqa: E402

from wildmix import peers, serve  # noqa: E402
from wildmix.enhance import Enhancer  # noqa: E402


@pytest.fixture()
def client(tmp_path):
    with TestClient(serve.create_app(tmp_path / "runs", max_upload_mb=2.0,
                                     max_seconds=30.0)) as c:
        yield c


def _wav(x: np.ndarray, sr: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, x, sr, subtype=subtype, format=fmt)
    return buffer.getvalue()


def _speechlike(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    voice = np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    return (0.3 * voice + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def test_page_and_assets_are_served_by_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>wildmix</title>" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    everything = page.text + client.get("/static/app.js").text
    assert "http://" not in everything and "https://" not in everything  # offline: no CDN
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and "error" in missing.json()


def test_models_list_shipped_models_runs_and_installed_peers(client, tmp_path):
    names = [m["name"] for m in client.get("/api/models").json()]
    assert names[:2] == ["default", "causal"]
    assert [n for n in names if n in peers.NAMES] == \
        [p for p, ok in peers.available().items() if ok]
    run = tmp_path / "runs" / "mine"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"")  # a run folder appears by its weights
    (run / ".wildmix.lock").write_text("1 remixit\n")  # ... once no process holds it
    assert "run:mine" not in [m["name"] for m in client.get("/api/models").json()]
    (run / ".wildmix.lock").unlink()
    assert "run:mine" in [m["name"] for m in client.get("/api/models").json()]


def test_enhance_answers_the_enhancers_output_with_the_inputs_shape(client):
    """A 44.1 kHz stereo FLAC in; a WAV out with its rate, channels and length, equal to what
    Enhancer.enhance gives each channel (the 26 dB limit of wildmix enhance included)."""
    x = np.stack([_speechlike(2.0, 44100), _speechlike(2.0, 44100, 1)], axis=1)
    data = _wav(x, 44100, fmt="FLAC")
    answer = client.post("/api/enhance", files={"audio": ("a b/../x.flac", data)},
                         data={"model": "default", "dnsmos": "1"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "audio/wav"
    y, sr = sf.read(io.BytesIO(answer.content), always_2d=True)
    assert sr == 44100 and y.shape == x.shape
    expected = Enhancer.default().enhance(sf.read(io.BytesIO(data), always_2d=True,
                                                  dtype="float32")[0].T, 44100).T
    np.testing.assert_allclose(y, expected, atol=1e-5)
    from wildmix import mos

    assert ("x-wildmix-dnsmos" in answer.headers) == mos.available()
    if mos.available():
        scores = json.loads(answer.headers["x-wildmix-dnsmos"])
        assert set(scores) == {"noisy", "enhanced"}
        assert all(1 <= v <= 5 for s in scores.values() for v in s.values())


@pytest.mark.skipif(not peers.available()["gtcrn"], reason="the peers extra")
def test_enhance_with_a_peer(client):
    x = _speechlike(1.5, 16000)
    answer = client.post("/api/enhance", files={"audio": ("x.wav", _wav(x, 16000))},
                         data={"model": "gtcrn"})
    assert answer.status_code == 200
    y, _ = sf.read(io.BytesIO(answer.content), dtype="float32")
    np.testing.assert_allclose(y, peers.enhance("gtcrn", sf.read(io.BytesIO(_wav(x, 16000)),
                                                                 dtype="float32")[0], 16000),
                               atol=1e-5)


def test_bad_input_gets_one_json_line_and_a_4xx_and_the_server_keeps_serving(client):
    nan = _speechlike(1.0, 16000)
    nan[100] = np.nan
    cases = {
        "empty": (b"", 400, "empty"),
        "corrupt": (b"RIFF\x00\x00not really a wav" * 10, 400, "not a readable audio"),
        "text": (b"hello, world\n" * 50, 400, "not a readable audio"),
        "silent": (_wav(np.zeros(16000, np.float32), 16000), 400, "silent"),
        "nan": (_wav(nan, 16000, "FLOAT"), 400, "NaN"),
        "too long": (_wav(np.ones(16000 * 31, np.float32) * 0.1, 16000, "PCM_U8"), 413,
                     "at most 30 s"),
        "over the upload limit": (b"\x00" * 3_100_000, 413, "limit"),
    }
    for name, (data, status, words) in cases.items():
        answer = client.post("/api/enhance", files={"audio": ("x.wav", data)})
        assert answer.status_code == status, (name, answer.text)
        assert words in answer.json()["error"], (name, answer.json())
    for model, status in (("nonsense", 400), ("../../default", 400)):
        answer = client.post("/api/enhance", data={"model": model},
                             files={"audio": ("x.wav", _wav(_speechlike(1, 16000), 16000))})
        assert answer.status_code == status and "unknown model" in answer.json()["error"]
    assert client.post("/api/enhance", data={"model": "default"}).status_code == 400
    good = client.post("/api/enhance", files={"audio": ("x.wav",
                                                        _wav(_speechlike(1, 16000), 16000))})
    assert good.status_code == 200  # still serving


def test_concurrent_requests_never_mix_their_files(client):
    inputs = [_wav(_speechlike(0.5 + 0.25 * k, 16000, k), 16000) for k in range(6)]
    alone = [client.post("/api/enhance", files={"audio": ("x.wav", d)}).content
             for d in inputs]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda d: client.post(
            "/api/enhance", files={"audio": ("x.wav", d)}).content, inputs))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(sf.read(io.BytesIO(b))[0], sf.read(io.BytesIO(a))[0],
                                   atol=1e-6)


def test_adaptation_from_the_page_runs_and_joins_the_model_list(client, tiny_corpus,
                                                                tmp_path):
    """Recordings sent as a .zip (with a name that tries to leave the folder): stored under
    numbered names, `wildmix adapt` started, its progress readable, the model listed."""
    files = sorted((tiny_corpus / "train" / "noisy").glob("*.wav"))[:5]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for i, f in enumerate(files):
            z.writestr(f"../../evil{i}.wav" if i == 0 else f"folder/{f.name}", f.read_bytes())
        z.writestr("notes.txt", "not audio")
    answer = client.post("/api/adapt", files={"audio": ("recordings.zip", buffer.getvalue())},
                         data={"minutes": "2", "max_steps": "4"})
    assert answer.status_code == 202, answer.text
    job = answer.json()["job"]
    stored = sorted(p.name for p in (tmp_path / "runs" / ".uploads" / job).iterdir())
    assert stored == [f"{i:04d}.wav" for i in range(5)]
    assert not list(tmp_path.rglob("evil*"))
    deadline = time.monotonic() + 240
    while (status := client.get(f"/api/jobs/{job}").json())["state"] == "running":
        assert time.monotonic() < deadline, status
        time.sleep(1)
    assert status["state"] == "done", status
    assert status["step"] == 4 and status["model"] == f"run:{job}"
    assert [j["job"] for j in client.get("/api/jobs").json()] == [job]
    assert f"run:{job}" in [m["name"] for m in client.get("/api/models").json()]
    enhanced = client.post("/api/enhance", data={"model": f"run:{job}"},
                           files={"audio": ("x.wav", files[0].read_bytes())})
    assert enhanced.status_code == 200
    for bad, status_code in ((dict(files={"audio": ("x.txt", b"text")}), 400),
                             (dict(files={"audio": ("x.zip", b"not a zip")}), 400),
                             (dict(files={"audio": ("x.wav", files[0].read_bytes())},
                                   data={"minutes": "1e9"}), 400)):
        answer = client.post("/api/adapt", **bad)
        assert answer.status_code == status_code and answer.json()["error"]
    assert len(list((tmp_path / "runs" / ".uploads").iterdir())) == 1  # refused: removed
    assert client.get("/api/jobs/..%2F..%2Fetc").status_code == 404
