"""The 3-D (volumetric) family end to end on a tiny LPSKI imported from a .keras file.

The model has random weights with its last layer scaled up, so every joint's volume is
peaked and the decode means something; the build imports it (family volumetric, h36m17),
exports TFLite fp32 and ONNX, checks parity in mm, and scores MPJPE, PA-MPJPE and 3DPCK on
synthetic 3-D people generated here and, where ../shared is present, on the real Human3.6M
frames. The evaluation path itself is checked with an oracle: a "model" that returns the
truth's own soft-argmax coordinates must score about 0 mm.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from mdeploy.errors import RecipeError
from mdeploy.families import get_family
from tests.helpers import SHARED, write

H36M = SHARED / "data" / "realkp" / "h36m"
JOINTS, DEPTH = 17, 4  # h36m17, tiny_lpski's depth bins
IMAGENET = "{size: [64, 64], channels: rgb, range: [0, 1], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}"


def save_tiny_lpski(path, joints: int = JOINTS, depth: int = DEPTH, spread: float = 6.0, soft_argmax: bool = False):
    """A tiny LPSKI (64x64 in, 8x8x(joints*depth) out) whose last layer is scaled so that its
    scores spread `spread` (std) on a random image: peaked volumes (untrained, its activations
    are tiny, ~1e-3, and every volume would be flat)."""
    import keras

    from mdeploy.models import create_model

    keras.utils.set_random_seed(3)
    model = create_model("tiny_lpski", {"depth_bins": depth, "soft_argmax": soft_argmax}, (64, 64), joints)
    probe = np.random.default_rng(0).normal(0, 1, (1, 64, 64, 3)).astype(np.float32)
    last = model.get_layer("volume")
    kernel, bias = last.get_weights()
    scale = spread / float(np.std(keras.Model(model.inputs, last.output)([probe]).numpy() - bias))
    last.set_weights([kernel * scale, bias * 0])
    model.save(path)
    return path


def recipe_text(model, synth, name: str = "tiny3d", volume: str = f"{{depth_bins: {DEPTH}}}") -> str:
    return f"""
name: {name}
model:
  import: {{format: keras, path: {model}}}
  input: {IMAGENET}
  keypoints: h36m17
  family: volumetric
  volume: {volume}
data:
  val:
    - {{name: synth3d, kind: synthetic, coco3d: {{annotations: {synth}/annotations.json, images: {synth}/images}}}}
    - {{name: real_h36m, kind: real, optional: true, h36m: {{annotations: {H36M}/h36m_coco.json, images: {H36M}}}}}
export:
  tflite: {{variants: [fp32]}}
  onnx: {{opset: 17}}
verify:
  samples: {{random: 2}}
  accuracy: {{max_drop: 1.0}}
