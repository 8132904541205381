"""The pieces of the real-data pipeline, checked against hand-computed cases: keyframe decoding,
RoI Align on the CLIP token grid, crops, teacher prompts and boxes, question deduplication."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from sage_model.clip import build_tiny_clip
from sage_model.features.regions import RegionEncoder, _roi_pool_tokens, union_boxes
from sage_model.features.teacher import plan_questions
from sage_model.features.teacher_models import (
    PERSPECTIVES,
    DescriptionRequest,
    GroundedBackend,
    asm_box,
    describe,
    load_backend,
    pad_to_square,
)
from sage_model.features.video import find_video, iter_frames, read_frames


@pytest.fixture(scope="module")
def counting_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """45 frames whose grey level is 5 x the frame index: a decoded frame says which one it is."""
    path = tmp_path_factory.mktemp("video") / "count.mp4"
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    stream.options = {"crf": "0", "preset": "ultrafast"}
    for index in range(45):
        image = np.full((48, 64, 3), 5 * index, dtype=np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def test_keyframes_are_the_annotation_frames(counting_video: Path) -> None:
    frames = list(iter_frames(counting_video, [30, 0, 15, 30]))
    assert [i for i, _ in frames] == [0, 15, 30]
    for index, image in frames:
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
        assert abs(float(image.mean()) - 5 * index) < 3


def test_a_slightly_short_video_reuses_its_last_frame_and_a_short_one_fails(counting_video: Path) -> None:
    frames = read_frames(counting_video, [44, 50])
    np.testing.assert_array_equal(frames[50], frames[44])
    with pytest.raises(ValueError, match=r"count\.mp4: video has 45 decodable frames but frame 90"):
        read_frames(counting_video, [90])


def test_find_video_knows_both_layouts(tmp_path: Path) -> None:
    (tmp_path / "1025").mkdir()
    (tmp_path / "1025" / "5159741010.mp4").write_bytes(b"")
    (tmp_path / "ILSVRC2015_train_00005003.mp4").write_bytes(b"")
    assert find_video(tmp_path, "ILSVRC2015_train_00005003") == tmp_path / "ILSVRC2015_train_00005003.mp4"
    assert find_video(tmp_path, "5159741010", "1025/5159741010.mp4") == tmp_path / "1025" / "5159741010.mp4"
    assert find_video(tmp_path, "5159741010") == tmp_path / "1025" / "5159741010.mp4"
    with pytest.raises(FileNotFoundError, match="missing_video"):
        find_video(tmp_path, "missing_video")


def test_roi_align_of_a_linear_token_map_is_its_value_at_the_box_centre() -> None:
    # tokens of a 4 x 4 grid: channel 0 = column index, channel 1 = row index (patch-centre units)
    grid = 4
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    tokens = torch.tensor(np.stack([cols.reshape(-1), rows.reshape(-1)], axis=1), dtype=torch.float32)[None]
    box = np.array([[0.25, 0.5, 0.75, 0.875]], dtype=np.float32)  # grid x 1..3, y 2..3.5
    pooled = _roi_pool_tokens(tokens, [box])  # bilinear samples of a linear map average to the centre
    # centre in grid units (2.0, 2.75); token i's centre sits at i + 0.5 -> index (1.5, 2.25)
    np.testing.assert_allclose(pooled.numpy(), [[1.5, 2.25]], atol=1e-5)


def test_region_encoder_heads_are_the_clip_image_head() -> None:
    model = build_tiny_clip()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 80, 3), dtype=np.uint8) for _ in range(3)]
    boxes = [
        np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.4, 0.9]]),
        np.zeros((0, 4)),
        np.array([[0.5, 0.5, 0.6, 0.6]]),
    ]
    roi = RegionEncoder(model, "roi_align")
    frame_emb, regions = roi.encode(frames, boxes)
    assert frame_emb.shape == (3, 64) and [r.shape for r in regions] == [(2, 64), (0, 64), (1, 64)]
    with torch.no_grad():  # the frame feature is CLIP's own image embedding of the squashed frame
        expected = model.encode_image(torch.stack([roi._squash(f) for f in frames]))
    torch.testing.assert_close(frame_emb, expected, atol=1e-5, rtol=1e-5)
    crop = RegionEncoder(model, "crop")
    crop_frames, crop_regions = crop.encode(frames, boxes)
    torch.testing.assert_close(crop_regions[0][0], crop_frames[0])  # a whole-frame crop is the frame
    assert not torch.allclose(crop_regions[0][1], crop_frames[0])


def test_union_box_holds_both() -> None:
    a, b = np.array([0.1, 0.5, 0.3, 0.6]), np.array([0.2, 0.1, 0.9, 0.4])
    np.testing.assert_allclose(union_boxes(a, b), [0.1, 0.1, 0.9, 0.6])


def test_asmv2_boxes_are_in_the_padded_square_in_thousandths() -> None:
    frame = np.zeros((100, 200, 3), dtype=np.uint8)  # wide: padded by 50 px above and below
    image, to_square = pad_to_square(frame, (1, 2, 3))
    assert image.size == (200, 200) and image.getpixel((0, 0)) == (1, 2, 3)
    square = to_square(np.array([0.0, 0.0, 0.5, 1.0]))  # pixels (0, 0)-(100, 100) -> (0, 50)-(100, 150)
    np.testing.assert_allclose(square, [0.0, 0.25, 0.5, 0.75])
    assert asm_box(square) == "<box>[[0, 250, 500, 750]]</box>"
    assert asm_box(np.array([0.0, 0.0, 1.0, 1.0])) == "<box>[[0, 0, 999, 999]]</box>"


def test_grounded_prompts_name_the_regions_by_box() -> None:
    class _Processor:
        image_processor = type("P", (), {"image_mean": [0.5, 0.5, 0.5]})()

    backend = GroundedBackend.__new__(GroundedBackend)
    backend.processor = _Processor()
    frame = np.zeros((100, 100, 3), dtype=np.uint8)
    sub, obj = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.5, 0.5, 0.9, 0.9])
    prompts = {p: backend.prompt_and_image(DescriptionRequest(frame, sub, obj, p))[0] for p in PERSPECTIVES}
    assert "<ref>the subject</ref><box>[[100, 200, 300, 400]]</box>" in prompts["subject"]
    assert "<ref>the object</ref><box>[[500, 500, 900, 900]]</box>" in prompts["object"]
    assert "[[100, 200, 300, 400]]" in prompts["union"] and "[[500, 500, 900, 900]]" in prompts["union"]
    assert "<box>" not in prompts["frame"]
    assert all(
        p.startswith("A chat between") and p.endswith("ASSISTANT:") and "<image>\n" in p
        for p in prompts.values()
    )


def test_each_distinct_question_is_asked_once() -> None:
    # rows 0 and 1 share the subject box at frame 30; row 2 is the reversed pair at the same frame
    s, o = np.array([0.1, 0.1, 0.2, 0.2], np.float32), np.array([0.5, 0.5, 0.7, 0.7], np.float32)
    o2 = np.array([0.3, 0.3, 0.4, 0.4], np.float32)
    boxes = np.stack([np.stack([s, o]), np.stack([s, o2]), np.stack([o, s])])[:, None]  # (3, T=1, 2, 4)
    plan = plan_questions(boxes, np.full((3, 1), 30))
    # subject: s, o (2); object: o, o2, s (3); union: (s,o), (s,o2), (o,s) (3); frame: 1
    assert len(plan.keys) == 9 and list(plan.requests) == [30]
    assert plan.answer[0, 0, 0] == plan.answer[1, 0, 0]  # same subject question
    assert plan.answer[0, 0, 3] == plan.answer[1, 0, 3] == plan.answer[2, 0, 3]  # one frame question


def test_tiny_teacher_is_deterministic_and_real_backends_need_a_local_model(tmp_path: Path) -> None:
    frame = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    requests = [DescriptionRequest(frame, np.array([0.1, 0.1, 0.5, 0.5]), np.array([0.4, 0.3, 0.9, 0.9]), p)
                for p in PERSPECTIVES]  # fmt: skip
    first = describe(load_backend("tiny", None), requests)
    second = describe(load_backend("tiny", None), requests)
    assert first == second and all(t and len(t.split()) <= 6 for t in first[1])
    assert first[0][0].startswith("Question: ") and first[0][0].endswith("Answer:")

    with pytest.raises(ValueError, match="teacher.model_path: the blip2 backend needs --model-path"):
        load_backend("blip2", None)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_backend("asmv2", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava_llama"}))
    with pytest.raises(ValueError, match="convert_llava_weights_to_hf"):
        load_backend("asmv2", tmp_path)
    with pytest.raises(ValueError, match="unknown backend"):
        load_backend("gpt", tmp_path)


def _save_tiny_llava(folder: Path) -> None:
    """A random LLaVA-1.5-shaped model + processor saved like a converted ASMv2 (no patch_size)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        AddedToken,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    words = [
        "<unk>",
        "<s>",
        "</s>",
        "<pad>",
        "<image>",
        *"a the of and scene subject object dog runs".split(),
    ]
    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=28, patch_size=14)  # fmt: skip
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                       pad_token_id=3, bos_token_id=1, eos_token_id=2)  # fmt: skip
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=4,
                         vision_feature_layer=-2, vision_feature_select_strategy="default", pad_token_id=3)  # fmt: skip
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def test_real_backends_load_local_checkpoints_and_generate(tmp_path: Path) -> None:
    from sage_model.features.teacher_models import Generation

    frame = np.random.default_rng(1).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    requests = [DescriptionRequest(frame, np.array([0.1, 0.1, 0.5, 0.5]), np.array([0.4, 0.3, 0.9, 0.9]), p)
                for p in PERSPECTIVES]  # fmt: skip
    generation = Generation(max_new_tokens=3, batch_size=3)

    _save_tiny_llava(tmp_path / "asmv2")
    asmv2 = load_backend("asmv2", tmp_path / "asmv2", generation)
    prompts, texts = describe(asmv2, requests)
    assert len(texts) == 4 and all(texts)
    # frame 90 x 60 padded to 90 x 90 (15 px above): subject y1 = (0.1 * 60 + 15) / 90 -> 233
    assert "<ref>the subject</ref><box>[[100, 233, 500, 500]]</box>" in prompts[0]
    assert asmv2.model_id.startswith("asmv2:asmv2")

    tiny = load_backend("tiny", None)  # a BLIP-2: save it as a checkpoint and load it back as blip2
    tiny.model.save_pretrained(tmp_path / "blip2")
    tiny.processor.save_pretrained(tmp_path / "blip2")
    blip2 = load_backend("blip2", tmp_path / "blip2", generation)
    prompts, texts = describe(blip2, requests)
    assert len(texts) == 4 and prompts[3].startswith("Question: Describe the scene")
