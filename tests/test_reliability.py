"""Defects found by the fault campaign (benchmarks/bench_reliability.py), one test each."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from wildmix import audio, corpus, models
from wildmix.cli import main
from wildmix.corpus import plan, render  # noqa: F401 - corpus.plan, corpus.render
from wildmix.lock import LOCK_NAME, LockError, folder_lock

HOLD = textwrap.dedent("""
    import sys, time
    from wildmix.lock import folder_lock
    with folder_lock(sys.argv[1], "train"):
        print("locked", flush=True)
        time.sleep(60)
""")


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_names_the_holder_and_is_taken_over_when_it_dies(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(LockError, match=f"PID {proc.pid}, train"), \
                folder_lock(tmp_path, "enhance"):
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (tmp_path / LOCK_NAME).exists()  # the dead holder's file stays behind...
    with folder_lock(tmp_path, "enhance") as path:  # ...and is taken over
        assert path.read_text().split() == [str(os.getpid()), "enhance"]
    assert not (tmp_path / LOCK_NAME).exists()


def test_train_and_enhance_refuse_a_folder_in_use(tiny_corpus, tmp_path, capsys):
    proc = _holder(tmp_path / "run")
    try:
        rc = main(["train", "--data", str(tiny_corpus), "--out", str(tmp_path / "run"),
                   "--preset", "tiny", "--max-steps", "2", "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and f"PID {proc.pid}" in err, err
        rc = main(["enhance", str(tiny_corpus / "test" / "noisy"), "--out",
                   str(tmp_path / "run"), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and f"PID {proc.pid}" in err, err
    finally:
        proc.kill()
        proc.wait()
    assert not (tmp_path / "run" / "log.jsonl").exists()


class _Bomb:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_bomb_refused_plainly_everywhere(tiny_corpus, tmp_path, capsys):
    marker = tmp_path / "EXPLODED"
    bomb = tmp_path / "bomb.pt"
    torch.save({"format": models.FORMAT, "model_name": _Bomb(marker)}, bomb)
    noisy = str(tiny_corpus / "test" / "noisy")
    for argv in (["enhance", "--model", str(bomb), noisy, "--out", str(tmp_path / "e")],
                 ["evaluate", "--data", str(tiny_corpus / "test"), "--model", str(bomb),
                  "--out", str(tmp_path / "r")],
                 ["train", "--data", str(tiny_corpus), "--init", str(bomb), "--out",
                  str(tmp_path / "i")],
                 ["train", "--data", str(tiny_corpus), "--strategy", "remixit", "--teacher",
                  str(bomb), "--out", str(tmp_path / "t")]):
        rc = main([*argv, "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1, err
        assert "holds Python objects" in err and "weights_only" not in err, err
    assert not marker.exists()


def test_every_skipped_path_is_named_once(tmp_path, caplog):
    audio.write(tmp_path / "good.wav", torch.randn(1600).numpy(), 16000)
    (tmp_path / "x.wav").mkdir()
    (tmp_path / "gone.flac").symlink_to(tmp_path / "nowhere.flac")
    with caplog.at_level("WARNING", logger="wildmix"):
        found = audio.find_audio(tmp_path)
    assert found == [tmp_path / "good.wav"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert any("x.wav" in m and "folder" in m for m in lines)
    assert any("gone.flac" in m and "dangling link" in m for m in lines)


def test_package_judged_by_dpkg_not_by_a_shared_folder(tmp_path, monkeypatch):
    # a system where another language pack of the game is installed, not the Czech one
    fake = tmp_path / "bin" / "dpkg-query"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'fillets-ng-data-xx install ok installed'\n"
                    "echo 'flite deinstall ok config-files'\n"
                    "echo 'dpkg-query: no packages found matching fillets-ng-data-cs' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert corpus.installed(["fillets-ng-data-cs", "flite"]) == {
        "fillets-ng-data-cs": False, "flite": False}
    # without dpkg: files only the package installs, not the folder every pack creates
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    shared = tmp_path / "sound" / "intro" / "xx"
    shared.mkdir(parents=True)
    (shared / "a.ogg").write_bytes(b"")
    monkeypatch.setitem(corpus.PACKAGES, "fillets-ng-data-cs", corpus.Package(
        "fillets-ng-data-cs", "GPL-2+", str(tmp_path / "sound" / "*" / "cs" / "*.ogg")))
    assert corpus.installed(["fillets-ng-data-cs"]) == {"fillets-ng-data-cs": False}


def test_empty_voice_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(corpus.render, "missing_packages", lambda size, kind="speech": [])
    monkeypatch.setattr(corpus.plan, "_czech_files", lambda character: [])
    rc = main(["corpus", "build", str(tmp_path / "c"), "--size", "small"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "czech:" in err and "fillets-ng-data-cs" in err


def test_python_dash_m_wildmix():
    result = subprocess.run([sys.executable, "-m", "wildmix", "corpus", "packages", "--size",
                             "tiny"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.split() == ["flite", "qabcs-data"]


def test_lock_removes_temporaries_of_a_killed_writer(tmp_path):
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / ".last.pt.abc123.tmp", tmp_path / "sub" / ".x.wav.q1.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    (tmp_path / "keep.tmp").write_bytes(b"not ours")
    with folder_lock(tmp_path, "train"):
        assert not any(p.exists() for p in stale)
    assert (tmp_path / "keep.tmp").exists()
