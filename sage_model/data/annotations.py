"""Official VidVRD / VidOR annotation files: strict loading, writing, ground-truth relations.

Layouts (``split`` is the project's ``train``/``test`` or the official folder name):

* VidVRD: ``<root>/{train,test}/<video_id>.json``
* VidOR:  ``<root>/annotation/{training,validation}/<group>/<video_id>.json`` (``test`` = validation,
  the split the paper evaluates on; VidOR's own test labels are not public)

What the real files do, and how it is handled:

* ``trajectories`` is a per-frame list whose length (the annotated length, a multiple of 15) is often
  shorter than ``frame_count``; frames past it are unannotated.
* A tid may disappear and reappear; each maximal run of consecutive frames is one fragment
  (a :class:`~sage_model.data.tracks.Track`), so a tid can own several fragments.
* Relations hold on ``[begin_fid, end_fid)``; both tids must have a box on every frame of it.
* Unknown keys are ignored (VidOR's ``generated``/``tracker``, ``video_hash`` ...).

A malformed file raises :class:`AnnotationError` (a ``ValueError``) whose message names the file and
the key, e.g. ``.../train/X.json: key 'relation_instances[3].begin_fid': missing``. Nothing is skipped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sage_model.data.tracks import Track, contiguous_runs, merge_tracks
from sage_model.data.vocab import Vocabulary, load_vocabulary

VIDOR_VERSION = "VERSION 1.0"
SPLIT_FOLDERS: dict[str, dict[str, str]] = {
    "vidvrd": {"train": "train", "test": "test"},
    "vidor": {"train": "training", "test": "validation"},
}
"""Project split name -> official annotation folder name."""


class AnnotationError(ValueError):
    """A malformed annotation file; the message names the file and the key."""


@dataclass(frozen=True)
class RelationInstance:
    """One annotated relation, holding on frames ``[begin_fid, end_fid)``."""

    subject_tid: int
    object_tid: int
    predicate: str
    begin_fid: int
    end_fid: int


@dataclass(frozen=True, eq=False)
class VideoAnnotation:
    """One video's annotation; ``fragments`` are the GT trajectory fragments (several per tid possible)."""

    video_id: str
    frame_count: int
    fps: float
    width: int
    height: int
    annotated_len: int
    objects: dict[int, str]
    fragments: tuple[Track, ...]
    relations: tuple[RelationInstance, ...]
    version: str | None = None
    group: str | None = None
    video_hash: str | None = None
    source: str = ""

    def tid_tracks(self) -> dict[int, Track]:
        """One merged track per tid that has boxes (fragments concatenated in time)."""
        by_tid: dict[int, list[Track]] = defaultdict(list)
        for frag in self.fragments:
            by_tid[frag.tid].append(frag)
        return {tid: merge_tracks(frags) for tid, frags in sorted(by_tid.items())}


def _err(source: str, key: str, problem: str) -> AnnotationError:
    return AnnotationError(f"{source}: key '{key}': {problem}")


def _get(raw: dict, key: str, kinds: type | tuple[type, ...], source: str, prefix: str = "") -> Any:
    path = f"{prefix}{key}"
    if key not in raw:
        raise _err(source, path, "missing")
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = kinds.__name__ if isinstance(kinds, type) else " or ".join(k.__name__ for k in kinds)
        raise _err(source, path, f"expected {names}, got {type(value).__name__} {value!r}"[:200])
    return value


def parse_annotation(
    raw: Any, dataset: str, *, source: str = "<annotation>", expected_id: str | None = None
) -> VideoAnnotation:
    """Validate one official annotation object and turn it into a :class:`VideoAnnotation`."""
    vocab = load_vocabulary(dataset)
    if not isinstance(raw, dict):
        raise _err(source, "<root>", f"expected an object, got {type(raw).__name__}")
    version = _get(raw, "version", str, source) if dataset == "vidor" else None
    if version is not None and version != VIDOR_VERSION:
        raise _err(source, "version", f"expected {VIDOR_VERSION!r}, got {version!r}")
    video_id = _get(raw, "video_id", str, source)
    if expected_id is not None and str(video_id) != expected_id:
        raise _err(source, "video_id", f"{video_id!r} differs from the file name {expected_id!r}")
    frame_count = _get(raw, "frame_count", int, source)
    width, height = _get(raw, "width", int, source), _get(raw, "height", int, source)
    fps = float(_get(raw, "fps", (int, float), source))
    if frame_count <= 0 or width <= 0 or height <= 0:
        raise _err(
            source,
            "frame_count",
            f"frame_count/width/height must be positive, got {frame_count}/{width}/{height}",
        )
    objects = _parse_objects(raw, vocab, source)
    per_frame = _get(raw, "trajectories", list, source)
    if len(per_frame) > frame_count:
        raise _err(
            source, "trajectories", f"{len(per_frame)} annotated frames exceed frame_count {frame_count}"
        )
    fragments = _parse_trajectories(per_frame, objects, source)
    relations = _parse_relations(raw, objects, vocab, len(per_frame), source)
    _check_relation_boxes(relations, fragments, source)
    video_path = raw.get("video_path")
    group = str(video_path).split("/")[0] if dataset == "vidor" and isinstance(video_path, str) else None
    return VideoAnnotation(
        video_id=video_id,
        frame_count=frame_count,
        fps=fps,
        width=width,
        height=height,
        annotated_len=len(per_frame),
        objects=objects,
        fragments=tuple(fragments),
        relations=tuple(relations),
        version=version,
        group=group,
        video_hash=raw.get("video_hash") if isinstance(raw.get("video_hash"), str) else None,
        source=source,
    )


