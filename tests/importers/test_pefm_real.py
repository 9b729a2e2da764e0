"""The PoseEstimationForMobile CPM release on real labelled people (../shared/data/realkp).

The numbers a build prints must hold on real people: the AI Challenger file is read as it
is shipped (its own joint order, mapped by name), COCO people are scored on the joints they
share with the model, MPII people with MPII's head size. Skipped when ../shared is absent.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mdeploy.build import build
from mdeploy.recipe import load_recipe
from tests.helpers import REPO, SHARED, write

REALKP = SHARED / "data" / "realkp"

# recipes/pefm_cpm.yaml with three real splits (--set overrides on the shipped recipe, so its stages
# are keyed as test_pefm.py's builds of it: the import and TFLite fp32 are shared, pefm_cache).
OVERRIDES = [
    f"data.val=[{{name: aic, kind: real, coco: {{annotations: {REALKP}/aic/test_aic.json, images: {REALKP}/aic}}}},"
    f" {{name: coco, kind: real, coco: {{annotations: {REALKP}/coco/test_coco.json, images: {REALKP}/coco}}}},"
    f" {{name: mpii, kind: real, mpii: {{annotations: {REALKP}/mpii/test_mpii.json, images: {REALKP}/mpii}}}}]",
    "export.tflite={variants: [fp32]}",
    "verify.accuracy={max_drop: 1.0, splits: {coco: {max_drop: 2.0}}}",
]


@pytest.fixture(scope="module")
def real_build(tmp_path_factory, pefm_cache):
    if not (REALKP / "aic" / "test_aic.json").is_file() or not (SHARED / "reference" / "pefm").is_dir():
        pytest.skip(f"real people and the PEFM release are not here ({SHARED}): ../shared is absent")
    import os

    root = tmp_path_factory.mktemp("pefm-real")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    recipe = load_recipe(REPO / "recipes" / "pefm_cpm.yaml", OVERRIDES)
    return build(recipe, out_root=root / "build", cache=pefm_cache)


def gate(result, artifact, split):
    return next(g for g in result.gates if g.gate == "accuracy" and g.artifact == artifact and g.split == split)


def test_the_ai_challenger_file_as_it_is_scores_the_release_at_its_real_accuracy(real_build):
    model = gate(real_build, "model", "aic")
    # 78.3% with the keypoints reordered by hand; the file read by position gave 4.3%.
    assert model.metrics["metrics"]["pckh@0.5"] == pytest.approx(78.3, abs=2.0)
    assert model.metrics["primary"] == "pckh@0.5" and model.metrics["split"]["kind"] == "real"
    assert model.metrics["split"]["people"] == 9 and model.metrics["split"]["keypoints"]["reordered"] is True
    assert gate(real_build, "tflite/fp32", "aic").status == "passed"
    # 9 people are coarse: the gate says how many joints the percentage counts (78.3% = 54 of 69).
    assert model.metrics["joints"]["pckh@0.5"] == 69
    (check,) = gate(real_build, "tflite/fp32", "aic").checks
    assert check["detail"].endswith("on aic (its original crops) (69 joints: one is 1.4 points)"), check["detail"]
    # The gate compares means over 23 crops of each person (auto: 200 person-crops), the same crops
    # for the release and its fp32 file, which find the same joints in every one of them.
    assert check["detail"].startswith("mean of 23 crops of each person: "), check["detail"]
    crops = model.metrics["crops"]
    assert crops["copies"] == 23 and crops["people"] == 9 and len(crops["per_copy"]) == 23
    assert crops["per_copy"][0] == model.metrics["metrics"]["pckh@0.5"]  # copy 0 is the original crop
    assert len(set(crops["per_copy"])) > 3  # the other crops move weak joints: fp32's own PCKh varies
    assert abs(np.mean(crops["per_copy"]) - crops["metrics"]["pckh@0.5"]) < 0.01  # same joints in every copy: the mean
    fp32 = gate(real_build, "tflite/fp32", "aic").metrics
    assert fp32["crops"]["per_copy"] == crops["per_copy"] and fp32["drop"] == 0 and fp32["drop_se"] == 0
    # Joint by joint, fp32 gets the same ones right; 44 of the 69 the release finds with one clear peak.
    changes = gate(real_build, "tflite/fp32", "aic").metrics["changed_joints"]
    assert changes == {"lost": 0, "gained": 0, "weak_in_source": 0, "clear_joints": 44,
                       "clear_reference": changes["clear_value"], "clear_value": changes["clear_value"]}, changes
    assert "instances" not in gate(real_build, "tflite/fp32", "aic").metrics  # kept out of the manifest


def test_every_split_is_scored_with_the_metric_its_people_allow(real_build):
    coco, mpii = gate(real_build, "model", "coco"), gate(real_build, "model", "mpii")
    assert coco.metrics["primary"] == "pck@0.2_torso" and coco.metrics["metrics"]["pckh@0.5"] is None
    assert coco.metrics["split"]["keypoints"]["missing"] == ["head_top", "neck"]
    assert 40 < coco.metrics["metrics"]["pck@0.2_torso"] < 95
    assert mpii.metrics["primary"] == "pckh@0.5" and "upper neck" in mpii.metrics["normalisers"]["head"]
    assert mpii.metrics["metrics"]["pefm_pckh"] is None  # PEFM's rules need every joint and AI Challenger's neck
    assert gate(real_build, "tflite/fp32", "coco").checks[0]["limit"] == 2.0  # per-split gate
    assert gate(real_build, "tflite/fp32", "mpii").checks[0]["limit"] == 1.0
    manifest = json.loads((real_build.build_dir / "manifest.json").read_text())
    assert [(v["name"], v["kind"], v["people"], v["metric"]) for v in manifest["validation"]] == [
        ("aic", "real", 9, "pckh@0.5"), ("coco", "real", 12, "pck@0.2_torso"), ("mpii", "real", 5, "pckh@0.5")]
    assert manifest["provenance"]["known"] is False  # imported: what it was trained on is only stated
    report = json.loads((real_build.build_dir / "report" / "report.json").read_text())
    row = next(a for a in report["artifacts"] if a["id"] == "tflite/fp32")
    assert set(row["accuracy_by_split"]) == {"aic", "coco", "mpii"}
    html = (real_build.build_dir / "report" / "report.html").read_text()
    assert "coco (real): pck@0.2_torso" in html and "12 people in 4 images" in html


def test_pefm_pckh_follows_the_release_benchmark_rules(real_build):
    """An independent re-computation of PoseEstimationForMobile's benchmark rules (scipy's Gaussian
    filter, first argmax, (cell + 1) x scale truncated, 1.0 x |head top - neck|, every joint) on the
    same heatmaps agrees with mdeploy's `pefm_pckh` within 0.1 point."""
    import math

    from scipy.ndimage import gaussian_filter

    from mdeploy.data.coco import load_coco
    from mdeploy.evaluate.evaluator import prepare
    from mdeploy.runners import open_runner
    from mdeploy.spec import ModelSpec

    spec = ModelSpec.load(real_build.build_dir / "model" / "spec.json")
    ds = load_coco(REALKP / "aic" / "test_aic.json", REALKP / "aic", spec.keypoints)
    batch, _ = prepare(spec, ds, range(len(ds)))
    heatmaps = open_runner("saved_model", real_build.build_dir / "model" / "saved_model")(batch)
    raw = json.loads((REALKP / "aic" / "test_aic.json").read_text())
    file_order = [12, 13, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]  # model channel k <- file joint file_order[k]
    people = [a for a in raw["annotations"] if any(a["keypoints"][2::3])]
    scores = []
    for person, sample, heat in zip(people, ds.samples, heatmaps):
        kps = np.asarray(person["keypoints"], float).reshape(-1, 3)[file_order]
        x0, y0, side, _ = sample.crop_box("person")
        h, w = heat.shape[:2]
        hits = []
        for k in range(14):
            smooth = gaussian_filter(heat[:, :, k], sigma=5)
            row, col = np.unravel_index(np.argmax(smooth), smooth.shape)
            x, y = int(x0 + (col + 1) * side / w), int(y0 + (row + 1) * side / h)
            threshold = math.dist(kps[0, :2], kps[1, :2])
            hits.append(math.dist((x, y), kps[k, :2]) <= threshold)
        scores.append(np.mean(hits))
    expected = 100 * float(np.mean(scores))
    assert gate(real_build, "model", "aic").metrics["metrics"]["pefm_pckh"] == pytest.approx(expected, abs=0.1)


