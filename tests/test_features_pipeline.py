"""End to end on real files: mp4 videos of moving rectangles + official VidVRD annotations ->
``harness extract`` / ``harness teacher`` (tiny CLIP, tiny BLIP-2 teacher) -> a dataset root that
the data layer opens and training reads."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from harness.cli import app
from sage_model.data import DatasetRoot, FeatureStore, PairDataset, load_annotation_folder
from sage_model.data.store import ROW_COLUMNS
from sage_model.features.extract import ExtractSettings, FeatureWorker, VideoJob
from sage_model.features.runner import extract_split, local_map
from sage_model.features.teacher import DESCRIPTIONS_FILE

WIDTH, HEIGHT, FPS = 160, 120, 30
# (split, video id, frame count, [(tid, category, colour, start xy, velocity xy, size wh)], relations)
VIDEOS = [
    (
        "train",
        "ILSVRC2015_train_00000001",
        75,
        [
            (0, "dog", (220, 40, 40), (10, 60), (1.2, 0.0), (30, 24)),
            (1, "person", (40, 40, 220), (110, 20), (-0.8, 0.3), (26, 50)),
        ],
        [(0, 1, "chase", 0, 75), (1, 0, "front", 15, 60)],
    ),
    (
        "train",
        "ILSVRC2015_train_00000002",
        60,
        [
            (0, "car", (40, 200, 40), (5, 80), (1.5, -0.2), (40, 20)),
            (3, "bicycle", (230, 230, 40), (100, 30), (0.0, 0.5), (22, 22)),
        ],
        [(0, 3, "faster", 0, 60)],
    ),
    (
        "test",
        "ILSVRC2015_train_00000003",
        60,
        [
            (2, "person", (250, 120, 20), (20, 30), (1.0, 0.4), (24, 48)),
            (5, "dog", (30, 160, 200), (120, 70), (-1.0, 0.0), (30, 20)),
        ],
        [(2, 5, "watch", 0, 60), (5, 2, "toward", 15, 45)],  # toward: a novel predicate
    ),
]
TRAIN_IDS = [v[1] for v in VIDEOS if v[0] == "train"]


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
    """Videos, official annotations (train and test splits) and detected tracklets, on disk."""
    base = tmp_path_factory.mktemp("media")
    (base / "videos").mkdir()
    all_tracks = {}
    for split, vid, frames, objects, relations in VIDEOS:
        tracks = render_video(base / "videos" / f"{vid}.mp4", frames, objects)
        all_tracks[vid] = tracks
        folder = base / "vidvrd-dataset" / split
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{vid}.json").write_text(
            json.dumps(annotation_json(vid, frames, objects, tracks, relations))
        )
    (base / "tracklets.json").write_text(json.dumps(tracklets_json(all_tracks)))
    return {
        "videos": base / "videos",
        "annotations": base / "vidvrd-dataset",
        "tracklets": base / "tracklets.json",
    }


@pytest.fixture(scope="module")
def train_root(media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A root with the train/gt store extracted once (in-process workers)."""
    root = tmp_path_factory.mktemp("train_root")
    report = extract_split(_settings(), annotations=media["annotations"], videos=media["videos"], root=root)
    return root, report


def _settings(**changes) -> ExtractSettings:
    base = {"dataset": "vidvrd", "split": "train", "source": "gt", "preset": "sage_tiny", "batch_size": 4}
    return ExtractSettings(**{**base, **changes})


def test_extract_writes_a_store_the_data_layer_opens(media: dict[str, Path], train_root: tuple) -> None:
    root, report = train_root
    store = FeatureStore.open(root / "features" / "train" / "gt")
    # 2 ordered pairs per video; windows [0,30) [15,45) [30,60) [45,75) and [0,30) [15,45) [30,60)
    assert len(store) == report.rows == 2 * 4 + 2 * 3
    assert store.visual.dtype == np.float16 and store.visual.shape == (14, 3, 4, 64)
    assert store.boxes.shape == (14, 3, 2, 4) and store.labels.shape == (14, 132)
    assert sorted(set(store.rows.video_id)) == TRAIN_IDS
    norms = np.linalg.norm(store.visual.astype(np.float32), axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)
    assert not np.allclose(store.visual[:, :, 0], store.visual[:, :, 1])  # subject != object region
    # every row sharing a keyframe shares its whole-frame feature
    same = store.keyframes[:, 1] == store.keyframes[0, 1]
    same &= store.rows.video_id == store.rows.video_id[0]
    assert same.sum() >= 2 and (store.visual[same, 1, 3] == store.visual[0, 1, 3]).all()
    assert report.processed == 2 and report.skipped == 0 and not report.up_to_date
    assert store.manifest["feature_model"]["name"] == "sage_tiny" and not store.synthetic
    info = DatasetRoot.open(root)
    assert info.dataset == "vidvrd" and not info.synthetic
    assert [v.video_id for v in info.annotations("train")] == TRAIN_IDS
    assert (
        json.loads((root / "dataset.json").read_text())["content_hashes"]["features/train/gt"]
        == store.content_hash
    )
    assert [v.video_id for v in load_annotation_folder(media["annotations"], "vidvrd", "train")] == TRAIN_IDS


