"""Depthwise kernels over 25 taps split into bands for XNNPACK's fast path (exporters/xnnpack_rewrites.py).

Real TensorFlow graphs and real TFLite conversions of a tiny model with 7x7 depthwise layers
(stride 1 and 2, SAME and VALID, with and without bias, depth multiplier 2): the split graph
computes what the original does, the converted file holds no depthwise kernel over 25 taps, and
a build records the split in its manifest (and keeps the 7x7 kernels when the recipe says no).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mdeploy.exporters.xnnpack_rewrites import pieces

SIZE = 24  # output 6x6 (one stride-2 layer, one VALID 7x7)


def test_bands_cover_the_kernel_once_within_the_tap_limit():
    assert pieces(7, 7) == [(0, 3, 0, 7), (3, 6, 0, 7), (6, 7, 0, 7)]
    assert pieces(5, 5) == [(0, 5, 0, 5)] and pieces(3, 3) == [(0, 3, 0, 3)]
    for kh, kw in [(7, 7), (9, 9), (6, 6), (1, 31), (31, 1), (11, 4)]:
        bands = pieces(kh, kw)
        covered = np.zeros((kh, kw), int)
        for r0, r1, c0, c1 in bands:
            covered[r0:r1, c0:c1] += 1
            assert (r1 - r0) * (c1 - c0) <= 25
        assert (covered == 1).all(), (kh, kw)


def _model():
    import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(7, padding="same", activation="relu")(x)  # bias, then an activation
    x = keras.layers.DepthwiseConv2D(7, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.DepthwiseConv2D(7, padding="valid", depth_multiplier=2)(x)
    x = keras.layers.DepthwiseConv2D(5, padding="same")(x)  # 25 taps: left as it is
    out = keras.layers.Conv2D(14, 1, name="heatmaps")(x)
    model = keras.Model(inp, out)
    for layer in model.layers:  # non-zero biases so a misplaced bias shows
        weights = layer.get_weights()
        if len(weights) == 2:
            layer.set_weights([weights[0], np.linspace(-0.5, 0.5, weights[1].size).astype(np.float32)])
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from mdeploy.exporters.xnnpack_rewrites import rewrite_saved_model

    root = tmp_path_factory.mktemp("split")
    _canonical(_model(), SIZE, root / "original")
    done = rewrite_saved_model(root / "original", root / "split", ["split_depthwise"])["split_depthwise"]
    return root, done


def _tflite(path):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(path), signature_keys=["serving_default"])
    return converter.convert()


def _run(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=flatbuffer).get_signature_runner()
    return runner(image=x)["heatmaps"]


def _canonical(model, size: int, folder):
    """`model` written as the build writes a canonical SavedModel."""
    from mdeploy.importers import LoadedModel
    from mdeploy.importers.canonical import write_canonical

    write_canonical(LoadedModel(fn=model, input_shape=(None, size, size, 3), input_dtype="float32", keep=model), (size, size),
                    folder)
    return folder


def _serve(folder, x: np.ndarray) -> np.ndarray:
    """The SavedModel's heatmaps for `x`, in TensorFlow."""
    import tensorflow as tf

    return tf.saved_model.load(str(folder)).signatures["serving_default"](image=tf.constant(x))["heatmaps"].numpy()


