from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import dots_dataset

DOTS_RECIPE = """
name: {name}
model:
  arch: tiny_cpm
  params: {{resize: {resize}}}
  input: {{size: [64, 64], channels: bgr, range: [0, 255], mean: [10, 20, 30]}}
data:
  train: {{coco: {{annotations: {root}/train/annotations.json, images: {root}/train/images}}}}
  val: {{coco: {{annotations: {root}/val/annotations.json, images: {root}/val/images}}}}
train: {{epochs: 6, batch_size: 8, optimizer: {{lr: 4.0e-3}}, foreground_weight: 10}}
"""


@pytest.fixture(scope="session")
def dots(tmp_path_factory) -> Path:
    """Coloured-dot keypoint data a tiny model learns in seconds (+ a blank split for broken calibration)."""
    root = tmp_path_factory.mktemp("dots")
    dots_dataset(root / "train", 256, seed=1)
    dots_dataset(root / "val", 32, seed=2)
    dots_dataset(root / "blank", 32, seed=3, blank=True)
    dots_dataset(root / "calib", 32, seed=4)
    return root


@pytest.fixture(scope="session")
def dots_model(dots, tmp_path_factory) -> Path:
    """A tiny CPM trained on the dots (scores PCKh ~20%, far from zero), as a .keras file."""
    from mdeploy.build import build
    from mdeploy.recipe import load_recipe

    root = tmp_path_factory.mktemp("dots-model")
    path = root / "dots.yaml"
    path.write_text(DOTS_RECIPE.format(name="dots", resize="legacy", root=dots))
    old = os.environ.get("MDEPLOY_CACHE_DIR")
    os.environ["MDEPLOY_CACHE_DIR"] = str(root / "cache")
    try:
        result = build(load_recipe(path, ["export.tflite.variants=[fp32]"]), out_root=root / "build", only=["train"])
    finally:
        if old is None:
            del os.environ["MDEPLOY_CACHE_DIR"]
        else:
            os.environ["MDEPLOY_CACHE_DIR"] = old
    return result.build_dir / "model" / "model.keras"


def dots_import_recipe(folder: Path, model: Path, dots: Path, extra: str, name: str = "dots_import") -> Path:
    text = f"""
name: {name}
model:
  import: {{format: keras, path: {model}}}
  input: {{size: [64, 64], channels: bgr, range: [0, 255], mean: [10, 20, 30]}}
data:
  train: {{coco: {{annotations: {dots}/blank/annotations.json, images: {dots}/blank/images}}}}
  val: {{coco: {{annotations: {dots}/val/annotations.json, images: {dots}/val/images}}}}
  calibration: {{coco: {{annotations: {dots}/calib/annotations.json, images: {dots}/calib/images}}}}
"""
    # The dots model finds dots, not people: the photos-of-people check does not apply to it.
    extra = extra.replace("verify: {", "verify: {find_people: off, ") if "verify: {" in extra else extra + "verify: {find_people: off}\n"
    path = folder / f"{name}.yaml"
    path.write_text(text + extra)
    return path
