"""Shared fixtures. Tests never touch the network: hub access is forced offline here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # what mlflow 3.17 reads
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = PROJECT_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder (real peer data, golden cases); skip where it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"{SHARED_DIR} is absent (it exists only in development and CI checkouts)")
    return SHARED_DIR


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    tiny tensors gain nothing from two, and a busy machine makes them spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def gpu_device():
    """The CUDA device for ``gpu`` tests; they skip without CUDA.

    ``SAGE_GPU_TESTS_ON_CPU=1`` runs their bodies on the CPU instead (bf16 autocast is then off):
    a check of the tests themselves on a machine without a GPU, not a GPU result.
    """
    import torch

    if os.environ.get("SAGE_GPU_TESTS_ON_CPU") == "1":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (gpu tests run where torch.cuda.is_available())")
    return torch.device("cuda")
