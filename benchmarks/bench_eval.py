"""Time sage_model.eval against the official VidVRD-helper evaluation (same numbers, how much faster).

    python benchmarks/bench_eval.py [--helper PATH] [--case DIR] [--repeats 5] [--vidor/--no-vidor]

The official code (xdshang/VidVRD-helper @ 1b4de17) is never part of this repository. It is taken
from, in order: ``--helper PATH``, the ``VIDVRD_HELPER`` environment variable, or
``benchmarks/_vendor/VidVRD-helper`` (git-ignored), which is cloned there when git and the network
allow. Without it the benchmark times our evaluator alone and says why. To supply it by hand:

    git clone https://github.com/xdshang/VidVRD-helper benchmarks/_vendor/VidVRD-helper
    git -C benchmarks/_vendor/VidVRD-helper checkout 1b4de175ce6e7a103d5feaae66b68d32a306a877

(or download that commit's archive anywhere and pass ``--helper``). The helper needs numpy only.

Measured, for the golden ``full`` case (200 VidVRD test videos, 29,805 predictions, 49 MB JSON):
1. in-memory evaluation: official ``evaluate(gt, pred["results"])`` on json-loaded dicts vs our
   ``evaluate_relations`` on our loaded sets with every box parsed beforehand (the same state as the
   official input: all parsed, nothing cached), warm (a second evaluation of the same sets), cold
   (first evaluation after loading, which parses the boxes it needs: part of our "load"), and ours
   on the same plain dicts the official code gets;
2. the whole command in a fresh process: the official command-line evaluator vs ours (load +
   evaluate + print JSON), both through ``python -c``/``-m`` and through ``harness evaluate``;
3. growth: the full case replicated 1x/2x/4x and a VidOR-validation-sized case (835 videos, ~31k GT
   relations, top-200 predictions per video, built by merging six real videos into each one).
Every timing is the minimum over ``--repeats`` runs (medians are printed too); numbers of both
evaluators are compared for every case.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sage_model.eval import evaluate_relations, load_ground_truth, load_predictions  # noqa: E402

HELPER_URL = "https://github.com/xdshang/VidVRD-helper"
HELPER_COMMIT = "1b4de175ce6e7a103d5feaae66b68d32a306a877"
VENDOR = ROOT / "benchmarks" / "_vendor" / "VidVRD-helper"
METRICS = ("mean_ap", "rec_at_50", "rec_at_100", "mprec_at_1", "mprec_at_5", "mprec_at_10")

OURS_COMMAND = """
import json, sys
from sage_model.eval import evaluate_relations, load_ground_truth, load_predictions
m = evaluate_relations(load_ground_truth(sys.argv[1]), load_predictions(sys.argv[2]))
print(json.dumps(m.to_dict()))
"""


# ----------------------------------------------------------------------------------------------
# the official code
# ----------------------------------------------------------------------------------------------


def find_helper(arg: str | None) -> tuple[Path | None, str]:
    """The helper checkout and how it was found (or None and why not)."""
    for candidate, origin in ((arg, "--helper"), (os.environ.get("VIDVRD_HELPER"), "VIDVRD_HELPER")):
        if candidate:
            path = Path(candidate).expanduser().resolve()
            if (path / "evaluation" / "visual_relation_detection.py").is_file():
                return path, f"{origin}: {path}"
            return None, f"{origin} = {path} has no evaluation/visual_relation_detection.py"
    if (VENDOR / "evaluation" / "visual_relation_detection.py").is_file():
        return VENDOR, f"vendored copy {VENDOR}"
    return clone_helper()


def clone_helper() -> tuple[Path | None, str]:
    if shutil.which("git") is None:
        return None, "git is not installed and no --helper/VIDVRD_HELPER was given"
    VENDOR.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["git", "clone", "-q", HELPER_URL, str(VENDOR)], check=True, timeout=120, capture_output=True
        )
        subprocess.run(
            ["git", "-C", str(VENDOR), "checkout", "-q", HELPER_COMMIT],
            check=True,
            timeout=60,
            capture_output=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(VENDOR, ignore_errors=True)
        return None, f"could not clone {HELPER_URL} ({type(exc).__name__}); supply it with --helper PATH"
    return VENDOR, f"cloned {HELPER_URL} @ {HELPER_COMMIT[:7]} into {VENDOR}"


def check_helper_files(helper: Path, expected_json: Path) -> str:
    """Compare the helper's evaluation files with the hashes recorded with the golden case."""
    if not expected_json.is_file():
        return "no expected.json to check the helper files against"
    files = json.loads(expected_json.read_text()).get("official_code", {}).get("files", {})
    bad = []
    for rel, info in files.items():
        if not rel.startswith("evaluation/"):
            continue
        path = helper / rel
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != info["sha256"]:
            bad.append(rel)
    return "helper files match the golden case's official_code hashes" if not bad else f"MISMATCH in {bad}"


