"""Checks that run before any trial starts, so a study fails in seconds instead of hours in.

A long study dies late for boring reasons: a results folder on a full or read-only disk, one
annotation file that is not JSON, a feature array cut short by an interrupted copy, a checkpoint
path with a typo, a local MLflow file that a multi-node cluster cannot share. Each check here
raises :class:`PreflightError` (a ``ValueError``: the CLI prints one line and exits 2) whose
message starts with the flag or config field at fault and names the file.

The data checks open what a trial will open (dataset roots, every annotation file of the splits
it reads, the feature and teacher stores with their manifests) once per distinct input, on the
driver, before Ray starts. They do not re-hash the stores (``FeatureStore.verify`` does that on
demand): opening already checks every array's dtype, shape and exact byte size.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.spec import TrialSpec

if TYPE_CHECKING:
    from sage_model.data import DatasetRoot, FeatureStore

log = logging.getLogger(__name__)

#: Default of ``--min-free-mb``: room for MLflow artifacts, checkpoints and predictions.
DEFAULT_MIN_FREE_MB = 200.0
_PROBE_BYTES = 64 * 1024


class PreflightError(ValueError):
    """Something the user gave us cannot work; found before any trial started."""


# --------------------------------------------------------------------------------------------
# Output folders
# --------------------------------------------------------------------------------------------


def check_writable_dir(path: Path, *, flag: str, min_free_mb: float = DEFAULT_MIN_FREE_MB) -> None:
    """Create ``path`` if needed, write and fsync a small probe file in it, and check free space.

    The probe catches what permission bits do not (a read-only mount, a full disk, a file in the
    way, root squash on NFS); the free-space floor catches a disk that would fill mid-study.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".harness-probe-", dir=path)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(b"\0" * _PROBE_BYTES)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            Path(probe).unlink(missing_ok=True)
    except OSError as exc:
        reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise PreflightError(f"{flag}: {path} is not writable ({reason})") from None
    free_mb = shutil.disk_usage(path).free / 2**20
    if free_mb < min_free_mb:
        raise PreflightError(
            f"{flag}: {path} has {free_mb:.1f} MiB free, below --min-free-mb {min_free_mb:g} "
            "(free some space, point the flag elsewhere, or lower --min-free-mb)"
        )


# --------------------------------------------------------------------------------------------
# Tracking store
# --------------------------------------------------------------------------------------------


def is_server_uri(uri: str) -> bool:
    """True for an MLflow tracking server (http/https), False for a local database or folder."""
    return uri.startswith(("http://", "https://"))


def require_tracking_server(uri: str, address: str | None) -> None:
    """With a Ray cluster to join, the tracking store must be a server every node can reach."""
    if not address or is_server_uri(uri):
        return
    raise PreflightError(
        f"--address: a study on a Ray cluster needs an MLflow tracking server reachable from every node, "
        f"but MLFLOW_TRACKING_URI is {uri!r} (a file on this machine). Start one, e.g. "
        "`mlflow server --host 0.0.0.0 --port 5000 --backend-store-uri sqlite:///mlflow.db --workers 1`, "
        "and set MLFLOW_TRACKING_URI=http://<that host>:5000 (see docs/operations.md)"
    )


