"""``harness compare A B``: table-by-table paired differences between two result sets."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from harness.cli.app import UserError, app, user_errors


@app.command("compare")
@user_errors
def compare(
    a: Path = typer.Argument(..., help="Results directory A (the reference)."),
    b: Path | None = typer.Argument(None, help="Results directory B (omit with --commits)."),
    commits: tuple[str, str] | None = typer.Option(
        None,
        "--commits",
        help="Compare two commits (sha prefixes) within results directory A: A=SHA1, B=SHA2.",
    ),
    studies: list[str] | None = typer.Option(
        None, "--study", "-s", help="Study name or YAML (repeatable); default: every study with results."
    ),
    formats: str = typer.Option("md,html", "--format", help="Comma-separated output formats: md, html, csv."),
    out: Path = typer.Option(Path("reports/compare"), "--out", help="Folder the comparison is written to."),
    studies_dir: Path = typer.Option(
        Path("studies"), "--studies-dir", help="Where study names are looked up."
    ),
    check: bool = typer.Option(
        False, "--check", help="Exit 1 when a headline cell is significantly worse in B."
    ),
) -> None:
    """Did B change A's numbers? Paired differences with 95% intervals and Holm-corrected p-values."""
    from harness.report import compare as comparing
    from harness.report.paper import resolve_studies
    from harness.results import read_results, read_videos
    from harness.spec import load_study

    chosen = _formats(formats)
    if commits is not None and b is not None:
        raise UserError("give either two results directories or one with --commits SHA1 SHA2, not both")
    if commits is None and b is None:
        raise UserError("nothing to compare: give two results directories, or one with --commits SHA1 SHA2")
    for folder in (a, b):
        if folder is not None and not folder.is_dir():
            raise UserError(f"{folder}: no such results directory")
    names = studies or _studies_with_results([p for p in (a, b) if p is not None], studies_dir)
    specs = [load_study(path) for path in resolve_studies(names, studies_dir)] if names else []
    if commits is not None:
        everything = read_results(a, latest=False)
        frame_a, frame_b = (comparing.select_commit(everything, sha) for sha in commits)
        labels = (f"{a} at commit {commits[0]}", f"{a} at commit {commits[1]}")
        dirs = (a, a)
    else:
        assert b is not None
        frame_a, frame_b = read_results(a), read_results(b)
        labels, dirs = (str(a), str(b)), (a, b)
    side_a = (frame_a, read_videos(dirs[0], result_ids=set(frame_a["result_id"].to_list())))
    side_b = (frame_b, read_videos(dirs[1], result_ids=set(frame_b["result_id"].to_list())))
    result = comparing.compare(specs, side_a, side_b, *labels)
    command = (
        shlex.join(["harness", *sys.argv[1:]]) if "harness" in Path(sys.argv[0]).name else "harness compare"
    )
    out.mkdir(parents=True, exist_ok=True)
    writers = {
        "md": lambda: comparing.render_markdown(result, command),
        "html": lambda: comparing.render_html(result, command),
        "csv": lambda: comparing.render_csv(result),
    }
    for fmt_name in chosen:
        path = out / f"compare.{fmt_name}"
        path.write_text(writers[fmt_name](), encoding="utf-8")
        typer.echo(f"wrote {path}")
    for study in result.studies:
        missing = len(study.missing_a) + len(study.missing_b)
        worse = len(study.regressions())
        typer.echo(f"{study.study}: {worse} headline cell(s) worse in B, {missing} missing trial(s) listed")
    regressions = result.regressions()
    if check and regressions:
        for line in regressions:
            typer.echo(f"check: {line}", err=True)
        typer.echo(f"check failed: {len(regressions)} headline cell(s) significantly worse in B", err=True)
        raise typer.Exit(code=1)


def _formats(text: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    unknown = [f for f in formats if f not in ("md", "html", "csv")]
    if unknown or not formats:
        raise UserError(f"--format: {', '.join(unknown) or 'nothing'} not in md, html, csv")
    return formats


def _studies_with_results(folders: list[Path], studies_dir: Path) -> list[str]:
    """Studies that have a result folder in any of ``folders`` and a YAML in ``studies_dir``."""
    found = {
        p.name for folder in folders for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
    }
    known = {p.stem for p in studies_dir.glob("*.yaml")}
    missing = sorted(found - known)
    if missing:
        typer.echo(f"note: no study file in {studies_dir} for {', '.join(missing)}: not compared", err=True)
    from harness.report.paper import paper_order

    return sorted(found & known, key=paper_order)