def _parse_objects(raw: dict, vocab: Vocabulary, source: str) -> dict[int, str]:
    objects: dict[int, str] = {}
    for i, entry in enumerate(_get(raw, "subject/objects", list, source)):
        key = f"subject/objects[{i}]"
        if not isinstance(entry, dict):
            raise _err(source, key, "expected an object {tid, category}")
        tid = _get(entry, "tid", int, source, f"{key}.")
        category = _get(entry, "category", str, source, f"{key}.")
        if category not in vocab.objects:
            raise _err(
                source,
                f"{key}.category",
                f"unknown category {category!r} (not a {vocab.dataset} object class)",
            )
        if tid in objects:
            raise _err(source, f"{key}.tid", f"duplicate tid {tid}")
        objects[tid] = category
    return objects


_NUMBER_TYPES = (int, float)  # exact types: bool is rejected


def _parse_trajectories(per_frame: list, objects: dict[int, str], source: str) -> list[Track]:
    frames: dict[int, list[int]] = defaultdict(list)
    boxes: dict[int, list[tuple[float, float, float, float]]] = defaultdict(list)
    for fid, entries in enumerate(per_frame):
        if not isinstance(entries, list):
            raise _err(source, f"trajectories[{fid}]", f"expected a list, got {type(entries).__name__}")
        for j, entry in enumerate(entries):
            tid, box = _fast_entry(entry)
            if box is None or tid not in objects or (frames[tid] and frames[tid][-1] == fid):
                tid, box = _checked_entry(entry, objects, frames, fid, source, f"trajectories[{fid}][{j}]")
            frames[tid].append(fid)
            boxes[tid].append(box)
    fragments = []
    for tid in sorted(frames):
        f = np.asarray(frames[tid], dtype=np.int64)
        b = np.asarray(boxes[tid], dtype=np.float32)
        for start, end in contiguous_runs(f):
            fragments.append(Track(tid, objects[tid], f[start:end], b[start:end]))
    return fragments


def _fast_entry(entry: Any) -> tuple[Any, tuple[float, float, float, float] | None]:
    """(tid, box) of a well-formed entry, box None otherwise (then the checked path says why)."""
    try:
        tid, bbox = entry["tid"], entry["bbox"]
        box = (bbox["xmin"], bbox["ymin"], bbox["xmax"], bbox["ymax"])
    except (TypeError, KeyError):
        return None, None
    if (
        type(tid) is not int
        or any(type(v) not in _NUMBER_TYPES for v in box)
        or box[0] > box[2]
        or box[1] > box[3]
    ):
        return None, None
    return tid, box


def _checked_entry(
    entry: Any, objects: dict[int, str], frames: dict[int, list[int]], fid: int, source: str, key: str
) -> tuple[int, tuple[float, float, float, float]]:
    """Validate one per-frame entry key by key; raises on the first problem."""
    if not isinstance(entry, dict):
        raise _err(source, key, "expected an object {tid, bbox}")
    tid = _get(entry, "tid", int, source, f"{key}.")
    if tid not in objects:
        raise _err(source, f"{key}.tid", f"tid {tid} is not declared in 'subject/objects'")
    if frames[tid] and frames[tid][-1] == fid:
        raise _err(source, f"{key}.tid", f"tid {tid} has two boxes in frame {fid}")
    return tid, _parse_bbox(entry, source, key)


def _parse_bbox(entry: dict, source: str, key: str) -> tuple[float, float, float, float]:
    bbox = _get(entry, "bbox", dict, source, f"{key}.")
    x1, y1, x2, y2 = (
        float(_get(bbox, k, (int, float), source, f"{key}.bbox.")) for k in ("xmin", "ymin", "xmax", "ymax")
    )
    if x1 > x2 or y1 > y2:
        raise _err(source, f"{key}.bbox", f"xmin > xmax or ymin > ymax in {bbox!r}")
    return x1, y1, x2, y2


