"""OpenPose-MobileNet architectures (issue 13 item 5): structure, size against the releases, release weights.

- `openpose_mobilenet_thin` and `openpose_mobilenet_v2` (0.5 / 0.5) have the weights and
  multiply-accumulates the releases' graphs have at 432 x 368, within 5 %;
- the training model's outputs are every stage's PAFs then heatmaps, final heatmaps last;
  the inference view splits the final ones into `heatmaps` [1, H/8, W/8, 19] and `pafs`
  [1, H/8, W/8, 38];
- initialised from the release's frozen graph (../shared), the thin model gives the graph's
  heatmaps and PAFs on a real photo (within 1e-4), channel for channel.
"""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy.errors import InputError, ModelError
from mdeploy.keypoints import TF_OPENPOSE_COCO18
from mdeploy.models import create_model, get_arch
from mdeploy.models.openpose_mobilenet import inference_outputs, stage_names
from mdeploy.models.profile import count_macs, count_params
from tests.helpers import SHARED

THIN_PB = SHARED / "reference" / "tf-openpose" / "mobilenet_thin" / "graph_opt.pb"
V2_SMALL_PB = SHARED / "reference" / "tf-openpose" / "mobilenet_v2_small" / "graph_opt.pb"
REAL_COCO = SHARED / "data" / "realkp" / "coco"
RELEASE_HW = (368, 432)  # what the releases were trained at (width 432, height 368)
PARTS = TF_OPENPOSE_COCO18.parts


@pytest.fixture(scope="module")
def thin():
    """The full-size thin model at the release's size, built once for the module."""
    return create_model("openpose_mobilenet_thin", None, RELEASE_HW, PARTS)


def _within(measured: float, reference: float, tolerance: float = 0.05) -> bool:
    return abs(measured - reference) <= tolerance * reference


def test_thin_has_the_release_size_and_registry_references(thin):
    info = get_arch("openpose_mobilenet_thin")
    params, macs = count_params(thin), count_macs(thin)
    assert _within(params, 1.93e6) and _within(macs, 4.97e9), (params, macs)
    assert _within(params, info.reference["params"]) and _within(macs, info.reference["macs"])
    assert info.family == "openpose" and info.output_stride == 8 and info.input_size == RELEASE_HW
    assert info.size_multiple == 16


def test_thin_features_and_stages_are_the_releases(thin):
    assert thin.get_layer("features").output.shape[-1] == 864  # pool(Conv2d_3) + Conv2d_7 + Conv2d_11
    assert thin.get_layer("stage1_in").output.shape[-1] == 921  # PAFs + heatmaps + features
    assert thin.get_layer("conv2d_0_conv").output.shape[-1] == 24  # MobileNetV1 at width 0.75
    assert [o.shape[1:] for o in thin.outputs[-2:]] == [(46, 54, 38), (46, 54, 19)]
    assert len(thin.outputs) == 12
    assert stage_names(get_arch("openpose_mobilenet_thin").params(None)) == [
        f"stage_{s}_{kind}" for s in range(6) for kind in ("pafs", "heatmaps")
    ]
    # the model's outputs are the named layers' outputs, in the documented order
    assert [id(thin.get_layer(n).output) for n in stage_names({"stages": 6})] == [id(t) for t in thin.outputs]


def test_v2_small_has_the_release_size_and_large_is_larger():
    small = create_model("openpose_mobilenet_v2", None, RELEASE_HW, PARTS)
    params, macs = count_params(small), count_macs(small)
    reference = get_arch("openpose_mobilenet_v2").reference
    assert _within(params, reference["params"]) and _within(macs, reference["macs"]), (params, macs)
    assert small.get_layer("features").output.shape[-1] == 64  # layer_7 (16) + upsampled layer_14 (48)
    # The large variant (1.4 / 1.0): parameters do not depend on the input size, so a small input will do.
    large = create_model("openpose_mobilenet_v2", {"width": 1.4, "refine_width": 1.0}, (128, 128), PARTS)
    assert large.get_layer("conv_conv").output.shape[-1] == 48  # 32 x 1.4 rounded to a multiple of 8
    assert large.get_layer("stage0_L1_1_pw_conv").output.shape[-1] == 128
    assert large.get_layer("stage0_L1_4_pw_conv").output.shape[-1] == 512
    assert count_params(large) > 4 * params
    assert [o.shape[1:] for o in large.outputs[-2:]] == [(16, 16, 38), (16, 16, 19)]


