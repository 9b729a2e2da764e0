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

    recipe = load_recipe(dots_import_recipe(tmp_path, dots_model, dots, "export: {tflite: {variants: [int8], calibration: {split: calibration, samples: 5, photos: false}}}\n"))
    pre = preprocessing_from_recipe(recipe.model.input, (64, 64))
    spec = SimpleNamespace(preprocessing=pre)
    ctx = SimpleNamespace(log=lambda line: None, dep=None)
    generate, described = calibration_inputs(recipe, "calibration", 5, spec, ctx)
    produced = list(generate())
    assert described == {"split": "calibration", "kind": "unknown", "source": "coco", "images": 5, "photos": 0, "range_frames": 2, "total": 5,
                         "warning": described["warning"]} and "fewer than 100" in described["warning"]
    assert len(produced) == 7 and produced[0].shape == (1, 64, 64, 3)
    lo, hi = pre.input_range()  # a black and a white frame pin the input range to the contract's
    assert produced[-2].min() == pytest.approx(lo) and produced[-1].max() == pytest.approx(hi)
    ds = load_coco(dots / "calib" / "annotations.json", dots / "calib" / "images", get_keypoint_set("aic14"))
    trained = next(iter(build_dataset(ds, pre, get_keypoint_set("aic14"), 2, batch_size=5, augment=None, shuffle=False)))[0].numpy()
    for i, x in enumerate(produced[:5]):
        expected, _ = pre.apply(load_rgb(ds.samples[i].image), ds.samples[i].crop_box(ds.crop))
        np.testing.assert_array_equal(x[0], expected)
        assert np.abs(x[0] - trained[i]).max() <= 1.0


def _images_recipe(tmp_path, dots, dots_model, folder, name):
    path = dots_import_recipe(tmp_path, dots_model, dots, "export: {tflite: {variants: [fp32, int8], calibration: {samples: 8}}}\n",
                              name=name)
    text = path.read_text().replace(f"calibration: {{coco: {{annotations: {dots}/calib/annotations.json, images: {dots}/calib/images}}}}",
                                    f"calibration: {{kind: real, images: {{folders: [{folder}]}}}}")
    assert "images: {folders:" in text
    path.write_text(text)
    return path


