"""ONNX (parity with onnxruntime, NHWC and NCHW) and Core ML (spec read back; numerics need macOS)."""

from __future__ import annotations

import json
import sys

import pytest

from mdeploy.build import build
from mdeploy.errors import RecipeError
from mdeploy.recipe import load_recipe
from tests.exporters.conftest import dots_import_recipe


@pytest.mark.parametrize("nchw", [False, True])
def test_onnx_parity_with_onnxruntime(tmp_path, dots, dots_model, nchw):
    path = dots_import_recipe(tmp_path, dots_model, dots, f"export: {{onnx: {{opset: 17, nchw: {str(nchw).lower()}}}}}\n")
    result = build(load_recipe(path), out_root=tmp_path / "b")
    art = {a["id"]: a for a in result.manifest["artifacts"]}["onnx"]
    d = art["details"]
    assert d["layout"] == ("NCHW" if nchw else "NHWC")
    assert d["inputs"] == {"image": [1, 3, 64, 64] if nchw else [1, 64, 64, 3]}
    assert d["outputs"] == {"heatmaps": [1, 32, 32, 14]}
    import onnx

    graph = onnx.load(result.build_dir / "onnx" / "dots_import.onnx").graph
    first = [n.op_type for n in graph.node if "image" in n.input]
    assert ("Transpose" in first) is (not nchw)  # with an NCHW input, nothing transposes it first
    gates = {(g.gate, g.artifact): g for g in result.gates}
    assert gates[("parity", "onnx")].status == "passed" and gates[("parity", "onnx")].metrics["max_abs"] < 1e-4
    assert gates[("accuracy", "onnx")].metrics["drop"] == pytest.approx(0.0, abs=0.5)


def test_coreml_image_input_implements_the_contract(tmp_path, dots, dots_model):
    path = dots_import_recipe(tmp_path, dots_model, dots, "export: {coreml: {precision: fp16, neuralnetwork: true}}\n")
    result = build(load_recipe(path), out_root=tmp_path / "b")
    arts = {a["id"]: a for a in result.manifest["artifacts"]}
    for artifact_id, kind in (("coreml", "mlprogram"), ("coreml/neuralnetwork", "neuralNetwork")):
        d = arts[artifact_id]["details"]
        assert d["kind"] == kind
        assert d["input"] == {"name": "image", "type": "imageType", "width": 64, "height": 64, "color": "bgr"}
        assert d["output"]["name"] == "heatmaps" and d["output"]["dtype"] == "float32"
        # BGR 0..255 minus mean (10, 20, 30) in model channel order: scale 1, bias (-10, -20, -30).
        assert d["preprocessing"]["scale"] == pytest.approx(1.0)
        assert d["preprocessing"]["bias"] == pytest.approx([-10.0, -20.0, -30.0])
    assert (result.build_dir / "coreml" / "dots_import.mlpackage" / "Manifest.json").is_file()
    # Reproducible artifacts say nothing of when they were made: coremltools' conversion date is gone.
    import coremltools as ct

    from mdeploy.exporters.reproducible import time_dependent_metadata

    for artifact_id in ("coreml", "coreml/neuralnetwork"):
        assert arts[artifact_id]["reproducible"] is True
        mlspec = ct.utils.load_spec(str(result.build_dir / arts[artifact_id]["path"]))
        meta = mlspec.description.metadata
        assert "com.github.apple.coremltools.conversion_date" not in meta.userDefined
        assert time_dependent_metadata(mlspec) == []
        assert meta.userDefined["mdeploy.output_stride"] == "2" and meta.userDefined["com.github.apple.coremltools.version"]
    if sys.platform != "darwin":
        statuses = {(g.gate, g.artifact): g.status for g in result.gates if g.artifact.startswith("coreml")}
        assert set(statuses.values()) == {"unverified"}  # never "passed" where Core ML cannot run
        manifest = json.loads((result.build_dir / "manifest.json").read_text())
        parity = {g["artifact"]: g for g in manifest["gates"]["parity"]["results"]}
        assert parity["coreml"]["metrics"] == {"unverified": "needs macOS: Core ML models only run there"}


def test_coreml_spec_check_names_every_mismatch():
    from types import SimpleNamespace

    from mdeploy.exporters.coreml import check_against_spec
    from mdeploy.spec import Preprocessing, TensorInfo

    pre = Preprocessing((64, 64), "rgb", (-1.0, 1.0))
    spec = SimpleNamespace(preprocessing=pre, input=TensorInfo("image", (1, 64, 64, 3)), output=TensorInfo("heatmaps", (1, 32, 32, 14)))
    good = {
        "input": {"name": "image", "type": "imageType", "width": 64, "height": 64, "color": "rgb"},
        "output": {"name": "heatmaps", "shape": [1, 32, 32, 14]},
        "preprocessing": {"scale": 2 / 255, "bias": [-1.0, -1.0, -1.0]},
    }
    assert check_against_spec(good, spec) == []
    bad = json.loads(json.dumps(good))
    bad["input"]["color"] = "bgr"
    bad["preprocessing"]["scale"] = 1.0
    bad["output"]["name"] = "Identity"
    problems = check_against_spec(bad, spec)
    assert len(problems) == 3 and any("colour layout bgr" in p for p in problems)


