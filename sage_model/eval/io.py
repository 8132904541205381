"""Loading ground truth and predictions for the evaluator, validated, errors naming video and entry.

* Ground truth: the standalone GT JSON of the official helper (``{video_id: [{triplet, subject_tid,
  object_tid, duration, sub_traj, obj_traj}]}``) or an official annotation folder (one
  ``<video_id>.json`` per video, possibly in group sub-folders as in VidOR), converted exactly as the
  helper's ``get_relation_insts`` does.
* Predictions: the official submission JSON ``{version, results: {video_id: [{triplet, score,
  duration, sub_traj, obj_traj}]}}``.

Both may be gzip-compressed (``.gz``). Files are read with the span scanner of
:mod:`sage_model.eval.jsonscan`, so boxes are parsed only when the evaluator needs them.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from sage_model.eval.jsonscan import parse_json, scan_json
from sage_model.eval.relations import RelationFormatError, RelationSet, build_relation_set

_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: Path | str) -> bytes:
    """The file's bytes, gunzipped when it is gzip data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file does not exist")
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from None
    return raw


def load_predictions(path: Path | str) -> RelationSet:
    """Read an official prediction file; every entry is checked (see `build_relation_set`)."""
    scanned = scan_json(read_bytes(path), str(path))
    doc = scanned.document
    if not isinstance(doc, dict) or "results" not in doc:
        raise RelationFormatError(f"{path}: a prediction file must be an object with a 'results' key")
    return build_relation_set(doc["results"], "predictions", str(path), scanned)


def load_ground_truth(path: Path | str) -> RelationSet:
    """Read ground truth from a standalone GT JSON file or an official annotation folder."""
    path = Path(path)
    if path.is_dir():
        return build_relation_set(ground_truth_from_annotations(path), "ground truth", str(path))
    scanned = scan_json(read_bytes(path), str(path))
    doc = scanned.document
    if isinstance(doc, dict) and "results" in doc and "version" in doc:
        raise RelationFormatError(f"{path}: this is a prediction file, not ground truth")
    return build_relation_set(doc, "ground truth", str(path), scanned)


def annotation_files(folder: Path) -> list[Path]:
    """The ``*.json`` files of an annotation folder (recursively, sorted by path)."""
    files = sorted(folder.rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"{folder}: no annotation files (*.json) in this folder")
    return files


def ground_truth_from_annotations(folder: Path | str) -> dict[str, list[dict[str, Any]]]:
    """``{video_id: [relation, ...]}`` from official per-video annotation files, sorted by video id.

    Same relations as the helper's ``Dataset.get_relation_insts``: one entry per relation instance,
    triplet (subject category, predicate, object category), and the subject/object boxes of every
    frame of ``[begin_fid, end_fid)``. A frame without a box for the subject or object is an error
    (the helper raises a KeyError there).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for path in annotation_files(Path(folder)):
        anno = parse_json(read_bytes(path), str(path))
        vid, relations = annotation_relations(anno, str(path))
        if vid in out:
            raise RelationFormatError(f"{path}: video {vid!r} appears in two annotation files")
        out[vid] = relations
    return dict(sorted(out.items()))


def annotation_relations(anno: Any, source: str) -> tuple[str, list[dict[str, Any]]]:
    """(video id, relations) of one parsed annotation file."""
    try:
        vid = anno["video_id"]
        categories = {obj["tid"]: obj["category"] for obj in anno["subject/objects"]}
        frames = anno["trajectories"]
        instances = anno["relation_instances"]
    except (KeyError, TypeError) as exc:
        raise RelationFormatError(f"{source}: not an official annotation file (missing {exc})") from None
    per_frame = [{roi["tid"]: roi["bbox"] for roi in frame} for frame in frames]
    relations = []
    for i, inst in enumerate(instances):
        try:
            relations.append(_annotation_relation(inst, categories, per_frame))
        except (KeyError, TypeError) as exc:
            raise RelationFormatError(
                f"{source}: video {vid!r} relation_instances[{i}]: missing {exc}"
            ) from None
    return vid, relations


def _annotation_relation(inst: dict, categories: dict, per_frame: list[dict]) -> dict[str, Any]:
    sub, obj = inst["subject_tid"], inst["object_tid"]
    begin, end = inst["begin_fid"], inst["end_fid"]
    window = per_frame[begin:end]
    return {
        "triplet": [categories[sub], inst["predicate"], categories[obj]],
        "subject_tid": sub,
        "object_tid": obj,
        "duration": [begin, end],
        "sub_traj": [_box(frame[sub]) for frame in window],
        "obj_traj": [_box(frame[obj]) for frame in window],
    }


def _box(bbox: dict) -> list[Any]:
    return [bbox["xmin"], bbox["ymin"], bbox["xmax"], bbox["ymax"]]


def read_name_list(path: Path | str) -> set[str]:
    """Predicate names from a file: a JSON list, a JSON split file (``{"cls2split": {name: "novel"}}``
    or ``{"novel": [...]}``), or plain text with one name per line; for ``--novel-predicates``."""
    path = Path(path)
    text = read_bytes(path).decode("utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        names = [line.strip() for line in text.splitlines()]
        return {n for n in names if n and not n.startswith("#")}
    return _names_from_json(data, path)


def _names_from_json(data: Any, path: Path) -> set[str]:
    if isinstance(data, list) and all(isinstance(x, str) for x in data):
        return set(data)
    if isinstance(data, dict):
        if isinstance(data.get("cls2split"), dict):
            return {name for name, split in data["cls2split"].items() if split == "novel"}
        for key in ("novel_predicates", "novel"):
            if isinstance(data.get(key), list):
                return _names_from_json(data[key], path)
    raise ValueError(
        f"{path}: expected a JSON list of predicate names, a split file with 'cls2split', or one name per line"
    )
