"""A recipe imports channels-first ONNX of a volumetric model (MobileHumanPose's PyTorch -> ONNX path).

The files are made here, as PyTorch would export them: the project's tiny LPSKI (Human3.6M-17
joints, 4 depth bins, 64x64) written by tf2onnx with an NCHW input, once ending in the raw
volume [1, J*D, h, w] and once in the soft-argmax [1, J, 3]. Each goes through
`mdeploy build` (`model.import: {format: onnx}`, `model.family: volumetric`): the build routes it
through importers/onnx_nchw.py, exports TFLite fp32 and ONNX, and their parity gates pass; the
canonical model it stores computes what onnxruntime computes on the file within 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import pytorch_style_onnx, write

JOINTS, DEPTH, SIZE = 17, 4, 64
IMAGENET = "{size: [64, 64], channels: rgb, range: [0, 1], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}"


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    from mdeploy.importers.onnx import available

    if not available():
        pytest.skip("onnx2tf is not installed (requirements-onnx2tf.txt)")
    import keras

    from mdeploy.models import create_model

    folder = tmp_path_factory.mktemp("onnx-volumetric")
    keras.utils.set_random_seed(5)
    model = create_model("tiny_lpski", {"soft_argmax": True, "depth_bins": DEPTH}, (SIZE, SIZE), JOINTS)
    # Untrained volumes are flat: spread the last layer so each joint has a clear peak.
    head = model.get_layer("volume")
    kernel, bias = head.get_weights()
    probe = np.random.default_rng(0).normal(0, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
    scale = 6.0 / float(np.std(keras.Model(model.input, head.output)(probe).numpy() - bias))
    head.set_weights([kernel * scale, bias * 0])
    raw = keras.Model(model.input, head.output)
    return {"volume": pytorch_style_onnx(raw, folder / "lpski_volume.onnx", SIZE, True),
            "coords": pytorch_style_onnx(model, folder / "lpski_coords.onnx", SIZE, False)}


def _recipe(path, kind: str) -> str:
    volume = f"{{depth_bins: {DEPTH}}}" if kind == "volume" else f"{{depth_bins: {DEPTH}, in_graph_softargmax: true, stride: 8}}"
    return f"""
name: onnx3d_{kind}
model:
  import: {{format: onnx, path: {path}}}
  input: {IMAGENET}
  keypoints: h36m17
  family: volumetric
  volume: {volume}
export:
  tflite: {{variants: [fp32]}}
  onnx: {{opset: 17}}
verify:
  samples: {{random: 2}}
  find_people: warn
"""


@pytest.fixture(scope="module")
def builds(tmp_path_factory, onnx_files):
    from mdeploy.build import build
    from mdeploy.pipeline import Cache
    from mdeploy.recipe import load_recipe

    root = tmp_path_factory.mktemp("onnx3d-build")
    out = {}
    for kind, path in onnx_files.items():
        recipe = load_recipe(write(root / f"{kind}.yaml", _recipe(path, kind)))
        out[kind] = build(recipe, out_root=root / "build", cache=Cache(root / "cache"))
    return out


def _photo():
    """A real photo through the recipe's preprocessing: NHWC for the canonical model, NCHW for onnxruntime."""
    from mdeploy.images import PACKAGE_PHOTOS, package_photo
    from mdeploy.importers.onnx_nchw import IMAGENET_MEAN, IMAGENET_STD
    from mdeploy.spec import Preprocessing

    pre = Preprocessing(size=(SIZE, SIZE), channels="rgb", range=(0.0, 1.0), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    x, _ = pre.apply(package_photo(sorted(PACKAGE_PHOTOS)[0]))
    nhwc = x[None].astype(np.float32)
    return nhwc, np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))


def _canonical(result, nhwc: np.ndarray) -> np.ndarray:
    """The build's canonical SavedModel on one input: its one output (`volume` or `coords`)."""
    from mdeploy.families import run_outputs
    from mdeploy.runners import open_runner

    outputs = run_outputs(open_runner("saved_model", result.build_dir / "model" / "saved_model"), nhwc)
    assert len(outputs) == 1
    return np.asarray(next(iter(outputs.values())))


@pytest.mark.parametrize("kind", ["volume", "coords"])
def test_the_imported_artifacts_build_and_pass_parity(builds, kind):
    result = builds[kind]
    parity = {g.artifact: g for g in result.gates if g.gate == "parity"}
    assert set(parity) == {"tflite/fp32", "onnx"}
    for gate in parity.values():
        assert gate.status == "passed", gate.checks
        assert gate.metrics["max_joint_mm"] < 1.0 and gate.metrics["agreement"] == 1.0
    import json

    spec = json.loads((result.build_dir / "model" / "spec.json").read_text())
    assert spec["family"] == "volumetric" and spec["head"]["output"] == kind
    assert spec["source"]["signature"] == kind and spec["source"]["layout"] == "NCHW"
    want = [1, 8, 8, JOINTS * DEPTH] if kind == "volume" else [1, JOINTS, 3]
    assert spec["output"]["shape"] == want


@pytest.mark.parametrize("kind", ["volume", "coords"])
def test_the_canonical_model_matches_onnxruntime(builds, onnx_files, kind):
    from mdeploy.importers.onnx_nchw import run_onnxruntime, volume_to_nhwc

    nhwc, nchw = _photo()
    reference = run_onnxruntime(onnx_files[kind], nchw)
    want = volume_to_nhwc(reference) if kind == "volume" else reference
    got = _canonical(builds[kind], nhwc)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.ptp(want) > 1.0  # peaked, not flat: a wrong channel order would show


def test_the_two_signatures_decode_to_the_same_joints(builds, onnx_files):
    """The soft-argmax file's joints are the soft-argmax of the volume file's output."""
    from mdeploy.models.lpnet import soft_argmax_numpy

    nhwc, _ = _photo()
    volume = _canonical(builds["volume"], nhwc)
    coords = _canonical(builds["coords"], nhwc)
    np.testing.assert_allclose(coords, soft_argmax_numpy(volume, JOINTS, DEPTH), atol=1e-4)
    assert np.ptp(coords[0, :, 0]) > 0.5
