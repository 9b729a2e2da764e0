"""`models`, `data synth|convert`, `train`, `eval`, `predict` from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mdeploy.build import build
from mdeploy.recipe import load_recipe
from tests.helpers import REPO, write

TINY = """
name: tiny_cli
model:
  arch: tiny_cpm
  input: {size: [64, 64], channels: rgb, range: [-1, 1]}
data:
  train: {synthetic: {count: 32, seed: 1, size: 64}}
  val: {synthetic: {count: 8, seed: 2, size: 64}}
train: {epochs: 1, batch_size: 8}
"""


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("tiny-cli")
    os.environ["MDEPLOY_CACHE_DIR"] = str(root / "cache")
    try:
        recipe_path = write(root / "tiny.yaml", TINY)
        result = build(load_recipe(recipe_path), out_root=root / "build")
    finally:
        del os.environ["MDEPLOY_CACHE_DIR"]
    return recipe_path, result.build_dir


def test_models_lists_the_registry(cli):
    result = cli("models", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) >= {"mv2_cpm", "mv2_hourglass", "tiny_cpm", "tiny_hourglass"}
    cpm = rows["mv2_cpm"]
    assert cpm["parameters"] == 558_960 and cpm["output_stride"] == 2 and cpm["final_output"] == "stage_5_out"
    assert rows["mv2_hourglass"]["final_output"] == "hourglass_out_3" and rows["mv2_hourglass"]["output_stride"] == 4
    text = cli("models", "--no-test").stdout
    assert text.splitlines()[0].split()[:3] == ["name", "input", "stride"]
    assert "tiny_cpm" not in text and "0.559 M" in text


def test_data_synth_writes_a_dataset_once(tmp_path, cli):
    result = cli("data", "synth", tmp_path / "ds", "--count", "5", "--size", "64", "--seed", "3")
    assert result.exit_code == 0
    data = json.loads((tmp_path / "ds" / "annotations.json").read_text())
    assert len(data["images"]) == 5 and len(list((tmp_path / "ds" / "images").iterdir())) == 5
    again = cli("data", "synth", tmp_path / "ds", "--count", "5")
    assert again.exit_code == 2 and "already holds a dataset" in again.stderr


def test_data_convert_reports_what_it_skipped(tmp_path, cli):
    raw = [
        {"image_id": "a", "keypoint_annotations": {"human1": [10, 20, 1] * 14}, "human_annotations": {}},
        {"image_id": "b", "keypoint_annotations": {"human1": [0, 0, 3] * 14}, "human_annotations": {}},
    ]
    (tmp_path / "aic.json").write_text(json.dumps(raw))
    result = cli("data", "convert", tmp_path / "aic.json", "--out", tmp_path / "coco.json")
    assert result.exit_code == 0
    assert "1 people in 1 images" in result.stdout
    assert "skipped 1 image(s) with no usable person" in result.stderr
    bad = cli("data", "convert", tmp_path / "aic.json", "--out", tmp_path / "x.json", "--from", "mpii")
    assert bad.exit_code == 2 and "unknown source format" in bad.stderr


def test_train_prints_the_history(tmp_path, cli):
    path = write(tmp_path / "t.yaml", TINY)
    result = cli("train", path, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.stderr
    # the validation metrics the family reported (single person: PCKh, PEFM's PCKh, PCK torso)
    header = result.stdout.splitlines()[0].split()
    assert header[:8] == ["epoch", "step", "loss", "val", "PCKh@0.5", "val", "PEFM", "PCKh"]
    assert "PCKh@0.5 (labelled)" not in result.stdout
    assert "4 steps" in result.stdout
    imported = cli("train", REPO / "recipes" / "pefm_cpm.yaml")
    assert imported.exit_code == 2 and "there is nothing to train" in imported.stderr


def test_eval_an_artifact_and_a_recipe(tmp_path, cli, tiny_build):
    recipe_path, build_dir = tiny_build
    cli("data", "synth", tmp_path / "val", "--count", "6", "--size", "64", "--seed", "9")
    result = cli("eval", build_dir / "model" / "saved_model", "--data", tmp_path / "val" / "annotations.json", "--json")
    assert result.exit_code == 0, result.stderr
    (scores,) = json.loads(result.stdout)["results"].values()
    assert scores["samples"] == 6 and set(scores["metrics"]) == {"pckh@0.5", "pckh@0.5_labelled", "pefm_pckh", "pck@0.2_torso"}
    assert set(scores["per_joint"]) >= {"head_top", "left_ankle"}
    whole = cli("eval", build_dir, "--data", tmp_path / "val" / "annotations.json", "--kind", "synthetic", "--json")
    data = json.loads(whole.stdout)
    assert set(data["results"]) == {"model", "tflite/fp32"}
    assert data["splits"][0]["kind"] == "synthetic" and data["splits"][0]["people"] == 6
    assert data["provenance"]["note"] == "trained on synthetic figures only: do not expect it to find real people"
    assert data["provenance"]["splits"][0]["kind"] == "synthetic" and data["provenance"]["splits"][0]["people"] == 32
    missing = cli("eval", build_dir / "model" / "saved_model")
    assert missing.exit_code == 2 and "--data is required" in missing.stderr


def synthetic_frames(n: int, size: int = 64) -> list[np.ndarray]:
    from mdeploy.data.synthetic import render

    return [render(5, i, size)[0] for i in range(n)]


def test_predict_an_image_and_a_video(tmp_path, cli, tiny_build):
    import av

    _, build_dir = tiny_build
    tflite = build_dir / "tflite" / "tiny_cli_fp32.tflite"
    frame = synthetic_frames(1)[0]
    Image.fromarray(frame).save(tmp_path / "person.png")
    result = cli("predict", tflite, tmp_path / "person.png", "--out", tmp_path / "pose.png", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [k["joint"] for k in data["keypoints"]][:2] == ["head_top", "neck"]
    assert data["note"] == "trained on synthetic figures only: do not expect it to find real people"
    plain = cli("predict", tflite, tmp_path / "person.png", "--out", tmp_path / "pose2.png")
    assert "note: trained on synthetic figures only: do not expect it to find real people" in plain.stderr
    assert np.asarray(Image.open(tmp_path / "pose.png")).shape == frame.shape

    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for rgb in synthetic_frames(6):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = cli("predict", tflite, video, "--out", tmp_path / "clip_pose.mp4")
    assert out.exit_code == 0, out.stderr
    assert "(6 frames)" in out.stdout
    with av.open(str(tmp_path / "clip_pose.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6


def test_predict_many_images_a_folder_or_a_glob_writes_beside_each(tmp_path, cli, tiny_build, monkeypatch):
    _, build_dir = tiny_build
    tflite = build_dir / "tflite" / "tiny_cli_fp32.tflite"
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, frame in enumerate(synthetic_frames(3)):
        Image.fromarray(frame).save(photos / f"p{i}.png")
    (photos / "notes.txt").write_text("not an image")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    # One image: the result goes beside it (as the help says), not into the working folder.
    one = cli("predict", tflite, photos / "p0.png")
    assert one.exit_code == 0, one.output
    assert (photos / "p0_pose.png").is_file() and not list(work.iterdir())
    assert one.stdout.splitlines()[-1] == f"wrote {photos / 'p0_pose.png'}"

    # A folder is read, not "not found"; its earlier results and other files are left alone.
    folder = cli("predict", tflite, photos, "--json")
    assert folder.exit_code == 0, folder.output
    results = json.loads(folder.stdout)["results"]
    assert [(r["source"], r["out"]) for r in results] == [(str(photos / f"p{i}.png"), str(photos / f"p{i}_pose.png")) for i in range(3)]
    assert all(len(r["keypoints"]) == 14 for r in results)
    assert sorted(p.name for p in photos.iterdir()) == ["notes.txt", "p0.png", "p0_pose.png", "p1.png", "p1_pose.png", "p2.png", "p2_pose.png"]

    # A quoted glob and several sources into an --out folder, one line each.
    many = cli("predict", tflite, str(photos / "p[12].png"), photos / "p0.png", "--out", tmp_path / "drawn")
    assert many.exit_code == 0, many.output
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == ["p0_pose.png", "p1_pose.png", "p2_pose.png"]
    assert [line.split(" (")[0] for line in many.stdout.splitlines() if line.startswith("wrote")] == [
        f"wrote {tmp_path / 'drawn' / n}" for n in ("p1_pose.png", "p2_pose.png", "p0_pose.png")]

    missing = cli("predict", tflite, photos / "nope.png")
    assert missing.exit_code == 2 and f"input not found: {photos / 'nope.png'}" in missing.stderr
    assert cli("predict", tflite, str(photos / "*.jpg")).exit_code == 2
    (tmp_path / "empty").mkdir()
    empty = cli("predict", tflite, tmp_path / "empty")
    assert empty.exit_code == 2 and "is a folder with no images in it" in empty.stderr
    (tmp_path / "other").mkdir()
    Image.fromarray(synthetic_frames(1)[0]).save(tmp_path / "other" / "p0.png")
    clash = cli("predict", tflite, photos / "p0.png", tmp_path / "other" / "p0.png", "--out", tmp_path / "drawn")
    assert clash.exit_code == 2 and "would both be written to" in clash.stderr
    (tmp_path / "clip.mp4").write_bytes(b"")
    video = cli("predict", tflite, photos / "p0.png", tmp_path / "clip.mp4")
    assert video.exit_code == 2 and "give one video at a time" in video.stderr


def test_predict_needs_a_spec_it_can_find(tmp_path, cli, tiny_build):
    _, build_dir = tiny_build
    lone = tmp_path / "lone.tflite"
    lone.write_bytes((build_dir / "tflite" / "tiny_cli_fp32.tflite").read_bytes())
    Image.fromarray(synthetic_frames(1)[0]).save(tmp_path / "p.png")
    result = cli("predict", lone, tmp_path / "p.png")
    assert result.exit_code == 2 and "no spec.json found" in result.stderr
    ok = cli("predict", lone, tmp_path / "p.png", "--spec", build_dir / "model" / "spec.json", "--out", tmp_path / "o.png")
    assert ok.exit_code == 0


def test_reference_model_draws_a_plausible_pose_on_a_real_photo(tmp_path, cli, pefm_pb, pefm_cache):
    """The imported PEFM CPM on scikit-image's astronaut: head above neck above hips, shoulders apart."""
    from mdeploy.verify.samples import PACKAGE_PHOTOS, package_photo

    assert "astronaut" in PACKAGE_PHOTOS
    Image.fromarray(package_photo("astronaut")).save(tmp_path / "astronaut.png")
    build(load_recipe(REPO / "recipes" / "pefm_cpm.yaml", ["export.tflite.variants=[fp32]"]), out_root=tmp_path / "b",
          cache=pefm_cache)
    result = cli("predict", tmp_path / "b" / "pefm_cpm" / "tflite" / "pefm_cpm_fp32.tflite", tmp_path / "astronaut.png", "--out", tmp_path / "a.png", "--json")
    kp = {k["joint"]: k for k in json.loads(result.stdout)["keypoints"]}
    assert kp["head_top"]["y"] < kp["neck"]["y"]
    assert kp["right_shoulder"]["x"] < kp["neck"]["x"] < kp["left_shoulder"]["x"]  # facing the camera
    assert kp["neck"]["confidence"] > 0.3
    drawn = np.asarray(Image.open(tmp_path / "a.png")).astype(int)
    assert np.abs(drawn - package_photo("astronaut")).sum() > 0


def test_eval_a_recipe_without_a_build_says_so_instead_of_training(tmp_path, cli):
    """`mdeploy eval RECIPE` before any build: a message naming the build to run, exit 2, nothing trained."""
    recipe = write(tmp_path / "tiny.yaml", TINY)
    result = cli("eval", recipe, "--out", tmp_path / "build")
    assert result.exit_code == 2
    assert "has no build" in result.stderr and f"mdeploy build {recipe}" in result.stderr and "trains its model" in result.stderr
    assert not (tmp_path / "build").exists()


def test_eval_a_built_recipe_scores_every_split(cli, tiny_build):
    recipe_path, build_dir = tiny_build
    result = cli("eval", recipe_path, "--out", build_dir.parent, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [s["name"] for s in data["splits"]] == ["val"] and data["splits"][0]["kind"] == "synthetic"
    assert set(data["results"]) == {"model", "tflite/fp32"}
