"""The real-data pipelines (`harness extract`, `harness teacher`) on Ray Data or in-process.

The science lives in :mod:`sage_model.features` (per-video workers, resumable runs, store
assembly); this module only decides *where* the per-video work runs: on a pool of Ray Data actors
(one model per actor, a GPU each where the cluster has GPUs, CPU actors otherwise) through
:func:`harness.scheduling.map_videos`, or in this process (``workers="local"``: debugging, tiny
runs, tests). One :func:`video_mapper` block can serve several stores (one Ray start).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Literal

from sage_model.features.runner import Mapper, local_map

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
