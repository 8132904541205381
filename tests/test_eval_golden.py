"""The evaluator against the golden cases of ../shared/golden_eval (numbers the official helper returned)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from sage_model.eval import evaluate_relations, load_ground_truth, load_predictions, read_name_list

CASES = ("tiny", "small", "medium", "full")
METRICS = ("mean_ap", "rec_at_50", "rec_at_100", "mprec_at_1", "mprec_at_5", "mprec_at_10")
TOLERANCE = 1e-6


def _case_dir(shared_dir: Path, case: str) -> Path:
    path = shared_dir / "golden_eval" / case
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


def _pred_path(case_dir: Path) -> Path:
    plain = case_dir / "pred.json"
    return plain if plain.is_file() else case_dir / "pred.json.gz"


@pytest.fixture(scope="module")
def novel_predicates(shared_dir: Path) -> set[str]:
    return read_name_list(shared_dir / "peer_data" / "vidvrd_predicate_split_v2.json")


@pytest.mark.parametrize("case", CASES)
def test_every_number_matches_the_official_helper(
    shared_dir: Path, case: str, novel_predicates: set[str]
) -> None:
    case_dir = _case_dir(shared_dir, case)
    expected = json.loads((case_dir / "expected.json").read_text())["splits"]
    gt = load_ground_truth(case_dir / "gt.json")
    pred = load_predictions(_pred_path(case_dir))
    for split, novel in (("all", None), ("novel", novel_predicates)):
        got = evaluate_relations(gt, pred, novel_predicates=novel)
        want = expected[split]
        for name in METRICS:
            assert got.__getattribute__(name) == pytest.approx(want[name], abs=TOLERANCE), (case, split, name)
        assert set(got.video_ap) == set(want["per_video_ap"]), (case, split)
        for vid, ap in want["per_video_ap"].items():
            assert got.video_ap[vid] == pytest.approx(ap, abs=TOLERANCE), (case, split, vid)


def test_novel_split_file_has_the_61_novel_vidvrd_predicates(novel_predicates: set[str]) -> None:
    assert len(novel_predicates) == 61


@pytest.mark.parametrize("case", ("tiny", "small"))
def test_annotation_folder_gives_the_same_ground_truth_as_gt_json(shared_dir: Path, case: str) -> None:
    case_dir = _case_dir(shared_dir, case)
    from_folder = load_ground_truth(case_dir / "annotations").to_official()
    from_json = json.loads((case_dir / "gt.json").read_text())
    assert from_folder == from_json


def test_annotation_folder_scores_like_gt_json(shared_dir: Path) -> None:
    case_dir = _case_dir(shared_dir, "small")
    pred = load_predictions(_pred_path(case_dir))
    a = evaluate_relations(load_ground_truth(case_dir / "annotations"), pred)
    b = evaluate_relations(load_ground_truth(case_dir / "gt.json"), pred)
    assert a == b


def test_fast_loader_reads_exactly_the_json_values(shared_dir: Path) -> None:
    """Every score, duration and box coordinate equals what json.load returns (floats included)."""
    case_dir = _case_dir(shared_dir, "small")
    path = _pred_path(case_dir)
    raw = path.read_bytes()
    plain = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)["results"]
    assert load_predictions(path).to_official() == plain


def test_dict_input_gives_the_same_metrics_as_files(shared_dir: Path) -> None:
    case_dir = _case_dir(shared_dir, "small")
    gt = json.loads((case_dir / "gt.json").read_text())
    pred = json.loads(_pred_path(case_dir).read_text())
    from_dicts = evaluate_relations(gt, pred)
    from_files = evaluate_relations(
        load_ground_truth(case_dir / "gt.json"), load_predictions(_pred_path(case_dir))
    )
    assert from_dicts == from_files
    assert evaluate_relations(gt, pred["results"]) == from_dicts


@pytest.mark.parametrize("split", ("all", "novel"))
def test_harness_evaluate_reproduces_the_tiny_case(shared_dir: Path, split: str) -> None:
    """The command itself, with the packaged VidVRD vocabulary for the novel predicates."""
    from typer.testing import CliRunner

    from harness.cli import app

    case_dir = _case_dir(shared_dir, "tiny")
    want = json.loads((case_dir / "expected.json").read_text())["splits"][split]
    args = ["evaluate", str(case_dir / "gt.json"), str(_pred_path(case_dir)), "--json", "--split", split]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    for name in METRICS:
        assert got[name] == pytest.approx(want[name], abs=TOLERANCE), name
    assert got["video_ap"] == pytest.approx(want["per_video_ap"], abs=TOLERANCE)
