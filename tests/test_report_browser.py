"""The HTML report renders in a real browser: headless Chromium takes a screenshot of it.

The screenshot is kept under ``test-artifacts/`` for a human to look at. The test checks that
the page really rendered (not a blank or error page): the synthetic banner's red border and the
plots' blue (matplotlib's first colour, only present if the embedded PNGs decoded) are on it.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from matplotlib.image import imread

from harness.report.paper import write_paper_tables
from harness.results import read_results
from tests.report_data import META, load_toy_studies, write_efficiency_results, write_sweep_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BANNER_RED = np.array([176, 0, 32]) / 255  # #b00020, the banner's left border
PLOT_BLUE = np.array([31, 119, 180]) / 255  # matplotlib tab10 C0: our bars and curves


def _has_colour(image: np.ndarray, rgb: np.ndarray, min_pixels: int) -> bool:
    close = np.abs(image[..., :3] - rgb).max(axis=-1) < 0.03
    return int(close.sum()) >= min_pixels


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
@pytest.mark.slow
def test_html_report_renders_in_headless_chromium(tmp_path, project_root):
    sweep, efficiency = load_toy_studies(tmp_path / "studies")
    write_sweep_results(tmp_path / "results")
    write_efficiency_results(tmp_path / "results")
    frame = read_results(tmp_path / "results")
    out = tmp_path / "reports"
    write_paper_tables(
        [sweep, efficiency], frame, out, formats=("html",), meta=META, runs_dir=tmp_path / "runs"
    )
    artifacts = project_root / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "report_paper_tables.png"
    shot.unlink(missing_ok=True)
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,2200",
        f"--screenshot={shot}",
        (out / "paper_tables.html").as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.is_file(), f"no screenshot written; chromium said: {done.stderr[-2000:]}"
    image = imread(shot)
    assert image.shape[:2] == (2200, 1280)
    assert _has_colour(image, BANNER_RED, 200), "the synthetic banner did not render"
    assert _has_colour(image, PLOT_BLUE, 500), "the embedded plots did not render"
