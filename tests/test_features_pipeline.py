"""End to end on real files: mp4 videos of moving rectangles + official VidVRD annotations ->
``harness extract`` / ``harness teacher`` (tiny CLIP, tiny BLIP-2 teacher) -> a dataset root that
the data layer opens and training reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from sage_model.data import DatasetRoot, FeatureStore, PairDataset, TeacherStore, load_annotation_folder
from sage_model.features.extract import ExtractSettings, FeatureWorker, VideoJob
from sage_model.features.runner import extract_split, local_map, teacher_split
from sage_model.features.teacher import DESCRIPTIONS_FILE, TeacherSettings

WIDTH, HEIGHT, FPS = 160, 120, 30
# (video id, frame count, [(tid, category, colour, start xy, velocity xy, size wh)], relations)
VIDEOS = [
    (
        "ILSVRC2015_train_00000001",
        75,
        [
            (0, "dog", (220, 40, 40), (10, 60), (1.2, 0.0), (30, 24)),
            (1, "person", (40, 40, 220), (110, 20), (-0.8, 0.3), (26, 50)),
        ],
        [(0, 1, "chase", 0, 75), (1, 0, "front", 15, 60)],
    ),
    (
        "ILSVRC2015_train_00000002",
        60,
        [
            (0, "car", (40, 200, 40), (5, 80), (1.5, -0.2), (40, 20)),
            (3, "bicycle", (230, 230, 40), (100, 30), (0.0, 0.5), (22, 22)),
        ],
        [(0, 3, "faster", 0, 60)],
    ),
]


def _boxes(start: tuple, velocity: tuple, size: tuple, frames: int) -> np.ndarray:
    """(frames, 4) integer pixel boxes x1, y1, x2, y2 (inclusive) of a rectangle moving linearly."""
    t = np.arange(frames)[:, None]
    xy = np.array(start, float) + t * np.array(velocity, float)
    boxes = np.concatenate([xy, xy + np.array(size, float) - 1], axis=1)
    return np.clip(np.round(boxes), 0, [WIDTH - 1, HEIGHT - 1, WIDTH - 1, HEIGHT - 1]).astype(int)


def render_video(path: Path, frames: int, objects: list) -> dict[int, np.ndarray]:
    """Write an H.264 mp4 of coloured rectangles on a grey gradient; returns each tid's boxes."""
    tracks = {tid: _boxes(start, vel, size, frames) for tid, _, _, start, vel, size in objects}
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    stream.options = {"crf": "12", "preset": "ultrafast"}
    background = np.broadcast_to(
        np.linspace(60, 160, WIDTH, dtype=np.uint8)[None, :, None], (HEIGHT, WIDTH, 3)
    )
    for f in range(frames):
        image = background.copy()
        for tid, _, colour, *_ in objects:
            x1, y1, x2, y2 = tracks[tid][f]
            image[y1 : y2 + 1, x1 : x2 + 1] = colour
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return tracks


def annotation_json(video_id: str, frames: int, objects: list, tracks: dict, relations: list) -> dict:
    """The official ImageNet-VidVRD annotation object of one rendered video."""
    return {
        "video_id": video_id,
        "frame_count": frames,
        "fps": FPS,
        "width": WIDTH,
        "height": HEIGHT,
        "subject/objects": [{"tid": tid, "category": cat} for tid, cat, *_ in objects],
        "trajectories": [
            [
                {
                    "tid": tid,
                    "bbox": dict(
                        zip(("xmin", "ymin", "xmax", "ymax"), map(int, tracks[tid][f]), strict=True)
                    ),
                }
                for tid in tracks
            ]
            for f in range(frames)
        ],
        "relation_instances": [
            {"subject_tid": s, "object_tid": o, "predicate": p, "begin_fid": b, "end_fid": e}
            for s, o, p, b, e in relations
        ],
    }


