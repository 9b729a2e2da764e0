"""Which tensors a layer kept in float takes with it (mdeploy.exporters.mixed_precision.consumers),
and how the search groups tensors into blocks (group_tensors)."""

from __future__ import annotations

import numpy as np


def concat_model() -> bytes:
    """image -> conv a (PAF-like, -1..1) and conv b (features) -> concat -> conv c -> out (float TFLite)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    wa = tf.constant(rng.normal(size=(1, 1, 3, 2)).astype(np.float32))
    wb = tf.constant(rng.normal(size=(1, 1, 3, 4)).astype(np.float32))
    wc = tf.constant(rng.normal(size=(1, 1, 6, 2)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32, name="image")])
    def model(image):
        a = tf.tanh(tf.nn.conv2d(image, wa, 1, "SAME"), name="a")
        b = tf.nn.relu(tf.nn.conv2d(image, wb, 1, "SAME"), name="b")
        joined = tf.concat([a, b], axis=3, name="joined")
        return {"out": tf.nn.conv2d(joined, wc, 1, "SAME", name="c")}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    return converter.convert()


def test_a_concatenation_kept_in_float_keeps_its_readers_in_float():
    from ai_edge_litert.interpreter import Interpreter

    from mdeploy.exporters.mixed_precision import consumers

    flatbuffer = concat_model()
    interp = Interpreter(model_content=flatbuffer)
    names = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    by_op = {op["op_name"]: [names[o] for o in op["outputs"]] for op in ops}
    concat_out = by_op["CONCATENATION"][0]
    reader = next(names[o] for op in ops if any(names.get(i) == concat_out for i in op["inputs"]) for o in op["outputs"])
    tanh_out = by_op["TANH"][0]
    kept = consumers(flatbuffer, [tanh_out])
    # the PAF-like branch, the concatenation it feeds, and the convolution that reads the concatenation
    assert tanh_out in kept and concat_out in kept and reader in kept
    relu_out = by_op["RELU"][0] if "RELU" in by_op else None
    assert relu_out is None or relu_out not in kept  # the other input of the concatenation is not dragged along


def test_tensors_are_grouped_at_the_deepest_scope_level_with_few_enough_groups():
    """The search measures blocks, not single layers, in a deep network: the deepest level of the
    name scopes that still has at most `most` groups. A tensor fused from several ops is grouped
    by its first name; one without a scope is a group of its own."""
    from mdeploy.exporters.mixed_precision import group_tensors

    tensors = [f"net/stage_{s}/block_{b}/conv_{c}/Relu6;net/stage_{s}/block_{b}/conv_{c}/BiasAdd"
               for s in range(3) for b in range(4) for c in range(2)] + ["Conv2d_0"]
    by_block = group_tensors(tensors, most=12)
    assert sorted(by_block) == ["", "net/stage_0", "net/stage_1", "net/stage_2"]
    assert len(by_block["net/stage_1"]) == 8 and by_block[""] == ["Conv2d_0"]
    finer = group_tensors(tensors, most=13)
    assert len(finer) == 13 and finer["net/stage_2/block_3"] == tensors[22:24]
    assert group_tensors(tensors, most=64)["net/stage_0/block_0/conv_1"] == [tensors[1]]  # one layer per group
    assert group_tensors(tensors, most=1) == {"": tensors}


def test_a_group_larger_than_the_search_can_keep_is_split_below_its_level():
    """A block of more layers than `max_float_layers` could never be kept whole: it is split into
    its sub-scopes (however many), and the small blocks beside it stay whole."""
    from mdeploy.exporters.mixed_precision import group_tensors

    big = [f"net/head/layer_{i}/Relu" for i in range(40)]
    small = [f"net/body/block_{b}/conv/Relu" for b in range(3)]
    grouped = group_tensors(big + small, most=8, largest=16)
    assert grouped["net/body"] == small
    assert len(grouped) == 41 and grouped["net/head/layer_7"] == [big[7]]
    assert group_tensors(big + small, most=8) == {"net/head": big, "net/body": small}


def amplifying_block_model(folder) -> str:
    """A SavedModel whose int8 error is made where a layer's own error does not show it.

    block: a ReLU6 conv (one channel saturates, so int8 stores every channel at a 6/255 step),
    a 1x1 depthwise that scales it by 0.05, and a head that takes differences of near-equal
    channel pairs (x60): the step is small where it is made and large at the output. noise: six
    layers with one outlier channel each (the largest error relative to their other channels'
    spread) whose outputs reach the heatmaps at 1e-6."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    c = 16
    wa = np.abs(rng.normal(size=(1, 1, 3, c))).astype(np.float32) * 0.3
    wa[..., 2::2] = wa[..., 1::2][..., : wa[..., 2::2].shape[-1]] * 0.97
    wa[..., 0] = 10.0
    wd = np.full((1, 1, c, 1), 0.05, np.float32)
    wb = np.zeros((1, 1, c, 1), np.float32)
    wb[0, 0, 1::2, 0], wb[0, 0, 2::2, 0] = 60.0, -60.0
    noise = [np.full((1, 1, 3, c), 0.01 * (i + 1), np.float32) for i in range(6)]
    for w in noise:
        w[..., 0] = 300.0
    faint = np.full((1, 1, c, 1), 1e-6, np.float32)

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32, name="image")])
        def serve(self, image):
            with tf.name_scope("block"):
                t = tf.nn.relu6(tf.nn.conv2d(image, wa, 1, "SAME"))
                u = tf.nn.relu(tf.nn.depthwise_conv2d(t, wd, [1, 1, 1, 1], "SAME"))
                head = tf.nn.conv2d(u, wb, 1, "SAME")
            for i, w in enumerate(noise):
                with tf.name_scope(f"noise/layer_{i}"):
                    head = head + tf.nn.conv2d(tf.nn.relu(tf.nn.conv2d(image, w, 1, "SAME")), faint, 1, "SAME")
            return {"heatmaps": head}

    model = Model()
    path = str(folder / "saved_model")
    tf.saved_model.save(model, path, signatures={"serving_default": model.serve})
    return path


