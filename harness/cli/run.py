"""``harness run STUDY``: every unfinished trial of a study, scheduled on Ray, tracked in MLflow.

Exit codes: 0 every trial done, 1 some trials failed (listed with their errors), 2 user error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import yaml
from rich.console import Console
from rich.panel import Panel

from harness.cli.app import UserError, app, user_errors

if TYPE_CHECKING:
    from harness.runner import StudyOutcome

SYNTHETIC_BANNER = (
    "SYNTHETIC DATA: no --data-root given, so every trial runs on the embedded synthetic dataset "
    "with the tiny random CLIP (sage_tiny). This proves the pipeline end to end; its numbers are "
    "NOT comparable to the paper's. Pass --data-root (and --clip-checkpoint) for the real thing."
)


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """``"0,1"`` -> (0, 1); errors name the flag."""
    if text is None:
        return None
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"--seeds: expected comma-separated integers like 0,1, got {text!r}") from None
    if not seeds:
        raise UserError("--seeds: no seeds given")
    return seeds


def parse_sets(items: list[str]) -> tuple[tuple[str, Any], ...]:
    """``["train.stage1_epochs=30"]`` -> (("train.stage1_epochs", 30),); values are YAML scalars."""
    parsed: dict[str, Any] = {}
    for item in items:
        path, sep, raw = item.partition("=")
        if not sep or not path.strip():
            raise UserError(f"--set {item!r}: expected PATH=VALUE, e.g. --set train.stage1_epochs=30")
        try:
            parsed[path.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise UserError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
    return tuple(parsed.items())


def _check_paths(data_root: Path | None, clip_checkpoint: Path | None) -> None:
    if data_root is not None and not data_root.is_dir():
        raise FileNotFoundError(f"--data-root: {data_root} is not a directory")
    if clip_checkpoint is not None and not clip_checkpoint.is_file():
        raise FileNotFoundError(f"--clip-checkpoint: {clip_checkpoint} is not a file")


def _report_tracking_errors(errors: list[str], shown: int = 5) -> None:
    """Tracking failures did not stop the study; say so once, at the end, where it is read."""
    if not errors:
        return
    typer.echo(
        f"warning: {len(errors)} tracking problem(s); every finished trial's result is in Parquet, "
        "its MLflow run may be incomplete (use --strict-tracking to make these fatal):",
        err=True,
    )
    for line in errors[:shown]:
        typer.echo(f"  {line}", err=True)
    if len(errors) > shown:
        typer.echo(f"  ... and {len(errors) - shown} more", err=True)


@app.command("run")
@user_errors
def run(
    studies: list[Path] = typer.Argument(
        ...,
        help="Study file(s), e.g. studies/table8_layers.yaml; several (studies/*.yaml) run as one schedule.",
    ),
    max_concurrent: int | None = typer.Option(
        None,
        "--max-concurrent",
        min=1,
        help="At most K trials at once (default: as many as resources allow).",
    ),
    address: str | None = typer.Option(
        None, "--address", help="Join this Ray cluster (else RAY_ADDRESS, else a private local Ray)."
    ),
    force: bool = typer.Option(False, "--force", help="Rerun trials whose result file already exists."),
    run_dir: Path = typer.Option(
        Path("runs"), "--run-dir", help="MLflow store, trial scratch, Tune state, lock."
    ),
    results_dir: Path | None = typer.Option(
        None,
        "--results-dir",
        help="Parquet results (default results/; with --smoke <run-dir>/smoke-results/).",
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
        None,
        "--teacher",
        help="Teacher artifact under <data-root>/teachers/ (variants may still choose their own).",
    ),
    seeds: str | None = typer.Option(None, "--seeds", help="Run only these of the study's seeds, e.g. 0,1."),
    variants: list[str] | None = typer.Option(
        None, "--variant", metavar="NAME", help="Run only the variants of this name (repeatable), e.g. --variant Ours; a name no study has exits 2."
    ),
    smoke: bool = typer.Option(
        False, "--smoke", help="One seed, one epoch per stage, 4 synthetic videos, training on 1 and scoring 1: a quick check."
    ),
    retries: int = typer.Option(
        0, "--retries", min=0, help="Start a failing trial again up to N times (exception or dead process)."
    ),
    checkpoint_dir: Path | None = typer.Option(
        None,
        "--checkpoint-dir",
        help="Per-epoch training checkpoints (default <results-dir>/.checkpoints): on a multi-node cluster a "
        "folder every node reaches, so a retried trial resumes from its last epoch on any node.",
    ),
    strict_tracking: bool = typer.Option(
        False,
        "--strict-tracking",
        help="Tracking errors fail the trial, an unreachable MLflow stops the study (default: report them at the end).",
    ),
    min_free_mb: float = typer.Option(
        200.0, "--min-free-mb", min=0, help="Free space --results-dir and --run-dir need before trials start."
    ),
    set_: list[str] | None = typer.Option(
        None,
        "--set",
        metavar="PATH=VALUE",
        help="Config override for every trial, YAML value, repeatable: --set train.stage1_epochs=30.",
    ),
    schedule: str = typer.Option(
        "default",
        "--schedule",
        help="Training budget over each study's base: default (its short budget) or paper (30 + 30 epochs, "
        "AdamW 1e-3, x0.1 at 15/20/25, batch 32); see docs/harness.md.",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the trials to run and done, wall time, GPU-hours and peak memory per trial; start, lock "
        "and write nothing.",
    ),
    gpu_mem_gb: float | None = typer.Option(
        None, "--gpu-mem-gb", min=0, help="--dry-run: memory of one GPU of the cluster (default: the local GPU's)."
    ),
) -> None:
    """Run studies: expand them into trials, skip finished ones, schedule the rest on Ray.

    Several studies run as one schedule (one Ray, trial processes reused across studies), each
    with its own lock, MLflow experiment and results folder.
    """
    from harness.progress import StudyProgress
    from harness.runner import RunOptions, run_studies
    from harness.spec import load_study

    _check_paths(data_root, clip_checkpoint)
    specs = [load_study(path) for path in studies]
    options = RunOptions(
        run_dir=run_dir,
        results_dir=results_dir or (run_dir / "smoke-results" if smoke else Path("results")),
        max_concurrent=max_concurrent,
        address=address,
        force=force,
        data_root=data_root,
        clip_checkpoint=clip_checkpoint,
        teacher=teacher,
        seeds=parse_seeds(seeds),
        variants=tuple(variants) if variants else None,
        smoke=smoke,
        retries=retries,
        strict_tracking=strict_tracking,
        min_free_mb=min_free_mb,
        overrides=parse_sets(set_ or []),
        schedule=schedule,
        checkpoint_dir=checkpoint_dir,
    )
    if dry_run:
        _dry_run(specs, options, gpu_mem_gb)
        return
    console = Console(stderr=True)
    if data_root is None:
        console.print(Panel(SYNTHETIC_BANNER, title="embedded default", style="bold yellow"))
    label = specs[0].name if len(specs) == 1 else f"{len(specs)} studies"
    progress = StudyProgress(label, console)
    try:
        outcomes = run_studies(studies, options, events=progress)  # paths: the study files are logged
    finally:
        progress.stop()
    failed = [trial for outcome in outcomes for trial in outcome.failures]
    for outcome in outcomes:
        _summarise(outcome)
    if failed:
        typer.echo(f"{len(failed)} trial(s) failed:", err=True)
        for trial in failed:
            typer.echo(f"  {trial.trial_id}: {trial.error}", err=True)
        raise typer.Exit(code=1)


def _dry_run(specs: list[Any], options: Any, gpu_mem_gb: float | None) -> None:
    """``--dry-run``: the cost of the launch (:mod:`harness.estimate`), nothing started or written."""
    from harness import estimate
    from harness.preflight import check_same_clip
    from harness.runner import check_variant_names, plan_study
    from harness.schedules import get_schedule

    get_schedule(options.schedule)
    if options.variants is not None:  # run_studies checks them on the other path
        check_variant_names(specs, options.variants)
    gpu_mem = gpu_mem_gb * 1024 if gpu_mem_gb is not None else estimate.local_gpu_mem_mb()
    tables: dict[int, estimate.CostTable] = {}
    studies = []
    for spec in specs:
        check_same_clip(plan_study(spec, options).to_run)
        threads = max(1, int(spec.resources.cpus))
        table = tables.setdefault(threads, estimate.CostTable(threads))
        studies.append(estimate.estimate_study(spec, options, table, gpu_mem))
    for line in estimate.render(studies):
        typer.echo(line)


def _summarise(outcome: StudyOutcome) -> None:
    """Three lines per study: counts and wall time, where the results and the runs are."""
    from harness.progress import fmt_duration

    name = outcome.study
    typer.echo(
        f"{name}: {outcome.count('finished')} finished, {outcome.count('skipped')} already done (skipped), "
        f"{len(outcome.failures)} failed in {fmt_duration(outcome.wall_s)}"
        + (" [SYNTHETIC DATA]" if outcome.synthetic else "")
    )
    typer.echo(f"results: {outcome.results_dir / name}/")
    if outcome.tracking_uri:
        typer.echo(f"mlflow:  {outcome.tracking_uri} (experiment {name})")
    _report_tracking_errors(outcome.tracking_errors)
