"""The lake's writer lock: one writer (import, fetch, refresh) per lake at a time.

An OS file lock (`fcntl.flock`) on `<lake>/_refresh/refresh.lock`, so a dead holder never
blocks: the kernel releases its lock when the process ends, however it ends. The file holds
the holder's pid for the message the next writer prints. The file is removed on release;
an acquirer checks after locking that the path still names the file it locked, so removal
cannot let two writers in.
"""
from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from fetch.errors import TemporaryFailure

log = logging.getLogger(__name__)

LOCK_RELPATH = Path("_refresh") / "refresh.lock"


class LockHeld(TemporaryFailure):
    """Another writer holds the lake's lock (exit 75: try again when it is done)."""


def lake_lock_path(root: Path | str) -> Path:
    return Path(root) / LOCK_RELPATH


class RunLock:
    """An exclusive, non-blocking `flock` on `path`; `acquire()` raises LockHeld when another
    process holds it. A context manager; also usable with acquire()/release()."""

    def __init__(self, path: Path | str, what: str = "refresh"):
        self.path = Path(path)
        self.what = what
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"pid {holder}" if holder else "another process"
                raise LockHeld(f"another writer ({who}) holds {self.path}: this {self.what} exits without "
                               f"writing; run it again when that one has finished") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed the file between our open and our lock: retry
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {self.what}\n".encode())
            self.fd = fd
            return self
        raise LockHeld(f"could not take the lock {self.path}; retry later")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: no one else is inside
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None
