"""Relations of many videos held in columns, with trajectory boxes parsed on first use.

Why columns: the evaluator sorts, groups and matches tens of thousands of relations; with one
numpy array per field these are a handful of array operations instead of a Python loop per
relation. Why lazy boxes: only relations whose triplet occurs in the ground truth of their video
ever need their boxes (a prediction of another triplet is a false positive whatever its boxes), so
most boxes of a prediction file never have to be parsed.

Trajectory ``2 * i`` is the subject of relation ``i`` and ``2 * i + 1`` its object.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Literal

import numpy as np

from sage_model.eval.jsonscan import (
    BoxParseError,
    ScannedJson,
    box_list_problem,
    gc_paused,
    marker_index,
    parse_boxes,
)
from sage_model.eval.viou import ragged_arange

Triplet = tuple[str, str, str]
Kind = Literal["ground truth", "predictions"]

_PRED_KEYS = ("triplet", "score", "duration", "sub_traj", "obj_traj")
_GT_KEYS = ("triplet", "duration", "sub_traj", "obj_traj")
_ROLES = ("sub_traj", "obj_traj")
_NUMBER_TYPES = {int, float, np.float64, np.float32, np.int64, np.int32}
_MAX_BOUND_AREA = 1e12  # beyond this the integer area bound could overflow: pruning is switched off


class RelationFormatError(ValueError):
    """A relation entry is malformed; the message names the file, the video and the entry index."""


class TrajectoryBank:
    """Boxes of K trajectories, parsed in batches the first time they are needed.

    Besides the boxes it keeps, per trajectory, the official volume (sum over all its boxes of the
    "+1" pixel areas, summed frame by frame in order exactly as the official code does) and an
    exclusive running sum of the clipped, rounded-up box areas, used to prove cheaply that a pair of
    trajectories cannot reach a vIoU threshold.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        load: Callable[[np.ndarray], np.ndarray],
        describe: Callable[[int], str],
    ) -> None:
        self.lengths = lengths  # (K,) int64 boxes per trajectory
        self.first = np.full(lengths.shape[0], -1, np.int64)  # (K,) row of its first box, -1 = not parsed
        self.volume = np.full(lengths.shape[0], np.nan)  # (K,) official volume
        self.cols = np.zeros((4, 0), np.float64)  # (4, F) box columns x1, y1, x2, y2
        self.area_cum = np.zeros(1, np.int64)  # (F + 1,) exclusive cumsum of ceil(clipped area)
        self.bounds_valid = True
        self._load = load
        self._describe = describe

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def ensure(self, ids: np.ndarray) -> None:
        """Parse the boxes of trajectories ``ids`` that are not parsed yet (one batch)."""
        if ids.size == 0:
            return
        missing = np.sort(ids[self.first[ids] < 0])
        missing = missing[np.concatenate([[True], missing[1:] != missing[:-1]])] if missing.size else missing
        if missing.size == 0:
            return
        try:
            new = self._load(missing)  # (4, sum lengths[missing]) box columns
        except BoxParseError as exc:
            raise RelationFormatError(f"{self._describe(int(missing[exc.span]))} {exc}") from None
        lengths = self.lengths[missing]
        assert new.shape == (4, int(lengths.sum())), "loader returned the wrong number of boxes"
        owner = np.repeat(np.arange(missing.size), lengths)
        width = new[2] - new[0] + 1
        height = new[3] - new[1] + 1
        self.volume[missing] = np.bincount(owner, weights=width * height, minlength=missing.size)
        clipped = np.maximum(width, 0) * np.maximum(height, 0)
        if clipped.size and float(clipped.max()) > _MAX_BOUND_AREA:
            self.bounds_valid = False
            clipped = np.minimum(clipped, _MAX_BOUND_AREA)
        base = self.cols.shape[1]
        self.first[missing] = base + np.cumsum(lengths) - lengths
        self.cols = np.concatenate([self.cols, new], axis=1) if base else new
        tail = self.area_cum[-1] + np.cumsum(np.ceil(clipped).astype(np.int64))
        self.area_cum = np.concatenate([self.area_cum, tail])

    def get(self, k: int) -> np.ndarray:
        """(L, 4) boxes of trajectory k."""
        if self.first[k] < 0:
            self.ensure(np.asarray([k], np.int64))
        start = int(self.first[k])
        return self.cols[:, start : start + int(self.lengths[k])].T


