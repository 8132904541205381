"""``harness teacher``: describe every pair of a dataset root's feature stores with an MLLM.

For each feature store ``<root>/features/<split>/<source>`` the teacher writes
``<root>/teachers/<name>/<split>/<source>/`` (CLIP text features of the four perspectives,
row-aligned, named and content-hashed) with every generated description in
``descriptions.parquet``. Train with it through ``data.teacher: <name>``. Recipe: docs/real_data.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from harness.cli.app import UserError, app, user_errors
from harness.cli.extract import SPLITS, parallel_options, report_json, resolve_preset, run_with_progress

SOURCES = ("gt", "det")


def _stores(root: Path, splits: list[str] | None, sources: list[str] | None) -> list[tuple[str, str]]:
    """The (split, source) feature stores to describe: the requested ones, or all that exist."""
    for s in splits or ():
        if s not in SPLITS:
            raise UserError(f"--split: unknown split {s!r}; valid: {', '.join(SPLITS)}")
    for s in sources or ():
        if s not in SOURCES:
            raise UserError(f"--source: unknown source {s!r}; valid: {', '.join(SOURCES)}")
    wanted = [(sp, so) for sp in (splits or SPLITS) for so in (sources or SOURCES)]
    present = [(sp, so) for sp, so in wanted if (root / "features" / sp / so / "manifest.json").is_file()]
    if splits and sources:
        missing = [f"{sp}/{so}" for sp, so in wanted if (sp, so) not in present]
        if missing:
            raise FileNotFoundError(
                f"{root / 'features' / missing[0]}: no feature store; run harness extract first"
            )
    if not present:
        raise FileNotFoundError(f"{root / 'features'}: no feature stores; run harness extract first")
    return present


@app.command("teacher")
@user_errors
def teacher(
    root: Path = typer.Option(..., "--root", help="Dataset root written by harness extract."),
    videos: Path = typer.Option(
        ..., "--videos", help="Folder of the dataset's videos (as given to extract)."
    ),
    backend: str = typer.Option(..., "--backend", help="asmv2 (paper), blip2, or tiny (random, for tests)."),
    model_path: Path | None = typer.Option(
        None, "--model-path", help="Local transformers model directory (asmv2, blip2); never downloaded."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Artifact name for data.teacher (default: the backend)."
    ),
    split: list[str] | None = typer.Option(
        None, "--split", help="train/test (repeatable; default: all present)."
    ),
    source: list[str] | None = typer.Option(
        None, "--source", help="gt/det (repeatable; default: all present)."
    ),
    clip_checkpoint: Path | None = typer.Option(
        None, "--clip-checkpoint", help="The CLIP ViT-B/16 checkpoint the features were extracted with."
    ),
    preset: str | None = typer.Option(None, "--preset", help="sage_tiny when the features are sage_tiny."),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", min=1, help="Tokens per description."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Prompts per generate call."),
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
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an artifact made with other settings."
    ),
) -> None:
    """Four targeted descriptions per pair and keyframe -> CLIP text features (the teacher artifact)."""
    from harness.pipelines import video_mapper
    from sage_model.features.runner import teacher_split
    from sage_model.features.teacher import TeacherSettings
    from sage_model.features.teacher_models import BACKENDS

    if backend not in BACKENDS:
        raise UserError(f"--backend: unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend != "tiny" and model_path is None:
        raise UserError(
            f"--model-path: the {backend} backend needs a local model directory (see docs/real_data.md)"
        )
    if model_path is not None and not model_path.is_dir():
        raise FileNotFoundError(f"--model-path: {model_path} is not a directory")
    chosen = resolve_preset(preset, clip_checkpoint)
    parallel = parallel_options(workers, address, gpus_per_actor, cpus_per_actor, actors)
    stores = _stores(root, split, source)
    with video_mapper(parallel) as mapper:  # one Ray session for every store
        for split_name, source_name in stores:
            settings = TeacherSettings(
                name=name or backend, backend=backend, model_path=model_path, split=split_name, source=source_name,  # type: ignore[arg-type]
                preset=chosen, clip_checkpoint=clip_checkpoint, max_new_tokens=max_new_tokens, batch_size=batch_size,  # type: ignore[arg-type]
            )  # fmt: skip
            report = run_with_progress(
                f"teacher {settings.name} {split_name}/{source_name}", teacher_split, settings, root=root,
                videos=videos, overwrite=overwrite, mapper=mapper,
            )  # fmt: skip
            typer.echo(json.dumps(report_json(report, "questions")))