def test_extract_is_deterministic_and_resumes(
    media: dict[str, Path], train_root: tuple, tmp_path: Path
) -> None:
    root, first = train_root
    again = extract_split(_settings(), annotations=media["annotations"], videos=media["videos"], root=root)
    assert again.up_to_date and again.content_hash == first.content_hash and again.processed == 0

    # an interrupted run: only the first video's shard was written before the stop
    fresh = tmp_path / "b"
    calls: list[str] = []

    def interrupted(worker_cls, settings_json, jobs):
        for summary in local_map(worker_cls, settings_json, jobs[:1]):
            calls.append(summary["video_id"])
            yield summary
        raise KeyboardInterrupt

    kwargs = dict(annotations=media["annotations"], videos=media["videos"], root=fresh)
    with pytest.raises(KeyboardInterrupt):
        extract_split(_settings(), mapper=interrupted, **kwargs)
    resumed = extract_split(_settings(), **kwargs)
    assert calls == [TRAIN_IDS[0]]
    assert resumed.skipped == 1 and resumed.processed == 1
    assert resumed.content_hash == first.content_hash  # same bytes as an uninterrupted run
    assert not any((fresh / ".work").iterdir())  # shards are removed once the store is written
    with pytest.raises(ValueError, match="--overwrite"):
        extract_split(_settings(region="crop"), **kwargs)


def test_roi_align_and_crop_give_different_features(media: dict[str, Path], tmp_path: Path) -> None:
    vid = TRAIN_IDS[1]
    job = VideoJob(vid, str(media["annotations"] / "train" / f"{vid}.json"), str(media["videos"]), "")
    visual = {}
    for region in ("roi_align", "crop"):
        shard = tmp_path / f"{region}.npz"
        summary = FeatureWorker(_settings(region=region).model_dump_json())(
            json.dumps({**json.loads(job.to_json()), "shard": str(shard)})
        )
        assert summary["error"] is None and summary["rows"] == 6
        visual[region] = np.load(shard)["visual"]
    assert visual["crop"].shape == visual["roi_align"].shape == (6, 3, 4, 64)
    assert not np.allclose(visual["crop"], visual["roi_align"], atol=1e-2)


