"""Multi-output models (heatmaps + PAFs) through Core ML and MACE; tf-openpose's mobilenet_v2_small imported.

A PAF model's canonical SavedModel returns `heatmaps` and `pafs`. The Core ML package names
and shapes both in its description; the MACE deployment file lists both output tensors with
their shapes, and the emulated MACE run gives both by name. mobilenet_v2_small's frozen graph
has a free input shape and sizes a resize from it (Shape -> StridedSlice -> ResizeBilinear) and
normalizes its backbone by each image's own statistics (batch norms frozen in training mode):
the importer fixes the shape, the MACE exporter spells those batch norms out in ops MACE reads.
The releases are run at 192x224 and the tests skip where ../shared (the releases) is absent.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mdeploy import mace_rules
from tests.helpers import REPO, SHARED, write

V2_SMALL = SHARED / "reference" / "tf-openpose" / "mobilenet_v2_small" / "graph_opt.pb"
THIN = SHARED / "reference" / "tf-openpose" / "mobilenet_thin" / "graph_opt.pb"

# recipes/openpose_thin.yaml's own Core ML and MACE settings (its TFLite and ONNX: tests/families/test_paf_family.py)
THIN_RECIPE = f"""
extends: {REPO / "recipes" / "openpose_thin.yaml"}
name: thin
model:
  import: {{path: {THIN}}}
  input: {{size: [192, 224]}}
data: {{calibration: null}}
export:
  tflite: null
  onnx: null
"""

RECIPE = f"""
extends: {REPO / "recipes" / "openpose_v2_small.yaml"}
name: v2_small
model:
  import: {{path: {V2_SMALL}}}
  input: {{size: [192, 224]}}
export:
  tflite: {{variants: [fp32]}}
  onnx: null
  coreml: {{precision: fp16}}
  mace: {{runtime: cpu}}