def import_official(helper: Path) -> Callable[..., Any]:
    sys.path.insert(0, str(helper))
    from evaluation.visual_relation_detection import evaluate  # type: ignore[import-not-found]

    return evaluate


def official_numbers(result: tuple) -> dict[str, float]:
    mean_ap, rec, prec = result
    values = (mean_ap, rec[50], rec[100], prec[1], prec[5], prec[10])
    return {name: float(v) for name, v in zip(METRICS, values, strict=True)}


# ----------------------------------------------------------------------------------------------
# timing helpers
# ----------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall-clock minimum and median, and the minimum CPU time (user + sys, children included)."""

    wall: float
    median: float
    cpu: float


def timed(fn: Callable[[], Any], repeats: int, setup: Callable[[], None] | None = None) -> tuple[Timing, Any]:
    """Timing of ``fn`` over ``repeats`` runs, and its last result.

    CPU time is reported besides wall time because a shared machine's load inflates wall times
    unevenly; the CPU time of a single-threaded run is what it would take on an idle machine.
    """
    walls, cpus = [], []
    result = None
    for _ in range(repeats):
        if setup is not None:
            setup()
        cpu0 = _cpu()
        start = time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(_cpu() - cpu0)
    return Timing(min(walls), statistics.median(walls), min(cpus)), result


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def quiet(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with contextlib.redirect_stdout(io.StringIO()):
            return fn()

    return run


def run_process(cmd: list[str], cwd: Path | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {done.stderr[-500:]}")
    return done.stdout


def max_diff(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) for k in METRICS)


# ----------------------------------------------------------------------------------------------
# the benchmark parts
# ----------------------------------------------------------------------------------------------


def plain_json(path: Path, work: Path) -> Path:
    """The official CLI reads plain JSON only: gunzip a .gz copy into ``work``."""
    if path.suffix != ".gz":
        return path
    out = work / path.stem
    out.write_bytes(gzip.decompress(path.read_bytes()))
    return out


def in_memory(gt_path: Path, pred_path: Path, official: Callable | None, repeats: int) -> dict[str, Any]:
    """Evaluation alone, inputs already in memory."""
    res: dict[str, Any] = {}
    gt_dict = json.loads(gt_path.read_text())
    pred_dict = json.loads(pred_path.read_text())
    if official is not None:
        res["official"], out = timed(quiet(lambda: official(gt_dict, pred_dict["results"])), repeats)
        res["official_numbers"] = official_numbers(out)
    sets: dict[str, Any] = {}

    def fresh() -> None:
        sets["gt"], sets["pred"] = load_ground_truth(gt_path), load_predictions(pred_path)

    def parsed() -> None:
        fresh()
        sets["gt"].load_all_boxes()
        sets["pred"].load_all_boxes()

    res["ours_parsed"], _ = timed(lambda: evaluate_relations(sets["gt"], sets["pred"]), repeats, setup=parsed)
    res["ours_cold"], _ = timed(lambda: evaluate_relations(sets["gt"], sets["pred"]), repeats, setup=fresh)
    res["ours_warm"], ours = timed(lambda: evaluate_relations(sets["gt"], sets["pred"]), repeats)
    res["ours_numbers"] = {k: getattr(ours, k) for k in METRICS}
    res["ours_dicts"], _ = timed(lambda: evaluate_relations(gt_dict, pred_dict), max(1, repeats // 2))
    res["ours_load"], _ = timed(lambda: (load_ground_truth(gt_path), load_predictions(pred_path)), repeats)
    return res


def whole_command(gt_path: Path, pred_path: Path, helper: Path | None, repeats: int) -> dict[str, Any]:
    """Fresh processes: load + evaluate + print."""
    res: dict[str, Any] = {}
    py = sys.executable
    if helper is not None:
        cmd = [py, "-m", "evaluation.visual_relation_detection", str(gt_path), str(pred_path)]
        res["official_cli"], _ = timed(lambda: run_process(cmd, cwd=helper), repeats)
    ours_cmd = [py, "-c", OURS_COMMAND, str(gt_path), str(pred_path)]
    res["ours_python"], out = timed(lambda: run_process(ours_cmd), repeats)
    res["ours_python_numbers"] = {k: json.loads(out)[k] for k in METRICS}
    harness = shutil.which("harness")
    if harness is not None:
        cli = [harness, "evaluate", str(gt_path), str(pred_path), "--json"]
        res["ours_harness"], _ = timed(lambda: run_process(cli), max(1, repeats // 2))
        res["harness_startup"], _ = timed(lambda: run_process([harness, "--help"]), max(1, repeats // 2))
    return res


def replicate(gt: dict, pred: dict, copies: int) -> tuple[dict, dict]:
    """The case ``copies`` times, video ids suffixed (boxes shared, not copied)."""
    out_gt = {f"{vid}#{c}": rels for c in range(copies) for vid, rels in gt.items()}
    out_pred = {f"{vid}#{c}": rels for c in range(copies) for vid, rels in pred.items()}
    return out_gt, out_pred


def vidor_sized(gt: dict, pred: dict, videos: int = 835, merge: int = 6, top: int = 200) -> tuple[dict, dict]:
    """A VidOR-validation-sized case: each video merges ``merge`` real videos, top-``top`` predictions."""
    sources = [vid for vid, rels in gt.items() if rels]
    out_gt: dict[str, list] = {}
    out_pred: dict[str, list] = {}
    for i in range(videos):
        members = [sources[(i * merge + j) % len(sources)] for j in range(merge)]
        vid = f"vidor_{i:04d}"
        out_gt[vid] = [r for m in members for r in gt[m]]
        merged = [r for m in members for r in pred.get(m, [])]
        out_pred[vid] = sorted(merged, key=lambda r: r["score"], reverse=True)[:top]
    return out_gt, out_pred


def growth(
    gt_path: Path, pred_path: Path, official: Callable | None, repeats: int, vidor: bool, work: Path
) -> list[dict]:
    """Cost of both evaluators as the case grows."""
    gt = json.loads(gt_path.read_text())
    pred = json.loads(pred_path.read_text())["results"]
    cases: list[tuple[str, dict, dict]] = [(f"full x{k}", *replicate(gt, pred, k)) for k in (1, 2, 4)]
    if vidor:
        cases.append(("VidOR-sized", *vidor_sized(gt, pred)))
    return [_growth_row(name, g, p, official, repeats, work) for name, g, p in cases]


def _growth_row(name: str, gt: dict, pred: dict, official: Callable | None, repeats: int, work: Path) -> dict:
    gpath, ppath = work / "scaled_gt.json", work / "scaled_pred.json"
    gpath.write_bytes(_dumps(gt))
    ppath.write_bytes(_dumps({"version": "VERSION 1.0", "results": pred}))
    reps = repeats if name.startswith("full") else max(1, repeats // 3)
    row: dict[str, Any] = {
        "case": name,
        "videos": sum(1 for r in gt.values() if r),
        "gt": sum(len(r) for r in gt.values()),
        "pred": sum(len(r) for r in pred.values()),
        "pred_mb": ppath.stat().st_size / 1e6,
    }
    row["ours_load"], _ = timed(lambda: (load_ground_truth(gpath), load_predictions(ppath)), reps)
    sets = (load_ground_truth(gpath), load_predictions(ppath))
    row["ours_cold"], _ = timed(lambda: evaluate_relations(*sets), 1)
    row["ours_warm"], ours = timed(lambda: evaluate_relations(*sets), reps)
    if official is not None:
        row["official"], out = timed(quiet(lambda: official(gt, pred)), max(1, reps // 2))
        row["max_diff"] = max_diff(official_numbers(out), {k: getattr(ours, k) for k in METRICS})
    return row


def _dumps(data: Any) -> bytes:
    try:
        import orjson

        return orjson.dumps(data)
    except ImportError:
        return json.dumps(data, separators=(",", ":")).encode()


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def fmt(t: Timing) -> str:
    return f"{t.wall * 1000:9.1f} ms wall (median {t.median * 1000:7.1f}), {t.cpu * 1000:8.1f} ms CPU"


def ratio(base: Timing | None, ours: Timing) -> str:
    if base is None:
        return ""
    return f"   {base.wall / ours.wall:5.1f}x faster (wall), {base.cpu / ours.cpu:5.1f}x (CPU)"


def report(mem: dict, cmd: dict | None, rows: list[dict]) -> None:
    base = mem.get("official")
    print("\n== in-memory evaluation (full case) ==")
    if base:
        print(f"official evaluate()                   {fmt(base)}")
    print(f"ours, all boxes parsed beforehand     {fmt(mem['ours_parsed'])}{ratio(base, mem['ours_parsed'])}")
    print(f"ours, warm (sets evaluated before)    {fmt(mem['ours_warm'])}{ratio(base, mem['ours_warm'])}")
    print(f"ours, cold (first call after load,    {fmt(mem['ours_cold'])}{ratio(base, mem['ours_cold'])}")
    print("      parsing the boxes it needs)")
    print(f"ours on the same plain dicts          {fmt(mem['ours_dicts'])}{ratio(base, mem['ours_dicts'])}")
    print(f"ours, loading both files              {fmt(mem['ours_load'])}")
    if base:
        diff = max_diff(mem["official_numbers"], mem["ours_numbers"])
        same = mem["official_numbers"] == mem["ours_numbers"]
        print(f"numbers: identical={same} (max |difference| {diff:.1e})")
        for k in METRICS:
            print(f"  {k:12s} official {mem['official_numbers'][k]!r:22s} ours {mem['ours_numbers'][k]!r}")
    if cmd is not None:
        print("\n== whole command, fresh process (load + evaluate + print) ==")
        cli = cmd.get("official_cli")
        if cli:
            print(f"official: python -m evaluation.visual_relation_detection  {fmt(cli)}")
        print(
            f"ours: python -c (sage_model.eval load + evaluate)        {fmt(cmd['ours_python'])}{ratio(cli, cmd['ours_python'])}"
        )
        if "ours_harness" in cmd:
            print(
                f"ours: harness evaluate --json                            {fmt(cmd['ours_harness'])}{ratio(cli, cmd['ours_harness'])}"
            )
            print(f"      harness CLI start-up alone (harness --help)        {fmt(cmd['harness_startup'])}")
    if rows:
        print("\n== growth (seconds; CPU in brackets) ==")
        print(
            "| case | videos | GT rel. | predictions | pred MB | ours load | ours eval cold | ours eval warm | official eval | speed-up warm (CPU) | max diff |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            off = r.get("official")
            cells = [
                r["case"],
                r["videos"],
                r["gt"],
                r["pred"],
                f"{r['pred_mb']:.0f}",
                _sec(r["ours_load"]),
                _sec(r["ours_cold"]),
                _sec(r["ours_warm"]),
                _sec(off) if off else "-",
                f"{off.wall / r['ours_warm'].wall:.0f}x ({off.cpu / r['ours_warm'].cpu:.0f}x)"
                if off
                else "-",
                f"{r['max_diff']:.0e}" if off else "-",
            ]
            print("| " + " | ".join(str(c) for c in cells) + " |")


def _sec(t: Timing) -> str:
    return f"{t.wall:.3f} ({t.cpu:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--helper",
        help="VidVRD-helper checkout (commit 1b4de17); default: VIDVRD_HELPER or benchmarks/_vendor",
    )
    parser.add_argument(
        "--case", default=str(ROOT.parent / "shared" / "golden_eval" / "full"), help="golden case folder"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-cli", action="store_true", help="skip the fresh-process command timings")
    parser.add_argument("--no-growth", action="store_true", help="skip the scaled cases")
    parser.add_argument("--no-vidor", action="store_true", help="skip the VidOR-sized case")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the evaluator logs the ignored prediction-only video

    case = Path(args.case)
    gt_path = case / "gt.json"
    if not gt_path.is_file():
        sys.exit(f"{gt_path} not found: pass --case <golden case folder>")
    helper, how = find_helper(args.helper)
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, load average {os.getloadavg()}")
    print(f"official code: {how}")
    official = None
    if helper is not None:
        print(f"  {check_helper_files(helper, case / 'expected.json')}")
        official = import_official(helper)
    else:
        print("  -> timing our evaluator only")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pred_source = case / "pred.json" if (case / "pred.json").is_file() else case / "pred.json.gz"
        pred_path = plain_json(pred_source, work)
        mem = in_memory(gt_path, pred_path, official, args.repeats)
        cmd = (
            None if args.no_cli else whole_command(gt_path, pred_path, helper, max(1, args.repeats // 2) + 1)
        )
        rows = (
            []
            if args.no_growth
            else growth(gt_path, pred_path, official, args.repeats, not args.no_vidor, work)
        )
    report(mem, cmd, rows)


if __name__ == "__main__":
    main()
