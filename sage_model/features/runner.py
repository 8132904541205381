"""Whole-split runs of feature extraction and of the teacher: plan, run the pending videos, assemble.

The per-video work is done by a worker *class* (:class:`~sage_model.features.extract.FeatureWorker`,
:class:`~sage_model.features.teacher.TeacherWorker`) built from a settings JSON string and called
with one job JSON string per video. How those calls are spread over processes is the caller's
choice, passed in as a :data:`Mapper`: :func:`local_map` runs them here, in order; the harness
passes a Ray Data mapper (``harness.scheduling.map_videos``) that runs one worker per actor.

Both runs are idempotent: a finished store with the same settings fingerprint is left alone
(``up_to_date``), a store made with other settings is an error unless ``overwrite``, and an
interrupted run resumes from the shards already written (``skipped``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage_model.data.store import FeatureStore, TeacherStore, directory_is_store
from sage_model.features.extract import (
    ExtractSettings,
    FeatureWorker,
    assemble_feature_store,
    clip_identity,
    file_sha256,
    plan_jobs,
    remove_work_dir,
    settings_fingerprint,
)
from sage_model.features.root import install_tracklets, prepare_root, record_hash
from sage_model.features.teacher import (
    TeacherSettings,
    TeacherWorker,
    assemble_teacher_store,
    model_identity,
    plan_teacher_jobs,
    prompts_digest,
)

log = logging.getLogger(__name__)

Mapper = Callable[[type, str, list[str]], Iterable[dict[str, Any]]]
"""``mapper(worker_cls, settings_json, job_jsons)`` -> one summary dict per job, in any order."""

OnResult = Callable[[dict[str, Any]], None]


def local_map(worker_cls: type, settings_json: str, jobs: list[str]) -> Iterator[dict[str, Any]]:
    """Run every job in this process with one worker (no Ray)."""
    if not jobs:
        return
    worker = worker_cls(settings_json)
    for job in jobs:
        yield worker(job)


@dataclass
class RunReport:
    """What a run did: the store it wrote (or found), and per-video counts and failures."""

    store: Path
    content_hash: str = ""
    rows: int = 0
    videos: int = 0
    processed: int = 0
    skipped: int = 0
    up_to_date: bool = False
    units: int = 0  # keyframes (extract) or distinct questions (teacher) of the processed videos
    work_seconds: float = 0.0  # summed per-video worker time
    wall_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)


def _run_jobs(
    report: RunReport,
    mapper: Mapper,
    worker_cls: type,
    settings_json: str,
    pending: list[str],
    units_key: str,
    on_result: OnResult | None,
) -> None:
    for summary in mapper(worker_cls, settings_json, pending):
        if summary.get("error"):
            report.failures.append((summary["video_id"], summary["error"]))
        elif summary.get("skipped"):
            report.skipped += 1
        else:
            report.processed += 1
            report.units += int(summary.get(units_key, 0))
            report.work_seconds += float(summary.get("seconds", 0.0))
        if on_result is not None:
            on_result(summary)
    if report.failures:
        shown = "; ".join(f"{vid}: {err}" for vid, err in report.failures[:3])
        raise ValueError(
            f"{len(report.failures)} of {report.videos} videos failed ({shown}); "
            "fix them and run again: finished videos are kept"
        )


def _existing(store_dir: Path, fingerprint: str, overwrite: bool, opener: Callable[[Path], Any]) -> Any:
    """The finished store at ``store_dir`` if it has this fingerprint; clears it on ``overwrite``."""
    if not directory_is_store(store_dir):
        if store_dir.exists():  # a store whose writing was interrupted: the shards still hold its data
            log.warning("%s: removing an unfinished store (no manifest/content hash)", store_dir)
            shutil.rmtree(store_dir)
        return None
    existing = opener(store_dir)
    if existing.manifest.get("settings", {}).get("fingerprint") == fingerprint:
        return existing
    if not overwrite:
        raise ValueError(
            f"{store_dir}: a store made with other settings exists; pass --overwrite to replace it"
        )
    shutil.rmtree(store_dir)
    return None


def extract_split(
    settings: ExtractSettings,
    *,
    annotations: Path,
    videos: Path,
    root: Path,
    tracklets: Path | None = None,
    tracklet_frame_offset: int = 0,
    mapper: Mapper = local_map,
    on_plan: Callable[[int, int], None] | None = None,
    on_result: OnResult | None = None,
    overwrite: bool = False,
) -> RunReport:
    """Extract the feature store ``<root>/features/<split>/<source>`` (see module docstring).

    ``on_plan(total_videos, pending_videos)`` is called once before the work starts.
    """
    started = time.perf_counter()
    root = Path(root)
    if settings.source == "det" and tracklets is None:
        raise ValueError("--tracklets: the det source needs a detected-tracklet file (OV-MMP layout)")
    identity = clip_identity(settings.preset, settings.clip_checkpoint)
    tracklets_sha = file_sha256(Path(tracklets)) if settings.source == "det" and tracklets else None
    fingerprint = settings_fingerprint(settings, identity["fingerprint"], tracklets_sha)
    store_dir = root / "features" / settings.split / settings.source
    report = RunReport(store=store_dir)
    existing = _existing(store_dir, fingerprint, overwrite, FeatureStore.open)
    if existing is not None:
        return _finished(report, existing, started)
    prepare_root(
        root,
        dataset=settings.dataset,
        annotations=annotations,
        feature_model=identity,
        tracklet_frame_offset=tracklet_frame_offset,
    )
    if settings.source == "det" and tracklets is not None:
        install_tracklets(root, settings.split, Path(tracklets))
    work_dir = root / ".work" / f"features-{settings.split}-{settings.source}-{fingerprint}"
    work_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(
        Path(annotations),
        Path(videos),
        settings.dataset,
        settings.split,
        work_dir,
        tracklets if settings.source == "det" else None,
        tracklet_frame_offset,
    )
    pending = [j.to_json() for j in jobs if not Path(j.shard).is_file()]
    report.videos, report.skipped = len(jobs), len(jobs) - len(pending)
    if on_plan is not None:
        on_plan(len(jobs), len(pending))
    _run_jobs(report, mapper, FeatureWorker, settings.model_dump_json(), pending, "keyframes", on_result)
    store = assemble_feature_store(
        jobs,
        store_dir,
        settings=settings,
        feature_model=identity,
        extra_settings={
            "fingerprint": fingerprint,
            "tracklets_sha256": tracklets_sha,
            "tracklet_frame_offset": tracklet_frame_offset,
        },
    )
    record_hash(root, f"features/{settings.split}/{settings.source}", store.content_hash)
    remove_work_dir(work_dir)
    return _finished(report, store, started, up_to_date=False)


def _finished(report: RunReport, store: Any, started: float, up_to_date: bool = True) -> RunReport:
    report.content_hash = store.content_hash
    report.rows = len(store)
    report.up_to_date = up_to_date
    report.wall_seconds = time.perf_counter() - started
    return report


def teacher_split(
    settings: TeacherSettings,
    *,
    root: Path,
    videos: Path,
    mapper: Mapper = local_map,
    on_plan: Callable[[int, int], None] | None = None,
    on_result: OnResult | None = None,
    overwrite: bool = False,
) -> RunReport:
    """Describe every row of ``<root>/features/<split>/<source>`` into ``<root>/teachers/<name>/...``."""
    started = time.perf_counter()
    root = Path(root)
    if settings.backend != "tiny":
        if settings.model_path is None or not Path(settings.model_path).is_dir():
            raise FileNotFoundError(
                f"teacher.model_path: {settings.model_path} is not a local model directory "
                f"(the {settings.backend} backend never downloads; see docs/real_data.md)"
            )
    store = FeatureStore.open(root / "features" / settings.split / settings.source)
    text_encoder = _check_same_clip(store, settings)
    generation = settings.generation()
    teacher_model = {
        "backend": settings.backend,
        "model_id": model_identity(settings.backend, settings.model_path),
        "generation": generation.generate_kwargs(),
        "prompts": prompts_digest(),
        "text_encoder": text_encoder,
    }
    fingerprint = settings_fingerprint_teacher(teacher_model, store.content_hash)
    out_dir = root / "teachers" / settings.name / settings.split / settings.source
    report = RunReport(store=out_dir)
    existing = _existing(out_dir, fingerprint, overwrite, TeacherStore.open)
    if existing is not None:
        return _finished(report, existing, started)
    work_dir = root / ".work" / f"teacher-{settings.name}-{settings.split}-{settings.source}-{fingerprint}"
    work_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan_teacher_jobs(store, Path(videos), work_dir)
    pending = [j.to_json() for j in jobs if not Path(j.shard).is_file()]
    report.videos, report.skipped = len(jobs), len(jobs) - len(pending)
    if on_plan is not None:
        on_plan(len(jobs), len(pending))
    _run_jobs(report, mapper, TeacherWorker, settings.model_dump_json(), pending, "questions", on_result)
    teacher = assemble_teacher_store(
        jobs,
        store,
        out_dir,
        settings=settings,
        teacher_model=teacher_model,
        extra_settings={"fingerprint": fingerprint},
    )
    record_hash(root, f"teachers/{settings.name}/{settings.split}/{settings.source}", teacher.content_hash)
    remove_work_dir(work_dir)
    return _finished(report, teacher, started, up_to_date=False)


def settings_fingerprint_teacher(teacher_model: dict[str, Any], store_hash: str) -> str:
    """Hash of the teacher model, prompts, decoding, text encoder and the feature store it describes."""
    text = json.dumps({"teacher": teacher_model, "store": store_hash, "version": 1}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_same_clip(store: FeatureStore, settings: TeacherSettings) -> dict[str, Any]:
    """The text tower must be the CLIP that made the image features (same embedding space)."""
    identity = clip_identity(settings.preset, settings.clip_checkpoint)
    expected = store.manifest.get("feature_model", {})
    if expected.get("fingerprint") != identity["fingerprint"]:
        raise ValueError(
            f"{store.path / 'manifest.json'}: the features come from CLIP {expected.get('name')} "
            f"({expected.get('checkpoint')}, fingerprint {expected.get('fingerprint')}); the teacher must encode "
            f"its text with the same CLIP, not {identity['name']} ({identity['checkpoint']})"
        )
    return identity