def _int8(folder, calibration: list[np.ndarray]) -> bytes:
    """A full-integer .tflite of the SavedModel, calibrated on `calibration`."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=["serving_default"])
    converter.optimizations = {tf.lite.Optimize.DEFAULT}
    converter.target_spec.supported_ops = {tf.lite.OpsSet.TFLITE_BUILTINS_INT8}
    converter.representative_dataset = lambda: ([x] for x in calibration)
    return converter.convert()


def test_the_split_graph_computes_what_the_layer_does(saved):

    root, done = saved
    assert [d["kernel"] for d in done] == [[7, 7]] * 3 and all(d["taps"] == [21, 21, 7] for d in done)
    x = np.random.default_rng(0).normal(size=(1, SIZE, SIZE, 3)).astype(np.float32)
    original = _serve(root / "original", x)
    split = _serve(root / "split", x)
    assert split.shape == original.shape == (1, 6, 6, 14)
    scale = float(np.abs(original).max())
    assert scale > 0.1
    np.testing.assert_allclose(split, original, atol=1e-5 * scale)


def test_the_converted_file_has_no_depthwise_kernel_over_25_taps(saved):
    from ai_edge_litert.interpreter import Interpreter

    root, _ = saved
    before, after = _tflite(root / "original"), _tflite(root / "split")

    def depthwise_taps(flatbuffer):
        it = Interpreter(model_content=flatbuffer)
        tensors = {t["index"]: t for t in it.get_tensor_details()}
        return sorted(int(np.prod(tensors[op["inputs"][1]]["shape"][1:3])) for op in it._get_ops_details()
                      if op["op_name"] == "DEPTHWISE_CONV_2D")

    assert depthwise_taps(before) == [25, 49, 49, 49]
    assert depthwise_taps(after) == [7, 7, 7, 21, 21, 21, 21, 21, 21, 25]
    # The bands' slices spell out every size: XNNPACK takes them, so the split graph stays one part.
    from mdeploy.exporters.tflite import xnnpack_plan

    assert xnnpack_plan(after) == {"partitions": 1, "builtin": []}
    x = np.random.default_rng(1).normal(size=(1, SIZE, SIZE, 3)).astype(np.float32)
    ref = _run(before, x)
    np.testing.assert_allclose(_run(after, x), ref, atol=1e-5 * float(np.abs(ref).max()))


def test_a_build_records_the_split_and_can_keep_the_kernels(tmp_path, saved):
    """A recipe importing the model: TFLite fp32 is split (manifest says how) and passes parity
    against the unsplit canonical model; `split_depthwise: false` keeps the 7x7 kernels."""
    from mdeploy.build import build
    from mdeploy.recipe import load_recipe
    from tests.helpers import write

    root, _ = saved
    results = {}
    for flag in ("true", "false"):
        recipe = write(tmp_path / f"split_{flag}.yaml", f"""
name: split_{flag}
model:
  import: {{format: saved_model, path: {root / 'original'}}}
  input: {{size: [{SIZE}, {SIZE}], channels: rgb, range: [0, 1]}}
  keypoints: aic14
