"""The real-data pipelines (`harness extract`, `harness teacher`) on Ray Data or in-process.

The science lives in :mod:`sage_model.features` (per-video workers, resumable runs, store
assembly); this module only decides *where* the per-video work runs: on a pool of Ray Data actors
(one model per actor, a GPU each where the cluster has GPUs, CPU actors otherwise) through
:func:`harness.scheduling.map_videos`, or in this process (``workers="local"``: debugging, tiny
runs, tests). One :func:`video_mapper` block can serve several stores (one Ray start).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from sage_model.features.extract import ExtractSettings
from sage_model.features.runner import Mapper, OnResult, RunReport, extract_split, local_map, teacher_split
from sage_model.features.teacher import TeacherSettings

Workers = Literal["ray", "local"]


@dataclass(frozen=True)
class Parallelism:
    """Where per-video work runs. ``actors=None``: one actor per GPU, else one per ``cpus_per_actor``."""

    workers: Workers = "ray"
    address: str | None = None
    gpus_per_actor: float = 1.0
    cpus_per_actor: float = 1.0
    actors: int | None = None
    num_cpus: int | None = None  # a private local Ray's CPU count (default: all cores)


@contextmanager
def video_mapper(parallel: Parallelism) -> Iterator[Mapper]:
    """A :data:`~sage_model.features.runner.Mapper` for the block: Ray Data actors, or in-process."""
    if parallel.workers == "local":
        yield local_map
        return
    from harness.scheduling import map_videos, ray_cluster

    with ray_cluster(parallel.address, num_cpus=parallel.num_cpus):
        yield partial(
            map_videos,
            gpus_per_actor=parallel.gpus_per_actor,
            cpus_per_actor=parallel.cpus_per_actor,
            actors=parallel.actors,
        )


def run_extract(
    settings: ExtractSettings,
    *,
    annotations: Path,
    videos: Path,
    root: Path,
    tracklets: Path | None = None,
    tracklet_frame_offset: int = 0,
    overwrite: bool = False,
    parallel: Parallelism = Parallelism(),
    on_plan: Callable[[int, int], None] | None = None,
    on_result: OnResult | None = None,
) -> RunReport:
    """Extract one feature store (see :func:`sage_model.features.runner.extract_split`)."""
    with video_mapper(parallel) as mapper:
        return extract_split(
            settings, annotations=annotations, videos=videos, root=root, tracklets=tracklets,
            tracklet_frame_offset=tracklet_frame_offset, overwrite=overwrite, mapper=mapper,
            on_plan=on_plan, on_result=on_result,
        )  # fmt: skip


def run_teacher(
    settings: TeacherSettings,
    *,
    root: Path,
    videos: Path,
    overwrite: bool = False,
    parallel: Parallelism = Parallelism(),
    on_plan: Callable[[int, int], None] | None = None,
    on_result: OnResult | None = None,
) -> RunReport:
    """Write one teacher artifact (see :func:`sage_model.features.runner.teacher_split`)."""
    with video_mapper(parallel) as mapper:
        return teacher_split(
            settings, root=root, videos=videos, overwrite=overwrite, mapper=mapper,
            on_plan=on_plan, on_result=on_result,
        )  # fmt: skip
