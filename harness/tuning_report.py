"""What `harness tune` leaves behind: the best values as a ready-to-paste variant, and a report.

- ``reports/tuning/<study>.yaml``: ``variant: {name: tuned, overrides: {...}}`` (paste it into a
  study's ``variants:``, or its overrides into ``base:``), the objective of the best trial and the
  trial counts, under a header saying how it was made and, when so, that the data was synthetic.
- ``reports/tuning/<study>.md`` with two PNGs beside it: the optimisation history (objective per
  trial, best so far, and the per-epoch curves that drove the pruning) and the parameter
  importances (fANOVA over the complete trials; the report says why when they are missing).

Pure rendering: the numbers come in a :class:`SearchSummary` (built from the Optuna storage by
:func:`harness.tuning.summarize`); nothing here imports Optuna.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless

import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

SYNTHETIC_NOTE = (
    "SYNTHETIC DATA: measured on the embedded synthetic dataset with the tiny random CLIP (sage_tiny). "
    "These values prove the search runs end to end; they mean nothing for the paper's setting. "
    "Rerun with --data-root (and --clip-checkpoint) for real values."
)


@dataclass(frozen=True)
class TrialRow:
    """One Optuna trial as the report shows it."""

    number: int
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING
    value: float | None  # COMPLETE: the objective; PRUNED: its last reported value
    params: dict[str, float]
    curve: list[float]  # the objective after each epoch
    trial_id: str


@dataclass(frozen=True)
class SearchSummary:
    """A search as read from its storage."""

    study: str
    study_version: int
    metric: str
    direction: str  # maximize | minimize
    target: int
    trials: list[TrialRow]
    importances: dict[str, float] | None
    importance_note: str
    synthetic: bool
    storage: str
    git: str
    made_at: str
    pruner: str
    sampler_seed: int

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)

    @property
    def best(self) -> TrialRow | None:
        """The best COMPLETE trial (pruned values are partial, failed ones have none)."""
        done = [t for t in self.trials if t.state == "COMPLETE" and t.value is not None]
        if not done:
            return None
        pick = max if self.direction == "maximize" else min
        return pick(done, key=lambda t: (t.value, -t.number))


def _sig(value: float) -> float:
    """Six significant digits: enough for a loss weight, short enough to read."""
    return float(f"{value:.6g}")


def best_values(summary: SearchSummary) -> dict:
    """The data of ``reports/tuning/<study>.yaml`` (None when no trial completed)."""
    best = summary.best
    if best is None or best.value is None:
        return {}
    return {
        "variant": {"name": "tuned", "overrides": {k: _sig(v) for k, v in best.params.items()}},
        "objective": {
            "metric": summary.metric,
            "direction": summary.direction,
            "value": _sig(best.value),
            "trial": best.number,
        },
        "trials": {
            "target": summary.target,
            "complete": summary.count("COMPLETE"),
            "pruned": summary.count("PRUNED"),
            "failed": summary.count("FAIL"),
        },
        "study": summary.study,
        "synthetic": summary.synthetic,
    }


def _header(summary: SearchSummary, comment: str) -> list[str]:
    lines = [
        f"Best values of the Optuna search of study `{summary.study}` (version {summary.study_version}).",
        f"Made by `harness tune` at {summary.made_at} from {summary.storage} (git {summary.git}).",
        f"Objective: {summary.direction} {summary.metric} (validation videos held out of the training split).",
    ]
    if summary.synthetic:
        lines.append(SYNTHETIC_NOTE)
    return [f"{comment} {line}" if comment else line for line in lines]


def _atomic_write(path: Path, text: str | bytes) -> None:
    """Temp file + rename: a crash never leaves half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(text.encode() if isinstance(text, str) else text)
    os.replace(tmp, path)


def write_best_values(summary: SearchSummary, path: Path) -> Path | None:
    """Write the ready-to-paste variant; None (and nothing written) when no trial completed."""
    data = best_values(summary)
    if not data:
        return None
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    paste = "# Paste `variant` into a study's `variants:` list (or its overrides into `base:`)."
    _atomic_write(path, "\n".join([*_header(summary, "#"), paste, body]))
    return path


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _banner(fig: plt.Figure, summary: SearchSummary) -> None:
    if summary.synthetic:
        fig.text(
            0.5, 0.995, "SYNTHETIC DATA: not meaningful for the paper", ha="center", va="top", color="red"
        )


