"""Training the volumetric family (MobileHumanPose's way): person crops, (x, y, z) targets, L1 on the soft-argmax.

A tiny LPSKI recipe trains on synthetic 3-D people that the build generates itself
(`data.train.synthetic.keypoints3d`), validates by MPJPE at each epoch, and builds every format:
TFLite, ONNX and a MACE package scored in mm, and a Core ML package whose spec is read back
(its numbers need macOS). The input pipeline is checked against the decode's own inverse
(evaluate/volumetric.py `encode`), for determinism by (seed, position) and resumption, and for
flips: x mirrored, left and right joints swapped, depth kept.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.helpers import VOLUMETRIC_TRAINING_RECIPE, write

SIZE, DEPTH = 64, 4
RECIPE = VOLUMETRIC_TRAINING_RECIPE


@pytest.fixture(scope="module")
def built(volumetric_training_build):
    """The session's build of RECIPE (tests/conftest.py), which the report's 3-D tests read too."""
    return volumetric_training_build


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    from mdeploy.data.h36m import load_coco3d
    from mdeploy.data.split3d import Split3D
    from mdeploy.data.synthetic3d import Synth3DConfig, generate
    from mdeploy.keypoints import get_keypoint_set

    folder = tmp_path_factory.mktemp("synth3d")
    generate(Synth3DConfig(count=16, seed=7, size=96, keypoints="h36m17"), folder, workers=1)
    return Split3D(load_coco3d(folder / "annotations.json", folder / "images", get_keypoint_set("h36m17")))


def _pipeline(split, **options):
    from mdeploy.data.pipeline3d import build_volume_dataset
    from mdeploy.evaluate.volumetric import VolumeLayout
    from mdeploy.keypoints import get_keypoint_set
    from mdeploy.spec import Preprocessing

    pre = Preprocessing(size=(SIZE, SIZE), channels="rgb", range=(0.0, 1.0))
    layout = VolumeLayout(17, DEPTH * 8, SIZE // 8, SIZE // 8)
    options = {"batch_size": 8, "seed": 3, "epochs": 2, "augment": None, "shuffle": False} | options
    batches = [(x.numpy(), t.numpy()) for x, t in build_volume_dataset(split, pre, get_keypoint_set("h36m17"), layout, **options)]
    return batches, pre, layout


def test_training_lowers_the_loss_and_validates_by_mpjpe(built):
    history = json.loads((built.build_dir / "train" / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert history[-1]["loss"] < history[0]["loss"]  # L1 in cells and bins per visible joint
    for h in history:
        assert h["primary"] == "mpjpe" and 0 < h["val_mpjpe"] < 2000 and 0 < h["val_pa_mpjpe"] <= h["val_mpjpe"] * 1.5
        assert 0 <= h["val_pck3d@150"] <= 100


def test_early_stopping_reads_a_falling_mpjpe_as_progress(built):
    """With patience 1 the loop stops at the first epoch whose MPJPE is not below the best so far
    (an error improves downwards); an MPJPE that keeps falling trains every epoch."""
    history = json.loads((built.build_dir / "train" / "history.json").read_text())
    training = json.loads((built.build_dir / "report" / "report.json").read_text())["training"]
    best, stop_at = float("inf"), None
    for h in history:
        if h["val_mpjpe"] < best:
            best = h["val_mpjpe"]
        else:
            stop_at = h["epoch"]
            break
    assert training["stopped_early"] == (stop_at is not None)
    assert len(history) == (stop_at or 3)
    assert len(history) >= 2  # the second epoch's fall in MPJPE is progress, not a reason to stop


def test_the_trained_model_builds_and_is_scored_in_mm(built):
    parity = {g.artifact: g for g in built.gates if g.gate == "parity"}
    assert set(parity) == {"tflite/fp32", "tflite/int8", "onnx", "coreml", "mace"}
    verified = {a: g for a, g in parity.items() if a != "coreml" or sys.platform == "darwin"}
    assert all(g.status == "passed" for g in verified.values()), [g.checks for g in verified.values()]
    accuracy = {g.artifact: g for g in built.gates if g.gate == "accuracy"}
    model = accuracy["model"].metrics
    assert model["primary"] == "mpjpe" and model["scored"] == 16
    history = json.loads((built.build_dir / "train" / "history.json").read_text())
    # The loop's last validation is the build's accuracy stage on the same split (same evaluation path).
    assert model["metrics"]["mpjpe"] == pytest.approx(history[-1]["val_mpjpe"], abs=0.5)
    for artifact in ("tflite/fp32", "onnx", "mace"):
        assert accuracy[artifact].status == "passed", accuracy[artifact].checks
        assert accuracy[artifact].metrics["metrics"]["mpjpe"] == pytest.approx(model["metrics"]["mpjpe"], abs=1.0)
    spec = json.loads((built.build_dir / "model" / "spec.json").read_text())
    assert spec["family"] == "volumetric" and spec["output"]["shape"] == [1, 8, 8, 17 * DEPTH]


def test_int8_is_gated_in_mm_and_runs_its_prelus_on_xnnpack(built):
    """The int8 variant's MPJPE increase is the accuracy gate's drop, in mm; its PReLUs are
    LeakyReLU-based (XNNPACK runs PRELU in float only), so the whole graph is one XNNPACK partition."""
    from ai_edge_litert.interpreter import Interpreter

    gate = next(g for g in built.gates if g.gate == "accuracy" and g.artifact == "tflite/int8")
    model = next(g for g in built.gates if g.gate == "accuracy" and g.artifact == "model").metrics["metrics"]["mpjpe"]
    drop = next(c for c in gate.checks if " drop on " in c["check"])
    assert drop["limit"] == 5.0 and "mpjpe" in drop["check"].lower()
    assert drop["value"] == pytest.approx(gate.metrics["metrics"]["mpjpe"] - model, abs=0.01)
    assert drop["ok"] == (drop["value"] <= 5.0) and gate.status == ("passed" if drop["ok"] else "failed")
    manifest = json.loads((built.build_dir / "manifest.json").read_text())
    details = next(a for a in manifest["artifacts"] if a["id"] == "tflite/int8")["details"]
    assert details["int8_prelu"]["layers"] > 0
    it = Interpreter(model_path=str(built.build_dir / "tflite" / "tiny3d_train_int8.tflite"))
    it.allocate_tensors()
    ops = [o["op_name"] for o in it._get_ops_details()]
    assert "PRELU" not in ops and "LEAKY_RELU" in ops and ops.count("DELEGATE") == 1


def test_the_mace_package_runs_the_volume_within_a_millimetre(built):
    """The MACE emulation (the frozen graph as MACE's converter reads it) decodes to the same joints:
    parity in mm through the family's own rule, and a deployment file MACE's rules accept."""
    import yaml

    from mdeploy import mace_rules
    from mdeploy.exporters.mace import MACE_TF_OPS

    gate = next(g for g in built.gates if g.gate == "parity" and g.artifact == "mace")
    assert gate.status == "passed", gate.checks
    m = gate.metrics
    assert m["tolerance_mm"] == 10.0 and m["agreement"] == 1.0 and m["max_joint_mm"] < 1.0
    assert m["drawn"] == m["samples"] * 17
    assert {c["check"] for c in gate.checks} == {"shape", "finite", "max_abs", "agreement"}
    config = yaml.safe_load((built.build_dir / "mace" / "tiny3d_train.yml").read_text())
    sub = config["models"]["tiny3d_train"]["subgraphs"][0]
    assert sub["output_tensors"] == ["volume"] and sub["output_shapes"] == [f"1,8,8,{17 * DEPTH}"]
    assert sub["output_data_formats"] == ["NHWC"] and sub["input_ranges"] == ["-2.1179,2.64"]  # ImageNet mean/std
    assert mace_rules.validate(config) == []
    art = {a["id"]: a for a in built.manifest["artifacts"]}["mace"]
    assert set(art["details"]["ops"]) <= MACE_TF_OPS


def test_the_core_ml_package_takes_an_image_and_gives_the_volume(built):
    """ImageNet's per-channel std: the image input applies range and mean, the graph's first op 1 / std.
    Its numbers need macOS: elsewhere parity and accuracy are unverified, never passed."""
    import coremltools as ct

    path = built.build_dir / "coreml" / "tiny3d_train.mlpackage"
    assert (path / "Manifest.json").is_file()
    mlspec = ct.utils.load_spec(str(path))
    (inp,) = mlspec.description.input
    assert inp.name == "image" and inp.type.WhichOneof("Type") == "imageType"
    assert (inp.type.imageType.width, inp.type.imageType.height) == (SIZE, SIZE)
    (out,) = mlspec.description.output
    assert out.name == "volume" and list(out.type.multiArrayType.shape) == [1, 8, 8, 17 * DEPTH]
    meta = mlspec.description.metadata
    assert meta.userDefined["mdeploy.family"] == "volumetric" and meta.userDefined["mdeploy.keypoints"].startswith("pelvis,")
    assert "volume 1x8x8x68" in meta.shortDescription
    d = {a["id"]: a for a in built.manifest["artifacts"]}["coreml"]["details"]
    pre = d["preprocessing"]
    assert pre["scale"] == pytest.approx(1 / 255) and pre["bias"] == pytest.approx([-0.485, -0.456, -0.406])
    assert pre["channel_scale"] == pytest.approx([1 / 0.229, 1 / 0.224, 1 / 0.225], rel=2e-3)
    if sys.platform != "darwin":
        statuses = {g.gate: g.status for g in built.gates if g.artifact == "coreml"}
        assert statuses["parity"] == "unverified" and set(statuses.values()) == {"unverified"}


def test_targets_are_the_decodes_inverse(split):
    """Without augmentation, each visible target is `encode` of the frame's joints through its crop."""
    from mdeploy.evaluate.volumetric import encode

    batches, pre, layout = _pipeline(split, epochs=1)
    targets = np.concatenate([t for _, t in batches])
    root = split.keypoints.root_index
    checked = 0
    for i, frame in enumerate(split.frames[: len(targets)]):
        affine = pre.geometry(frame.width, frame.height, frame.crop_box())
        rel = frame.joints[:, 2] - frame.joints[root, 2]
        want = encode(frame.keypoints[:, :2], rel, layout, pre.size, affine)
        visible = targets[i, :, 3] > 0
        np.testing.assert_allclose(targets[i, visible, :3], want[visible], atol=2e-3)
        assert targets[i, root, 2] == pytest.approx(layout.depth / 2)  # the root sits mid-volume
        checked += visible.sum()
    assert checked > 0.8 * 17 * len(targets)  # synthetic people lie inside their crops


def test_the_stream_is_deterministic_and_resumes_at_a_batch(split):
    from mdeploy.data.pipeline import Augment

    first, _, _ = _pipeline(split, augment=Augment(), shuffle=True)
    again, _, _ = _pipeline(split, augment=Augment(), shuffle=True)
    resumed, _, _ = _pipeline(split, augment=Augment(), shuffle=True, start_batch=1)
    assert len(first) == 4 and len(resumed) == 3
    for (x1, t1), (x2, t2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(t1, t2)
    for (x1, t1), (x2, t2) in zip(first[1:], resumed):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(t1, t2)
    other, _, _ = _pipeline(split, augment=Augment(), shuffle=True, seed=4)
    assert not np.array_equal(other[0][1], first[0][1])


def test_a_flip_mirrors_x_swaps_sides_and_keeps_depth(split):
    from mdeploy.data.pipeline import Augment

    plain, _, layout = _pipeline(split, epochs=1)
    flips, _, _ = _pipeline(split, epochs=1, augment=Augment(scale=(1.0, 1.0), rotation=0.0, flip=True, shift=0.0))
    perm = np.asarray(split.keypoints.flip_permutation())
    assert (perm != np.arange(17)).sum() == 12  # six left/right pairs in Human3.6M-17
    flipped = 0
    for (x0, t0), (x1, t1) in zip(plain, flips):
        for k in range(len(t0)):
            if np.array_equal(t0[k], t1[k]):
                np.testing.assert_array_equal(x0[k], x1[k])
                continue
            flipped += 1
            np.testing.assert_allclose(x1[k], x0[k][:, ::-1], atol=1.01 / 255)  # the crop mirrored (8-bit rounding)
            both = (t0[k, perm, 3] > 0) & (t1[k, :, 3] > 0)
            mirrored = t0[k][perm]
            np.testing.assert_allclose(t1[k, both, 0], layout.width - 1 - mirrored[both, 0], atol=1e-4)
            np.testing.assert_allclose(t1[k, both, 1:3], mirrored[both, 1:3], atol=1e-4)  # y and depth kept
    assert 0 < flipped < 16


def test_the_loss_is_l1_on_the_soft_argmax_of_visible_joints():
    import tensorflow as tf

    from mdeploy.evaluate.volumetric import VolumeLayout, soft_argmax
    from mdeploy.train.volume_loss import soft_argmax_tf, volume_loss

    layout = VolumeLayout(3, 4, 8, 8)
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 3, (2, 8, 8, 12)).astype(np.float32)
    coords = soft_argmax(layout.volumes(volume))
    np.testing.assert_allclose(soft_argmax_tf(tf.constant(volume), 3, 4).numpy(), coords, atol=1e-4)
    head = {"output": "volume", "joints": 3, "layout": {"depth": 4, "order": "joint_major"}}
    targets = np.concatenate([coords, np.ones((2, 3, 1))], axis=2).astype(np.float32)
    targets[0, 1, :3] += (1.0, -2.0, 0.5)  # joint 1 of image 0 off by 3.5 in L1
    targets[1, 2, :3] += 9.0
    targets[1, 2, 3] = 0.0  # not visible: ignored
    loss = volume_loss([tf.constant(volume)], tf.constant(targets), head).numpy()
    np.testing.assert_allclose(loss, [3.5 / 3, 0.0], atol=1e-4)
    coords_head = {**head, "output": "coords"}
    np.testing.assert_allclose(volume_loss([tf.constant(coords.astype(np.float32))], tf.constant(targets), coords_head).numpy(),
                               [3.5 / 3, 0.0], atol=1e-5)


def test_generated_3d_people_are_one_per_image(tmp_path):
    from mdeploy.errors import RecipeError
    from mdeploy.recipe import load_recipe

    bad = RECIPE.replace("keypoints3d: h36m17}}", "keypoints3d: h36m17, people: [2, 3]}}", 1)
    with pytest.raises(RecipeError) as caught:
        load_recipe(write(tmp_path / "r.yaml", bad))
    assert "3-D people (keypoints3d) are one per image" in str(caught.value.issues[0].message)
    good = load_recipe(write(tmp_path / "g.yaml", RECIPE))
    assert good.data.train.synthetic.keypoints3d == "h36m17"
