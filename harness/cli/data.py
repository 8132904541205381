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
    videos: int = typer.Option(
        _DEFAULTS.synthetic_videos, "--videos", help="Videos per split (train and test); 1000 ~ VidVRD scale."
    ),
    seed: int = typer.Option(_DEFAULTS.synthetic_seed, "--seed", help="Generator seed."),
    feature_dim: int = typer.Option(64, "--feature-dim", help="Feature width D (64 = the sage_tiny CLIP)."),
) -> None:
    """Write a synthetic dataset root: official-format annotations, tracklets, feature and teacher stores."""
    from sage_model.data.synth import ensure_synthetic

    started = time.perf_counter()
    root = ensure_synthetic(dataset, out, videos, seed, feature_dim)
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
