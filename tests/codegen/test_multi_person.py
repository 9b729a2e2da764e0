"""Every family's app gets a list of people; a multi-person (PAF) model's app finds every person.

- one PoseEstimator template for every family: what it reads and which decoder makes people
  of it is data the family gives (`Family.glue_estimator`), and no template names a family;
- the Android demo app written for a PAF model (MainActivity, OverlayView drawing every
  person, the estimator, PafPoseDecoder, PafDecoder) compiles with kotlinc in the shared
  session build and passes ktlint;
- on the JVM, the estimator's path after inference (`ModelOutputs.people`: the output
  buffers, dequantized with each tensor's own scale when int8, decoded, mapped to the frame
  through the preprocessing's geometry) returns the people mdeploy's Python finds and draws
  (`PafFamily.detect`: `decode_people` mapped to the frame), for float outputs with a
  stretched input and int8 outputs with a letterboxed one, on hand-made maps (always) and
  on the real mobilenet_thin outputs on the COCO photos of ../shared (when present);
- the comparison can fail: one scale for both int8 tensors gives other people;
- the Swift of a PAF app parses, and its PafPoseDecoder mirrors the Kotlin one.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from mdeploy.codegen.apps import AppModel, glue_files, write_app
from mdeploy.families import get_family
from tests.codegen import toolchain as tc
from tests.codegen.conftest import PAF_PACKAGES, paf_app_model, paf_spec, variant_spec
from tests.helpers import REPO

FRAMES = [(640, 480), (432, 368), (300, 500)]


def _grid() -> tuple[int, int]:
    return paf_spec().heatmap_size


def recorded_inputs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Hand-made people (test_paf_glue's maps, placed in the model's grid) and, with ../shared,
    the release's outputs on the 4 COCO photos."""
    from tests.codegen.test_paf_glue import synthetic_inputs
    from tests.evaluate.conftest import release_available, run_thin_release

    gh, gw = _grid()
    out = {}
    for name, (heat, paf) in synthetic_inputs().items():
        pad = ((0, gh - heat.shape[0]), (0, gw - heat.shape[1]), (0, 0))
        out[name] = (np.pad(heat, pad).astype(np.float32), np.pad(paf, pad).astype(np.float32))
    if release_available() and importlib.util.find_spec("tensorflow") is not None:
        from mdeploy.evaluate.paf import split_output

        for file, output in run_thin_release().outputs.items():
            heat, paf = split_output(output)
            assert heat.shape[:2] == (gh, gw)
            out[f"coco_{Path(file).stem}"] = (heat.astype(np.float32), paf.astype(np.float32))
    return out


def quantize(x: np.ndarray, scale: float, zero: int) -> tuple[np.ndarray, np.ndarray]:
    """(the int8 values an interpreter writes, their dequantized floats)."""
    q = np.clip(np.round(x / np.float32(scale) + zero), -128, 127).astype(np.int8)
    return q, ((q.astype(np.int32) - zero).astype(np.float32) * np.float32(scale)).astype(np.float32)


def record(folder: Path, package: str, inputs) -> dict[str, tuple[np.ndarray, np.ndarray, int, int]]:
    """Write each input as the interpreter's output buffers of `package`; return what Python decodes."""
    io = PAF_PACKAGES[package]["io"]
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for i, (name, (heat, paf)) in enumerate(sorted(inputs.items())):
        w, h = FRAMES[i % len(FRAMES)]
        decoded = []
        for tensor, values in (("heatmaps", heat), ("pafs", paf)):
            if io is None:
                raw, seen = values.astype("<f4"), values
            else:
                _, scale, zero = io[tensor]
                raw, seen = quantize(values, scale, zero)
            (folder / f"{tensor}_{name}.bin").write_bytes(raw.tobytes())
            decoded.append(seen)
        (folder / f"frame_{name}.txt").write_text(f"{w} {h}\n")
        expected[name] = (decoded[0], decoded[1], w, h)
    return expected


def read_people(path: Path) -> list[np.ndarray]:
    return [np.array(line.split(), np.float64).reshape(-1, 3) for line in path.read_text().splitlines() if line.strip()]


