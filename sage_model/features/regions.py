"""Region features from the frozen CLIP image tower: subject, object, union box and whole frame.

Two ways to turn a box into one CLIP embedding (``--region``):

``roi_align`` (the paper's wording, the default)
    The whole frame is resized to the tower's square input (224 x 224 for ViT-B/16; aspect ratio
    *not* kept, so that the patch grid covers the entire frame and a normalised box maps linearly
    onto it) and run through the tower once. The patch tokens of the last transformer block,
    before the final LayerNorm, form a (G x G) map (G = 224/16 = 14). Each box, scaled to grid
    units, is pooled with ``torchvision.ops.roi_align`` (7 x 7 bins, 2 x 2 bilinear samples per
    bin, ``aligned=True``) and the 49 bins are averaged into one token of the tower's width (768).
    That token goes through the tower's own final LayerNorm (``ln_post``) and projection
    (``proj``, 768 -> 512): the same head that turns the CLS token into the image embedding, so
    region and frame features live in the same 512-d space. Cost: one forward pass per keyframe,
    whatever the number of boxes. The whole-frame feature is the CLS embedding of that pass.
    (EOV-MMP's masked average pooling of patch tokens is the same idea with a binary mask in
    place of bilinear RoI bins; note that CLIP was trained on the CLS token only, so pooled patch
    tokens are a weaker match to the text space than crops.)

``crop`` (what OV-MMP's released code does)
    Every box is cut out of the full-resolution frame and sent through CLIP's standard
    preprocessing (bicubic resize of the shorter side to 224, centre crop, normalisation) and a
    full forward pass; the result is the ordinary image embedding. The whole frame goes through
    the same preprocessing (so its centre crop, as in OV-MMP). Cost: one forward pass per box.

Both return unnormalised projected embeddings (what ``CLIP.encode_image`` returns); the model
normalises where it needs to.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP
from PIL import Image
from torchvision.ops import roi_align

RegionMode = Literal["roi_align", "crop"]
REGION_MODES: tuple[RegionMode, ...] = ("roi_align", "crop")
ROI_BINS = 7
ROI_SAMPLES_PER_BIN = 2


class RegionEncoder:
    """Encodes keyframes and normalised boxes with a frozen CLIP image tower."""

    def __init__(
        self,
        model: CLIP,
        mode: RegionMode = "roi_align",
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ) -> None:
        if mode not in REGION_MODES:
            raise ValueError(f"region: unknown mode {mode!r}; valid: {', '.join(REGION_MODES)}")
        visual = model.visual
        if mode == "roi_align" and (
            getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok"
        ):
            raise ValueError(
                "region: roi_align needs a CLS-token ViT image tower (open_clip VisionTransformer)"
            )
        self.visual = visual.to(device).eval()
        self.mode: RegionMode = mode
        self.device = torch.device(device)
        self.batch_size = batch_size
        size = visual.image_size
        self.input_size = int(size[0] if isinstance(size, tuple | list) else size)
        self.embed_dim = int(visual.output_dim)
        self._crop_transform = open_clip.image_transform(self.input_size, is_train=False)
        self._mean = torch.tensor(OPENAI_DATASET_MEAN).view(3, 1, 1)
        self._std = torch.tensor(OPENAI_DATASET_STD).view(3, 1, 1)

    @torch.no_grad()
    def encode(
        self, frames: list[np.ndarray], boxes: list[np.ndarray]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Frame embeddings (K, D) and, per frame, box embeddings (R_k, D), float32 on the CPU.

        ``frames[k]`` is an (H, W, 3) uint8 RGB image; ``boxes[k]`` an (R_k, 4) array of
        normalised [x1, y1, x2, y2] boxes in that image.
        """
        if len(frames) != len(boxes):
            raise ValueError(f"region: {len(frames)} frames but {len(boxes)} box lists")
        clean = [_clip_boxes(np.asarray(b, dtype=np.float32).reshape(-1, 4)) for b in boxes]
        if self.mode == "roi_align":
            return self._encode_roi_align(frames, clean)
        return self._encode_crops(frames, clean)

    def _encode_roi_align(
        self, frames: list[np.ndarray], boxes: list[np.ndarray]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        frame_out: list[torch.Tensor] = []
        region_out: list[torch.Tensor] = []
        for start in range(0, len(frames), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            pixels = torch.stack([self._squash(f) for f in frames[chunk]]).to(self.device)  # (B, 3, S, S)
            tokens = _tower_tokens(self.visual, pixels)  # (B, 1 + G*G, W)
            frame_out.append(_project(self.visual, tokens[:, 0]))  # (B, D)
            pooled = _roi_pool_tokens(tokens[:, 1:], boxes[chunk])  # (sum R, W)
            regions = (
                _project(self.visual, pooled) if len(pooled) else pooled.new_zeros(0, frame_out[-1].shape[1])
            )
            region_out += list(torch.split(regions, [len(b) for b in boxes[chunk]]))
        return torch.cat(frame_out).float().cpu(), [r.float().cpu() for r in region_out]

    def _encode_crops(
        self, frames: list[np.ndarray], boxes: list[np.ndarray]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        images: list[torch.Tensor] = []  # per frame: the whole frame, then its boxes
        for frame, frame_boxes in zip(frames, boxes, strict=True):
            images.append(self._crop_transform(Image.fromarray(frame)))
            images += [self._crop_transform(_crop(frame, box)) for box in frame_boxes]
        embeddings = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack(images[start : start + self.batch_size]).to(self.device)  # (B, 3, S, S)
            embeddings.append(self.visual(batch).float().cpu())  # (B, D)
        flat = torch.cat(embeddings)
        frame_rows, region_out, row = [], [], 0
        for frame_boxes in boxes:
            frame_rows.append(row)
            region_out.append(flat[row + 1 : row + 1 + len(frame_boxes)])
            row += 1 + len(frame_boxes)
        return flat[frame_rows], region_out

    def _squash(self, frame: np.ndarray) -> torch.Tensor:
        """(3, S, S) normalised: the whole frame resized to the square input, aspect not kept."""
        image = Image.fromarray(frame).resize((self.input_size, self.input_size), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (pixels - self._mean) / self._std


def _tower_tokens(visual: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Output tokens of the last transformer block, before ln_post: (B, 1 + G*G, W)."""
    x = visual._embeds(pixels)  # (B, 1 + G*G, W): patch embedding, CLS, positions, ln_pre
    return visual.transformer(x)


def _project(visual: Any, token: torch.Tensor) -> torch.Tensor:
    """The tower's head on pooled tokens: final LayerNorm then projection, (..., W) -> (..., D)."""
    out = visual.ln_post(token)
    return out @ visual.proj if visual.proj is not None else out


def _roi_pool_tokens(patches: torch.Tensor, boxes: list[np.ndarray]) -> torch.Tensor:
    """RoI Align of normalised boxes on the patch-token grid, averaged over bins: (sum R, W)."""
    batch, n_tokens, width = patches.shape
    grid = int(round(n_tokens**0.5))
    assert grid * grid == n_tokens, f"non-square token grid of {n_tokens} tokens"
    feature_map = patches.transpose(1, 2).reshape(batch, width, grid, grid)  # (B, W, G, G)
    rois = [
        torch.cat([torch.full((len(b), 1), float(i)), torch.from_numpy(b) * grid], dim=1)
        for i, b in enumerate(boxes)
    ]
    all_rois = torch.cat(rois).to(feature_map) if rois else feature_map.new_zeros(0, 5)  # (sum R, 5)
    if len(all_rois) == 0:
        return feature_map.new_zeros(0, width)
    pooled = roi_align(
        feature_map,
        all_rois,
        output_size=ROI_BINS,
        spatial_scale=1.0,
        sampling_ratio=ROI_SAMPLES_PER_BIN,
        aligned=True,
    )  # (sum R, W, 7, 7)
    return pooled.mean(dim=(2, 3))


def _clip_boxes(boxes: np.ndarray) -> np.ndarray:
    """Clamp to the image and give every box a positive extent (1/1000 of the image at least)."""
    out = np.clip(boxes, 0.0, 1.0)
    out[:, 2] = np.maximum(out[:, 2], np.minimum(out[:, 0] + 1e-3, 1.0))
    out[:, 3] = np.maximum(out[:, 3], np.minimum(out[:, 1] + 1e-3, 1.0))
    out[:, 0] = np.minimum(out[:, 0], out[:, 2] - 1e-3)
    out[:, 1] = np.minimum(out[:, 1], out[:, 3] - 1e-3)
    return out


def _crop(frame: np.ndarray, box: np.ndarray) -> Image.Image:
    """The pixels of a normalised box (at least 1 x 1), as a PIL image."""
    height, width = frame.shape[:2]
    x1, x2 = int(np.floor(box[0] * width)), int(np.ceil(box[2] * width))
    y1, y2 = int(np.floor(box[1] * height)), int(np.ceil(box[3] * height))
    x1, y1 = min(max(x1, 0), width - 1), min(max(y1, 0), height - 1)
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    return Image.fromarray(frame[y1:y2, x1:x2])


def union_boxes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest box holding both: (..., 4) x1y1x2y2 elementwise min/max."""
    return np.concatenate([np.minimum(a[..., :2], b[..., :2]), np.maximum(a[..., 2:], b[..., 2:])], axis=-1)
