"""``harness validate [STUDY...]``: parse every study, apply every override, count its trials."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.cli.app import UserError, app, user_errors


@app.command("validate")
@user_errors
def validate(
    studies: list[Path] | None = typer.Argument(None, help="Study files; default: studies/*.yaml."),
    studies_dir: Path = typer.Option(
        Path("studies"), "--studies-dir", help="Where to look when none are given."
    ),
) -> None:
    """Check study files (unknown keys, bad override paths and values fail with file:line) and
    print each one's trial count. Exit 2 when any file is invalid."""
    from harness.expand import expand_study
    from harness.spec import load_study

    paths = list(studies) if studies else sorted(studies_dir.glob("*.yaml"))
    if not paths:
        raise UserError(f"no study files given and none found under {studies_dir}/")
    bad = 0
    for path in paths:
        try:
            spec = load_study(path)
            n = len(expand_study(spec))
        except (ValueError, FileNotFoundError) as exc:
            bad += 1
            for line in str(exc).splitlines():
                typer.echo(f"error: {line}", err=True)
            continue
        shape = f"{len(spec.variants)} variants x {len(spec.datasets)} datasets x {len(spec.seeds)} seeds"
        typer.echo(f"ok  {path}: {n} trials ({shape})")
    if bad:
        if len(paths) > 1:
            typer.echo(f"{bad} of {len(paths)} study file(s) invalid", err=True)
        raise typer.Exit(code=2)