def _parse_relations(
    raw: dict, objects: dict[int, str], vocab: Vocabulary, annotated_len: int, source: str
) -> list[RelationInstance]:
    relations = []
    for i, entry in enumerate(_get(raw, "relation_instances", list, source)):
        key = f"relation_instances[{i}]"
        if not isinstance(entry, dict):
            raise _err(source, key, "expected an object")
        rel = RelationInstance(
            subject_tid=_get(entry, "subject_tid", int, source, f"{key}."),
            object_tid=_get(entry, "object_tid", int, source, f"{key}."),
            predicate=_get(entry, "predicate", str, source, f"{key}."),
            begin_fid=_get(entry, "begin_fid", int, source, f"{key}."),
            end_fid=_get(entry, "end_fid", int, source, f"{key}."),
        )
        for name in ("subject_tid", "object_tid"):
            if getattr(rel, name) not in objects:
                raise _err(
                    source, f"{key}.{name}", f"tid {getattr(rel, name)} is not declared in 'subject/objects'"
                )
        if rel.predicate not in vocab.predicates:
            raise _err(
                source,
                f"{key}.predicate",
                f"unknown predicate {rel.predicate!r} (not a {vocab.dataset} predicate)",
            )
        if not 0 <= rel.begin_fid < rel.end_fid <= annotated_len:
            raise _err(
                source,
                f"{key}.end_fid",
                f"[begin_fid, end_fid) = [{rel.begin_fid}, {rel.end_fid}) is empty or outside the "
                f"{annotated_len} annotated frames",
            )
        relations.append(rel)
    return relations


def _check_relation_boxes(relations: list[RelationInstance], fragments: list[Track], source: str) -> None:
    present: dict[int, set[int]] = defaultdict(set)
    for frag in fragments:
        present[frag.tid].update(range(frag.begin, frag.end))
    for i, rel in enumerate(relations):
        for name, tid in (("subject_tid", rel.subject_tid), ("object_tid", rel.object_tid)):
            missing = [f for f in range(rel.begin_fid, rel.end_fid) if f not in present[tid]]
            if missing:
                raise _err(
                    source,
                    f"relation_instances[{i}].{name}",
                    f"tid {tid} has no box in frame {missing[0]} of [{rel.begin_fid}, {rel.end_fid})",
                )