export: {{tflite: {{variants: [fp32], split_depthwise: {flag}}}}}
verify: {{find_people: off, samples: {{random: 2}}}}
""")
        result = build(load_recipe(recipe), out_root=tmp_path / "b")
        manifest = json.loads((result.build_dir / "manifest.json").read_text())
        art = next(a for a in manifest["artifacts"] if a["id"] == "tflite/fp32")
        parity = next(g for g in manifest["gates"]["parity"]["results"] if g["artifact"] == "tflite/fp32")
        results[flag] = (art["details"], parity)
    details, parity = results["true"]
    assert details["split_depthwise"] == {"layers": 3, "max_taps": 25, "kernels": ["7x7"], "pieces": 9}
    assert parity["status"] == "passed"
    details, parity = results["false"]
    assert "split_depthwise" not in details and parity["status"] == "passed"


def _prelu_model():
    import keras

    keras.utils.set_random_seed(5)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    per_channel = keras.layers.PReLU(shared_axes=[1, 2])
    x = per_channel(x)
    x = keras.layers.Conv2D(8, 3, padding="same")(x)
    shared = keras.layers.PReLU(shared_axes=[1, 2])  # every slope alike: one LEAKY_RELU
    x = shared(x)
    out = keras.layers.Conv2D(14, 1, name="heatmaps")(x)
    model = keras.Model(inp, out)
    per_channel.set_weights([np.linspace(-0.3, 0.8, 8, dtype=np.float32)[None, None, :]])
    shared.set_weights([np.full((1, 1, 8), 0.2, np.float32)])
    return model


@pytest.fixture(scope="module")
def prelu(tmp_path_factory):
    from mdeploy.exporters.xnnpack_rewrites import rewrite_saved_model

    root = tmp_path_factory.mktemp("prelu")
    _canonical(_prelu_model(), 16, root / "original")
    done = rewrite_saved_model(root / "original", root / "leaky", ["prelu_as_leaky_relu"])
    return root, done["prelu_as_leaky_relu"]


def test_prelu_becomes_leaky_relu_with_the_same_numbers(prelu):

    root, done = prelu
    assert [(d["channels"], d["single_op"]) for d in done] == [(8, False), (8, True)]
    assert done[1]["slope"] == pytest.approx(0.2)
    x = np.random.default_rng(2).normal(size=(1, 16, 16, 3)).astype(np.float32) * 3
    original = _serve(root / "original", x)
    leaky = _serve(root / "leaky", x)
    np.testing.assert_allclose(leaky, original, atol=1e-5 * float(np.abs(original).max()))


def test_int8_prelu_rewritten_runs_in_one_xnnpack_partition(prelu):
    """Full-integer files of both graphs: the original keeps PRELU (left to TFLite's builtin
    kernels: the delegated graph is cut around each), the rewritten one has none and is one
    XNNPACK partition; both stay near the float model."""
    from ai_edge_litert.interpreter import Interpreter

    root, _ = prelu
    rng = np.random.default_rng(3)
    calibration = [rng.normal(size=(1, 16, 16, 3)).astype(np.float32) for _ in range(16)]

    files = {"original": _int8(root / "original", calibration), "leaky": _int8(root / "leaky", calibration)}
    ops = {}
    for name, flatbuffer in files.items():
        it = Interpreter(model_content=flatbuffer)
        it.allocate_tensors()
        ops[name] = [o["op_name"] for o in it._get_ops_details()]
    assert ops["original"].count("PRELU") == 2 and ops["original"].count("DELEGATE") > 1
    assert "PRELU" not in ops["leaky"] and ops["leaky"].count("LEAKY_RELU") == 2 and ops["leaky"].count("DELEGATE") == 1
    x = calibration[0]
    ref = _tflite(root / "original")
    want = _run(ref, x)
    for flatbuffer in files.values():
        assert np.abs(_run(flatbuffer, x) - want).mean() < 0.05 * np.abs(want).mean()


def test_a_rewritten_model_is_made_once_per_content_and_rewrite_list(saved, prelu, monkeypatch):
    """The variants of a build share one rewritten SavedModel; a model with nothing to rewrite is
    read once and handed back as it is (None)."""
    import shutil
    from collections import OrderedDict

    from mdeploy.exporters import xnnpack_rewrites as xr

    root, _ = saved
    monkeypatch.setattr(xr, "_CACHE", OrderedDict())
    made = []
    real = xr.rewrite_saved_model
    monkeypatch.setattr(xr, "rewrite_saved_model", lambda *a: made.append(a[2]) or real(*a))
    copy = root / "copy_of_original"
    shutil.copytree(root / "original", copy, dirs_exist_ok=True)
    first, changed = xr.rewritten(root / "original", ["split_depthwise"])
    again, _ = xr.rewritten(copy, ["split_depthwise"])  # same content elsewhere: the same rewrite
    assert first == again and first.is_dir() and len(changed["split_depthwise"]) == 3
    nothing, none = xr.rewritten(prelu[0] / "original", ["split_depthwise"])  # 3x3 only: nothing to split
    assert (nothing, none) == (None, {})
    assert xr.rewritten(prelu[0] / "original", ["split_depthwise"]) == (None, {})
    assert made == [["split_depthwise"], ["split_depthwise"]]  # once per content


def _concat_model():
    """Two refinement stages as CPM and OpenPose models have them: each reads concat(features,
    previous heatmaps), one through a 1x1 convolution (bias, ReLU), one through a depthwise
    convolution (bias, ReLU, two channels per channel), a second depthwise one, then a 1x1 one
    (no bias) and a batch norm. The features span 0..6, the heatmaps 0..0.05; a concatenation that a reshape reads stays."""
    import keras

    keras.utils.set_random_seed(7)
    inp = keras.Input((16, 16, 3), name="image")
    features = keras.layers.Conv2D(24, 3, padding="same", activation="relu6")(inp)
    heat = keras.layers.Conv2D(4, 1, activation="sigmoid")(features)
    heat = keras.layers.Rescaling(0.05)(heat)
    x = keras.layers.Concatenate()([features, heat])
    x = keras.layers.Conv2D(16, 1, activation="relu")(x)
    heat2 = keras.layers.Conv2D(4, 1)(x)
    y = keras.layers.Concatenate()([heat2, features, heat])
    y = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu")(y)  # per channel
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(y)  # reads 2 channels per concatenated one
    y = keras.layers.Conv2D(14, 1, use_bias=False)(y)
    bn = keras.layers.BatchNormalization()  # in the inference graph: Mul and Add of constants
    y = bn(y)
    kept = keras.layers.Concatenate()([heat, heat2])  # read by a reshape, not a convolution
    kept = keras.layers.Reshape((16, 16, 8))(kept)
    out = keras.layers.Concatenate(name="heatmaps")([y, keras.layers.Conv2D(14, 1)(kept)])
    model = keras.Model(inp, out)
    stage = model.layers[5]  # the first stage: lean on the heatmaps so their resolution shows
    kernel, bias = stage.get_weights()
    kernel[:, :, 24:] *= 40.0
    stage.set_weights([kernel, bias + 0.1])
    channels = np.arange(14, dtype=np.float32)
    bn.set_weights([1.0 + 0.1 * channels, 0.05 * channels - 0.3, 0.02 * channels, 0.5 + 0.1 * channels])
    return model


@pytest.fixture(scope="module")
def concat(tmp_path_factory):
    from mdeploy.exporters.xnnpack_rewrites import rewrite_saved_model

    root = tmp_path_factory.mktemp("concat")
    _canonical(_concat_model(), 16, root / "original")
    done = rewrite_saved_model(root / "original", root / "split", ["split_concat"])
    return root, done["split_concat"]


def test_a_concatenation_read_by_convolutions_becomes_per_part_convolutions(concat):

    root, done = concat
    assert sorted(d["channels"] for d in done) == [[4, 24, 4], [24, 4]]  # the reshape's and the output stay
    # The 1x1 convolution alone, and the depthwise convolution, its bias and ReLU, a second
    # depthwise convolution, then the 1x1 one.
    assert sorted(len(reader) for d in done for reader in d["readers"]) == [1, 5]
    x = np.random.default_rng(4).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)
    original = _serve(root / "original", x)
    split = _serve(root / "split", x)
    scale = float(np.abs(original).max())
    assert scale > 0.1
    np.testing.assert_allclose(split, original, atol=1e-5 * scale)


def test_int8_parts_keep_their_own_scale_and_the_file_stays_closer_to_float(concat):
    """Full-integer files of both graphs, calibrated alike: in the original every input of a
    concatenation shares the concatenation's scale (the 0..0.05 heatmaps get the 0..6 features'
    step, about 2 levels), in the split one the heatmaps keep theirs; the split file's output is
    nearer the float model's on held-out inputs."""
    from ai_edge_litert.interpreter import Interpreter

    root, _ = concat
    rng = np.random.default_rng(5)
    calibration = [rng.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(32)]
    held_out = [rng.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(8)]

    files = {"original": _int8(root / "original", calibration), "split": _int8(root / "split", calibration)}

    def concat_scales(flatbuffer):
        it = Interpreter(model_content=flatbuffer)
        tensors = {t["index"]: t for t in it.get_tensor_details()}
        return [sorted({round(tensors[i]["quantization"][0], 6) for i in op["inputs"]})
                for op in it._get_ops_details() if op["op_name"] == "CONCATENATION"]

    def muls(flatbuffer):
        return [op["op_name"] for op in Interpreter(model_content=flatbuffer)._get_ops_details()].count("MUL")

    # The batch norm after the split convolution is folded into its parts as into the whole
    # convolution: the one MUL left in both files is the heatmaps' rescaling.
    assert muls(files["split"]) == muls(files["original"]) == 1
    original, split = concat_scales(files["original"]), concat_scales(files["split"])
    assert len(original) == 4 and all(len(s) == 1 for s in original)  # one shared scale per concatenation
    assert len(split) == 2  # the reshape's and the output's are left
    reference = _tflite(root / "original")
    errors = {}
    for name, flatbuffer in files.items():
        errors[name] = np.mean([np.abs(_run(flatbuffer, x) - _run(reference, x)).mean() for x in held_out])
    assert errors["split"] < 0.5 * errors["original"], errors


