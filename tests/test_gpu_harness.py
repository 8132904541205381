"""``harness run --smoke`` on one GPU shared by two trials (``gpus: 0.5``), through the console script.

Marked ``gpu``: skipped without CUDA. The run is limited to the first GPU
(``CUDA_VISIBLE_DEVICES``), so Ray must pack both trials onto it; both must run on CUDA and at
the same time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch

from harness.results import read_results

pytestmark = [pytest.mark.gpu]

STUDY = """\
name: gpu_share
version: 1
description: "two trials on one GPU"
base:
  train.stage1_epochs: 1
  train.stage2_epochs: 1
  eval.tasks: [sgdet, predcls]
variants:
  - name: "Ours"
    overrides: {model.prompt.strategy: class_aware}
  - name: "Image-Cond"
    overrides: {model.prompt.strategy: image_cond}
seeds: [0]
datasets: [vidvrd]
resources: {cpus: 1, gpus: 0.5}
"""


def _interval(row: dict) -> tuple[float, float]:
    end = datetime.fromisoformat(row["finished_at"]).timestamp()
    return end - float(row["wall_s"]), end


def test_two_smoke_trials_share_one_gpu(gpu_device: torch.device, tmp_path: Path) -> None:
    study = tmp_path / "gpu_share.yaml"
    study.write_text(STUDY)
    env = dict(os.environ, SAGE_DATA_CACHE=str(tmp_path / "data"), MLFLOW_TRACKING_URI="")
    if gpu_device.type == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    command = [sys.executable, "-c", "from harness.cli import main; main()", "run", str(study), "--smoke",
               "--run-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_results(tmp_path / "results", "gpu_share").unique("trial_id").to_dicts()
    assert sorted(r["variant"] for r in rows) == ["Image-Cond", "Ours"]
    assert all(r["device"].startswith(f"{gpu_device.type}:") for r in rows), [r["device"] for r in rows]
    (a_start, a_end), (b_start, b_end) = (_interval(r) for r in rows)
    assert a_start < b_end and b_start < a_end, "the two half-GPU trials did not run at the same time"