def test_missing_video_is_reported_by_name(media: dict[str, Path], tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(media["videos"] / f"{TRAIN_IDS[0]}.mp4", videos)
    with pytest.raises(ValueError, match=TRAIN_IDS[1]):
        extract_split(_settings(), annotations=media["annotations"], videos=videos, root=tmp_path / "root")


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_cli_extract_and_teacher_make_a_root_that_training_reads(
    media: dict[str, Path], tmp_path: Path
) -> None:
    from sage_model.config import ExperimentConfig
    from sage_model.experiment import run_experiment

    root = tmp_path / "root"
    common = ["--videos", str(media["videos"]), "--preset", "sage_tiny", "--workers", "local"]
    _cli("extract", "--annotations", str(media["annotations"]), "--out", str(root), *common)
    _cli("extract", "--annotations", str(media["annotations"]), "--out", str(root), "--split", "test",
         "--source", "det", "--tracklets", str(media["tracklets"]), *common)  # fmt: skip
    output = _cli("teacher", "--root", str(root), "--backend", "tiny", "--name", "asmv2", *common)
    reports = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert [r["store"].split("/teachers/")[1] for r in reports] == [
        "asmv2/train/gt",
        "asmv2/test/gt",
        "asmv2/test/det",
    ]

    info = DatasetRoot.open(root)
    store, teacher = info.feature_store("test", "det"), info.teacher_store("asmv2", "test", "det")
    assert (
        teacher is not None
        and teacher.text.shape == (len(store), 3, 4, 64)
        and teacher.text.dtype == np.float16
    )
    teacher.check_aligned(store)
    table = pq.read_table(teacher.path / DESCRIPTIONS_FILE).to_pandas()
    assert len(table) == len(store) * 3 * 4
    assert list(table["perspective"][:4]) == ["subject", "object", "union", "frame"]
    assert table["text"].str.len().min() > 0 and set(table["model_id"]) == {"tiny-blip2-seed0"}
    assert info.tracklets("test")[VIDEOS[2][1]][0].tid == 102
    batch = PairDataset(store, teacher).get_batch(np.arange(len(store)))
    assert batch["visual"].shape == batch["teacher"].shape == (len(store), 3, 4, 64)

    cfg = ExperimentConfig.model_validate(
        {
            "data": {"root": str(root)},
            "train": {"stage1_epochs": 1, "stage2_epochs": 1, "val_fraction": 0.0},
            "eval": {"tasks": ["predcls"]},
        }
    )
    result = run_experiment(cfg, work_dir=tmp_path / "work")
    assert not result.synthetic
    assert {(m.task, m.split) for m in result.metrics} >= {("predcls", "all"), ("predcls", "novel")}
    assert result.data_hash and result.teacher_hash  # provenance of the real stores


def test_teacher_errors_name_what_is_missing(
    media: dict[str, Path], train_root: tuple, tmp_path: Path
) -> None:
    root, _ = train_root
    common = ["teacher", "--root", str(root), "--videos", str(media["videos"]), "--preset", "sage_tiny"]
    result = CliRunner().invoke(app, [*common, "--backend", "blip2"])
    assert result.exit_code == 2 and "--model-path" in result.output
    result = CliRunner().invoke(app, [*common, "--backend", "asmv2", "--model-path", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "nope" in result.output
    result = CliRunner().invoke(app, ["extract", "--videos", str(media["videos"]), "--annotations",
                                      str(media["annotations"]), "--out", str(tmp_path / "r")])  # fmt: skip
    assert result.exit_code == 2 and "--clip-checkpoint" in result.output


@pytest.mark.slow
def test_extract_on_ray_data_actors_matches_in_process(
    media: dict[str, Path], train_root: tuple, tmp_path: Path
) -> None:
    from harness.scheduling import map_videos, ray_cluster

    _, local = train_root
    seen: list[str] = []
    with ray_cluster(num_cpus=2):
        report = extract_split(
            _settings(), annotations=media["annotations"], videos=media["videos"], root=tmp_path / "root",
            mapper=partial(map_videos, gpus_per_actor=1.0, actors=1), on_result=lambda s: seen.append(s["video_id"]),
        )  # fmt: skip
    assert sorted(seen) == TRAIN_IDS and report.processed == 2
    # The actor runs torch on 1 thread, this process on its own count: float32 sums may differ in
    # the last bits and flip a float16 rounding, so the content hashes may differ (they do on some
    # x86-64 CPUs). Everything but the features is exact; the features agree to 2 float16 ulps at 1.
    assert_same_store(
        FeatureStore.open(tmp_path / "root" / "features" / "train" / "gt"),
        FeatureStore.open(train_root[0] / "features" / "train" / "gt"),
        visual_atol=1e-3,
    )


def assert_same_store(a: FeatureStore, b: FeatureStore, visual_atol: float) -> None:
    """Same manifest, rows and arrays; ``visual`` (L2-normalised, float16) within ``visual_atol``."""
    assert a.manifest == b.manifest
    for column in ROW_COLUMNS:
        np.testing.assert_array_equal(getattr(a.rows, column), getattr(b.rows, column), err_msg=column)
    for name, array in a.arrays().items():
        if name == "visual":
            np.testing.assert_allclose(
                array.astype(np.float32), b.visual.astype(np.float32), rtol=0, atol=visual_atol
            )
        else:
            np.testing.assert_array_equal(array, b.arrays()[name], err_msg=name)


def test_video_actors_use_gpus_only_where_the_cluster_has_them() -> None:
    from harness.scheduling import ClusterInfo, video_actor_plan

    cpu_only = ClusterInfo("local", True, cpus=8, gpus=0, max_node_cpus=8, max_node_gpus=0)
    assert video_actor_plan(cpu_only, 100, gpus_per_actor=1.0, cpus_per_actor=2.0, actors=None) == (4, 0.0)
    assert video_actor_plan(cpu_only, 3, gpus_per_actor=1.0, cpus_per_actor=1.0, actors=None) == (3, 0.0)
    gpus = ClusterInfo("local", True, cpus=32, gpus=4, max_node_cpus=16, max_node_gpus=2)
    assert video_actor_plan(gpus, 100, gpus_per_actor=1.0, cpus_per_actor=1.0, actors=None) == (4, 1.0)
    assert video_actor_plan(gpus, 100, gpus_per_actor=0.5, cpus_per_actor=1.0, actors=2) == (2, 0.5)
    with pytest.raises(ValueError, match="--gpus-per-actor"):
        video_actor_plan(gpus, 100, gpus_per_actor=4.0, cpus_per_actor=1.0, actors=None)