"""


@pytest.fixture(scope="module")
def synth3d(tmp_path_factory):
    from mdeploy.data.synthetic3d import Synth3DConfig, generate

    folder = tmp_path_factory.mktemp("synth3d")
    generate(Synth3DConfig(count=6, seed=4, size=128, keypoints="h36m17"), folder, workers=1)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_lpski(tmp_path_factory.mktemp("lpski") / "tiny_lpski.keras")


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model, synth3d):
    from mdeploy.build import build
    from mdeploy.pipeline import Cache
    from mdeploy.recipe import load_recipe

    root = tmp_path_factory.mktemp("build3d")
    recipe = load_recipe(write(root / "tiny3d.yaml", recipe_text(tiny_model, synth3d)))
    return build(recipe, out_root=root / "build", cache=Cache(root / "cache"))


def test_the_spec_describes_the_volume_and_what_the_app_supplies(built):
    spec = json.loads((built.build_dir / "model" / "spec.json").read_text())
    assert spec["family"] == "volumetric" and spec["task"] == "pose_volumetric"
    assert spec["output"] == {"name": "volume", "shape": [1, 8, 8, JOINTS * DEPTH], "dtype": "float32"}
    assert spec["output_stride"] == 8
    head = spec["head"]
    assert head["output"] == "volume" and not head["in_graph_softargmax"]
    assert head["joints"] == JOINTS and head["root"] == "pelvis"
    assert head["layout"] == {"depth": DEPTH, "order": "joint_major", "depth_range_mm": 2000.0, "cell_origin": "centre"}
    assert head["runtime"]["root_depth"]["source"] == "given"
    assert head["runtime"]["camera"]["intrinsics"] == ["fx", "fy", "cx", "cy"]


def test_parity_is_measured_in_mm_and_passes_for_fp32_and_onnx(built):
    parity = {g.artifact: g for g in built.gates if g.gate == "parity"}
    assert set(parity) == {"tflite/fp32", "onnx"}
    for gate in parity.values():
        assert gate.status == "passed", gate.checks
        m = gate.metrics
        assert m["tolerance_mm"] == 10.0 and m["drawn"] == m["samples"] * JOINTS
        assert m["max_joint_mm"] < 1.0  # float32 conversions move joints by far less than a millimetre
        assert m["agreement"] == 1.0 and m["scale"] > 1.0  # peaked volumes: logits beyond 1
        assert {c["check"] for c in gate.checks} == {"shape", "finite", "max_abs", "agreement"}
    people = next(g for g in built.gates if g.gate == "people")
    assert people.status == "passed", people.checks
    assert people.metrics["people"] >= 1 and not people.metrics["multi_person"]


def test_parity_fails_when_an_artifact_moves_a_joint(built):
    """A candidate whose volume for one joint is moved by one cell fails the mm agreement."""
    from mdeploy.families.volumetric import VolumetricFamily, layout_of
    from mdeploy.spec import ModelSpec

    spec = ModelSpec.load(built.build_dir / "model" / "spec.json")
    layout = layout_of(spec)
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, (2, 8, 8, JOINTS * DEPTH)).astype(np.float32)
    vol = layout.volumes(ref).copy()
    vol[:, 3] = -20.0
    vol[:, 3, 1, 2, 2] = 20.0  # joint 3 sharply at cell (2, 2)
    moved = vol.copy()
    moved[:, 3] = -20.0
    moved[:, 3, 1, 2, 3] = 20.0  # one cell to the right: 2000 / 8 = 250 mm
    family = VolumetricFamily()
    metrics = family.parity({"volume": layout.to_output(vol)}, {"volume": layout.to_output(moved)}, ["a", "b"], spec)
    assert metrics["disagreement_count"] == 2 and {d["keypoint"] for d in metrics["disagreements"]} == {"right_ankle"}
    assert metrics["max_joint_mm"] == pytest.approx(250.0, abs=1.0)
    checks = {c.name: c for c in family.parity_checks(metrics, max_abs=1e-4, min_agreement=0.98)}
    assert not checks["agreement"].ok and checks["agreement"].value == pytest.approx(1 - 2 / (2 * JOINTS))
    assert not checks["max_abs"].ok  # 40 logits moved, tolerance 1e-4 x 20


def test_accuracy_is_mpjpe_in_mm_per_artifact_and_gated_as_an_error(built):
    gates = [g for g in built.gates if g.gate == "accuracy" and g.split == "synth3d"]
    by_artifact = {g.artifact: g for g in gates}
    model = by_artifact["model"].metrics
    assert model["primary"] == "mpjpe" and model["samples"] == 6 and model["scored"] == 6
    m = model["metrics"]
    assert set(m) == {"mpjpe", "pa_mpjpe", "pck3d@150", "auc"}
    assert 0 < m["pa_mpjpe"] and 0 < m["mpjpe"] < 3000  # a random model, but joints stay within the 2 m volume
    assert 0 <= m["pck3d@150"] <= 100
    for artifact in ("tflite/fp32", "onnx"):
        gate = by_artifact[artifact]
        assert gate.status == "passed", gate.checks
        assert gate.metrics["metric"] == "mpjpe"
        assert gate.metrics["metrics"]["mpjpe"] == pytest.approx(m["mpjpe"], abs=0.5)
        assert "mm vs" in gate.checks[0]["detail"]


def test_the_accuracy_drop_of_an_error_is_its_increase():
    from mdeploy.evaluate.metrics import drop, unit

    assert drop("mpjpe", 80.0, 85.5) == 5.5 and drop("pa_mpjpe", 60.0, 50.0) == -10.0
    assert drop("pckh@0.5", 80.0, 75.0) == 5.0 and drop("pck3d@150", 90.0, 95.0) == -5.0
    assert drop("mpjpe", None, 3.0) is None
    assert unit("mpjpe") == " mm" and unit("pckh@0.5") == "%"


def test_the_evaluation_path_scores_the_truth_at_zero(built, synth3d):
    """An oracle runner returns each crop's ground truth as soft-argmax coordinates: MPJPE ~ 0 mm.

    Checks everything between the model and the metric: the crop box, the preprocessing's
    affine, cells -> pixels, bins -> mm, the back-projection with the frame's camera."""
    from mdeploy.data.h36m import load_coco3d
    from mdeploy.data.split3d import Split3D
    from mdeploy.evaluate.evaluator import prepare
    from mdeploy.evaluate.volumetric import encode
    from mdeploy.families.volumetric import layout_of
    from mdeploy.keypoints import get_keypoint_set
    from mdeploy.spec import ModelSpec, TensorInfo

    kps = get_keypoint_set("h36m17")
    ds = Split3D(load_coco3d(synth3d / "annotations.json", synth3d / "images", kps))
    spec = ModelSpec.load(built.build_dir / "model" / "spec.json")
    spec = dataclasses.replace(spec, output=TensorInfo("coords", (1, JOINTS, 3)),
                               head={**spec.head, "output": "coords", "in_graph_softargmax": True, "layout": {**spec.head["layout"], "depth": 32}})
    layout = layout_of(spec)
    calls = iter(range(len(ds)))

    def oracle(batch):
        i = next(calls)
        _, (affine,) = prepare(spec, ds, [i])
        frame = ds.frames[i]
        rel = frame.joints[:, 2] - frame.joints[kps.root_index, 2]
        return encode(frame.keypoints[:, :2], rel, layout, (64, 64), affine)[None].astype(np.float32)

    result = get_family("volumetric").evaluate(oracle, spec, ds, batch_size=1)
    assert result.primary == "mpjpe" and result.samples == len(ds)
    assert result.metrics["mpjpe"] < 1.0 and result.metrics["pa_mpjpe"] < 1.0  # 2-D labels rounded to 1e-4 px
    assert result.metrics["pck3d@150"] == 100.0