def python_people(package: str, heat: np.ndarray, paf: np.ndarray, w: int, h: int) -> list[np.ndarray]:
    """What `mdeploy predict` and the report draw for these outputs: each person's parts in frame pixels."""
    spec = paf_spec(PAF_PACKAGES[package]["resize"])
    return get_family("paf").detect({"heatmaps": heat[None], "pafs": paf[None]}, spec, spec.preprocessing.geometry(w, h))


def assert_same_people(kotlin: list[np.ndarray], python: list[np.ndarray], where: str) -> None:
    assert len(kotlin) == len(python), f"{where}: {len(kotlin)} people in Kotlin, {len(python)} in Python"
    for i, (k, p) in enumerate(zip(kotlin, python)):
        assert k.shape == p.shape, f"{where}: person {i}"
        np.testing.assert_array_equal(k[:, 2] < 0, p[:, 2] < 0, err_msg=f"{where}: person {i} has other parts")
        np.testing.assert_allclose(k[:, :2], p[:, :2], atol=5e-3, rtol=0, err_msg=f"{where}: person {i} parts")
        np.testing.assert_allclose(k[:, 2], p[:, 2], atol=1e-5, rtol=0, err_msg=f"{where}: person {i} scores")


# ---------------------------------------------------------------------------- one estimator, data from the family


def test_the_family_decides_what_the_estimator_reads_and_no_template_names_a_family():
    from mdeploy.codegen.glue import context

    cpm = context(variant_spec("crop"), name="c", description="", package="com.example.a", model_file="c.tflite")
    paf = context(paf_spec(), name="p", description="", package="com.example.a", model_file="p.tflite",
                  artifact=paf_artifact_int8())
    assert [o["name"] for o in cpm["outputs"]] == ["heatmaps"] and cpm["decoder"] == "HeatmapDecoder"
    assert not cpm["multi_person"] and cpm["decode"]["threshold"] == 0.2
    assert [o["name"] for o in paf["outputs"]] == ["heatmaps", "pafs"] and paf["decoder"] == "PafPoseDecoder"
    assert [o["channels"] for o in paf["outputs"]] == [19, 38] and paf["multi_person"]
    assert [o["quant"].scale for o in paf["outputs"]] == [0.0041, 0.0087]  # each output its own scale
    assert paf["decode"]["threshold"] == 0.0  # every part the decoder keeps is drawn, as mdeploy predict draws it
    templates = [p for folder in ("glue", "apps") for p in sorted((REPO / "templates" / folder).rglob("*")) if p.is_file()]
    assert len(templates) > 20
    for path in templates:
        text = path.read_text(encoding="utf-8")
        assert "family" not in text and not re.search(r"\{%-?\s*(if|elif)[^%]*\b(paf|heatmap)", text, re.I), path


def paf_artifact_int8() -> dict:
    from tests.codegen.conftest import paf_artifact

    return paf_artifact("int8")


def test_every_family_shares_the_estimator_and_the_app():
    cpm = AppModel("android", "c", "", variant_spec("stretch"), "tflite/fp32", "tflite/c_fp32.tflite",
                   {"project": None, "package": "com.example.multipose", "artifact": None, "name": "Multi Pose"})
    single, multi = glue_files(cpm), glue_files(paf_app_model("app"))
    folder = "app/src/main/java/com/example/multipose/generated"
    assert sorted(set(multi) - set(single)) == [f"{folder}/PafDecoder.kt", f"{folder}/PafPoseDecoder.kt"]
    estimator = multi[f"{folder}/PoseEstimator.kt"]
    assert "fun estimate(bitmap: Bitmap): List<Pose>" in estimator
    assert estimator.replace("multipose_fp32", "M") == single[f"{folder}/PoseEstimator.kt"].replace("c_fp32", "M")
    assert "val DECODER: PeopleDecoder = PafPoseDecoder\n" in multi[f"{folder}/PoseModelConfig.kt"]
    assert "val DECODER: PeopleDecoder = HeatmapDecoder\n" in single[f"{folder}/PoseModelConfig.kt"]


# ---------------------------------------------------------------------------- Kotlin: compiles, lints, finds the people


