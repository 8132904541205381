"""``harness tune STUDY``: search a study's ``tune:`` space with Optuna, trials on Ray Tune.

Exit codes: 0 the storage holds the target number of finished trials, 1 it does not (trials
failed or the search was interrupted: run the same command again to resume), 2 user error.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.panel import Panel

from harness.cli.app import app, user_errors
from harness.cli.run import SYNTHETIC_BANNER, _check_paths, parse_sets


@app.command("tune")
@user_errors
def tune(
    study: Path = typer.Argument(
        ..., help="Study file with a `tune:` block, e.g. studies/tune_loss_weights.yaml."
    ),
    trials: int | None = typer.Option(
        None, "--trials", min=1, help="Finished trials the search ends with (default: tune.trials)."
    ),
    max_concurrent: int | None = typer.Option(
        None,
        "--max-concurrent",
        min=1,
        help="At most K trials at once (default: tune.max_concurrent, else resources).",
    ),
    run_dir: Path = typer.Option(
        Path("runs"),
        "--run-dir",
        help="Optuna storage (<run-dir>/tuning/<study>/optuna.db), MLflow store, scratch.",
    ),
    reports_dir: Path = typer.Option(
        Path("reports/tuning"), "--reports-dir", help="Where the best values and the report are written."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Join this Ray cluster (else RAY_ADDRESS, else a private local Ray)."
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Real dataset root (annotations + features); default: synthetic data."
    ),
    clip_checkpoint: Path | None = typer.Option(
        None,
        "--clip-checkpoint",
        help="Local open_clip ViT-B/16 checkpoint (selects model.preset=sage_vitb16).",
    ),
    teacher: str | None = typer.Option(
        None, "--teacher", help="Teacher artifact under <data-root>/teachers/."
    ),
    schedule: str = typer.Option(
        "default", "--schedule", help="Training budget over the study's base: default or paper (as `harness run`)."
    ),
    set_: list[str] | None = typer.Option(
        None,
        "--set",
        metavar="PATH=VALUE",
        help="Config override for every search trial, YAML value, repeatable (not a searched path).",
    ),
    checkpoint_dir: Path | None = typer.Option(
        None,
        "--checkpoint-dir",
        help="Per-epoch training checkpoints (default <run-dir>/tuning/<study>/checkpoints); on a multi-node "
        "cluster a folder every node reaches.",
    ),
) -> None:
    """Search the study's `tune:` space; resumes an interrupted search where it stopped."""
    from harness.progress import fmt_duration
    from harness.tuning import TuneOptions, tune_study

    _check_paths(data_root, clip_checkpoint)
    options = TuneOptions(
        run_dir=run_dir,
        reports_dir=reports_dir,
        trials=trials,
        max_concurrent=max_concurrent,
        address=address,
        data_root=data_root,
        clip_checkpoint=clip_checkpoint,
        teacher=teacher,
        schedule=schedule,
        overrides=parse_sets(set_ or []),
        checkpoint_dir=checkpoint_dir,
    )
    console = Console(stderr=True)
    if data_root is None:
        console.print(Panel(SYNTHETIC_BANNER, title="embedded default", style="bold yellow"))
    try:
        outcome = tune_study(study, options, say=lambda line: console.print(line, highlight=False))
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to resume the search", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(
        f"{outcome.study}: {outcome.finished} of {outcome.target} trials finished ({outcome.complete} complete, "
        f"{outcome.pruned} pruned); {outcome.ran_now} run now in {fmt_duration(outcome.wall_s)}"
        + (" [SYNTHETIC DATA]" if outcome.synthetic else "")
    )
    if outcome.best_value is not None:
        values = ", ".join(f"{k}={v:.4g}" for k, v in outcome.best_params.items())
        typer.echo(f"best:    {outcome.best_value:.4g} with {values}")
    typer.echo(f"values:  {outcome.best_file or '(no complete trial yet)'}")
    typer.echo(f"report:  {outcome.report_file}")
    typer.echo(f"optuna:  {outcome.storage}")
    typer.echo(f"mlflow:  {outcome.tracking_uri} (experiment {outcome.study}-tuning)")
    if outcome.failed_now:
        typer.echo(f"{len(outcome.failed_now)} trial(s) failed (not counted):", err=True)
        for number, error in outcome.failed_now:
            typer.echo(f"  trial {number}: {error}", err=True)
    if outcome.exit_code:
        typer.echo("the search is short of its target: run the same command again to resume it", err=True)
        raise typer.Exit(code=outcome.exit_code)