def load_annotation_file(path: Path | str, dataset: str) -> VideoAnnotation:
    """Read and validate one official annotation JSON file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file does not exist")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from None
    return parse_annotation(raw, dataset, source=str(path), expected_id=path.stem)


def split_folder(dataset: str, split: str) -> str:
    """Official folder name of a split (``train``/``test`` or the official name itself)."""
    folders = SPLIT_FOLDERS[_dataset(dataset)]
    if split in folders:
        return folders[split]
    if split in folders.values():
        return split
    valid = sorted(set(folders) | set(folders.values()))
    raise ValueError(f"split: unknown {dataset} split {split!r}; valid: {', '.join(valid)}")


def _dataset(dataset: str) -> str:
    if dataset not in SPLIT_FOLDERS:
        raise ValueError(f"data.dataset: unknown dataset {dataset!r}; valid: {', '.join(SPLIT_FOLDERS)}")
    return dataset


def annotation_files(root: Path | str, dataset: str, split: str) -> list[Path]:
    """The annotation files of a split in the official layout, sorted; errors if there are none."""
    root = Path(root)
    folder = split_folder(dataset, split)
    if dataset == "vidvrd":
        base, pattern = root / folder, "*.json"
    else:
        base = (root / "annotation" / folder) if (root / "annotation").is_dir() else root / folder
        pattern = "*/*.json"
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: annotation folder of the {dataset} {split} split does not exist")
    files = sorted(base.glob(pattern))
    if not files:
        raise FileNotFoundError(f"{base}: no annotation files ({pattern}) in the {dataset} {split} split")
    return files


def load_annotation_folder(root: Path | str, dataset: str, split: str) -> list[VideoAnnotation]:
    """All videos of one split of an official annotation folder, validated, sorted by video id."""
    videos = [load_annotation_file(p, dataset) for p in annotation_files(root, dataset, split)]
    seen: dict[str, str] = {}
    for video in videos:
        if video.video_id in seen:
            raise AnnotationError(
                f"{video.source}: key 'video_id': {video.video_id!r} also in {seen[video.video_id]}"
            )
        seen[video.video_id] = video.source
    return sorted(videos, key=lambda v: v.video_id)


def annotation_to_json(video: VideoAnnotation, dataset: str) -> dict[str, Any]:
    """The official JSON object of a video (inverse of :func:`parse_annotation`)."""
    per_frame: list[list[dict[str, Any]]] = [[] for _ in range(video.annotated_len)]
    for frag in sorted(video.fragments, key=lambda t: t.tid):
        for f, box in zip(frag.frames.tolist(), frag.boxes.tolist(), strict=True):
            entry: dict[str, Any] = {
                "tid": frag.tid,
                "bbox": {
                    "xmin": _num(box[0]),
                    "ymin": _num(box[1]),
                    "xmax": _num(box[2]),
                    "ymax": _num(box[3]),
                },
            }
            if dataset == "vidor":
                entry.update(generated=0, tracker="none")
            per_frame[f].append(entry)
    out: dict[str, Any] = {}
    if dataset == "vidor":
        group = video.group or "0000"
        out.update(
            version=video.version or VIDOR_VERSION,
            video_id=video.video_id,
            video_hash=video.video_hash or "0" * 12,
            video_path=f"{group}/{video.video_id}.mp4",
        )
    else:
        out["video_id"] = video.video_id
    out.update(frame_count=video.frame_count, fps=video.fps, width=video.width, height=video.height)
    out["subject/objects"] = [{"tid": tid, "category": cat} for tid, cat in sorted(video.objects.items())]
    out["trajectories"] = per_frame
    out["relation_instances"] = [
        {
            "subject_tid": r.subject_tid,
            "object_tid": r.object_tid,
            "predicate": r.predicate,
            "begin_fid": r.begin_fid,
            "end_fid": r.end_fid,
        }
        for r in video.relations
    ]
    return out


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(float(value), 2)


def annotation_path(root: Path | str, dataset: str, split: str, video: VideoAnnotation) -> Path:
    """Where a video's file goes in the official layout under ``root``."""
    folder = split_folder(dataset, split)
    if dataset == "vidvrd":
        return Path(root) / folder / f"{video.video_id}.json"
    return Path(root) / "annotation" / folder / (video.group or "0000") / f"{video.video_id}.json"


def write_annotation_folder(
    root: Path | str, dataset: str, split: str, videos: Iterable[VideoAnnotation]
) -> list[Path]:
    """Write videos as official annotation files under ``root``; returns the paths."""
    paths = []
    for video in videos:
        path = annotation_path(root, dataset, split, video)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(annotation_to_json(video, dataset), separators=(",", ":")), encoding="utf-8"
        )
        paths.append(path)
    return paths


def ground_truth_relations(videos: Sequence[VideoAnnotation]) -> dict[str, list[dict[str, Any]]]:
    """Video-level GT in the official evaluation format, one entry per relation instance.

    ``{video_id: [{triplet, subject_tid, object_tid, duration, sub_traj, obj_traj}]}``; every video of
    the split is a key, even one without relations (as the helper's ground truth has).
    """
    gt: dict[str, list[dict[str, Any]]] = {}
    for video in videos:
        tracks = video.tid_tracks()
        entries = []
        for rel in video.relations:
            frames = np.arange(rel.begin_fid, rel.end_fid)
            sub = _boxes_at(tracks[rel.subject_tid], frames, video, rel)
            obj = _boxes_at(tracks[rel.object_tid], frames, video, rel)
            entries.append(
                {
                    "triplet": [video.objects[rel.subject_tid], rel.predicate, video.objects[rel.object_tid]],
                    "subject_tid": rel.subject_tid,
                    "object_tid": rel.object_tid,
                    "duration": [rel.begin_fid, rel.end_fid],
                    "sub_traj": sub.tolist(),
                    "obj_traj": obj.tolist(),
                }
            )
        gt[video.video_id] = entries
    return gt


def _boxes_at(track: Track, frames: np.ndarray, video: VideoAnnotation, rel: RelationInstance) -> np.ndarray:
    present, boxes = track.box_lookup(frames)
    if not present.all():  # parse_annotation checks this; a hand-built VideoAnnotation may not be checked
        raise AnnotationError(f"{video.source or video.video_id}: relation {rel} has frames without a box")
    return boxes


def novel_ground_truth(
    gt: dict[str, list[dict[str, Any]]], novel_predicates: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """The Novel evaluation split: GT whose predicate is novel (objects of any split); empty videos dropped."""
    novel = set(novel_predicates)
    out = {vid: [r for r in rels if r["triplet"][1] in novel] for vid, rels in gt.items()}
    return {vid: rels for vid, rels in out.items() if rels}