def _measured_rewrite(root, model, rewrite: str, out: str, seed: int):
    """`model` written as `root/original` and through the measured `rewrite` as `root/out`, on 32
    uniform images (returned as well, for int8 calibration): (root, what it changed, the images)."""
    from mdeploy.exporters.xnnpack_rewrites import rewrite_saved_model

    _canonical(model, 16, root / "original")
    rng = np.random.default_rng(seed)
    calibration = [rng.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(32)]
    done = rewrite_saved_model(root / "original", root / out, [rewrite], lambda: iter(calibration))
    return root, done[rewrite], calibration


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    """The two-stage model of `concat` with its concatenations' faint parts scaled up."""
    return _measured_rewrite(tmp_path_factory.mktemp("scaled"), _concat_model(), "scale_concat", "scaled", 5)


def test_faint_concatenation_parts_are_scaled_up_with_the_same_numbers(scaled):
    """Only the concatenations convolutions read are touched (the reshape's and the output stay).
    The first stage's 1x1 convolution weighs the heatmaps (at most 0.05) 40 times up, so the
    balanced ratio would take them past the features' range: they are scaled by the whole range
    ratio. The second stage reaches its 1x1 convolution through depthwise layers, which carry
    the scale: there it stops where the heatmaps' channels would set the range of a tensor they
    pass through. The part that sets each range, and one within 2x of it, stay; the float model
    computes the same numbers."""
    root, done, _ = scaled
    by_channels = {tuple(d["channels"]): d for d in done}
    assert set(by_channels) == {(24, 4), (4, 24, 4)}
    conv, chained = by_channels[(24, 4)], by_channels[(4, 24, 4)]
    features, heat = conv["ranges"]
    assert heat <= 0.05 < features
    assert conv["scales"][0] == 1.0 and conv["scales"][1] == pytest.approx(features / heat, rel=1e-2)
    top = max(chained["ranges"])
    assert [s for s, m in zip(chained["scales"], chained["ranges"]) if m > top / 2] == [1.0, 1.0]
    assert 2 <= chained["scales"][2] < 0.5 * top / chained["ranges"][2]
    x = np.random.default_rng(4).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)
    original = _serve(root / "original", x)
    np.testing.assert_allclose(_serve(root / "scaled", x), original, atol=1e-5 * float(np.abs(original).max()))


