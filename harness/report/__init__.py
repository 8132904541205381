"""Reports: the paper's tables beside ours (``harness report --paper-tables``).

``tables`` computes (polars, pure), ``stats`` / ``intervals`` add confidence intervals and paired
tests from the per-video results, ``plots`` draws, ``render_md`` / ``render_html`` / ``export``
(CSV, TeX) lay out, ``paper`` writes files; ``stability`` adds the Fig. 4 t-SNE from the trials'
analysis files; ``compare`` is ``harness compare`` (two result sets, paired).
"""

from harness.report.paper import ReportOutcome, write_paper_tables
from harness.report.tables import PaperTable, build_paper_table

__all__ = ["PaperTable", "ReportOutcome", "build_paper_table", "write_paper_tables"]
