"""The screenshot of a report in docs/videos.md: a two-method PM2 study with films, its report,
and headless Chromium's picture of the top of report.html.

    python benchmarks/report_screenshot.py [--out runs/report-screenshot] [--png docs/images/report.png]

Fine-tuning and EWC on pointmass PM2, 2 seeds each, 1,500 env steps per task, eval.video=1 at
256x256, trained by launch/study.py (no references: the report says so); then Chromium (Debian's
`chromium`) at 1280x1600.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDY = """name: report-screenshot
base: {suite: pointmass, sequence: PM2, steps_per_task: 1500}
set: {run.threads: 1, eval.video: 1, eval.goals: 10}
grid: {method: [none, ewc], seed: [0, 1]}
report: {last_k: 2}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/report-screenshot"), help="the study directory")
    p.add_argument("--png", type=Path, default=ROOT / "docs" / "images" / "report.png")
    args = p.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("report_screenshot.py: no Chromium here (Debian: apt-get install chromium)")
    if not (args.out / "report" / "report.html").is_file():
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as study:
            study.write(STUDY)
            study.flush()
            subprocess.run([sys.executable, str(ROOT / "launch" / "study.py"), study.name, "--out", str(args.out)],
                           check=True)
    args.png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--window-size=1280,1600", "--virtual-time-budget=15000",
                    f"--screenshot={args.png.resolve()}", (args.out / "report" / "report.html").resolve().as_uri()],
                   check=True, capture_output=True)
    print(f"report_screenshot.py: {args.png}")


if __name__ == "__main__":
    main()
