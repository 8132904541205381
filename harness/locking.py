"""Study locks: one driver at a time per study and run directory (`harness run`, `harness tune`).

Guarantee: while a :class:`StudyLock` is held, no other process can take the same lock, and a
holder that dies in any way (exception, Ctrl-C, SIGKILL, power loss of a local disk) frees it:
the lock is an OS file lock (``flock`` through the ``filelock`` package) on ``<run_dir>/<study>.lock``,
which the kernel drops with the holder's file descriptors. Nothing decides by reading a PID, so
there is no "stale lock" to judge and no takeover race between two drivers.

Who holds the lock is written beside it, ``<study>.lock.info`` (JSON: pid, host, since), after
the lock is taken and removed before it is released. It only lets a refusal name the holder; a
leftover info file of a killed holder is overwritten by the next one. The lock file itself stays
in place after release (removing it would let two processes lock two different files).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout


class StudyLocked(ValueError):
    """Another live process holds the study's lock in the same run directory."""


class StudyLock:
    """``<run_dir>/<study>.lock``: taken without waiting, refused with the holder's PID."""

    def __init__(self, run_dir: Path, study: str) -> None:
        self.path = Path(run_dir) / f"{study}.lock"
        self.info_path = Path(run_dir) / f"{study}.lock.info"
        self.study = study
        self._lock = FileLock(self.path, timeout=0, thread_local=False)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> None:
        """Take the lock now or raise :class:`StudyLocked` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise StudyLocked(self._refusal()) from None
        self._write_info()

    def release(self) -> None:
        if self.held:
            self.info_path.unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def holder(self) -> dict[str, object]:
        """What the info file says about the holder ({} when it is absent or being written)."""
        try:
            info = json.loads(self.info_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return info if isinstance(info, dict) else {}

    def _refusal(self) -> str:
        info = self.holder()
        who = (
            f"PID {info.get('pid')} on {info.get('host', '?')} since {info.get('since', '?')}"
            if "pid" in info
            else "another process (it has not written its PID yet)"
        )
        return (
            f"study {self.study} is already running: lock {self.path} is held by {who}; wait for it to "
            "finish (the lock frees itself when that process ends, even if it is killed)"
        )

    def _write_info(self) -> None:
        """Atomically (temp file + rename), so a reader never sees half a record."""
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat()}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.study}.", suffix=".tmp", dir=self.path.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump(info, handle)
        os.replace(tmp, self.info_path)
