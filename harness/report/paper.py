"""``harness report --paper-tables``: studies + results -> Markdown, HTML and plots on disk.

The only module of the report package that touches the file system. It builds the tables
(``tables``), draws them (``plots``), renders them (``render_md``, ``render_html``) and writes:

    <out>/paper_tables.md, <out>/paper_tables.html    every requested table in one document
    <out>/<study>.md, <out>/<study>.html               one table each
    <out>/plots/<study>-<kind>.png                     the figures the Markdown links to
    <out>/paper_tables.csv, <out>/paper_tables.tex     every cell as data; booktabs tables (--format)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from harness.report import export
from harness.report import plots as plotting
from harness.report.fmt import ReportMeta
from harness.report.render_html import render_html
from harness.report.render_md import render_markdown
from harness.report.stability import stability_figure
from harness.report.tables import PaperTable, build_paper_table
from harness.spec import StudySpec

log = logging.getLogger(__name__)

FORMATS = ("md", "html", "csv", "tex")
INDEX_NAME = "paper_tables"

_STUDY_RE = re.compile(r"^(table|fig)(\d+)_")
_FIGURE_POSITION = {3: 4.5, 4: 11.5}  # where the paper discusses Fig. 3 (after Table 4) and Fig. 4


def paper_order(name: str) -> tuple[float, str]:
    """Sort key: the paper's order (Table 1, 2, 3, 4, Fig. 3, 5, ..., 11, Fig. 4), then by name."""
    match = _STUDY_RE.match(name)
    if match is None:
        return (float("inf"), name)
    number = int(match.group(2))
    return (float(number) if match.group(1) == "table" else _FIGURE_POSITION.get(number, number + 0.5), name)


def resolve_studies(names: list[str] | None, studies_dir: Path) -> list[Path]:
    """Study files from names (``table8_layers``) or paths; none given = every study in the folder."""
    if not names:
        paths = sorted(studies_dir.glob("*.yaml"), key=lambda p: paper_order(p.stem))
        if not paths:
            raise FileNotFoundError(f"{studies_dir}: no study files (*.yaml)")
        return paths
    resolved = []
    for name in names:
        path = Path(name)
        if not path.suffix:
            path = studies_dir / f"{name}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in studies_dir.glob("*.yaml")))
            raise FileNotFoundError(f"{name}: no such study (looked for {path}; known: {known})")
        resolved.append(path)
    return resolved


@dataclass(frozen=True)
class ReportOutcome:
    """What was written, and the headline cells ``--check`` rejects."""

    tables: tuple[PaperTable, ...]
    files: tuple[Path, ...]
    failures: tuple[str, ...]


def parse_formats(text: str) -> tuple[str, ...]:
    """``"md,html"`` -> ("md", "html"); an unknown format is a ValueError naming the valid ones."""
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"--format: {', '.join(unknown) or 'nothing'} not in {', '.join(FORMATS)}")
    return formats


def build_tables(
    specs: Sequence[StudySpec], results: pl.DataFrame, videos: pl.DataFrame | None = None
) -> list[PaperTable]:
    """One paper table per study spec, in the order given (``videos``: per-video rows, for intervals)."""
    return [build_paper_table(results, spec, videos) for spec in specs]


