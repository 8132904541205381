"""A real dataset root: the folder that ``harness run --data-root`` reads (layout in docs/CONTRACTS.md).

``harness extract`` builds it next to the user's own copy of the dataset::

    <root>/dataset.json                      {"dataset": "vidvrd", "synthetic": false, "feature_model": ..., ...}
    <root>/annotations -> <official folder>  a symbolic link (VidOR's annotations are gigabytes)
    <root>/tracklets/<split>.json            copy of the detected tracklets given with --tracklets
    <root>/features/<split>/<source>/        feature stores (extract)
    <root>/teachers/<name>/<split>/<source>/ teacher artifacts (teacher)

``dataset.json`` also records the content hash of every store written into the root, and the CLIP
model that made the features: every split and source must come from the same image tower, so a
second extract with another CLIP is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from sage_model.data.vocab import load_vocabulary

ROOT_INFO = "dataset.json"


def read_root_info(root: Path) -> dict[str, Any]:
    """``dataset.json`` of a root, or an empty dict when there is none yet."""
    path = Path(root) / ROOT_INFO
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def write_root_info(root: Path, info: dict[str, Any]) -> None:
    """Write ``dataset.json`` atomically (temp file + rename)."""
    path = Path(root) / ROOT_INFO
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def prepare_root(
    root: Path,
    *,
    dataset: str,
    annotations: Path,
    feature_model: dict[str, Any],
    tracklet_frame_offset: int = 0,
) -> dict[str, Any]:
    """Create or check the root: dataset name, annotation link, feature model, tracklet offset."""
    load_vocabulary(dataset)  # validates the name
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    info = read_root_info(root)
    where = root / ROOT_INFO
    if info.get("synthetic"):
        raise ValueError(f"{where}: is a synthetic dataset root; extract real features into a new folder")
    expected = {"dataset": dataset, "tracklet_frame_offset": tracklet_frame_offset}
    for key, value in expected.items():
        if key in info and info[key] != value:
            raise ValueError(f"{where}: key '{key}': the root has {info[key]!r}, this run asks for {value!r}")
    if "feature_model" in info and info["feature_model"].get("fingerprint") != feature_model.get(
        "fingerprint"
    ):
        raise ValueError(
            f"{where}: key 'feature_model': the root's features come from {info['feature_model']}, "
            f"not from {feature_model}; every split must use the same CLIP (use a new --out folder)"
        )
    _link_annotations(root / "annotations", Path(annotations))
    info.update(expected)
    info.update(synthetic=False, feature_model=feature_model)
    info.setdefault("content_hashes", {})
    write_root_info(root, info)
    return info


def _link_annotations(link: Path, target: Path) -> None:
    target = target.resolve()
    if not target.is_dir():
        raise FileNotFoundError(f"{target}: --annotations folder does not exist")
    if link.is_symlink() or link.exists():
        if link.resolve() != target:
            raise ValueError(f"{link}: already points to {link.resolve()}, not {target}")
        return
    link.symlink_to(target, target_is_directory=True)


def install_tracklets(root: Path, split: str, tracklets: Path) -> Path:
    """Copy the detected tracklets of ``split`` to ``<root>/tracklets/<split>.json``."""
    source = Path(tracklets)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: --tracklets file does not exist")
    target = Path(root) / "tracklets" / f"{split}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not (target.is_file() and target.read_bytes() == source.read_bytes()):
        shutil.copyfile(source, target)
    return target


def record_hash(root: Path, key: str, content_hash: str, **extra: Any) -> None:
    """Remember the content hash of a store written into the root (``features/test/gt`` ...)."""
    info = read_root_info(root)
    info.setdefault("content_hashes", {})[key] = content_hash
    for name, value in extra.items():
        info[name] = value
    write_root_info(root, info)
