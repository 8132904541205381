"""On-disk feature store (per pair, per keyframe) and the teacher store aligned with it.

A store is a directory (format in ``docs/data.md``)::

    manifest.json     shapes, dtypes, vocabulary size, feature model fingerprint, synthetic flag, settings
    content_hash      sha256 hex of the manifest + every array + the row table, computed at write time
    rows.parquet      one row per sample: video_id, segment_start, segment_end, subject_tid, ...
    visual.npy        (N, T, 4, D) float16   subject, object, union, whole-frame features per keyframe
    boxes.npy         (N, T, 2, 4) float32   normalised subject/object boxes per keyframe
    labels.npy        (N, P) uint8           multi-hot over the full predicate vocabulary
    ...               (every array is listed in the manifest)

Arrays are opened with ``np.load(mmap_mode="r")``: nothing is read until a row is indexed. Opening
checks every file against the manifest (present, dtype, shape, exact byte size), so a truncated or
swapped file fails at open with its path; :meth:`FeatureStore.verify` re-hashes the content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sage_model.data.samples import PairSamples

FEATURE_FORMAT = "sage-feature-store"
TEACHER_FORMAT = "sage-teacher-store"
FORMAT_VERSION = 1
REGIONS = ("subject", "object", "union", "frame")
PERSPECTIVES = ("subject", "object", "union", "frame")

FEATURE_ARRAYS: dict[str, str] = {
    "visual": "float16",  # (N, T, 4, D)
    "boxes": "float32",  # (N, T, 2, 4)
    "labels": "uint8",  # (N, P)
    "subject_class": "int16",  # (N,)
    "object_class": "int16",  # (N,)
    "seg_traj": "float32",  # (N, 2, 30, 4)
    "seg_span": "int32",  # (N, 2)
    "keyframes": "int32",  # (N, T)
}
ROW_COLUMNS: dict[str, str] = {
    "video_id": "string",
    "segment_start": "int32",
    "segment_end": "int32",
    "subject_tid": "int32",
    "object_tid": "int32",
    "subject_score": "float32",
    "object_score": "float32",
    "gt_subject_tid": "int32",
    "gt_object_tid": "int32",
}
_HASH_CHUNK = 1 << 22


@dataclass(frozen=True)
class RowTable:
    """The row table of a store: one entry per sample, numpy columns."""

    video_id: np.ndarray  # (N,) str (object)
    segment_start: np.ndarray
    segment_end: np.ndarray
    subject_tid: np.ndarray
    object_tid: np.ndarray
    subject_score: np.ndarray
    object_score: np.ndarray
    gt_subject_tid: np.ndarray
    gt_object_tid: np.ndarray

    def __len__(self) -> int:
        return len(self.video_id)

    def rows_of_videos(self, video_ids: Iterable[str]) -> np.ndarray:
        """(k,) int64 indices of the rows whose video is in ``video_ids``, in store order."""
        wanted = np.array(sorted(set(video_ids)), dtype=object)
        return np.flatnonzero(np.isin(self.video_id, wanted)).astype(np.int64)

    def video_ids(self) -> list[str]:
        """Distinct video ids in store order."""
        return list(dict.fromkeys(self.video_id.tolist()))


def _canonical(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def _hash_content(
    manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray], rows: RowTable | None
) -> str:
    digest = hashlib.sha256(_canonical(manifest))
    for name in sorted(arrays):
        array = arrays[name]
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        flat = array.reshape(-1)
        step = max(1, _HASH_CHUNK // max(1, array.itemsize))
        for start in range(0, len(flat), step):
            digest.update(np.ascontiguousarray(flat[start : start + step]).tobytes())
    if rows is not None:
        for f in fields(RowTable):
            column = getattr(rows, f.name)
            digest.update(f.name.encode())
            if column.dtype == object:
                digest.update("\0".join(column.tolist()).encode())
            else:
                digest.update(np.ascontiguousarray(column).tobytes())
    return digest.hexdigest()


def _write_array(directory: Path, name: str, array: np.ndarray, dtype: str) -> dict[str, Any]:
    array = np.ascontiguousarray(array, dtype=dtype)
    np.save(directory / f"{name}.npy", array, allow_pickle=False)
    return {"file": f"{name}.npy", "dtype": dtype, "shape": list(array.shape)}


def _open_array(directory: Path, name: str, spec: Mapping[str, Any]) -> np.ndarray:
    path = directory / spec["file"]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: array '{name}' listed in manifest.json is missing")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: array '{name}' is truncated or unreadable ({exc})") from None
    if array.dtype != np.dtype(spec["dtype"]) or list(array.shape) != list(spec["shape"]):
        raise ValueError(
            f"{path}: array '{name}' is {array.dtype}{list(array.shape)}, "
            f"manifest.json says {spec['dtype']}{list(spec['shape'])}"
        )
    size = path.stat().st_size
    if isinstance(array, np.memmap) and array.offset + array.nbytes != size:
        raise ValueError(f"{path}: array '{name}' has {size} bytes, expected {array.offset + array.nbytes}")
    return array


_REQUIRED_KEYS = {
    FEATURE_FORMAT: ("arrays", "num_rows", "num_keyframes", "feature_dim", "synthetic"),
    TEACHER_FORMAT: ("arrays", "num_rows", "name", "feature_store_hash"),
}


def _read_manifest(directory: Path, expected_format: str) -> tuple[dict[str, Any], str]:
    directory = Path(directory)
    manifest_path, hash_path = directory / "manifest.json", directory / "content_hash"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: not a {expected_format} (manifest.json missing)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{manifest_path}: not valid JSON ({exc})") from None
    if manifest.get("format") != expected_format:
        raise ValueError(
            f"{manifest_path}: key 'format': expected {expected_format!r}, got {manifest.get('format')!r}"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{manifest_path}: key 'format_version': expected {FORMAT_VERSION}, got {manifest.get('format_version')!r}"
        )
    for key in _REQUIRED_KEYS[expected_format]:
        if key not in manifest:
            raise ValueError(f"{manifest_path}: key '{key}': missing")
    if not hash_path.is_file():
        raise FileNotFoundError(f"{hash_path}: content hash file is missing")
    return manifest, hash_path.read_text(encoding="utf-8").strip()


def _finish(
    directory: Path, manifest: dict[str, Any], arrays: Mapping[str, np.ndarray], rows: RowTable | None
) -> None:
    (directory / "manifest.json").write_text(
        json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    (directory / "content_hash").write_text(_hash_content(manifest, arrays, rows) + "\n", encoding="utf-8")


def _prepare_dir(directory: Path) -> Path:
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory}: refusing to write a store into a non-empty folder")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _rows_from_samples(samples: PairSamples) -> RowTable:
    return RowTable(**{name: np.asarray(getattr(samples, name)) for name in ROW_COLUMNS})


def _write_rows(directory: Path, rows: RowTable) -> None:
    columns = {}
    for name, kind in ROW_COLUMNS.items():
        values = getattr(rows, name)
        columns[name] = (
            pa.array(values.tolist(), type=pa.string()) if kind == "string" else pa.array(values.astype(kind))
        )
    pq.write_table(pa.table(columns), directory / "rows.parquet", compression="zstd")


def _read_rows(directory: Path, num_rows: int) -> RowTable:
    path = directory / "rows.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: row table is missing")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path}: row table is unreadable ({exc})") from None
    missing = [c for c in ROW_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: key '{missing[0]}': column missing")
    if table.num_rows != num_rows:
        raise ValueError(f"{path}: {table.num_rows} rows, manifest.json says {num_rows}")
    out = {}
    for name, kind in ROW_COLUMNS.items():
        column = table.column(name).to_numpy(zero_copy_only=False)
        out[name] = column.astype(object) if kind == "string" else column.astype(kind)
    return RowTable(**out)


def write_feature_store(
    directory: Path | str,
    samples: PairSamples,
    visual: np.ndarray,
    *,
    dataset: str,
    split: str,
    source: str,
    feature_model: Mapping[str, Any],
    synthetic: bool,
    settings: Mapping[str, Any] | None = None,
) -> FeatureStore:
    """Write samples + their (N, T, 4, D) visual features as a feature store; returns it opened."""
    directory = _prepare_dir(Path(directory))
    n = len(samples)
    if visual.ndim != 4 or visual.shape[0] != n or visual.shape[2] != len(REGIONS):
        raise ValueError(f"visual: expected (N={n}, T, 4, D) features, got {visual.shape}")
    arrays = {
        "visual": visual,
        **{name: getattr(samples, name) for name in FEATURE_ARRAYS if name != "visual"},
    }
    specs = {
        name: _write_array(directory, name, arrays[name], FEATURE_ARRAYS[name]) for name in FEATURE_ARRAYS
    }
    rows = _rows_from_samples(samples)
    _write_rows(directory, rows)
    manifest = {
        "format": FEATURE_FORMAT,
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "split": split,
        "source": source,
        "num_rows": n,
        "num_keyframes": int(visual.shape[1]),
        "feature_dim": int(visual.shape[3]),
        "num_predicates": int(samples.labels.shape[1]),
        "regions": list(REGIONS),
        "arrays": specs,
        "rows": {"file": "rows.parquet", "columns": dict(ROW_COLUMNS)},
        "feature_model": dict(feature_model),
        "synthetic": bool(synthetic),
        "settings": dict(settings or {}),
    }
    loaded = {name: np.load(directory / spec["file"], mmap_mode="r") for name, spec in specs.items()}
    _finish(directory, manifest, loaded, rows)
    return FeatureStore.open(directory)


@dataclass(frozen=True, eq=False)
class FeatureStore:
    """An opened feature store: memory-mapped arrays, the row table, the manifest and its hash."""

    path: Path
    manifest: dict[str, Any]
    content_hash: str
    rows: RowTable
    visual: np.ndarray  # (N, T, 4, D) float16
    boxes: np.ndarray  # (N, T, 2, 4) float32
    labels: np.ndarray  # (N, P) uint8
    subject_class: np.ndarray  # (N,) int16
    object_class: np.ndarray  # (N,) int16
    seg_traj: np.ndarray  # (N, 2, 30, 4) float32
    seg_span: np.ndarray  # (N, 2) int32
    keyframes: np.ndarray  # (N, T) int32

    @classmethod
    def open(cls, directory: Path | str) -> FeatureStore:
        """Open a store (memory-mapped); errors name the file that is missing or inconsistent."""
        directory = Path(directory)
        manifest, content_hash = _read_manifest(directory, FEATURE_FORMAT)
        specs = manifest.get("arrays", {})
        missing = [name for name in FEATURE_ARRAYS if name not in specs]
        if missing:
            raise ValueError(f"{directory / 'manifest.json'}: key 'arrays.{missing[0]}': missing")
        arrays = {name: _open_array(directory, name, specs[name]) for name in FEATURE_ARRAYS}
        n = manifest["num_rows"]
        for name, array in arrays.items():
            if array.shape[0] != n:
                raise ValueError(
                    f"{directory / specs[name]['file']}: {array.shape[0]} rows, manifest.json says {n}"
                )
        rows = _read_rows(directory, n)
        return cls(path=directory, manifest=manifest, content_hash=content_hash, rows=rows, **arrays)

    def __len__(self) -> int:
        return int(self.manifest["num_rows"])

    @property
    def feature_dim(self) -> int:
        return int(self.manifest["feature_dim"])

    @property
    def num_keyframes(self) -> int:
        return int(self.manifest["num_keyframes"])

    @property
    def synthetic(self) -> bool:
        return bool(self.manifest["synthetic"])

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in FEATURE_ARRAYS}

    def verify(self) -> None:
        """Recompute the content hash; ValueError when the files changed since they were written."""
        actual = _hash_content(self.manifest, self.arrays(), self.rows)
        if actual != self.content_hash:
            raise ValueError(
                f"{self.path}: content hash mismatch (stored {self.content_hash[:12]}, actual {actual[:12]})"
            )


def write_teacher_store(
    directory: Path | str,
    text: np.ndarray,
    *,
    name: str,
    store: FeatureStore,
    teacher_model: Mapping[str, Any],
    synthetic: bool,
    settings: Mapping[str, Any] | None = None,
) -> TeacherStore:
    """Write (N, T, 4, D) teacher text features aligned with ``store``'s rows."""
    directory = _prepare_dir(Path(directory))
    if text.shape[:2] != store.visual.shape[:2] or text.shape[2] != len(PERSPECTIVES):
        raise ValueError(
            f"text: expected ({len(store)}, {store.num_keyframes}, 4, D) features, got {text.shape}"
        )
    spec = _write_array(directory, "text", text, "float16")
    manifest = {
        "format": TEACHER_FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "num_rows": len(store),
        "feature_dim": int(text.shape[3]),
        "perspectives": list(PERSPECTIVES),
        "feature_store_hash": store.content_hash,
        "arrays": {"text": spec},
        "teacher_model": dict(teacher_model),
        "synthetic": bool(synthetic),
        "settings": dict(settings or {}),
    }
    _finish(directory, manifest, {"text": np.load(directory / spec["file"], mmap_mode="r")}, None)
    return TeacherStore.open(directory)


