"""The report's 3-D skeletons: a volumetric build shows each artifact's decoded skeleton per sample.

A tiny LPSKI build (the session's build of tests/families/test_volumetric_training.py: trained on
generated 3-D people, exported as TFLite fp32 and int8, ONNX, MACE and Core ML, which cannot run
on Linux) writes its report; every overlay sample then has one 3-D tile per artifact, in the
manifest's order, the canonical model first and Core ML greyed with its reason, and the numbers
in report.json and in the captions are what the family decodes from each artifact's outputs.
A 2-D build (the session's heatmap build) has no 3-D tiles at all.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.report.conftest import launch, open_report

ARTIFACTS = ["model", "tflite/fp32", "tflite/int8", "onnx", "coreml", "mace"]  # the manifest's order
GREYED = "coreml"  # needs macOS
RUNNABLE = [a for a in ARTIFACTS if a != GREYED]
SAMPLES = ["astronaut", "grace_hopper", "000000", "000001"]  # the package photos, then the first val images


@pytest.fixture(scope="module")
def volumetric_build(volumetric_training_build):
    result = volumetric_training_build
    assert result.report == "written" and not result.failed_gates
    manifest = json.loads((result.build_dir / "manifest.json").read_text())
    models = [a["id"] for a in manifest["artifacts"] if a["format"] in ("saved_model", "tflite", "onnx", "coreml", "mace")]
    assert models == ARTIFACTS, models
    return result.build_dir


@pytest.fixture(scope="module")
def decoded(volumetric_build):
    """What the family decodes from each runnable artifact on each sample: (outputs, skeleton) by (sample, artifact)."""
    from mdeploy.families import family_of, run_outputs
    from mdeploy.report.overlays import sample_images
    from mdeploy.runners import open_runner
    from mdeploy.spec import ModelSpec

    spec = ModelSpec.load(volumetric_build / "model" / "spec.json")
    family = family_of(spec)
    manifest = json.loads((volumetric_build / "manifest.json").read_text())
    paths = {a["id"]: (a["format"], volumetric_build / a["path"]) for a in manifest["artifacts"]}
    sources = sorted((volumetric_build / "report" / "overlays" / "sources").iterdir())
    out = {}
    for artifact in RUNNABLE:
        runner = open_runner(*paths[artifact])
        for sample, rgb in sample_images(sources):
            x, affine = spec.preprocessing.apply(rgb)
            outputs = run_outputs(runner, x[None])
            out[(sample, artifact)] = (outputs, family.skeleton3d(outputs, spec, affine))
    return spec, out


def test_every_sample_has_a_3d_tile_per_artifact(volumetric_build):
    report = json.loads((volumetric_build / "report" / "report.json").read_text())
    assert [o["sample"] for o in report["overlays"]] == SAMPLES
    assert [s["sample"] for s in report["skeletons"]] == SAMPLES
    for entry in report["skeletons"]:
        assert [t["artifact"] for t in entry["tiles"]] == ARTIFACTS  # the canonical model first, as the overlays
        assert entry["reference"] == "model" and entry["root"] == "pelvis"
        assert entry["unavailable"] == {"coreml": "needs macOS"}  # the overlays' reason, the same greyed treatment
        for tile in entry["tiles"]:
            assert (volumetric_build / "report" / "overlays" / tile["image"]).is_file()
        greyed = entry["tiles"][ARTIFACTS.index(GREYED)]
        assert greyed["joints_mm"] is None and greyed["mean_mm"] is None and greyed["why"] == "needs macOS"


def test_the_numbers_are_what_the_family_decodes(volumetric_build, decoded):
    from mdeploy.families.volumetric import coords_of, layout_of, volume_mm
    from mdeploy.report.skeletons import mean_distance

    spec, out = decoded
    root = spec.keypoints.root_index
    report = json.loads((volumetric_build / "report" / "report.json").read_text())
    for entry in report["skeletons"]:
        reference = out[(entry["sample"], "model")][1]
        for tile in [t for t in entry["tiles"] if t["artifact"] in RUNNABLE]:
            outputs, skeleton = out[(entry["sample"], tile["artifact"])]
            assert skeleton.shape == (17, 3) and np.all(skeleton[root] == 0)
            # root-relative, in the volume's own mm, as parity compares artifacts
            mm = volume_mm(coords_of(outputs, spec), layout_of(spec))[0]
            np.testing.assert_allclose(skeleton, mm - mm[root], atol=1e-6)
            np.testing.assert_allclose(tile["joints_mm"], skeleton, atol=0.006)
            if tile["artifact"] == "model":
                assert tile["mean_mm"] is None
            else:
                assert tile["mean_mm"] == pytest.approx(mean_distance(reference, skeleton, root), abs=6e-5)
        # every cube holds every skeleton drawn in it
        assert entry["half_mm"] >= max(np.abs(out[(entry["sample"], t["artifact"])][1]).max() for t in entry["tiles"] if t["artifact"] in RUNNABLE)


def test_the_browser_shows_the_3d_tiles_with_their_numbers(volumetric_build, decoded, tmp_path):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from mdeploy.report.skeletons import mean_distance

    spec, out = decoded
    html = volumetric_build / "report" / "report.html"
    measured = {}
    with sync_playwright() as p:
        browser = launch(p)
        for width in (1400, 400):
            problems = []
            page = open_report(browser, html, width, problems)
            measured[width] = page.evaluate("""() => ({
              scrollWidth: document.scrollingElement.scrollWidth,
              figures: Array.from(document.querySelectorAll('figure.skeleton')).map(f => ({
                id: f.id, caption: f.querySelector('figcaption').innerText,
                tiles: Array.from(f.querySelectorAll('.tile')).map(t => {
                  const i = t.querySelector('img'), r = i.getBoundingClientRect();
                  return {text: t.innerText, ok: i.complete && i.naturalWidth > 0, left: r.left, right: r.right,
                          width: r.width, top: Math.round(r.top), greyed: t.classList.contains('greyed')};
                })}))
            })""")
            measured[width]["problems"] = problems
            if width == 1400:
                for figure in page.query_selector_all("figure.skeleton"):
                    figure.screenshot(path=str(tmp_path / f"{figure.get_attribute('id')}.png"))
            page.close()
        browser.close()
    for width, m in measured.items():
        assert m["problems"] == [] and m["scrollWidth"] <= width
        assert [f["id"] for f in m["figures"]] == [f"skeleton-{s}" for s in SAMPLES]
        for figure in m["figures"]:
            tiles = figure["tiles"]
            assert [t["text"].splitlines()[0] for t in tiles] == ARTIFACTS  # text labels, not pixels
            assert all(t["ok"] and 0 <= t["left"] and t["right"] <= width for t in tiles)
            # readable on a phone; on a desktop six tiles share main's 1180 px (187 px each; five had 225)
            assert min(t["width"] for t in tiles) >= (140 if width == 400 else 180)
            greyed = ARTIFACTS.index(GREYED)
            assert [t["greyed"] for t in tiles] == [a == GREYED for a in ARTIFACTS]
            assert "not run here: needs macOS" in tiles[greyed]["text"]
            if width == 1400:
                assert len({t["top"] for t in tiles}) == 1  # a desktop shows a sample's artifacts in one row
            sample = figure["id"].removeprefix("skeleton-")
            reference = out[(sample, "model")][1]
            compared = RUNNABLE[1:]  # every runnable artifact but the reference
            shown = dict(re.findall(rf"({'|'.join(map(re.escape, compared))}) ([0-9.e+-]+) mm", figure["caption"]))
            assert set(shown) == set(compared), figure["caption"]
            for artifact, text in shown.items():
                expected = mean_distance(reference, out[(sample, artifact)][1], spec.keypoints.root_index)
                assert float(text) == pytest.approx(expected, rel=6e-3, abs=6e-5), (artifact, figure["caption"])
                tile = tiles[ARTIFACTS.index(artifact)]
                assert f"{text} mm from model" in tile["text"]  # the tile says the caption's number
            assert "(1 not run here)" in figure["caption"] and "relative to the pelvis joint" in figure["caption"]
    for sample in SAMPLES:  # each figure is a picture of skeletons, not an empty box
        pixels = np.asarray(Image.open(tmp_path / f"skeleton-{sample}.png").convert("L"), dtype=np.float32)
        assert pixels.shape[1] > 1000 and pixels.std() > 10 and (pixels < 200).mean() > 0.005, sample


def test_a_greyed_tile_has_no_colour_and_the_others_their_artifacts(volumetric_build):
    from PIL import Image

    from mdeploy.report.plots import artifact_colours

    report = json.loads((volumetric_build / "report" / "report.json").read_text())
    colours = artifact_colours(report)
    for tile in report["skeletons"][0]["tiles"]:
        assert tile["colour"] == colours[tile["artifact"]]  # the colour it has in every plot
        rgb = np.asarray(Image.open(volumetric_build / "report" / "overlays" / tile["image"]).convert("RGB"), dtype=np.int16)
        spread = rgb.max(axis=2) - rgb.min(axis=2)  # 0 for any grey
        frame = rgb[1, rgb.shape[1] // 2]
        if tile["why"]:
            assert spread.max() <= 12, tile["artifact"]
        else:
            wanted = np.array([int(tile["colour"][i:i + 2], 16) for i in (1, 3, 5)])
            assert np.abs(frame - wanted).max() <= 12, (tile["artifact"], frame, wanted)


def test_a_2d_build_has_no_3d_tiles(report_build):
    from mdeploy.families import get_family

    _, build_dir = report_build
    report = json.loads((build_dir / "report" / "report.json").read_text())
    assert report["skeletons"] == [] and len(report["overlays"]) == 4
    html = (build_dir / "report" / "report.html").read_text()
    assert 'id="skeletons"' not in html and 'class="skeleton"' not in html
    outputs = {"heatmaps": np.zeros((1, 8, 8, 14), np.float32)}
    assert get_family("heatmap").skeleton3d(outputs, None, None) is None  # the base hook: no depth, no 3-D tile
    assert get_family("paf").skeleton3d(outputs, None, None) is None


def test_a_skeleton_that_is_not_finite_is_said_not_numbered(tmp_path):
    """A broken artifact (NaN joints) gets no distance and says so; report.json stays strict JSON."""
    from mdeploy.keypoints import get_keypoint_set
    from mdeploy.report import skeletons

    kps = get_keypoint_set("h36m17")
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 300, (17, 3))
    reference -= reference[kps.root_index]
    broken = reference.copy()
    broken[3] = np.nan
    rows = [("model", reference, None), ("tflite/int8", broken, None), ("onnx", reference + 1.0, None)]
    entry = skeletons.render(tmp_path, 0, "photo", rows, kps, {"model": "#1f77b4"})
    tiles = {t["artifact"]: t for t in entry["tiles"]}
    assert tiles["tflite/int8"]["mean_mm"] is None and tiles["tflite/int8"]["finite"] is False
    assert tiles["tflite/int8"]["joints_mm"][3] == [None, None, None]
    assert tiles["onnx"]["mean_mm"] == pytest.approx(np.sqrt(3.0), abs=1e-4)  # every non-root joint moved (1, 1, 1) mm
    json.dumps(entry, allow_nan=False)
    text = skeletons.caption(entry)
    assert "onnx 1.73 mm" in text and "joints not finite: tflite/int8" in text and "nan" not in text.lower()
    assert entry["half_mm"] >= np.nanmax(np.abs(reference)) and entry["half_mm"] % 50 == 0
    assert skeletons.render(tmp_path, 1, "photo", [("model", None, "needs macOS")], kps, {}) is None  # nothing ran: no 3-D tiles
