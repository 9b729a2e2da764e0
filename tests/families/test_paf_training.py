"""A multi-person model trained by `mdeploy build`: the loop asks the PAF family for its data,
targets, loss and validation (synthetic scenes of several figures, COCO keypoint AP)."""

from __future__ import annotations

import json

from tests.helpers import write

RECIPE = """
name: openpose_tiny_train
model:
  arch: openpose_tiny
  input: {size: [64, 64], channels: bgr, range: [0, 255]}
  keypoints: coco18
data:
  train: {synthetic: {count: 24, seed: 1, size: 64, people: [2, 3]}}
  val:
    - {name: synthetic, synthetic: {count: 4, seed: 2, size: 64, people: [2, 3]}}
train: {epochs: 1, batch_size: 8}
export:
  tflite: {variants: [fp32]}
verify: {find_people: warn}
"""


def test_build_trains_a_multi_person_model_on_synthetic_scenes(tmp_path):
    from mdeploy.build import build
    from mdeploy.pipeline import Cache
    from mdeploy.recipe import load_recipe

    recipe = load_recipe(write(tmp_path / "tiny.yaml", RECIPE))
    result = build(recipe, out_root=tmp_path / "build", cache=Cache(tmp_path / "cache"))
    training = result.manifest["training"]
    assert training["steps"] == 3  # 24 scenes, not the people in them, make the epoch
    history = training["history"]
    assert history and "val_ap_oks" in history[-1] and history[-1]["loss"] > 0
    spec = json.loads((result.build_dir / "model" / "spec.json").read_text())
    assert spec["family"] == "paf" and [o["name"] for o in [spec["output"], *spec["extra_outputs"]]] == ["heatmaps", "pafs"]
    assert spec["output"]["shape"] == [1, 8, 8, 19] and spec["extra_outputs"][0]["shape"] == [1, 8, 8, 38]
    assert spec["source"]["trained_on"]["splits"][0]["kind"] == "synthetic"
    parity = next(g for g in result.gates if g.gate == "parity")
    checks = {c["check"]: c for c in parity.checks}
    assert checks["shape"]["ok"] and checks["max_abs"]["ok"] and checks["max_abs"]["value"] < 1e-4
    # three steps teach a tiny model nobody: parity cannot pass on people it does not find, and says why
    agreement = checks["agreement"]
    assert agreement["ok"] or (agreement["value"] is None and "finds nobody" in agreement["detail"])
    accuracy = next(g for g in result.gates if g.gate == "accuracy" and g.artifact == "model")
    assert accuracy.metrics["primary"] == "ap_oks" and accuracy.metrics["samples"] == 4
