"""The docs as a user sees them: built with -W, links resolve, pages fit their screens.

Every internal link and image of the built HTML resolves, and every page renders
in headless Chromium at 1280 px and 390 px without anything cut off:

* no page is wider than the screen, at either width;
* every table fits its column at both widths: all its columns are on screen
  (cells wrap; docs/_static/tipkit.css), and every column has a header; only a
  table of more than six columns (measurements side by side, whose numbers must
  not break) may scroll sideways at 390 px, inside its own box;
* every code block fits its box at 1280 px (about 88 characters); at 390 px, where
  an 88-character line cannot fit, a code block may scroll sideways, but only
  inside its own box: a scroll container no wider than the screen.

Builds the docs once per session (a module fixture). The browser is Debian's
``chromium`` with ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``)
driven by selenium; without them the browser tests skip, except under ``CI=true``,
where they fail. ``TIPKIT_UPDATE_SCREENS=1`` also writes the screenshots of the
key pages (learning pages and one page per primitive, 1280 px; the landing page
at 390 px too) to ``docs/_static/screens/``.
The pictures drawn by ``docs/_tools/diagrams.py`` are checked to be current.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from .browser_support import headless_chromium
from .once import once_per_run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCREENS = DOCS / "_static" / "screens"
LEARN = ["index", "tutorial", "testing", "adoption", "doctor", "faq"]
PRIMITIVES = [
    "flags",
    "breaker",
    "ratelimit",
    "retry",
    "timeout",
    "bulkhead",
    "rollouts",
]
PRIMITIVES += ["experiment", "telemetry", "composition", "fleet"]
WIDTHS = (1280, 390)
# Pages that only index or search: nothing of ours to measure.
GENERATED = {"genindex", "search", "py-modindex"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the docs once per test run, with warnings as errors; return the HTML."""

    def build(directory: Path) -> tuple[int, str, Path]:
        out, doctrees = directory / "html", directory / "doctrees"
        command = [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html"]
        proc = subprocess.run(  # noqa: S603  # our own interpreter running sphinx
            [*command, "-d", str(doctrees), str(DOCS), str(out)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        return proc.returncode, proc.stdout + proc.stderr, out

    code, output, out = once_per_run(tmp_path_factory, "docs-site", build)
    assert 0 == code, output
    return out


class _Refs(HTMLParser):
    """Collect a page's link and image targets and its element ids."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        for attr in ("href", "src"):
            value = a.get(attr)
            if value and tag in {"a", "img", "link", "script"}:
                self.refs.append((tag, value))


def _parse(page: Path) -> _Refs:
    parser = _Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_every_internal_link_and_image_resolves(site: Path) -> None:
    """No page of the built site links to a missing page, anchor, image or asset."""
    pages = {p: _parse(p) for p in site.rglob("*.html")}
    broken: list[str] = []
    for page, parsed in pages.items():
        for tag, ref in parsed.refs:
            parts = urlsplit(ref)
            if parts.scheme or parts.netloc or ref.startswith(("mailto:", "data:")):
                continue
            target = (
                (page.parent / unquote(parts.path)).resolve() if parts.path else page
            )
            if target.is_dir():
                target /= "index.html"
            where = f"{page.relative_to(site)}: <{tag}> {ref}"
            if not target.exists():
                broken.append(f"{where} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{where} (no such anchor)")
    assert [] == broken


def test_learning_pages_are_in_the_site(site: Path) -> None:
    """The landing page links every learning page and shows the demo chart."""
    index = _parse(site / "index.html")
    hrefs = {urlsplit(ref).path for tag, ref in index.refs if tag == "a"}
    assert {f"{p}.html" for p in LEARN if p != "index"} <= hrefs
    assert any("demo-timeline.png" in ref for tag, ref in index.refs if tag == "img")


def test_diagrams_are_current() -> None:
    """The pictures' facts, recomputed from the code, equal the committed ones."""
    spec = importlib.util.spec_from_file_location(
        "diagrams", DOCS / "_tools/diagrams.py"
    )
    assert spec is not None
    assert spec.loader is not None
    diagrams = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diagrams)
    committed = json.loads((DOCS / "_static/diagrams/diagrams.json").read_text())
    fresh = json.loads(json.dumps(diagrams.facts()))
    stale = "stale: run python docs/_tools/diagrams.py and commit docs/_static/diagrams"
    for key in ("breaker", "composition", "fleet"):
        assert committed[key] == fresh[key], f"{key} picture is {stale}"
    for key in ("stages", "status"):
        assert committed["rollout"][key] == fresh["rollout"][key], f"rollout {stale}"
    for name in diagrams.DRAWERS:
        assert (DOCS / "_static/diagrams" / name).stat().st_size > 10_000


# -- in the browser -----------------------------------------------------------------

# A table of more columns than this (measurements side by side) may scroll
# sideways inside its box on a phone; a narrower one must show every column.
WIDE_TABLE = 6
# For each code block and table, what does not fit. A <pre> wider than its
# box has scrollWidth > clientWidth; it is "scrolling in its own box" when its
# computed overflow-x scrolls and the box itself ends inside the screen. A table
# is measured against furo's .table-wrapper (or its parent): wider means
# columns off screen, unless it is a wide table in a scrolling box. Every
# column of a table needs a header.
MEASURE = """
const WIDE_TABLE = WIDE_TABLE_COLUMNS;
const out = {page: document.documentElement.scrollWidth - window.innerWidth, items: []};
const say = (el, what) => {
  const text = (el.innerText || '').trim().split('\\n')[0].slice(0, 60);
  out.items.push({kind: what, text: el.tagName.toLowerCase() + ' ' + text});
};
for (const el of document.querySelectorAll('article pre')) {
  const over = el.scrollWidth - el.clientWidth;
  if (over <= 1) continue;
  const style = getComputedStyle(el);
  const scrolls = ['auto', 'scroll'].includes(style.overflowX);
  const inside = el.getBoundingClientRect().right <= window.innerWidth + 1;
  say(el, (scrolls && inside ? 'scrolls +' : 'cut off +') + Math.round(over) + 'px');
}
for (const el of document.querySelectorAll('article table')) {
  const box = el.closest('.table-wrapper') || el.parentElement;
  const over = el.getBoundingClientRect().width - box.clientWidth;
  const rows = Array.from(el.rows);
  const columns = Math.max(0, ...rows.map(r => r.cells.length));
  if (over > 1) {
    const scrolls = ['auto', 'scroll'].includes(getComputedStyle(box).overflowX);
    const inside = box.getBoundingClientRect().right <= window.innerWidth + 1;
    const wide = columns > WIDE_TABLE;
    say(el, (wide && scrolls && inside ? 'scrolls +' : 'columns off screen +')
            + Math.round(over) + 'px (' + columns + ' columns)');
  }
  const head = el.tHead ? el.tHead.rows[el.tHead.rows.length - 1] : null;
  if (head && (head.cells.length < columns ||
               Array.from(head.cells).some(c => !c.innerText.trim()))) {
    say(el, 'a column without a header');
  }
}
return out;
""".replace("WIDE_TABLE_COLUMNS", str(WIDE_TABLE))


def _problems(page: str, width: int, measured: dict[str, Any]) -> list[str]:
    """Return what does not fit on *page* at *width*, as readable lines."""
    where = f"{page}.html @{width}px"
    problems = []
    if measured["page"] > 1:
        problems.append(f"{where}: page {measured['page']}px wider than the screen")
    for item in measured["items"]:
        # On a phone an 88-column code line (or a table of more than
        # WIDE_TABLE columns) scrolls inside its own box, as on every docs
        # site; on a desktop nothing may need to.
        if item["kind"].startswith("scrolls") and width < 1000:
            continue
        problems.append(f"{where}: {item['kind']}: {item['text']}")
    return problems


def test_the_measure_tells_fitting_from_cut_off() -> None:
    """The criterion passes a phone's scrolling code box and fails the rest."""
    scrolls = {"kind": "scrolls +40px", "text": "pre x = 1"}
    cut = {"kind": "cut off +40px", "text": "pre x = 1"}
    table = {"kind": "columns off screen +9px (5 columns)", "text": "table what"}
    assert [] == _problems("p", 390, {"page": 0, "items": [scrolls]})
    assert ["p.html @1280px: scrolls +40px: pre x = 1"] == _problems(
        "p", 1280, {"page": 0, "items": [scrolls]}
    )
    assert ["p.html @390px: cut off +40px: pre x = 1"] == _problems(
        "p", 390, {"page": 0, "items": [cut]}
    )
    hidden = "p.html @390px: columns off screen +9px (5 columns): table what"
    assert [hidden] == _problems("p", 390, {"page": 0, "items": [table]})
    assert ["p.html @390px: page 3px wider than the screen"] == _problems(
        "p", 390, {"page": 3, "items": []}
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Debian Chromium driven by selenium, or a skip (a failure in CI)."""
    driver = headless_chromium()
    try:
        yield driver
    finally:
        driver.quit()


def _show(driver: Any, url: str, width: int) -> dict[str, Any]:
    driver.set_window_size(width, 900)
    # The window size includes no browser chrome in headless mode: the viewport is it.
    driver.get(url)
    result: dict[str, Any] = driver.execute_script(MEASURE)
    return result


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_renders_without_overflow(
    site: Path, browser: Any, width: int, tmp_path: Path
) -> None:
    """Every page: nothing cut off, every table's columns on screen; key pages shot."""
    problems: list[str] = []
    update = os.environ.get("TIPKIT_UPDATE_SCREENS") == "1"
    pages = sorted(p.stem for p in site.glob("*.html") if p.stem not in GENERATED)
    assert {*LEARN, *PRIMITIVES} <= set(pages)
    for page in pages:
        measured = _show(browser, (site / f"{page}.html").as_uri(), width)
        problems += _problems(page, width, measured)
        if page not in {*LEARN, *PRIMITIVES}:
            continue
        shot = tmp_path / f"{page}-{width}.png"
        assert browser.save_screenshot(str(shot))
        if update and (width == 1280 or page == "index"):
            SCREENS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, SCREENS / shot.name)
    assert [] == problems


def test_committed_screenshots_exist() -> None:
    """A 1280 px screenshot of each key page (learning pages, primitives) is committed."""
    missing = [
        p for p in [*LEARN, *PRIMITIVES] if not (SCREENS / f"{p}-1280.png").exists()
    ]
    assert [] == missing
