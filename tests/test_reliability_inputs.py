"""Bad input stops `harness run` before any trial: one line naming the file and field, exit 2.

Every case is a real file on disk: a study YAML with a mistake, a dataset root whose annotation
or feature file was corrupted, a checkpoint path that does not exist, a results folder on a
read-only or full filesystem (real tmpfs mounts, skipped where mounting is not allowed).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.expand import expand_study
from harness.preflight import check_trial_inputs
from harness.spec import load_study
from tests.reliability_support import write_study

GOOD = """\
name: {name}
version: 1
description: "input test"
variants:
  - name: "2"
    overrides: {{model.prompt.insert_layer: 2}}
seeds: [0]
datasets: [vidvrd]
table:
  paper: "Table 8"
  columns:
    - {{name: all_predcls, split: all, task: predcls, metric: map}}
"""


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def assert_one_line_error(code: int, output: str, *expected: str) -> str:
    """Exit 2, exactly one ``error:`` line containing every expected piece, no traceback."""
    assert code == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "Traceback" not in output
    for piece in expected:
        assert piece in errors[0], (piece, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny but complete real-layout dataset root (annotations, gt/det stores, a teacher)."""
    from sage_model.clip import preset_identity
    from sage_model.data import (
        PairSamples,
        load_vocabulary,
        plan_pair_samples,
        write_annotation_folder,
        write_feature_store,
        write_teacher_store,
    )
    from sage_model.data.synth import generate_video

    # features made with the CLIP the default model uses (the run refuses any other: sage_model.compat)
    clip = preset_identity("sage_tiny")
    root = tmp_path_factory.mktemp("data") / "root"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"dataset": "vidvrd", "synthetic": True}))
    vocab, rng = load_vocabulary("vidvrd"), np.random.default_rng(0)
    for split in ("train", "test"):
        videos = [generate_video(rng, vocab, split, i) for i in range(2)]
        write_annotation_folder(root / "annotations", "vidvrd", split, videos)
        samples = PairSamples.concat([plan_pair_samples(v, vocab) for v in videos], len(vocab.predicates))
        for source in ("gt", "det"):
            visual = rng.standard_normal((len(samples), samples.keyframes.shape[1], 4, clip["embed_dim"]))
            visual = visual.astype(np.float16)
            store = write_feature_store(
                root / "features" / split / source, samples, visual, dataset="vidvrd", split=split,
                source=source, feature_model=clip, synthetic=True,
            )  # fmt: skip
            write_teacher_store(
                root / "teachers" / "asmv2" / split / source, visual, name="asmv2", store=store,
                teacher_model={"name": "test"}, synthetic=True,
            )  # fmt: skip
    return root


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    return write_study(tmp_path, "inputs", [2])


@pytest.fixture()
def root_copy(dataset_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(dataset_root, tmp_path / "root"))


def run_args(study: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "run",
        str(study),
        "--run-dir",
        str(tmp_path / "runs"),
        "--results-dir",
        str(tmp_path / "results"),
        *extra,
    ]


def assert_no_trial_started(tmp_path: Path) -> None:
    assert not (tmp_path / "runs" / "tune").exists() and not (tmp_path / "runs" / "trials").exists()
    assert not list((tmp_path / "results").rglob("*.parquet"))


# ------------------------------------------------------------------------------ study files


@pytest.mark.parametrize(
    ("mistake", "replace", "line", "field"),
    [
        ("unknown key", ("seeds: [0]", "seeds: [0]\nseedz: [1]"), 8, "seedz: unknown key (did you mean 'seeds'?)"),
        ("wrong type", ("version: 1", "version: one"), 2, "version: Input should be a valid integer"),
        (
            "override path",
            ("model.prompt.insert_layer: 2", "model.prompt.insert_layr: 2"),
            6,
            "model.prompt.insert_layr: unknown field 'insert_layr'",
        ),
        (
            "unknown dataset",
            ("[vidvrd]", "[vidvrd, vidxx]"),
            8,
            "datasets[1]: Input should be 'vidvrd' or 'vidor'",
        ),
        ("unknown metric", ("metric: map", "metric: mAP"), 12, "table.columns[0].metric: unknown metric 'mAP' (did you mean 'map'?)"),
    ],
)
def test_a_study_mistake_names_file_line_and_field(
    tmp_path: Path, mistake: str, replace: tuple[str, str], line: int, field: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.format(name="bad").replace(*replace))
    code, output = invoke(*run_args(path, tmp_path))
    assert_one_line_error(code, output, f"{path}:{line}: ", field)
    assert_no_trial_started(tmp_path)


