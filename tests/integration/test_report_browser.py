"""The published HTML report in a real browser: headless Chromium (Debian's `chromium`) runs the
page's JavaScript, and the DOM it dumps shows the grid and a filter, read from the URL hash on
load, that really hides the cells that do not match.

With CI set, a missing chromium fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from builder.report import load_report, render_html
from tests.conftest import FIXTURES

pytestmark = pytest.mark.slow

REPORT = load_report(FIXTURES / "reports" / "report.json")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(render_html(REPORT), encoding="utf-8")
    return path


def browse(chromium: str, url: str, profile: Path, *extra: str) -> str:
    """Run headless Chromium on `url`; return what it prints (the DOM with --dump-dom)."""
    argv = [chromium, *FLAGS, f"--user-data-dir={profile}", *extra, url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"chromium failed ({done.returncode}):\n{done.stderr[-2000:]}"
    return done.stdout


class Dom(HTMLParser):
    """The elements a test looks at, from Chromium's serialized DOM."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.cells: list[dict[str, str | None]] = []  # <td> and <details> with data-cell
        self.rows: dict[str, bool] = {}  # grid row (base) -> hidden
        self.body: dict[str, str | None] = {}
        self.shown = ""
        self._in_shown = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "data-cell" in a:
            self.cells.append({"tag": tag, **a})
        if tag == "tr" and "data-row" in a:
            self.rows[a["data-row"] or ""] = "hidden" in a
        if tag == "body":
            self.body = a
        self._in_shown = a.get("id") == "shown"

    def handle_data(self, data: str) -> None:
        if self._in_shown:
            self.shown += data
            self._in_shown = False

    def visible(self, tag: str) -> list[str]:
        """Ids of the cells whose `tag` elements the filter left on the page."""
        return [
            str(c["data-cell"])
            for c in self.cells
            if c["tag"] == tag and "hidden" not in c and "off" not in str(c.get("class")).split()
        ]


def ids(status: str | None = None, base: str | None = None) -> list[str]:
    return [
        c["id"]
        for c in REPORT["cells"]
        if (status is None or c["status"] == status) and (base is None or c["base"] == base)
    ]


def test_the_grid_shows_every_cell_when_no_filter_is_set(
    chromium: str, page: Path, tmp_path: Path
) -> None:
    dom = Dom(browse(chromium, page.as_uri(), tmp_path / "profile", "--dump-dom"))
    assert dom.visible("td") == ids()
    assert dom.visible("details") == ids()
    assert dom.body["data-filtered"] == "base=&torch=&cuda=&status="  # the script ran
    assert dom.shown == "8 of 8 cells shown"
    assert not any(dom.rows.values())


def test_a_status_filter_in_the_url_hides_the_cells_that_do_not_match(
    chromium: str, page: Path, tmp_path: Path
) -> None:
    url = page.as_uri() + "#status=fail"
    dom = Dom(browse(chromium, url, tmp_path / "profile", "--dump-dom"))
    assert dom.visible("td") == ids("fail")
    assert dom.visible("details") == ids("fail")
    assert dom.shown == "3 of 8 cells shown"
    assert dom.body["data-filtered"] == "base=&torch=&cuda=&status=fail"
    assert dom.rows == {
        "runpod-cu124-py311": False,
        "runpod-cu118-py310": False,
        "pytorch-cu124-py311": True,  # error and skipped only: the whole row goes
        "bookworm-cpu": True,
    }


def test_filters_combine_and_unknown_values_are_ignored(
    chromium: str, page: Path, tmp_path: Path
) -> None:
    url = page.as_uri() + "#base=runpod-cu124-py311&status=pass&cuda=nonsense"
    dom = Dom(browse(chromium, url, tmp_path / "profile", "--dump-dom"))
    assert dom.visible("details") == ids("pass", "runpod-cu124-py311")
    assert dom.shown == "2 of 8 cells shown"


def test_a_screenshot_of_the_filtered_report_is_kept(
    chromium: str, page: Path, tmp_path: Path
) -> None:
    shot = tmp_path / "report-status-fail.png"
    url = page.as_uri() + "#status=fail"
    browse(
        chromium,
        url,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,900",
        "--hide-scrollbars",
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    artifacts = os.environ.get("BUILDER_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)
