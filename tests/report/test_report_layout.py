"""The report's layout in a real browser at desktop (1400 px) and phone (400 px) width.

Debian's Chromium driven by Playwright opens a report written by `write_report` for a
copy of the session's tiny build, compared with a second copy (`--compare`), and the same
report without the comparison. At either width the page itself never scrolls sideways:
each table scrolls inside its own box, every image fits the column, the overlay tiles stay
large enough to read, and the comparison comes before the artifact tables.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.report.conftest import launch, open_report

WIDTHS = (1400, 400)

LAYOUT = """() => {
  const page = document.scrollingElement;
  const box = e => { const r = e.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top, width: r.width}; };
  const section = e => {  // the id of the h2 a table sits under (or of the section holding it)
    if (e.closest('section[id]')) return e.closest('section[id]').id;
    for (let s = e.previousElementSibling; s; s = s.previousElementSibling) if (s.tagName === 'H2') return s.id;
    return null;
  };
  const tables = Array.from(document.querySelectorAll('table')).map(t => {
    const w = t.parentElement;
    const wide = t.scrollWidth > w.clientWidth + 1;
    let scrolled = 0;
    if (wide) { w.scrollLeft = 60; scrolled = w.scrollLeft; w.scrollLeft = 0; }
    return {id: section(w), wrapper: w.className, overflow: getComputedStyle(w).overflowX,
            box: box(w), wide: wide, scrolled: scrolled};
  });
  const images = Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0, box: box(i),
    column: i.parentElement.clientWidth, tile: !!i.closest('.tile')}));
  const order = Array.from(document.querySelectorAll('h2')).map(h => h.closest('section[id]') ? h.closest('section[id]').id : h.id);
  return {innerWidth: window.innerWidth, scrollWidth: page.scrollWidth, scrollX: window.scrollX, tables, images, order};
}"""


@pytest.fixture(scope="module")
def pages(report_build, tmp_path_factory):
    """The build's report rendered again with a comparison (as `--compare` adds it) and without one.

    Rendered from its report.json, plots and overlays: running the overlays again would cost
    seconds and change nothing the browser measures."""
    from mdeploy.report import collect
    from mdeploy.report.compare import compare, differences
    from mdeploy.report.html import render_html

    _, build_dir = report_build
    root = tmp_path_factory.mktemp("layout")
    here, there = root / "here" / "rep", root / "there" / "rep"
    shutil.copytree(build_dir, here)
    shutil.copytree(build_dir, there)
    report = json.loads((here / "report" / "report.json").read_text())
    other = collect.collect(there)
    report["compare"] = compare(report, other, str(there))
    report["compare"]["different"] = differences(here, there, report, other)
    out = {"compare": here / "report" / "compared.html", "plain": here / "report" / "plain.html"}
    out["compare"].write_text(render_html(report, here / "report"))
    out["plain"].write_text(render_html(dict(report, compare=None), here / "report"))
    return out


@pytest.fixture(scope="module")
def layouts(pages, tmp_path_factory):
    """What the browser measured, per (page, width); a full-page screenshot of each beside it."""
    from playwright.sync_api import sync_playwright

    shots = tmp_path_factory.mktemp("shots")
    out = {}
    with sync_playwright() as p:
        browser = launch(p)
        for name, html in pages.items():
            for width in WIDTHS:
                problems = []
                page = open_report(browser, html, width, problems)
                measured = page.evaluate(LAYOUT)
                page.mouse.wheel(400, 0)  # a sideways swipe on the page itself moves nothing
                measured["scrollX_after_swipe"] = page.evaluate("window.scrollX")
                measured["problems"] = problems
                page.screenshot(path=str(shots / f"{name}-{width}.png"), full_page=True)
                measured["shot"] = shots / f"{name}-{width}.png"
                out[(name, width)] = measured
                page.close()
        browser.close()
    return out


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ["compare", "plain"])
def test_the_page_never_scrolls_sideways(layouts, name, width):
    m = layouts[(name, width)]
    assert m["problems"] == []
    assert m["innerWidth"] == width
    assert m["scrollWidth"] <= m["innerWidth"], json.dumps(m["tables"])
    assert m["scrollX"] == 0 and m["scrollX_after_swipe"] == 0


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ["compare", "plain"])
def test_tables_scroll_inside_their_own_box(layouts, name, width):
    m = layouts[(name, width)]
    assert len(m["tables"]) >= (7 if name == "compare" else 5)
    for t in m["tables"]:
        assert t["wrapper"] == "scroll" and t["overflow"] == "auto", t
        assert 0 <= t["box"]["left"] and t["box"]["right"] <= width, t  # the box fits the screen
        if t["wide"]:
            assert t["scrolled"] > 0, t  # the table moves inside it
    wide = [t["id"] for t in m["tables"] if t["wide"]]
    if width == 400:
        assert "artifacts" in wide and len(wide) >= 3  # the phone needs it: several tables are wider than the screen
    else:
        assert "artifacts" not in wide  # on a desktop the artifact table shows whole


@pytest.mark.parametrize("width", WIDTHS)
def test_images_fit_and_overlays_stay_readable(layouts, width):
    m = layouts[("compare", width)]
    plots = [i for i in m["images"] if not i["tile"]]
    tiles = [i for i in m["images"] if i["tile"]]
    assert len(plots) == 4 and len(tiles) == 4 * 5
    for image in m["images"]:
        assert image["ok"], image["alt"]
        assert 0 <= image["box"]["left"] and image["box"]["right"] <= width, image
        assert image["box"]["width"] <= image["column"] + 0.5, image
    # a tile on a phone is still a picture of a person, not a thumbnail
    assert min(t["box"]["width"] for t in tiles) >= (140 if width == 400 else 190)
    tops = {i["alt"]: round(i["box"]["top"]) for i in plots}  # the two accuracy plots: side by side on a desktop, stacked on a phone
    assert (tops["accuracy size plot"] == tops["accuracy latency plot"]) == (width == 1400)
    if width == 1400:  # on a desktop each image's five artifacts sit side by side, in one row
        for start in range(0, len(tiles), 5):
            assert len({round(t["box"]["top"]) for t in tiles[start:start + 5]}) == 1


@pytest.mark.parametrize("width", WIDTHS)
def test_the_comparison_comes_first(layouts, width):
    order = layouts[("compare", width)]["order"]
    assert order[0] == "compare" and order.index("compare") < order.index("artifacts") < order.index("plots")
    assert "compare" not in layouts[("plain", width)]["order"]


def test_the_phone_page_is_a_screenshot_of_a_report(layouts):
    """The full page at 400 px: exactly 400 pixels wide (nothing hangs out), and long."""
    from PIL import Image

    for width in WIDTHS:
        with Image.open(layouts[("compare", width)]["shot"]) as shot:
            assert shot.width == width and shot.height > 2000


def test_overlay_tiles_are_light(pages):
    """Twenty tiles must not weigh more than the four strips they replace: JPEG, a few tens of KiB each."""
    import base64
    import re

    html = pages["plain"].read_text()
    tiles = re.findall(r'<div class="tile"><img src="data:image/(\w+);base64,([^"]+)"', html)
    assert len(tiles) == 4 * 5 and {kind for kind, _ in tiles} == {"jpeg"}
    sizes = [len(base64.b64decode(data)) for _, data in tiles]
    assert all(data[:3] == b"\xff\xd8\xff" for data in (base64.b64decode(d) for _, d in tiles))
    assert max(sizes) < 64 << 10 and len(html) < 1_500_000, (max(sizes), len(html))
