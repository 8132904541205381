"""Loading, validation errors that name the video and entry, file layouts, and the CLI."""

from __future__ import annotations

import gzip
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from sage_model.eval import RelationFormatError, evaluate_relations, load_ground_truth, load_predictions

BOX = [0, 0, 9, 9]


def rel(triplet: str, begin: int, end: int, score: float | None = None) -> dict:
    entry = {
        "triplet": triplet.split("-"),
        "duration": [begin, end],
        "sub_traj": [list(BOX)] * (end - begin),
        "obj_traj": [[2, 2, 11, 11]] * (end - begin),
    }
    if score is not None:
        entry["score"] = score
    return entry


GT = {"v1": [rel("a-p-b", 0, 4), rel("a-q-b", 2, 6)], "v2": [rel("c-p-a", 0, 3)]}


def pred_file(results: dict) -> dict:
    return {"version": "VERSION 1.0", "results": results, "external_data": {"used": False, "details": ""}}


def good_results() -> dict:
    return {"v1": [rel("a-p-b", 0, 4, 0.9), rel("a-q-b", 2, 6, 0.4)], "v2": [rel("c-p-a", 0, 3, 0.8)]}


def write(path: Path, data: object, **dump) -> Path:
    path.write_text(json.dumps(data, **dump))
    return path


def compact(path: Path, data: object) -> Path:
    return write(path, data, separators=(",", ":"))


@pytest.fixture()
def gt_path(tmp_path: Path) -> Path:
    return compact(tmp_path / "gt.json", GT)


def test_compact_pretty_and_gzip_files_give_the_same_metrics(tmp_path: Path, gt_path: Path) -> None:
    data = pred_file(good_results())
    from_dict = evaluate_relations(GT, data)
    assert from_dict.mean_ap == 1.0
    compact_path = compact(tmp_path / "p.json", data)
    pretty_path = write(tmp_path / "pretty.json", data, indent=2)
    gz_path = tmp_path / "p.json.gz"
    gz_path.write_bytes(gzip.compress(compact_path.read_bytes()))
    for path in (compact_path, pretty_path, gz_path):
        assert evaluate_relations(load_ground_truth(gt_path), load_predictions(path)) == from_dict, path.name
    assert load_predictions(pretty_path).to_official() == data["results"]


def test_unusual_layouts_read_the_same(tmp_path: Path) -> None:
    """Object before subject, brackets inside names, other keys holding nested lists."""
    results = good_results()
    swapped = {vid: [dict(reversed(list(r.items()))) for r in rels] for vid, rels in results.items()}
    named = json.loads(json.dumps(results).replace('"a"', '"a]]"').replace('"b"', '"[[b"'))
    gt_named = json.loads(json.dumps(GT).replace('"a"', '"a]]"').replace('"b"', '"[[b"'))
    extra = {**pred_file(results), "external_data": {"used": True, "details": [[1, 2], [3, 4]]}}
    for name, data, gt in (
        ("swapped", pred_file(swapped), GT),
        ("named", pred_file(named), gt_named),
        ("extra", extra, GT),
    ):
        path = compact(tmp_path / f"{name}.json", data)
        loaded = load_predictions(path)
        assert loaded.to_official() == data["results"], name
        assert evaluate_relations(gt, loaded) == evaluate_relations(gt, data), name


def _error_for(tmp_path: Path, results: dict, *, evaluate: bool = False) -> str:
    path = write(tmp_path / "bad.json", pred_file(results))
    with pytest.raises(RelationFormatError) as err:
        pred = load_predictions(path)
        if evaluate:
            evaluate_relations(GT, pred)
    return str(err.value)


def test_missing_key_names_video_and_entry(tmp_path: Path) -> None:
    results = good_results()
    del results["v1"][1]["score"]
    message = _error_for(tmp_path, results)
    assert "video 'v1' entry 1" in message and "'score'" in message
    with pytest.raises(RelationFormatError, match="video 'v1' entry 1: missing key 'score'"):
        evaluate_relations(GT, results)