def ping_tracking_server(uri: str, timeout_s: float = 5.0) -> str | None:
    """None when ``<uri>/health`` answers, else why not (one line)."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            if response.status == 200:
                return None
            return f"{uri}/health answered HTTP {response.status}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{uri} is unreachable ({reason})"


# --------------------------------------------------------------------------------------------
# Trial inputs: data roots, stores, checkpoints
# --------------------------------------------------------------------------------------------


def check_trial_inputs(trials: Sequence[TrialSpec]) -> None:
    """Open every real input the trials will read, once per distinct input; synthetic data (no
    ``data.root``) is generated by the trials themselves and is not checked here."""
    done: set[tuple[Any, ...]] = set()
    for trial in trials:
        _check_checkpoint(trial)
        for check in _input_checks(trial):
            if check in done:
                continue
            done.add(check)
            _run_check(*check)
    check_same_clip(trials)


def check_same_clip(trials: Sequence[TrialSpec]) -> None:
    """The model's CLIP must be the one that made the real features and teacher texts
    (:mod:`sage_model.compat`); the checkpoint is read once, no model is built."""
    from sage_model.clip import preset_identity
    from sage_model.compat import check_clip_matches

    done: set[tuple[Any, ...]] = set()
    for trial in trials:
        model = trial.config.model
        for field, root, dataset, split, source, teacher in _input_checks(trial):
            key = (model.preset, model.clip_checkpoint, model.clip_quick_gelu, root, split, source, teacher)
            if source is None or key in done:
                continue
            done.add(key)
            identity = preset_identity(model.preset, model.clip_checkpoint, model.clip_quick_gelu)
            opened = _open_root(root, dataset)
            teacher_store = opened.teacher_store(teacher, split, source) if teacher is not None else None
            try:
                check_clip_matches(identity, opened.feature_store(split, source), teacher_store, field=field)
            except ValueError as exc:
                raise PreflightError(str(exc)) from None


def _check_checkpoint(trial: TrialSpec) -> None:
    model = trial.config.model
    if model.preset != "sage_vitb16":
        return
    if model.clip_checkpoint is None:
        raise PreflightError(
            f"model.clip_checkpoint: trial {trial.trial_id} uses sage_vitb16 but names no local "
            "checkpoint (pass --clip-checkpoint /path/ViT-B-16.pt)"
        )
    if not Path(model.clip_checkpoint).is_file():
        raise PreflightError(
            f"model.clip_checkpoint: {model.clip_checkpoint} does not exist or is not a file "
            f"(trial {trial.trial_id})"
        )


def _input_checks(trial: TrialSpec) -> Iterator[tuple[Any, ...]]:
    """``(field, root, dataset, split, source, teacher)`` tuples of what the trial reads;
    ``source`` None means the split's annotations."""
    data, cfg = trial.config.data, trial.config
    if data.root is None:
        return
    test_dataset = data.test_dataset or data.dataset
    if test_dataset != data.dataset and data.test_root is None:
        raise PreflightError(
            f"data.test_root: trial {trial.trial_id} evaluates on {test_dataset} with real data "
            f"({data.root}) and needs the {test_dataset} dataset root"
        )
    test_field, test_root = (
        ("data.root", data.root) if test_dataset == data.dataset else ("data.test_root", data.test_root)
    )
    teacher = None if cfg.model.semantic.fusion == "none" else data.teacher
    if teacher == "none":
        raise PreflightError(
            f"data.teacher: 'none' leaves nothing to fuse in trial {trial.trial_id}; "
            "set model.semantic.fusion: none as well"
        )
    yield ("data.root", Path(data.root), data.dataset, "train", None, None)
    yield ("data.root", Path(data.root), data.dataset, "train", "gt", teacher)
    assert test_root is not None  # checked above: real data needs a test root
    yield (test_field, Path(test_root), test_dataset, "test", None, None)
    sources = {"det" if task == "sgdet" else "gt" for task in cfg.eval.tasks}
    if cfg.eval.stability_noise:
        sources.add("gt")
    for source in sorted(sources):
        yield (test_field, Path(test_root), test_dataset, "test", source, teacher)


def _run_check(
    field: str, root: Path, dataset: str, split: str, source: str | None, teacher: str | None
) -> None:
    """One input check; any error becomes ``<field>: <what the data layer said>``."""
    try:
        opened = _open_root(root, dataset)
        if source is None:
            opened.annotations(split)
        else:
            _check_store(opened, split, source, teacher)
    except (ValueError, FileNotFoundError, KeyError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PreflightError(f"{field}: {message}") from None


def _open_root(root: Path, dataset: str) -> DatasetRoot:
    from sage_model.data import DatasetRoot

    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    opened = DatasetRoot.open(root)
    if opened.dataset != dataset:
        raise ValueError(
            f"{root / 'dataset.json'}: key 'dataset': {opened.dataset!r}, the trial needs {dataset!r}"
        )
    return opened


def _check_store(root: DatasetRoot, split: str, source: str, teacher: str | None) -> None:
    store = root.feature_store(split, source)
    _check_store_matches(root, store)
    if teacher is not None:
        opened = root.teacher_store(teacher, split, source)
        if opened is not None:
            opened.check_aligned(store)


def _check_store_matches(root: DatasetRoot, store: FeatureStore) -> None:
    """A store copied from another dataset or vocabulary opens fine but trains nonsense."""
    manifest = store.path / "manifest.json"
    if store.manifest.get("dataset") != root.dataset:
        raise ValueError(
            f"{manifest}: key 'dataset': {store.manifest.get('dataset')!r}, the root holds {root.dataset!r}"
        )
    predicates = len(root.vocabulary.predicates)
    if store.labels.shape[1] != predicates:
        raise ValueError(
            f"{manifest}: key 'num_predicates': {store.labels.shape[1]}, the {root.dataset} vocabulary has {predicates}"
        )