@dataclass(eq=False)
class RelationSet:
    """Relations of several videos, one row per relation, the rows of a video contiguous."""

    kind: Kind
    source: str
    videos: tuple[str, ...]
    """(V,) video ids in input order."""
    bounds: np.ndarray
    """(V + 1,) int64: the rows of video v are ``bounds[v]:bounds[v + 1]``; row order = input order."""
    vocab: tuple[Triplet, ...]
    """Distinct triplets; ``triplet`` indexes into it."""
    triplet: np.ndarray
    """(N,) int64 index into ``vocab``."""
    score: np.ndarray
    """(N,) float64 (ground truth: 1.0)."""
    begin: np.ndarray
    """(N,) int64 first frame (inclusive)."""
    end: np.ndarray
    """(N,) int64 end frame (exclusive)."""
    bank: TrajectoryBank
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    """Optional per-row integer columns (``subject_tid``, ``object_tid`` of ground truth)."""
    _cache: dict[Any, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.triplet.shape[0])

    @property
    def video_index(self) -> dict[str, int]:
        """Video id -> position in ``videos``."""
        return {vid: v for v, vid in enumerate(self.videos)}

    def video_of_rows(self) -> np.ndarray:
        """(N,) int64 video position of every row."""
        return np.repeat(np.arange(len(self.videos)), np.diff(self.bounds))

    def load_all_boxes(self) -> RelationSet:
        """Parse every trajectory now (a file's boxes are otherwise parsed when first needed)."""
        self.bank.ensure(np.arange(len(self.bank)))
        return self

    def score_order(self) -> np.ndarray:
        """(N,) rows by video (input order), then score descending, equal scores in input order.

        Computed once per set (a stable float sort is the costliest step of an evaluation) and
        reused by every evaluation of the same predictions (both splits, every epoch's metrics).
        """
        if "score_order" not in self._cache:
            self._cache["score_order"] = np.lexsort((-self.score, self.video_of_rows()))
        return self._cache["score_order"]

    def vocab_ids_in(self, other: tuple[Triplet, ...]) -> np.ndarray:
        """(T,) index of each of this set's triplets in ``other`` (-1 where absent); cached per vocabulary."""
        key = ("vocab_ids", id(other))
        cached = self._cache.get(key)
        if cached is not None and self._cache.get(("vocab_ref", id(other))) is other:
            return cached
        index = {t: i for i, t in enumerate(other)}
        ids = np.fromiter(map(index.get, self.vocab, repeat(-1)), np.int64, len(self.vocab))
        self._cache[key] = ids
        self._cache[("vocab_ref", id(other))] = other  # type: ignore[assignment]  # keeps id() valid
        return ids

    def entry_name(self, row: int) -> str:
        """'<source>: video '<id>' entry <i>' for error messages."""
        v = int(np.searchsorted(self.bounds, row, side="right") - 1)
        return f"{self.source}: video {self.videos[v]!r} entry {row - int(self.bounds[v])}"

    def to_official(self) -> dict[str, list[dict[str, Any]]]:
        """The relations as official JSON-ready dicts (every trajectory parsed; integral boxes as ints)."""
        bank = self.bank
        bank.ensure(np.arange(len(bank)))
        integral = np.all(bank.cols == np.round(bank.cols), axis=0)  # (F,) frame box is integral
        as_int = bank.cols.astype(np.int64)

        def boxes(k: int) -> list[list[Any]]:
            s = int(bank.first[k])
            e = s + int(bank.lengths[k])
            return (as_int if integral[s:e].all() else bank.cols)[:, s:e].T.tolist()

        out: dict[str, list[dict[str, Any]]] = {}
        for v, vid in enumerate(self.videos):
            entries = out[vid] = []
            for i in range(int(self.bounds[v]), int(self.bounds[v + 1])):
                entry: dict[str, Any] = {"triplet": list(self.vocab[int(self.triplet[i])])}
                if self.kind == "predictions":
                    entry["score"] = float(self.score[i])
                for name, column in self.extras.items():
                    entry[name] = int(column[i])
                entry["duration"] = [int(self.begin[i]), int(self.end[i])]
                entry["sub_traj"] = boxes(2 * i)
                entry["obj_traj"] = boxes(2 * i + 1)
                entries.append(entry)
        return out