def test_a_release_fed_the_wrong_preprocessing_fails_the_build(tmp_path, cli):
    """RGB 0..1 instead of BGR 0..255: the release sees nobody. Exit 1 with the preprocessing hint,
    the manifest still written; before, every gate passed over 'n/a'."""
    if not (SHARED / "reference" / "pefm").is_dir():
        pytest.skip(f"the PEFM release is not here ({SHARED}): ../shared is absent")
    path = write(tmp_path / "wrong.yaml", f"""
        extends: {REPO / "recipes" / "pefm_cpm.yaml"}
        name: wrong
        model: {{input: {{channels: rgb, range: [0, 1]}}}}
        export: {{tflite: {{variants: [fp32]}}}}
        """)
    result = cli("build", path, "--out", tmp_path / "b")
    assert result.exit_code == 1, result.stderr
    assert "people of model" in result.stderr and "model.input.channels" in result.stderr
    manifest = json.loads((tmp_path / "b" / "wrong" / "manifest.json").read_text())
    (people,) = manifest["gates"]["people"]["results"]
    assert people["status"] == "failed" and "finds no one" in people["checks"][0]["detail"]
    parity = manifest["gates"]["parity"]["results"][0]
    assert parity["status"] == "failed"  # nothing drawn: nothing compared, never a pass


def test_fine_tuning_starts_from_the_release_weights(tmp_path):
    """recipes/pefm_finetune.yaml: mv2_cpm initialised from the release's frozen graph keeps the
    release's accuracy on real people after a couple of fine-tuning steps, and says where it started."""
    if not (REALKP / "aic" / "test_aic.json").is_file() or not (SHARED / "reference" / "pefm").is_dir():
        pytest.skip(f"real people and the PEFM release are not here ({SHARED}): ../shared is absent")
    from mdeploy.pipeline import Cache

    recipe = load_recipe(REPO / "recipes" / "pefm_finetune.yaml", [
        "data.train={synthetic: {count: 32, seed: 1}}", "train.max_steps=2", "train.batch_size=8",
        "export.tflite.variants=[fp32]", "train.optimizer.lr=1e-6",
    ])
    result = build(recipe, out_root=tmp_path / "b", cache=Cache(tmp_path / "cache"))
    assert not result.failed_gates, [(g.gate, g.artifact, g.split, g.checks) for g in result.failed_gates]
    model = gate(result, "model", "aic_real")
    assert model.metrics["metrics"]["pckh@0.5"] == pytest.approx(78.3, abs=3.0)
    provenance = result.manifest["provenance"]
    assert provenance["known"] and provenance["note"] is None  # not "synthetic only": it started from the release
    assert "starting from model.pb" in provenance["summary"]
