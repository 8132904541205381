"""Where training checkpoints live and what a damaged one does (issue #17 item 8).

The trainer writes its checkpoint atomically, so a kill mid-write leaves the previous one whole;
an unreadable checkpoint is reported and training starts over. The harness sends checkpoints to
``--checkpoint-dir`` (default ``<results-dir>/.checkpoints``), which no trial id depends on, and
removes a trial's checkpoint once its result is recorded. The multi-node resume itself is
tests/test_multinode_resume.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.runner import RunOptions, plan_study
from harness.spec import load_study
from harness.trial import execute_trial, remove_checkpoint, trial_checkpoint_dir, work_entry
from sage_model.records import EpochReport, ExperimentResult, Metric
from sage_model.train.trainer import CHECKPOINT_NAME
from tests.reliability_support import write_study
from tests.test_train_trainer import run, state

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip():
    from sage_model.clip import build_tiny_clip

    return build_tiny_clip()


def test_an_unreadable_checkpoint_is_reported_and_training_starts_from_epoch_one(
    clip: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference, ref_summary = run(clip, tmp_path / "fresh")
    work = tmp_path / "damaged"
    work.mkdir()
    (work / CHECKPOINT_NAME).write_bytes(b"PK\x03\x04 half a torch zip archive")  # a copy cut short
    reports: list[EpochReport] = []
    with caplog.at_level(logging.WARNING, logger="sage_model.train.trainer"):
        model, summary = run(clip, work, on_epoch=reports.append)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreadable checkpoint" in warnings[0] and str(work) in warnings[0]
    assert summary.resumed_from is None
    assert [(r.stage, r.epoch) for r in reports] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [r.metrics["train/loss"] for r in summary.history] == [
        r.metrics["train/loss"] for r in ref_summary.history
    ]
    for key, value in state(reference).items():
        assert torch.equal(value, state(model)[key]), key
    assert torch.load(work / CHECKPOINT_NAME, weights_only=False)["epoch"] == 2  # rewritten whole


def test_a_temp_file_left_by_a_kill_mid_write_does_not_disturb_the_resume(clip: Any, tmp_path: Path) -> None:
    class Interrupt(Exception):
        pass

    def crash_after_first_epoch(report: EpochReport) -> None:
        if (report.stage, report.epoch) == (1, 2):
            raise Interrupt

    with pytest.raises(Interrupt):
        run(clip, tmp_path, on_epoch=crash_after_first_epoch)
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert (saved["stage"], saved["epoch"]) == (1, 1)
    (tmp_path / f".{CHECKPOINT_NAME}.tmp").write_bytes(b"\x80\x02 a pickle cut off by SIGKILL")
    after: list[EpochReport] = []
    _, summary = run(clip, tmp_path, on_epoch=after.append)
    assert summary.resumed_from == (1, 1)
    assert [(r.stage, r.epoch) for r in after] == [(1, 2), (2, 1), (2, 2)]


def _capturing_experiment(
    cfg: Any, *, work_dir: Path, on_epoch: Any = None, checkpoint_dir: Path | None = None
):
    (Path(work_dir) / "checkpoint_dir.txt").write_text(str(checkpoint_dir))
    return ExperimentResult([Metric("predcls", "all", "map", 1.0)], {}, "d", "t", True, 1, "cpu", 0.0)


def _old_style_experiment(cfg: Any, *, work_dir: Path, on_epoch: Any = None):
    return ExperimentResult([Metric("predcls", "all", "map", 2.0)], {}, "d", "t", True, 1, "cpu", 0.0)


def test_the_checkpoint_dir_is_outside_the_trial_id_and_reaches_the_experiment(tmp_path: Path) -> None:
    study = load_study(write_study(tmp_path, "ckpt", [2]))
    here = RunOptions(run_dir=tmp_path / "runs", results_dir=tmp_path / "results")
    shared = RunOptions(
        run_dir=tmp_path / "runs", results_dir=tmp_path / "results", checkpoint_dir=tmp_path / "nfs"
    )
    assert here.checkpoint_root == tmp_path / "results" / ".checkpoints"
    [trial] = plan_study(study, here).trials
    assert [t.trial_id for t in plan_study(study, shared).trials] == [trial.trial_id]

    messages: list[dict[str, Any]] = []
    work_entry((trial, str(tmp_path / "runs"), _capturing_experiment, str(tmp_path / "nfs")), messages.append)
    work = tmp_path / "runs" / "trials" / "ckpt" / trial.trial_id
    assert messages[-1]["kind"] == "result"
    assert (work / "checkpoint_dir.txt").read_text() == str(tmp_path / "nfs" / "ckpt" / trial.trial_id)
    assert trial_checkpoint_dir(tmp_path / "nfs", trial) == tmp_path / "nfs" / "ckpt" / trial.trial_id

    messages.clear()  # an experiment function written before checkpoint_dir existed still runs
    execute_trial(trial, tmp_path / "runs", messages.append, _old_style_experiment, tmp_path / "nfs")
    assert [m["kind"] for m in messages] == ["result"]


def test_a_recorded_trials_checkpoint_is_removed(tmp_path: Path) -> None:
    study = load_study(write_study(tmp_path, "gone", [2]))
    [trial] = plan_study(study, RunOptions()).trials
    folder = trial_checkpoint_dir(tmp_path / "ckpt", trial)
    folder.mkdir(parents=True)
    (folder / CHECKPOINT_NAME).write_bytes(b"x")
    remove_checkpoint(None, trial)  # no root: checkpoints stay where the experiment put them
    assert folder.exists()
    remove_checkpoint(tmp_path / "ckpt", trial)
    assert not folder.exists()
    remove_checkpoint(tmp_path / "ckpt", trial)  # already gone: nothing to do, no error