def test_real_human36m_frames_are_scored(built):
    if not (H36M / "h36m_coco.json").is_file():
        pytest.skip(f"the Human3.6M frames are not here ({H36M}): ../shared is absent")
    gates = {g.artifact: g for g in built.gates if g.gate == "accuracy" and g.split == "real_h36m"}
    model = gates["model"].metrics
    assert model["split"]["kind"] == "real" and model["split"]["source"] == "h36m"
    assert model["samples"] == 4 and model["scored"] == 4
    assert model["metrics"]["mpjpe"] > 0 and gates["tflite/fp32"].status == "passed"


def test_predict_writes_the_projected_joints(built, cli, tmp_path, synth3d):
    tflite = built.build_dir / "tflite" / "tiny3d_fp32.tflite"
    out = tmp_path / "drawn.png"
    result = cli("predict", tflite, synth3d / "images" / "000000.jpg", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("{"):])["keypoints"]
    assert [r["joint"] for r in rows][:2] == ["pelvis", "right_hip"] and len(rows) == JOINTS
    assert all(r["confidence"] == 1.0 and 0 <= r["x"] <= 128 and 0 <= r["y"] <= 128 for r in rows)
    # the third coordinate: each joint's depth in mm, relative to the root's depth (the volume's +-1 m)
    assert all(r["depth_relative_to_root"] is True and abs(r["depth_mm"]) <= 1000.0 for r in rows)
    assert len({r["depth_mm"] for r in rows}) > 1
    assert out.is_file() and out.stat().st_size > 0


def test_app_glue_reads_the_volume_into_the_volume_pose_decoder(built):
    """The common PoseEstimator hands a 3D model's one output to VolumePoseDecoder (tests/codegen/test_volumetric_app.py
    runs it on the JVM against `detect`)."""
    from mdeploy.codegen.glue import context
    from mdeploy.spec import ModelSpec

    spec = ModelSpec.load(built.build_dir / "model" / "spec.json")
    ctx = context(spec, name="tiny3d", description="", package="com.example.pose", model_file="m.tflite")
    assert ctx["decoder"] == "VolumePoseDecoder" and ctx["decoder_templates"] == ["VolumePoseDecoder"]
    assert [(o["name"], o["channels"]) for o in ctx["outputs"]] == [("volume", JOINTS * DEPTH)]


