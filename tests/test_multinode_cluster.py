"""`harness run --address`: a study across a real two-node Ray cluster built on this machine.

Two raylets on 127.0.0.1 (``ray start --head`` and ``ray start --address``, one CPU each, the
second with its own ``node2`` resource), token authentication on, a private temp dir (so no other
Ray on the machine can join or be joined), and a real MLflow server as the tracking store. The
driver is a separate process, as `harness run` would be. Teardown stops exactly the processes
this module started: the two blocking ``ray start`` processes (Ray fate-shares their daemons)
and anything left whose command line names the private temp dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.results import read_results
from harness.tracking import Tracker
from tests.reliability_support import PROJECT_ROOT, QUIET_ENV, free_port, mlflow_server, wait_for, write_study

pytestmark = pytest.mark.slow  # real processes, Ray and MLflow servers: about a minute or more

RAY = shutil.which("ray")

DRIVER = """\
import json, sys
from pathlib import Path
import ray
from harness.runner import RunOptions, run_study
from harness import scheduling
from tests.reliability_support import barrier_experiment

study, runs, results, address = sys.argv[1:5]
options = RunOptions(run_dir=Path(runs), results_dir=Path(results), address=address)
outcome = run_study(study, options, experiment_fn=barrier_experiment)
with scheduling.ray_cluster(address) as cluster:  # after the study: who is in the cluster
    nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    dead_url = scheduling.unreachable_from_nodes("http://127.0.0.1:9/health", timeout_s=3)
print("OUTCOME " + json.dumps({
    "trials": [[t.trial_id, t.status, t.node_id, t.error] for t in outcome.trials],
    "tracking_errors": outcome.tracking_errors, "nodes": nodes, "dead_url": dead_url,
}), flush=True)
sys.exit(outcome.exit_code)
"""


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    temp_dir: Path


def _cluster_env() -> dict[str, str]:
    env = {**os.environ, **QUIET_ENV, "PYTHONPATH": str(PROJECT_ROOT)}
    env["RAY_AUTH_MODE"] = "token"  # Ray 2.60's cluster authentication, with a token of our own
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # "0" would forbid `ray start --address`
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return env


def _ray_start(temp_dir: Path, log: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    ports = [free_port() for _ in range(6)]
    command = [
        str(RAY), "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", f"--temp-dir={temp_dir}",
        "--disable-usage-stats", "--object-store-memory=100000000",
        f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
        f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
        f"--runtime-env-agent-port={ports[4]}", f"--metrics-export-port={ports[5]}", *args,
    ]  # fmt: skip
    with open(log, "wb") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_blocking(process: subprocess.Popen, log: Path) -> None:
    wait_for(
        lambda: "will now block" in log.read_text(errors="replace") or process.poll() is not None,
        300,
        str(log),
    )
    assert process.poll() is None, log.read_text(errors="replace")[-3000:]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _kill_leftovers(temp_dir: Path) -> list[int]:
    """PIDs of processes whose command line names our private temp dir, each killed by its PID."""
    listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return sigkill_each(
        [int(line.split(None, 1)[0]) for line in listing.splitlines() if str(temp_dir) in line]
    )


def sigkill_each(pids: list[int]) -> list[int]:
    """SIGKILL each PID (one already gone is fine); returns ``pids``."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


@contextlib.contextmanager
def two_node_cluster(
    tmp_path_factory: pytest.TempPathFactory, prefix: str, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[Cluster, subprocess.Popen]]:
    """A head and a worker node (`ray start`, one CPU each; the worker has the resource `node2`),
    stopped and cleaned up on exit; yields the cluster and the worker's `ray start` process."""
    if RAY is None:
        pytest.skip("the `ray` command is not installed")
    temp_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short: unix socket paths are limited
    logs = tmp_path_factory.mktemp("ray-logs")
    env, port = {**_cluster_env(), **(extra_env or {})}, free_port()
    head = _ray_start(
        temp_dir, logs / "head.log", env, "--head", f"--port={port}", "--include-dashboard=false"
    )
    worker = None
    try:
        _wait_blocking(head, logs / "head.log")
        worker = _ray_start(
            temp_dir, logs / "worker.log", env, f"--address=127.0.0.1:{port}", '--resources={"node2": 1}'
        )
        _wait_blocking(worker, logs / "worker.log")
        yield Cluster(f"127.0.0.1:{port}", env, temp_dir), worker
    finally:
        for process in (worker, head):
            if process is not None:
                _stop(process)
        _kill_leftovers(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with two_node_cluster(tmp_path_factory, "rt") as (found, _):
        yield found


def test_a_study_runs_on_both_nodes_and_every_result_reaches_the_driver(
    cluster: Cluster, tmp_path: Path
) -> None:
    study = write_study(tmp_path, "twonode", [2, 4], seeds="[0, 1]")
    runs, results = tmp_path / "runs", tmp_path / "results"
    with mlflow_server(tmp_path / "mlflow") as server:
        env = {**cluster.env, "MLFLOW_TRACKING_URI": server.uri}
        driver = subprocess.run(
            [sys.executable, "-c", DRIVER, str(study), str(runs), str(results), cluster.address],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert driver.returncode == 0, (driver.stdout + driver.stderr)[-4000:]
        report = json.loads(driver.stdout.split("OUTCOME ", 1)[1])
        tracker = Tracker(server.uri, runs)
        mlflow_runs = tracker.trial_runs(tracker.client.get_experiment_by_name("twonode").experiment_id)

    nodes = report["nodes"]
    assert len(nodes) == 2
    worker_node = next(node for node, resources in nodes.items() if resources.get("node2") == 1.0)
    trials = report["trials"]
    assert [status for _, status, _, _ in trials] == ["finished"] * 4, trials
    used = {node for _, _, node, _ in trials}
    assert used == set(nodes) and worker_node in used, f"trials ran on {used}, cluster nodes {set(nodes)}"
    role = {node: "worker (node2)" if node == worker_node else "head" for node in nodes}
    print("node of each trial:", {trial_id: f"{node[:12]} {role[node]}" for trial_id, _, node, _ in trials})

    frame = read_results(results, "twonode")  # the driver wrote every result, in one place
    assert sorted(frame["trial_id"].to_list()) == sorted(t[0] for t in trials)
    assert sorted(frame["value"].to_list()) == [20.0, 21.0, 40.0, 41.0]
    assert {r.data.tags["trial_id"]: (r.info.status, r.data.tags["ray_node_id"]) for r in mlflow_runs} == {
        trial_id: ("FINISHED", node) for trial_id, _, node, _ in trials
    }
    assert report["tracking_errors"] == []
    assert set(report["dead_url"]) == set(nodes)  # the reachability probe runs on every node


def test_address_with_a_local_tracking_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study = write_study(tmp_path, "needserver", [2])
    result = CliRunner().invoke(
        app, ["run", str(study), "--address", "10.0.0.1:6379", "--run-dir", str(tmp_path / "runs"),
              "--results-dir", str(tmp_path / "results")],
    )  # fmt: skip
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: --address: a study on a Ray cluster needs an MLflow tracking server reachable from every node, "
        f"but MLFLOW_TRACKING_URI is 'sqlite:///{(tmp_path / 'runs').resolve()}/mlflow.db'"
    )
    assert not (tmp_path / "runs" / "trials").exists()