"""

IO = {"input": "image", "input_shape": [1, 192, 224, 3],
      "outputs": [{"name": "heatmaps", "shape": [1, 24, 28, 19]}, {"name": "pafs", "shape": [1, 24, 28, 38]}]}


def test_a_deployment_file_must_list_every_output_with_its_shape():
    sub = {"input_tensors": ["image"], "input_shapes": ["1,192,224,3"],
           "output_tensors": ["heatmaps", "pafs"], "output_shapes": ["1,24,28,19", "1,24,28,38"]}
    config = {"models": {"pose": {"subgraphs": [sub]}}}
    assert mace_rules.graph_problems(config, IO) == []
    sub["output_shapes"] = ["1,24,28,19", "1,24,28,19"]  # the PAFs given the heatmaps' channels
    assert mace_rules.graph_problems(config, IO) == [
        "models.pose.subgraphs[0].output_shapes: 1,24,28,19, but the graph's output pafs is 1,24,28,38"
    ]
    sub["output_tensors"], sub["output_shapes"] = ["heatmaps"], ["1,24,28,19"]  # only the first output
    assert mace_rules.graph_problems(config, IO) == [
        "models.pose.subgraphs[0].output_tensors: ['heatmaps'], but the graph's outputs are ['heatmaps', 'pafs']"
    ]


def test_training_mode_batch_norms_become_ops_mace_reads_with_the_same_numbers():
    import tensorflow as tf

    from mdeploy.exporters.mace import MACE_TF_OPS, lower_training_batch_norms

    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 6, 5, 4], name="image")
        y, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x * 3.0 + 1.0, scale=tf.constant(rng.uniform(0.5, 2, 4), tf.float32),
            offset=tf.constant(rng.normal(size=4), tf.float32), mean=tf.constant([], tf.float32),
            variance=tf.constant([], tf.float32), epsilon=1e-3, is_training=True, name="bn")
        tf.nn.relu(y, name="out")
    graph_def = graph.as_graph_def()
    lowered = tf.compat.v1.GraphDef()
    lowered.CopyFrom(graph_def)
    assert lower_training_batch_norms(lowered) == 1
    assert {n.op for n in lowered.node} <= MACE_TF_OPS and "FusedBatchNormV3" not in {n.op for n in lowered.node}

    image = rng.uniform(0, 255, (1, 6, 5, 4)).astype(np.float32)

    def run(g):
        with tf.Graph().as_default() as h:
            tf.compat.v1.import_graph_def(g, name="")
            with tf.compat.v1.Session(graph=h) as session:
                return session.run("out:0", {"image:0": image})

    expected, got = run(graph_def), run(lowered)
    assert np.abs(expected).max() > 0.5  # not a trivially zero output
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_free_input_shape_is_fixed_and_the_resize_size_folded():
    import tensorflow as tf

    from mdeploy.importers.frozen_pb import fix_input_shape

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="image")
        small = tf.nn.avg_pool2d(x, 2, 2, "SAME", name="pool")
        smaller = tf.nn.avg_pool2d(small, 2, 2, "SAME", name="pool2")
        size = tf.strided_slice(tf.shape(small), [1], [3], [1], name="size")
        tf.compat.v1.image.resize_bilinear(smaller, size, name="up")
    fixed, folded = fix_input_shape(graph.as_graph_def(), "image", (1, 48, 40, 3))
    nodes = {n.name: n for n in fixed.node}
    assert folded == 2 and "Shape" not in {n.op for n in fixed.node}
    assert nodes["size"].op == "Const" and tf.make_ndarray(nodes["size"].attr["value"].tensor).tolist() == [24, 20]
    assert [d.size for d in nodes["image"].attr["shape"].shape.dim] == [1, 48, 40, 3]


@pytest.fixture(scope="module")
def v2_build(tmp_path_factory):
    if not V2_SMALL.is_file():
        pytest.skip(f"tf-openpose's mobilenet_v2_small is not here ({SHARED}): ../shared is absent")
    from mdeploy.build import build
    from mdeploy.pipeline import Cache
    from mdeploy.recipe import load_recipe

    root = tmp_path_factory.mktemp("v2_small")
    recipe = load_recipe(write(root / "v2_small.yaml", RECIPE))
    return build(recipe, out_root=root / "build", cache=Cache(root / "cache"))


@pytest.fixture(scope="module")
def thin_build(tmp_path_factory):
    if not THIN.is_file():
        pytest.skip(f"tf-openpose's mobilenet_thin is not here ({SHARED}): ../shared is absent")
    from mdeploy.build import build
    from mdeploy.pipeline import Cache
    from mdeploy.recipe import load_recipe

    root = tmp_path_factory.mktemp("thin")
    recipe = load_recipe(write(root / "thin.yaml", THIN_RECIPE))
    return build(recipe, out_root=root / "build", cache=Cache(root / "cache"))


def test_thin_goes_through_core_ml_and_mace_with_both_outputs(thin_build):
    import coremltools as ct

    mlspec = ct.utils.load_spec(str(thin_build.build_dir / "coreml" / "thin.mlpackage"))
    outputs = [(o.name, list(o.type.multiArrayType.shape)) for o in mlspec.description.output]
    assert outputs == [("heatmaps", [1, 24, 28, 19]), ("pafs", [1, 24, 28, 38])]
    config = yaml.safe_load((thin_build.build_dir / "mace" / "thin.yml").read_text())
    assert mace_rules.validate(config) == []
    (sub,) = config["models"]["thin"]["subgraphs"]
    assert (sub["output_tensors"], sub["output_shapes"]) == (["heatmaps", "pafs"], ["1,24,28,19", "1,24,28,38"])
    gates = {g.artifact: g for g in thin_build.gates if g.gate == "parity"}
    assert set(gates) == {"coreml", "mace"} and gates["coreml"].status == "unverified"
    assert gates["mace"].status == "passed", gates["mace"].checks
    people = gates["mace"].metrics["people"]
    assert people["reference"] >= 2 and people["matched"] == people["reference"]  # the package photos' people


def test_v2_small_imports_with_a_constant_resize_and_tflite_keeps_its_people(v2_build):
    from mdeploy.spec import ModelSpec

    spec = ModelSpec.load(v2_build.build_dir / "model" / "spec.json")
    assert [(o.name, o.shape) for o in spec.outputs] == [("heatmaps", (1, 24, 28, 19)), ("pafs", (1, 24, 28, 38))]
    assert spec.source["simplified"]["folded_shape_ops"] == 2  # Shape and the StridedSlice after it
    gates = {(g.gate, g.artifact): g for g in v2_build.gates}
    assert gates[("people", "model")].status == "passed"
    tflite = gates[("parity", "tflite/fp32")]
    assert tflite.status == "passed", tflite.checks
    people = tflite.metrics["people"]
    assert people["reference"] >= 1 and people["matched"] == people["reference"]


def test_core_ml_names_and_shapes_both_outputs(v2_build):
    import coremltools as ct

    mlspec = ct.utils.load_spec(str(v2_build.build_dir / "coreml" / "v2_small.mlpackage"))
    outputs = [(o.name, list(o.type.multiArrayType.shape)) for o in mlspec.description.output]
    assert outputs == [("heatmaps", [1, 24, 28, 19]), ("pafs", [1, 24, 28, 38])]
    assert mlspec.description.input[0].name == "image" and mlspec.description.input[0].type.imageType.colorSpace == 30  # BGR
    gate = next(g for g in v2_build.gates if g.gate == "parity" and g.artifact == "coreml")
    assert gate.status == "unverified"  # Core ML runs only on macOS


def test_mace_lists_both_outputs_and_its_emulation_finds_the_models_people(v2_build):
    from mdeploy.exporters.mace import MACE_TF_OPS
    from mdeploy.runners.mace import MaceEmulationRunner

    folder = v2_build.build_dir / "mace"
    config = yaml.safe_load((folder / "v2_small.yml").read_text())
    assert mace_rules.validate(config) == []
    (sub,) = config["models"]["v2_small"]["subgraphs"]
    assert sub["output_tensors"] == ["heatmaps", "pafs"]
    assert sub["output_shapes"] == ["1,24,28,19", "1,24,28,38"]
    assert sub["output_data_formats"] == ["NHWC", "NHWC"]
    details = {a["id"]: a for a in v2_build.manifest["artifacts"]}["mace"]["details"]
    assert details["lowered_batch_norms"] == 39  # the MobileNetV2 backbone's
    assert set(details["ops"]) <= MACE_TF_OPS and "FusedBatchNorm" in details["ops"]  # the inference-mode ones stay

    runner = MaceEmulationRunner(folder / "v2_small.pb")
    out = runner.outputs(np.zeros((1, 192, 224, 3), np.float32))
    assert {k: v.shape for k, v in out.items()} == {"heatmaps": (1, 24, 28, 19), "pafs": (1, 24, 28, 38)}
    gate = next(g for g in v2_build.gates if g.gate == "parity" and g.artifact == "mace")
    assert gate.status == "passed", gate.checks
    people = gate.metrics["people"]
    assert people["reference"] >= 1 and people["matched"] == people["reference"]