def test_a_flat_volume_finds_no_one(built):
    from mdeploy.spec import ModelSpec

    spec = ModelSpec.load(built.build_dir / "model" / "spec.json")
    family = get_family("volumetric")
    metrics = family.find_people({"volume": np.zeros((1, 8, 8, JOINTS * DEPTH), np.float32)}, ["photo:flat"], spec)
    assert metrics["people"] == 0 and metrics["found"] == 0
    assert not family.people_check(metrics)["ok"]


def test_channels_that_do_not_divide_into_joints_x_depth_are_refused(cli, tmp_path, synth3d):
    model = save_tiny_lpski(tmp_path / "sixteen.keras", joints=16)  # 64 channels: not 17 joints x anything
    recipe = write(tmp_path / "wrong.yaml", recipe_text(model, synth3d, name="wrong3d"))
    result = cli("build", recipe, "--out", tmp_path / "build", "--only", "model")
    assert result.exit_code == 2, result.output
    assert "64 channels" in result.output and "do not divide into 17 joints" in result.output
    assert not (tmp_path / "build" / "wrong3d" / "manifest.json").exists()


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ("{root_depth: constant}", "root_depth: constant needs root_depth_mm"),
        ("{in_graph_softargmax: true}", "needs volume.stride"),
    ],
)
def test_volume_settings_are_checked_in_the_recipe(tmp_path, volume, message):
    from mdeploy.recipe import load_recipe

    path = write(tmp_path / "r.yaml", recipe_text(tmp_path / "m.keras", tmp_path, volume=volume))
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


def test_volume_settings_belong_to_the_volumetric_family(tmp_path):
    from mdeploy.recipe import load_recipe

    text = recipe_text(tmp_path / "m.keras", tmp_path).replace("family: volumetric", "family: heatmap")
    with pytest.raises(RecipeError, match="'volume' settings apply to family volumetric"):
        load_recipe(write(tmp_path / "r.yaml", text))


def test_a_model_with_the_soft_argmax_in_its_graph_exports_coords(tmp_path):
    """model.volume.in_graph_softargmax: the canonical output is `coords` [1, J, 3]; parity decodes nothing."""
    from mdeploy.build import build
    from mdeploy.pipeline import Cache
    from mdeploy.recipe import load_recipe

    model = save_tiny_lpski(tmp_path / "coords.keras", soft_argmax=True)
    recipe = load_recipe(write(tmp_path / "coords.yaml", f"""
name: coords3d
model:
  import: {{format: keras, path: {model}}}
  input: {IMAGENET}
  keypoints: h36m17
  volume: {{depth_bins: {DEPTH}, in_graph_softargmax: true, stride: 8}}
verify: {{samples: {{random: 1}}}}
"""))
    result = build(recipe, out_root=tmp_path / "build", cache=Cache(tmp_path / "cache"))
    spec = json.loads((result.build_dir / "model" / "spec.json").read_text())
    assert spec["family"] == "volumetric"  # from the volume section
    assert spec["output"]["name"] == "coords" and spec["output"]["shape"] == [1, JOINTS, 3]
    assert spec["output_stride"] == 8 and spec["head"]["in_graph_softargmax"]
    gate = next(g for g in result.gates if g.gate == "parity")
    assert gate.status == "passed", gate.checks
    assert gate.metrics["max_joint_mm"] < 1.0 and gate.metrics["agreement"] == 1.0
    people = next(g for g in result.gates if g.gate == "people")
    assert people.status == "passed" and people.metrics["photos"][0]["peak"] is None  # no volume to look at


def test_the_app_glue_of_a_volumetric_model_carries_its_decoder(built):
    """The family renders the Kotlin/Swift VolumeDecoder from the built spec's layout (the decoder
    itself is compiled and run against Python in tests/codegen/test_volume_glue.py)."""
    from mdeploy.families import family_of
    from mdeploy.spec import ModelSpec

    spec = ModelSpec.load(built.build_dir / "model" / "spec.json")
    (path, kotlin), = family_of(spec).glue_files("android", spec, "com.example.pose").items()
    assert path == "com/example/pose/generated/VolumeDecoder.kt"
    assert f"JOINTS: Int = {JOINTS}" in kotlin and f"DEPTH_BINS: Int = {DEPTH}" in kotlin
    (path, swift), = family_of(spec).glue_files("ios", spec, None).items()
    assert path == "Generated/VolumeDecoder.swift" and "pelvis" in swift