def tracklets_json(tracks_by_video: dict[str, dict[int, np.ndarray]]) -> dict:
    """Detected tracklets in OV-MMP's layout: the true boxes, shifted by 2 px, one track per object."""
    out = {}
    for vid, tracks in tracks_by_video.items():
        out[vid] = [
            {
                "category": None,
                "score": 0.9,
                "tid": 100 + tid,
                "begin_fid": 0,
                "end_fid": len(boxes),
                "trajectory": {str(f): [float(v) + 2 for v in box] for f, box in enumerate(boxes)},
            }
            for tid, boxes in tracks.items()
        ]
    return out


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Videos, official annotations (train split) and detected tracklets, on disk."""
    base = tmp_path_factory.mktemp("media")
    (base / "videos").mkdir()
    (base / "vidvrd-dataset" / "train").mkdir(parents=True)
    all_tracks = {}
    for vid, frames, objects, relations in VIDEOS:
        tracks = render_video(base / "videos" / f"{vid}.mp4", frames, objects)
        all_tracks[vid] = tracks
        anno = annotation_json(vid, frames, objects, tracks, relations)
        (base / "vidvrd-dataset" / "train" / f"{vid}.json").write_text(json.dumps(anno))
    (base / "train_tracklets.json").write_text(json.dumps(tracklets_json(all_tracks)))
    return {
        "videos": base / "videos",
        "annotations": base / "vidvrd-dataset",
        "tracklets": base / "train_tracklets.json",
    }


def _settings(**changes) -> ExtractSettings:
    base = {"dataset": "vidvrd", "split": "train", "source": "gt", "preset": "sage_tiny", "batch_size": 4}
    return ExtractSettings(**{**base, **changes})


def test_extract_writes_a_store_the_data_layer_opens(media: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "root"
    report = extract_split(_settings(), annotations=media["annotations"], videos=media["videos"], root=root)
    store = FeatureStore.open(root / "features" / "train" / "gt")
    videos = load_annotation_folder(media["annotations"], "vidvrd", "train")
    # 2 ordered pairs per video; windows [0,30) [15,45) [30,60) [45,75) and [0,30) [15,45) [30,60)
    assert len(store) == report.rows == 2 * 4 + 2 * 3
    assert store.visual.dtype == np.float16 and store.visual.shape == (14, 3, 4, 64)
    assert store.boxes.shape == (14, 3, 2, 4) and store.labels.shape == (14, 132)
    norms = np.linalg.norm(store.visual.astype(np.float32), axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)
    # features of different regions / frames differ; the same keyframe's frame feature is shared
    assert not np.allclose(store.visual[:, :, 0], store.visual[:, :, 1])
    assert report.processed == 2 and report.skipped == 0 and not report.up_to_date
    assert store.manifest["feature_model"]["name"] == "sage_tiny" and not store.synthetic
    root_info = DatasetRoot.open(root)
    assert root_info.dataset == "vidvrd" and not root_info.synthetic
    assert [v.video_id for v in root_info.annotations("train")] == [v.video_id for v in videos]
    assert (
        json.loads((root / "dataset.json").read_text())["content_hashes"]["features/train/gt"]
        == store.content_hash
    )


def test_extract_is_deterministic_and_resumes(media: dict[str, Path], tmp_path: Path) -> None:
    first = extract_split(
        _settings(), annotations=media["annotations"], videos=media["videos"], root=tmp_path / "a"
    )
    again = extract_split(
        _settings(), annotations=media["annotations"], videos=media["videos"], root=tmp_path / "a"
    )
    assert again.up_to_date and again.content_hash == first.content_hash and again.processed == 0

    # an interrupted run: only the first video's shard was written before the stop
    root = tmp_path / "b"
    calls: list[str] = []

    def interrupted(worker_cls, settings_json, jobs):
        for summary in local_map(worker_cls, settings_json, jobs[:1]):
            calls.append(summary["video_id"])
            yield summary
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_split(
            _settings(),
            annotations=media["annotations"],
            videos=media["videos"],
            root=root,
            mapper=interrupted,
        )
    resumed = extract_split(_settings(), annotations=media["annotations"], videos=media["videos"], root=root)
    assert calls == [VIDEOS[0][0]]
    assert resumed.skipped == 1 and resumed.processed == 1
    assert resumed.content_hash == first.content_hash
    assert not (root / ".work").exists() or not any((root / ".work").iterdir())


def test_roi_align_and_crop_give_different_features(media: dict[str, Path], tmp_path: Path) -> None:
    worker = FeatureWorker(_settings(region="crop").model_dump_json())
    job = VideoJob(
        VIDEOS[1][0],
        str(media["annotations"] / "train" / f"{VIDEOS[1][0]}.json"),
        str(media["videos"]),
        str(tmp_path / "crop.npz"),
    )
    assert worker(job.to_json())["error"] is None
    roi = FeatureWorker(_settings().model_dump_json())
    assert roi(json.dumps({**json.loads(job.to_json()), "shard": str(tmp_path / "roi.npz")}))["error"] is None
    crop_visual = np.load(tmp_path / "crop.npz")["visual"]
    roi_visual = np.load(tmp_path / "roi.npz")["visual"]
    assert crop_visual.shape == roi_visual.shape == (6, 3, 4, 64)
    assert not np.allclose(crop_visual, roi_visual, atol=1e-2)


def test_missing_video_is_reported_by_name(media: dict[str, Path], tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(media["videos"] / f"{VIDEOS[0][0]}.mp4", videos)
    with pytest.raises(ValueError, match=VIDEOS[1][0]):
        extract_split(_settings(), annotations=media["annotations"], videos=videos, root=tmp_path / "root")


def test_teacher_end_to_end_and_training_reads_it(media: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "root"
    extract_split(
        _settings(source="det"),
        annotations=media["annotations"],
        videos=media["videos"],
        root=root,
        tracklets=media["tracklets"],
    )
    settings = TeacherSettings(name="tiny", backend="tiny", split="train", source="det", preset="sage_tiny")
    report = teacher_split(settings, root=root, videos=media["videos"])
    store = FeatureStore.open(root / "features" / "train" / "det")
    teacher = TeacherStore.open(root / "teachers" / "tiny" / "train" / "det")
    teacher.check_aligned(store)
    assert (
        teacher.name == "tiny"
        and teacher.text.shape == (len(store), 3, 4, 64)
        and teacher.text.dtype == np.float16
    )
    assert report.processed == 2 and report.rows == len(store)
    import pyarrow.parquet as pq

    table = pq.read_table(teacher.path / DESCRIPTIONS_FILE).to_pandas()
    assert len(table) == len(store) * 3 * 4
    assert set(table["perspective"]) == {"subject", "object", "union", "frame"}
    assert table["text"].str.len().min() > 0 and table["model_id"].iloc[0] == "tiny-blip2-seed0"
    assert "Question:" in table["prompt"].iloc[0]
    again = teacher_split(settings, root=root, videos=media["videos"])
    assert again.up_to_date and again.content_hash == teacher.content_hash

    root_info = DatasetRoot.open(root)
    dataset = PairDataset(
        root_info.feature_store("train", "det"), root_info.teacher_store("tiny", "train", "det")
    )
    batch = dataset.get_batch(np.arange(len(dataset)))
    assert batch["visual"].shape == batch["teacher"].shape == (len(store), 3, 4, 64)
    assert bool(batch["has_teacher"].all())
    assert root_info.tracklets("train")[VIDEOS[0][0]][0].tid == 100
