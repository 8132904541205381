"""Loading ground truth and predictions for the evaluator, validated, errors naming video and entry.

* Ground truth: the standalone GT JSON of the official helper (``{video_id: [{triplet, subject_tid,
  object_tid, duration, sub_traj, obj_traj}]}``) or an official annotation folder, converted by the
  data layer exactly as the helper's ``get_relation_insts`` does.
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
from sage_model.eval.relations import MarkerMismatch, RelationFormatError, RelationSet, build_relation_set

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
    try:
        return build_relation_set(doc["results"], "predictions", str(path), scanned)
    except MarkerMismatch:  # unusual layout, or the file's own trajectory values are numbers: read plainly
        return build_relation_set(parse_json(scanned.raw, str(path))["results"], "predictions", str(path))


def load_ground_truth(path: Path | str, *, dataset: str = "vidvrd", split: str = "test") -> RelationSet:
    """Read ground truth from a standalone GT JSON file or an official annotation folder
    (``dataset``/``split`` are used for folders only, see `ground_truth_from_annotations`)."""
    path = Path(path)
    if path.is_dir():
        gt = ground_truth_from_annotations(path, dataset, split)
        return build_relation_set(gt, "ground truth", str(path))
    scanned = scan_json(read_bytes(path), str(path))
    doc = scanned.document
    if isinstance(doc, dict) and "results" in doc and "version" in doc:
        raise RelationFormatError(f"{path}: this is a prediction file, not ground truth")
    try:
        return build_relation_set(doc, "ground truth", str(path), scanned)
    except MarkerMismatch:  # unusual layout, or the file's own trajectory values are numbers: read plainly
        return build_relation_set(parse_json(scanned.raw, str(path)), "ground truth", str(path))


def ground_truth_from_annotations(
    folder: Path | str, dataset: str = "vidvrd", split: str = "test"
) -> dict[str, list[dict[str, Any]]]:
    """``{video_id: [relation, ...]}`` from official per-video annotation files (the data layer's
    ``load_annotation_folder``/``load_annotation_file`` and ``ground_truth_relations``, which give the
    relations of the helper's ``get_relation_insts``: one entry per relation instance, the subject and
    object boxes of every frame of ``[begin_fid, end_fid)``).

    ``folder`` is a dataset root in the official layout (``<root>/test/*.json``,
    ``<root>/annotation/validation/<group>/*.json``; ``split`` picks the split) or directly a folder
    of annotation files (searched recursively).
    """
    import sage_model.data.annotations as annotations  # imports the data layer (and torch): only for folders

    folder = Path(folder)
    split_dir = annotations.split_folder(dataset, split)
    if (folder / split_dir).is_dir() or (folder / "annotation" / split_dir).is_dir():
        videos = annotations.load_annotation_folder(folder, dataset, split)
    else:
        files = sorted(folder.rglob("*.json"))
        if not files:
            raise FileNotFoundError(f"{folder}: no annotation files (*.json) in this folder")
        videos = sorted(
            (annotations.load_annotation_file(f, dataset) for f in files), key=lambda v: v.video_id
        )
    return annotations.ground_truth_relations(videos)


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