@dataclass(frozen=True, eq=False)
class TeacherStore:
    """Teacher text features of the four perspectives, row-aligned with one feature store."""

    path: Path
    manifest: dict[str, Any]
    content_hash: str
    text: np.ndarray  # (N, T, 4, D) float16

    @classmethod
    def open(cls, directory: Path | str) -> TeacherStore:
        directory = Path(directory)
        manifest, content_hash = _read_manifest(directory, TEACHER_FORMAT)
        spec = manifest.get("arrays", {}).get("text")
        if spec is None:
            raise ValueError(f"{directory / 'manifest.json'}: key 'arrays.text': missing")
        text = _open_array(directory, "text", spec)
        if text.shape[0] != manifest["num_rows"]:
            raise ValueError(
                f"{directory / spec['file']}: {text.shape[0]} rows, manifest.json says {manifest['num_rows']}"
            )
        return cls(path=directory, manifest=manifest, content_hash=content_hash, text=text)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    def __len__(self) -> int:
        return int(self.manifest["num_rows"])

    def check_aligned(self, store: FeatureStore) -> None:
        """ValueError unless this teacher was made for exactly ``store``'s rows."""
        if self.manifest["feature_store_hash"] != store.content_hash or len(self) != len(store):
            raise ValueError(
                f"{self.path}: teacher '{self.name}' was made for feature store {self.manifest['feature_store_hash'][:12]} "
                f"({len(self)} rows), not {store.path} ({store.content_hash[:12]}, {len(store)} rows)"
            )

    def verify(self) -> None:
        """Recompute the content hash; ValueError when the files changed since they were written."""
        actual = _hash_content(self.manifest, {"text": self.text}, None)
        if actual != self.content_hash:
            raise ValueError(
                f"{self.path}: content hash mismatch (stored {self.content_hash[:12]}, actual {actual[:12]})"
            )


def directory_is_store(directory: Path | str) -> bool:
    """True when ``directory`` holds a manifest and a content hash (a finished store)."""
    directory = Path(directory)
    return (directory / "manifest.json").is_file() and (directory / "content_hash").is_file()


__all__ = [
    "FeatureStore",
    "RowTable",
    "TeacherStore",
    "write_feature_store",
    "write_teacher_store",
    "directory_is_store",
]
