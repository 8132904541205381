"""Real-data feature pipeline (issue #8): videos -> CLIP region features -> feature store, and the
offline MLLM teacher -> teacher store. Recipe and design: docs/real_data.md.

* :mod:`~sage_model.features.video`: PyAV decoding of the keyframes a video's samples need.
* :mod:`~sage_model.features.regions`: frozen CLIP image tower, ``roi_align`` (paper) or ``crop``
  (OV-MMP code) region features.
* :mod:`~sage_model.features.extract`: per-video extraction into resumable shards, store assembly.
* :mod:`~sage_model.features.teacher_models` / :mod:`~sage_model.features.teacher`: the four-perspective
  descriptions (asmv2, blip2, tiny) and their CLIP text features.
* :mod:`~sage_model.features.runner`: whole-split runs over a pluggable mapper (in-process or Ray).
* :mod:`~sage_model.features.root`: the dataset root (``dataset.json``, annotation link, tracklets).

Nothing here imports Ray; ``harness.pipelines`` runs the workers on Ray Data actors.
"""
