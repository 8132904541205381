"""Per-video CLIP region features -> feature-store rows, resumable shard by shard.

The work of one (split, source) is one job per video. A job plans the video's pair samples with the
data layer's own rules (:func:`sage_model.data.plan_pair_samples`: segments, pairs, the T = 3
keyframes of each sample, boxes, labels; the same function the synthetic generator uses), decodes
exactly the keyframes those samples need, and runs the frozen CLIP image tower on them
(:class:`~sage_model.features.regions.RegionEncoder`). The result, the samples' columns plus
``visual (n, T, 4, D) float16``, is saved as one ``.npz`` shard per video, written atomically. A run
that is stopped and started again skips every video whose shard exists (resume). When all shards
exist, :func:`assemble_feature_store` concatenates them in video-id order into the feature store.

Features are L2-normalised (CLIP compares embeddings by cosine; this also puts them on the scale of
the teacher's normalised text features and of the synthetic data). Motion needs no extraction: the
store keeps the normalised boxes per keyframe (``boxes``) and the pixel boxes of the segment
(``seg_traj``), from which the model computes its motion features.

Nothing here imports Ray: :class:`FeatureWorker` is a plain callable that the harness runs inside
Ray Data actors (one model per actor) or in-process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from sage_model.clip import build_clip
from sage_model.clip import clip_identity as clip_identity_of
from sage_model.data.annotations import VideoAnnotation, annotation_files, load_annotation_file
from sage_model.data.samples import PairSamples, plan_pair_samples
from sage_model.data.segments import NUM_KEYFRAMES
from sage_model.data.store import FeatureStore, write_feature_store
from sage_model.data.tracks import load_ovmmp_tracks, write_ovmmp_tracks
from sage_model.data.vocab import load_vocabulary
from sage_model.features.regions import RegionEncoder, RegionMode, union_boxes
from sage_model.features.video import find_video, iter_frames

log = logging.getLogger(__name__)

SHARD_SUFFIX = ".npz"


class ExtractSettings(BaseModel):
    """What one feature extraction run does (everything that changes its numbers is hashed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Literal["vidvrd", "vidor"] = Field(description="Dataset (decides the vocabulary and layout).")
    split: Literal["train", "test"] = Field(description="Split to extract (VidOR test = its validation set).")
    source: Literal["gt", "det"] = Field(description="gt: annotated trajectories; det: detected tracklets.")
    preset: Literal["sage_tiny", "sage_vitb16"] = Field("sage_vitb16", description="CLIP preset.")
    clip_checkpoint: Path | None = Field(
        None, description="Local open_clip ViT-B/16 checkpoint (sage_vitb16)."
    )
    region: RegionMode = Field("roi_align", description="roi_align (paper) or crop (OV-MMP code).")
    batch_size: int = Field(32, ge=1, description="Keyframes (roi_align) or images (crop) per forward pass.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when present.")

    def torch_device(self) -> torch.device:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: cuda requested but torch sees no GPU")
        use_cuda = self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())
        return torch.device("cuda" if use_cuda else "cpu")


