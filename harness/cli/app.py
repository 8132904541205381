"""The typer application and the error policy shared by every command."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

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
    """Turn user-input exceptions into a one-line message on stderr and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (UserError, ValueError, FileNotFoundError, KeyError, PermissionError) as exc:
            if _DEBUG["on"]:
                raise
            message = str(exc) if not isinstance(exc, KeyError) else f"missing key {exc}"
            typer.echo(f"error: {message.splitlines()[0] if message else type(exc).__name__}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    app(prog_name="harness")
    sys.exit(0)
