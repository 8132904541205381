"""The multimodal LLM teachers: what each one is shown and asked, and batched generation.

SAGE's semantic teacher describes every subject-object pair at every keyframe from four
perspectives (subject region, object region, union region, whole frame). The paper does not
print its prompts; ours are below and are class-agnostic on purpose: the teacher features are
computed for test videos too, and naming the ground-truth (or detected) classes in a prompt
would leak labels into the SGCls/SGDet inputs.

How a region reaches the model depends on whether the model can read boxes:

* ``blip2`` and ``tiny`` cannot: they see the *crop* of the region (subject box, object box,
  union box) or the whole frame, and are asked about "the main object"/"the two main objects"
  in the picture, in BLIP-2's ``Question: ... Answer:`` format.
* ``asmv2`` (All-Seeing v2, a LLaVA-1.5 13B model trained for grounding and referring) sees the
  whole frame every time, padded to a square as it was trained ("image_aspect_ratio: pad"),
  and the region is named in the prompt as ``<ref>the subject</ref><box>[[x1, y1, x2, y2]]</box>``
  with integer coordinates in [0, 1000) of the padded square, its native referring format,
  inside the Vicuna-v1 chat template it was tuned with.

``tiny`` is a randomly initialised BLIP-2 (ViT 2 layers, Q-Former 2 layers, OPT 2 layers, width
32) with an in-code word-level tokenizer, built under ``torch.manual_seed(0)``: the whole teacher
path (processor, batched generation, decoding, Parquet, CLIP text encoding) runs here without
weights. Its text is nonsense, deterministically.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

Perspective = Literal["subject", "object", "union", "frame"]
PERSPECTIVES: tuple[Perspective, ...] = ("subject", "object", "union", "frame")
"""Order of the four teacher perspectives; matches the feature store's region axis (s, o, u, frame)."""

BackendName = Literal["asmv2", "blip2", "tiny"]
BACKENDS: tuple[BackendName, ...] = ("asmv2", "blip2", "tiny")

CROP_QUESTIONS: dict[Perspective, str] = {
    "subject": "What is the main object in this picture, what does it look like and what is it doing?",
    "object": "What is the main object in this picture, what does it look like and what is it doing?",
    "union": "What are the two main objects in this picture doing, and where are they relative to each other?",
    "frame": "Describe the scene in this picture: the place, the objects in it and what is happening.",
}
"""Questions for models that see the region as a crop (blip2, tiny): the crop says which region."""

GROUNDED_QUESTIONS: dict[Perspective, str] = {
    "subject": "Describe {subject}: what it is, what it looks like and what it is doing.",
    "object": "Describe {object}: what it is, what it looks like and what it is doing.",
    "union": "Describe what {subject} and {object} are doing, and where they are relative to each other.",
    "frame": "Describe the scene in this image: the place, the objects in it and what is happening.",
}
"""Questions for models that read boxes (asmv2): regions are named by ``<ref>..</ref><box>..</box>``."""

BLIP2_TEMPLATE = "Question: {question} Answer:"
VICUNA_V1_TEMPLATE = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions. USER: <image>\n{question} ASSISTANT:"
)


@dataclass(frozen=True)
class DescriptionRequest:
    """One question to the teacher: a keyframe, the pair's boxes there and the perspective.

    ``frame`` (H, W, 3) uint8 RGB; ``subject_box``/``object_box`` normalised x1, y1, x2, y2.
    """

    frame: np.ndarray
    subject_box: np.ndarray
    object_box: np.ndarray
    perspective: Perspective


@dataclass(frozen=True)
class Generation:
    """Decoding settings, stored beside every description and hashed into the artifact."""

    max_new_tokens: int = 48
    num_beams: int = 1
    do_sample: bool = False
    no_repeat_ngram_size: int = 3
    suppress_tokens: tuple[int, ...] = ()
    batch_size: int = 16

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.do_sample,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
        }
        if self.suppress_tokens:
            kwargs["suppress_tokens"] = list(self.suppress_tokens)
        return kwargs

    def to_json(self) -> str:
        return json.dumps(self.generate_kwargs(), sort_keys=True)


class TeacherBackend(Protocol):
    """A teacher: ``prompts_and_images`` says what the model is shown, ``generate`` runs it."""

    model_id: str
    generation: Generation

    def prompt_and_image(self, request: DescriptionRequest) -> tuple[str, Image.Image]: ...

    def generate(self, prompts: list[str], images: list[Image.Image]) -> list[str]: ...


def describe(backend: TeacherBackend, requests: list[DescriptionRequest]) -> tuple[list[str], list[str]]:
    """(prompts, descriptions) for the requests, generated in batches of ``generation.batch_size``."""
    prompts: list[str] = []
    texts: list[str] = []
    size = backend.generation.batch_size
    for start in range(0, len(requests), size):
        shown = [backend.prompt_and_image(r) for r in requests[start : start + size]]
        batch_prompts = [p for p, _ in shown]
        prompts += batch_prompts
        texts += [t.strip() for t in backend.generate(batch_prompts, [im for _, im in shown])]
    return prompts, texts


