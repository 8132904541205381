"""Table 10's numbers counted both ways: parameters with and without CLIP's token embedding,
inference speed with and without the semantic teacher.

The paper's Table 10 says the teacher's features "are pre-computed offline and do not incur
additional runtime cost during inference". With ``model.semantic.at_test: teacher`` (our default)
every test pair still needs them, so a system that sees a new video must run the MLLM first: its
cost is part of the speed of the whole system, only moved offline. We report both:

* ``fps``: video frames per second of the SAGE model alone (features and teacher text given);
* ``fps_teacher``: the same with the teacher's descriptions generated for the test pairs,
  ``frames / (model seconds + questions x seconds per question)``; questions are the distinct
  (perspective, keyframe, box) questions the offline teacher asks for those pairs
  (:func:`sage_model.features.teacher.plan_questions`: a frame's description and a track's box
  are asked once however many pairs share them). Seconds per question are measured with the
  tiny random BLIP-2 teacher (``tiny``, CPU) on this machine;
* ``teacher_qpf``: those questions per video frame, so that any teacher's cost can be put in:
  ``fps_with(t_q) = 1 / (1 / fps + teacher_qpf * t_q)``. For ASMv2 (13 B, LLaVA-1.5) see
  :func:`asmv2_seconds_per_question`: prefill of the image and prompt tokens plus one decoding
  step per generated token (memory-bound: the weights are read once per token).

With ``at_test: none`` (or no fusion) the test needs no teacher: ``fps_teacher == fps`` and
``teacher_qpf == 0``. The CLIP text encoding of the descriptions is left out of the teacher's
cost (one text-tower pass per distinct description, small next to the MLLM).
"""

from __future__ import annotations

import time
from functools import cache

import numpy as np

from sage_model.data.store import FeatureStore

TIMED_QUESTIONS = 64
ASMV2_PARAMS = 13e9
ASMV2_IMAGE_TOKENS = 576  # LLaVA-1.5: CLIP ViT-L/14 at 336 px -> 24 x 24 patch tokens
ASMV2_PROMPT_TOKENS = 80  # system prompt + question, about


def teacher_questions(store: FeatureStore, rows: np.ndarray) -> int:
    """Distinct questions the offline teacher asks for ``rows`` of ``store`` (per video, deduplicated)."""
    from sage_model.features.teacher import plan_questions

    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return 0
    video = store.rows.video_id[rows]
    total = 0
    for vid in dict.fromkeys(video.tolist()):
        mine = np.sort(rows[video == vid])
        total += len(plan_questions(np.asarray(store.boxes[mine]), np.asarray(store.keyframes[mine])).keys)
    return total


@cache
def tiny_teacher_seconds_per_question(n: int = TIMED_QUESTIONS) -> float:
    """Wall seconds per question of the tiny BLIP-2 teacher (one batch of warm-up, then ``n`` timed).

    Measured once per process; the frame is random (the tiny model's speed does not depend on it).
    """
    from sage_model.features.teacher_models import (
        PERSPECTIVES,
        DescriptionRequest,
        build_tiny_backend,
        default_generation,
        describe,
    )

    backend = build_tiny_backend(default_generation("tiny"))
    frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    sub, obj = np.array([0.1, 0.1, 0.5, 0.6], np.float32), np.array([0.3, 0.2, 0.9, 0.8], np.float32)
    requests = [DescriptionRequest(frame, sub, obj, PERSPECTIVES[i % 4]) for i in range(n)]
    describe(backend, requests[: backend.generation.batch_size])  # warm-up
    tic = time.perf_counter()
    describe(backend, requests)
    return (time.perf_counter() - tic) / n


def asmv2_seconds_per_question(
    generated_tokens: int = 48,
    *,
    params: float = ASMV2_PARAMS,
    prompt_tokens: int = ASMV2_IMAGE_TOKENS + ASMV2_PROMPT_TOKENS,
    bytes_per_param: float = 2.0,
    memory_bandwidth: float = 1.0e12,
    flops: float = 1.5e14,
) -> float:
    """A roofline estimate of one ASMv2 answer (batch 1): prefill + ``generated_tokens`` decoding steps.

    ``prefill = 2 * params * prompt_tokens / flops`` (compute-bound), ``step = params *
    bytes_per_param / memory_bandwidth`` (memory-bound). Defaults: fp16 on an RTX 4090-class GPU
    (about 1 TB/s, 150 TFLOP/s dense fp16 achieved), 48 new tokens (our teacher's default) ->
    about 0.12 + 48 x 0.026 = 1.4 s per question.
    """
    prefill = 2.0 * params * prompt_tokens / flops
    step = params * bytes_per_param / memory_bandwidth
    return prefill + generated_tokens * step


def fps_with_teacher(frames: int, model_seconds: float, questions: int, seconds_per_question: float) -> float:
    """Frames per second of model + teacher: ``frames / (model_seconds + questions * s_per_q)``."""
    return frames / max(model_seconds + questions * seconds_per_question, 1e-9)