def test_a_conv2d_reader_balances_the_range_between_activations_and_weights(tmp_path):
    """One stage reading concat(features, heatmaps) through a 1x1 Conv2D with untouched weights:
    the heatmaps are multiplied by sqrt(range ratio x weight ratio) (the Conv2D's weights have
    one int8 scale per output channel across both parts, so the range is shared between the
    activation and the weights), which here is less than the whole range ratio."""
    import keras

    from mdeploy.exporters.xnnpack_rewrites import rewrite_saved_model

    keras.utils.set_random_seed(3)
    inp = keras.Input((16, 16, 3), name="image")
    features = keras.layers.Conv2D(24, 3, padding="same", activation="relu6")(inp)
    heat = keras.layers.Rescaling(0.05)(keras.layers.Conv2D(4, 1, activation="sigmoid")(features))
    reader = keras.layers.Conv2D(8, 1, name="heatmaps")
    model = keras.Model(inp, reader(keras.layers.Concatenate()([features, heat])))
    samples = [np.random.default_rng(i).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32) for i in range(8)]
    _canonical(model, 16, tmp_path / "original")
    (done,) = rewrite_saved_model(tmp_path / "original", tmp_path / "scaled", ["scale_concat"],
                                  lambda: iter(samples))["scale_concat"]
    kernel = np.abs(reader.get_weights()[0])
    m_features, m_heat = done["ranges"]
    balanced = np.sqrt(m_features / m_heat * kernel[:, :, 24:].max() / kernel[:, :, :24].max())
    assert 2 <= balanced < m_features / m_heat
    assert done["scales"] == [1.0, pytest.approx(balanced, rel=1e-2)]
    x = samples[0]
    expected = _serve(tmp_path / "original", x)
    np.testing.assert_allclose(_serve(tmp_path / "scaled", x), expected, atol=1e-5 * float(np.abs(expected).max()))


def _stage_model():
    """One CPM stage as the PEFM release has it: a 1x1 convolution reads concat(features 0..6,
    heatmaps at most 0.05) directly, and weighs the heatmaps up."""
    import keras

    keras.utils.set_random_seed(13)
    inp = keras.Input((16, 16, 3), name="image")
    features = keras.layers.Conv2D(24, 3, padding="same", activation="relu6")(inp)
    heat = keras.layers.Rescaling(0.05)(keras.layers.Conv2D(4, 1, activation="sigmoid")(features))
    stage = keras.layers.Conv2D(16, 1, activation="relu")
    out = keras.layers.Conv2D(14, 1, name="heatmaps")(stage(keras.layers.Concatenate()([features, heat])))
    model = keras.Model(inp, out)
    kernel, bias = stage.get_weights()
    kernel[:, :, 24:] *= 10.0
    stage.set_weights([kernel, bias])
    return model