def test_the_search_finds_the_block_whose_error_shows_only_at_the_output(tmp_path):
    """The layers the debugger ranks worst (each layer's own error) cost the output nothing here;
    keeping them in float does not help. The search measures at the output and keeps the block
    that makes the error: one group, three layers, the output error 20x lower. With a limit too
    small for the block, the per-layer order runs as the fallback and nothing passes."""
    import tensorflow as tf

    from mdeploy.exporters import mixed_precision as mp

    path = amplifying_block_model(tmp_path)
    rng = np.random.default_rng(1)
    calibration = [rng.uniform(0, 1, (1, 8, 8, 3)).astype(np.float32) for _ in range(16)]
    probe = [rng.uniform(0, 1, (1, 8, 8, 3)).astype(np.float32) for _ in range(8)]
    floating = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=["serving_default"]).convert()
    error = mp.OutputError(floating, lambda: iter(probe))
    requantizer = mp.Requantizer(path, lambda: iter(calibration), "float")
    plain = error(requantizer.keeping_float([]))

    def passes(flatbuffer):
        measured = error(flatbuffer)
        return measured < plain / 3, {"summary": f"output error {measured:.4f}"}

    found = mp.search(path, lambda: iter(calibration), lambda: iter(probe), "float", passes, 4, lambda line: None)
    worst_own = [r["tensor"] for r in found["ranked"][:4]]
    assert all(t.startswith("noise/") for t in worst_own), worst_own
    assert error(requantizer.keeping_float(mp.consumers(floating, worst_own))) > plain * 0.9  # they cost nothing
    assert found["order"] == "output error" and found["flatbuffer"], found["trail"]
    assert [g["group"] for g in found["groups"]] == ["block"]
    assert {layer["tensor"].split("/")[0] for layer in found["float_layers"]} == {"block"}
    assert len(found["float_layers"]) == 3
    assert found["groups"][0]["output_error"] < found["int8_output_error"] / 20
    # Two layers cannot hold the block: the output-error order fails, the per-layer order runs as
    # the fallback and fails too, and nothing is chosen.
    found = mp.search(path, lambda: iter(calibration), lambda: iter(probe), "float", passes, 2, lambda line: None)
    assert found["order"] is None and found["flatbuffer"] is None and found["float_layers"] == []
    assert not any(t["passed"] for t in found["trail"])
    assert [(t["order"], t["float_layers"]) for t in found["trail"] if t["order"] == "layer error"] == [("layer error", 1),
                                                                                                      ("layer error", 2)]
    assert found["trail"][-1]["order"] == "layer error"  # tried after the output-error order
    error.close()


def test_the_build_summary_says_what_to_change_when_no_layers_pass():
    """A search that found nothing within its limit tells the user the two settings that change
    the outcome; a search that was not needed prints nothing."""
    from mdeploy.cli.build_cmd import quantization_lines

    def manifest(mixed):
        return {"artifacts": [{"id": "tflite/int8", "details": {"mixed_precision": mixed}}]}

    lines = quantization_lines(manifest({"needed": True, "passed": False, "limit": 16, "float_layers": []}))
    assert len(lines) == 2 and "no 16 layers in float passed verify.accuracy" in lines[1]
    assert "max_float_layers" in lines[1] and "enabled: false" in lines[1]
    assert quantization_lines(manifest({"needed": False, "drops": {"val": 0.2}, "float_layers": []})) == []