def test_trajectory_length_must_match_duration(tmp_path: Path) -> None:
    results = good_results()
    results["v2"][0]["obj_traj"] = results["v2"][0]["obj_traj"][:2]
    message = _error_for(tmp_path, results)
    assert "video 'v2' entry 0" in message and "'obj_traj'" in message and "2 boxes" in message
    with pytest.raises(RelationFormatError, match="video 'v2' entry 0: 'obj_traj' has 2 boxes"):
        evaluate_relations(GT, results)


@pytest.mark.parametrize("bad", [math.nan, math.inf, "0.5", None, True])
def test_score_must_be_a_finite_number(tmp_path: Path, bad: object) -> None:
    results = good_results()
    results["v1"][0]["score"] = bad
    message = _error_for(tmp_path, results)  # json.dumps writes NaN/Infinity literals
    assert "video 'v1' entry 0" in message and "'score'" in message


@pytest.mark.parametrize(
    "field, value",
    [
        ("triplet", ["a", "p"]),
        ("triplet", "a-p-b"),
        ("duration", [5, 4]),
        ("duration", [0.5, 4]),
        ("duration", [0]),
    ],
)
def test_triplet_and_duration_are_checked(tmp_path: Path, field: str, value: object) -> None:
    results = good_results()
    results["v1"][1][field] = value
    message = _error_for(tmp_path, results)
    assert "video 'v1' entry 1" in message and repr(field) in message


@pytest.mark.parametrize("box", [[0, 0, 9], ["0", 0, 9, 9], [0, 0, 9, None]])
def test_bad_box_is_named_when_its_boxes_are_read(tmp_path: Path, box: list) -> None:
    results = good_results()
    results["v1"][0]["sub_traj"][2] = box
    message = _error_for(tmp_path, results, evaluate=True)
    assert "video 'v1' entry 0" in message and "'sub_traj'" in message
    with pytest.raises(RelationFormatError, match="video 'v1' entry 0: 'sub_traj'"):
        evaluate_relations(GT, results)


@pytest.mark.parametrize("value", [-1, 3, None, "boxes"])
def test_trajectory_that_is_not_a_list_is_named(tmp_path: Path, value: object) -> None:
    results = good_results()
    results["v1"][1]["sub_traj"] = value
    path = compact(tmp_path / "p.json", pred_file(results))
    with pytest.raises(RelationFormatError, match="video 'v1' entry 1: 'sub_traj' must be a list"):
        load_predictions(path)


def test_bad_ground_truth_names_video_and_entry(tmp_path: Path) -> None:
    gt = json.loads(json.dumps(GT))
    del gt["v2"][0]["duration"]
    path = compact(tmp_path / "gt.json", gt)
    with pytest.raises(RelationFormatError, match="video 'v2' entry 0: missing key 'duration'"):
        load_ground_truth(path)


def test_not_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"version": "VERSION 1.0",\n "results": {"v1": [}\n}')
    with pytest.raises(ValueError, match="line 2"):
        load_predictions(path)


def test_prediction_file_needs_results(tmp_path: Path) -> None:
    with pytest.raises(RelationFormatError, match="'results'"):
        load_predictions(write(tmp_path / "p.json", good_results()))


def _annotation(boxes_of_ball: int = 5) -> dict:
    frames = [
        [{"tid": 0, "bbox": {"xmin": f, "ymin": 0, "xmax": f + 9, "ymax": 9}}]
        + ([{"tid": 1, "bbox": {"xmin": 1, "ymin": 1, "xmax": 5, "ymax": 5}}] if f < boxes_of_ball else [])
        for f in range(5)
    ]
    return {
        "video_id": "ILSVRC2015_train_00000001",
        "frame_count": 5,
        "fps": 30,
        "width": 64,
        "height": 64,
        "subject/objects": [{"tid": 0, "category": "dog"}, {"tid": 1, "category": "ball"}],
        "trajectories": frames,
        "relation_instances": [
            {"subject_tid": 0, "object_tid": 1, "predicate": "chase", "begin_fid": 1, "end_fid": 3}
        ],
    }


