"""MACE packages: the frozen graph, the deployment file and its rules, MACE's reading of ops."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from mdeploy import mace_rules
from mdeploy.build import build
from mdeploy.errors import ModelError, RecipeError
from mdeploy.fsutil import sha256_file
from mdeploy.recipe import load_recipe
from tests.exporters.conftest import DOTS_RECIPE, dots_import_recipe
from tests.helpers import SHARED


def test_package_from_a_trained_model(tmp_path, dots, dots_model, cli):
    path = dots_import_recipe(tmp_path, dots_model, dots, "export: {mace: {runtime: gpu, data_type: fp16_fp32, target_abis: [arm64-v8a, armeabi-v7a]}}\n")
    result = cli("build", path, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "b" / "dots_import" / "mace"
    config = yaml.safe_load((folder / "dots_import.yml").read_text())
    assert mace_rules.validate(config) == []
    model = config["models"]["dots_import"]
    assert model["model_file_path"] == str(folder / "dots_import.pb")
    assert model["model_sha256_checksum"] == sha256_file(folder / "dots_import.pb")
    (sub,) = model["subgraphs"]
    assert sub["input_tensors"] == ["image"] and sub["input_shapes"] == ["1,64,64,3"]
    assert sub["output_tensors"] == ["heatmaps"] and sub["output_shapes"] == ["1,32,32,14"]
    assert sub["input_ranges"] == ["-30,245"]  # 0..255 minus the means (10, 20, 30): -30 up to 245
    assert model["validation_threshold"] == {"GPU": 0.995} and "validation_threshold" not in sub  # where MACE reads it
    assert model["runtime"] == "gpu" and model["data_type"] == "fp16_fp32"
    assert config["target_abis"] == ["arm64-v8a", "armeabi-v7a"]
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString((folder / "dots_import.pb").read_bytes())
    from mdeploy.exporters.mace import MACE_TF_OPS

    assert {n.op for n in graph.node} <= MACE_TF_OPS
    assert_tf1_graph(graph)
    assert "python tools/converter.py convert --config=" in result.stdout
    manifest = json.loads((tmp_path / "b" / "dots_import" / "manifest.json").read_text())
    parity = {g["artifact"]: g["status"] for g in manifest["gates"]["parity"]["results"]}
    assert parity["mace"] == "passed"
    details = {a["id"]: a for a in manifest["artifacts"]}["mace"]["details"]
    assert (details["input_shape"], details["output_shape"]) == ([1, 64, 64, 3], [1, 32, 32, 14])  # read from the graph


def test_half_pixel_resizes_are_kept_for_mace_to_honour(tmp_path, dots):
    """MACE (1.0 and later) honours half_pixel_centers: a Keras-style resize keeps it in the written graph
    (dropping it would move every keypoint), and the emulated MACE reading matches the model."""
    path = tmp_path / "hp.yaml"
    path.write_text(DOTS_RECIPE.format(name="halfpixel", resize="half_pixel", root=dots) + "export: {mace: {runtime: cpu}}\n")
    result = build(load_recipe(path), out_root=tmp_path / "b")
    gate = {g.artifact: g for g in result.gates if g.gate == "parity"}["mace"]
    assert gate.status == "passed" and gate.metrics["agreement"] == 1.0
    art = {a["id"]: a for a in result.manifest["artifacts"]}["mace"]
    assert art["details"]["half_pixel_resizes"] == 1  # the final upsampling (earlier stages are not exported)
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString((result.build_dir / "mace" / "halfpixel.pb").read_bytes())
    (resize,) = [n for n in graph.node if n.op == "ResizeBilinear"]
    assert resize.attr["half_pixel_centers"].b is True
    assert_tf1_graph(graph)


# The attributes a TF 1.x graph of this family carries, per op: what the PEFM release graph
# (written by TF 1.x) holds, plus `dilations` on convolutions, which TF 1.8's op registry has.
# A half-pixel resize may keep `half_pixel_centers: true` (MACE reads it since 1.0).
def tf1_table(pefm_pb) -> dict[str, set[str]]:
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(pefm_pb.read_bytes())
    table: dict[str, set[str]] = {}
    for node in graph.node:
        table.setdefault(node.op, set()).update(node.attr)
    table["Conv2D"].add("dilations")
    table["DepthwiseConv2dNative"].add("dilations")
    return table


PEFM_TABLE = {
    "Add": {"T"}, "ConcatV2": {"N", "T", "Tidx"}, "Const": {"dtype", "value"},
    "Conv2D": {"T", "data_format", "padding", "strides", "use_cudnn_on_gpu", "dilations"},
    "DepthwiseConv2dNative": {"T", "data_format", "padding", "strides", "dilations"},
    "FusedBatchNorm": {"T", "data_format", "epsilon", "is_training"}, "Identity": {"T", "_class"},
    "MaxPool": {"T", "data_format", "ksize", "padding", "strides"}, "Placeholder": {"dtype", "shape"},
    "Relu": {"T"}, "Relu6": {"T"}, "ResizeBilinear": {"T", "align_corners"},
}
TF2_ERA = {"explicit_paddings", "exponential_avg_factor", "half_pixel_centers", "Truncate", "grad_a", "grad_b",
           "grad_x", "grad_y", "incompatible_shape_error", "batch_dims", "index_type"}


def assert_tf1_graph(graph) -> None:
    """Every node of `graph` is an op of the table with only the attributes a TF 1 graph carries."""
    for node in graph.node:
        allowed = set(PEFM_TABLE[node.op])
        if node.op == "ResizeBilinear" and "half_pixel_centers" in node.attr and node.attr["half_pixel_centers"].b:
            allowed.add("half_pixel_centers")  # honoured by MACE; never written at its default
        assert set(node.attr) <= allowed, (node.name, node.op, sorted(set(node.attr) - allowed))


def test_the_attribute_table_is_the_tf1_releases(pefm_pb):
    """The test's table is the PEFM release's own attributes (+ dilations, TF 1.8); the exporter's
    table agrees with it and holds none of the attributes TensorFlow added after 1.8."""
    from mdeploy.exporters.mace import TF1_ATTRS

    assert tf1_table(pefm_pb) == PEFM_TABLE
    for op, attrs in PEFM_TABLE.items():
        assert TF1_ATTRS[op] == {a for a in attrs if not a.startswith("_")}, op
    assert not any(attrs & TF2_ERA for attrs in TF1_ATTRS.values())


def test_a_tf2_frozen_pefm_graph_is_written_as_tf1_reads_it(tmp_path, pefm_pb):
    """The PEFM release through TensorFlow 2 (SavedModel, frozen by mdeploy) gains explicit_paddings,
    exponential_avg_factor and half_pixel_centers at their defaults; the graph written for MACE has
    none of them, and computes exactly the same."""
    import numpy as np
    import tensorflow as tf

    from mdeploy.exporters.mace import freeze, tf1_graph
    from mdeploy.exporters.reproducible import graph_def_bytes
    from mdeploy.runners.mace import MaceEmulationRunner

    original = tf.compat.v1.GraphDef()
    original.ParseFromString(pefm_pb.read_bytes())
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(original, name=""), [])
    fn = wrapped.prune("image:0", "Convolutional_Pose_Machine/stage_5_out:0")
    module = tf.Module()
    module.keep = wrapped
    module.serve = tf.function(lambda image: {"heatmaps": tf.identity(fn(image), name="heatmaps")},
                               input_signature=[tf.TensorSpec([1, 192, 192, 3], tf.float32, name="image")])
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve.get_concrete_function()})
    tf2, _ = freeze(tmp_path / "sm", "heatmaps")
    seen = {(n.op, a) for n in tf2.node for a in n.attr}
    assert {("Conv2D", "explicit_paddings"), ("MaxPool", "explicit_paddings"), ("DepthwiseConv2dNative", "explicit_paddings"),
            ("FusedBatchNorm", "exponential_avg_factor"), ("ResizeBilinear", "half_pixel_centers")} <= seen
    (tmp_path / "tf2.pb").write_bytes(graph_def_bytes(tf2))

    written = tf1_graph(tf2)
    assert_tf1_graph(written)
    assert {n.op for n in written.node} <= set(PEFM_TABLE)
    (tmp_path / "tf1.pb").write_bytes(graph_def_bytes(written))
    x = np.random.default_rng(0).uniform(0, 255, (2, 192, 192, 3)).astype(np.float32)
    assert np.array_equal(MaceEmulationRunner(tmp_path / "tf1.pb")(x), MaceEmulationRunner(tmp_path / "tf2.pb")(x))


def test_tf2_ops_become_tf1_ops_and_attributes_that_matter_are_refused():
    import numpy as np
    import tensorflow as tf

    from mdeploy.exporters.mace import tf1_graph

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 8, 8, 4], name="image")
        c = tf.constant(np.ones(4, np.float32))
        bn = tf.raw_ops.FusedBatchNormV3(x=x, scale=c, offset=c, mean=c, variance=c, epsilon=1e-3, is_training=False, name="bn")
        tf.raw_ops.AddV2(x=bn[0], y=x, name="sum")
    written = tf1_graph(graph.as_graph_def())
    ops = {n.name: n for n in written.node}
    assert ops["bn"].op == "FusedBatchNorm" and set(ops["bn"].attr) == {"T", "epsilon", "data_format", "is_training"}
    assert ops["sum"].op == "Add"

    explicit = tf.Graph()
    with explicit.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 8, 8, 3], name="image")
        tf.raw_ops.Conv2D(input=x, filter=tf.constant(np.ones((3, 3, 3, 2), np.float32)), strides=[1, 1, 1, 1],
                          padding="EXPLICIT", explicit_paddings=[0, 0, 1, 1, 1, 1, 0, 0], name="pad_layer/conv")
    with pytest.raises(ModelError) as caught:
        tf1_graph(explicit.as_graph_def())
    assert "pad_layer/conv (Conv2D) explicit_paddings=" in caught.value.message


def test_the_reference_yml_fits_its_graph_and_a_wrong_shape_is_named(pefm_pb):
    """PEFM's CPM yml matches its release graph; a yml giving another output grid (the seed's own
    Hourglass yml says 96x96 for a model that outputs 48x48) is refused, naming the key."""
    import tensorflow as tf

    from mdeploy.exporters.mace import graph_io

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(pefm_pb.read_bytes())
    io = graph_io(graph, "image", "Convolutional_Pose_Machine/stage_5_out")
    assert (io["input_shape"], io["output_shape"]) == ([1, 192, 192, 3], [1, 96, 96, 14])
    config = yaml.safe_load((SHARED / "reference" / "pefm" / "mace_ymls" / "cpm.yml").read_text())
    assert mace_rules.graph_problems(config, io) == []
    config["models"]["cpm_v1"]["subgraphs"][0]["output_shapes"] = ["1,48,48,14"]
    assert mace_rules.graph_problems(config, io) == [
        "models.cpm_v1.subgraphs[0].output_shapes: 1,48,48,14, but the graph's output "
        "Convolutional_Pose_Machine/stage_5_out is 1,96,96,14"
    ]


def test_ops_mace_refuses_are_named_with_their_layer(tmp_path):
    import tensorflow as tf

    from mdeploy.exporters.mace import check_ops

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 4], name="image")
        tf.math.atan2(x, x + 1.0, name="angle_layer/Atan2")
    with pytest.raises(ModelError) as caught:
        check_ops(graph.as_graph_def())
    assert caught.value.message == (
        "the graph uses TensorFlow ops MACE's converter does not accept: Atan2 (first at angle_layer/Atan2, 1 node)"
    )


def test_the_reference_deployment_file_passes_the_rules(pefm_pb):
    config = yaml.safe_load((SHARED / "reference" / "pefm" / "mace_ymls" / "cpm.yml").read_text())
    assert mace_rules.validate(config) == []


GOOD = {
    "library_name": "pose",
    "target_abis": ["arm64-v8a"],
    "model_graph_format": "file",
    "model_data_format": "file",
    "models": {
        "pose": {
            "platform": "tensorflow",
            "model_file_path": "https://example.com/m.pb",
            "model_sha256_checksum": "a" * 64,
            "subgraphs": [{"input_tensors": ["image"], "input_shapes": ["1,192,192,3"], "output_tensors": ["heatmaps"], "output_shapes": ["1,96,96,14"], "input_ranges": ["0,255"]}],
            "runtime": "cpu+gpu",
        }
    },
}


def broken(path: str, value):
    config = copy.deepcopy(GOOD)
    node, keys = config, path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is KeyError:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return config


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("library_name", "", "library_name: must be a non-empty string"),
        ("target_abis", ["x86"], "target_abis: expected some of"),
        ("model_data_format", "code", "model_graph_format file with model_data_format code is not supported"),
        ("models.pose.platform", "tflite", "models.pose.platform: expected one of"),
        ("models.pose.model_sha256_checksum", "abc", "model_sha256_checksum: expected 64 lowercase hexadecimal digits"),
        ("models.pose.runtime", "npu", "models.pose.runtime: expected one of"),
        ("models.pose.data_type", "uint8", "data_type: 'uint8' is not valid for runtime cpu+gpu"),
        ("models.pose.winograd", 3, "winograd: expected 0, 2 or 4"),
        ("models.pose.quantize", 1, None),
        ("models.pose.subgraphs.0.output_shapes", ["1,96,96,14", "1,48,48,14"], "2 shapes for 1 output_tensors"),
        ("models.pose.subgraphs.0.input_shapes", ["1x192x192x3"], "is not comma-separated integers"),
        ("models.pose.subgraphs.0.input_ranges", ["255,0"], "is not 'min,max' with min < max"),
        ("models.pose.subgraphs.0.input_tensors", KeyError, "input_tensors: required key is missing"),
        ("models.pose.validation_threshold", {"GPU": 1.5}, "validation_threshold.GPU: expected a number in (0, 1]"),
        ("models.pose.validation_threshold", {"APU": 0.9}, "validation_threshold: MACE's converter refuses device 'APU'"),
        ("models.pose.subgraphs.0.validation_threshold", {"GPU": 0.99}, "reads validation_threshold from the model"),
        ("models.pose.subgraphs", [], "subgraphs: must be a non-empty list"),
        ("models.pose.subgraphs.0.output_shapes", ["1,17,3"], "output_data_formats: NHWC (the default when left out) for the 3-D"),
        ("models.pose.subgraphs.0.output_data_formats", ["NCHW"], None),
    ],
)
def test_every_rule_of_the_deployment_file(path, value, message):
    config = broken(path, value)
    if message is None and path.endswith("output_data_formats"):  # fine on a 4-D output, refused on a 3-D one
        assert mace_rules.validate(config) == []
        config["models"]["pose"]["subgraphs"][0]["output_shapes"] = ["1,17,3"]
        message = "output_data_formats: NCHW for the 3-D shape 1,17,3; a tensor that is not 4-D takes NONE"
        assert mace_rules.validate(broken(path, ["NONE"])) == []
    elif message is None:  # quantize alone is fine; with quantize_large_weights it is not
        assert mace_rules.validate(config) == []
        config["models"]["pose"]["quantize_large_weights"] = 1
        message = "quantize and quantize_large_weights cannot both be 1"
    problems = mace_rules.validate(config)
    assert any(message in p for p in problems), problems


def test_model_tags_must_be_cpp_identifiers():
    assert mace_rules.model_tag_problem("class") == "model tag 'class' is a C++ keyword"
    assert "not a C++ identifier" in mace_rules.model_tag_problem("2pose")
    assert mace_rules.tag_for("2d-pose") == "model_2d_pose"
    config = copy.deepcopy(GOOD)
    config["models"] = {"my-model": config["models"]["pose"]}
    assert "models.my-model: model tag 'my-model' is not a C++ identifier" in mace_rules.validate(config)[0]


@pytest.mark.parametrize(
    ("mace", "message"),
    [
        ("{runtime: cpu, data_type: uint8}", "data_type uint8 is not valid for runtime cpu"),
        ("{runtime: dsp, data_type: fp16_fp32}", "data_type fp16_fp32 is not valid for runtime dsp"),
        ("{quantize: true, quantize_large_weights: true}", "quantize and quantize_large_weights cannot both be on"),
        ("{graph_format: file, data_format: code}", "MACE does not support graph_format file with data_format code"),
        ("{model_tag: delete}", "model tag 'delete' is a C++ keyword"),
        ("{validation_threshold: {apu: 0.9}}", "expected one of cpu, gpu, hexagon, dsp, hta, quantize; got 'apu'"),
        ("{runtime: hta, data_type: uint8}", "data_type uint8 is not valid for runtime hta"),
    ],
)
def test_recipes_asking_for_invalid_mace_combinations_are_refused(tmp_path, dots, dots_model, mace, message):
    path = dots_import_recipe(tmp_path, dots_model, dots, f"export: {{mace: {mace}}}\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert message in caught.value.issues[0].message


def test_thresholds_and_data_types_follow_maces_converter():
    """MACE validates a runtime on its own device (a quantized CPU/GPU model on QUANTIZE), takes DSP for
    HEXAGON, has no settable APU threshold, and checks hta's data type among the float types."""
    assert mace_rules.thresholds_for("cpu+gpu", False) == {"CPU": 0.999, "GPU": 0.995}
    assert mace_rules.thresholds_for("gpu", True, {"quantize": 0.97}) == {"QUANTIZE": 0.97}
    assert mace_rules.thresholds_for("dsp", False, {"dsp": 0.9}) == {"HEXAGON": 0.9}
    assert mace_rules.thresholds_for("apu", False) == {}
    assert mace_rules.RUNTIME_DEVICES["apu"] == ("APU",)
    hta = broken("models.pose.runtime", "hta")
    hta["models"]["pose"]["data_type"] = "uint8"
    assert any("data_type: 'uint8' is not valid for runtime hta" in p for p in mace_rules.validate(hta))
    hta["models"]["pose"]["data_type"] = "fp16_fp32"
    assert mace_rules.validate(hta) == []


def test_model_tag_with_a_trailing_newline_is_not_an_identifier():
    from mdeploy.mace_rules import model_tag_problem

    assert model_tag_problem("pose") is None
    assert model_tag_problem("pose\n") is not None
