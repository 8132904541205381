"""The offline semantic teacher: four descriptions per pair and keyframe -> CLIP text features.

For every row of a feature store (one subject-object pair in one segment) and each of its T
keyframes, the teacher model describes the subject region, the object region, the union region
and the whole frame (:mod:`~sage_model.features.teacher_models` says what each model is shown and
asked). Identical questions are asked once: the subject box of a track at a keyframe is the same
for every pair and segment that contains it, and the whole frame is shared by all pairs.

Every description is kept in ``descriptions.parquet`` beside the teacher store, one row per
(store row, keyframe slot, perspective) with the video, segment, pair, frame, prompt, text, model
id and generation settings. The texts go through the frozen CLIP text tower (the same CLIP as the
image features, L2-normalised) into ``text (N, T, 4, D) float16``, row-aligned with the feature
store: the artifact that training reads as ``data.teacher: <name>``. Its manifest names the
teacher, the model, the prompts and the decoding settings, and its content hash is what a trial
records as ``teacher_hash``.

Work is per video and resumable exactly like feature extraction: one shard (``.npz`` text
features + ``.parquet`` descriptions) per video, skipped when present.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import BaseModel, ConfigDict, Field

from sage_model.clip import build_clip, encode_texts
from sage_model.data.store import FeatureStore, TeacherStore, write_teacher_store
from sage_model.features.teacher_models import (
    BLIP2_TEMPLATE,
    CROP_QUESTIONS,
    GROUNDED_QUESTIONS,
    PERSPECTIVES,
    VICUNA_V1_TEMPLATE,
    BackendName,
    DescriptionRequest,
    Generation,
    TeacherBackend,
    default_generation,
    describe,
    load_backend,
)
from sage_model.features.video import find_video, iter_frames

DESCRIPTIONS_FILE = "descriptions.parquet"
TEXT_BATCH = 256
DESCRIPTION_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("video_id", pa.string()),
        ("segment_start", pa.int32()),
        ("segment_end", pa.int32()),
        ("subject_tid", pa.int32()),
        ("object_tid", pa.int32()),
        ("keyframe_slot", pa.int8()),
        ("frame", pa.int32()),
        ("perspective", pa.string()),
        ("prompt", pa.string()),
        ("text", pa.string()),
        ("model_id", pa.string()),
        ("generation", pa.string()),
    ]
)


class TeacherSettings(BaseModel):
    """One teacher run over one feature store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Artifact name (data.teacher), e.g. asmv2.")
    backend: BackendName = Field(description="asmv2, blip2 or tiny.")
    model_path: Path | None = Field(None, description="Local transformers model directory (asmv2, blip2).")
    split: Literal["train", "test"]
    source: Literal["gt", "det"]
    preset: Literal["sage_tiny", "sage_vitb16"] = Field("sage_vitb16", description="CLIP for the text tower.")
    clip_checkpoint: Path | None = None
    max_new_tokens: int | None = Field(None, ge=1, description="None = backend default (48; tiny 6).")
    batch_size: int | None = Field(None, ge=1, description="Prompts per generate call; None = default.")

    def generation(self) -> Generation:
        """The backend's default decoding with this run's overrides."""
        changes: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size}
        return dataclasses.replace(
            default_generation(self.backend), **{k: v for k, v in changes.items() if v}
        )


