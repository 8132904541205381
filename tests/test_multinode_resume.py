"""A trial whose node dies mid-training is retried on the other node and resumes from its last
saved epoch, with the numbers of an uninterrupted trial (issue #17 item 8).

A real two-node Ray cluster on this machine (as in tests/test_multinode_cluster.py), the real
``run_experiment`` on the embedded synthetic data, and ``--checkpoint-dir`` on a folder both nodes
see. The driver pins a one-CPU placeholder actor to the head node, so the first attempt must run
on the worker node (``node2``); the experiment pauses in its report of stage 1 epoch 2 (after the
epoch-1 checkpoint, before the epoch-2 one) while ``<run_dir>/HOLD`` exists. The test then kills
every process of the worker node with SIGKILL, removes HOLD and lets the driver free the head
node once Ray has declared node2 dead; ``--retries 1`` starts the trial again there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability_support import PROJECT_ROOT, mark, read_marks, run_dir_of, wait_for

pytestmark = pytest.mark.slow  # real Ray nodes and two real trials: about a minute or more

STUDY = """\
name: resume
version: 1
description: "a trial retried on another node resumes from its checkpoint"
base:
  train.stage1_epochs: 3
  train.stage2_epochs: 2
  data.synthetic_videos: 4
  data.max_train_videos: 1
  data.max_test_videos: 1
  eval.tasks: [predcls]
variants:
  - {name: "6", overrides: {}}
seeds: [0]
datasets: [vidvrd]
resources: {cpus: 1, gpus: 0}
"""

DRIVER = """\
import json, sys, threading, time
from pathlib import Path
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from harness import scheduling
from harness.runner import RunOptions, run_study
from tests.test_multinode_resume import paused_experiment

study, runs, results, checkpoints, address = sys.argv[1:6]
ray.init(address=address, runtime_env={"env_vars": scheduling.WORKER_ENV}, logging_level="ERROR",
         log_to_driver=False)
nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
head = next(node for node, resources in nodes.items() if "node2" not in resources)
worker = next(node for node in nodes if node != head)

@ray.remote(num_cpus=1)
class Placeholder:
    def ready(self):
        return True

placeholder = Placeholder.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
ray.get(placeholder.ready.remote())

def free_the_head():
    while not (Path(runs) / "RELEASE").exists() or any(
        n["NodeID"] == worker and n["Alive"] for n in ray.nodes()
    ):
        time.sleep(0.2)
    ray.kill(placeholder)

threading.Thread(target=free_the_head, daemon=True).start()

class Epochs:
    def __init__(self):
        self.seen = []
    def planned(self, trials, skipped): pass
    def phase(self, text): pass
    def started(self, trial_id): pass
    def epoch(self, trial_id, stage, epoch, metrics): self.seen.append([stage, epoch, metrics["train/loss"]])
    def ended(self, outcome): pass

