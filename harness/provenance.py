"""Provenance: which code, which packages and which machine produced a result.

Git facts are taken once in the driver (the code that was launched); hardware is taken in the
process that ran the trial (on a cluster that is a worker node, not the laptop that launched it).
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

#: Distributions whose versions change numbers or behaviour; recorded with every result.
TRACKED_PACKAGES = (
    "sage-harness",
    "torch",
    "open_clip_torch",
    "numpy",
    "transformers",
    "ray",
    "mlflow",
    "optuna",
    "polars",
    "pyarrow",
    "pydantic",
)

_PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class GitState:
    """The commit the harness ran from, and whether tracked files differed from it."""

    sha: str
    dirty: bool


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(root: Path = _PROJECT_ROOT) -> GitState:
    """Git sha and dirty flag of the source tree; ``unknown`` outside a git checkout.

    Untracked files do not count as dirty (run directories and caches live in the tree).
    """
    sha = _git("rev-parse", "HEAD", cwd=root)
    if sha is None:
        return GitState(sha="unknown", dirty=False)
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=root)
    return GitState(sha=sha, dirty=bool(status))


@functools.cache
def package_versions() -> dict[str, str]:
    """Installed versions of :data:`TRACKED_PACKAGES` plus Python ('absent' when not installed)."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _gpus() -> str:
    """Names of the GPUs this process may use, without importing torch when it is not loaded."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    torch = sys.modules.get("torch")  # importing torch just to ask would cost seconds per trial
    try:
        if torch is not None and torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            return ", ".join(names)
    except Exception:  # a broken CUDA install must not lose the result
        pass
    if not visible:
        return "none"
    return f"CUDA_VISIBLE_DEVICES={visible}" + (" (CUDA not usable)" if torch is not None else "")


def hardware_summary() -> str:
    """One line: OS, CPU model and cores usable by this process, memory, GPUs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = _memory_gib()
    mem_text = f"{mem:.0f} GiB" if mem is not None else "? GiB"
    return f"{platform.system()} {platform.machine()} | {_cpu_model()} x{cores} | {mem_text} | GPU: {_gpus()}"


def code_version(package_dir: Path | None = None) -> str:
    """A hash of the code that computes the numbers: every ``.py`` file and resource of ``sage_model``.

    Why not the git sha: a commit that only touches docs, studies or the harness does not change a
    single number, and a dirty checkout does without a new sha. Results record this hash, the
    runner skips a trial only when a result of the same code exists, and the report warns when its
    numbers come from code other than the checkout's. 16 hex digits (64 bits) of SHA-256 over the
    sorted (relative path, content) pairs.
    """
    if package_dir is None:  # located without importing it (that would import torch)
        import importlib.util

        spec = importlib.util.find_spec("sage_model")
        assert spec is not None and spec.origin is not None, "sage_model is not importable"
        package_dir = Path(spec.origin).resolve().parent
    return _code_version(Path(package_dir))


@functools.lru_cache(maxsize=8)
def _code_version(package_dir: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    files = [p for p in package_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    for path in sorted(files, key=lambda p: p.relative_to(package_dir).as_posix()):
        if path.suffix == ".py" or "resources" in path.relative_to(package_dir).parts:
            digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
