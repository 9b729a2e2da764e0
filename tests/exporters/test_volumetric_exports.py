"""Core ML and MACE for 3-D (volumetric) models and for contracts with one std per channel.

A tiny LPSKI whose graph ends in the soft-argmax (`coords` [1, 17, 3]) is exported to both:
the MACE package's emulation is held to parity in mm through the family's rule, its
deployment file gives the 3-D output no data format (NONE); the Core ML package reads
back with an image input, the `coords` output, ImageNet's std as an in-graph channel scale
and a float32 soft-argmax in an fp16 program. (The raw `volume` output is built in
tests/families/test_volumetric_training.py.) A heatmap model with a per-channel std
converts too.
"""

from __future__ import annotations

import sys

import pytest
import yaml

from mdeploy.build import build
from mdeploy.recipe import load_recipe
from tests.families.test_volumetric_family import DEPTH, IMAGENET, JOINTS, save_tiny_lpski
from tests.helpers import tiny_recipe, write

FLOAT16, FLOAT32 = 10, 11  # ML Program tensor data types


@pytest.fixture(scope="module")
def coords_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("coords-exports")
    model = save_tiny_lpski(root / "coords.keras", soft_argmax=True)
    recipe = load_recipe(write(root / "coords3d.yaml", f"""
name: coords3d
model:
  import: {{format: keras, path: {model}}}
  input: {IMAGENET}
  keypoints: h36m17
  volume: {{depth_bins: {DEPTH}, in_graph_softargmax: true, stride: 8}}
export:
  coreml: {{precision: fp16, minimum_deployment_target: iOS16}}
  mace: {{runtime: cpu+gpu, target_abis: [arm64-v8a]}}
verify: {{samples: {{random: 2}}}}
"""))
    return build(recipe, out_root=root / "build")


def test_mace_runs_the_soft_argmax_graph_within_a_millimetre(coords_build):
    from mdeploy import mace_rules
    from mdeploy.exporters.mace import MACE_TF_OPS

    gate = next(g for g in coords_build.gates if g.gate == "parity" and g.artifact == "mace")
    assert gate.status == "passed", gate.checks
    assert gate.metrics["output"] == "coords" and gate.metrics["agreement"] == 1.0 and gate.metrics["max_joint_mm"] < 1.0
    art = {a["id"]: a for a in coords_build.manifest["artifacts"]}["mace"]
    assert {"Softmax", "MatMul", "Reshape", "Transpose"} <= set(art["details"]["ops"]) <= MACE_TF_OPS
    config = yaml.safe_load((coords_build.build_dir / "mace" / "coords3d.yml").read_text())
    sub = config["models"]["coords3d"]["subgraphs"][0]
    assert sub["output_tensors"] == ["coords"] and sub["output_shapes"] == [f"1,{JOINTS},3"]
    assert sub["output_data_formats"] == ["NONE"] and sub["input_data_formats"] == ["NHWC"]  # NONE: not 4-D
    (softmax,) = art["details"]["gpu_to_cpu"]  # rank 3: MACE's GPU leaves it to the CPU
    assert "sa_softmax" in softmax
    assert mace_rules.validate(config) == []


def test_core_ml_gives_coords_with_a_float32_soft_argmax(coords_build):
    import coremltools as ct

    d = {a["id"]: a for a in coords_build.manifest["artifacts"]}["coreml"]["details"]
    assert d["input"]["type"] == "imageType" and d["output"]["name"] == "coords" and d["output"]["shape"] == [1, JOINTS, 3]
    assert d["preprocessing"]["channel_scale"] == pytest.approx([1 / 0.229, 1 / 0.224, 1 / 0.225], rel=2e-3)
    mlspec = ct.utils.load_spec(str(coords_build.build_dir / "coreml" / "coords3d.mlpackage"))
    assert "coords 1x17x3" in mlspec.description.metadata.shortDescription
    fn = mlspec.mlProgram.functions["main"]
    ops = [op for op in fn.block_specializations[fn.opset].operations if op.type != "const"]
    head = ops[ops.index(next(op for op in ops if op.type == "softmax")):]
    assert [op.type for op in head] == ["softmax", "reshape", "matmul", "reshape"]
    assert all(op.outputs[0].type.tensorType.dataType == FLOAT32 for op in head)  # float32 after the softmax
    assert any(op.type == "conv" and op.outputs[0].type.tensorType.dataType == FLOAT16 for op in ops)  # float16 convs
    if sys.platform != "darwin":
        assert {g.status for g in coords_build.gates if g.artifact == "coreml"} == {"unverified"}