def test_int8_calibrates_on_a_folder_of_unlabelled_images(tmp_path, dots, dots_model, cli):
    """`data.calibration: {images: ...}`: whole images, in sorted order, through the model's
    preprocessing; the build, its summary and its manifest say what the int8 file was calibrated on."""
    from types import SimpleNamespace

    from mdeploy.spec import preprocessing_from_recipe
    from mdeploy.stages import calibration_inputs
    from mdeploy.verify.samples import load_rgb

    frames = tmp_path / "frames"
    frames.mkdir()
    for source in sorted((dots / "calib" / "images").iterdir())[:12]:  # renamed: the names say nothing
        (frames / f"frame_{source.name}").write_bytes(source.read_bytes())
    path = _images_recipe(tmp_path, dots, dots_model, frames, "images_calibration")
    recipe = load_recipe(path)
    pre = preprocessing_from_recipe(recipe.model.input, (64, 64))
    generate, described = calibration_inputs(recipe, "calibration", 8, SimpleNamespace(preprocessing=pre),
                                             SimpleNamespace(log=lambda line: None, dep=None))
    produced = list(generate())
    assert described["source"] == "images" and described["kind"] == "real" and described["images"] == 8
    for x, image in zip(produced[:8], sorted(frames.iterdir())[:8]):
        pixels = load_rgb(image)
        np.testing.assert_array_equal(x[0], pre.apply(pixels, (0.0, 0.0, float(pixels.shape[1]), float(pixels.shape[0])))[0])
    result = cli("build", path, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "tflite/int8: calibrated on 8 unlabelled images of data.calibration (real)" in result.stdout
    manifest = json.loads((tmp_path / "b" / "images_calibration" / "manifest.json").read_text())
    art = {a["id"]: a for a in manifest["artifacts"]}["tflite/int8"]
    assert art["details"]["calibration"]["source"] == "images"
    parity = {g["artifact"]: g for g in manifest["gates"]["parity"]["results"]}
    assert parity["tflite/int8"]["status"] == "passed"


def test_a_calibration_image_that_a_validation_split_holds_stops_the_build(tmp_path, dots, dots_model, cli):
    """Held out means held out: a validation image copied under another name into the calibration
    folder is found by its bytes; exit 2, the recipe's calibration key named, nothing written."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for source in sorted((dots / "calib" / "images").iterdir())[:4]:
        (frames / source.name).write_bytes(source.read_bytes())
    leaked = sorted((dots / "val" / "images").iterdir())[3]
    (frames / "zz_leaked.png").write_bytes(leaked.read_bytes())
    path = _images_recipe(tmp_path, dots, dots_model, frames, "leaked_calibration")
    result = cli("build", path, "--out", tmp_path / "b")
    assert result.exit_code == 2, result.stdout + result.stderr
    assert f"leaked_calibration.yaml:9:16: calibration image {frames / 'zz_leaked.png'} is the validation split val's {leaked}" \
        in result.stderr
    assert not (tmp_path / "b" / "leaked_calibration").exists()


@pytest.mark.parametrize("io", ["uint8", "int8"])
def test_full_integer_variant_with_quantized_io(tmp_path, dots, dots_model, io):
    path = dots_import_recipe(tmp_path, dots_model, dots, f"export: {{tflite: {{variants: [fp32, int8], int8_io: {io}, calibration: {{split: calibration}}}}}}\nverify: {{accuracy: {{max_drop: 3.0}}}}\n")
    result = build(load_recipe(path), out_root=tmp_path / "b")
    art = {a["id"]: a for a in result.manifest["artifacts"]}["tflite/int8"]
    io_details = art["details"]["io"]
    assert io_details["input:image"]["dtype"] == io and io_details["output:heatmaps"]["dtype"] == io
    lo, hi = recipe_range = (-30.0, 245.0)  # bgr 0..255 minus mean [10, 20, 30]: the contract's extremes
    assert io_details["input:image"]["scale"] == pytest.approx((hi - lo) / 255, rel=1e-3), recipe_range
    gates = {(g.gate, g.artifact): g for g in result.gates}
    assert gates[("parity", "tflite/int8")].status == "passed", gates[("parity", "tflite/int8")].checks
    assert gates[("accuracy", "tflite/int8")].status == "passed"
    assert abs(gates[("accuracy", "tflite/int8")].metrics["drop"]) <= 3.0
    # The mixed-precision search is on by default (the recipe has a gate and data.val); int8 passed
    # on every validation split, so every layer stays int8.
    mixed = art["details"]["mixed_precision"]
    assert mixed["needed"] is False and mixed["float_layers"] == [] and set(mixed["drops"]) == {"val"}, mixed
    assert gates[("accuracy", "model")].metrics["metrics"]["pckh@0.5"] > 10  # a model with something to lose


def test_int8_calibrated_on_blank_images_is_caught(tmp_path, dots, dots_model, cli):
    """Plain int8 (the mixed-precision search off) calibrated on blank images fails its gates."""
    path = dots_import_recipe(
        tmp_path, dots_model, dots,
        "export: {tflite: {variants: [fp32, int8], calibration: {split: train, samples: 32, photos: false}, "
        "mixed_precision: {enabled: false}}}\nverify: {accuracy: {max_drop: 1.0}}\n",
        name="blank_calibration",
    )
    result = cli("build", path, "--out", tmp_path / "b")
    assert result.exit_code == 1
    assert "accuracy problems:" in result.stdout
    assert "parity of tflite/int8" in result.stderr and "accuracy of tflite/int8" in result.stderr
    manifest = json.loads((tmp_path / "b" / "blank_calibration" / "manifest.json").read_text())
    acc = {g["artifact"]: g for g in manifest["gates"]["accuracy"]["results"]}
    assert acc["tflite/int8"]["status"] == "failed" and acc["tflite/int8"]["metrics"]["drop"] > 5
    # The drop on the original crops, joint by joint: lost minus gained over the joints counted
    # (the gate's drop is the mean over several crops of each person: this split is not generated).
    metrics = acc["tflite/int8"]["metrics"]
    changes, counted = metrics["changed_joints"], metrics["joints"]["pckh@0.5"]
    assert metrics["crops"]["copies"] > 1 and metrics["drop_original"] > 5
    assert changes["lost"] > 0 and 100.0 * (changes["lost"] - changes["gained"]) / counted == pytest.approx(
        metrics["drop_original"], abs=0.01), changes
    assert f"tflite/int8 on val: {changes['lost']} joint" in result.stdout and f"lost, {changes['gained']} gained" in result.stdout
    # The keypoints that moved on the parity samples say whether the reference found them clearly.
    moved = next(g for g in manifest["gates"]["parity"]["results"] if g["artifact"] == "tflite/int8")["metrics"]["disagreements"]
    assert moved and all(isinstance(d["reference_clear"], bool) for d in moved)
    assert all(d["reference_peak"] >= 0.3 for d in moved if d["reference_clear"])
    assert "reference peak" in result.stdout
    report = (tmp_path / "b" / "blank_calibration" / "report" / "report.html").read_text()
    assert f'<span class="note changed-joints">{changes["lost"]} lost, {changes["gained"]} gained;' in report
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
    # XNNPACK, read from the interpreter with the delegate applied: ARG_MAX and its CAST stay out.
    assert details["xnnpack"] == {"partitions": 1, "builtin": [{"op": "ARG_MAX", "count": 1}, {"op": "CAST", "count": 1}]}
    assert logged == ["GPU delegate would leave to the CPU: ARG_MAX",
                      "XNNPACK leaves to TFLite's builtin kernels: ARG_MAX x1, CAST x1 (1 delegated part)"]


def test_xnnpack_plan_finds_the_ops_that_cut_the_delegated_graph(tmp_path):
    """ADD_N, which XNNPACK does not run, between two delegated parts; a graph of ops it runs is one part."""
    import tensorflow as tf

    from mdeploy.exporters import ExportInputs
    from mdeploy.exporters.tflite import convert

    sm = saved_model(tmp_path, lambda x: tf.nn.relu(tf.add_n([tf.nn.relu(x), tf.sigmoid(x), x * 2.0])) * 3.0)
    details = convert(fp32_target(), ExportInputs(sm, None, tmp_path / "x.tflite", lambda line: None))
    assert details["xnnpack"] == {"partitions": 2, "builtin": [{"op": "ADD_N", "count": 1}]}
    plain = saved_model(tmp_path / "plain", lambda x: tf.nn.relu(x + tf.sigmoid(x)) * 3.0)
    details = convert(fp32_target(), ExportInputs(plain, None, tmp_path / "y.tflite", lambda line: None))
    assert details["xnnpack"] == {"partitions": 1, "builtin": []}


def test_ops_outside_the_builtins_are_named(tmp_path):
    import tensorflow as tf

    from mdeploy.exporters import ExportInputs
    from mdeploy.exporters.tflite import convert

    sm = saved_model(tmp_path, lambda x: x * tf.linalg.det(x[0, :3, :3, 0]))
    with pytest.raises(ModelError) as caught:
        convert(fp32_target(), ExportInputs(sm, None, tmp_path / "x.tflite", lambda line: None))
    assert "not TFLite builtins" in caught.value.message and "MatrixDeterminant" in caught.value.message
    assert "Flex" in caught.value.hint or "TFLite-compatible" in caught.value.hint


def outlier_model(dots_model, folder):
    """The dots model with one tensor that per-tensor int8 cannot hold: two 1x1 convs after its
    heatmaps, the first adding a channel 10,000 times larger than the others, the second dropping
    it again. In float the output is the dots model's; in int8 that tensor's scale wipes out the
    heatmaps, and keeping it in float is the fix."""
    import keras
    import numpy as np

    from mdeploy.models.layers import register_custom_layers

    register_custom_layers()
    base = keras.models.load_model(dots_model, compile=False)
    heat = base.outputs[-1] if isinstance(base.outputs, list) else base.outputs
    k = heat.shape[-1]
    widen = keras.layers.Conv2D(k + 1, 1, name="widen")
    narrow = keras.layers.Conv2D(k, 1, name="narrow")
    out = narrow(widen(heat))
    w1 = np.zeros((1, 1, k, k + 1), np.float32)
    w1[0, 0, :, :k] = np.eye(k)
    w1[0, 0, 0, k] = 1e4
    widen.set_weights([w1, np.zeros(k + 1, np.float32)])
    w2 = np.zeros((1, 1, k + 1, k), np.float32)
    w2[0, 0, :k, :] = np.eye(k)
    narrow.set_weights([w2, np.zeros(k, np.float32)])
    model = keras.Model(base.inputs, out)
    path = folder / "outlier.keras"
    model.save(path)
    return path


def test_mixed_precision_brings_a_failing_int8_back_under_the_gate(tmp_path, dots, dots_model):
    """One tensor with an outlier channel makes the int8 variant fail its accuracy gate; the
    mixed-precision search (on by default; the recipe sets only its limit) keeps the fewest
    groups of layers in float, chosen by what they do to the outputs, until every validation
    split passes, and names them."""
    path = dots_import_recipe(
        tmp_path, outlier_model(dots_model, tmp_path), dots,
        "export: {tflite: {variants: [fp32, int8], calibration: {split: calibration, photos: false}, "
        "mixed_precision: {max_float_layers: 8}}}\nverify: {accuracy: {max_drop: 1.0}}\n",
        name="mixed",
    )
    result = build(load_recipe(path), out_root=tmp_path / "b")
    art = {a["id"]: a for a in result.manifest["artifacts"]}["tflite/int8"]
    mixed = art["details"]["mixed_precision"]
    assert mixed["needed"] and mixed["passed"], mixed
    assert max(mixed["drops"].values()) > 1.0  # the plain int8 failed the gate
    assert 1 <= len(mixed["float_layers"]) <= 2, mixed["float_layers"]
    assert all(layer["tensor"] and layer["channel_error"] > 0 for layer in mixed["float_layers"])
    assert any("widen" in layer["tensor"] or "narrow" in layer["tensor"] for layer in mixed["float_layers"])
    assert [t["float_layers"] for t in mixed["trail"]][0] == 1
    # Chosen by what they do to the outputs: each group kept lowers the output error.
    errors = [mixed["int8_output_error"]] + [g["output_error"] for g in mixed["groups"]]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert {layer["group"] for layer in mixed["float_layers"]} == {g["group"] for g in mixed["groups"]}
    report = (tmp_path / "b" / "mixed" / "report" / "report.html").read_text()
    assert f"all int8: output error {mixed['int8_output_error']}" in report
    from mdeploy.report.collect import _int8_rewrites

    rewrites = _int8_rewrites(art["details"])  # what the int8 graph rewrites did, shown beside the calibration
    assert rewrites and all(line in report for line in rewrites), rewrites
    assert mixed["groups"][0]["group"] in report
    from mdeploy.cli.build_cmd import quantization_lines

    summary = "\n".join(quantization_lines(result.manifest))
    assert f"{len(mixed['float_layers'])} layer(s) kept in float to pass verify.accuracy (output error order)" in summary
    assert f"{mixed['groups'][0]['group'].rsplit('/', 1)[-1]} (output error {mixed['groups'][0]['output_error']:g}" in summary
    gate = next(g for g in result.gates if g.gate == "accuracy" and g.artifact == "tflite/int8")
    assert gate.status == "passed", gate.checks
    assert "DEQUANTIZE" in art["details"]["ops"]  # a float island inside the int8 graph


def test_a_missing_calibration_folder_is_named_before_anything_runs(tmp_path, dots, dots_model, cli):
    path = _images_recipe(tmp_path, dots, dots_model, tmp_path / "no_such_frames", "missing_frames")
    result = cli("build", path, "--out", tmp_path / "b")
    assert result.exit_code == 2, result.stdout + result.stderr
    assert f"missing_frames.yaml:9:37: image folder not found: {tmp_path / 'no_such_frames'}" in result.stderr
    assert not (tmp_path / "b" / "missing_frames").exists()


def test_the_int8_stage_key_follows_the_validation_images_its_calibration_is_checked_against(tmp_path, dots, dots_model):
    """Calibration on the user's own images is checked against every validation image, so a
    changed validation image must re-run that check: the int8 stage's cache key changes too."""
    import shutil

    from mdeploy.build import plan_build
    from mdeploy.fsutil import sha256_json
    from mdeploy.pipeline import Cache

    val = tmp_path / "val"
    shutil.copytree(dots / "val", val)
    path = _images_recipe(tmp_path, dots, dots_model, dots / "calib" / "images", "val_keyed")
    path.write_text(path.read_text().replace(f"{dots}/val/", f"{val}/"))

    def int8_key():
        plan = plan_build(load_recipe(path), Cache(tmp_path / "cache"), tmp_path / "build")
        return sha256_json(next(s for s in plan.stages if s.name == "tflite/int8").key)

    before = int8_key()
    assert int8_key() == before
    image = sorted((val / "images").iterdir())[0]
    image.write_bytes((dots / "calib" / "images" / sorted(p.name for p in (dots / "calib" / "images").iterdir())[0]).read_bytes())
    assert int8_key() != before


def test_a_whole_image_split_gives_each_image_once_however_many_people_it_holds(tmp_path):
    """Calibration on a COCO split fed whole: an image with three people is one input, not three."""
    from types import SimpleNamespace

    from PIL import Image

    from mdeploy.keypoints import get_keypoint_set
    from mdeploy.spec import preprocessing_from_recipe
    from mdeploy.stages import calibration_inputs

    (tmp_path / "images").mkdir()
    for name in ("crowd.png", "solo.png"):
        Image.new("RGB", (48, 48), (90, 90, 90)).save(tmp_path / "images" / name)
    person = {"category_id": 1, "num_keypoints": 1, "keypoints": [10, 10, 2] + [0, 0, 0] * 13, "bbox": [5, 5, 20, 30]}
    coco = {"images": [{"id": 1, "file_name": "crowd.png", "width": 48, "height": 48},
                       {"id": 2, "file_name": "solo.png", "width": 48, "height": 48}],
            "annotations": [dict(person, id=i, image_id=image) for i, image in enumerate([1, 1, 1, 2], 1)],
            "categories": [{"id": 1, "name": "person", "keypoints": list(get_keypoint_set("aic14").names)}]}
    (tmp_path / "people.json").write_text(json.dumps(coco))
    path = tmp_path / "whole.yaml"
    path.write_text(f"""
name: whole
model: {{import: {{format: keras, path: {tmp_path}/m.keras}}, input: {{size: [32, 32], channels: rgb, range: [0, 255]}}}}
data:
  calibration: {{crop: image, coco: {{annotations: {tmp_path}/people.json, images: {tmp_path}/images}}}}
export: {{tflite: {{variants: [int8], calibration: {{photos: false}}}}}}
verify: {{find_people: off}}
""")
    recipe = load_recipe(path)
    spec = SimpleNamespace(preprocessing=preprocessing_from_recipe(recipe.model.input, (32, 32)))
    generate, described = calibration_inputs(recipe, "calibration", 200, spec, SimpleNamespace(log=lambda line: None, dep=None))
    assert described["images"] == 2 and len(list(generate())) == 2 + 2  # + the black and the white range frames
