"""Read relation JSON files without turning every box coordinate into a Python object.

Why: a VidVRD prediction file is ~50 MB, almost all of it box coordinates. A plain ``json.load``
(or orjson) creates ~10 million Python numbers and lists and takes seconds; the evaluator only needs
the boxes of the predictions whose triplet occurs in the ground truth of their video.

How: the byte spans of every ``"sub_traj"``/``"obj_traj"`` value are located with C-speed byte
searches, each value is replaced by a short marker string, and the small remaining document (the
"skeleton": video ids, triplets, scores, durations) is parsed normally. Boxes are parsed later, only
for the spans asked for, by polars' CSV reader (correctly rounded, so the floats equal what
``json.load`` returns). Anything the fast scan does not recognise falls back to plain JSON values,
which the caller then treats as ordinary Python lists.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

try:  # orjson is a declared dependency; stay importable without it (stdlib json is slower).
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - exercised only where orjson is missing
    orjson = None  # type: ignore[assignment]
    _loads = json.loads

MARKER_PREFIX = "\x00traj:"
"""A trajectory value replaced in the skeleton becomes the string ``MARKER_PREFIX + str(span index)``."""

_OPEN = b'_traj":[['  # compact JSON (what json.dump(..., separators) and orjson write)
_CLOSE = b"]]"
_WS = b" \t\r\n"
_TRAJ_VALUE = re.compile(rb'"(?:sub|obj)_traj"\s*:\s*(\[\s*\[[^"{}:]*?\]\s*\])')


class JsonFormatError(ValueError):
    """The file is not valid JSON (message names the file, line and column)."""


@dataclass(frozen=True)
class ScannedJson:
    """A JSON document whose trajectory values are byte spans of ``raw`` instead of lists."""

    document: Any
    """The parsed skeleton; each extracted trajectory value is a marker string (see `marker_index`)."""
    raw: bytes
    starts: np.ndarray
    """(K,) int64 byte offset of the ``[`` opening trajectory span k."""
    ends: np.ndarray
    """(K,) int64 byte offset just past its closing ``]``."""
    frames: np.ndarray
    """(K,) int64 number of boxes in span k (number of ``[`` inside minus one)."""


def marker_index(value: Any) -> int | None:
    """The span index a skeleton value stands for, or None when it is an ordinary JSON value."""
    if type(value) is str and value.startswith(MARKER_PREFIX):
        return int(value[len(MARKER_PREFIX) :])
    return None


def parse_json(raw: bytes, source: str) -> Any:
    """Parse a whole JSON document (orjson when possible; stdlib json accepts NaN/Infinity literals)."""
    try:
        return _loads(raw)
    except ValueError:
        pass
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise JsonFormatError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise JsonFormatError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def scan_json(raw: bytes, source: str) -> ScannedJson:
    """Parse ``raw`` with every ``sub_traj``/``obj_traj`` list of boxes left unparsed as a byte span."""
    with gc_paused():
        found = _compact_spans(raw)
        if found is not None:
            scanned = _scanned(raw, *found, source)
            if scanned is not None:
                return scanned
        starts, ends = _general_spans(raw)
        frames = np.fromiter(
            (raw.count(b"[", a, b) - 1 for a, b in zip(starts.tolist(), ends.tolist(), strict=True)),
            np.int64,
            starts.size,
        )
        scanned = _scanned(raw, starts, ends, frames, source)
        if scanned is None:  # not even the careful scan fits: plain JSON, boxes as Python lists
            empty = np.zeros(0, np.int64)
            return ScannedJson(parse_json(raw, source), raw, empty, empty, empty)
        return scanned


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while parsing: parsing creates many small containers, none
    of them cyclic, and the collector would otherwise rescan all of them again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _scanned(
    raw: bytes, starts: np.ndarray, ends: np.ndarray, frames: np.ndarray, source: str
) -> ScannedJson | None:
    """Parse the skeleton; None when the spans cannot have been right (the caller then falls back)."""
    skeleton = _skeleton(raw, starts, ends)
    inside = sum(map(raw.count, [b'"'] * starts.size, starts.tolist(), ends.tolist()))
    if skeleton.count(b'"') != raw.count(b'"') - inside + 2 * starts.size:
        return None  # a span swallowed part of a string
    try:
        document = parse_json(skeleton, source)
    except JsonFormatError:
        parse_json(raw, source)  # raises with the position in the real file when the file is bad
        return None
    return ScannedJson(document=document, raw=raw, starts=starts, ends=ends, frames=frames)


def _compact_spans(raw: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(starts, ends, frames) of the trajectory spans of a compact document, or None.

    In compact JSON ``_traj":[[`` opens exactly the trajectory values and the next ``]]`` closes each
    (no other value nests lists in lists). One C-speed search per span; the key name, the order of
    the spans and (in `_scanned`) the quotes are checked, and any surprise returns None so that the
    general scan takes over.
    """
    find, count = raw.find, raw.count
    starts: list[int] = []
    ends: list[int] = []
    frames: list[int] = []
    pos = 0
    while True:
        k = find(_OPEN, pos)
        if k < 0:
            break
        if raw[k - 4 : k] not in (b'"sub', b'"obj'):
            return None
        start = k + len(_OPEN) - 2
        end = find(_CLOSE, start) + 2
        if end < 2:
            return None
        starts.append(start)
        ends.append(end)
        frames.append(count(b"[", start, end) - 1)
        pos = end
    if not starts:
        return None
    s, e = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    if np.any(s[1:] < e[:-1]):
        return None
    return s, e, np.asarray(frames, np.int64)


def _general_spans(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Trajectory spans of any layout (pretty-printed, unusual spacing); a slower regex scan."""
    starts: list[int] = []
    ends: list[int] = []
    for match in _TRAJ_VALUE.finditer(raw):
        start, end = match.span(1)
        starts.append(start)
        ends.append(end)
    return np.asarray(starts, np.int64), np.asarray(ends, np.int64)


def _skeleton(raw: bytes, starts: np.ndarray, ends: np.ndarray) -> bytes:
    """``raw`` with span k replaced by the JSON string ``"\\u0000traj:k"``."""
    if starts.size == 0:
        return raw
    cut_from = [0, *ends.tolist()]
    cut_to = [*starts.tolist(), len(raw)]
    kept = [raw[a:b] for a, b in zip(cut_from, cut_to, strict=True)]
    markers = [b'"\\u0000traj:%d"' % k for k in range(starts.size)]
    return b"".join(chain.from_iterable(zip(kept, markers, strict=False))) + kept[-1]


class BoxParseError(ValueError):
    """A span is not a list of [x1, y1, x2, y2] number boxes; ``span`` is the first bad one."""

    def __init__(self, span: int, problem: str) -> None:
        super().__init__(problem)
        self.span = span


def parse_boxes(raw: bytes, starts: np.ndarray, ends: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(4, sum(frames)) float64 box columns (x1, y1, x2, y2) of the given spans, in span order.

    One CSV parse for all spans: whitespace is dropped and the separators between boxes become
    newlines, so every row is one box. A row or column count that differs from the scan's frame
    count, or a non-finite value, means a malformed span; it is then located span by span to name it.
    """
    total = int(frames.sum())
    if total == 0:
        return np.zeros((4, 0), np.float64)
    text = b",".join([raw[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)])
    text = text.translate(None, _WS).replace(b"],[", b"\n").translate(None, b"[]")
    cols = _csv_columns(text)
    if cols is None or cols.shape[1] != total or not np.isfinite(cols).all():
        _locate_bad_span(raw, starts, ends, frames)
    assert cols is not None
    return cols


def _csv_columns(text: bytes) -> np.ndarray | None:
    """Rows of exactly four numbers -> (4, R) float64 columns, or None if any row is not that."""
    import polars as pl  # heavy import, needed only when boxes are actually parsed

    names = ("x1", "y1", "x2", "y2")
    try:
        frame = pl.read_csv(text, has_header=False, schema=dict.fromkeys(names, pl.Float64))
    except Exception:  # polars raises several error types for malformed rows
        return None
    if frame.null_count().sum_horizontal().item() != 0:
        return None
    return np.stack([frame.get_column(name).to_numpy() for name in names])


def _locate_bad_span(raw: bytes, starts: np.ndarray, ends: np.ndarray, frames: np.ndarray) -> None:
    """Raise BoxParseError for the first span that is not a list of ``frames[k]`` 4-number boxes."""
    for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        try:
            value = parse_json(raw[a:b], "trajectory")
        except JsonFormatError:
            raise BoxParseError(k, "is not valid JSON") from None
        problem = box_list_problem(value, int(frames[k]))
        if problem:
            raise BoxParseError(k, problem)
    raise BoxParseError(0, "boxes could not be parsed")


def box_list_problem(value: Any, frames: int | None = None) -> str | None:
    """Why ``value`` is not a list of [x1, y1, x2, y2] finite-number boxes (None when it is)."""
    if not isinstance(value, list | tuple):
        return f"must be a list of [x1, y1, x2, y2] boxes, got {type(value).__name__}"
    for i, box in enumerate(value):
        if not isinstance(box, list | tuple) or len(box) != 4:
            return f"box {i} must be [x1, y1, x2, y2], got {box!r}"[:200]
        for c in box:
            if type(c) not in (int, float) or c != c or c in (float("inf"), float("-inf")):
                return f"box {i} has a non-finite or non-number coordinate {c!r}"
    if frames is not None and len(value) != frames:
        return f"has {len(value)} boxes, expected {frames}"
    return None
