"""The build report: its numbers, its JUnit, its comparison, and how it renders in a real browser.

The browser is Debian's Chromium driven by Playwright (headless): the report must load with
no console message or page error, every image must decode, and each plot and overlay, cut
out of a screenshot, must show a picture rather than an empty box.
"""

from __future__ import annotations

import copy
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from tests.report.conftest import HOSTILE, launch, open_report


def test_report_json_holds_the_builds_numbers(report_build):
    _, build_dir = report_build
    report = json.loads((build_dir / "report" / "report.json").read_text())
    manifest = json.loads((build_dir / "manifest.json").read_text())
    rows = {a["id"]: a for a in report["artifacts"]}
    assert set(rows) == {"model", "tflite/fp32", "tflite/fp16", "onnx", "coreml"}
    # What the numbers mean: the model saw synthetic figures only, and the split is synthetic.
    assert report["provenance"]["note"] == "trained on synthetic figures only: do not expect it to find real people"
    assert [(v["name"], v["kind"], v["people"]) for v in report["validation"]] == [("val", "synthetic", 8)]
    html = (build_dir / "report" / "report.html").read_text()
    assert "trained on synthetic figures only: do not expect it to find real people" in html
    assert "val (synthetic): pckh@0.5" in html
    by_id = {a["id"]: a for a in manifest["artifacts"]}
    for artifact_id, row in rows.items():
        assert (row["size"], row["sha256"]) == (by_id[artifact_id]["size"], by_id[artifact_id]["sha256"])
    parity = {g["artifact"]: g for g in manifest["gates"]["parity"]["results"]}
    assert rows["tflite/fp16"]["parity"]["max_abs"] == parity["tflite/fp16"]["metrics"]["max_abs"]
    assert rows["coreml"]["status"] == "unverified" and "macOS" in rows["coreml"]["parity"]["reason"]
    assert len(rows["tflite/fp32"]["accuracy"]["per_joint"]) == 14
    assert ["description", HOSTILE] in report["recipe"]["summary"]
    host = report["bench"]["host"]
    assert {(r["artifact"], r["threads"]) for r in host["results"]} == {(a, t) for a in ("tflite/fp32", "tflite/fp16") for t in (1, 2)}
    assert set(report["plots"]) == {"latency", "accuracy_size", "accuracy_latency", "per_joint"}
    assert [o["sample"] for o in report["overlays"]] == ["astronaut", "grace_hopper", "000000", "000001"]
    assert report["overlays"][0]["unavailable"] == {"coreml": "needs macOS"}


def test_junit_lists_every_gate(report_build):
    _, build_dir = report_build
    manifest = json.loads((build_dir / "manifest.json").read_text())
    root = ET.parse(build_dir / "report" / "junit.xml").getroot()
    suites = {s.get("name").split(".")[-1]: s for s in root}
    assert set(suites) == {"parity", "accuracy", "ops", "bench", "people"}
    for kind, suite in suites.items():
        assert int(suite.get("tests")) == len(manifest["gates"][kind]["results"]) == len(list(suite))
    coreml = [c for c in suites["parity"] if c.get("name") == "coreml"][0]
    assert coreml.find("skipped") is not None
    assert int(root.get("failures")) == 0


def test_report_renders_in_a_real_browser(report_build, tmp_path):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    _, build_dir = report_build
    html = build_dir / "report" / "report.html"
    assert "<script" not in html.read_text().replace("&lt;script&gt;", "")  # self-contained, no scripts, hostile text escaped
    with sync_playwright() as p:
        browser = launch(p)
        problems = []
        page = open_report(browser, html, 1280, problems)
        images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.naturalWidth, i.naturalHeight])")
        scripts = page.evaluate("document.querySelectorAll('script').length")
        text = page.inner_text("body")
        shots = {}
        for figure in page.query_selector_all("figure"):
            name = figure.get_attribute("id")
            figure.screenshot(path=str(tmp_path / f"{name}.png"))
            shots[name] = tmp_path / f"{name}.png"
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert problems == []
    assert scripts == 0 and HOSTILE in text
    assert len(images) == 4 + 4 * 5 and all(w > 100 and h > 100 for _, w, h in images)  # 4 plots, 4 images x 5 artifacts
    assert set(shots) == {"plot-latency", "plot-accuracy_size", "plot-accuracy_latency", "plot-per_joint", "overlay-astronaut",
                          "overlay-grace_hopper", "overlay-000000", "overlay-000001"}
    for name, path in shots.items():
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        assert pixels.shape[0] > 150 and pixels.shape[1] > 300, name
        assert pixels.std() > 20, f"{name} looks blank"
        assert (pixels < 200).mean() > 0.005, f"{name} has almost nothing drawn"  # axes, labels and data; blank is 0
    page_pixels = np.asarray(Image.open(tmp_path / "page.png").convert("L"))
    assert page_pixels.shape[0] > 3000  # the whole report, tables and all


def test_unchanged_build_keeps_its_report(report_build):
    recipe, build_dir = report_build
    from mdeploy.build import build
    from mdeploy.pipeline import Cache
    from mdeploy.recipe import load_recipe

    before = (build_dir / "report" / "report.html").stat().st_mtime_ns
    result = build(load_recipe(recipe), out_root=build_dir.parent, cache=Cache(build_dir.parent.parent / "cache"))
    assert result.report == "unchanged" and result.written == "unchanged"
    assert (build_dir / "report" / "report.html").stat().st_mtime_ns == before