def prompts_digest() -> str:
    """Hash of every prompt template: a changed prompt is a different teacher."""
    text = json.dumps(
        [CROP_QUESTIONS, GROUNDED_QUESTIONS, BLIP2_TEMPLATE, VICUNA_V1_TEMPLATE], sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_identity(backend: str, model_path: Path | None) -> str:
    """A model's id without loading it: backend, folder name and a hash of its config and weights index."""
    if backend == "tiny" or model_path is None:
        return backend
    path = Path(model_path)
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors.index.json", "generation_config.json"):
        if (path / name).is_file():
            digest.update((path / name).read_bytes())
    return f"{backend}:{path.name}:{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class TeacherJob:
    """One video's rows ``[row_start, row_end)`` of the feature store."""

    video_id: str
    store: str
    row_start: int
    row_end: int
    videos_dir: str
    shard: str

    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> TeacherJob:
        return cls(**json.loads(text))


def plan_teacher_jobs(store: FeatureStore, videos_dir: Path, work_dir: Path) -> list[TeacherJob]:
    """One job per video of the store; each video's rows must be contiguous (as extract writes them)."""
    ids = store.rows.video_id
    jobs = []
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(int) if len(ids) else np.zeros(0, int)
    ends = np.concatenate([change, [len(ids)]]).astype(int) if len(ids) else np.zeros(0, int)
    seen: set[str] = set()
    for start, end in zip(starts, ends, strict=True):
        vid = str(ids[start])
        if vid in seen:
            raise ValueError(f"{store.path}: rows of video {vid!r} are not contiguous")
        seen.add(vid)
        jobs.append(
            TeacherJob(
                vid, str(store.path), int(start), int(end), str(videos_dir), str(work_dir / f"{vid}.npz")
            )
        )
    return jobs


@dataclass
class _Plan:
    """Unique questions of a video and where each (row, slot, perspective) takes its answer."""

    keys: list[tuple]  # unique question keys: (perspective, frame, box bytes...)
    requests: dict[int, list[int]]  # frame -> indices into keys asked at that frame
    answer: np.ndarray  # (n, T, 4) int: index into keys


def plan_questions(boxes: np.ndarray, keyframes: np.ndarray) -> _Plan:
    """Deduplicate the four questions of every (row, keyframe slot)."""
    n, t = keyframes.shape
    index: dict[tuple, int] = {}
    by_frame: dict[int, list[int]] = {}
    answer = np.zeros((n, t, len(PERSPECTIVES)), dtype=np.int64)
    for row in range(n):
        for slot in range(t):
            frame = int(keyframes[row, slot])
            sub, obj = boxes[row, slot, 0].tobytes(), boxes[row, slot, 1].tobytes()
            keys = (
                ("subject", frame, sub),
                ("object", frame, obj),
                ("union", frame, sub, obj),
                ("frame", frame),
            )
            for p, key in enumerate(keys):
                if key not in index:
                    index[key] = len(index)
                    by_frame.setdefault(frame, []).append(index[key])
                answer[row, slot, p] = index[key]
    return _Plan(list(index), by_frame, answer)


def describe_video(
    backend: TeacherBackend,
    video_file: Path,
    boxes: np.ndarray,
    keyframes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(prompts, texts, distinct questions asked): (n, T, 4) object arrays for one video's rows.

    Frames are decoded in order and questions are sent as soon as a generation batch is full.
    """
    plan = plan_questions(boxes, keyframes)
    prompts: list[str] = [""] * len(plan.keys)
    texts: list[str] = [""] * len(plan.keys)
    pending: list[tuple[int, DescriptionRequest]] = []
    for frame, image in iter_frames(video_file, plan.requests):
        for k in plan.requests[frame]:
            pending.append((k, _request(plan.keys[k], image)))
        if len(pending) >= backend.generation.batch_size:
            _answer(backend, pending, prompts, texts)
            pending = []
    _answer(backend, pending, prompts, texts)
    return (
        np.array(prompts, dtype=object)[plan.answer],
        np.array(texts, dtype=object)[plan.answer],
        len(plan.keys),
    )


def _request(key: tuple, image: np.ndarray) -> DescriptionRequest:
    perspective = key[0]
    none = np.zeros(4, dtype=np.float32)
    sub = np.frombuffer(key[2], dtype=np.float32) if perspective in ("subject", "union") else none
    obj = np.frombuffer(key[-1], dtype=np.float32) if perspective in ("object", "union") else none
    return DescriptionRequest(image, sub, obj, perspective)


def _answer(
    backend: TeacherBackend,
    pending: list[tuple[int, DescriptionRequest]],
    prompts: list[str],
    texts: list[str],
) -> None:
    if not pending:
        return
    batch_prompts, batch_texts = describe(backend, [r for _, r in pending])
    for (k, _), prompt, text in zip(pending, batch_prompts, batch_texts, strict=True):
        prompts[k], texts[k] = prompt, text


def encode_descriptions(model: Any, texts: np.ndarray) -> np.ndarray:
    """(n, T, 4) texts -> (n, T, 4, D) float16 normalised CLIP text features (unique texts once)."""
    unique, inverse = np.unique(texts.reshape(-1).astype(str), return_inverse=True)
    dim = int(model.text_projection.shape[1])
    encoded = np.zeros((len(unique), dim), dtype=np.float32)
    for start in range(0, len(unique), TEXT_BATCH):
        encoded[start : start + TEXT_BATCH] = encode_texts(
            model, list(unique[start : start + TEXT_BATCH])
        ).numpy()
    return encoded[inverse].reshape(*texts.shape, dim).astype(np.float16)


def description_table(
    store: FeatureStore,
    job: TeacherJob,
    prompts: np.ndarray,
    texts: np.ndarray,
    model_id: str,
    generation: str,
) -> pa.Table:
    """One row per (store row, keyframe slot, perspective)."""
    n, t, p = texts.shape
    rows = np.arange(job.row_start, job.row_end)
    r, s, q = (a.reshape(-1) for a in np.meshgrid(np.arange(n), np.arange(t), np.arange(p), indexing="ij"))
    table = store.rows
    columns = {
        "row": rows[r],
        "video_id": np.asarray(table.video_id[rows], dtype=str)[r],
        "segment_start": np.asarray(table.segment_start[rows])[r],
        "segment_end": np.asarray(table.segment_end[rows])[r],
        "subject_tid": np.asarray(table.subject_tid[rows])[r],
        "object_tid": np.asarray(table.object_tid[rows])[r],
        "keyframe_slot": s.astype(np.int8),
        "frame": np.asarray(store.keyframes[job.row_start : job.row_end])[r, s],
        "perspective": np.array(PERSPECTIVES, dtype=str)[q],
        "prompt": prompts.reshape(-1).astype(str),
        "text": texts.reshape(-1).astype(str),
        "model_id": np.full(len(r), model_id, dtype=object).astype(str),
        "generation": np.full(len(r), generation, dtype=object).astype(str),
    }
    return pa.table(
        {
            name: pa.array(columns[name], type=DESCRIPTION_SCHEMA.field(name).type)
            for name in DESCRIPTION_SCHEMA.names
        }
    )


class TeacherWorker:
    """Loads the teacher model and the CLIP text tower once; describes one video per call."""

    def __init__(self, settings_json: str) -> None:
        self.settings = TeacherSettings.model_validate_json(settings_json)
        self.backend = load_backend(
            self.settings.backend, self.settings.model_path, self.settings.generation()
        )
        self.clip = build_clip(self.settings.preset, self.settings.clip_checkpoint)
        if torch.cuda.is_available():
            self.clip = self.clip.cuda()
        self._stores: dict[str, FeatureStore] = {}

    def __call__(self, job_json: str) -> dict[str, Any]:
        """Summary ``{video_id, rows, questions, seconds, skipped, error}`` of one video."""
        job = TeacherJob.from_json(job_json)
        summary: dict[str, Any] = {
            "video_id": job.video_id,
            "rows": job.row_end - job.row_start,
            "questions": 0,
            "seconds": 0.0,
            "skipped": False,
            "error": None,
        }
        if Path(job.shard).is_file():
            summary["skipped"] = True
            return summary
        started = time.perf_counter()
        try:
            store = self._stores.setdefault(job.store, FeatureStore.open(job.store))
            rows = slice(job.row_start, job.row_end)
            boxes, keyframes = np.asarray(store.boxes[rows]), np.asarray(store.keyframes[rows])
            video_file = find_video(Path(job.videos_dir), job.video_id)
            prompts, texts, questions = describe_video(self.backend, video_file, boxes, keyframes)
            text = encode_descriptions(self.clip, texts)
            table = description_table(
                store, job, prompts, texts, self.backend.model_id, self.backend.generation.to_json()
            )
            save_teacher_shard(Path(job.shard), text, table)
        except (ValueError, FileNotFoundError, OSError) as exc:
            summary["error"] = str(exc).splitlines()[0]
            return summary
        summary.update(questions=questions, seconds=time.perf_counter() - started)
        return summary


def save_teacher_shard(path: Path, text: np.ndarray, table: pa.Table) -> None:
    """Descriptions first, then the features (the ``.npz`` marks the shard complete), both atomic."""
    parquet = path.with_suffix(".parquet")
    tmp_parquet = parquet.with_name(parquet.name + ".tmp")
    pq.write_table(table, tmp_parquet, compression="zstd")
    os.replace(tmp_parquet, parquet)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, text=text)
    os.replace(tmp, path)


def assemble_teacher_store(
    jobs: list[TeacherJob],
    store: FeatureStore,
    out_dir: Path,
    *,
    settings: TeacherSettings,
    teacher_model: dict[str, Any],
    extra_settings: dict[str, Any],
) -> TeacherStore:
    """Concatenate the shards into the teacher store and write ``descriptions.parquet`` beside it.

    Streams shard by shard: the features go into a memory-mapped buffer and the descriptions
    through one Parquet writer, so VidOR-sized artifacts never have to fit in memory.
    """
    missing = [j.video_id for j in jobs if not Path(j.shard).is_file()]
    if missing:
        raise ValueError(
            f"{len(missing)} videos have no descriptions yet (e.g. {missing[0]}); run teacher again"
        )
    if not jobs:
        raise ValueError(f"{store.path}: the feature store has no rows to describe")
    work = Path(jobs[0].shard).parent
    buffer_path, parquet_path = work / "text.buffer.npy", work / DESCRIPTIONS_FILE
    dim = int(teacher_model["text_encoder"]["embed_dim"])
    text = np.lib.format.open_memmap(
        buffer_path, mode="w+", dtype=np.float16, shape=(len(store), store.num_keyframes, 4, dim)
    )
    digest = hashlib.sha256()
    with pq.ParquetWriter(parquet_path, DESCRIPTION_SCHEMA, compression="zstd") as writer:
        for job in jobs:
            with np.load(job.shard, allow_pickle=False) as data:
                text[job.row_start : job.row_end] = data["text"]
            table = pq.read_table(Path(job.shard).with_suffix(".parquet"), schema=DESCRIPTION_SCHEMA)
            writer.write_table(table)
            for value in table.column("text").to_pylist():
                digest.update(value.encode() + b"\0")
    text.flush()
    teacher = write_teacher_store(
        out_dir,
        text,
        name=settings.name,
        store=store,
        teacher_model=teacher_model,
        synthetic=False,
        settings={
            **extra_settings,
            "descriptions_sha256": digest.hexdigest(),
            "descriptions": DESCRIPTIONS_FILE,
        },
    )
    os.replace(parquet_path, Path(out_dir) / DESCRIPTIONS_FILE)
    del text
    buffer_path.unlink()
    return teacher
