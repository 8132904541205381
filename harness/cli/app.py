"""The typer application and the error policy shared by every command."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
import typer

app = typer.Typer(
    name="harness",
    help="Benchmark and ablation harness for SAGE (open-vocabulary video visual relation detection).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

_DEBUG = {"on": False}


class UserError(Exception):
    """An error in what the user gave us (file, field, value): one line, exit code 2."""


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level."),
) -> None:
    _DEBUG["on"] = debug or os.environ.get("HARNESS_DEBUG") == "1"
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def user_errors(func: F) -> F:
    """User-input errors become their message on stderr and exit code 2; anything else is a bug.

    A user error (``UserError``, ``ValueError``, ``FileNotFoundError``, ``PermissionError``) prints
    every line of its message (a study error names each problem on its own line). Any other
    exception (a ``KeyError`` or ``TypeError`` from our own code) is not dressed up as the user's
    fault: one line saying it is an internal error, exit code 1, ``--debug`` for the traceback.
    Other ``OSError``s (disk, network) exit 1 with their message.
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise  # the command's own exit, not an error
        except (UserError, ValueError, FileNotFoundError, PermissionError) as exc:
            if _DEBUG["on"]:
                raise
            for line in str(exc).splitlines() or [type(exc).__name__]:
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(code=2) from None
        except OSError as exc:  # the machine's fault (disk, network), neither the user's nor ours
            if _DEBUG["on"]:
                raise
            typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            raise typer.Exit(code=1) from None
        except Exception as exc:
            if _DEBUG["on"]:
                raise
            first = (str(exc).splitlines() or [""])[0]
            typer.echo(
                f"internal error: {type(exc).__name__}: {first} (a bug in harness, not in your input; "
                "rerun with --debug for the traceback)",
                err=True,
            )
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    app(prog_name="harness")
    sys.exit(0)