def settings_fingerprint(settings: ExtractSettings, clip_fingerprint: str, tracklets_sha: str | None) -> str:
    """Hash of everything that determines the features (not batch size or device)."""
    content = {
        "dataset": settings.dataset,
        "split": settings.split,
        "source": settings.source,
        "preset": settings.preset,
        "clip": clip_fingerprint,
        "region": settings.region,
        "tracklets": tracklets_sha,
        "version": 1,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class VideoJob:
    """One video's work: where its annotation, video, tracks and output shard are."""

    video_id: str
    annotation: str
    videos_dir: str
    shard: str
    tracks: str | None = None  # OV-MMP JSON holding only this video's tracks (det source)

    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> VideoJob:
        return cls(**json.loads(text))


def plan_jobs(
    annotations: Path,
    videos_dir: Path,
    dataset: str,
    split: str,
    work_dir: Path,
    tracklets: Path | None = None,
    frame_offset: int = 0,
) -> list[VideoJob]:
    """One job per annotated video of the split (sorted by id); det jobs get their tracks split out."""
    files = annotation_files(annotations, dataset, split)
    per_video: dict[str, list] | None = None
    if tracklets is not None:
        per_video = load_ovmmp_tracks(tracklets, frame_offset=frame_offset)
        stray = sorted(set(per_video) - {f.stem for f in files})
        if stray:
            log.warning(
                "%s: %d videos have tracklets but no %s annotation (ignored), e.g. %s",
                tracklets,
                len(stray),
                split,
                stray[0],
            )
    (work_dir / "tracks").mkdir(parents=True, exist_ok=True)
    jobs = []
    for path in files:
        vid = path.stem
        tracks_file = None
        if per_video is not None:
            tracks_file = work_dir / "tracks" / f"{vid}.json"
            if not tracks_file.is_file():
                write_ovmmp_tracks({vid: per_video.get(vid, [])}, tracks_file)  # frames already shifted
        jobs.append(
            VideoJob(
                vid,
                str(path),
                str(videos_dir),
                str(work_dir / f"{vid}{SHARD_SUFFIX}"),
                None if tracks_file is None else str(tracks_file),
            )
        )
    return sorted(jobs, key=lambda j: j.video_id)


def video_samples(video: VideoAnnotation, job: VideoJob, dataset: str) -> PairSamples:
    """The pair samples of a job's video (GT trajectories, or the job's detected tracks)."""
    tracks = None
    if job.tracks is not None:
        tracks = load_ovmmp_tracks(job.tracks).get(video.video_id, [])
    return plan_pair_samples(video, load_vocabulary(dataset), tracks)


def extract_video(samples: PairSamples, video_file: Path, encoder: RegionEncoder) -> np.ndarray:
    """``visual (n, T, 4, D) float16``: L2-normalised subject, object, union, frame features."""
    n, t = samples.keyframes.shape
    visual = np.zeros((n, t, 4, encoder.embed_dim), dtype=np.float16)
    if n == 0:
        return visual
    where: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for frame in np.unique(samples.keyframes):
        rows, slots = np.nonzero(samples.keyframes == frame)
        where[int(frame)] = (rows, slots)
    chunk: list[tuple[int, np.ndarray]] = []
    for index, image in iter_frames(video_file, where):
        chunk.append((index, image))
        if len(chunk) == encoder.batch_size:
            _encode_chunk(chunk, where, samples.boxes, encoder, visual)
            chunk = []
    if chunk:
        _encode_chunk(chunk, where, samples.boxes, encoder, visual)
    return visual


def _encode_chunk(
    chunk: list[tuple[int, np.ndarray]],
    where: dict[int, tuple[np.ndarray, np.ndarray]],
    boxes: np.ndarray,
    encoder: RegionEncoder,
    visual: np.ndarray,
) -> None:
    """Encode the boxes of a few keyframes once each and scatter them to every (row, slot)."""
    unique_boxes, inverses = [], []
    for index, _ in chunk:
        rows, slots = where[index]
        sub, obj = boxes[rows, slots, 0], boxes[rows, slots, 1]  # (m, 4) normalised
        wanted = np.concatenate([sub, obj, union_boxes(sub, obj)])  # (3m, 4)
        unique, inverse = np.unique(wanted, axis=0, return_inverse=True)
        unique_boxes.append(unique)
        inverses.append(inverse.reshape(3, -1))  # (3, m): subject, object, union
    frame_emb, region_emb = encoder.encode([image for _, image in chunk], unique_boxes)
    frames = torch.nn.functional.normalize(frame_emb, dim=-1).numpy()  # (K, D)
    for k, (index, _) in enumerate(chunk):
        rows, slots = where[index]
        regions = torch.nn.functional.normalize(region_emb[k], dim=-1).numpy()  # (U, D)
        for role in range(3):
            visual[rows, slots, role] = regions[inverses[k][role]]
        visual[rows, slots, 3] = frames[k]


def save_shard(path: Path, samples: PairSamples, visual: np.ndarray) -> None:
    """Samples + visual of one video as an ``.npz`` (temp file + rename: never half-written)."""
    arrays = {f.name: getattr(samples, f.name) for f in fields(PairSamples)}
    arrays["video_id"] = np.asarray(samples.video_id, dtype=str)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, visual=visual, **arrays)
    os.replace(tmp, path)


def load_shard_samples(path: Path) -> PairSamples:
    """The samples of a shard (its features stay on disk)."""
    with np.load(path, allow_pickle=False) as data:
        columns = {f.name: data[f.name] for f in fields(PairSamples)}
    columns["video_id"] = columns["video_id"].astype(object)
    return PairSamples(**columns)