# ----------------------------------------------------------------------------------------------
# Building a RelationSet from a parsed document (scanned JSON file or plain Python objects)
# ----------------------------------------------------------------------------------------------


@dataclass
class _Columns:
    """Raw per-row lists gathered in one pass over the entries."""

    videos: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    triplets: list[Any] = field(default_factory=list)
    scores: list[Any] = field(default_factory=list)
    durations: list[Any] = field(default_factory=list)
    trajectories: list[Any] = field(default_factory=list)  # 2 per row: sub, obj
    extras: dict[str, list[Any]] = field(default_factory=dict)


def build_relation_set(
    videos: Mapping[str, Any], kind: Kind, source: str, scanned: ScannedJson | None = None
) -> RelationSet:
    """Validate ``{video_id: [relation, ...]}`` and store it in columns.

    Every check names the source, the video and the entry index: a missing key, a triplet that is
    not three strings, a score that is not a finite number, a duration that is not ``[begin, end)``
    with ``end >= begin``, a trajectory whose number of boxes differs from its duration. Box values
    themselves are checked when they are parsed (for a file: when the evaluator first needs them).
    """
    if not isinstance(videos, Mapping):
        raise RelationFormatError(f"{source}: {kind} must map video ids to lists of relations")
    with gc_paused():
        return _build(videos, kind, source, scanned)


def _build(videos: Mapping[str, Any], kind: Kind, source: str, scanned: ScannedJson | None) -> RelationSet:
    cols = _gather(videos, kind, source)
    vocab, triplet = _triplet_column(cols, kind, source)
    score = _score_column(cols, kind, source)
    begin, end = _duration_column(cols, source)
    lengths = np.repeat(end - begin, 2)  # (2N,) expected boxes per trajectory
    relset = RelationSet(
        kind=kind,
        source=source,
        videos=tuple(cols.videos),
        bounds=np.concatenate([[0], np.cumsum(np.asarray(cols.counts, np.int64))]).astype(np.int64),
        vocab=vocab,
        triplet=triplet,
        score=score,
        begin=begin,
        end=end,
        bank=TrajectoryBank(lengths, lambda ids: np.zeros((4, 0)), lambda k: ""),
        extras={name: np.asarray(vals, np.int64) for name, vals in cols.extras.items()},
    )
    relset.bank = _trajectory_bank(relset, cols.trajectories, lengths, scanned)
    return relset


def _gather(videos: Mapping[str, Any], kind: Kind, source: str) -> _Columns:
    """Pull the fields of every entry into columns with C-level iteration; an anomaly (missing key,
    entry that is not an object) is re-examined slowly to name its video and entry."""
    keys = _PRED_KEYS if kind == "predictions" else _GT_KEYS
    getter = itemgetter(*keys)
    cols = _Columns()
    rows: list[tuple[Any, ...]] = []
    for vid, entries in videos.items():
        if not isinstance(vid, str) or not isinstance(entries, list | tuple):
            raise RelationFormatError(f"{source}: video {vid!r}: expected a list of relations")
        cols.videos.append(vid)
        cols.counts.append(len(entries))
        try:
            rows.extend(map(getter, entries))
        except (KeyError, TypeError, AttributeError):
            for i, entry in enumerate(entries):
                if not isinstance(entry, Mapping) or any(k not in entry for k in keys):
                    raise RelationFormatError(
                        f"{_where(source, vid, i)}: {_entry_problem(entry, keys)}"
                    ) from None
            raise
    if rows:
        columns = list(zip(*rows, strict=True))
        cols.triplets, cols.durations = list(columns[0]), list(columns[1 if kind == "ground truth" else 2])
        if kind == "predictions":
            cols.scores = list(columns[1])
        cols.trajectories = list(chain.from_iterable(zip(columns[-2], columns[-1], strict=True)))
    if kind == "ground truth":
        cols.extras = _gt_track_ids(videos, cols, source)
    return cols


