"""The `harness` command line: thin commands over library functions that tests also call.

Each command lives in its own module and registers itself on :data:`app` when imported; every
module is imported here by name, so a missing or broken command module is an ImportError at
start-up, never a silently absent command. User errors become their message and exit code 2
(``--debug`` shows the traceback).
"""

from __future__ import annotations

from harness.cli import (  # noqa: F401  (imported for their @app.command registrations)
    compare,
    data,
    evaluate,
    extract,
    report,
    run,
    teacher,
    tune,
    ui,
    validate,
)
from harness.cli.app import app, main

__all__ = ["app", "main"]
