"""The `harness` command line: thin commands over library functions that tests also call.

Each command lives in its own module and registers itself on :data:`app`; user errors become a
one-line message and exit code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import importlib

from harness.cli.app import app, main

# Command modules register themselves on `app` when imported. A module that does not exist yet is
# simply not offered (the project is built command by command).
_COMMAND_MODULES = (
    "data",
    "evaluate",
    "validate",
    "run",
    "report",
    "compare",
    "tune",
    "extract",
    "teacher",
    "ui",
)

for _name in _COMMAND_MODULES:
    try:
        importlib.import_module(f"harness.cli.{_name}")
    except ModuleNotFoundError as exc:  # only tolerate the command module itself being absent
        if exc.name != f"harness.cli.{_name}":
            raise

__all__ = ["app", "main"]
