"""TFLite variants: int8 calibration through the shared preprocessing, quantized I/O, op reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mdeploy.build import build
from mdeploy.errors import ModelError
from mdeploy.recipe import load_recipe
from tests.exporters.conftest import dots_import_recipe


def test_int8_calibration_images_are_preprocessed_like_evaluation_and_training(tmp_path, dots, dots_model):
    """The representative dataset is `Preprocessing.apply` of each sample's crop box, the path
    evaluation uses, and matches the training pipeline's unaugmented input."""
    from types import SimpleNamespace

    from mdeploy.data.coco import load_coco
    from mdeploy.data.pipeline import build_dataset
    from mdeploy.keypoints import get_keypoint_set
    from mdeploy.spec import preprocessing_from_recipe
    from mdeploy.stages import calibration_inputs
    from mdeploy.verify.samples import load_rgb

    recipe = load_recipe(dots_import_recipe(tmp_path, dots_model, dots, "export: {tflite: {variants: [int8], calibration: {split: val, samples: 5}}}\n"))
    pre = preprocessing_from_recipe(recipe.model.input, (64, 64))
    spec = SimpleNamespace(preprocessing=pre)
    ctx = SimpleNamespace(log=lambda line: None, dep=None)
    produced = list(calibration_inputs(recipe, "val", 5, spec, ctx)())
    assert len(produced) == 5 and produced[0].shape == (1, 64, 64, 3)
    ds = load_coco(dots / "val" / "annotations.json", dots / "val" / "images", get_keypoint_set("aic14"))
    trained = next(iter(build_dataset(ds, pre, get_keypoint_set("aic14"), 2, batch_size=5, augment=None, shuffle=False)))[0].numpy()
    for i, x in enumerate(produced):
        expected, _ = pre.apply(load_rgb(ds.samples[i].image), ds.samples[i].crop_box(ds.crop))
        np.testing.assert_array_equal(x[0], expected)
        assert np.abs(x[0] - trained[i]).max() <= 1.0


@pytest.mark.parametrize("io", ["uint8", "int8"])
def test_full_integer_variant_with_quantized_io(tmp_path, dots, dots_model, io):
    path = dots_import_recipe(tmp_path, dots_model, dots, f"export: {{tflite: {{variants: [fp32, int8], int8_io: {io}, calibration: {{split: val}}}}}}\nverify: {{accuracy: {{max_drop: 3.0}}}}\n")
    result = build(load_recipe(path), out_root=tmp_path / "b")
    art = {a["id"]: a for a in result.manifest["artifacts"]}["tflite/int8"]
    io_details = art["details"]["io"]
    assert io_details["input:image"]["dtype"] == io and io_details["output:heatmaps"]["dtype"] == io
    assert io_details["input:image"]["scale"] > 0
    gates = {(g.gate, g.artifact): g for g in result.gates}
    assert gates[("parity", "tflite/int8")].status == "passed", gates[("parity", "tflite/int8")].checks
    assert gates[("accuracy", "tflite/int8")].status == "passed"
    assert abs(gates[("accuracy", "tflite/int8")].metrics["drop"]) <= 3.0
    assert gates[("accuracy", "model")].metrics["metrics"]["pckh@0.5"] > 10  # a model with something to lose


def test_int8_calibrated_on_blank_images_is_caught(tmp_path, dots, dots_model, cli):
    path = dots_import_recipe(
        tmp_path, dots_model, dots,
        "export: {tflite: {variants: [fp32, int8], calibration: {split: train, samples: 32}}}\nverify: {accuracy: {max_drop: 1.0}}\n",
        name="blank_calibration",
    )
    result = cli("build", path, "--out", tmp_path / "b")
    assert result.exit_code == 1
    assert "accuracy problems:" in result.stdout
    assert "parity of tflite/int8" in result.stderr and "accuracy of tflite/int8" in result.stderr
    manifest = json.loads((tmp_path / "b" / "blank_calibration" / "manifest.json").read_text())
    acc = {g["artifact"]: g for g in manifest["gates"]["accuracy"]["results"]}
    assert acc["tflite/int8"]["status"] == "failed" and acc["tflite/int8"]["metrics"]["drop"] > 5
    assert acc["tflite/fp32"]["status"] == "passed"


def saved_model(tmp_path, body):
    import tensorflow as tf

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4, 4, 3], tf.float32, name="image")])
        def serve(self, image):
            return {"heatmaps": body(image)}

    module = Module()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve.get_concrete_function()})
    return tmp_path / "sm"


def fp32_target():
    from mdeploy.exporters import ExportTarget
    from mdeploy.exporters.tflite import TOLERANCES, convert

    return ExportTarget("tflite/fp32", "tflite", "fp32", "x.tflite", {"variant": "fp32"}, (), TOLERANCES["fp32"], convert)


def test_gpu_delegate_report_names_ops_it_cannot_run(tmp_path):
    import tensorflow as tf

    from mdeploy.exporters import ExportInputs
    from mdeploy.exporters.tflite import convert, gpu_fallback

    assert gpu_fallback(["CONV_2D", "RESIZE_BILINEAR", "ARG_MAX", "CONCATENATION"]) == [
        {"op": "ARG_MAX", "reason": "not supported by the TFLite GPU delegate"}
    ]
    sm = saved_model(tmp_path, lambda x: tf.nn.relu(x) + tf.cast(tf.argmax(x, axis=-1), tf.float32)[..., None])
    logged = []
    details = convert(fp32_target(), ExportInputs(sm, None, tmp_path / "x.tflite", logged.append))
    assert "ARG_MAX" in details["ops"] and "RELU" in details["ops"]
    assert [f["op"] for f in details["gpu_fallback"]] == ["ARG_MAX"]
    assert logged == ["GPU delegate would leave to the CPU: ARG_MAX"]


def test_ops_outside_the_builtins_are_named(tmp_path):
    import tensorflow as tf

    from mdeploy.exporters import ExportInputs
    from mdeploy.exporters.tflite import convert

    sm = saved_model(tmp_path, lambda x: x * tf.linalg.det(x[0, :3, :3, 0]))
    with pytest.raises(ModelError) as caught:
        convert(fp32_target(), ExportInputs(sm, None, tmp_path / "x.tflite", lambda line: None))
    assert "not TFLite builtins" in caught.value.message and "MatrixDeterminant" in caught.value.message
    assert "Flex" in caught.value.hint or "TFLite-compatible" in caught.value.hint