def _gt_track_ids(videos: Mapping[str, Any], cols: _Columns, source: str) -> dict[str, list[int]]:
    """``subject_tid``/``object_tid`` of ground-truth entries (-1 where absent; must be integers)."""
    extras: dict[str, list[int]] = {}
    for name in ("subject_tid", "object_tid"):
        vals = [entry.get(name, -1) for entries in videos.values() for entry in entries]
        if not all(type(x) is int for x in vals):
            row = next(r for r, x in enumerate(vals) if type(x) is not int)
            raise RelationFormatError(f"{_row_where(cols, source, row)}: {name!r} must be an integer")
        extras[name] = vals
    return extras


def _entry_problem(entry: Any, keys: Sequence[str]) -> str:
    if not isinstance(entry, Mapping):
        return f"expected a relation object, got {type(entry).__name__}"
    missing = [k for k in keys if k not in entry]
    return f"missing key {missing[0]!r}" if missing else "malformed relation"


def _where(source: str, vid: str, i: int) -> str:
    return f"{source}: video {vid!r} entry {i}"


def _row_where(cols: _Columns, source: str, row: int) -> str:
    """Name the video and entry of a global row index while the set is being built."""
    acc = 0
    for vid, n in zip(cols.videos, cols.counts, strict=True):
        if row < acc + n:
            return _where(source, vid, row - acc)
        acc += n
    return f"{source}: entry {row}"


def _triplet_column(cols: _Columns, kind: Kind, source: str) -> tuple[tuple[Triplet, ...], np.ndarray]:
    """Distinct triplets (validated once each) and the per-row index into them."""
    raw = cols.triplets
    if not set(map(type, raw)) <= {list, tuple}:
        row = next(r for r, t in enumerate(raw) if type(t) not in (list, tuple))
        raise RelationFormatError(f"{_row_where(cols, source, row)}: {_triplet_problem(raw[row])}")
    try:
        keys = list(map(tuple, raw))
        index: dict[Any, int] = dict.fromkeys(keys, 0)  # insertion order = first occurrence
    except TypeError:  # an unhashable element (a nested list)
        row = next(r for r, t in enumerate(raw) if not _hashable(t))
        raise RelationFormatError(f"{_row_where(cols, source, row)}: {_triplet_problem(raw[row])}") from None
    vocab = tuple(index)
    for i, key in enumerate(vocab):
        if len(key) != 3 or not all(type(x) is str for x in key):
            row = keys.index(key)
            raise RelationFormatError(f"{_row_where(cols, source, row)}: {_triplet_problem(raw[row])}")
        index[key] = i
    return vocab, np.fromiter(map(index.__getitem__, keys), np.int64, len(keys))


def _triplet_problem(value: Any) -> str:
    return f"'triplet' must be [subject, predicate, object] strings, got {value!r}"


def _hashable(value: Any) -> bool:
    try:
        hash(tuple(value))
    except TypeError:
        return False
    return True


def _score_column(cols: _Columns, kind: Kind, source: str) -> np.ndarray:
    """(N,) float64 scores; a non-number, bool, NaN or infinite score names its entry."""
    n = len(cols.triplets)
    if kind == "ground truth":
        return np.ones(n, np.float64)
    ok = set(map(type, cols.scores)) <= {float, int}
    score = np.asarray(cols.scores, np.float64) if ok else None
    if score is not None and np.isfinite(score).all():
        return score
    for row, s in enumerate(cols.scores):
        if type(s) not in (int, float) or not math.isfinite(s):
            raise RelationFormatError(
                f"{_row_where(cols, source, row)}: 'score' must be a finite number, got {s!r}"
            )
    raise RelationFormatError(f"{source}: a score is out of the float64 range")


