"""``harness extract``: videos + official annotations (+ detected tracklets) -> feature stores.

Writes ``<out>/features/<split>/<source>/`` (the data layer's feature store) and the root's
``dataset.json`` and ``annotations`` link, so that ``harness run --data-root <out>`` trains on it.
Per-video work runs on Ray Data actors (GPU actors where the cluster has GPUs); a stopped run
resumes where it stopped. The full recipe is in docs/real_data.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from harness.cli.app import UserError, app, user_errors

if TYPE_CHECKING:  # harness.pipelines pulls in torch/open_clip: import it only when a command runs
    from harness.pipelines import Parallelism

SPLITS = ("train", "test")


class VideoProgress:
    """Per-video progress: a live bar on a terminal, one line per video elsewhere (logs, CI)."""

    def __init__(self, what: str, console: Console | None = None) -> None:
        self.what = what
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress: Progress | None = None
        self.task: Any = None
        self.done = 0
        self.total = 0

    def on_plan(self, total: int, pending: int) -> None:
        self.total = pending
        self.console.print(f"{self.what}: {total} videos, {total - pending} already done, {pending} to do")
        if self.live and pending:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
            )  # fmt: skip
            self.progress.start()
            self.task = self.progress.add_task(self.what, total=pending)

    def on_result(self, summary: dict[str, Any]) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress.advance(self.task)
        state = f"error: {summary['error']}" if summary.get("error") else f"{summary.get('seconds', 0):.1f}s"
        if summary.get("error") or not self.live:
            self.console.print(f"[{self.done}/{self.total}] {summary['video_id']} {state}", highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def run_with_progress(what: str, run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``run(*args, on_plan=..., on_result=..., **kwargs)`` with a :class:`VideoProgress` attached."""
    progress = VideoProgress(what)
    try:
        return run(*args, on_plan=progress.on_plan, on_result=progress.on_result, **kwargs)
    finally:
        progress.close()


def report_json(report: Any, units: str) -> dict[str, Any]:
    """The one-line JSON a command prints per store."""
    rate = report.units / report.work_seconds if report.work_seconds > 0 else None
    return {
        "store": str(report.store),
        "content_hash": report.content_hash,
        "rows": report.rows,
        "videos": report.videos,
        "processed": report.processed,
        "skipped": report.skipped,
        "up_to_date": report.up_to_date,
        units: report.units,
        f"{units}_per_second_per_worker": None if rate is None else round(rate, 2),
        "wall_seconds": round(report.wall_seconds, 2),
    }


def resolve_preset(preset: str | None, clip_checkpoint: Path | None) -> str:
    """sage_vitb16 with a checkpoint; sage_tiny only when asked for (smoke runs, tests)."""
    if clip_checkpoint is not None:
        if preset not in (None, "sage_vitb16"):
            raise UserError(f"--preset {preset}: --clip-checkpoint is a ViT-B/16 checkpoint (sage_vitb16)")
        if not clip_checkpoint.is_file():
            raise FileNotFoundError(f"--clip-checkpoint: {clip_checkpoint} is not a file")
        return "sage_vitb16"
    if preset == "sage_tiny":
        return preset
    raise UserError(
        "--clip-checkpoint: pass the local CLIP ViT-B/16 checkpoint (or --preset sage_tiny for a smoke run)"
    )


def parallel_options(
    workers: str, address: str | None, gpus_per_actor: float, cpus_per_actor: float, actors: int | None
) -> Parallelism:
    if workers not in ("ray", "local"):
        raise UserError(f"--workers: expected ray or local, got {workers!r}")
    from harness.pipelines import Parallelism, Workers

    return Parallelism(
        workers=cast(Workers, workers),
        address=address,
        gpus_per_actor=gpus_per_actor,
        cpus_per_actor=cpus_per_actor,
        actors=actors,
    )


