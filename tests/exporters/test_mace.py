"""MACE packages: the frozen graph, the deployment file and its rules, MACE's reading of ops."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from mdeploy.build import build
from mdeploy.errors import ModelError, RecipeError
from mdeploy.exporters import mace_config
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
    assert mace_config.validate(config) == []
    model = config["models"]["dots_import"]
    assert model["model_file_path"] == str(folder / "dots_import.pb")
    assert model["model_sha256_checksum"] == sha256_file(folder / "dots_import.pb")
    (sub,) = model["subgraphs"]
    assert sub["input_tensors"] == ["image"] and sub["input_shapes"] == ["1,64,64,3"]
    assert sub["output_tensors"] == ["heatmaps"] and sub["output_shapes"] == ["1,32,32,14"]
    assert sub["input_ranges"] == ["-30,245"]  # 0..255 minus the means (10, 20, 30): -30 up to 245
    assert sub["validation_threshold"] == {"GPU": 0.995}
    assert model["runtime"] == "gpu" and model["data_type"] == "fp16_fp32"
    assert config["target_abis"] == ["arm64-v8a", "armeabi-v7a"]
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString((folder / "dots_import.pb").read_bytes())
    from mdeploy.exporters.mace import MACE_TF_OPS

    assert {n.op for n in graph.node} <= MACE_TF_OPS
    assert "python tools/converter.py convert --config=" in result.stdout
    manifest = json.loads((tmp_path / "b" / "dots_import" / "manifest.json").read_text())
    parity = {g["artifact"]: g["status"] for g in manifest["gates"]["parity"]["results"]}
    assert parity["mace"] == "passed"


def test_half_pixel_resizes_are_measured_as_mace_reads_them(tmp_path, dots):
    """MACE's converter drops half_pixel_centers: a model trained with Keras-style resizes moves on device."""
    path = tmp_path / "hp.yaml"
    path.write_text(DOTS_RECIPE.format(name="halfpixel", resize="half_pixel", root=dots) + "export: {mace: {runtime: cpu}}\n")
    result = build(load_recipe(path), out_root=tmp_path / "b")
    gate = {g.artifact: g for g in result.gates if g.gate == "parity"}["mace"]
    assert gate.status == "failed"
    assert gate.metrics["agreement"] < 0.5
    art = {a["id"]: a for a in result.manifest["artifacts"]}["mace"]
    assert art["details"]["half_pixel_resizes"] == 1  # the final upsampling (earlier stages are not exported)


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
    assert mace_config.validate(config) == []


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
        ("models.pose.subgraphs.0.validation_threshold", {"GPU": 1.5}, "validation_threshold.GPU: expected a number in (0, 1]"),
        ("models.pose.subgraphs", [], "subgraphs: must be a non-empty list"),
    ],
)
def test_every_rule_of_the_deployment_file(path, value, message):
    config = broken(path, value)
    if message is None:  # quantize alone is fine; with quantize_large_weights it is not
        assert mace_config.validate(config) == []
        config["models"]["pose"]["quantize_large_weights"] = 1
        message = "quantize and quantize_large_weights cannot both be 1"
    problems = mace_config.validate(config)
    assert any(message in p for p in problems), problems


def test_model_tags_must_be_cpp_identifiers():
    assert mace_config.model_tag_problem("class") == "model tag 'class' is a C++ keyword"
    assert "not a C++ identifier" in mace_config.model_tag_problem("2pose")
    assert mace_config.tag_for("2d-pose") == "model_2d_pose"
    config = copy.deepcopy(GOOD)
    config["models"] = {"my-model": config["models"]["pose"]}
    assert "models.my-model: model tag 'my-model' is not a C++ identifier" in mace_config.validate(config)[0]


@pytest.mark.parametrize(
    ("mace", "message"),
    [
        ("{runtime: cpu, data_type: uint8}", "data_type uint8 is not valid for runtime cpu"),
        ("{runtime: dsp, data_type: fp16_fp32}", "data_type fp16_fp32 is not valid for runtime dsp"),
        ("{quantize: true, quantize_large_weights: true}", "quantize and quantize_large_weights cannot both be on"),
        ("{graph_format: file, data_format: code}", "MACE does not support graph_format file with data_format code"),
        ("{model_tag: delete}", "model tag 'delete' is a C++ keyword"),
    ],
)
def test_recipes_asking_for_invalid_mace_combinations_are_refused(tmp_path, dots, dots_model, mace, message):
    path = dots_import_recipe(tmp_path, dots_model, dots, f"export: {{mace: {mace}}}\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert message in caught.value.issues[0].message
