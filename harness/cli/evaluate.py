"""`harness evaluate`: official-exact VidVRD relation detection metrics of a prediction file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from harness.cli.app import UserError, app, user_errors


@app.command("evaluate")
@user_errors
def evaluate(
    gt: Path = typer.Argument(
        ...,
        help="Ground truth: standalone GT JSON ({video_id: [relations]}) or an official annotation folder.",
    ),
    pred: Path = typer.Argument(..., help="Official prediction JSON ({version, results}); may be .gz."),
    split: str = typer.Option(
        "all", "--split", help="all, or novel (GT and predictions with a novel predicate)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object (fractions)."),
    novel_predicates: Path | None = typer.Option(
        None,
        "--novel-predicates",
        help="File of novel predicate names (JSON list, split file with cls2split, or one per line); "
        "default: the --dataset vocabulary's novel predicates.",
    ),
    dataset: str = typer.Option(
        "vidvrd",
        "--dataset",
        help="vidvrd or vidor: vocabulary for --split novel and format of a GT annotation folder.",
    ),
    gt_split: str = typer.Option(
        "test",
        "--gt-split",
        help="Split to read when GT is a dataset root in the official layout (test = VidOR validation).",
    ),
    tagging_divisor: str = typer.Option(
        "official",
        "--tagging-divisor",
        help="official: P@K at rank min(K, #unique predicted triplets) (helper); k: hits / K (VidVRD-II fix).",
    ),
    strict_videos: bool = typer.Option(
        False,
        "--strict-videos",
        help="Fail on predictions for videos the ground truth does not have (default: ignore, as the helper).",
    ),
) -> None:
    """Relation detection mAP, Recall@50/100 and tagging precision@1/5/10 (VidVRD-helper semantics)."""
    from sage_model.eval import evaluate_relations, load_ground_truth, load_predictions

    if split not in ("all", "novel"):
        raise UserError(f"--split: must be 'all' or 'novel', got {split!r}")
    if tagging_divisor not in ("official", "k"):
        raise UserError(f"--tagging-divisor: must be 'official' or 'k', got {tagging_divisor!r}")
    novel = _novel_predicates(novel_predicates, dataset) if split == "novel" else None
    metrics = evaluate_relations(
        load_ground_truth(gt, dataset=dataset, split=gt_split),
        load_predictions(pred),
        novel_predicates=novel,
        tagging_divisor=tagging_divisor,  # type: ignore[arg-type]
        unknown_videos="error" if strict_videos else "ignore",
    )
    if as_json:
        typer.echo(json.dumps(metrics.to_dict()))
        return
    typer.echo(f"split {split}: {len(metrics.video_ap)} videos with ground truth")
    for name in ("mean_ap", "rec_at_50", "rec_at_100", "mprec_at_1", "mprec_at_5", "mprec_at_10"):
        typer.echo(f"{name:12s} {getattr(metrics, name) * 100:8.4f} %")


def _novel_predicates(path: Path | None, dataset: str) -> set[str]:
    """Novel predicate names from --novel-predicates, else from the packaged vocabulary."""
    from sage_model.eval import read_name_list

    if path is not None:
        names = read_name_list(path)
    else:
        try:
            from sage_model.data.vocab import load_vocabulary
        except ImportError:
            raise UserError("--split novel needs --novel-predicates FILE (no packaged vocabulary)") from None
        names = set(load_vocabulary(dataset).novel_predicates)
    if not names:
        raise UserError(f"--novel-predicates: {path} lists no predicate")
    return names