events = Epochs()
options = RunOptions(run_dir=Path(runs), results_dir=Path(results), checkpoint_dir=Path(checkpoints), retries=1)
outcome = run_study(study, options, experiment_fn=paused_experiment, events=events)
print("OUTCOME " + json.dumps({
    "head": head, "worker": worker, "epochs": events.seen,
    "trials": [[t.trial_id, t.status, t.node_id, t.attempts, t.error, t.metrics] for t in outcome.trials],
}), flush=True)
sys.exit(outcome.exit_code)
"""


def paused_experiment(
    cfg: Any, *, work_dir: Path, on_epoch: Any = None, checkpoint_dir: Path | None = None
) -> Any:
    """The real experiment on one torch thread, pausing (while ``<run_dir>/HOLD`` exists) in the
    report of stage 1 epoch 2, i.e. after the epoch-1 checkpoint and before the epoch-2 one. The
    pause leaves ``marks/paused/<trial>`` = ``<pid> <ray node id>``."""
    import ray
    import torch

    from sage_model.experiment import run_experiment

    torch.set_num_threads(1)  # the reference in the test runs on one thread too
    run_dir = run_dir_of(work_dir)

    def report(epoch: Any) -> None:
        if (epoch.stage, epoch.epoch) == (1, 2) and (run_dir / "HOLD").exists():
            mark(run_dir, "paused", work_dir, f"{os.getpid()} {ray.get_runtime_context().get_node_id()}")
            wait_for(lambda: not (run_dir / "HOLD").exists(), 600, "HOLD to be removed")
        if on_epoch is not None:
            on_epoch(epoch)

    return run_experiment(cfg, work_dir=work_dir, on_epoch=report, checkpoint_dir=checkpoint_dir)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, str], subprocess.Popen]]:
    """Head and worker node (one CPU each); yields (address, env, the worker's `ray start`)."""
    from tests.test_multinode_cluster import two_node_cluster

    # a lost node is declared dead after ~10 s instead of ~30 s (Ray's system config, read from env)
    fast_health = {"RAY_health_check_period_ms": "2000", "RAY_health_check_failure_threshold": "5"}
    with two_node_cluster(tmp_path_factory, "rr", fast_health) as (found, worker):
        yield found.address, found.env, worker


def _kill_session(session: int) -> list[int]:
    """SIGKILL every process of ``session`` (the worker node's `ray start`, its raylet, agents and
    Ray workers: started with their own session, they share it); returns their PIDs."""
    listing = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    from tests.test_multinode_cluster import sigkill_each

    return sigkill_each(
        [int(pid) for pid, sid in (line.split() for line in listing.splitlines()) if int(sid) == session]
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")  # a zombie is dead


def test_a_trial_retried_on_the_other_node_resumes_from_its_last_saved_epoch(
    cluster: tuple[str, dict[str, str], subprocess.Popen], tmp_path: Path
) -> None:
    import torch

    from sage_model.config import ExperimentConfig
    from sage_model.experiment import WEIGHTS_FILE, run_experiment
    from sage_model.train.trainer import CHECKPOINT_NAME

    address, env, worker_node = cluster
    study = tmp_path / "resume.yaml"
    study.write_text(STUDY)
    runs, results, checkpoints = tmp_path / "runs", tmp_path / "results", tmp_path / "shared-checkpoints"
    runs.mkdir()
    (runs / "HOLD").touch()
    log = tmp_path / "driver.log"
    with open(log, "wb") as out:
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(study), str(runs), str(results), str(checkpoints), address],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(
            lambda: read_marks(runs, "paused") or driver.poll() is not None, 300, "the first attempt to pause"
        )
        assert driver.poll() is None, log.read_text()[-3000:]
        [(trial_id, where)] = read_marks(runs, "paused").items()
        pid = int(where.split()[0])
        saved = torch.load(checkpoints / "resume" / trial_id / CHECKPOINT_NAME, weights_only=False)
        assert (saved["stage"], saved["epoch"]) == (1, 1)

        killed = _kill_session(worker_node.pid)  # the worker node's `ray start` leads its own session
        assert pid in killed, f"the paused trial {pid} is not a process of the worker node {killed}"
        wait_for(lambda: not _alive(pid), 60, f"trial process {pid} to die")
        (runs / "HOLD").unlink()
        (runs / "RELEASE").touch()  # the driver frees the head node once Ray has declared node2 dead

        # meanwhile, the same config uninterrupted, on one thread as the trial
        work = runs / "trials" / "resume" / trial_id
        config = ExperimentConfig.model_validate_json((work / "config.json").read_text())
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            curve: list[Any] = []
            reference = run_experiment(config, work_dir=tmp_path / "reference", on_epoch=curve.append)
        finally:
            torch.set_num_threads(before)
        assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=60)

    report = json.loads(log.read_text().split("OUTCOME ", 1)[1].splitlines()[0])
    [[_, status, node, attempts, error, metrics]] = report["trials"]
    assert (status, attempts, error) == ("finished", 2, None)
    assert where.split()[1] == report["worker"] and node == report["head"]  # attempt 1 on node2, 2 on head
    # the retry began with epoch 2: epoch 1 was not trained again
    assert [e[:2] for e in report["epochs"]] == [[1, 1], [1, 2], [1, 3], [2, 1], [2, 2]]
    trial_log = (work / "trial.log").read_text()  # the retry's log (each attempt rewrites it)
    assert (
        f"resuming from {checkpoints / 'resume' / trial_id / CHECKPOINT_NAME} (stage 1, epoch 1)" in trial_log
    )

    # one torch thread on both sides, same machine: the same float operations in the same order,
    # so the tolerances allow for nothing more than the last bits of a sum. The training losses
    # (attempt 1's epoch 1, then the retry's) and the trained weights are the uninterrupted ones;
    # the final metrics too (this tiny trial scores 0 on its one test video, so they alone would
    # prove little).
    assert [e[2] for e in report["epochs"]] == pytest.approx(
        [r.metrics["train/loss"] for r in curve], rel=1e-6
    )
    resumed_weights = torch.load(work / WEIGHTS_FILE, weights_only=False)
    reference_weights = torch.load(reference.artifacts["weights"], weights_only=False)
    assert resumed_weights.keys() == reference_weights.keys()
    for key, value in reference_weights.items():
        assert torch.allclose(resumed_weights[key], value, rtol=1e-5, atol=1e-7), key
    expected = {m.key: m.value for m in reference.metrics}
    assert set(metrics) == set(expected)
    assert metrics == pytest.approx(expected, abs=1e-4)
    assert not (checkpoints / "resume" / trial_id).exists()  # recorded, so its checkpoint is gone
    assert not list(runs.rglob(CHECKPOINT_NAME))  # and none was written to a node-local work dir
