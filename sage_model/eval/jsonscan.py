"""Read relation JSON files without turning every box coordinate into a Python object.

Why: a VidVRD prediction file is ~50 MB, almost all of it box coordinates. A plain ``json.load``
(or orjson) creates ~10 million Python numbers and lists and takes seconds; the evaluator only needs
the boxes of the predictions whose triplet occurs in the ground truth of their video.

How: the byte spans of every ``"sub_traj"``/``"obj_traj"`` value are located with C-speed byte
searches, each value is replaced by a short marker string, and the small remaining document (the
"skeleton": video ids, triplets, scores, durations) is parsed normally. Boxes are parsed later, only
for the spans asked for, as one flat JSON array of numbers (correctly rounded by orjson, so the
floats equal what ``json.load`` returns). Anything the fast scan does not recognise falls back to plain JSON values,
which the caller then treats as ordinary Python lists.
"""

from __future__ import annotations

import gc
import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

try:  # orjson is a declared dependency; stay importable without it (stdlib json is slower).
    import orjson

    _loads: Any = orjson.loads
except ImportError:  # pragma: no cover - exercised only where orjson is missing
    orjson = None  # type: ignore[assignment]
    _loads = json.loads

# A trajectory value replaced in the skeleton becomes the negative integer -(span index + 1): cheap to
# parse, and never a valid trajectory (a trajectory is a list), so it cannot hide a real value; a
# file whose own trajectory values are negative integers is caught by the permutation check of the
# markers and re-read without the scan.

_WS = b" \t\r\n"
_NUMBER_CHARS = b"0123456789.,-+eE"
_CHUNK = 1 << 22  # bytes processed at a time (scan) / text parsed at a time (boxes)
_TRAJ_VALUE = rb'"(?:sub|obj)_traj"\s*:\s*(\[\s*\[[^"{}:]*?\]\s*\])'  # compiled on first use


class JsonFormatError(ValueError):
    """The file is not valid JSON (message names the file, line and column)."""


@dataclass(frozen=True)
class ScannedJson:
    """A JSON document whose trajectory values are byte spans of ``raw`` instead of lists."""

    document: Any
    """The parsed skeleton; each extracted trajectory value is a marker (see `marker_index`)."""
    raw: bytes
    starts: np.ndarray
    """(K,) int64 byte offset of the ``[`` opening trajectory span k."""
    ends: np.ndarray
    """(K,) int64 byte offset just past its closing ``]``."""
    frames: np.ndarray
    """(K,) int64 number of boxes in span k (number of ``[`` inside minus one)."""
    sequential: bool = False
    """Spans alternate subject/object in document order and every marker is the same ``-1``: the
    k-th trajectory value met in document order is span k."""


def marker_index(value: Any) -> int | None:
    """The span index a skeleton value stands for, or None when it is an ordinary JSON value."""
    if type(value) is int and value < 0:
        return -value - 1
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
            starts, ends, frames, sequential = found
            scanned = _scanned(raw, starts, ends, frames, source, sequential)
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
    raw: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    frames: np.ndarray,
    source: str,
    sequential: bool = False,
) -> ScannedJson | None:
    """Parse the skeleton; None when the spans cannot have been right (the caller then falls back).

    A span that swallowed the start of a string leaves ``<marker>"`` in the skeleton, which is not
    JSON, so a skeleton that parses had its spans right.
    """
    skeleton = _skeleton(raw, starts, ends, sequential)
    try:
        document = parse_json(skeleton, source)
    except JsonFormatError:
        parse_json(raw, source)  # raises with the position in the real file when the file is bad
        return None
    return ScannedJson(document, raw, starts, ends, frames, sequential)


def _compact_spans(raw: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool] | None:
    """(starts, ends, frames, sequential) of the trajectory spans of a compact document, or None.

    In compact JSON a trajectory value is the only place where ``[[`` and ``]]`` occur (no other value
    nests lists in lists), so the spans are found from the positions of all brackets with a few
    array operations. The key before each span and the pairing and order of openings and closings are
    checked (and the skeleton must parse); any surprise returns None and the general scan takes over.
    """
    arr = np.frombuffer(raw, np.uint8)
    starts = _pair_positions(arr, ord("["))  # "[[" (a deeper "[[[" fails the key check)
    ends = _pair_positions(arr, ord("]")) + 2  # just past "]]"
    if starts.size == 0 or starts.size != ends.size:
        return None
    if np.any(ends <= starts) or np.any(starts[1:] < ends[:-1]):
        return None
    if starts[0] < 11:
        return None
    key = sliding_window_view(arr, 11)[starts - 11].view("S11")[:, 0]  # the 11 bytes before '['
    is_sub = key == b'"sub_traj":'
    if not np.all(is_sub | (key == b'"obj_traj":')):
        return None
    sequential = bool(starts.size % 2 == 0 and is_sub[0::2].all() and not is_sub[1::2].any())
    count = raw.count
    frames = np.fromiter(
        map(count, repeat(b"[", starts.size), starts.tolist(), ends.tolist()), np.int64, starts.size
    )
    return starts, ends, frames - 1, sequential