def test_time_dependent_core_ml_metadata_is_removed(tmp_path):
    """What coremltools stamps (the conversion date) and any other date in the metadata is removed on
    normalization; everything else (versions, mdeploy's own keys, the description) stays."""
    from coremltools.proto import Model_pb2

    from mdeploy.exporters.reproducible import normalize_mlmodel, time_dependent_metadata

    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    meta = spec.description.metadata
    meta.userDefined.update({"com.github.apple.coremltools.conversion_date": "2026-11-26", "com.github.apple.coremltools.version": "9.0",
                             "mdeploy.runtime": "cpu", "build_time": "10:02", "note": "made 2026-11-26T10:02:11"})
    meta.shortDescription = "pose: 14 aic14 keypoint heatmaps"
    meta.versionString = "1.0 (2026-11-26)"
    assert time_dependent_metadata(spec) == [
        "userDefined[build_time]", "userDefined[com.github.apple.coremltools.conversion_date]", "userDefined[note]", "versionString"]
    path = tmp_path / "model.mlmodel"
    path.write_bytes(spec.SerializeToString())
    normalize_mlmodel(path)
    back = Model_pb2.Model()
    back.ParseFromString(path.read_bytes())
    assert time_dependent_metadata(back) == []
    assert dict(back.description.metadata.userDefined) == {"com.github.apple.coremltools.version": "9.0", "mdeploy.runtime": "cpu"}
    assert back.description.metadata.versionString == "1.0"
    assert back.description.metadata.shortDescription == "pose: 14 aic14 keypoint heatmaps"


def test_quantized_coreml_weights(tmp_path, dots, dots_model):
    path = dots_import_recipe(tmp_path, dots_model, dots, "export: {coreml: {precision: fp32, quantize: int8}}\n")
    result = build(load_recipe(path), out_root=tmp_path / "b")
    (art,) = [a for a in result.manifest["artifacts"] if a["id"] == "coreml"]
    assert art["variant"] == "mlprogram-fp32-int8" and art["details"]["spec_version"] >= 7


def test_coreml_recipe_rules(tmp_path, dots, dots_model):
    """(A per-channel std is no longer refused: tests/exporters/test_volumetric_exports.py converts one.)"""
    text = "export: {coreml: {quantize: int8, minimum_deployment_target: iOS15}}\n"
    path = dots_import_recipe(tmp_path, dots_model, dots, text)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert "quantized Core ML weights need minimum_deployment_target iOS16 or later" in caught.value.issues[0].message


def test_onnx_import_through_onnx2tf(tmp_path, dots, dots_model):
    """An NCHW ONNX model (as PyTorch exports them) comes in through onnx2tf, offline, and builds."""
    exported = build(
        load_recipe(dots_import_recipe(tmp_path, dots_model, dots, "export: {onnx: {opset: 17, nchw: true}}\n", name="to_onnx")),
        out_root=tmp_path / "b",
    )
    onnx_file = exported.build_dir / "onnx" / "to_onnx.onnx"
    recipe = tmp_path / "from_onnx.yaml"
    recipe.write_text(
        f"""
name: from_onnx
model:
  import: {{format: onnx, path: {onnx_file}}}
  input: {{size: [64, 64], channels: bgr, range: [0, 255], mean: [10, 20, 30]}}
data:
  val: {{coco: {{annotations: {dots}/val/annotations.json, images: {dots}/val/images}}}}
export: {{tflite: {{variants: [fp32]}}}}
"""
    )
    result = build(load_recipe(recipe), out_root=tmp_path / "b")
    spec = json.loads((result.build_dir / "model" / "spec.json").read_text())
    assert spec["source"]["format"] == "onnx" and spec["input"]["shape"] == [1, 64, 64, 3]
    gates = {(g.gate, g.artifact): g for g in result.gates}
    assert gates[("parity", "tflite/fp32")].status == "passed"
    original = {g.artifact: g for g in exported.gates if g.gate == "accuracy"}["model"].metrics["metrics"]["pckh@0.5"]
    assert gates[("accuracy", "model")].metrics["metrics"]["pckh@0.5"] == pytest.approx(original, abs=0.5)


def test_onnx_import_without_onnx2tf_says_how_to_install(tmp_path, monkeypatch):
    from mdeploy.errors import EnvironmentProblem
    from mdeploy.importers.onnx import load

    monkeypatch.setitem(sys.modules, "onnx2tf", None)  # as if it were not installed
    with pytest.raises(EnvironmentProblem) as caught:
        load(None, tmp_path / "m.onnx", lambda *keys: "r.yaml:3:5")
    assert caught.value.exit_code == 3
    assert "requirements-onnx2tf.txt" in caught.value.hint and caught.value.where == "r.yaml:3:5"