def test_scaled_parts_keep_their_int8_precision_without_new_convolutions(tmp_path):
    """Full-integer files calibrated alike: the scaled file has the original's convolutions and
    ADDs and one MUL more (the split adds a convolution and an ADD per part), and its output is
    as near the float model's on held-out inputs as the split file's, half the original's error."""
    from ai_edge_litert.interpreter import Interpreter

    from mdeploy.exporters.xnnpack_rewrites import rewrite_saved_model

    rng = np.random.default_rng(5)
    calibration = [rng.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(32)]
    held_out = [rng.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(8)]
    _canonical(_stage_model(), 16, tmp_path / "original")
    (done,) = rewrite_saved_model(tmp_path / "original", tmp_path / "scaled", ["scale_concat"],
                                  lambda: iter(calibration))["scale_concat"]
    rewrite_saved_model(tmp_path / "original", tmp_path / "split", ["split_concat"])
    assert done["scales"][0] == 1.0 and done["scales"][1] > 2
    files = {name: _int8(tmp_path / name, calibration) for name in ("original", "scaled", "split")}

    def ops(flatbuffer):
        names = [op["op_name"] for op in Interpreter(model_content=flatbuffer)._get_ops_details()]
        return {name: names.count(name) for name in ("CONV_2D", "ADD", "MUL", "CONCATENATION")}

    original, scaled_ops, split_ops = (ops(files[name]) for name in ("original", "scaled", "split"))
    assert scaled_ops == {**original, "MUL": original["MUL"] + 1}
    assert split_ops["CONV_2D"] == original["CONV_2D"] + 1 and split_ops["ADD"] == original["ADD"] + 1
    reference = _tflite(tmp_path / "original")
    errors = {name: np.mean([np.abs(_run(f, x) - _run(reference, x)).mean() for x in held_out]) for name, f in files.items()}
    assert errors["scaled"] < 0.6 * errors["original"] and errors["scaled"] < 1.3 * errors["split"], errors


def _faint_part_model():
    """A stage reading concat(features, heatmaps) where the heatmaps are a millionth of the
    features: in int8 the heatmap part of the sum is below one step of it."""
    import keras

    keras.utils.set_random_seed(9)
    inp = keras.Input((16, 16, 3), name="image")
    features = keras.layers.Conv2D(24, 3, padding="same", activation="relu6")(inp)
    heat = keras.layers.Rescaling(1e-6)(keras.layers.Conv2D(4, 1, activation="sigmoid")(features))
    x = keras.layers.Concatenate()([features, heat])
    out = keras.layers.Conv2D(14, 1, name="heatmaps")(x)
    return keras.Model(inp, out)


def _export_concat_models(tmp_path, mode: str) -> dict:
    """The two-stage and the faint-part models through the TFLite exporter as a build runs it
    (`xnnpack_source`, then `convert`) with `int8_concat: mode`: per model (details' int8_concat,
    log lines, tensor names, the refused split sums of the file); each rewritten graph is checked
    to compute what the model does."""
    from ai_edge_litert.interpreter import Interpreter

    from mdeploy.exporters import ExportInputs
    from mdeploy.exporters.tflite import convert, xnnpack_source
    from mdeploy.exporters.xnnpack_rewrites import refused_split_sums

    class Target:
        variant = "int8"
        settings = {"variant": "int8", "split_depthwise": True, "int8_prelu": "leaky_relu", "int8_concat": mode, "io": "float"}

    rng = np.random.default_rng(6)
    samples = [rng.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(16)]
    results = {}
    for name, model in (("stages", _concat_model()), ("faint", _faint_part_model())):
        saved = _canonical(model, 16, tmp_path / name)
        lines = []
        inputs = ExportInputs(saved, None, tmp_path / f"{name}.tflite", lines.append, lambda: iter(samples))
        with xnnpack_source(Target(), inputs) as source:
            expected = _serve(saved, samples[0])
            np.testing.assert_allclose(_serve(source.saved_model, samples[0]), expected,
                                       atol=1e-5 * float(np.abs(expected).max()))
            details = convert(Target(), source)
        flatbuffer = (tmp_path / f"{name}.tflite").read_bytes()
        names = [t["name"] for t in Interpreter(model_content=flatbuffer).get_tensor_details()]
        results[name] = (details["int8_concat"], lines, names, refused_split_sums(flatbuffer))
    return results


def test_the_exporter_keeps_the_split_where_it_pays_and_undoes_it_where_xnnpack_would_refuse_it(tmp_path):
    """With `int8_concat: split`: the two-stage model keeps its split (every sum one XNNPACK can
    take); the faint-part model's sums would have an input scale under 2**-10 of the output's,
    which XNNPACK refuses (the ADD would go to the builtin kernels and cut the delegated graph),
    so the exporter converts the graph without the split and says so."""
    from mdeploy.exporters.xnnpack_rewrites import CONCAT_SPLIT

    results = _export_concat_models(tmp_path, "split")
    concat, _, names, refused = results["stages"]
    assert concat["mode"] == "split" and concat["split"]["concatenations"] == 2 and refused == []
    assert any(CONCAT_SPLIT in n for n in names)
    concat, lines, names, refused = results["faint"]
    assert "XNNPACK" in concat["split"]["undone"] and not any(CONCAT_SPLIT in n for n in names) and refused == []
    assert concat["split"]["sums"] and all(min(s["ratios"]) < 2**-10 for s in concat["split"]["sums"])
    assert any("concatenation split undone" in line for line in lines)


