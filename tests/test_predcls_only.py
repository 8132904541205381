"""A dataset without detected tracklets runs PredCls only (docs/real_data.md): ``--set eval.tasks=[predcls]``.

A root whose test split has no ``det`` store is what ``harness extract`` leaves when no tracklet
file is given. Asking for SGDet on it stops before any trial with the missing store named; the
``--set`` runs every study without it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.results import read_results
from sage_model.data import ensure_synthetic

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STUDY = """\
name: predcls_only
version: 1
description: "SGDet and PredCls, like the paper tables"
base:
  eval.tasks: [sgdet, predcls]
variants:
  - {name: "Ours", overrides: {}}
seeds: [0]
datasets: [vidvrd]
"""


@pytest.fixture(scope="module")
def root_without_tracklets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = ensure_synthetic("vidvrd", tmp_path_factory.mktemp("root") / "vidvrd", 4, seed=0)
    shutil.rmtree(root / "features" / "test" / "det")
    for teacher in (root / "teachers").iterdir():
        shutil.rmtree(teacher / "test" / "det")
    (root / "tracklets" / "test.json").unlink()
    info = json.loads((root / "dataset.json").read_text())
    info["content_hashes"] = {k: v for k, v in info["content_hashes"].items() if "test/det" not in k}
    (root / "dataset.json").write_text(json.dumps(info))
    return root


def invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_sgdet_without_tracklets_stops_before_any_trial(root_without_tracklets: Path, tmp_path: Path) -> None:
    study = tmp_path / "predcls_only.yaml"
    study.write_text(STUDY)
    code, output = invoke(
        "run", study, "--smoke", "--data-root", root_without_tracklets, "--run-dir", tmp_path / "r"
    )
    assert code == 2, output
    assert "data.root" in output and "test/det" in output


def test_predcls_only_runs_without_tracklets(root_without_tracklets: Path, tmp_path: Path) -> None:
    study = tmp_path / "predcls_only.yaml"
    study.write_text(STUDY)
    code, output = invoke(
        "run", study, "--smoke", "--data-root", root_without_tracklets, "--set", "eval.tasks=[predcls]",
        "--run-dir", tmp_path / "runs", "--results-dir", tmp_path / "results",
    )  # fmt: skip
    assert code == 0, output
    rows = read_results(tmp_path / "results", "predcls_only")
    assert set(rows["task"]) == {"predcls"} and {"map", "r50", "r100"} <= set(rows["metric"])
