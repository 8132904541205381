"""Study locks (harness.locking): one driver per study, refusals name the holder, a killed
holder frees the lock. The holders here are real processes, and the kill is a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.locking import StudyLock, StudyLocked

HOLDER = """
import sys, time
from pathlib import Path
from harness.locking import StudyLock
lock = StudyLock(Path(sys.argv[1]), "s")
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def start_holder(run_dir: Path, project_root: Path) -> subprocess.Popen[str]:
    """Another process that takes the study's lock and keeps it until killed."""
    env = {**os.environ, "PYTHONPATH": str(project_root)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_with_the_pid_and_the_lock_file(
    tmp_path: Path, project_root: Path
) -> None:
    holder = start_holder(tmp_path, project_root)
    try:
        with pytest.raises(StudyLocked) as refused:
            StudyLock(tmp_path, "s").acquire()
        message = str(refused.value)
        assert f"lock {tmp_path / 's.lock'} is held by PID {holder.pid} on " in message
        with pytest.raises(StudyLocked, match=f"PID {holder.pid}"):  # and again: a refusal changes nothing
            StudyLock(tmp_path, "s").acquire()
    finally:
        holder.kill()
        holder.wait()


def test_two_holders_in_one_process_are_refused_too(tmp_path: Path) -> None:
    with StudyLock(tmp_path, "s"):
        with pytest.raises(StudyLocked, match=rf"s.lock is held by PID {os.getpid()}"):
            StudyLock(tmp_path, "s").acquire()
    with StudyLock(tmp_path, "s") as again:
        assert again.held


def test_lock_of_a_sigkilled_holder_is_free_and_names_the_new_holder(
    tmp_path: Path, project_root: Path
) -> None:
    holder = start_holder(tmp_path, project_root)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert StudyLock(tmp_path, "s").holder()["pid"] == holder.pid  # its info file is left behind
    with StudyLock(tmp_path, "s") as lock:
        assert lock.held and lock.holder()["pid"] == os.getpid()
        with pytest.raises(StudyLocked, match=f"PID {os.getpid()}"):
            StudyLock(tmp_path, "s").acquire()
    assert StudyLock(tmp_path, "s").holder() == {}
