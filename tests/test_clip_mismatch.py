"""Features, teacher texts and model share one CLIP, or the run stops before any trial (exit 2).

A root's stores record the CLIP that made them (``feature_model``); ``harness run`` compares it with
the model's CLIP and refuses a mismatch with one line naming both fingerprints and the fix. The
same check runs inside every trial (``run_experiment``), for callers without the harness.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.results import read_results
from sage_model.clip import build_vitb16_random, preset_identity, save_clip_checkpoint
from sage_model.compat import check_clip_matches, clip_mismatch
from sage_model.config import ExperimentConfig
from sage_model.data import DatasetRoot, ensure_synthetic
from sage_model.experiment import run_experiment

STUDY = """\
name: clip_match
version: 1
description: "one PredCls trial"
base:
  eval.tasks: [predcls]
variants:
  - {name: "Ours", overrides: {model.prompt.strategy: class_aware}}
seeds: [0]
datasets: [vidvrd]
resources: {cpus: 1, gpus: 0}
"""

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("study") / "clip_match.yaml"
    path.write_text(STUDY)
    return path


@pytest.fixture(scope="module")
def wide_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """512-d synthetic features made without a checkpoint (the tiny CLIP's semantics, lifted)."""
    out = tmp_path_factory.mktemp("wide") / "root"
    code, output = invoke("data", "synth", "--out", out, "--videos", "4", "--feature-dim", "512")
    assert code == 0, output
    return out


def test_wide_features_with_the_tiny_clip_exit_2_with_one_line(
    study: Path, wide_root: Path, tmp_path: Path
) -> None:
    code, output = invoke("run", study, "--smoke", "--data-root", wide_root, "--run-dir", tmp_path / "runs")
    assert code == 2, output
    error = [line for line in output.splitlines() if line.startswith("error")]
    assert len(error) == 1, output
    tiny = preset_identity("sage_tiny")["fingerprint"]
    assert "512-d" in error[0] and "64-d" in error[0] and tiny in error[0] and "--clip-checkpoint" in error[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.parquet"))


def test_the_trial_itself_refuses_a_mismatch(wide_root: Path, tmp_path: Path) -> None:
    cfg = ExperimentConfig.model_validate({"data": {"root": str(wide_root)}, "eval": {"tasks": ["predcls"]}})
    with pytest.raises(
        ValueError,
        match=r"data.root: .* holds features of CLIP synthetic-mixing \(fingerprint \w+, 512-d\) but the model.s CLIP is sage_tiny",
    ):
        run_experiment(cfg, work_dir=tmp_path)


def test_mismatch_kinds() -> None:
    model = {"fingerprint": "a", "embed_dim": 512, "quick_gelu": True, "name": "sage_vitb16"}
    assert clip_mismatch(model, {"fingerprint": "a"}, 512) is None
    assert clip_mismatch(model, {"fingerprint": "b"}, 512) == "fingerprint"
    assert clip_mismatch(model, {"fingerprint": "a"}, 64) == "width"
    assert clip_mismatch(model, {"fingerprint": "a", "quick_gelu": False}, 512) == "activation"


def test_a_teacher_encoded_by_another_clip_is_refused(tmp_path: Path) -> None:
    root = DatasetRoot.open(ensure_synthetic("vidvrd", tmp_path / "root", 2, seed=0))
    store, teacher = root.feature_store("train", "gt"), root.teacher_store("asmv2", "train", "gt")
    model = preset_identity("sage_tiny")
    check_clip_matches(model, store, teacher)  # synthetic teachers record no encoder: the store decides
    teacher.manifest["teacher_model"] = {"text_encoder": {"name": "sage_vitb16", "fingerprint": "f00d"}}
    with pytest.raises(
        ValueError, match=r"data.teacher: .*\(fingerprint f00d\) but the model's CLIP is sage_tiny"
    ):
        check_clip_matches(model, store, teacher)


@pytest.fixture
def every_core(monkeypatch: pytest.MonkeyPatch):
    """Every core for one test: ViT-B/16's text tower (512 wide, 77 tokens, every class name) is
    the one large model in this file and runs about twice as fast on two cores. Torch threads here
    (`data synth` runs in this process) and OMP_NUM_THREADS for the Ray worker of its one trial
    (Ray sets 1 per requested CPU unless the variable is set)."""
    import torch

    cores = os.cpu_count() or 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores))
    before = torch.get_num_threads()
    torch.set_num_threads(cores)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_clip_checkpoint(
        build_vitb16_random(seed=1), tmp_path_factory.mktemp("ckpt") / "random-vitb16.pt"
    )


@pytest.mark.slow
@pytest.mark.usefixtures("every_core")
def test_a_root_made_with_a_checkpoint_runs_only_with_that_checkpoint(
    study: Path, checkpoint: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    code, output = invoke(
        "data",
        "synth",
        "--out",
        root,
        "--videos",
        "4",
        "--feature-dim",
        "512",
        "--clip-checkpoint",
        checkpoint,
    )
    assert code == 0, output
    fingerprint = preset_identity("sage_vitb16", checkpoint)["fingerprint"]
    code, output = invoke("run", study, "--smoke", "--data-root", root, "--run-dir", tmp_path / "no")
    assert (
        code == 2
        and f"pass --clip-checkpoint with the checkpoint that made them (fingerprint {fingerprint})" in output
    )
    code, output = invoke(
        "run", study, "--smoke", "--data-root", root, "--clip-checkpoint", checkpoint,
        "--run-dir", tmp_path / "runs", "--results-dir", tmp_path / "results",
    )  # fmt: skip
    assert code == 0, output
    rows = read_results(tmp_path / "results", "clip_match")
    assert set(rows["metric"]) >= {"map", "r50"} and rows["synthetic"].all()
    assert all("sage_vitb16" in c for c in rows["config_json"])
