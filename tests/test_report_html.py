"""The report page renders in a real browser: headless Chromium (Debian's `chromium`)
opens the page written from fixture metrics and rows, takes a screenshot, and the
DOM it lays out has every chart with a non-zero size and marks drawn inside it."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_fixture import CHECKPOINTS, make_project

from honing.report.load import load_inputs
from honing.report.page import render_page, write_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# headless, no sandbox (root in CI), and none of the background network a first start makes
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars"]
EXPECTED_CHARTS = {"accuracy", "rounds", "gain", "critic", "loss-base", "loss-train_meta", "loss-it1"}

# Injected into a copy of the page (the page itself has no script): writes each
# chart's laid-out size, and how many of its marks have a non-zero size, into the
# DOM that --dump-dom prints.
MEASURE = """<script>
for (const svg of document.querySelectorAll("svg.chart")) {
  const box = svg.getBoundingClientRect();
  svg.setAttribute("data-width", Math.round(box.width));
  svg.setAttribute("data-height", Math.round(box.height));
  const drawn = [...svg.querySelectorAll(".mark")].filter(m => {
    const b = m.getBoundingClientRect(); return b.width > 0 || b.height > 0; });
  svg.setAttribute("data-marks-drawn", drawn.length);
}
document.body.setAttribute("data-measured", "yes");
</script>"""


def chromium(*args: str, profile: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


class Charts(HTMLParser):
    """The measured attributes of every `svg.chart` in a dumped DOM."""

    def __init__(self):
        super().__init__()
        self.charts: dict[str, dict[str, str]] = {}
        self.measured = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg" and "chart" in (attrs.get("class") or "").split():
            self.charts[attrs["data-chart"]] = attrs
        if tag == "body" and attrs.get("data-measured") == "yes":
            self.measured = True


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("project"))
    return write_page(render_page(load_inputs(root, CHECKPOINTS)), root / "report" / "index.html")


def test_the_page_is_self_contained(page):
    html = page.read_text()
    assert "<script" not in html  # nothing to fetch, nothing to run
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the page links something outside itself"
    assert len(re.findall(r'<svg class="chart"', html)) == len(EXPECTED_CHARTS)


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium: `apt-get install -y chromium` (.ci/run does)")
def test_chromium_renders_every_chart_with_its_marks(page, tmp_path):
    shot = tmp_path / "report.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1000,2600", page.as_uri(), profile=tmp_path / "p1")
    assert shot.is_file() and shot.stat().st_size > 20_000, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text().replace("</body>", MEASURE + "\n</body>"))
    result = chromium("--dump-dom", "--window-size=1000,2600", measured.as_uri(), profile=tmp_path / "p2")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = Charts()
    dom.feed(result.stdout)
    assert dom.measured, "the measuring script did not run:\n" + result.stdout[:2000]
    assert set(dom.charts) == EXPECTED_CHARTS
    for name, attrs in dom.charts.items():
        assert int(attrs["data-width"]) > 100 and int(attrs["data-height"]) > 100, (name, attrs)
        assert int(attrs["data-marks-drawn"]) > 0, f"chart {name}: no mark has a size"
    # grouped bars: one per checkpoint and series
    assert int(dom.charts["accuracy"]["data-marks-drawn"]) == 2 * len(CHECKPOINTS)
    assert int(dom.charts["critic"]["data-marks-drawn"]) == 3 * len(CHECKPOINTS)  # recall, false alarm, AUC
    # one line (and its points) per checkpoint, rounds 0..2
    assert int(dom.charts["rounds"]["data-marks-drawn"]) == len(CHECKPOINTS) * (1 + 3)


def test_refinements_side_by_side(page):
    html = page.read_text()
    section = html[html.index("Refinements side by side"):]
    for ck in CHECKPOINTS:
        assert f"<h3>{ck} " in section
    # every sampled row: prompt, reference, answer, feedback, refined answer, kind, before, after
    rows = re.findall(r"<tr>(.*?)</tr>", section, flags=re.S)
    body = [r for r in rows if r.startswith("<td")]
    assert len(body) == 4 * len(CHECKPOINTS)
    assert all(r.count("<td") == 8 for r in body)
    assert "Ann has 13 coins" in section  # a prompt, joined from data/prepare/eval.parquet
    fixed = [r for r in body if ">fixed<" in r]
    assert fixed and all(re.search(r'class="fail">fail</span></td><td><span class="pass">pass', r) for r in fixed)


def test_equal_inputs_give_an_equal_page(page, tmp_path):
    again = make_project(tmp_path / "again")
    assert render_page(load_inputs(again, CHECKPOINTS)) == page.read_text()
