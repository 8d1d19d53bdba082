"""A report as a person sees it: headless Chromium (Debian's `chromium`) loads report.html, waits for
its videos, and reports what is on the page (tests/test_report_browser.py)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# Run in the page once it has loaded and its videos have their metadata (or failed): what a person would see.
CHECK = """<script>
window.addEventListener('load', () => {
  const videos = [...document.querySelectorAll('video')];
  const loaded = videos.map(v => v.readyState >= 1 || v.error ? Promise.resolve() : new Promise(done => {
    v.addEventListener('loadedmetadata', done); v.addEventListener('error', done); }));
  Promise.all(loaded).then(() => {
    const width = document.documentElement.clientWidth;
    const seen = [...document.body.querySelectorAll('h1,h2,h3,p,table,figure,img,video')];
    const result = {
      width, scroll_width: document.documentElement.scrollWidth,
      overflowing: seen.filter(e => e.getBoundingClientRect().right > width + 1).map(e => e.tagName + ': ' +
                   (e.textContent || e.getAttribute('alt') || e.getAttribute('src') || '').slice(0, 60)),
      images: [...document.images].map(i => ({alt: i.alt, natural_width: i.naturalWidth,
                                             shown_width: i.getBoundingClientRect().width})),
      videos: videos.map(v => ({src: v.getAttribute('src'), ready: v.readyState, error: v.error ? v.error.code : null,
                                width: v.videoWidth, height: v.videoHeight, duration: v.duration})),
      tables: [...document.querySelectorAll('table')].map(t => t.rows.length),
      headings: [...document.querySelectorAll('h1,h2,h3')].map(h => h.textContent),
      text: document.body.innerText,
    };
    const out = document.createElement('pre');
    out.id = 'browser-check';
    out.textContent = JSON.stringify(result);
    document.body.appendChild(out);
  });
});
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _run(args: list[str]) -> subprocess.CompletedProcess:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start; containers' /dev/shm is small.
    # A profile of its own, removed after: Chromium otherwise leaves one under ~/.cache per start.
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                               f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1280,1600",
                               "--virtual-time-budget=15000", *args], capture_output=True, text=True, timeout=180)


def look_at(report_html: Path) -> dict:
    """Load the report (a copy with CHECK at its end, beside it so its videos resolve) and return CHECK's result."""
    page = report_html.with_name(".browser-check.html")
    page.write_text(report_html.read_text().replace("</body>", CHECK + "</body>"))
    try:
        proc = _run(["--dump-dom", page.resolve().as_uri()])
    finally:
        page.unlink()
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"the page never finished loading in Chromium: {proc.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def screenshot(report_html: Path, png: Path) -> None:
    proc = _run([f"--screenshot={png.resolve()}", report_html.resolve().as_uri()])
    assert png.is_file() and png.stat().st_size, proc.stderr[-2000:]
