"""One wildmix process at a time in a folder: a run folder, or the output folder of enhance.

``with folder_lock(path, "train"):`` holds an exclusive ``flock`` on ``path/.wildmix.lock``
(holding the owner's PID and what it is doing) for the whole block. A second process gets
:class:`LockError` naming the holder's PID at once, instead of interleaving logs and
overwriting checkpoints. The kernel drops the lock when its process dies, so the lock file
a killed process leaves behind is simply taken over; no PID guessing is involved. Taking
the lock also removes the temporary files of atomic writes that a killed holder left.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no locking, but nothing else changes
    fcntl = None

log = logging.getLogger("wildmix")
LOCK_NAME = ".wildmix.lock"


class LockError(RuntimeError):
    """The folder is in use by another process; one line naming it and its PID."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if needed) for the block; yields the lock path.

    Raises:
        LockError: another live process holds it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    if fcntl is None:
        log.debug("no fcntl here: %s is not locked", folder)
        yield path
        return
    fd = _acquire(path, folder)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {what}\n".encode())
        _remove_stale_temporaries(folder)
        yield path
    finally:
        # unlink before unlocking: a process that opened this inode meanwhile sees it gone
        # (the inode check in _acquire) and retries on a fresh file
        Path(path).unlink(missing_ok=True)
        os.close(fd)


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary files of atomic writes (``.NAME.XXXX.tmp``) that a killed process left;
    no live writer can own them while we hold the lock."""
    for tmp in folder.rglob(".*.tmp"):
        log.info("removing %s, left by an interrupted write", tmp)
        tmp.unlink(missing_ok=True)


def _acquire(path: Path, folder: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise LockError(f"{folder} is in use by another wildmix process ({holder}); wait "
                            "for it to finish, stop it, or choose another folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder released and removed it between our open and flock


def _holder(fd: int) -> str:
    """``"PID 123, train"`` from the lock file's content."""
    text = os.pread(fd, 200, 0).decode(errors="replace").split()
    if not text:
        return "PID unknown"
    return f"PID {text[0]}" + (f", {' '.join(text[1:])}" if len(text) > 1 else "")
