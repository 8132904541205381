"""`harness data`: make the embedded synthetic datasets and check annotation folders."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from harness.cli.app import UserError, app, user_errors
from sage_model.config import DataConfig

_DEFAULTS = DataConfig()

data_app = typer.Typer(help="Synthetic datasets and annotation checks.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("synth")
@user_errors
def synth(
    dataset: str = typer.Option(
        "vidvrd", "--dataset", help="vidvrd or vidor (real vocabularies and splits)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Dataset root to write (reused if it holds the same settings)."
    ),
    videos: int | None = typer.Option(
        None,
        "--videos",
        help=f"Videos per split (default {_DEFAULTS.synthetic_videos}); with --shape paper the train split "
        "(default 800) and a quarter of it for test, as VidVRD's 800/200.",
    ),
    test_videos: int | None = typer.Option(
        None,
        "--test-videos",
        help="Videos of the test split when they differ from --videos (the studies' default: 200, VidVRD's test "
        "size); the training split does not change.",
    ),
    seed: int = typer.Option(_DEFAULTS.synthetic_seed, "--seed", help="Generator seed."),
    feature_dim: int | None = typer.Option(
        None, "--feature-dim", help="Feature width D (default 64 = the sage_tiny CLIP; the checkpoint's width with --clip-checkpoint)."
    ),
    shape: str = typer.Option(
        "default", "--shape", help="default (small videos) or paper (VidVRD's lengths, objects and 800/200 splits)."
    ),
    clip_checkpoint: Path | None = typer.Option(
        None,
        "--clip-checkpoint",
        help="CLIP ViT-B/16 checkpoint whose text tower gives the class semantics and whose fingerprint the root "
        "records (run the root with the same --clip-checkpoint); required by --shape paper.",
    ),
) -> None:
    """Write a synthetic dataset root: official-format annotations, tracklets, feature and teacher stores."""
    from sage_model.data.shapes import default_videos
    from sage_model.data.synth import ensure_synthetic

    if shape == "paper" and clip_checkpoint is None:
        raise UserError(
            "--shape paper: needs --clip-checkpoint (a CLIP ViT-B/16 checkpoint, random weights will do: "
            "python benchmarks/make_random_clip.py OUT.pt)"
        )
    if clip_checkpoint is not None and not clip_checkpoint.is_file():
        raise UserError(f"--clip-checkpoint: {clip_checkpoint} is not a file")
    videos = videos or default_videos(shape) or _DEFAULTS.synthetic_videos
    width = feature_dim or 64
    if clip_checkpoint is not None and feature_dim is None:
        from sage_model.clip import preset_identity

        width = int(preset_identity("sage_vitb16", clip_checkpoint)["embed_dim"])
    started = time.perf_counter()
    root = ensure_synthetic(
        dataset, out, videos, seed, width, shape=shape, clip_checkpoint=clip_checkpoint, test_videos=test_videos
    )
    info = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    typer.echo(
        json.dumps(
            {
                "root": str(root),
                "dataset": info["dataset"],
                "splits": info["splits"],
                "seconds": round(time.perf_counter() - started, 2),
            },
            indent=1,
        )
    )


@data_app.command("check")
@user_errors
def check(
    directory: Path = typer.Argument(..., help="Dataset root, or an official annotation folder."),
    dataset: str | None = typer.Option(
        None, "--dataset", help="vidvrd or vidor; detected from the layout if omitted."
    ),
) -> None:
    """Validate every annotation file (official format) and print JSON counts per split."""
    from sage_model.data.checks import check_annotation_folder

    if not directory.is_dir():
        raise UserError(f"{directory}: not a directory")
    typer.echo(json.dumps(check_annotation_folder(directory, dataset), indent=1))