class FeatureWorker:
    """Builds the frozen CLIP once, then extracts one video per call (a Ray Data actor class)."""

    def __init__(self, settings_json: str) -> None:
        self.settings = ExtractSettings.model_validate_json(settings_json)
        model = build_clip(self.settings.preset, self.settings.clip_checkpoint)
        self.encoder = RegionEncoder(
            model, self.settings.region, self.settings.torch_device(), self.settings.batch_size
        )

    def __call__(self, job_json: str) -> dict[str, Any]:
        """Summary ``{video_id, rows, keyframes, seconds, skipped, error}`` of one video."""
        job = VideoJob.from_json(job_json)
        summary: dict[str, Any] = {
            "video_id": job.video_id,
            "rows": 0,
            "keyframes": 0,
            "seconds": 0.0,
            "skipped": False,
            "error": None,
        }
        if Path(job.shard).is_file():
            summary["skipped"] = True
            return summary
        started = time.perf_counter()
        try:
            video = load_annotation_file(job.annotation, self.settings.dataset)
            samples = video_samples(video, job, self.settings.dataset)
            relative = f"{video.group}/{video.video_id}.mp4" if video.group else None
            video_file = find_video(Path(job.videos_dir), video.video_id, relative) if len(samples) else None
            visual = (
                extract_video(samples, video_file, self.encoder)
                if video_file is not None
                else np.zeros((0, samples.keyframes.shape[1], 4, self.encoder.embed_dim), np.float16)
            )
            save_shard(Path(job.shard), samples, visual)
        except (ValueError, FileNotFoundError, OSError) as exc:
            summary["error"] = str(exc).splitlines()[0]
            return summary
        summary.update(
            rows=len(samples),
            keyframes=int(len(np.unique(samples.keyframes))),
            seconds=time.perf_counter() - started,
        )
        return summary


def assemble_feature_store(
    jobs: list[VideoJob],
    out_dir: Path,
    *,
    settings: ExtractSettings,
    feature_model: dict[str, Any],
    extra_settings: dict[str, Any],
) -> FeatureStore:
    """Concatenate the shards of ``jobs`` (all present) into the feature store at ``out_dir``.

    The visual array is filled into a memory-mapped file in the work folder, so a VidOR-sized
    store (tens of GB) never has to fit in memory.
    """
    missing = [j.video_id for j in jobs if not Path(j.shard).is_file()]
    if missing:
        raise ValueError(f"{len(missing)} videos have no features yet (e.g. {missing[0]}); run extract again")
    if not jobs:
        raise ValueError(f"{settings.dataset} {settings.split}: no videos to assemble")
    vocab = load_vocabulary(settings.dataset)
    parts = [load_shard_samples(Path(job.shard)) for job in jobs]  # small: no features yet
    samples = PairSamples.concat(parts, len(vocab.predicates))
    shape = (len(samples), NUM_KEYFRAMES, 4, int(feature_model["embed_dim"]))
    buffer_path = Path(jobs[0].shard).parent / "visual.buffer.npy"
    visual = np.lib.format.open_memmap(buffer_path, mode="w+", dtype=np.float16, shape=shape)
    offset = 0
    for job, part in zip(jobs, parts, strict=True):
        if len(part):
            with np.load(job.shard, allow_pickle=False) as data:
                visual[offset : offset + len(part)] = data["visual"]
        offset += len(part)
    visual.flush()
    store = write_feature_store(
        out_dir,
        samples,
        visual,
        dataset=settings.dataset,
        split=settings.split,
        source=settings.source,
        feature_model=feature_model,
        synthetic=False,
        settings={"region": settings.region, "preset": settings.preset, **extra_settings},
    )
    del visual
    buffer_path.unlink()
    return store


def clip_identity(preset: str, checkpoint: Path | None) -> dict[str, Any]:
    """``feature_model`` of the manifest: preset, checkpoint file name, weight fingerprint, width and
    activation (:func:`sage_model.clip.clip_identity`, what models are compared with)."""
    return clip_identity_of(build_clip(preset, checkpoint), preset, checkpoint)


def remove_work_dir(path: Path) -> None:
    """Delete a finished run's shards (the store holds everything they held)."""
    shutil.rmtree(path, ignore_errors=True)