def test_the_multi_person_app_compiles_and_passes_ktlint(jvm_build):
    assert "error:" not in jvm_build.compile_output
    classes = {p.relative_to(jvm_build.classes).as_posix() for p in jvm_build.classes.rglob("*.class")}
    for name in ("MainActivity", "OverlayView", "generated/PoseEstimator", "generated/PafPoseDecoder", "generated/PafDecoder"):
        assert f"com/example/multipose/{name}.class" in classes, name
    files = sorted(p.relative_to(jvm_build.paf_app) for p in jvm_build.paf_app.rglob("*.kt*"))
    assert any(f.name == "PafPoseDecoder.kt" for f in files) and len(files) > 9
    proc = tc.ktlint(files, jvm_build.paf_app)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def inputs():
    return recorded_inputs()


@pytest.mark.parametrize("package", sorted(PAF_PACKAGES))
def test_the_estimator_returns_the_people_python_finds(jvm_build, tmp_path, inputs, package):
    expected = record(tmp_path, package, inputs)
    jvm_build.java("mdeploy.harness.MainKt", f"multi_{package}", str(tmp_path))
    people = 0
    for name, (heat, paf, w, h) in expected.items():
        python = python_people(package, heat, paf, w, h)
        assert_same_people(read_people(tmp_path / f"out_{name}.txt"), python, f"{package} {name} ({w}x{h})")
        people += len(python)
    assert people >= 5  # 2 + 3 hand-made people (and, with ../shared, the photos' people)
    if any(n.startswith("coco_") for n in expected):
        assert people >= 5 + 4  # the 4 COCO photos hold people the release finds


def test_one_scale_for_both_int8_outputs_finds_other_people(jvm_build, tmp_path, inputs):
    """The comparison can fail: Python dequantizing the PAFs with the heatmaps' scale disagrees with the app."""
    expected = record(tmp_path, "int8", inputs)
    jvm_build.java("mdeploy.harness.MainKt", "multi_int8", str(tmp_path))
    _, heat_scale, heat_zero = PAF_PACKAGES["int8"]["io"]["heatmaps"]
    _, paf_scale, paf_zero = PAF_PACKAGES["int8"]["io"]["pafs"]
    failures = 0
    for name, (heat, paf, w, h) in expected.items():
        q = np.round(paf / np.float32(paf_scale)) + paf_zero
        wrong = ((q - heat_zero) * np.float32(heat_scale)).astype(np.float32)
        try:
            assert_same_people(read_people(tmp_path / f"out_{name}.txt"), python_people("int8", heat, wrong, w, h), name)
        except AssertionError:
            failures += 1
    assert failures >= 1


# ---------------------------------------------------------------------------- Swift


def test_the_swift_of_a_multi_person_app_parses_and_mirrors_the_kotlin(tmp_path):
    spec = paf_spec()
    model = AppModel("ios", "multipose", "every person", spec, "coreml", "coreml/multipose.mlpackage",
                     {"project": None, "artifact": None, "name": "Multi Pose", "bundle_id": "com.example.MultiPose"})
    write_app(model, tmp_path / "ios")
    sources = sorted((tmp_path / "ios").rglob("*.swift"))
    assert {p.name for p in sources} >= {"PafPoseDecoder.swift", "PafDecoder.swift", "SkeletonOverlay.swift", "ContentView.swift"}
    for source in sources:
        assert tc.syntax_problems(source.read_text(encoding="utf-8"), "swift") == [], source
    config = (tmp_path / "ios" / "PoseDemo" / "Generated" / "PoseModelConfig.swift").read_text()
    assert "static let decoder: any PeopleDecoder.Type = PafPoseDecoder.self\n" in config
    assert 'OutputTensor(name: "pafs", height: 46, width: 54, channels: 38)' in config
    swift = (tmp_path / "ios" / "PoseDemo" / "Generated" / "PafPoseDecoder.swift").read_text()
    kotlin = next(t for p, t in glue_files(paf_app_model("app")).items() if p.endswith("/PafPoseDecoder.kt"))
    for call in ("decodeSeparate", "toSourceX", "toSourceY", "keypointNames", "inputWidth", "inputHeight"):
        assert call in swift, call
    for word in ("decodeSeparate", "toSourceX", "toSourceY", "KEYPOINT_NAMES", "INPUT_WIDTH", "INPUT_HEIGHT", "-1f"):
        assert word in kotlin, word
