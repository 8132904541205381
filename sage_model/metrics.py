"""The metric catalogue: every number a trial reports, described once.

Study validation (which ``metric:`` a table column may name), the experiment (which names it
writes), MLflow keys and the report (display name, unit, direction, whether to compare as a
ratio) all read this table; nothing else lists metric names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricKind = Literal["detection", "tagging", "efficiency"]


@dataclass(frozen=True)
class MetricInfo:
    """One metric name: how to show it and how to compare two values of it."""

    name: str
    display: str
    unit: str
    higher_is_better: bool
    kind: MetricKind
    #: the :class:`sage_model.eval.DetectionMetrics` attribute it comes from (None: not an eval metric)
    source: str | None = None

    @property
    def per_video(self) -> bool:
        """Detection and tagging metrics decompose over test videos (a bootstrap can resample them)."""
        return self.kind != "efficiency"


CATALOGUE: tuple[MetricInfo, ...] = (
    MetricInfo("map", "mAP", "%", True, "detection", "mean_ap"),
    MetricInfo("r50", "R@50", "%", True, "detection", "rec_at_50"),
    MetricInfo("r100", "R@100", "%", True, "detection", "rec_at_100"),
    MetricInfo("p1", "P@1", "%", True, "tagging", "mprec_at_1"),
    MetricInfo("p5", "P@5", "%", True, "tagging", "mprec_at_5"),
    MetricInfo("p10", "P@10", "%", True, "tagging", "mprec_at_10"),
    MetricInfo("params_m", "Params", "M", False, "efficiency"),
    MetricInfo("fps", "FPS", "frames/s", True, "efficiency"),
    # Table 10 counted the other way (sage_model/efficiency.py): without CLIP's token embedding,
    # with the teacher's descriptions of the test pairs generated, and the teacher's questions per frame
    MetricInfo("params_m_no_tok", "Params w/o token emb.", "M", False, "efficiency"),
    MetricInfo("fps_teacher", "FPS incl. teacher", "frames/s", True, "efficiency"),
    MetricInfo("teacher_qpf", "Teacher questions/frame", "1/frame", False, "efficiency"),
)
METRICS: dict[str, MetricInfo] = {m.name: m for m in CATALOGUE}
METRIC_NAMES: tuple[str, ...] = tuple(METRICS)
EVAL_METRICS: tuple[MetricInfo, ...] = tuple(m for m in CATALOGUE if m.source is not None)
#: the metrics the per-epoch validation reports (``val/predcls_{split}_{name}``)
VALIDATION_METRICS: tuple[str, ...] = ("map", "r50", "r100")


def metric_info(name: str) -> MetricInfo:
    """The catalogue entry of ``name`` (ValueError listing the valid names otherwise)."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r} (valid: {', '.join(METRIC_NAMES)})") from None


def metric_key(task: str, split: str, name: str) -> str:
    """``{task}_{split}_{name}``: the flat spelling used in MLflow keys and CSV exports."""
    return f"{task}_{split}_{name}"
