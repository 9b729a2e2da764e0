"""`mdeploy predict --focal --principal --root-depth`: a 3-D model's joints in camera space, in mm.

A tiny LPSKI (random weights, peaked volumes) is imported with the model stage only; its
--json rows gain `camera_mm` [X, Y, Z] that project back onto the row's own x, y through the
camera given. Every wrong use is one message and exit 2, before any model runs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mdeploy.build import build
from mdeploy.recipe import load_recipe
from tests.families.test_volumetric_family import DEPTH, IMAGENET, JOINTS, save_tiny_lpski
from tests.helpers import tiny_recipe, write

FOCAL, PRINCIPAL, ROOT = (600.0, 580.0), (50.0, 45.0), 4200.0


@pytest.fixture(scope="module")
def lpski(tmp_path_factory):
    """(SavedModel folder of the built tiny LPSKI, its spec.json, a 96x96 photo)."""
    root = tmp_path_factory.mktemp("camera3d")
    model = save_tiny_lpski(root / "lpski.keras")
    recipe = write(root / "cam3d.yaml", f"""
name: cam3d
model:
  import: {{format: keras, path: {model}}}
  input: {IMAGENET}
  keypoints: h36m17
  volume: {{depth_bins: {DEPTH}}}
""")
    result = build(load_recipe(recipe), out_root=root / "build", only=["model"])
    photo = root / "person.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(photo)
    return result.build_dir / "model" / "saved_model", result.build_dir / "model" / "spec.json", photo


def _rows(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["keypoints"]


def test_camera_options_add_camera_space_joints_that_project_back(cli, lpski, tmp_path):
    model, _, photo = lpski
    plain = _rows(cli("predict", model, photo, "--out", tmp_path / "a.png", "--json"))
    assert all("camera_mm" not in r and r["depth_relative_to_root"] for r in plain)
    rows = _rows(cli("predict", model, photo, "--out", tmp_path / "b.png", "--json", "--focal", "600,580",
                     "--principal", "50,45", "--root-depth", str(ROOT)))
    assert len(rows) == JOINTS and rows[0]["joint"] == "pelvis"
    for before, row in zip(plain, rows):
        x, y, z = row["camera_mm"]
        assert row["depth_relative_to_root"] is False
        assert z == pytest.approx(row["depth_mm"], abs=0.1) == pytest.approx(before["depth_mm"] + ROOT, abs=0.2)
        # the pinhole: u = fx X / Z + cx (the rows round pixels to 0.1 and mm to 0.1)
        assert FOCAL[0] * x / z + PRINCIPAL[0] == pytest.approx(row["x"], abs=0.2)
        assert FOCAL[1] * y / z + PRINCIPAL[1] == pytest.approx(row["y"], abs=0.2)
        assert (row["x"], row["y"]) == (before["x"], before["y"])  # the 2-D joints do not move
    table = cli("predict", model, photo, "--out", tmp_path / "c.png", "--focal", "600", "--principal", "50,45",
                "--root-depth", "4200")
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].split() == ["joint", "x", "y", "confidence", "X", "mm", "Y", "mm", "Z", "mm"]


def test_a_constant_root_depth_in_the_spec_needs_no_option(cli, lpski, tmp_path):
    model, spec_path, photo = lpski
    spec = json.loads(spec_path.read_text())
    spec["head"]["runtime"]["root_depth"] = {**spec["head"]["runtime"]["root_depth"], "source": "constant", "mm": 3000.0}
    constant = write(tmp_path / "spec.json", json.dumps(spec))
    rows = _rows(cli("predict", model, photo, "--spec", constant, "--out", tmp_path / "a.png", "--json",
                     "--focal", "600,580", "--principal", "50,45"))
    assert all(r["camera_mm"][2] == pytest.approx(r["depth_mm"], abs=0.1) for r in rows)
    assert all(2000 <= r["depth_mm"] <= 4000 for r in rows)  # 3 m, give or take the volume's +-1 m


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--focal", "six hundred", "--principal", "50,45", "--root-depth", "4200"], "--focal expects FX,FY"),
        (["--focal", "600,580,1", "--principal", "50,45", "--root-depth", "4200"], "--focal expects FX,FY"),
        (["--focal", "600,nan", "--principal", "50,45", "--root-depth", "4200"], "--focal expects FX,FY"),
        (["--focal", "600,-1", "--principal", "50,45", "--root-depth", "4200"], "--focal must be positive"),
        (["--focal", "600,580", "--principal", "50", "--root-depth", "4200"], "--principal expects CX,CY"),
        (["--focal", "600,580", "--principal", "50,45", "--root-depth", "far"], "--root-depth expects MM"),
        (["--focal", "600,580", "--principal", "50,45", "--root-depth", "-3"], "--root-depth must be a positive distance"),
        (["--focal", "600,580", "--root-depth", "4200"], "--focal needs --principal CX,CY too"),
        (["--principal", "50,45"], "--principal needs --focal FX,FY too"),
        (["--focal", "600,580", "--principal", "50,45"], "camera-space joints need --root-depth MM"),
    ],
)
def test_wrong_camera_options_are_one_message_and_exit_2(cli, lpski, tmp_path, args, message):
    model, _, photo = lpski
    out = tmp_path / "never.png"
    result = cli("predict", model, photo, "--out", out, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not out.exists()


def test_camera_options_on_a_2d_model_are_refused(cli, tiny_models, tmp_path):
    result = build(load_recipe(tiny_recipe(tmp_path, tiny_models, name="flat2d")), out_root=tmp_path / "build", only=["model"])
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(photo)
    model = result.build_dir / "model" / "saved_model"
    refused = cli("predict", model, photo, "--out", tmp_path / "x.png", "--focal", "600,580", "--principal", "20,20",
                  "--root-depth", "4200")
    assert refused.exit_code == 2, refused.output
    assert "lift a 3-D model's joints into camera space" in refused.stderr and "family heatmap" in refused.stderr
    assert cli("predict", model, photo, "--out", tmp_path / "y.png").exit_code == 0


def test_camera_options_with_a_video_are_refused(cli, lpski, tmp_path):
    model, _, _ = lpski
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")  # refused before the video is read
    result = cli("predict", model, video, "--focal", "600,580", "--principal", "50,45", "--root-depth", "4200")
    assert result.exit_code == 2 and "a video result holds none" in result.stderr