def test_auto_scales_what_convolutions_read_directly_and_splits_what_they_read_through_depthwise_layers(tmp_path):
    """`int8_concat: auto` (the default): in the two-stage model the first stage's concatenation
    (a 1x1 convolution reads it) is scaled and the second's (read through depthwise layers,
    where only the split keeps the heatmaps' own scale) is split; the faint-part model, whose
    split XNNPACK would refuse, is scaled with nothing undone. The log and the details say
    what was done."""
    from mdeploy.exporters.xnnpack_rewrites import CONCAT_SCALED, CONCAT_SPLIT

    results = _export_concat_models(tmp_path, "auto")
    concat, lines, names, refused = results["stages"]
    assert concat["mode"] == "auto" and concat["scaled"]["concatenations"] == 1 and concat["split"]["concatenations"] == 1
    assert concat["scaled"]["parts"] == [[24, 4]] and concat["split"]["parts"] == [[4, 24, 4]] and refused == []
    assert any(CONCAT_SPLIT in n for n in names) and any(CONCAT_SCALED in n for n in names)
    assert any("faint part(s) scaled up" in line for line in lines) and any("split into per-part" in line for line in lines)
    concat, lines, names, _ = results["faint"]
    assert concat["scaled"]["parts_scaled"] == 1 and "split" not in concat
    assert not any("undone" in line for line in lines)


def _ranges_model():
    """Two convolution -> ReLU -> convolution pairs whose ReLU outputs have channels of very
    different ranges, as the PEFM CPM's stage blocks have them: a depthwise layer (5x5, bias,
    ReLU) that blurs each channel of a 0..6 tensor and multiplies it by its own gain, 0.004 to
    0.4 (some negative: channels that never fire), read by a 1x1 convolution that weighs each channel
    back up; and that convolution, with a batch norm (constant Mul and Add in the inference
    graph) before its ReLU, read by the output convolution. The middle convolution reads one
    pair and produces the other."""
    import keras

    keras.utils.set_random_seed(11)
    inp = keras.Input((16, 16, 3), name="image")
    first = keras.layers.Conv2D(16, 3, padding="same", activation="relu6")
    x = first(inp)
    dw = keras.layers.DepthwiseConv2D(5, padding="same", activation="relu")
    x = dw(x)
    reader = keras.layers.Conv2D(12, 1, use_bias=False)
    x = reader(x)
    bn = keras.layers.BatchNormalization()
    x = keras.layers.ReLU()(bn(x))
    out = keras.layers.Conv2D(14, 1, name="heatmaps")(x)
    model = keras.Model(inp, out)
    gains = np.geomspace(0.004, 0.4, 16).astype(np.float32)
    gains[[3, 9]] *= -1  # never fire
    kernel, bias = first.get_weights()
    first.set_weights([kernel * 8.0, bias + 0.5])  # a 0..6 tensor that uses its range
    blur = np.outer(np.hanning(7)[1:-1], np.hanning(7)[1:-1])  # 5x5, positive, summing to 1
    blur /= blur.sum()
    dw.set_weights([(blur[:, :, None, None] * gains[None, None, :, None]).astype(np.float32), np.full(16, -0.001, np.float32)])
    # The reader weighs each channel back up, as a trained layer does: every channel counts.
    (kernel,) = reader.get_weights()
    reader.set_weights([(kernel * 0.02 / np.abs(gains)[None, None, :, None]).astype(np.float32)])
    channels = np.arange(12, dtype=np.float32)
    bn.set_weights([0.5 + 0.2 * channels, np.full(12, 0.05, np.float32), np.zeros(12, np.float32), 1.0 + 0.1 * channels])
    return model


@pytest.fixture(scope="module")
def ranges(tmp_path_factory):
    return _measured_rewrite(tmp_path_factory.mktemp("ranges"), _ranges_model(), "equalize_ranges", "equalized", 8)


def test_channels_rescaled_across_a_relu_compute_the_same_numbers(ranges):
    root, done, _ = ranges
    by_kind = {d["node"].rsplit("/", 1)[-1]: d for d in done}
    assert sorted(by_kind) == ["convolution", "depthwise"] and len(done) == 2, done
    assert by_kind["depthwise"]["channels"] == 16 and 10 <= by_kind["depthwise"]["scaled"] <= 14  # two never fire
    assert by_kind["convolution"]["channels"] == 12
    assert 0 < by_kind["depthwise"]["smallest"] < 0.1  # gains 100x apart, weighed back up by the reader
    assert 0 < by_kind["convolution"]["smallest"] < 1
    x = np.random.default_rng(9).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)
    original, equalized = _serve(root / "original", x), _serve(root / "equalized", x)
    scale = float(np.abs(original).max())
    assert scale > 0.01
    np.testing.assert_allclose(equalized, original, atol=1e-5 * scale)


