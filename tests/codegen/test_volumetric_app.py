"""A 3-D volumetric (MobileHumanPose) model's app: the projected skeleton, coloured by depth.

- the family's estimator data: the one output (`volume` [1, H, W, J*D] or `coords` [1, J, 3],
  read as height 1, width J, 3 channels), each with its own quantization, to
  `VolumePoseDecoder`, which picks the entry point by the output's rank (no family in the
  templates); the keypoints of every family carry an optional depth (NaN without one);
- the Android demo app written for `recipes/lpski_android.yaml` (MainActivity, OverlayView
  colouring joints and bones by depth, the estimator, VolumePoseDecoder, VolumeDecoder)
  compiles with kotlinc and passes ktlint;
- on the JVM, the estimator's path after inference (`ModelOutputs.people`: the output buffer,
  dequantized with its own scale when int8, decoded through the frame's geometry) returns the
  joints of Python's `VolumetricFamily.detect` (x, y within 1e-3 px) with `pose3d`'s depths
  (within 1e-2 mm), for the app's float volume, an int8 depth-major volume with a letterboxed
  input and a constant root depth, and int8 and float baked-in coordinates; each keypoint's
  `depthShare` (what the overlay colours by) is its place in the person's depth range;
- the comparison can fail: the coordinates dequantized with another scale give other joints;
- the Swift of a volumetric app parses, and its VolumePoseDecoder and overlay mirror the Kotlin.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mdeploy.codegen.apps import AppModel, app_model, glue_files, write_app
from mdeploy.families import get_family
from mdeploy.recipe import load_recipe
from tests.codegen import toolchain as tc
from tests.codegen.conftest import people_harness
from tests.helpers import REPO

RECIPE = REPO / "recipes" / "lpski_android.yaml"
FRAMES = [(640, 480), (300, 500), (256, 256)]


def volumetric_spec(kind: str, *, resize: str = "stretch", size=(64, 48), stride: int = 8, depth: int = 8,
                    order: str = "joint_major", keypoints: str = "h36m17", root_depth_mm: float | None = None,
                    cell_origin: str = "centre"):
    """The ModelSpec of a volumetric model whose one output is `kind` (volume | coords), as a build writes it."""
    from mdeploy.keypoints import get_keypoint_set
    from mdeploy.spec import ModelSpec, Preprocessing, TensorInfo

    kps = get_keypoint_set(keypoints)
    h, w = size
    joints = len(kps)
    shape = (1, h // stride, w // stride, joints * depth) if kind == "volume" else (1, joints, 3)
    head = {
        "output": kind,
        "in_graph_softargmax": kind == "coords",
        "joints": joints,
        "root": kps.root,
        "layout": {"depth": depth, "order": order, "depth_range_mm": 2000.0, "cell_origin": cell_origin},
        "stride": stride,
        "parity_mm": 10.0,
        "runtime": {"root_depth": {"source": "constant" if root_depth_mm else "given", "mm": root_depth_mm}},
    }
    return ModelSpec(
        name=f"vol_{kind}",
        input=TensorInfo("image", (1, h, w, 3)),
        output=TensorInfo(kind, shape),
        preprocessing=Preprocessing((h, w), "rgb", (0.0, 1.0), resize=resize),
        keypoints=kps,
        output_stride=stride,
        task="pose_volumetric",
        family="volumetric",
        head=head,
    )


def app_spec():
    return app_model(load_recipe(RECIPE), "android").spec


# Glue packages run on the JVM: the demo app (float volume, as the recipe plans it) and three
# glue-only packages that differ in output kind, quantization, resize, channel order and root depth.
@dataclass(frozen=True)
class Package:
    package: str
    io: tuple[str, float, int] | None  # the output's (dtype, scale, zero point); None: float

    def spec(self):
        return SPECS[self.package]()


PACKAGES = {
    "app": Package("com.mdeploy.lpski", None),
    "volume_int8": Package("mdeploy.vol.volumeint8", ("int8", 0.25, 60)),
    "coords_int8": Package("mdeploy.vol.coordsint8", ("int8", 0.08, -100)),
    "coords_float": Package("mdeploy.vol.coordsfloat", None),
}
SPECS = {
    "com.mdeploy.lpski": app_spec,
    "mdeploy.vol.volumeint8": lambda: volumetric_spec("volume", resize="letterbox", order="depth_major", root_depth_mm=4500.0,
                                                      cell_origin="corner"),
    "mdeploy.vol.coordsint8": lambda: volumetric_spec("coords", resize="crop", size=(48, 64), stride=4),
    "mdeploy.vol.coordsfloat": lambda: volumetric_spec("coords", keypoints="muco21", size=(256, 256), depth=32),
}


def artifact(p: Package, spec) -> dict:
    if p.io is None:
        return {}
    dtype, scale, zero = p.io
    return {"details": {"io": {f"output:{spec.output.name}": {"dtype": dtype, "shape": [], "scale": scale, "zero_point": zero}}}}


def package_model(name: str) -> AppModel:
    p = PACKAGES[name]
    spec = p.spec()
    settings = {"project": None, "package": p.package, "artifact": "tflite/fp32", "name": "Volume"}
    return AppModel("android", spec.name, "a 3-D model", spec, "tflite/fp32", f"tflite/{spec.name}_fp32.tflite", settings,
                    details=artifact(p, spec))


EACH = ('val lines = people.flatMap { pose -> pose.keypoints.map { '
        '"${it.x} ${it.y} ${it.score} ${it.depthMm} ${pose.depthShare(it.depthMm)} ${pose.hasDepth}" } }\n'
        '            File(dir, "out_" + stem + ".txt").writeText(people.size.toString() + "\\n" + lines.joinToString("\\n") + "\\n")')
AFTER = ('val flat = Pose(listOf(Keypoint(0, "a", 1f, 2f, 0.5f), Keypoint(1, "b", 3f, 4f, 0.5f)))\n'
         '        File(dir, "no_depth.txt").writeText("${flat.hasDepth} ${flat.depthShare(1f)} ${flat.keypoints[0].depthMm}\\n")')


@dataclass
class VolumeAppBuild:
    root: Path
    app: Path
    classes: Path
    stubs: Path
    compile_output: str

    def java(self, *args: str) -> str:
        stdlib = tc.KOTLINC.parent.parent / "lib" / "kotlin-stdlib.jar"
        cp = os.pathsep.join(str(p) for p in (self.classes, self.stubs, stdlib))
        return tc.run([tc._tool("java"), "-cp", cp, *args], timeout=300).stdout


@pytest.fixture(scope="module")
def volume_app(tmp_path_factory) -> VolumeAppBuild:
    """The demo app of recipes/lpski_android.yaml and the glue-only packages, in one kotlinc run."""
    root = tmp_path_factory.mktemp("volume_app")
    app = root / "lpski_app"
    write_app(app_model(load_recipe(RECIPE), "android"), app)
    sources = sorted(app.rglob("*.kt"))
    r_file = root / "R.java"
    r_file.write_text(tc.r_java(app, PACKAGES["app"].package), encoding="utf-8")
    sources.append(r_file)
    src = root / "src"
    for name, p in PACKAGES.items():
        if name != "app":
            for rel, text in glue_files(package_model(name)).items():
                path = src / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                sources.append(path)
        harness = src / f"harness_{name}" / "VolumeAppHarness.kt"
        harness.parent.mkdir(parents=True, exist_ok=True)
        harness.write_text(people_harness(f"{p.package}.generated", "VolumeAppHarness", EACH, AFTER), encoding="utf-8")
        sources.append(harness)
    dispatch = "\n".join(f'        "{n}" -> {p.package}.generated.VolumeAppHarness.run(java.io.File(args[1]))'
                         for n, p in PACKAGES.items())
    main = src / "mdeploy" / "volumeapp" / "Main.kt"
    main.parent.mkdir(parents=True, exist_ok=True)
    main.write_text("package mdeploy.volumeapp\n\nfun main(args: Array<String>) {\n    when (args[0]) {\n" + dispatch + "\n    }\n}\n",
                    encoding="utf-8")
    sources.append(main)
    stubs = tc.compile_stubs(root / "stubs")
    classes = root / "classes"
    proc = tc.kotlinc(sources, [stubs], classes)
    return VolumeAppBuild(root, app, classes, stubs, proc.stdout + proc.stderr)


# ---------------------------------------------------------------------------- recorded outputs


def quantize(x: np.ndarray, scale: float, zero: int) -> tuple[np.ndarray, np.ndarray]:
    """(the int8 values an interpreter writes, their dequantized floats)."""
    q = np.clip(np.round(x / np.float32(scale) + zero), -128, 127).astype(np.int8)
    return q, ((q.astype(np.int32) - zero).astype(np.float32) * np.float32(scale)).astype(np.float32)


def synthetic_outputs(spec, seed: int) -> dict[str, np.ndarray]:
    """[1, ...] float32 outputs of the spec's kind: peaked and random volumes, or coordinates inside the grid."""
    from mdeploy.families.volumetric import layout_of

    rng = np.random.default_rng(seed)
    layout = layout_of(spec)
    j, d, h, w = layout.joints, layout.depth, layout.height, layout.width
    if spec.head["output"] == "coords":
        high = np.array([w - 1, h - 1, d - 1], np.float64)
        return {f"c{k}": (rng.uniform(0, 1, (1, j, 3)) * high).astype(np.float32) for k in range(3)}
    zz, yy, xx = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    centres = rng.uniform(0.5, 1.0, (j, 3)) * np.array([w - 1.5, h - 1.5, d - 1.5])
    vol = np.stack([-4.0 * ((xx - cx) ** 2 + (yy - cy) ** 2 + (zz - cz) ** 2) for cx, cy, cz in centres])
    return {"peaks": layout.to_output(vol[None].astype(np.float32)),
            "noise": rng.normal(0.0, 3.0, (1, h, w, layout.channels)).astype(np.float32)}


