"""mv2_cpm initialised from the PoseEstimationForMobile release computes what the release computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mdeploy.errors import InputError, ModelError
from mdeploy.models import create_model
from mdeploy.models.release_weights import initialise, load_release_weights
from mdeploy.spec import Preprocessing
from mdeploy.verify.samples import load_rgb, package_photo
from tests.helpers import PEFM_OUTPUT, PEFM_PB, PEFM_SHA256, SHARED

AIC_PHOTOS = SHARED / "data" / "realkp" / "aic"
# What the release was trained on, and so what the initialised model takes.
RELEASE_INPUT = Preprocessing(size=(192, 192), channels="bgr", range=(0.0, 255.0))


def _need_release() -> Path:
    if not PEFM_PB.is_file():
        pytest.skip(f"the PEFM reference model is not here ({PEFM_PB}): ../shared is absent in this checkout")
    return PEFM_PB


@pytest.fixture(scope="module")
def release():
    """(Keras model initialised from the release, the load report); built once for the module."""
    return initialise("mv2_cpm", None, (192, 192), 14, _need_release())


@pytest.fixture(scope="module")
def release_graph():
    """The release's frozen graph as a function image -> stage_5_out, as the frozen-pb importer runs it."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(_need_release().read_bytes())
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    pruned = wrapped.prune("image:0", f"{PEFM_OUTPUT}:0")
    return wrapped, pruned


def _photos() -> np.ndarray:
    images = [load_rgb(path) for path in sorted(AIC_PHOTOS.glob("*.jpg"))] + [package_photo("astronaut")]
    assert len(images) >= 4
    return np.stack([RELEASE_INPUT.apply(rgb)[0] for rgb in images])


def test_the_initialised_model_reproduces_the_release_on_real_photos(release, release_graph):
    import tensorflow as tf

    model, report = release
    _, run_graph = release_graph
    photos = _photos()
    expected = np.concatenate([run_graph(tf.constant(photo[None])).numpy() for photo in photos])
    got = model(photos, training=False)[-1].numpy()
    assert got.shape == expected.shape == (len(photos), 96, 96, 14)
    assert expected.max() > 0.3  # real peaks, not an all-zero comparison
    assert np.abs(got - expected).max() < 1e-4
    assert report["sha256"] == PEFM_SHA256
    assert report["output"] == PEFM_OUTPUT


def test_every_weighted_layer_is_paired_with_its_own_graph_op(release):
    model, report = release
    weighted = [layer.name for layer in model.layers if layer.weights]
    assert sorted(report["mapping"]) == sorted(weighted)
    assert len(set(report["mapping"].values())) == len(weighted) == report["layers"] == 238
    # 93 convs, 52 depthwise kernels, 93 batch norms (offset, mean, variance): every constant of the graph.
    assert report["tensors"] == 93 + 52 + 93 * 3 == len(model.weights)
    assert report["mapping"]["stem_conv"] == "Conv2d_0/Conv2D"


@pytest.mark.parametrize(
    ("params", "keypoints", "message", "hint"),
    [
        ({"heatmap_head": "bn_relu6"}, 17, "layer 'stage0_heat_pw_conv' kernel has shape [1, 1, 256, 17]", "14 keypoints"),
        ({"width": 0.75, "heatmap_head": "bn_relu6"}, 14, "layer 'stem_conv' kernel has shape [3, 3, 3, 24], Conv2d_0/weights has [3, 3, 3, 16]", "14 keypoints"),
        ({"heatmap_head": "linear"}, 14, "layer 'stage5_heat_pw' (Conv2D) needs BiasAdd over Conv2D", "heatmap_head: bn_relu6"),
    ],
)
def test_a_model_built_otherwise_fails_naming_the_first_difference(params, keypoints, message, hint):
    graph = _need_release()
    model = create_model("mv2_cpm", params, (192, 192), keypoints)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ModelError) as caught:
        load_release_weights(model, graph, where="model.init")
    assert message in caught.value.message
    assert hint in caught.value.hint
    assert caught.value.where == "model.init"
    assert all(np.array_equal(w.numpy(), b) for w, b in zip(model.weights, before))  # nothing half-loaded


def test_another_architecture_fails():
    with pytest.raises(ModelError) as caught:
        initialise("tiny_cpm", None, (64, 64), 14, _need_release())
    assert caught.value.message.startswith("model.pb does not match tiny_cpm: layer ")


def test_layers_the_graph_has_no_weights_for_are_reported(release):
    import keras

    model, _ = release
    extra = keras.layers.Conv2D(14, 1, name="extra_head")(model.get_layer("merge").output)
    widened = keras.Model(model.inputs, [extra, model.outputs[-1]])
    with pytest.raises(ModelError) as caught:
        load_release_weights(widened, _need_release())
    assert "has no weights for layer 'extra_head'" in caught.value.message


def test_a_missing_or_unreadable_graph_is_a_model_error(tmp_path):
    model = create_model("tiny_cpm", None, (64, 64), 14)
    with pytest.raises(ModelError, match="no frozen graph at"):
        load_release_weights(model, tmp_path / "missing.pb")
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelError, match="is not a TensorFlow GraphDef"):
        load_release_weights(model, junk)


def test_an_unknown_heatmap_head_is_refused():
    with pytest.raises(InputError, match="unknown heatmap_head of mv2_cpm 'bn_relu'"):
        create_model("mv2_cpm", {"heatmap_head": "bn_relu"}, (192, 192), 14)