@app.command("extract")
@user_errors
def extract(
    videos: Path = typer.Option(
        ..., "--videos", help="Folder of the dataset's videos (<id>.mp4 or <group>/<id>.mp4)."
    ),
    annotations: Path = typer.Option(
        ..., "--annotations", help="Official annotation folder (VidVRD: train/ test/; VidOR: annotation/)."
    ),
    out: Path = typer.Option(..., "--out", help="Dataset root to write (then: harness run --data-root OUT)."),
    dataset: str = typer.Option("vidvrd", "--dataset", help="vidvrd or vidor."),
    split: list[str] = typer.Option(
        list(SPLITS), "--split", help="Split(s) to extract: train, test (repeatable)."
    ),
    source: str = typer.Option(
        "gt", "--source", help="gt (annotated trajectories) or det (needs --tracklets)."
    ),
    tracklets: Path | None = typer.Option(
        None, "--tracklets", help="Detected tracklets, OV-MMP JSON layout (det)."
    ),
    tracklet_frame_offset: int = typer.Option(
        0,
        "--tracklet-frame-offset",
        help="Added to every tracklet frame number (0 for OV-MMP's released VidVRD file).",
    ),
    clip_checkpoint: Path | None = typer.Option(
        None, "--clip-checkpoint", help="Local open_clip CLIP ViT-B/16 checkpoint (the paper's image tower)."
    ),
    preset: str | None = typer.Option(None, "--preset", help="sage_tiny for a weightless smoke run."),
    region: str = typer.Option(
        "roi_align", "--region", help="roi_align (paper, default) or crop (OV-MMP code)."
    ),
    batch_size: int = typer.Option(
        32, "--batch-size", min=1, help="Keyframes (roi_align) / crops per forward pass."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (inside each worker)."),
    workers: str = typer.Option("ray", "--workers", help="ray (Ray Data actors) or local (this process)."),
    address: str | None = typer.Option(
        None, "--address", help="Join this Ray cluster (else RAY_ADDRESS, else local)."
    ),
    gpus_per_actor: float = typer.Option(
        1.0, "--gpus-per-actor", help="GPUs per actor where the cluster has GPUs."
    ),
    cpus_per_actor: float = typer.Option(1.0, "--cpus-per-actor", help="CPUs per actor."),
    actors: int | None = typer.Option(
        None, "--actors", min=1, help="Actor count (default: one per GPU, else per CPU)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a store made with other settings."),
) -> None:
    """Decode keyframes, run the frozen CLIP image tower, pool subject/object/union/frame features."""
    from harness.pipelines import video_mapper
    from sage_model.features.extract import ExtractSettings
    from sage_model.features.runner import extract_split

    bad = [s for s in split if s not in SPLITS]
    if bad:
        raise UserError(f"--split: unknown split {bad[0]!r}; valid: train, test")
    if source == "det" and (tracklets is None or len(split) != 1):
        raise UserError("--source det: give exactly one --split and its --tracklets file")
    if not videos.is_dir():
        raise FileNotFoundError(f"--videos: {videos} is not a directory")
    chosen = resolve_preset(preset, clip_checkpoint)
    parallel = parallel_options(workers, address, gpus_per_actor, cpus_per_actor, actors)
    with video_mapper(parallel) as mapper:  # one Ray session for every split
        for name in dict.fromkeys(split):
            settings = ExtractSettings(
                dataset=dataset, split=name, source=source, preset=chosen, clip_checkpoint=clip_checkpoint,  # type: ignore[arg-type]
                region=region, batch_size=batch_size, device=device,  # type: ignore[arg-type]
            )  # fmt: skip
            report = run_with_progress(
                f"extract {dataset} {name}/{source}", extract_split, settings, annotations=annotations,
                videos=videos, root=out, tracklets=tracklets, tracklet_frame_offset=tracklet_frame_offset,
                overwrite=overwrite, mapper=mapper,
            )  # fmt: skip
            typer.echo(json.dumps(report_json(report, "keyframes")))
    sys.stdout.flush()
