""".tflite imports: verified against the file as it is, packaged as tflite/fp32, glued; never re-converted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import PEFM_DIR, PEFM_OUTPUT, TINY_SIZE, write
from tests.importers.test_init_probe import two_stage_model

PEFM_TFLITE = PEFM_DIR / "model.tflite"


@pytest.fixture
def pefm_tflite() -> Path:
    if not PEFM_TFLITE.is_file():
        pytest.skip(f"the PEFM reference model is not here ({PEFM_TFLITE}): ../shared is absent in this checkout")
    return PEFM_TFLITE


@pytest.fixture(scope="module")
def two_stage_tflite(tmp_path_factory) -> dict:
    """A two-output .tflite with its signature stripped (like the PEFM release: plain tensors only)."""
    import flatbuffers
    import tensorflow as tf
    from ai_edge_litert import schema_py_generated as schema

    folder = tmp_path_factory.mktemp("tflite")
    model = two_stage_model()
    model.export(str(folder / "sm"), format="tf_saved_model", verbose=False,
                 input_signature=[tf.TensorSpec([1, TINY_SIZE, TINY_SIZE, 3], tf.float32, name="image")])
    flat = tf.lite.TFLiteConverter.from_saved_model(str(folder / "sm")).convert()
    obj = schema.ModelT.InitFromPackedBuf(bytearray(flat), 0)
    obj.signatureDefs = []
    builder = flatbuffers.Builder(len(flat) + 1024)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    path = folder / "two_stage.tflite"
    path.write_bytes(bytes(builder.Output()))
    x = np.random.default_rng(0).uniform(0, 1, (1, TINY_SIZE, TINY_SIZE, 3)).astype(np.float32)
    return {"path": path, "x": x, "stages": [np.asarray(v) for v in model(x, training=False)]}


def signature_of(path: Path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_signature_list()


def test_pefm_tflite_is_proposed_built_packaged_glued_and_scored(tmp_path, cli, pefm_tflite):
    init = cli("init", "pefm", "--import", pefm_tflite, "--dest", tmp_path)
    assert init.exit_code == 0, init.stderr
    assert f"proposed: input image -> output {PEFM_OUTPUT} (heatmaps: aic14" in init.stdout
    text = (tmp_path / "pefm.yaml").read_text()
    assert "format: tflite" in text and f'outputs: ["{PEFM_OUTPUT}"]' in text
    assert "channels: bgr" in text and "range: [0, 255]" in text
    assert "tflite: {variants: [fp32]}" in text
    assert signature_of(pefm_tflite) == {}  # the release has no signature: run through its plain tensors

    write(tmp_path / "app.yaml", """
        extends: pefm.yaml
        name: pefm_app
        data:
          val: {synthetic: {count: 8, seed: 3}}
        app:
          android: {project: android_app}
        """)
    built = cli("build", tmp_path / "app.yaml", "--out", tmp_path / "build")
    assert built.exit_code == 0, built.stderr
    folder = tmp_path / "build" / "pefm_app"
    manifest = json.loads((folder / "manifest.json").read_text())
    ids = [a["id"] for a in manifest["artifacts"]]
    assert ids[:3] == ["model", "spec", "tflite/fp32"] and any(i.startswith("glue/android/") for i in ids)
    # The reference is the imported file itself; the package is the same graph with a serving signature.
    assert (folder / "model" / "model.tflite").read_bytes() == pefm_tflite.read_bytes()
    packaged = folder / "tflite" / "pefm_app_fp32.tflite"
    assert signature_of(packaged) == {"serving_default": {"inputs": ["image"], "outputs": ["heatmaps"]}}
    parity = manifest["gates"]["parity"]["results"]
    assert [g["status"] for g in parity] == ["passed"]
    assert parity[0]["metrics"]["max_abs"] == 0.0 and parity[0]["metrics"]["drawn"] >= 6  # people found on the photos
    kotlin = next(folder.glob("glue/android/**/PoseModelConfig.kt")).read_text()
    assert "pefm_app_fp32.tflite" in kotlin
    accuracy = manifest["gates"]["accuracy"]["results"]
    assert [g["artifact"] for g in accuracy] == ["model", "tflite/fp32"]
    assert accuracy[0]["metrics"]["metrics"] == accuracy[1]["metrics"]["metrics"]  # the model and its package agree


def test_other_exports_of_a_tflite_import_are_bad_input(tmp_path, cli, pefm_tflite):
    write(tmp_path / "t.yaml", f"""
        name: t
        model:
          import: {{format: tflite, path: {pefm_tflite}}}
          input: {{channels: bgr, range: [0, 255]}}
        """)
    assert cli("validate", tmp_path / "t.yaml").exit_code == 0
    cases = [
        (["--set", "export.tflite.variants=[fp32, fp16]"], "export.tflite.variants: fp16 would re-convert the model"),
        (["--set", "export.onnx.opset=17"], "export.onnx: a .tflite import is packaged as it is, never re-converted"),
        (["--set", "export.coreml.precision=fp16"], "export.coreml:"),
        (["--set", "export.mace.runtime=cpu"], "export.mace:"),
    ]
    for args, message in cases:
        for command in ("validate", "build"):
            result = cli(command, tmp_path / "t.yaml", *args, "--out", tmp_path / "build") if command == "build" else \
                cli(command, tmp_path / "t.yaml", *args)
            assert result.exit_code == 2, (command, args, result.stderr)
            assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "build").exists()


def test_a_tflite_without_signature_imports_through_its_plain_tensors(tmp_path, cli, two_stage_tflite):
    """No /work/shared needed: a two-output .tflite; init proposes the last stage; parity passes."""
    path = two_stage_tflite["path"]
    init = cli("init", "two", "--import", path, "--channels", "rgb", "--range", "0,1", "--dest", tmp_path, "--json")
    assert init.exit_code == 0, init.stderr
    report = json.loads(init.stdout)
    assert len(report["outputs_found"]) == 2 and not report["chosen"]["output_given"]
    built = cli("build", tmp_path / "two.yaml", "--out", tmp_path / "build")
    assert built.exit_code == 0, built.stderr
    from mdeploy.runners.litert import LiteRTRunner

    packaged = LiteRTRunner(tmp_path / "build" / "two" / "tflite" / "two_fp32.tflite")(two_stage_tflite["x"])
    last = two_stage_tflite["stages"][1]
    assert np.abs(packaged - last).max() < 1e-4  # the proposed output is the second (deeper) stage

    # The other output, named on purpose, is what gets packaged.
    first = next(o["name"] for o in report["outputs_found"] if o["name"] != report["chosen"]["output"])
    write(tmp_path / "first.yaml", f"""
        extends: two.yaml
        name: first
        model:
          import: {{outputs: ["{first}"]}}
        """)
    assert cli("build", tmp_path / "first.yaml", "--out", tmp_path / "build").exit_code == 0
    packaged = LiteRTRunner(tmp_path / "build" / "first" / "tflite" / "first_fp32.tflite")(two_stage_tflite["x"])
    assert np.abs(packaged - two_stage_tflite["stages"][0]).max() < 1e-4

    typo = cli("init", "typo", "--import", path, "--output", first + "x", "--dest", tmp_path)
    assert typo.exit_code == 2 and f"did you mean '{first}'" in typo.stderr


def test_a_file_that_is_not_tflite_fails_the_model_stage(tmp_path, cli, tiny_models):
    write(tmp_path / "t.yaml", f"""
        name: t
        model:
          import: {{format: tflite, path: {tiny_models["frozen_pb"]}}}
          input: {{channels: rgb, range: [0, 1]}}
        """)
    result = cli("build", tmp_path / "t.yaml", "--out", tmp_path / "build")
    assert result.exit_code == 2 and "tiny.pb is not a TFLite model" in result.stderr
    assert not (tmp_path / "build" / "t").exists()
