"""The live view of a running study (CLI only): trials pending / running / done / failed.

On a terminal it is a rich table refreshed in place with elapsed time and an ETA; elsewhere (CI
logs, pipes) it prints one line per event instead, so logs stay readable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from harness.spec import TrialSpec
from harness.trial import TrialOutcome

_STYLE = {
    "pending": "dim",
    "running": "cyan",
    "finished": "green",
    "failed": "bold red",
    "skipped": "dim green",
}
_LABEL = {"finished": "done", "skipped": "done (kept)"}
_MAX_ROWS = 24


def fmt_duration(seconds: float | None) -> str:
    """``1h02m``, ``3m07s``, ``42s``; an em dash when unknown."""
    if seconds is None:
        return "—"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class _Row:
    trial_id: str
    variant: str
    seed: int
    status: str = "pending"
    started: float | None = None
    ended: float | None = None
    epoch: str = ""
    error: str = ""


class StudyProgress:
    """A :class:`harness.runner.StudyEvents` sink that renders the study's trials."""

    def __init__(self, study: str, console: Console | None = None) -> None:
        self.study = study
        self.console = console or Console(stderr=True)
        self.rows: dict[str, _Row] = {}
        self.phase_text = "expanding"
        self.start = time.monotonic()
        self.live: Live | None = None

    # -- StudyEvents ---------------------------------------------------------------------------
    def planned(self, trials: Sequence[TrialSpec], skipped: Sequence[TrialSpec]) -> None:
        for trial in skipped:
            self.rows[trial.trial_id] = _Row(trial.trial_id, trial.variant, trial.seed, "skipped")
        for trial in trials:
            self.rows[trial.trial_id] = _Row(trial.trial_id, trial.variant, trial.seed)
        if self.console.is_terminal and trials:
            self.live = Live(self, console=self.console, refresh_per_second=2, transient=False)
            self.live.start()
        elif trials:
            self.console.print(f"{self.study}: {len(trials)} trial(s) to run, {len(skipped)} already done")

    def phase(self, text: str) -> None:
        self.phase_text = text
        self._line(f"{self.study}: {text}")

    def started(self, trial_id: str) -> None:
        row = self.rows[trial_id]
        row.status, row.started = "running", time.monotonic()
        self._line(f"  start  {trial_id}")

    def epoch(self, trial_id: str, stage: int, epoch: int, metrics: dict[str, float]) -> None:
        self.rows[trial_id].epoch = f"stage {stage} ep {epoch}"

    def ended(self, outcome: TrialOutcome) -> None:
        row = self.rows[outcome.trial_id]
        row.status, row.ended, row.error = outcome.status, time.monotonic(), outcome.error or ""
        word = "done" if outcome.status == "finished" else outcome.status
        suffix = f": {outcome.error}" if outcome.error else ""
        self._line(f"  {word:<6} {outcome.trial_id} ({fmt_duration(self._elapsed(row))}){suffix}")

    # -- rendering -----------------------------------------------------------------------------
    def stop(self) -> None:
        if self.live is not None:
            self.live.refresh()
            self.live.stop()
            self.live = None

    def _line(self, text: str) -> None:
        if self.live is None:
            self.console.print(text, highlight=False)

    def _elapsed(self, row: _Row) -> float | None:
        if row.started is None:
            return None
        return (row.ended or time.monotonic()) - row.started

    def counts(self) -> dict[str, int]:
        counts = {"pending": 0, "running": 0, "finished": 0, "failed": 0, "skipped": 0}
        for row in self.rows.values():
            counts[row.status] += 1
        return counts

    def eta(self) -> float | None:
        """Remaining time: mean trial duration so far x trials left / trials running at once."""
        done = [
            self._elapsed(r) for r in self.rows.values() if r.status in ("finished", "failed") and r.started
        ]
        running = [r for r in self.rows.values() if r.status == "running"]
        pending = sum(r.status == "pending" for r in self.rows.values())
        if not done:
            return None
        mean = sum(d for d in done if d is not None) / len(done)
        slots = max(1, len(running))
        left_running = sum(max(0.0, mean - (self._elapsed(r) or 0.0)) for r in running) / slots
        return left_running + mean * pending / slots

    def __rich__(self) -> Group:
        counts = self.counts()
        header = Text.assemble(
            (f"{self.study}", "bold"),
            f"  {self.phase_text}   ",
            (f"{counts['pending']} pending", _STYLE["pending"]),
            " / ",
            (f"{counts['running']} running", _STYLE["running"]),
            " / ",
            (f"{counts['finished'] + counts['skipped']} done", _STYLE["finished"]),
            " / ",
            (f"{counts['failed']} failed", _STYLE["failed"]),
            f"   elapsed {fmt_duration(time.monotonic() - self.start)}   ETA {fmt_duration(self.eta())}",
        )
        table = Table(box=None, pad_edge=False, header_style="bold")
        for name in ("trial", "variant", "seed", "status", "progress", "elapsed"):
            table.add_column(name)
        for row in self._visible_rows():
            table.add_row(
                row.trial_id,
                row.variant,
                str(row.seed),
                Text(_LABEL.get(row.status, row.status), style=_STYLE[row.status]),
                row.error[:60] if row.error else row.epoch,
                fmt_duration(self._elapsed(row)),
            )
        return Group(header, table)

    def _visible_rows(self) -> list[_Row]:
        """All rows for small studies; for big ones the interesting rows first."""
        rows = list(self.rows.values())
        if len(rows) <= _MAX_ROWS:
            return rows
        order = {"running": 0, "failed": 1, "finished": 2, "pending": 3, "skipped": 4}
        return sorted(rows, key=lambda r: order[r.status])[:_MAX_ROWS]