def test_without_debug_one_line_with_debug_the_traceback(tmp_path: Path) -> None:
    """The real entry point in its own process prints one line; --debug lets the exception out."""
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.format(name="bad").replace("version: 1", "version: one"))
    entry = [sys.executable, "-c", "from harness.cli import main; main()"]
    quiet = subprocess.run(
        [*entry, "run", str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert quiet.returncode == 2
    assert quiet.stderr.strip() == (
        f"error: {path}:2: version: Input should be a valid integer, unable to parse string as an integer"
    )
    loud = CliRunner().invoke(app, ["--debug", "run", str(path)])
    assert loud.exit_code == 1 and isinstance(loud.exception, ValueError)
    assert "version: Input should be a valid integer" in str(loud.exception)


# ------------------------------------------------------------------------------ data files


def test_the_intact_dataset_root_passes_the_checks(dataset_root: Path, study: Path) -> None:
    """The control for the corruption cases below: only the corruption makes them fail."""
    check_trial_inputs(expand_study(load_study(study), env_overrides={"data.root": dataset_root}))


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_annotation_that_is_not_json_is_named(root_copy: Path, study: Path, tmp_path: Path) -> None:
    bad = sorted((root_copy / "annotations" / "train").glob("*.json"))[1]
    _cut_in_half(bad)
    code, output = invoke(*run_args(study, tmp_path, "--data-root", str(root_copy)))
    assert_one_line_error(code, output, "data.root: ", f"{bad}: not valid JSON")
    assert_no_trial_started(tmp_path)


def test_annotation_without_a_key_is_named(root_copy: Path, study: Path, tmp_path: Path) -> None:
    bad = sorted((root_copy / "annotations" / "test").glob("*.json"))[0]
    content = json.loads(bad.read_text())
    del content["subject/objects"]
    bad.write_text(json.dumps(content))
    code, output = invoke(*run_args(study, tmp_path, "--data-root", str(root_copy)))
    assert_one_line_error(code, output, "data.root: ", f"{bad}: key 'subject/objects': missing")


def test_truncated_feature_file_is_named(root_copy: Path, study: Path, tmp_path: Path) -> None:
    bad = root_copy / "features" / "train" / "gt" / "visual.npy"
    _cut_in_half(bad)
    code, output = invoke(*run_args(study, tmp_path, "--data-root", str(root_copy)))
    assert_one_line_error(code, output, "data.root: ", f"{bad}: array 'visual'")
    assert_no_trial_started(tmp_path)


def test_feature_file_of_another_shape_is_named(root_copy: Path, study: Path, tmp_path: Path) -> None:
    """A det store's boxes copied over the gt store's: a valid .npy, the wrong rows."""
    bad = root_copy / "features" / "test" / "gt" / "boxes.npy"
    np.save(bad, np.zeros((3, 3, 2, 4), np.float32))
    code, output = invoke(*run_args(study, tmp_path, "--data-root", str(root_copy)))
    assert_one_line_error(
        code, output, "data.root: ", f"{bad}: array 'boxes' is float32[3, 3, 2, 4], manifest.json says"
    )


def test_teacher_made_for_other_features_is_named(root_copy: Path, study: Path, tmp_path: Path) -> None:
    teacher = root_copy / "teachers" / "asmv2" / "test" / "gt"
    shutil.rmtree(teacher)
    shutil.copytree(root_copy / "teachers" / "asmv2" / "train" / "gt", teacher)
    code, output = invoke(*run_args(study, tmp_path, "--data-root", str(root_copy)))
    assert_one_line_error(
        code, output, "data.root: ", f"{teacher}: teacher 'asmv2' was made for feature store"
    )


def test_missing_checkpoint_is_named_from_the_flag_and_from_the_study(study: Path, tmp_path: Path) -> None:
    missing = tmp_path / "ViT-B-16.pt"
    code, output = invoke(*run_args(study, tmp_path, "--clip-checkpoint", str(missing)))
    assert_one_line_error(code, output, f"--clip-checkpoint: {missing} is not a file")
    in_study = tmp_path / "ckpt.yaml"
    in_study.write_text(
        GOOD.format(name="ckpt").replace(
            "description:",
            f'base: {{model.preset: sage_vitb16, model.clip_checkpoint: "{missing}"}}\ndescription:',
        )
    )
    code, output = invoke(*run_args(in_study, tmp_path))
    assert_one_line_error(code, output, f"model.clip_checkpoint: {missing} does not exist")
    assert_no_trial_started(tmp_path)


# ------------------------------------------------------------------------------ output folders


@contextmanager
def tmpfs(mount_point: Path, options: str) -> Iterator[Path]:
    """A real tmpfs (size-limited or read-only); skip where this process may not mount."""
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_results_dir_under_a_file_is_refused_before_trials(study: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where a folder should be")
    results = tmp_path / "taken" / "results"
    code, output = invoke(
        "run", str(study), "--run-dir", str(tmp_path / "runs"), "--results-dir", str(results)
    )
    assert_one_line_error(code, output, f"--results-dir: {results} is not writable (Not a directory)")
    assert not (tmp_path / "runs" / "tune").exists()


def test_read_only_results_dir_is_refused_before_trials(study: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as mount:
        code, output = invoke(*run_args(study, tmp_path, "--results-dir", str(mount / "results")))
    assert_one_line_error(
        code, output, f"--results-dir: {mount / 'results'} is not writable (Read-only file system)"
    )
    assert not (tmp_path / "runs" / "tune").exists()


def test_full_disk_is_refused_before_trials(study: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "size=4m") as mount:
        (mount / "results").mkdir()
        with open(mount / "filler", "wb") as filler:
            filler.write(b"\0" * 3 * 2**20)  # 1 MiB left: below the free-space floor
            filler.flush()
            code, output = invoke(*run_args(study, tmp_path, "--results-dir", str(mount / "results")))
            line = assert_one_line_error(code, output, f"--results-dir: {mount / 'results'} has ")
            assert re.search(r"has [01]\.\d MiB free, below --min-free-mb 200 ", line), line
            with pytest.raises(OSError, match="No space left on device"):  # now fill it for real
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            code, output = invoke(
                *run_args(study, tmp_path, "--results-dir", str(mount / "results"), "--min-free-mb", "0")
            )
            assert_one_line_error(
                code, output, f"--results-dir: {mount / 'results'} is not writable (the disk is full)"
            )
    assert not (tmp_path / "runs" / "tune").exists()
