"""The report as a person sees it: built once (quick) through the command line, with a schedule
given as a string; its sections, tables, figures and the page rendered in headless Chromium."""

import base64
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from typer.testing import CliRunner

from lenapk.cli import app
from lenapk.report import fmt

USER_SCHEDULE = "7.5mg d1-21/28"
SECTIONS = ["summary", "fit", "validation", "exposure", "trajectories", "vpc", "comparison", "tradeoff", "model"]


class _Page(HTMLParser):
    """Sections (id -> text), tables (section id -> list of rows of cell text) and images."""

    def __init__(self):
        super().__init__()
        self.order, self.text, self.tables, self.images, self.nav = [], {}, {}, [], []
        self._section = self._cell = self._row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self._section = a["id"]
            self.order.append(a["id"])
            self.text[a["id"]], self.tables[a["id"]] = "", []
        elif tag == "a" and a.get("href", "").startswith("#"):
            self.nav.append(a["href"][1:])
        elif tag == "img":
            self.images.append((self._section, a.get("src", "")))
        elif tag == "table" and self._section:
            self.tables[self._section].append([])
        elif tag == "tr" and self._section:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._section][-1].append(self._row)
            self._row = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._section:
            self.text[self._section] += data


@pytest.mark.parametrize(
    "value, text",
    [(0.0, "0"), (12.345, "12.3"), (-0.0738, "-0.0738"), (1234.4, "1,234"), (1.23e-4, "1.23e-04"), (float("nan"), "–")],
)
def test_numbers_are_shown_to_three_significant_digits(value, text):
    assert fmt.number(value) == text


def test_intervals_read_unambiguously():
    assert fmt.percent(0.4567) == "46%" and fmt.percent(0.4567, 1) == "45.7%"
    assert fmt.interval(0.42, 0.35, 0.48, pct=True) == "42% (35–48%)"
    assert fmt.interval(-83.3, -105.0, -61.8) == "-83.3 (-105 to -61.8)"  # no dash beside a minus
    assert fmt.interval(3.5, float("nan"), 8.0) == "3.50" and fmt.interval(None, 1, 2) == "–"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    res = CliRunner().invoke(app, ["report", "--quick", "--out", str(out), "--regimen", USER_SCHEDULE])
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    page = _Page()
    page.feed(html)
    return out, html, page


def _table(page, section, index=0):
    header, *rows = page.tables[section][index]
    return [dict(zip(header, r)) for r in rows]


def _comparison(page):
    """The comparison's tables (toxicity, response, ...) joined by schedule, in order."""
    merged: dict[str, dict] = {}
    for i in range(len(page.tables["comparison"])):
        for row in _table(page, "comparison", i):
            merged.setdefault(row["schedule"], {}).update(row)
    return list(merged.values())


def test_sections_in_order_with_summary_first_and_a_contents_list(built):
    _, _, page = built
    assert page.order == SECTIONS
    assert page.nav == SECTIONS


def test_every_figure_is_an_inline_png_that_decodes_to_a_drawn_image(built):
    _, html, page = built
    assert {s for s, _ in page.images} == {"exposure", "trajectories", "vpc", "comparison", "tradeoff"}
    for section, src in page.images:
        assert src.startswith("data:image/png;base64,"), section
        pixels = mpimg.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)), format="png")
        assert pixels.shape[0] > 300 and pixels.shape[1] > 400, section
        assert pixels[..., :3].std() > 0.05, f"{section}: the figure is (nearly) blank"
    # self-contained: nothing fetched from elsewhere
    assert not re.search(r'(src|href)="(?!data:|#)', html) and "<link" not in html and "<script" not in html


def test_no_cell_shows_nan_and_nothing_failed_to_converge(built):
    _, html, page = built
    for section, tables in page.tables.items():
        for table in tables:
            for row in table:
                for cell in row:
                    assert not re.search(r"\b(nan|inf|None)\b", cell, re.IGNORECASE), (section, row)
    assert "not converged" not in html.lower() and "traceback" not in html.lower()


def test_the_users_schedule_is_compared_with_the_standard_ones(built):
    _, _, page = built
    rows = _comparison(page)
    names = [r["schedule"] for r in rows]
    assert len(names) >= 3 and len(set(names)) == len(names)
    assert any(USER_SCHEDULE in n for n in names), names
    for r in rows:
        est, lo, hi = (float(x) for x in re.findall(r"[\d.]+", r["grade >= 3 neutropenia (patients)"])[:3])
        assert lo <= est <= hi and 0 <= lo and hi <= 100


def test_summary_numbers_are_those_of_the_comparison_and_fit_tables(built):
    _, _, page = built
    summary = page.text["summary"]
    for r in _comparison(page):
        tox, resp = r["grade >= 3 neutropenia (patients)"], r["response (PR or better), whole regimen"]
        assert f"{r['schedule']}: grade >= 3 neutropenia {tox} of patients" in summary
        assert f"response (PR or better by ALC and nodes) {resp}" in summary
    fit = _table(page, "fit")
    inside, fitted = (int(x) for x in re.search(r"(\d+) of (\d+) fitted summary rows", summary).groups())
    assert 0 < fitted <= len(fit) and 0 <= inside <= fitted


def test_numeric_columns_are_right_aligned(built):
    _, html, _ = built
    assert re.search(r'<td class="num">\d', html)
    assert not re.search(r'<td class="num">[A-Za-z]', html)


def test_the_model_document_is_in_the_page(built):
    _, html, page = built
    text = page.text["model"]
    assert (
        "Structure and equations" in text and "CL/F = CL ((1 - f_r) + f_r CrCl / 90 mL/min) (FFM / 55 kg)^0.75" in text
    )
    headers = [t[0] for t in page.tables["model"]]
    assert ["observable", "unit", "meaning"] in headers  # the document's tables, then the parameters'
    assert ["name", "kind", "value", "unit", "BSV (CV%)", "description", "source"] in headers
    assert "<h1" not in html.split('id="model"', 1)[1]  # its headings sit below the section's


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (apt-get install chromium)")
def test_page_renders_in_headless_chromium(built):
    """The screenshot is kept (not committed) in test-artifacts/ or $LENAPK_TEST_ARTIFACTS."""
    out, _, _ = built
    artifacts = Path(os.environ.get("LENAPK_TEST_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    png = artifacts / "report.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={png}",
            "--window-size=1280,4000",
            (out / "report.html").resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = mpimg.imread(png)
    assert pixels.shape[:2] == (4000, 1280)
    gray = pixels[..., :3].mean(axis=2)
    # text and figures drawn down the page, not a blank or error page
    drawn_rows = (gray < 0.9).any(axis=1)
    assert drawn_rows.mean() > 0.3
    assert np.unique(np.round(pixels[..., :3], 2).reshape(-1, 3), axis=0).shape[0] > 100


def test_a_dose_between_levels_is_flagged_and_given_at_the_level_below(built):
    _, _, page = built
    assert "7.5 mg are not dose levels" in page.text["summary"]
    user = next(r for r in _comparison(page) if USER_SCHEDULE in r["schedule"])
    if user["days held"].startswith("0 "):  # no hold: 5 mg given on every planned 7.5 mg day
        assert user["delivered dose intensity (delivered / planned mg)"].startswith("67% ")
    assert page.text["summary"].count("are not dose levels") == 1  # the standard set escalates by level