class _HFBackend:
    """Shared batched generation through a transformers processor and ``generate``."""

    def __init__(
        self, model: Any, processor: Any, model_id: str, generation: Generation, device: torch.device
    ):
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.generation = generation
        self.device = device
        processor.tokenizer.padding_side = "left"  # decoder-only generation continues at the right edge

    @torch.no_grad()
    def generate(self, prompts: list[str], images: list[Image.Image]) -> list[str]:
        inputs = self.processor(images=images, text=prompts, return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs and self.device.type == "cuda":
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        out = self.model.generate(
            **inputs, **self.generation.generate_kwargs(), pad_token_id=self.processor.tokenizer.pad_token_id
        )
        prompt_len = inputs["input_ids"].shape[1]
        if out.shape[1] >= prompt_len and torch.equal(out[:, :prompt_len], inputs["input_ids"]):
            out = out[:, prompt_len:]  # decoder-only models return prompt + continuation
        return list(self.processor.batch_decode(out, skip_special_tokens=True))


class CropBackend(_HFBackend):
    """BLIP-2 style: the region's crop, a ``Question: .. Answer:`` prompt (blip2 and tiny)."""

    def prompt_and_image(self, request: DescriptionRequest) -> tuple[str, Image.Image]:
        box = {
            "subject": request.subject_box,
            "object": request.object_box,
            "union": _union(request.subject_box, request.object_box),
            "frame": None,
        }[request.perspective]
        image = Image.fromarray(request.frame) if box is None else crop_region(request.frame, box)
        return BLIP2_TEMPLATE.format(question=CROP_QUESTIONS[request.perspective]), image


class GroundedBackend(_HFBackend):
    """ASMv2: the padded whole frame and the regions as ``<ref>..</ref><box>[[..]]</box>``."""

    def prompt_and_image(self, request: DescriptionRequest) -> tuple[str, Image.Image]:
        image, to_square = pad_to_square(request.frame, self._pad_color())
        refs = {
            "subject": f"<ref>the subject</ref>{asm_box(to_square(request.subject_box))}",
            "object": f"<ref>the object</ref>{asm_box(to_square(request.object_box))}",
        }
        question = GROUNDED_QUESTIONS[request.perspective].format(**refs)
        return VICUNA_V1_TEMPLATE.format(question=question), image

    def _pad_color(self) -> tuple[int, int, int]:
        mean = getattr(self.processor.image_processor, "image_mean", None) or (
            0.48145466,
            0.4578275,
            0.40821073,
        )
        return tuple(int(round(255 * m)) for m in mean)  # type: ignore[return-value]


def crop_region(frame: np.ndarray, box: np.ndarray) -> Image.Image:
    """Pixels of a normalised box (at least 1 x 1) as a PIL image."""
    height, width = frame.shape[:2]
    x1 = int(np.clip(np.floor(box[0] * width), 0, width - 1))
    y1 = int(np.clip(np.floor(box[1] * height), 0, height - 1))
    x2 = int(np.clip(np.ceil(box[2] * width), x1 + 1, width))
    y2 = int(np.clip(np.ceil(box[3] * height), y1 + 1, height))
    return Image.fromarray(frame[y1:y2, x1:x2])


def pad_to_square(frame: np.ndarray, color: tuple[int, int, int]) -> tuple[Image.Image, Any]:
    """The frame centred on a square canvas, and the map of normalised boxes into that square."""
    height, width = frame.shape[:2]
    side = max(height, width)
    canvas = Image.new("RGB", (side, side), color)
    left, top = (side - width) // 2, (side - height) // 2
    canvas.paste(Image.fromarray(frame), (left, top))

    def to_square(box: np.ndarray) -> np.ndarray:
        scale = np.array([width, height, width, height], dtype=np.float64)
        offset = np.array([left, top, left, top], dtype=np.float64)
        return (np.asarray(box, dtype=np.float64) * scale + offset) / side

    return canvas, to_square


def asm_box(box: np.ndarray) -> str:
    """ASMv2's box syntax: integers in [0, 1000) of the (padded) image."""
    values = [int(min(max(round(float(v) * 1000), 0), 999)) for v in box]
    return "<box>[[{}, {}, {}, {}]]</box>".format(*values)


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.concatenate([np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])])


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_generation(name: str) -> Generation:
    """Decoding defaults: 48 new tokens for real models; 6 words, no repeats, for tiny."""
    if name == "tiny":
        return Generation(max_new_tokens=6, no_repeat_ngram_size=1, batch_size=32)
    return Generation()


