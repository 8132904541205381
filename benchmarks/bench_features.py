"""Feature-extraction speed: keyframes per second of `harness extract`'s per-video worker.

Renders one synthetic 640x360 video (moving rectangles, official VidVRD annotation), then extracts
it in-process with the tiny CLIP (roi_align and crop) and, with ``--vitb16``, with a randomly
initialised CLIP ViT-B/16 saved as a local checkpoint (same compute as the real weights). Prints
one JSON line per configuration: keyframes, decode-only seconds, extraction wall and CPU seconds,
keyframes per second and per CPU-second (the latter is less sensitive to a busy machine).

    python benchmarks/bench_features.py [--frames 900] [--objects 4] [--vitb16] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from sage_model.data import load_vocabulary
from sage_model.data.annotations import load_annotation_file
from sage_model.data.samples import plan_pair_samples
from sage_model.features.extract import ExtractSettings, FeatureWorker, VideoJob
from sage_model.features.video import iter_frames

WIDTH, HEIGHT = 640, 360
CATEGORIES = ["person", "dog", "car", "bicycle", "horse", "ball"]


def render(folder: Path, frames: int, objects: int, seed: int = 0) -> str:
    """Write <folder>/videos/<id>.mp4 and <folder>/anno/train/<id>.json; returns the video id."""
    rng = np.random.default_rng(seed)
    vid = "ILSVRC2015_train_09999999"
    (folder / "videos").mkdir(parents=True)
    (folder / "anno" / "train").mkdir(parents=True)
    starts = rng.uniform([0, 0], [WIDTH - 120, HEIGHT - 120], size=(objects, 2))
    speeds = rng.uniform(-1.0, 1.0, size=(objects, 2))
    sizes = rng.uniform(40, 110, size=(objects, 2))
    t = np.arange(frames)[:, None, None]
    xy = np.clip(starts[None] + t * speeds[None], 0, [WIDTH - 111, HEIGHT - 111])  # (F, O, 2)
    boxes = np.round(np.concatenate([xy, xy + sizes[None] - 1], axis=2)).astype(int)  # (F, O, 4)
    container = av.open(str(folder / "videos" / f"{vid}.mp4"), "w")
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    colours = rng.integers(30, 255, size=(objects, 3))
    for f in range(frames):
        image = np.full((HEIGHT, WIDTH, 3), 90, dtype=np.uint8)
        for o in range(objects):
            x1, y1, x2, y2 = boxes[f, o]
            image[y1 : y2 + 1, x1 : x2 + 1] = colours[o]
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    annotation = {
        "video_id": vid, "frame_count": frames, "fps": 30, "width": WIDTH, "height": HEIGHT,
        "subject/objects": [{"tid": o, "category": CATEGORIES[o % len(CATEGORIES)]} for o in range(objects)],
        "trajectories": [
            [{"tid": o, "bbox": dict(zip(("xmin", "ymin", "xmax", "ymax"), map(int, boxes[f, o]), strict=True))}
             for o in range(objects)]
            for f in range(frames)
        ],
        "relation_instances": [],
    }  # fmt: skip
    (folder / "anno" / "train" / f"{vid}.json").write_text(json.dumps(annotation))
    return vid


def measure(folder: Path, vid: str, settings: ExtractSettings) -> dict:
    job = VideoJob(vid, str(folder / "anno" / "train" / f"{vid}.json"), str(folder / "videos"), "")
    video = load_annotation_file(job.annotation, "vidvrd")
    samples = plan_pair_samples(video, load_vocabulary("vidvrd"))
    keyframes = np.unique(samples.keyframes)
    started = time.perf_counter()
    for _ in iter_frames(folder / "videos" / f"{vid}.mp4", keyframes):
        pass
    decode = time.perf_counter() - started
    worker = FeatureWorker(settings.model_dump_json())
    shard = folder / f"{settings.preset}-{settings.region}.npz"
    cpu = time.process_time()
    summary = worker(json.dumps({**json.loads(job.to_json()), "shard": str(shard)}))
    cpu = time.process_time() - cpu
    assert summary["error"] is None, summary["error"]
    return {
        "preset": settings.preset, "region": settings.region, "rows": summary["rows"],
        "keyframes": summary["keyframes"], "decode_s": round(decode, 2), "extract_s": round(summary["seconds"], 2),
        "keyframes_per_s": round(summary["keyframes"] / summary["seconds"], 2),
        "cpu_s": round(cpu, 2), "keyframes_per_cpu_s": round(summary["keyframes"] / cpu, 2),
        "threads": torch.get_num_threads(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=900)
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--vitb16", action="store_true", help="also a random ViT-B/16 (writes a 600 MB checkpoint)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        vid = render(folder, args.frames, args.objects)
        configs = [ExtractSettings(dataset="vidvrd", split="train", source="gt", preset="sage_tiny", region=r)
                   for r in ("roi_align", "crop")]  # fmt: skip
        if args.vitb16:
            import open_clip

            checkpoint = folder / "vitb16-random.pt"
            torch.save(open_clip.create_model("ViT-B-16").state_dict(), checkpoint)
            configs += [ExtractSettings(dataset="vidvrd", split="train", source="gt", preset="sage_vitb16",
                                        clip_checkpoint=checkpoint, region=r) for r in ("roi_align", "crop")]  # fmt: skip
        for settings in configs:
            print(json.dumps(measure(folder, vid, settings)), flush=True)


if __name__ == "__main__":
    main()
