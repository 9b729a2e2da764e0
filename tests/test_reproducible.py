"""Two builds of the same recipe, in fresh processes with empty caches, give byte-identical
artifacts, except the ones the manifest names as non-deterministic, and those for the reason
it gives (docs/ci.md)."""

from __future__ import annotations

import json

from tests.helpers import run_cli, write


def test_same_recipe_same_bytes(tmp_path):
    recipe = write(tmp_path / "repro.yaml", """
        name: repro
        model:
          arch: tiny_cpm
          input: {size: [64, 64], channels: rgb, range: [-1, 1]}
          keypoints: aic14
        data:
          train: {synthetic: {count: 32, seed: 1, size: 64}}
          val: {synthetic: {count: 8, seed: 2, size: 64}}
          calibration: {synthetic: {count: 8, seed: 3, size: 64}}
        train: {epochs: 1, batch_size: 8}
        export:
          tflite: {variants: [fp32, fp16, dynamic, int8], calibration: {split: calibration, samples: 8}}
          onnx: {opset: 17}
          coreml: {precision: fp16}
          mace: {runtime: cpu}
        verify: {parity: warn, find_people: off}  # a few steps of training: reproducibility, not a model
        """)
    builds = []
    for i in (1, 2):
        proc = run_cli("build", str(recipe), "--out", str(tmp_path / "out"), "--json", "--no-cache",
                       env={"MDEPLOY_CACHE_DIR": str(tmp_path / f"cache{i}")})
        assert proc.returncode == 0, proc.stderr[-3000:]
        builds.append({a["id"]: a for a in json.loads(proc.stdout)["artifacts"]})
    first, second = builds
    assert set(first) == set(second)
    different = sorted(i for i in first if first[i]["sha256"] != second[i]["sha256"])
    flagged = sorted(i for i in first if not first[i]["reproducible"])
    assert different == ["model"], "only the canonical SavedModel may differ between two builds in the same folder"
    assert flagged == ["mace/yml", "model"]
    assert "object identity" in first["model"]["nondeterministic"]
    for artifact_id in ("train/model", "model/keras", "tflite/fp32", "tflite/int8", "onnx", "coreml", "mace"):
        assert first[artifact_id]["reproducible"] and first[artifact_id]["sha256"] == second[artifact_id]["sha256"], artifact_id