def _duration_column(cols: _Columns, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(N,) begin and end frames; each duration must be [begin, end) integers with end >= begin.

    An empty duration (end == begin, no boxes) is accepted as the official code accepts it: such a
    prediction can never reach vIoU 0.5 (a false positive that still counts for tagging)."""
    durs = cols.durations
    try:
        arr = np.asarray(durs)
        good = arr.ndim == 2 and arr.shape[1] == 2 and arr.dtype.kind == "i"
    except (ValueError, TypeError):
        good = False
    if len(durs) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if good and np.all(arr[:, 1] >= arr[:, 0]):
        return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64)
    for row, d in enumerate(durs):
        if (
            not isinstance(d, list | tuple)
            or len(d) != 2
            or not all(type(x) is int for x in d)
            or d[1] < d[0]
        ):
            raise RelationFormatError(
                f"{_row_where(cols, source, row)}: 'duration' must be [begin, end) integer frames with end >= begin, got {d!r}"
            )
    raise RelationFormatError(f"{source}: a duration is out of the int64 range")


def _trajectory_bank(
    relset: RelationSet, values: list[Any], lengths: np.ndarray, scanned: ScannedJson | None
) -> TrajectoryBank:
    """A bank whose boxes come from the file's byte spans (markers) or from lists/arrays of boxes."""
    if scanned is not None and values:
        span_of, lists = _marker_spans(values, int(scanned.starts.size), scanned.sequential)
    else:
        span_of, lists = np.full(len(values), -1, np.int64), dict(enumerate(values))
    frames = np.full(len(values), -1, np.int64)
    has_span = span_of >= 0
    frames[has_span] = scanned.frames[span_of[has_span]] if scanned is not None else 0
    if lists:
        frames[list(lists)] = _lengths(list(lists.values()))

    def describe(t: int) -> str:
        return f"{relset.entry_name(t // 2)}: '{_ROLES[t % 2]}'"

    bad = np.flatnonzero(frames != lengths)
    if bad.size:
        t = int(bad[0])
        if frames[t] == -2:
            problem = box_list_problem(lists[t]) or "must be a list of boxes"
        else:
            i = t // 2
            problem = (
                f"has {frames[t]} boxes but its duration [{relset.begin[i]}, {relset.end[i]}) "
                f"covers {lengths[t]} frames"
            )
        raise RelationFormatError(f"{describe(t)} {problem}")

    def load(ids: np.ndarray) -> np.ndarray:
        return _load_boxes(ids, span_of, lists, lengths, scanned)

    return TrajectoryBank(lengths, load, describe)


def _lengths(values: list[Any]) -> np.ndarray:
    """(K,) number of boxes of each list/array value (-2 for a value that is not a sequence)."""
    if set(map(type, values)) <= {list, tuple, np.ndarray}:
        return np.fromiter(map(len, values), np.int64, len(values))
    return np.fromiter(
        (len(v) if isinstance(v, list | tuple | np.ndarray) else -2 for v in values), np.int64, len(values)
    )


def _marker_spans(values: list[Any], n_spans: int, sequential: bool) -> tuple[np.ndarray, dict[int, Any]]:
    """Span index per trajectory value (-1 where the value is an ordinary list kept in ``lists``).

    Every span must be claimed by exactly one value; otherwise the file itself held negative integers
    as trajectory values and `MarkerMismatch` asks the caller to re-read it without the scan.
    With ``sequential`` markers (all ``-1``), values are (subject, object) per entry in document order,
    which is the scan's order when every value is a marker and there are as many as spans.
    """
    if sequential:
        if len(values) != n_spans or set(map(type, values)) != {int}:
            raise MarkerMismatch
        if not (np.fromiter(values, np.int64, len(values)) == -1).all():
            raise MarkerMismatch
        return np.arange(n_spans, dtype=np.int64), {}
    span_of = None
    lists: dict[int, Any] = {}
    if set(map(type, values)) == {int}:
        span_of = -np.fromiter(values, np.int64, len(values)) - 1
        if span_of.min(initial=0) < 0:  # a non-negative integer: a (bad) value of the file itself
            span_of = None
    if span_of is None:
        span_of = np.full(len(values), -1, np.int64)
        lists = {}
        for t, v in enumerate(values):
            idx = marker_index(v)
            if idx is None:
                lists[t] = v
            else:
                span_of[t] = idx
    used = span_of[span_of >= 0]
    if used.size != n_spans or (n_spans and np.bincount(used, minlength=n_spans).max(initial=0) != 1):
        raise MarkerMismatch
    if used.size and used.max() >= n_spans:
        raise MarkerMismatch
    return span_of, lists


class MarkerMismatch(Exception):
    """The skeleton's markers do not map one-to-one onto the scanned spans."""


def _load_boxes(
    ids: np.ndarray,
    span_of: np.ndarray,
    lists: dict[int, Any],
    lengths: np.ndarray,
    scanned: ScannedJson | None,
) -> np.ndarray:
    """(4, sum lengths[ids]) box columns of trajectories ``ids``, in that order."""
    from_span = span_of[ids] >= 0
    if from_span.all():
        assert scanned is not None
        spans = span_of[ids]
        return parse_boxes(scanned.raw, scanned.starts[spans], scanned.ends[spans], scanned.frames[spans])
    out = np.empty((4, int(lengths[ids].sum())), np.float64)
    offsets = np.cumsum(lengths[ids]) - lengths[ids]
    if from_span.any():
        assert scanned is not None
        sel = np.flatnonzero(from_span)
        spans = span_of[ids[sel]]
        try:
            cols = parse_boxes(scanned.raw, scanned.starts[spans], scanned.ends[spans], scanned.frames[spans])
        except BoxParseError as exc:
            raise BoxParseError(int(sel[exc.span]), str(exc)) from None
        out[:, ragged_arange(offsets[sel], lengths[ids[sel]])] = cols
    sel = np.flatnonzero(~from_span)
    values = [lists[t] for t in ids[sel].tolist()]
    out[:, ragged_arange(offsets[sel], lengths[ids[sel]])] = _value_boxes(values)
    return out


def _value_boxes(values: list[Any]) -> np.ndarray:
    """(4, F) columns of many lists (or arrays) of boxes; BoxParseError names the first bad one.

    Lists are flattened with C-level iteration into one ``np.fromiter`` call: per-list numpy
    conversion costs ~100x more per box. Box sizes and coordinate types are checked first so that a
    3-number box or a string coordinate cannot slip through.
    """
    if values and all(type(v) is np.ndarray for v in values):
        arrays = [np.asarray(v, np.float64) for v in values]
        if all(a.ndim == 2 and a.shape[1] == 4 for a in arrays):
            cols = np.concatenate(arrays).T
            if np.isfinite(cols).all():
                return np.ascontiguousarray(cols)
    boxes = list(chain.from_iterable(values))
    try:
        sizes_ok = set(map(len, boxes)) <= {4}
        coords_ok = sizes_ok and set(map(type, chain.from_iterable(boxes))) <= _NUMBER_TYPES
    except TypeError:  # a box that is not a sequence
        coords_ok = False
    if coords_ok:
        flat = np.fromiter(chain.from_iterable(boxes), np.float64, 4 * len(boxes))
        if np.isfinite(flat).all():
            return np.ascontiguousarray(flat.reshape(-1, 4).T)
    for j, value in enumerate(values):
        problem = box_list_problem(value)
        if problem:
            raise BoxParseError(j, problem)
    raise BoxParseError(0, "boxes could not be read")