def plot_history(summary: SearchSummary, path: Path) -> Path:
    """Left: objective per trial (pruned: last reported value) and best so far. Right: the
    per-epoch curves the pruner saw."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    pick = max if summary.direction == "maximize" else min
    best_so_far, xs, ys = None, [], []
    for row in sorted(summary.trials, key=lambda r: r.number):
        if row.state == "COMPLETE" and row.value is not None:
            best_so_far = row.value if best_so_far is None else pick(best_so_far, row.value)
        if best_so_far is not None:
            xs.append(row.number)
            ys.append(best_so_far)
    for state, style in (
        ("COMPLETE", {"color": "#1f77b4", "marker": "o"}),
        ("PRUNED", {"color": "#7f7f7f", "marker": "x"}),
    ):
        rows = [r for r in summary.trials if r.state == state and r.value is not None]
        left.scatter([r.number for r in rows], [r.value for r in rows], label=state.lower(), **style)
    if xs:
        left.step(xs, ys, where="post", color="#d62728", label="best so far")
    left.set(xlabel="trial", ylabel=summary.metric, title="optimisation history")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.legend(fontsize=8)
    for row in summary.trials:
        if row.curve:
            color = "#7f7f7f" if row.state == "PRUNED" else "#1f77b4"
            right.plot(range(1, len(row.curve) + 1), row.curve, color=color, alpha=0.6, marker=".")
    right.set(xlabel="epoch (both stages)", ylabel=summary.metric, title="per-epoch objective (grey: pruned)")
    _banner(fig, summary)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)


def plot_importances(summary: SearchSummary, path: Path) -> Path | None:
    """Horizontal bars of the parameter importances; None when there are none."""
    if not summary.importances:
        return None
    names = list(summary.importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.6 * len(names) + 1.5))
    ax.barh(names, [summary.importances[n] for n in names], color="#1f77b4")
    ax.set(xlabel="importance (fANOVA)", xlim=(0, 1), title="parameter importances")
    _banner(fig, summary)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------
# The Markdown report
# --------------------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def render_report(summary: SearchSummary, history_png: str, importance_png: str | None) -> str:
    """The Markdown report (plots referenced by file name, stored beside it)."""
    header = _header(summary, "")
    if summary.synthetic:
        header[-1] = f"**{SYNTHETIC_NOTE}**"
    lines = [f"# Tuning: {summary.study}", "", *[part for line in header for part in (line, "")]]
    finished = summary.count("COMPLETE") + summary.count("PRUNED")
    lines += [
        f"Trials: {finished} of {summary.target} finished ({summary.count('COMPLETE')} complete, "
        f"{summary.count('PRUNED')} pruned by the {summary.pruner} pruner), {summary.count('FAIL')} failed "
        f"(not counted). Sampler: TPE, seed {summary.sampler_seed}.",
        "",
    ]
    best = summary.best
    if best is not None:
        lines += ["## Best trial", "", f"Trial {best.number}: {summary.metric} = {_num(best.value)}", ""]
        lines += ["| config path | best value |", "|---|---|"] + [
            f"| `{k}` | {_sig(v):g} |" for k, v in best.params.items()
        ]
        lines += ["", f"Ready-to-paste variant: `{summary.study}.yaml` beside this file.", ""]
    lines += ["## Optimisation history", "", f"![optimisation history]({history_png})", ""]
    lines += ["## Parameter importances", ""]
    if importance_png:
        lines += [f"![parameter importances]({importance_png})", "", summary.importance_note, ""]
        lines += ["| config path | importance |", "|---|---|"]
        lines += [f"| `{k}` | {v:.3f} |" for k, v in (summary.importances or {}).items()] + [""]
    else:
        lines += [f"Not computed: {summary.importance_note}.", ""]
    lines += _trial_table(summary)
    return "\n".join(lines) + "\n"


def _trial_table(summary: SearchSummary) -> list[str]:
    names = list(dict.fromkeys(k for t in summary.trials for k in t.params))
    head = ["trial", "state", summary.metric, "epochs", *[f"`{n}`" for n in names]]
    lines = ["## Trials", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in sorted(summary.trials, key=lambda r: r.number):
        cells = [str(t.number), t.state.lower(), _num(t.value), str(len(t.curve))]
        cells += [_num(t.params.get(n)) for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_outputs(summary: SearchSummary, reports_dir: Path) -> tuple[Path | None, Path]:
    """Best-values YAML (when a trial completed), the history and importance plots, the report."""
    reports_dir = Path(reports_dir)
    best = write_best_values(summary, reports_dir / f"{summary.study}.yaml")
    history = plot_history(summary, reports_dir / f"{summary.study}_history.png")
    importance = plot_importances(summary, reports_dir / f"{summary.study}_importance.png")
    if importance is None:
        (reports_dir / f"{summary.study}_importance.png").unlink(missing_ok=True)  # a stale one would mislead
    text = render_report(summary, history.name, importance.name if importance else None)
    report = reports_dir / f"{summary.study}.md"
    _atomic_write(report, text)
    return best, report