def record(folder: Path, name: str, seed: int) -> dict[str, tuple[np.ndarray, int, int]]:
    """Write each output as the interpreter's buffer of package `name`; return (what Python reads, frame w, h)."""
    p = PACKAGES[name]
    spec = p.spec()
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for i, (stem, values) in enumerate(sorted(synthetic_outputs(spec, seed).items())):
        w, h = FRAMES[i % len(FRAMES)]
        if p.io is None:
            raw, seen = values.astype("<f4"), values
        else:
            raw, seen = quantize(values, p.io[1], p.io[2])
        (folder / f"{spec.output.name}_{stem}.bin").write_bytes(raw.tobytes())
        (folder / f"frame_{stem}.txt").write_text(f"{w} {h}\n")
        expected[stem] = (seen, w, h)
    return expected


def read_people(path: Path) -> tuple[int, np.ndarray]:
    lines = path.read_text().split("\n")
    rows = [line.split() for line in lines[1:] if line.strip()]
    table = np.array([[float(v) for v in r[:5]] for r in rows]) if rows else np.zeros((0, 5))
    assert all(r[5] == "true" for r in rows)
    return int(lines[0]), table


def python_joints(spec, output: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """What `mdeploy predict` draws and lists: the joints in frame pixels with confidence, and their depth in mm."""
    family = get_family("volumetric")
    affine = spec.preprocessing.geometry(w, h)
    outputs = {spec.output.name: output}
    (joints,) = family.detect(outputs, spec, affine)
    return joints, family.pose3d(outputs, spec, affine).depth


@pytest.fixture(scope="module")
def recorded(volume_app) -> dict[str, tuple[Path, dict]]:
    out = {}
    for seed, name in enumerate(PACKAGES):
        folder = volume_app.root / "data" / name
        out[name] = (folder, record(folder, name, seed))
    for name, (folder, _) in out.items():
        volume_app.java("mdeploy.volumeapp.MainKt", name, str(folder))
    return out


# ---------------------------------------------------------------------------- what the estimator reads


def test_the_family_gives_the_estimator_its_one_output_and_the_volume_pose_decoder():
    from mdeploy.codegen.glue import context

    family = get_family("volumetric")
    for kind in ("volume", "coords"):
        spec = volumetric_spec(kind)
        estimator = family.glue_estimator(spec)
        assert estimator.outputs == (kind,) and estimator.decoder == "VolumePoseDecoder"
        assert estimator.templates == ("VolumePoseDecoder",)
    volume = context(volumetric_spec("volume"), name="v", description="", package="com.example.a", model_file="v.tflite")
    assert [(o["name"], o["height"], o["width"], o["channels"], o["rank"]) for o in volume["outputs"]] == [("volume", 8, 6, 136, 4)]
    assert volume["decoder"] == "VolumePoseDecoder" and not volume["multi_person"] and volume["decode"]["threshold"] == 0.0
    spec = volumetric_spec("coords")
    coords = context(spec, name="c", description="", package="com.example.a", model_file="c.tflite",
                     artifact=artifact(PACKAGES["coords_int8"], spec))
    (out,) = coords["outputs"]
    assert (out["name"], out["height"], out["width"], out["channels"], out["rank"]) == ("coords", 1, 17, 3, 4 - 1)
    assert out["quant"].quantized and out["quant"].scale == 0.08 and out["quant"].zero_point == -100
    assert (coords["output"]["height"], coords["output"]["width"], coords["output"]["channels"]) == (1, 17, 3)
    assert coords["output"]["quant"].scale == 0.08


def test_the_decoder_is_chosen_by_the_outputs_rank_and_the_keypoints_gain_an_optional_depth():
    for name, entry in (("app", "VolumeDecoder.decode("), ("coords_int8", "VolumeDecoder.decodeCoords(")):
        files = glue_files(package_model(name))
        decoder = next(t for p, t in files.items() if p.endswith("/VolumePoseDecoder.kt"))
        assert entry in decoder and "ASSUMED_ROOT_DEPTH_MM" in decoder and "person.depth[j].toFloat()" in decoder
        config = next(t for p, t in files.items() if p.endswith("/PoseModelConfig.kt"))
        assert "val DECODER: PeopleDecoder = VolumePoseDecoder\n" in config
        assert {p.rsplit("/", 1)[1] for p in files} >= {"VolumePoseDecoder.kt", "VolumeDecoder.kt", "PoseEstimator.kt"}
    volume = next(t for p, t in glue_files(package_model("volume_int8")).items() if p.endswith("/VolumeDecoder.kt"))
    assert "val ASSUMED_ROOT_DEPTH_MM: Double? = 4500.0\n" in volume  # the recipe's constant root depth, as pose3d adds it
    app = next(t for p, t in glue_files(package_model("app")).items() if p.endswith("/VolumeDecoder.kt"))
    assert "val ASSUMED_ROOT_DEPTH_MM: Double? = null\n" in app
    types = (REPO / "templates/glue/android/PoseTypes.kt.j2").read_text()
    assert "    val depthMm: Float = Float.NaN,\n" in types
    swift = (REPO / "templates/glue/ios/PoseTypes.swift.j2").read_text()
    assert "    var depthMm: Float = .nan\n" in swift  # a default: every other construction site is unchanged


# ---------------------------------------------------------------------------- Kotlin: compiles, lints, gives Python's joints


def test_the_volumetric_app_compiles_without_warnings_and_passes_ktlint(volume_app):
    assert "error:" not in volume_app.compile_output
    assert tc.kotlin_warnings(volume_app.compile_output) == []
    classes = {p.relative_to(volume_app.classes).as_posix() for p in volume_app.classes.rglob("*.class")}
    for name in ("MainActivity", "OverlayView", "generated/PoseEstimator", "generated/VolumePoseDecoder", "generated/VolumeDecoder"):
        assert f"com/mdeploy/lpski/{name}.class" in classes, name
    overlay = next(volume_app.app.rglob("OverlayView.kt")).read_text()
    assert "pose.hasDepth" in overlay and "depthColor(pose.depthShare(k.depthMm)" in overlay
    files = sorted(p.relative_to(volume_app.app) for p in volume_app.app.rglob("*.kt*"))
    assert any(f.name == "VolumePoseDecoder.kt" for f in files) and len(files) > 9
    proc = tc.ktlint(files, volume_app.app)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shutil.copy(REPO / "templates" / "apps" / "android" / ".editorconfig", volume_app.root / "src" / ".editorconfig")
    glue = volume_app.root / "src"
    others = sorted(p.relative_to(glue) for p in (glue / "app").rglob("*.kt"))  # the glue-only packages
    assert sum(p.name == "VolumePoseDecoder.kt" for p in others) == 3
    proc = tc.ktlint(others, glue)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_the_estimator_returns_the_joints_and_depths_python_gives(recorded, name):
    folder, expected = recorded[name]
    spec = PACKAGES[name].spec()
    for stem, (output, w, h) in expected.items():
        people, kotlin = read_people(folder / f"out_{stem}.txt")
        joints, depth = python_joints(spec, output, w, h)
        where = f"{name} {stem} ({w}x{h})"
        assert people == 1 and kotlin.shape == (len(spec.keypoints), 5), where
        np.testing.assert_allclose(kotlin[:, :2], joints[:, :2], rtol=0, atol=1e-3, err_msg=f"{where}: joints (px)")
        np.testing.assert_array_equal(kotlin[:, 2], joints[:, 2], err_msg=f"{where}: scores")
        np.testing.assert_allclose(kotlin[:, 3], depth, rtol=0, atol=1e-2, err_msg=f"{where}: depth (mm)")
        share = (depth - depth.min()) / (depth.max() - depth.min())
        np.testing.assert_allclose(kotlin[:, 4], share, rtol=0, atol=1e-4, err_msg=f"{where}: depth share")
        assert np.ptp(depth) > 1.0, where  # joints at several depths: the colours differ
        if name == "volume_int8":
            assert 3400.0 < depth.min() and depth.max() < 5600.0  # absolute: the constant root depth +- the volume's 1 m
    assert (folder / "no_depth.txt").read_text().split() == ["false", "NaN", "NaN"]  # a 2-D model's pose draws as before


def test_coordinates_dequantized_with_another_scale_give_other_joints(recorded):
    """The comparison can fail: Python reading the int8 coordinates with a 10% larger scale disagrees with the app."""
    folder, expected = recorded["coords_int8"]
    spec = PACKAGES["coords_int8"].spec()
    _, scale, zero = PACKAGES["coords_int8"].io
    for stem, (output, w, h) in expected.items():
        q = np.round(output / np.float32(scale)) + zero
        wrong = ((q - zero) * np.float32(scale * 1.1)).astype(np.float32)
        _, kotlin = read_people(folder / f"out_{stem}.txt")
        joints, depth = python_joints(spec, wrong, w, h)
        assert np.abs(kotlin[:, :2] - joints[:, :2]).max() > 1.0
        assert np.abs(kotlin[:, 3] - depth).max() > 1.0


# ---------------------------------------------------------------------------- Swift


def test_the_swift_of_a_volumetric_app_parses_and_mirrors_the_kotlin(tmp_path):
    spec = volumetric_spec("coords", root_depth_mm=5000.0)
    model = AppModel("ios", "vol3d", "one person in 3-D", spec, "coreml", "coreml/vol3d.mlpackage",
                     {"project": None, "artifact": None, "name": "Volume", "bundle_id": "com.example.Volume"})
    write_app(model, tmp_path / "ios")
    sources = sorted((tmp_path / "ios").rglob("*.swift"))
    assert {p.name for p in sources} >= {"VolumePoseDecoder.swift", "VolumeDecoder.swift", "SkeletonOverlay.swift", "PoseTypes.swift"}
    for source in sources:
        assert tc.syntax_problems(source.read_text(encoding="utf-8"), "swift") == [], source
    generated = tmp_path / "ios" / "PoseDemo" / "Generated"
    config = (generated / "PoseModelConfig.swift").read_text()
    assert "static let decoder: any PeopleDecoder.Type = VolumePoseDecoder.self\n" in config
    assert 'OutputTensor(name: "coords", height: 1, width: 17, channels: 3)' in config
    swift = (generated / "VolumePoseDecoder.swift").read_text()
    assert "VolumeDecoder.decodeCoords(" in swift and "VolumeDecoder.decode(" not in swift
    assert "static let assumedRootDepthMm: Double? = 5000.0\n" in (generated / "VolumeDecoder.swift").read_text()
    kotlin_model = AppModel("android", "vol3d", "", spec, "tflite/fp32", "tflite/vol3d_fp32.tflite",
                            {"project": None, "package": "com.example.volume", "artifact": None, "name": "Volume"})
    kotlin = next(t for p, t in glue_files(kotlin_model).items() if p.endswith("/VolumePoseDecoder.kt"))
    for swift_word, kotlin_word in (("decodeCoords", "decodeCoords"), ("assumedRootDepthMm", "ASSUMED_ROOT_DEPTH_MM"),
                                    ("keypointNames", "KEYPOINT_NAMES"), ("geometry.offsetY", "geometry.offsetY"),
                                    ("score: 1", "1f"), ("depthMm: Float(person.depth[j])", "person.depth[j].toFloat()")):
        assert swift_word in swift and kotlin_word in kotlin, (swift_word, kotlin_word)
    # the overlay and the keypoint types mirror the Android app's depth colouring
    overlay = (tmp_path / "ios" / "PoseDemo" / "SkeletonOverlay.swift").read_text()
    android = (REPO / "templates/apps/android/app/src/main/java/{{ package_path }}/OverlayView.kt.j2").read_text()
    for swift_word, kotlin_word in (("hasDepth", "hasDepth"), ("depthShare(k.depthMm)", "depthShare(k.depthMm)"),
                                    ("farHue = 240.0 / 360.0", "FAR_HUE: Float = 240f"), ("func depthColor(", "fun depthColor(")):
        assert swift_word in overlay and kotlin_word in android, (swift_word, kotlin_word)
    types = (generated / "PoseTypes.swift").read_text()
    assert "func depthShare(_ depthMm: Float) -> Float" in types and "var hasDepth: Bool" in types
    camera = (tmp_path / "ios" / "PoseDemo" / "CameraModel.swift").read_text()
    assert "shown.depthMm = pose.keypoints[i].depthMm" in camera  # steadying keeps the depth
    assert re.search(r"depthMm: k\.depthMm", (generated / "PoseMath.swift").read_text())  # the view mapping keeps it too
    estimator = (generated / "PoseEstimator.swift").read_text()
    assert "shape.insert(1, at: 1)" in estimator  # Core ML's [1, J, 3] read as OutputTensor's [1, 1, J, 3]