def test_inference_outputs_split_heatmaps_and_pafs():
    model = create_model("openpose_tiny", None, (64, 96), PARTS)
    assert [t.shape[1:] for t in model.outputs] == [(8, 12, 38), (8, 12, 19)] * 2
    view = inference_outputs(model)
    assert [layer.name for layer in view.layers[-2:]] == ["heatmaps", "pafs"]
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 96, 3)).astype(np.float32)
    heatmaps, pafs = view(x, training=False)
    trained = model(x, training=False)
    assert heatmaps.shape == (1, 8, 12, 19) and pafs.shape == (1, 8, 12, 38)
    np.testing.assert_array_equal(heatmaps.numpy(), trained[-1].numpy())  # the same weights, not a copy
    np.testing.assert_array_equal(pafs.numpy(), trained[-2].numpy())


@pytest.mark.parametrize(
    ("arch", "size", "keypoints", "message"),
    [
        ("openpose_mobilenet_thin", (360, 432), PARTS, "divisible by 16"),
        ("openpose_tiny", (64, 64), 14, "18 parts of keypoint set coco18"),
    ],
)
def test_bad_sizes_and_keypoint_counts_are_clear_errors(arch, size, keypoints, message):
    with pytest.raises(InputError, match=message):
        create_model(arch, None, size, keypoints)


# --------------------------------------------------------------------------- release weights

needs_release = pytest.mark.skipif(not THIN_PB.is_file(), reason="tf-openpose's release is not here: ../shared is absent")


def _real_photo() -> np.ndarray:
    """A real photo as the release takes it: bicubic to 432 x 368, BGR, 0..255, batch of 1."""
    from PIL import Image

    from mdeploy.verify.samples import package_photo

    photos = sorted(REAL_COCO.glob("*.jpg"))
    rgb = Image.open(photos[0]).convert("RGB") if photos else Image.fromarray(package_photo("astronaut"))
    rgb = rgb.resize(RELEASE_HW[::-1], Image.BICUBIC)
    return np.asarray(rgb, np.float32)[None, :, :, ::-1].copy()


@needs_release
def test_the_initialised_thin_model_computes_what_the_release_computes(thin):
    import tensorflow as tf

    from mdeploy.models.openpose_weights import RELEASE_OUTPUT, load_release_weights

    report = load_release_weights(thin, THIN_PB)
    weighted = [layer.name for layer in thin.layers if layer.weights]
    assert sorted(report["mapping"]) == sorted(weighted)  # every weighted layer has its own graph op
    assert len(set(report["mapping"].values())) == len(weighted)
    assert report["mapping"]["stage_5_heatmaps"] == "Openpose/MConv_Stage6_L2_5_pointwise/Conv2D"
    assert report["mapping"]["stage_5_pafs"] == "Openpose/MConv_Stage6_L1_5_pointwise/Conv2D"

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(THIN_PB.read_bytes())
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph, name=""), [])
    run = wrapped.prune("image:0", f"{RELEASE_OUTPUT}:0")
    photo = _real_photo()
    expected = run(tf.constant(photo)).numpy()[0]  # [46, 54, 57] = 19 heatmaps then 38 PAFs
    heatmaps, pafs = (t.numpy()[0] for t in inference_outputs(thin)(photo, training=False))
    assert expected.shape == (46, 54, 57) and heatmaps.shape == (46, 54, 19) and pafs.shape == (46, 54, 38)
    assert expected[..., :18].max() > 0.5 and np.abs(expected[..., 19:]).max() > 0.5  # real people, real fields
    assert np.abs(heatmaps - expected[..., :19]).max() < 1e-4
    assert np.abs(pafs - expected[..., 19:]).max() < 1e-4


@pytest.mark.skipif(not V2_SMALL_PB.is_file(), reason="tf-openpose's release is not here: ../shared is absent")
def test_a_graph_of_another_architecture_is_refused_with_the_layer_named():
    from mdeploy.models.openpose_weights import load_release_weights

    model = create_model("openpose_tiny", None, (64, 64), PARTS)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ModelError, match="does not match openpose_tiny") as err:
        load_release_weights(model, V2_SMALL_PB)
    assert "layer '" in err.value.message and "openpose_mobilenet_thin" in err.value.hint
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))  # nothing copied