def load_results(
    results_dir: Path, studies: Sequence[str] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(metric rows of each trial's newest result, the per-video rows of exactly those results)."""
    from harness.results import read_results, read_videos

    names = list(studies) if studies else [None]
    frames = [read_results(results_dir, name) for name in names]
    results = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
    ids = set(results["result_id"].to_list())
    videos = [read_videos(results_dir, name, result_ids=ids) for name in names]
    return results, pl.concat(videos, how="vertical") if len(videos) > 1 else videos[0]


Figures = dict[str, list[tuple[str, str, bytes]]]
"""study -> [(kind slug, caption, PNG bytes)]."""


def render_figures(
    tables: Sequence[PaperTable], specs: Sequence[StudySpec], results: pl.DataFrame, runs_dir: Path
) -> tuple[list[PaperTable], Figures]:
    """Every table's figures (plus the Fig. 4 t-SNE where the study asks for it).

    Returns the tables again because the t-SNE step adds notes (what it found or missed).
    """
    figures: Figures = {}
    noted: list[PaperTable] = []
    for table, spec in zip(tables, specs, strict=True):
        items = [
            (slug, _caption(table, slug), plotting.png_bytes(fig))
            for slug, fig in plotting.table_figures(table)
        ]
        tsne, table = stability_figure(table, spec, results, runs_dir)
        if tsne is not None:
            items.append(("tsne", _caption(table, "tsne"), plotting.png_bytes(tsne)))
        figures[table.study] = items
        noted.append(table)
    return noted, figures


def _caption(table: PaperTable, slug: str) -> str:
    what = {
        "bars": "ours (bars: mean ± std over seeds) vs the paper (diamonds)",
        "sweep": "our curve (mean ± std) beside the paper's",
        "ratios": "ratios to the baseline variant, paper vs ours",
        "tsne": "t-SNE of relation-classifier features under visual noise",
    }[slug]
    mark = " [SYNTHETIC DATA]" if table.synthetic else ""
    return f"{table.paper or table.study}: {what}{mark}"


def write_paper_tables(
    specs: Sequence[StudySpec],
    results: pl.DataFrame,
    out_dir: Path,
    *,
    formats: Sequence[str] = ("md", "html"),
    meta: ReportMeta,
    runs_dir: Path = Path("runs"),
    videos: pl.DataFrame | None = None,
) -> ReportOutcome:
    """Build, draw, render and write the paper tables of ``specs``; returns what was written."""
    tables, figures = render_figures(build_tables(specs, results, videos), specs, results, runs_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "md" in formats:
        written += _write_plots(out_dir, figures)
    for name, subset in [(INDEX_NAME, tables), *((t.study, [t]) for t in tables)]:
        if "md" in formats:
            links = {
                t.study: [(cap, f"plots/{t.study}-{slug}.png") for slug, cap, _ in figures[t.study]]
                for t in subset
            }
            written.append(_write(out_dir / f"{name}.md", render_markdown(subset, meta, links)))
        if "html" in formats:
            images = {t.study: [(cap, png) for _, cap, png in figures[t.study]] for t in subset}
            written.append(_write(out_dir / f"{name}.html", render_html(subset, meta, images)))
    if "csv" in formats:
        written.append(_write(out_dir / f"{INDEX_NAME}.csv", export.render_csv(tables)))
    if "tex" in formats:
        written.append(_write(out_dir / f"{INDEX_NAME}.tex", export.render_tex(tables, meta)))
    failures = tuple(f for t in tables for f in t.check_failures())
    return ReportOutcome(tables=tuple(tables), files=tuple(written), failures=failures)


def _write_plots(out_dir: Path, figures: Figures) -> list[Path]:
    folder = out_dir / "plots"
    folder.mkdir(exist_ok=True)
    paths = []
    for study, items in figures.items():
        for slug, _, png in items:
            path = folder / f"{study}-{slug}.png"
            path.write_bytes(png)
            paths.append(path)
    return paths


def _write(path: Path, text: str) -> Path:
    """Write via a temporary file and rename, so a reader never sees half a report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def report_meta(
    command: str, results_dir: Path, git_sha: str, now: datetime | None = None, code_version: str = ""
) -> ReportMeta:
    """The provenance line of a report made now from ``results_dir`` (version-1 and -2 files)."""
    root = Path(results_dir)
    found = [*root.glob("*/*.parquet"), *root.glob("*/*/*.parquet")]
    files = sum(1 for p in found if not p.name.startswith("."))
    stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    return ReportMeta(
        command=command,
        results_dir=str(results_dir),
        result_files=files,
        generated_at=stamp,
        git_sha=git_sha,
        code_version=code_version,
    )
