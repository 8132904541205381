"""``harness report --paper-tables``: the paper's tables beside ours, in Markdown and HTML."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from harness.cli.app import UserError, app, user_errors


@app.command("report")
@user_errors
def report(
    studies: list[str] | None = typer.Argument(
        None, help="Study names (table8_layers) or YAML paths; default: every study in --studies-dir."
    ),
    paper_tables: bool = typer.Option(
        False, "--paper-tables", help="Paper vs ours, table by table (the only report so far)."
    ),
    formats: str = typer.Option(
        "md,html",
        "--format",
        help="Comma-separated output formats: md, html, csv (every cell), tex (booktabs).",
    ),
    out: Path = typer.Option(Path("reports"), "--out", help="Folder the reports and plots are written to."),
    results: Path = typer.Option(
        Path("results"), "--results-dir", help="Parquet results of `harness run` (its --results-dir)."
    ),
    runs: Path = typer.Option(
        Path("runs"), "--run-dir", help="Run folder of `harness run` (its --run-dir): Fig. 4 analysis files."
    ),
    studies_dir: Path = typer.Option(
        Path("studies"), "--studies-dir", help="Where study names are looked up."
    ),
    check: bool = typer.Option(
        False, "--check", help="Exit 1 when a headline cell misses its tolerance or lacks its seeds."
    ),
) -> None:
    """Write the paper's tables beside ours (mean ± std over seeds, differences, rankings, plots)."""
    if not paper_tables:
        raise UserError("nothing to report: pass --paper-tables (e.g. `harness report --paper-tables`)")
    from harness.provenance import code_version, git_state
    from harness.report.paper import (
        load_results,
        parse_formats,
        report_meta,
        resolve_studies,
        write_paper_tables,
    )
    from harness.spec import load_study

    chosen = parse_formats(formats)
    specs = [load_study(path) for path in resolve_studies(studies, studies_dir)]
    if not results.is_dir():
        typer.echo(f"warning: {results} does not exist: every trial will be listed as missing", err=True)
    frame, videos = load_results(results, [spec.name for spec in specs])
    git = git_state()
    sha = git.sha[:12] + (" (dirty)" if git.dirty else "")
    meta = report_meta(_command_line(), results, sha, code_version=code_version())
    outcome = write_paper_tables(specs, frame, out, formats=chosen, meta=meta, runs_dir=runs, videos=videos)
    for table in outcome.tables:
        prov = table.provenance
        flag = " [SYNTHETIC]" if table.synthetic else ""
        typer.echo(
            f"{table.study}: {prov.trials_found}/{prov.trials_expected} trials{flag}, "
            f"{len(table.check_failures())} headline failure(s)"
        )
    typer.echo(f"wrote {len(outcome.files)} file(s) under {out}/ (open {out}/paper_tables.html)")
    _attach_plots(runs, [spec.name for spec in specs], outcome.files)
    if check and outcome.failures:
        for failure in outcome.failures:
            typer.echo(f"check: {failure}", err=True)
        typer.echo(f"check failed: {len(outcome.failures)} headline cell(s)", err=True)
        raise typer.Exit(code=1)


def _command_line() -> str:
    """The command as typed (for the report header), with the program name normalised."""
    return (
        shlex.join(["harness", *sys.argv[1:]])
        if sys.argv and "harness" in Path(sys.argv[0]).name
        else ("harness report --paper-tables")
    )


def _attach_plots(runs: Path, studies: list[str], files: tuple[Path, ...]) -> None:
    """Each study's plots onto its newest parent run, when the run dir has a tracking store."""
    from harness.tracking import attach_report

    plots = {
        s: [f for f in files if f.parent.name == "plots" and f.name.startswith(f"{s}-")] for s in studies
    }
    for line in attach_report(runs, plots):
        typer.echo(f"mlflow: {line}")