def _pair_positions(arr: np.ndarray, byte: int) -> np.ndarray:
    """Offsets where ``byte`` occurs twice in a row, scanned in cache-sized chunks.

    Chunking with reused buffers keeps this at a few MB of memory instead of two file-sized boolean
    arrays per byte value, whose page faults cost more than the comparisons themselves.
    """
    n = arr.size
    chunk = _CHUNK
    same = np.empty(chunk + 1, bool)
    pair = np.empty(chunk, bool)
    found = []
    for c in range(0, max(n - 1, 0), chunk):
        seg = arr[c : c + chunk + 1]
        m = seg.size - 1
        np.equal(seg, byte, out=same[: m + 1])
        np.logical_and(same[:m], same[1 : m + 1], out=pair[:m])
        found.append(np.flatnonzero(pair[:m]) + c)
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def _general_spans(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Trajectory spans of any layout (pretty-printed, unusual spacing); a slower regex scan."""
    starts: list[int] = []
    ends: list[int] = []
    for match in re.finditer(_TRAJ_VALUE, raw):
        start, end = match.span(1)
        starts.append(start)
        ends.append(end)
    return np.asarray(starts, np.int64), np.asarray(ends, np.int64)


def _skeleton(raw: bytes, starts: np.ndarray, ends: np.ndarray, sequential: bool = False) -> bytes:
    """``raw`` with span k replaced by the marker ``-(k + 1)``, or by ``-1`` when ``sequential``."""
    if starts.size == 0:
        return raw
    cut_from = [0, *ends.tolist()]
    cut_to = [*starts.tolist(), len(raw)]
    kept = [raw[a:b] for a, b in zip(cut_from, cut_to, strict=True)]
    if sequential:
        return b"-1".join(kept)
    markers = [b"%d" % -k for k in range(1, starts.size + 1)]
    return b"".join(chain.from_iterable(zip(kept, markers, strict=False))) + kept[-1]


class BoxParseError(ValueError):
    """A span is not a list of [x1, y1, x2, y2] number boxes; ``span`` is the first bad one."""

    def __init__(self, span: int, problem: str) -> None:
        super().__init__(problem)
        self.span = span


def parse_boxes(raw: bytes, starts: np.ndarray, ends: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(4, sum(frames)) float64 box columns (x1, y1, x2, y2) of the given spans, in span order.

    Spans are parsed in batches of a few MB of text (reused memory instead of fresh page faults):
    each batch is joined, flattened to one JSON array of numbers and parsed by ONE orjson call
    instead of one small list per box. orjson rounds decimal text correctly, so values equal
    ``json.load``'s. Anything malformed is then located span by span to name it.
    """
    total = int(frames.sum())
    out = np.empty((total, 4), np.float64)
    if total == 0:
        return out.T.copy()
    size = np.cumsum(ends - starts)
    cuts = np.searchsorted(size, np.arange(_CHUNK, int(size[-1]), _CHUNK), side="right")
    bounds = sorted({0, *cuts.tolist(), int(starts.size)})
    row = 0
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if hi <= lo:
            continue
        n = int(frames[lo:hi].sum())
        values = _parse_batch(raw, starts[lo:hi], ends[lo:hi], n)
        if values is None:
            _locate_bad_span(raw, starts[lo:hi], ends[lo:hi], frames[lo:hi], offset=lo)
            raise BoxParseError(lo, "boxes could not be parsed")  # pragma: no cover - located above
        out[row : row + n] = values.reshape(n, 4)
        row += n
    return np.ascontiguousarray(out.T)


def _parse_batch(raw: bytes, starts: np.ndarray, ends: np.ndarray, total: int) -> np.ndarray | None:
    """(4 * total,) numbers of the spans, or None when they are not ``total`` boxes of 4 numbers."""
    text = b",".join([raw[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)])
    if any(c in text for c in (b" ", b"\n", b"\t", b"\r")):
        text = text.translate(None, _WS)
    # Boxes are separated by "],[" (also between two joined spans), only number characters remain,
    # and 4 numbers per box: a box with a wrong number of values changes the total and is caught
    # (unless another wrong box in the same batch compensates it exactly).
    if text.count(b"],[") + 1 != total:
        return None
    flat = text.replace(b"],[", b",").translate(None, b"[]")
    if flat.translate(None, _NUMBER_CHARS):
        return None
    with gc_paused():
        try:
            numbers = parse_json(b"[" + flat + b"]", "boxes")
            values = np.fromiter(numbers, np.float64, len(numbers))
        except (ValueError, TypeError, OverflowError):
            return None
    if values.size != 4 * total or not np.isfinite(values).all():
        return None
    return values


def _locate_bad_span(
    raw: bytes, starts: np.ndarray, ends: np.ndarray, frames: np.ndarray, offset: int = 0
) -> None:
    """Raise BoxParseError for the first span that is not a list of ``frames[k]`` 4-number boxes."""
    for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        try:
            value = parse_json(raw[a:b], "trajectory")
        except JsonFormatError:
            raise BoxParseError(offset + k, "is not valid JSON") from None
        problem = box_list_problem(value, int(frames[k]))
        if problem:
            raise BoxParseError(offset + k, problem)


def box_list_problem(value: Any, frames: int | None = None) -> str | None:
    """Why ``value`` is not a list of [x1, y1, x2, y2] finite-number boxes (None when it is)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        return f"must be a list of [x1, y1, x2, y2] boxes, got {type(value).__name__}"
    for i, box in enumerate(value):
        if not isinstance(box, list | tuple) or len(box) != 4:
            return f"box {i} must be [x1, y1, x2, y2], got {box!r}"[:200]
        for c in box:
            if type(c) not in (int, float) or not math.isfinite(c):
                return f"box {i} has a non-finite or non-number coordinate {c!r}"
    if frames is not None and len(value) != frames:
        return f"has {len(value)} boxes, expected {frames}"
    return None