def test_annotation_folder_relations(tmp_path: Path) -> None:
    """Official per-video files -> one GT entry per relation instance with per-frame boxes."""
    for folder in (tmp_path / "flat", tmp_path / "root" / "test"):
        folder.mkdir(parents=True)
        (folder / "ILSVRC2015_train_00000001.json").write_text(json.dumps(_annotation()))
    want = {
        "ILSVRC2015_train_00000001": [
            {
                "triplet": ["dog", "chase", "ball"],
                "subject_tid": 0,
                "object_tid": 1,
                "duration": [1, 3],
                "sub_traj": [[1, 0, 10, 9], [2, 0, 11, 9]],
                "obj_traj": [[1, 1, 5, 5], [1, 1, 5, 5]],
            }
        ]
    }
    assert load_ground_truth(tmp_path / "flat").to_official() == want
    assert load_ground_truth(tmp_path / "root", split="test").to_official() == want
    (tmp_path / "flat" / "ILSVRC2015_train_00000001.json").write_text(
        json.dumps(_annotation(boxes_of_ball=2))
    )
    with pytest.raises(ValueError, match="ILSVRC2015_train_00000001"):  # the ball has no box at frame 2
        load_ground_truth(tmp_path / "flat")


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def test_cli_prints_json_metrics(tmp_path: Path, gt_path: Path) -> None:
    results = good_results()
    results["v1"][0]["triplet"] = ["a", "new", "b"]
    pred = compact(tmp_path / "p.json", pred_file(results))
    names = tmp_path / "novel.txt"
    names.write_text("new\n")
    runner = CliRunner()
    out = runner.invoke(app, ["evaluate", str(gt_path), str(pred), "--json"])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)
    assert set(metrics) == {
        "mean_ap",
        "rec_at_50",
        "rec_at_100",
        "mprec_at_1",
        "mprec_at_5",
        "mprec_at_10",
        "video_ap",
    }
    # v1 (2 GT): the wrong triplet ranks first, then the a-q-b hit: recall 1/2 at precision 1/2 -> AP 0.25
    assert metrics["video_ap"] == {"v1": 0.25, "v2": 1.0}
    k = runner.invoke(app, ["evaluate", str(gt_path), str(pred), "--json", "--tagging-divisor", "k"])
    assert json.loads(k.stdout)["mprec_at_10"] == pytest.approx(0.1)  # one hit per video / 10
    novel = runner.invoke(
        app,
        ["evaluate", str(gt_path), str(pred), "--json", "--split", "novel", "--novel-predicates", str(names)],
    )
    assert novel.exit_code == 2 and "no relation with a novel predicate" in novel.output


def test_cli_reports_bad_input_in_one_line(tmp_path: Path, gt_path: Path) -> None:
    results = good_results()
    del results["v2"][0]["sub_traj"]
    pred = compact(tmp_path / "p.json", pred_file(results))
    out = CliRunner().invoke(app, ["evaluate", str(gt_path), str(pred)])
    assert out.exit_code == 2
    assert "video 'v2' entry 0: missing key 'sub_traj'" in out.output
    strict = compact(tmp_path / "s.json", pred_file({**good_results(), "other": []}))
    out = CliRunner().invoke(app, ["evaluate", str(gt_path), str(strict), "--strict-videos"])
    assert out.exit_code == 2 and "'other'" in out.output


def test_console_script_evaluates(tmp_path: Path, gt_path: Path) -> None:
    exe = shutil.which("harness")
    if exe is None:
        pytest.skip("the harness console script is not installed (pip install -e .)")
    pred = compact(tmp_path / "p.json", pred_file(good_results()))
    done = subprocess.run(
        [exe, "evaluate", str(gt_path), str(pred), "--json"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["mean_ap"] == 1.0
