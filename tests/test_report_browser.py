"""The report in a real browser: headless Chromium loads report.html of a two-method PM2 study of
filmed runs, and the test reads what a person would see (tests/browser.py)."""

import shutil

import pytest

from tests.browser import chromium, look_at, screenshot
from tests.conftest import train_in_process
from tests.test_report import report

pytestmark = [pytest.mark.integration, pytest.mark.multiproc,
              pytest.mark.skipif(chromium() is None, reason="no Chromium here (Debian: apt-get install chromium)")]
IMAGES = ["Success curves", "Forgetting and transfer", "Plasticity", "Performance matrix"]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    for method in ("none", "ewc"):
        proc = train_in_process("--suite", "pointmass", "--sequence", "PM2", "--steps-per-task", 300, "--eval-every",
                                150, "--backend", "single", "--method", method, "--set", "eval.goals=3", "--set",
                                "eval.video=1", "--set", "eval.video_size=96x96", "--set", "eval.video_frame_skip=3",
                                "--set", "run.threads=1", "--run-dir", root / method)
        assert proc.returncode == 0, proc.stderr
    proc = report(root / "none", root / "ewc", "--out", root / "report", "--reps", 200)
    assert proc.returncode == 0, proc.stderr
    return root / "report"


def test_a_person_sees_every_plot_table_and_video_within_the_page(report_dir):
    page = look_at(report_dir / "report.html")
    assert page["overflowing"] == [] and page["scroll_width"] <= page["width"]
    assert [i["alt"] for i in page["images"]] == IMAGES  # no tiny PNG copy of the main table
    assert all(i["natural_width"] > 0 and i["shown_width"] > 300 for i in page["images"])
    # per run: reach-e at the end of stages 1 and 2, reach-w at the end of its stage 2; each playable at its size
    assert len(page["videos"]) == 6
    assert all(v["error"] is None and v["ready"] >= 1 and (v["width"], v["height"]) == (96, 96) and v["duration"] > 0
               for v in page["videos"])
    headings = {"Main metrics", "Per-task results", "Videos", "none, seed 0 (none)", "ewc, seed 0 (ewc)"}
    assert headings <= set(page["headings"])
    assert len(page["tables"]) >= 6 and all(rows >= 2 for rows in page["tables"])
    text = page["text"]
    assert text.index("Best average performance:") < text.index("Main metrics")  # the summary comes first
    assert "Forward transfer: not computed, no single-task reference runs" in text
    assert "Final success (last evaluation)" in text and "Performance (mean of last 5)" in text
    assert "reach-e, end of stage 1 (step 300)" in text and "reach-w, end of stage 2 (step 600)" in text


def test_a_broken_video_is_seen_as_broken(report_dir, tmp_path):
    """The check above can fail: a truncated mp4 shows as an error in the browser."""
    broken = tmp_path / "report"
    shutil.copytree(report_dir, broken)
    first = sorted((broken / "videos").rglob("*.mp4"))[0]
    first.write_bytes(first.read_bytes()[:200])
    videos = look_at(broken / "report.html")["videos"]
    assert sum(v["error"] is not None or v["ready"] == 0 for v in videos) == 1


def test_the_report_screenshots(report_dir, tmp_path):
    png = tmp_path / "report.png"
    screenshot(report_dir / "report.html", png)
    import matplotlib.image
    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (1600, 1280) and image.std() > 0.05  # a page, not a blank
