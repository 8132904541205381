"""Validate an annotation folder and count what it holds (``harness data check``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sage_model.data.annotations import SPLIT_FOLDERS, load_annotation_folder, split_folder
from sage_model.data.segments import segment_count
from sage_model.data.vocab import DATASETS


def _annotation_root(directory: Path, dataset: str | None) -> tuple[Path, str]:
    """(annotation root, dataset) of a dataset root or a bare official annotation folder."""
    info_path = directory / "dataset.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{info_path}: not valid JSON ({exc})") from None
        if "dataset" not in info:
            raise ValueError(f"{info_path}: key 'dataset': missing")
        return directory / "annotations", dataset or str(info["dataset"])
    if dataset is not None:
        return directory, dataset
    if any((directory / name).is_dir() for name in ("annotation", "training", "validation")):
        return directory, "vidor"
    if any((directory / name).is_dir() for name in ("train", "test")):
        return directory, "vidvrd"
    raise FileNotFoundError(
        f"{directory}: no official annotation layout found (VidVRD: train/, test/; VidOR: annotation/training/, "
        "annotation/validation/; or a dataset root with dataset.json)"
    )


def _split_exists(root: Path, dataset: str, split: str) -> bool:
    folder = split_folder(dataset, split)
    if dataset == "vidvrd":
        return (root / folder).is_dir()
    return (root / "annotation" / folder).is_dir() or (root / folder).is_dir()


def check_annotation_folder(directory: Path | str, dataset: str | None = None) -> dict[str, Any]:
    """Load (and so validate) every split present; per split: videos, trajectories (fragments),
    relation instances, segments (30/15 windows over ``frame_count``), object tids, annotated frames."""
    directory = Path(directory)
    root, dataset = _annotation_root(directory, dataset)
    if dataset not in DATASETS:
        raise ValueError(f"--dataset: unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    splits = [s for s in SPLIT_FOLDERS[dataset] if _split_exists(root, dataset, s)]
    if not splits:
        raise FileNotFoundError(f"{root}: none of the {dataset} split folders exists")
    counts: dict[str, dict[str, int]] = {}
    for split in splits:
        videos = load_annotation_folder(root, dataset, split)
        counts[split] = {
            "videos": len(videos),
            "trajectories": sum(len(v.fragments) for v in videos),
            "relation_instances": sum(len(v.relations) for v in videos),
            "segments": sum(segment_count(0, v.frame_count) for v in videos),
            "objects": sum(len(v.objects) for v in videos),
            "annotated_frames": sum(v.annotated_len for v in videos),
        }
    return {"root": str(root), "dataset": dataset, "splits": counts}
