"""Exact graph simplifications of frozen-graph imports (mdeploy/importers/graph_folds.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy.importers.graph_folds import fold_pointwise_depthwise
from tests.helpers import SHARED

RELEASE = SHARED / "reference" / "tf-openpose" / "mobilenet_thin" / "graph_opt.pb"


def small_graph(shared_weights: bool = False):
    """image -> 1x1 depthwise (channel scales spread over 4 decades) -> 1x1 conv -> relu, frozen."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 6, 5, 4], name="image")
        d = tf.constant((10.0 ** rng.uniform(-2, 2, (1, 1, 4, 1))).astype(np.float32), name="dw_weights")
        w = tf.constant(rng.normal(size=(1, 1, 4, 3)).astype(np.float32), name="pw_weights")
        y = tf.nn.depthwise_conv2d(x, d, [1, 1, 1, 1], "SAME", name="dw")
        z = tf.nn.conv2d(y, w, [1, 1, 1, 1], "SAME", name="pw")
        if shared_weights:  # a second reader of the depthwise output: not foldable
            z = z + tf.reduce_sum(y, axis=3, keepdims=True)
        tf.nn.relu(z, name="out")
    return graph.as_graph_def()


def run(graph_def, x, output="out"):
    import tensorflow as tf

    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    return wrapped.prune("image:0", f"{output}:0")(tf.constant(x)).numpy()


def test_a_1x1_depthwise_feeding_a_1x1_conv_is_folded_exactly():
    import tensorflow as tf

    graph_def = small_graph()
    x = np.random.default_rng(1).normal(size=(1, 6, 5, 4)).astype(np.float32)
    before = run(graph_def, x)
    folded = tf.compat.v1.GraphDef()
    folded.CopyFrom(graph_def)
    assert fold_pointwise_depthwise(folded, keep={"image", "out"}) == 1
    assert not any(n.op == "DepthwiseConv2dNative" for n in folded.node)
    np.testing.assert_allclose(run(folded, x), before, rtol=1e-5, atol=1e-5)


def test_a_depthwise_output_read_twice_is_left_alone():
    graph_def = small_graph(shared_weights=True)
    assert fold_pointwise_depthwise(graph_def, keep={"image", "out"}) == 0


def test_the_openpose_release_loses_its_24_per_channel_scales_and_computes_the_same():
    if not RELEASE.is_file():
        pytest.skip("tf-openpose's release is not here: ../shared is absent")
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(RELEASE.read_bytes())
    folded = tf.compat.v1.GraphDef()
    folded.CopyFrom(graph_def)
    assert fold_pointwise_depthwise(folded, keep={"image", "Openpose/concat_stage7"}) == 24  # two per branch per stage
    x = np.random.default_rng(2).uniform(0, 255, (1, 96, 112, 3)).astype(np.float32)
    np.testing.assert_allclose(run(folded, x, "Openpose/concat_stage7"), run(graph_def, x, "Openpose/concat_stage7"), atol=1e-4)