def test_rescaled_channels_keep_their_int8_precision(ranges):
    """Full-integer files of both graphs calibrated alike: the rescaled one's output is nearer the
    float model's on held-out inputs, and without calibration inputs nothing is rewritten."""
    from mdeploy.exporters.xnnpack_rewrites import rewrite_saved_model

    root, _, calibration = ranges
    rng = np.random.default_rng(10)
    held_out = [rng.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(8)]
    reference = _tflite(root / "original")
    errors = {}
    for name in ("original", "equalized"):
        flatbuffer = _int8(root / name, calibration)
        errors[name] = np.mean([np.abs(_run(flatbuffer, x) - _run(reference, x)).mean() for x in held_out])
    assert errors["equalized"] < 0.7 * errors["original"], errors
    assert rewrite_saved_model(root / "original", root / "unmeasured", ["equalize_ranges"]) == {}
    assert not (root / "unmeasured").exists()


def test_the_exporter_equalizes_int8_on_its_calibration_images(tmp_path):
    """Through the TFLite exporter as a build runs it: the int8 variant is rescaled with the
    calibration images it is converted with (recorded, and said in the log), `int8_equalize:
    false` leaves the graph as it is, and the rewritten model is reused only for the same images."""
    from mdeploy.exporters import ExportInputs
    from mdeploy.exporters.tflite import convert, xnnpack_source
    from mdeploy.exporters.xnnpack_rewrites import rewritten

    class Target:
        variant = "int8"

        def __init__(self, equalize: bool):
            self.settings = {"variant": "int8", "split_depthwise": True, "int8_prelu": "leaky_relu", "int8_concat": "split",
                             "int8_equalize": equalize, "io": "float"}

    rng = np.random.default_rng(12)
    samples = [rng.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32) for _ in range(16)]
    saved = _canonical(_ranges_model(), 16, tmp_path / "model")
    results = {}
    for equalize in (True, False):
        lines = []
        inputs = ExportInputs(saved, None, tmp_path / f"{equalize}.tflite", lines.append, lambda: iter(samples))
        with xnnpack_source(Target(equalize), inputs) as source:
            results[equalize] = (convert(Target(equalize), source), lines)
            x = samples[0]
            expected = _serve(saved, x)  # the rewritten graph computes what the model does
            np.testing.assert_allclose(_serve(source.saved_model, x), expected, atol=1e-5 * float(np.abs(expected).max()))
    details, lines = results[True]
    assert details["int8_equalize"]["pairs"] == 2 and 10 + 12 <= details["int8_equalize"]["channels"] <= 14 + 12
    assert any("rescaled across their ReLU" in line for line in lines)
    assert "int8_equalize" not in results[False][0]
    same, _ = rewritten(saved, ["equalize_ranges"], lambda: iter(samples))
    again, _ = rewritten(saved, ["equalize_ranges"], lambda: iter(list(samples)))
    other, _ = rewritten(saved, ["equalize_ranges"], lambda: iter(samples[:8]))
    assert same == again and other != same


def test_the_report_names_what_the_concatenation_rewrites_did_in_new_and_older_manifests():
    """The report's phrase for an artifact's int8_concat record: both remedies of `auto`, an
    undone split, and the record of a manifest written before `auto` (the split's alone)."""
    from mdeploy.report.collect import _int8_rewrites

    auto = {"mode": "auto", "scaled": {"concatenations": 1, "parts_scaled": 2, "parts": [], "scales": []},
            "split": {"concatenations": 3, "readers": 3, "parts": []}}
    assert _int8_rewrites({"int8_concat": auto}) == [
        "2 faint concatenation part(s) scaled up to share its int8 range",
        "3 concatenation(s) split into per-part convolutions"]
    undone = {"mode": "split", "split": {"undone": "a part below one int8 step of its sum", "sums": []}}
    assert _int8_rewrites({"int8_concat": undone}) == ["concatenation split undone: a part below one int8 step of its sum"]
    assert _int8_rewrites({"int8_concat": {"concatenations": 5, "readers": 5, "parts": []}}) == [
        "5 concatenation(s) split into per-part convolutions"]