def load_backend(name: str, model_path: Path | None, generation: Generation | None = None) -> TeacherBackend:
    """The teacher ``name`` (asmv2, blip2, tiny); real ones load from a local directory only."""
    generation = generation or default_generation(name)
    if name == "tiny":
        return build_tiny_backend(generation)
    if name not in BACKENDS:
        raise ValueError(f"teacher.backend: unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    model, processor, model_id = _load_pretrained(name, model_path)
    if name == "asmv2":
        return GroundedBackend(model, processor, model_id, generation, _device())
    return CropBackend(model, processor, model_id, generation, _device())


def _load_pretrained(name: str, model_path: Path | None) -> tuple[Any, Any, str]:
    if model_path is None:
        raise ValueError(
            f"teacher.model_path: the {name} backend needs --model-path (a local model directory)"
        )
    path = Path(model_path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"teacher.model_path: {path} is not a transformers model directory (no config.json); "
            "nothing is downloaded, see docs/real_data.md for how to fetch the checkpoint"
        )
    model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    expected = {"asmv2": "llava", "blip2": "blip-2"}[name]
    if model_type != expected:
        hint = (
            (
                " (the original ASMv2 release is in LLaVA-codebase format, model_type llava_llama: convert it "
                "with transformers' convert_llava_weights_to_hf.py, see docs/real_data.md)"
            )
            if name == "asmv2"
            else ""
        )
        raise ValueError(
            f"{config_file}: model_type {model_type!r}, the {name} backend needs {expected!r}{hint}"
        )
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device = _device()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=dtype)
    model = model.to(device)  # type: ignore[arg-type]
    complete_processor(processor, model.config)
    return model.eval(), processor, f"{name}:{path.name}"


def complete_processor(processor: Any, config: Any) -> None:
    """Fill the image-token fields that older checkpoints and conversions leave empty.

    Recent transformers expand ``<image>`` into one token per visual token inside the processor;
    a BLIP-2 snapshot without ``num_query_tokens`` or a LLaVA conversion without ``patch_size``
    (as ``convert_llava_weights_to_hf.py`` writes it) would then fail or misalign. The values come
    from the model's own config; a CLIP vision tower adds its CLS token (which LLaVA's ``default``
    feature strategy drops again), as in the llava-hf processors.
    """
    if getattr(processor, "num_query_tokens", False) is None and hasattr(config, "num_query_tokens"):
        processor.num_query_tokens = config.num_query_tokens
    if hasattr(processor, "patch_size") and processor.patch_size is None:
        processor.patch_size = config.vision_config.patch_size
        if getattr(processor, "vision_feature_select_strategy", None) is None:
            processor.vision_feature_select_strategy = config.vision_feature_select_strategy
        if not processor.num_additional_image_tokens and config.vision_config.model_type == "clip_vision_model":
            processor.num_additional_image_tokens = 1


TINY_SEED = 0
TINY_WORDS = (
    "a the of and in on with is are to near behind front left right above below next person dog cat car "
    "bird horse ball bicycle table chair sofa water road grass tree sky field room street running walking "
    "sitting standing holding riding watching playing jumping flying swimming eating small large red blue "
    "green white black brown moving toward away together scene picture object main two what where doing"
).split()


def build_tiny_backend(generation: Generation) -> CropBackend:
    """A random tiny BLIP-2 with a word-level tokenizer, identical in every process (seed 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        OPTConfig,
        PreTrainedTokenizerFast,
    )

    specials = ["<pad>", "<unk>", "</s>", "<s>"]
    vocab = {word: i for i, word in enumerate(specials + list(dict.fromkeys(TINY_WORDS)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="</s>", bos_token="<s>"
    )
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        num_query_tokens=4,
    )
    image_token = int(tokenizer.convert_tokens_to_ids("<image>"))  # type: ignore[arg-type]
    n_vocab = len(tokenizer)
    config = Blip2Config(
        vision_config=Blip2VisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ).to_dict(),
        qformer_config=Blip2QFormerConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            encoder_hidden_size=32,
            vocab_size=n_vocab,
        ).to_dict(),
        text_config=OPTConfig(
            vocab_size=n_vocab,
            hidden_size=32,
            num_hidden_layers=2,
            ffn_dim=64,
            num_attention_heads=2,
            word_embed_proj_dim=32,
            max_position_embeddings=128,
            pad_token_id=0,
            bos_token_id=3,
            eos_token_id=2,
        ).to_dict(),
        num_query_tokens=4,
        image_token_index=image_token,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = Blip2ForConditionalGeneration(config).eval()
    # Random weights favour <unk> (most prompt words are unknown to the tiny vocabulary): never emit
    # special tokens, so the descriptions are (nonsense) words.
    suppress = tuple(vocab[s] for s in specials) + (image_token,)
    generation = dataclasses.replace(generation, suppress_tokens=suppress)
    return CropBackend(model, processor, f"tiny-blip2-seed{TINY_SEED}", generation, torch.device("cpu"))
