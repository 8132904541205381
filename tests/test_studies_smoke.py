"""Every study smoke-runs end to end and the paper-table report is made from the results.

Real components throughout: every study file goes through ``harness.runner.run_studies`` (what
``harness run --smoke studies/*.yaml`` calls: first seed only, one epoch per stage, 4 synthetic
videos, training on 1 and scoring 1) as one schedule on a real local Ray cluster (2 CPUs) with the tiny CLIP and the embedded
synthetic data; then ``harness report --paper-tables`` writes every table in Markdown and HTML
with plots, the Fig. 4 t-SNE included.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.runner import RunOptions, StudyOutcome, run_studies
from harness.spec import load_study

STUDIES = sorted((Path(__file__).resolve().parents[1] / "studies").glob("*.yaml"))

pytestmark = [pytest.mark.slow, pytest.mark.all_studies, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict[str, StudyOutcome | Exception]]:
    """Run every study with --smoke as one schedule; returns (root, study -> outcome or error).

    What ``harness run --smoke studies/*.yaml`` does. A study that cannot even load is recorded,
    not raised, so that every other study still runs and each one's test reports its own failure.
    """
    root = tmp_path_factory.mktemp("smoke")
    options = RunOptions(run_dir=root / "runs", results_dir=root / "results", smoke=True, num_cpus=2)
    outcomes: dict[str, StudyOutcome | Exception] = {}
    specs = []
    for path in STUDIES:
        try:
            specs.append(load_study(path))
        except Exception as exc:  # reported by that study's test below
            outcomes[path.stem] = exc
    try:
        outcomes.update({o.study: o for o in run_studies(specs, options)})
    except Exception as exc:
        outcomes.update({spec.name: exc for spec in specs})
    return root, outcomes


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_smoke_runs_every_trial(smoke, path):
    _, outcomes = smoke
    outcome = outcomes[path.stem]
    if isinstance(outcome, Exception):
        pytest.fail(f"{path.name}: {type(outcome).__name__}: {outcome}")
    errors = [f"{t.trial_id}: {t.error}" for t in outcome.failures]
    assert not errors, "\n".join(errors)
    assert outcome.count("finished") == len(load_study(path).variants) * len(load_study(path).datasets)
    assert outcome.synthetic


def test_report_writes_every_table_in_markdown_and_html_with_plots(smoke):
    root, _ = smoke
    out = root / "reports"
    args = [
        "report",
        "--paper-tables",
        "--results-dir",
        str(root / "results"),
        "--run-dir",
        str(root / "runs"),
    ]
    ran = [p.stem for p in STUDIES if isinstance(smoke[1][p.stem], StudyOutcome)]
    result = CliRunner().invoke(app, [*args, "--out", str(out), *ran])
    assert result.exit_code == 0, result.output
    md = (out / "paper_tables.md").read_text()
    html = (out / "paper_tables.html").read_text()
    for path in (p for p in STUDIES if p.stem in ran):
        assert (out / f"{path.stem}.md").is_file() and (out / f"{path.stem}.html").is_file()
        assert f"`{path.stem}`" in md
        assert list((out / "plots").glob(f"{path.stem}-*.png")), f"no plot for {path.stem}"
        spec = load_study(path)
        smoke_trials = len(spec.variants) * len(spec.datasets)
        assert re.search(rf"\| `{path.stem}` \| synthetic \| {smoke_trials}/\d+ \|", md), path.stem
    assert (out / "plots" / "fig4_semantic_stability-tsne.png").is_file()
    assert html.count('src="data:image/png;base64,') >= len(ran)
    # smoke runs one seed: every ablation table must say its other seeds are missing, not hide it
    assert "seed 1: no result" in md
    check = CliRunner().invoke(app, [*args, "--out", str(out), "--check", "table3_components"])
    assert check.exit_code == 1, "one seed of synthetic data cannot pass the paper's headline cells"
