"""The paper-table studies: they parse, their cells can be filled, their numbers are the paper's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.expand import expand_study
from harness.report.paper import paper_order, resolve_studies
from harness.spec import StudySpec, load_study

STUDIES = Path(__file__).resolve().parents[1] / "studies"
PAPER_STUDIES = [
    "table1_vidvrd_main",
    "table2_vidor_main",
    "table3_components",
    "table4_mllm_backbone",
    "fig3_fusion",
    "table5_prompt_strategy",
    "table6_adapters",
    "table7_bottleneck",
    "table8_layers",
    "table9_prompt_init",
    "table10_efficiency",
    "table11_cross_dataset",
    "fig4_semantic_stability",
]
# study -> trials on the embedded default (variants x datasets x seeds)
TRIALS = {
    "table1_vidvrd_main": 6,
    "table2_vidor_main": 6,
    "table3_components": 18,
    "table4_mllm_backbone": 9,
    "fig3_fusion": 8,
    "table5_prompt_strategy": 4,
    "table6_adapters": 8,
    "table7_bottleneck": 8,
    "table8_layers": 10,
    "table9_prompt_init": 8,
    "table10_efficiency": 4,
    "table11_cross_dataset": 6,
    "fig4_semantic_stability": 2,
}


def study(name: str) -> StudySpec:
    return load_study(STUDIES / f"{name}.yaml")


def test_every_paper_table_has_a_study_in_paper_order():
    assert [p.stem for p in resolve_studies(None, STUDIES)][: len(PAPER_STUDIES)] == PAPER_STUDIES
    assert sorted(PAPER_STUDIES, key=paper_order) == PAPER_STUDIES


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_study_parses_and_expands_into_distinct_trials(path):
    spec = load_study(path)
    trials = expand_study(spec)
    assert len({t.trial_id for t in trials}) == len(trials)
    if spec.name in TRIALS:
        assert len(trials) == TRIALS[spec.name]


@pytest.mark.parametrize("name", PAPER_STUDIES)
def test_every_table_cell_is_something_the_trials_evaluate(name):
    """A column the trials never compute would be 'missing' forever: catch it here, not in a report."""
    spec = study(name)
    assert spec.table is not None
    for trial in expand_study(spec):
        for col in spec.table.columns:
            assert col.task in trial.config.eval.tasks, (trial.variant, col.name)
            assert col.split in trial.config.eval.splits, (trial.variant, col.name)
            if col.metric in ("params_m", "fps"):
                assert trial.config.eval.measure_speed, (trial.variant, col.name)


@pytest.mark.parametrize("name", [n for n in PAPER_STUDIES if not n.startswith("fig")])
def test_ablation_and_main_tables_have_headline_cells_and_enough_seeds(name):
    spec = study(name)
    assert len(spec.seeds) >= spec.table.min_seeds
    if name != "table10_efficiency":  # Table 10 is compared as ratios, never checked absolutely
        assert spec.table.headline


def _paper(shared_dir: Path) -> dict:
    return yaml.safe_load((shared_dir / "paper_tables.yaml").read_text())


# study -> (key in paper_tables.yaml, {paper row: our variant}); rows not mapped must be cited.
ABLATIONS = {
    "table3_components": "table3_components",
    "table4_mllm_backbone": "table4_mllm",
    "table5_prompt_strategy": "table5_prompt_strategy",
    "table6_adapters": "table6_adapters",
    "table7_bottleneck": "table7_bottleneck",
    "table8_layers": "table8_layers",
    "table9_prompt_init": "table9_prompt_init",
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_references_are_the_papers_numbers(name, shared_dir):
    paper = _paper(shared_dir)[ABLATIONS[name]]
    spec = study(name)
    rows = {str(k): v for k, v in paper.items() if k != "columns"}
    assert [c.name for c in spec.table.columns] == paper["columns"]
    assert spec.table.reference == rows
    # rows beyond the paper's (e.g. Table 3's "w/o CE (no prompt)") carry no reference numbers
    assert [v.name for v in spec.variants if v.name in rows] == list(rows)


@pytest.mark.parametrize(
    ("name", "key"), [("table1_vidvrd_main", "table1_vidvrd"), ("table2_vidor_main", "table2_vidor")]
)
def test_main_table_references_and_cited_rows_are_the_papers_numbers(name, key, shared_dir):
    paper = _paper(shared_dir)[key]
    spec = study(name)
    expected_columns = [f"{split}_{col}" for split in ("novel", "all") for col in paper["columns"]]
    assert [c.name for c in spec.table.columns] == expected_columns
    both = {method: paper["novel"][method] + paper["all"][method] for method in paper["novel"]}
    assert spec.table.reference["Ours"] == both.pop("Ours")
    assert spec.table.cited == both


def test_table1_image_cond_reference_is_table5s_image_cond_row(shared_dir):
    image_cond = _paper(shared_dir)["table5_prompt_strategy"]["Image-Cond"]
    spec = study("table1_vidvrd_main")
    names = [c.name for c in spec.table.columns]
    ref = dict(zip(names, spec.table.reference["Image-Cond"], strict=True))
    four = ["novel_sgdet_map", "novel_predcls_map", "all_sgdet_map", "all_predcls_map"]
    assert [ref[n] for n in four] == image_cond
    assert all(v is None for n, v in ref.items() if n not in four)


def test_efficiency_and_cross_dataset_references_are_the_papers_numbers(shared_dir):
    paper = _paper(shared_dir)
    eff = study("table10_efficiency").table
    # the paper's three columns first; our extra ones (counted the other way) have no reference
    paper_columns = len(paper["table10_efficiency"]["columns"])
    assert [c.name for c in eff.columns][:paper_columns] == paper["table10_efficiency"]["columns"]
    assert {k: v[:paper_columns] for k, v in eff.reference.items()} == {
        "Image-Cond": paper["table10_efficiency"]["OV-MMP"],
        "Ours": paper["table10_efficiency"]["Ours"],
    }
    assert all(v is None for row in eff.reference.values() for v in row[paper_columns:])
    cross = study("table11_cross_dataset").table
    rows = {k: v for k, v in paper["table11_cross_dataset"].items() if k != "columns"}
    assert cross.reference["Ours"] == rows.pop("Ours")
    assert cross.cited == rows


def test_figure_studies_have_no_reference_numbers(shared_dir):
    fig3 = study("fig3_fusion")
    assert fig3.table.reference == {} and fig3.table.headline == []
    assert [v.name for v in fig3.variants] == _paper(shared_dir)["fig3_fusion"]["variants"]
    fig4 = study("fig4_semantic_stability")
    assert fig4.base["eval.stability_noise"][0] == 0.0  # the analysis compares against noise-free