def test_compare_flags_only_changes_beyond_the_spread(report_build, tmp_path, cli):
    _, build_dir = report_build
    other = tmp_path / "other" / "rep"
    shutil.copytree(build_dir, other)
    bench_file = other / "bench" / "host.json"
    doc = json.loads(bench_file.read_text())
    slower, noisy = copy.deepcopy(doc["results"][0]), copy.deepcopy(doc["results"][1])
    for result, factor, spread in ((slower, 0.5, 1.0), (noisy, 0.99, 1.0)):
        # the other build ran faster: by half (significant) and by 1% (inside the floor)
        lat = result["latency"]
        lat["median_ms"] *= factor
        lat["trial_medians_ms"] = [v * factor for v in lat["trial_medians_ms"]]
        lat["spread_pct"] = spread
    doc["results"] = [slower, noisy] + doc["results"][2:]
    bench_file.write_text(json.dumps(doc))
    result = cli("report", build_dir, "--compare", other, "--json")
    assert result.exit_code == 0, result.output
    compare = json.loads(result.stdout)["compare"]
    assert all(a["size_delta"] == 0 and a["same_bytes"] for a in compare["artifacts"])
    flags = {(c["artifact"], c["threads"]): c["significant"] for c in compare["latency"]}
    assert flags[(slower["artifact"], slower["threads"])] is True
    assert flags[(noisy["artifact"], noisy["threads"])] is False
    html = (build_dir / "report" / "report.html").read_text()
    assert "Compared with" in html and "within the trials&#39; spread" in html


def test_a_failed_gate_shows_in_report_and_junit(report_build, tmp_path, cli, monkeypatch):
    recipe, build_dir = report_build
    # The session build's cache (as test_unchanged_build_keeps_its_report): only the gate differs.
    monkeypatch.setenv("MDEPLOY_CACHE_DIR", str(build_dir.parent.parent / "cache"))
    result = cli("build", recipe, "--out", tmp_path / "b", "--set", "bench.max_latency_ms.host=0.000001",
                 "--junit", tmp_path / "junit.xml")
    assert result.exit_code == 1
    root = ET.parse(tmp_path / "junit.xml").getroot()
    failures = [c for c in root.iter("testcase") if c.find("failure") is not None]
    assert failures and all("@host" in c.get("name") for c in failures)
    assert "median latency" in failures[0].find("failure").get("message")
    html = (tmp_path / "b" / "rep" / "report" / "report.html").read_text()
    assert "a gate failed" in html and "Gates that did not pass" in html


def test_report_command_errors(cli, tmp_path):
    result = cli("report", tmp_path)
    assert result.exit_code == 2
    assert result.output.splitlines()[0] == f"error: {tmp_path} is not a build folder (no manifest.json)"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text('{"schema": "mdeploy.manifest/1", "name": "b", "artifacts": []}')
    result = cli("report", tmp_path / "b", "--compare", tmp_path / "missing")
    assert result.exit_code == 2
    assert result.output.splitlines()[0] == f"error: --compare {tmp_path / 'missing'} is not a build folder (no manifest.json)"
    (tmp_path / "b" / "manifest.json").write_text("{}")
    result = cli("report", tmp_path / "b")
    assert result.exit_code == 2
    assert result.output.splitlines()[0] == (
        f"error: {tmp_path / 'b' / 'manifest.json'} is not an mdeploy manifest (schema None, expected 'mdeploy.manifest/1')")
    (tmp_path / "b" / "manifest.json").write_text("{trunc")
    result = cli("report", tmp_path / "b")
    assert result.exit_code == 2 and "cannot be read as JSON" in result.output.splitlines()[0]
    assert not (tmp_path / "b" / "report").exists()  # nothing written on bad input


def test_bundle_is_reproducible_and_complete(report_build, tmp_path, cli):
    import zipfile

    from mdeploy.report.bundle import write_bundle

    _, build_dir = report_build
    a = write_bundle(build_dir, tmp_path / "a.zip")
    b = write_bundle(build_dir, tmp_path / "b.zip")
    assert a.read_bytes() == b.read_bytes()
    names = set(zipfile.ZipFile(a).namelist())
    for expected in ("rep/manifest.json", "rep/report/report.html", "rep/report/junit.xml", "rep/tflite/rep_fp16.tflite",
                     "rep/bench/host.json", "rep/model/spec.json"):
        assert expected in names
    bad = cli("build", "nothing.yaml", "--bundle", tmp_path / "x.tar")
    assert bad.exit_code == 2 and "zip" in bad.output
    assert not Path(tmp_path / "x.tar").exists()


def test_one_size_unit_everywhere():
    """The CLI and the report write sizes alike, in binary units; the report shows exact bytes on hover."""
    from mdeploy.units import human_size

    assert human_size(7_222_813) == "6.9 MiB" and human_size(1536) == "1.5 KiB" and human_size(12) == "12 B"
    assert human_size(-2048, signed=True) == "-2.0 KiB" and human_size(2048, signed=True) == "+2.0 KiB"


def test_report_sizes_use_the_cli_units(report_build):
    from mdeploy.units import human_size

    _, build_dir = report_build
    manifest = json.loads((build_dir / "manifest.json").read_text())
    html = (build_dir / "report" / "report.html").read_text()
    fp32 = next(a for a in manifest["artifacts"] if a["id"] == "tflite/fp32")
    assert f'title="{fp32["size"]:,} bytes">{human_size(fp32["size"])}</td>' in html
