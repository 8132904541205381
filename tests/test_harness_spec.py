"""Study files: parsing, line-numbered errors, overrides on ExperimentConfig, expansion."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.configs import SMOKE_OVERRIDES, apply_overrides, config_hash, variant_slug
from harness.expand import expand_study
from harness.spec import load_study
from sage_model.config import ExperimentConfig

STUDY = """\
name: {name}
version: 1
description: "test study"
base:
  train.stage1_epochs: 1
variants:
  - name: "2"
    overrides: {{model.prompt.insert_layer: 2}}
  - name: "w/o SE"
    overrides:
      model.semantic.fusion: none
seeds: [0, 1]
datasets: [vidvrd]
resources: {{cpus: 1, gpus: 0.5}}
table:
  paper: "Table X"
  columns:
    - {{name: all_predcls, split: all, task: predcls, metric: map}}
  headline: [all_predcls]
  tolerance: 1.0
  reference:
    "2": [38.3]
"""


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def write_study(tmp_path: Path, text: str | None = None, name: str = "toy") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text if text is not None else STUDY.format(name=name))
    return path


def test_valid_study_parses_into_variants_seeds_and_table(tmp_path: Path) -> None:
    spec = load_study(write_study(tmp_path))
    assert [v.name for v in spec.variants] == ["2", "w/o SE"]
    assert spec.seeds == [0, 1] and spec.resources.gpus == 0.5
    assert spec.table is not None and spec.table.reference == {"2": [38.3]}


def test_unknown_override_names_its_path_and_line(tmp_path: Path) -> None:
    text = STUDY.format(name="toy").replace("model.semantic.fusion", "model.semantic.fuson")
    with pytest.raises(ValueError) as err:
        load_study(write_study(tmp_path, text))
    message = str(err.value)
    assert f"toy.yaml:{line_of(text, 'fuson')}:" in message
    assert "model.semantic.fuson: unknown field 'fuson' in model.semantic (did you mean 'fusion'?)" in message


def test_out_of_range_override_names_path_and_value(tmp_path: Path) -> None:
    text = STUDY.format(name="toy").replace("insert_layer: 2}", "insert_layer: 12}")
    line = line_of(text, "insert_layer: 12")
    with pytest.raises(
        ValueError, match=rf"toy.yaml:{line}: variants\[0\] \(2\).overrides: model.prompt.insert_layer"
    ):
        load_study(write_study(tmp_path, text))


def test_unknown_top_level_key_fails_with_its_line(tmp_path: Path) -> None:
    text = STUDY.format(name="toy") + "sedes: [3]\n"
    with pytest.raises(
        ValueError, match=rf"toy.yaml:{line_of(text, 'sedes')}: sedes: unknown key \(did you mean 'seeds'\?\)"
    ):
        load_study(write_study(tmp_path, text))


def test_nested_unknown_key_names_dotted_path(tmp_path: Path) -> None:
    text = STUDY.format(name="toy").replace("tolerance: 1.0", "tolerence: 1.0")
    with pytest.raises(ValueError, match=rf"toy.yaml:{line_of(text, 'tolerence')}: table.tolerence"):
        load_study(write_study(tmp_path, text))


def test_name_must_equal_file_stem(tmp_path: Path) -> None:
    path = write_study(tmp_path, STUDY.format(name="other"), name="toy")
    with pytest.raises(ValueError, match="must equal the file stem 'toy'"):
        load_study(path)


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    text = STUDY.format(name="toy").replace("version: 1\n", "version: 1\nversion: 2\n")
    with pytest.raises(ValueError, match=rf"toy.yaml:{line_of(text, 'version: 2')}: duplicate key 'version'"):
        load_study(write_study(tmp_path, text))


def test_reference_row_must_match_columns_and_variants(tmp_path: Path) -> None:
    text = STUDY.format(name="toy").replace('"2": [38.3]', '"2": [38.3, 1.0]')
    with pytest.raises(ValueError, match="1 columns"):
        load_study(write_study(tmp_path, text))
    text = STUDY.format(name="toy").replace('"2": [38.3]', '"3": [38.3]')
    with pytest.raises(ValueError, match=r"rows \['3'\] are not variants"):
        load_study(write_study(tmp_path, text))


def test_table_baseline_must_be_a_variant(tmp_path: Path) -> None:
    text = STUDY.format(name="toy").replace("  tolerance: 1.0\n", "  tolerance: 1.0\n  baseline: \"w/o SE\"\n")
    assert load_study(write_study(tmp_path, text)).table.baseline == "w/o SE"
    with pytest.raises(ValueError, match="table.baseline: 'Ours' is not a variant"):
        load_study(write_study(tmp_path, text.replace('baseline: "w/o SE"', "baseline: Ours")))


def test_cross_field_rule_sees_all_overrides_together() -> None:
    # class_position 8 is only valid once n_ctx is raised too: validation runs after both.
    cfg = apply_overrides(ExperimentConfig(), {"model.prompt.class_position": 10, "model.prompt.n_ctx": 12})
    assert cfg.model.prompt.class_position == 10
    with pytest.raises(ValueError, match="class_position"):
        apply_overrides(ExperimentConfig(), {"model.prompt.class_position": 10})


def test_override_into_a_value_is_rejected() -> None:
    with pytest.raises(ValueError, match="train.lr is a value, not a block"):
        apply_overrides(ExperimentConfig(), {"train.lr.x": 1})


def test_expansion_is_deterministic_and_ordered(tmp_path: Path) -> None:
    spec = load_study(write_study(tmp_path))
    first, second = expand_study(spec), expand_study(spec)
    assert [t.trial_id for t in first] == [t.trial_id for t in second]
    assert [(t.variant, t.seed) for t in first] == [("2", 0), ("2", 1), ("w/o SE", 0), ("w/o SE", 1)]
    trial = first[2]
    assert trial.trial_id == f"toy-w_o_se-vidvrd-s0-{config_hash(trial.config)[:10]}"
    assert trial.config.model.semantic.fusion == "none" and trial.config.train.stage1_epochs == 1
    assert trial.config.seed == 0 and trial.config.data.dataset == "vidvrd"
    assert len({t.trial_id for t in first}) == 4


def test_trial_id_follows_the_resolved_config(tmp_path: Path) -> None:
    spec = load_study(write_study(tmp_path))
    plain = expand_study(spec)
    real = expand_study(spec, env_overrides={"data.root": tmp_path})
    assert [t.trial_id for t in plain] != [t.trial_id for t in real]
    assert all(t.config.data.root == tmp_path for t in real)


def test_variant_overrides_win_over_run_environment(tmp_path: Path) -> None:
    text = STUDY.format(name="toy").replace("model.semantic.fusion: none", "data.teacher: blip2")
    spec = load_study(write_study(tmp_path, text))
    trials = expand_study(spec, env_overrides={"data.teacher": "asmv2_real"})
    assert {t.variant: t.config.data.teacher for t in trials} == {"2": "asmv2_real", "w/o SE": "blip2"}


def test_seed_selection_and_smoke(tmp_path: Path) -> None:
    spec = load_study(write_study(tmp_path))
    assert [t.seed for t in expand_study(spec, seeds=[1])] == [1, 1]
    with pytest.raises(ValueError, match=r"--seeds: \[7\] not in study toy's seeds"):
        expand_study(spec, seeds=[7])
    smoke = expand_study(spec, smoke=True)
    assert [t.seed for t in smoke] == [0, 0]
    assert all(t.config.train.stage1_epochs == SMOKE_OVERRIDES["train.stage1_epochs"] for t in smoke)


def test_variant_slug_is_filename_safe() -> None:
    assert variant_slug("w/o Spa") == "w_o_spa"
    assert variant_slug("Vis+Txt") == "vis_txt"
    assert variant_slug("10") == "10"


def test_every_study_in_the_repo_validates(project_root: Path) -> None:
    paths = sorted((project_root / "studies").glob("*.yaml"))
    assert paths, "no studies found"
    for path in paths:
        spec = load_study(path)
        assert len(expand_study(spec)) == len(spec.variants) * len(spec.datasets) * len(spec.seeds)


def test_table8_reference_is_the_papers(project_root: Path, shared_dir: Path) -> None:
    paper = yaml.safe_load((shared_dir / "paper_tables.yaml").read_text())["table8_layers"]
    spec = load_study(project_root / "studies" / "table8_layers.yaml")
    assert spec.table is not None
    assert [c.name for c in spec.table.columns] == paper["columns"]
    assert spec.table.reference == {str(k): v for k, v in paper.items() if k != "columns"}
    assert [v.name for v in spec.variants] == ["2", "4", "6", "8", "10"]
    assert [t.config.model.prompt.insert_layer for t in expand_study(spec)[::2]] == [2, 4, 6, 8, 10]


def test_column_metric_must_be_in_the_catalogue_and_gets_a_suggestion(tmp_path: Path) -> None:
    text = STUDY.format(name="toy").replace("metric: map}", "metric: mAP}")
    where = rf"toy.yaml:{line_of(text, 'metric: mAP')}: table.columns\[0\].metric"
    with pytest.raises(ValueError, match=rf"{where}: unknown metric 'mAP' \(did you mean 'map'\?\)"):
        load_study(write_study(tmp_path, text))
    spec = load_study(write_study(tmp_path))
    assert spec.table is not None and spec.table.columns[0].info.display == "mAP"
    assert not spec.table.columns[0].efficiency