def test_a_per_channel_std_reaches_core_ml_as_an_in_graph_scale(tmp_path, tiny_models):
    """Core ML's image scale is one number: range and mean go to the image input, 1 / std per
    channel into the graph, and both are read back and checked against the contract."""
    path = tiny_recipe(tmp_path, tiny_models, name="std3", extra="export: {coreml: {precision: fp32, neuralnetwork: true}}\n")
    path.write_text(path.read_text().replace("range: [0, 1]}", "range: [0, 1], mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.5]}"))
    result = build(load_recipe(path), out_root=tmp_path / "b")
    arts = {a["id"]: a for a in result.manifest["artifacts"]}
    for artifact in ("coreml", "coreml/neuralnetwork"):
        pre = arts[artifact]["details"]["preprocessing"]
        assert pre["scale"] == pytest.approx(1 / 255) and pre["bias"] == pytest.approx([-0.5, -0.4, -0.3])
    assert arts["coreml"]["details"]["preprocessing"]["channel_scale"] == pytest.approx([5.0, 4.0, 2.0])


def test_the_spec_check_needs_the_channel_scale():
    from types import SimpleNamespace

    from mdeploy.exporters.coreml import check_against_spec
    from mdeploy.spec import Preprocessing, TensorInfo

    pre = Preprocessing((64, 64), "rgb", (0.0, 1.0), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    spec = SimpleNamespace(preprocessing=pre, input=TensorInfo("image", (1, 64, 64, 3)), output=TensorInfo("volume", (1, 8, 8, 68)))
    details = {
        "kind": "mlprogram",
        "input": {"name": "image", "type": "imageType", "width": 64, "height": 64, "color": "rgb"},
        "output": {"name": "volume", "shape": [1, 8, 8, 68]},
        "preprocessing": {"scale": 1 / 255, "bias": [-0.5, -0.4, -0.3], "channel_scale": [5.0, 4.0, 2.0]},
    }
    assert check_against_spec(details, spec) == []
    del details["preprocessing"]["channel_scale"]
    assert any("no per-channel multiply by 1 / std" in p for p in check_against_spec(details, spec))
    details["preprocessing"]["channel_scale"] = [2.0, 4.0, 5.0]
    assert any("per-channel multiply [2.0, 4.0, 5.0]" in p for p in check_against_spec(details, spec))


def test_a_3d_softmax_cannot_be_quantized_for_mace_and_runs_on_its_cpu():
    """MACE's Softmax kernels: float CPU takes rank 2-4, GPU 2 and 4 (others placed on the CPU), the
    quantized CPU kernel 2 and 4 only: a quantized soft-argmax graph is refused with the reason."""
    import tensorflow as tf

    from mdeploy.errors import ModelError
    from mdeploy.exporters.mace import check_softmax

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, (1, 17, 256), name="image")
        tf.nn.softmax(x, name="sa_softmax")
        tf.nn.softmax(tf.reshape(x, (17, 256)), name="flat_softmax")  # 2-D: every kernel takes it
    graph_def = graph.as_graph_def()
    assert check_softmax(graph_def, {"runtime": "cpu"}) == []
    assert check_softmax(graph_def, {"runtime": "cpu+gpu"}) == ["sa_softmax"]
    for settings in ({"runtime": "cpu", "quantize": True}, {"runtime": "dsp"}, {"runtime": "apu", "data_type": "uint8"}):
        with pytest.raises(ModelError, match="quantized \\(uint8\\) Softmax takes 2-D or 4-D tensors, and sa_softmax is 3-D"):
            check_softmax(graph_def, settings)
