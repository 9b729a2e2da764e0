"""Channels-first ONNX of a volumetric model (MobileHumanPose's own path: PyTorch -> ONNX), both signatures.

The files are made here: the project's tiny LPSKI exported by tf2onnx with an NCHW input,
once with its raw volume transposed to NCHW [1, J*D, h, w] and once with the soft-argmax in
the graph [1, J, 3]. Each is imported back through onnx2tf and must compute, on a real
photo normalized the ImageNet way, what onnxruntime computes on the file within 1e-4.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mdeploy.errors import ModelError
from mdeploy.importers.onnx_nchw import IMAGENET_MEAN, IMAGENET_STD, load, read_signature, run_onnxruntime, volume_to_nhwc
from tests.helpers import pytorch_style_onnx

JOINTS, DEPTH, SIZE = 5, 4, 64


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    from mdeploy.importers.onnx import available

    if not available():
        pytest.skip("onnx2tf is not installed (requirements-onnx2tf.txt)")
    from mdeploy.models import create_model

    folder = tmp_path_factory.mktemp("onnx-nchw")
    model = create_model("tiny_lpski", {"soft_argmax": True}, (SIZE, SIZE), JOINTS)
    import keras

    # Untrained features are faint: scale the last conv so that each joint's volume has a clear
    # peak, and x, y and z each move the soft-argmax.
    head = model.get_layer("volume")
    kernel, bias = head.get_weights()
    features = keras.Model(model.input, head.input)(_photo_input()[0]).numpy()
    rng = np.random.default_rng(3)
    scale = 4.0 / (features.std() * np.sqrt(kernel.shape[2]))
    head.set_weights([rng.normal(0, scale, kernel.shape).astype(np.float32), rng.normal(0, 1.0, bias.shape).astype(np.float32)])
    raw = keras.Model(model.input, head.output)
    files = {"volume": pytorch_style_onnx(raw, folder / "lpski_volume.onnx", SIZE, True),
             "coords": pytorch_style_onnx(model, folder / "lpski_coords.onnx", SIZE, False)}
    # The two conversions are child processes: run them side by side.
    with ThreadPoolExecutor(2) as pool:
        loaded = dict(zip(files, pool.map(lambda p: load(p, JOINTS, DEPTH), files.values())))
    return {"files": files, "loaded": loaded, "raw": raw, "model": model}


def _photo_input():
    """The same photo both ways: the recipe's Preprocessing and PyTorch's (x/255 - mean)/std by hand."""
    from mdeploy.images import PACKAGE_PHOTOS, package_photo
    from mdeploy.spec import Preprocessing

    pre = Preprocessing(size=(SIZE, SIZE), channels="rgb", range=(0.0, 1.0), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    pixels, _ = pre.resize_image(package_photo(sorted(PACKAGE_PHOTOS)[-1]))
    ours = pre.normalize(pixels)[None]
    torch_style = ((pixels.astype(np.float32) / 255.0 - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32))[None]
    np.testing.assert_allclose(ours, torch_style, atol=1e-6)
    assert ours.std() > 0.3  # a real photo, not a flat image
    return ours.astype(np.float32), np.ascontiguousarray(torch_style.transpose(0, 3, 1, 2), dtype=np.float32)


def test_raw_volume_signature_imports_and_matches_onnxruntime(onnx_files):
    import tensorflow as tf

    nhwc, nchw = _photo_input()
    loaded = onnx_files["loaded"]["volume"]
    assert loaded.input_shape == (1, SIZE, SIZE, 3)
    assert loaded.source["signature"] == "volume" and loaded.source["output"]["shape"] == [1, JOINTS * DEPTH, 8, 8]
    onnx_out = run_onnxruntime(onnx_files["files"]["volume"], nchw)
    assert onnx_out.shape == (1, JOINTS * DEPTH, 8, 8)
    got = loaded.fn(tf.constant(nhwc)).numpy()
    assert got.shape == (1, 8, 8, JOINTS * DEPTH)
    np.testing.assert_allclose(got, volume_to_nhwc(onnx_out), atol=1e-4)
    # Channel j*D + d is joint j's bin d in both layouts, and the Keras source agrees.
    j, d = 3, 2
    np.testing.assert_allclose(got[0, :, :, j * DEPTH + d], onnx_out[0, j * DEPTH + d], atol=1e-4)
    np.testing.assert_allclose(got, onnx_files["raw"](nhwc).numpy(), atol=1e-4)


def test_soft_argmax_signature_imports_and_matches_onnxruntime(onnx_files):
    import tensorflow as tf

    from mdeploy.models.lpnet import soft_argmax_numpy

    nhwc, nchw = _photo_input()
    loaded = onnx_files["loaded"]["coords"]
    assert loaded.source["signature"] == "coords"
    onnx_out = run_onnxruntime(onnx_files["files"]["coords"], nchw)
    got = loaded.fn(tf.constant(nhwc)).numpy()
    assert got.shape == onnx_out.shape == (1, JOINTS, 3)
    np.testing.assert_allclose(got, onnx_out, atol=1e-4)
    # The baked-in soft-argmax is the soft-argmax of the other file's volume; joints land apart.
    volume = volume_to_nhwc(run_onnxruntime(onnx_files["files"]["volume"], nchw))
    np.testing.assert_allclose(got[0], soft_argmax_numpy(volume, JOINTS, DEPTH)[0], atol=1e-4)
    assert np.ptp(got[0, :, 0]) > 0.5 and np.ptp(got[0, :, 2]) > 0.2


def _onnx_model(in_shape, out_channels=None, out_shape=None):
    """A one-node ONNX model: a 1x1 conv to `out_channels`, or a reshape to `out_shape`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    if out_channels is not None:
        w = numpy_helper.from_array(np.zeros((out_channels, in_shape[1], 1, 1), np.float32), "w")
        inits.append(w)
        nodes.append(helper.make_node("Conv", ["x", "w"], ["y"]))
        out = [1, out_channels, in_shape[2], in_shape[3]]
    else:
        inits.append(numpy_helper.from_array(np.array(out_shape, np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["x", "shape"], ["y"]))
        out = list(out_shape)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize(
    ("in_shape", "channels", "out_shape", "message"),
    [
        ((1, 3, 32, 32), 21 * 32 + 5, None, "output 'y' [1, 677, 32, 32] has 677 channels, which is not 21 joints x 32 depth bins (672), and 677 divides neither"),
        ((1, 3, 32, 32), 19 * 32, None, "has 608 channels, which is not 21 joints x 32 depth bins (672); it could be 19 joints x 32 bins (check the keypoint set)"),
        ((1, 3, 32, 32), 21 * 64, None, "it could be 42 joints x 32 bins (check the keypoint set) or 21 joints x 64 bins (check depth_bins)"),
        ((1, 3, 32, 32), None, (1, 17, 3), "output 'y' is [1, 17, 3]: 17 joints, but the keypoint set has 21"),
        ((1, 3, 32, 32), None, (1, 21, 2), "joints with the soft-argmax inside are [1, J, 3] (x, y, z)"),
        ((1, 32, 32, 3), None, (1, 21, 3), "input 'x' is [1, 32, 32, 3]; a channels-first image input is [1, 3, H, W]"),
    ],
)
def test_files_that_do_not_fit_the_joints_and_depth_bins_say_why(tmp_path, in_shape, channels, out_shape, message):
    import onnx

    model = _onnx_model(in_shape, channels, out_shape)
    with pytest.raises(ModelError) as caught:
        read_signature(model, 21, 32, lambda *keys: "r.yaml:4:11")
    assert message in caught.value.message and caught.value.where == "r.yaml:4:11" and caught.value.exit_code == 2
    # The importer refuses it the same way, before converting anything.
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError) as again:
        load(path, 21, 32)
    assert again.value.message == caught.value.message


def test_a_fitting_file_reads_as_its_signature():
    sig = read_signature(_onnx_model((1, 3, 256, 256), 21 * 32), 21, 32)
    assert (sig.kind, sig.input_size, sig.grid) == ("volume", (256, 256), (256, 256))
    sig = read_signature(_onnx_model((1, 3, 256, 256), None, (1, 21, 3)), 21, 32)
    assert (sig.kind, sig.grid, sig.to_json()["output"]["shape"]) == ("coords", None, [1, 21, 3])
