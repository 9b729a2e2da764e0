"""One real Kotlin compilation shared by the code-generation tests.

The session compiles, in a single kotlinc run (it takes ~15 s): the Android demo app as
`mdeploy scaffold android` writes it for a recipe full of hostile strings (and with a MACE
export, so the MACE wrapper is in), three more glue packages rendered for specs that
differ in every preprocessing and decoding setting (resize mode, channel order, range,
mean/std, quantized input and output, smoothing, sub-pixel refinement, stride), a JVM
harness that runs their pure math on test vectors, and a batch of escaped strings; and for
the multi-person (PAF) family, the demo app written for a PAF model's spec plus a second
glue package of that model with int8 outputs (each its own scale) and a letterboxed input,
with a harness that runs the estimator's post-inference path (output buffers -> people).
"""

from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.codegen import toolchain as tc

HOSTILE_DESCRIPTION = 'He said "hi" $x ${y} \\(z) */ /* \n\ttab \\ backslash \u00e9\u4e2d\U0001f600 \\u0041 end'
HOSTILE_NAME = "@Pose's \"demo\" <&> \\ ?"


def hostile_recipe(folder: Path, app_project: Path, ios_project: Path | None = None) -> Path:
    """A recipe whose free-text values contain everything that can break a string literal."""
    import json

    text = textwrap.dedent(
        f"""\
        name: hostile_demo
        description: {json.dumps(HOSTILE_DESCRIPTION, ensure_ascii=False)}
        model:
          arch: tiny_cpm
          input: {{size: [64, 64], channels: bgr, range: [0, 255], mean: [1, 2, 3], std: [2, 2, 2], resize: letterbox}}
          keypoints: aic14
          decode: {{smooth_sigma: 1.0}}
        data:
          train: {{synthetic: {{count: 8}}}}
        export:
          tflite: {{variants: [fp32]}}
          mace: {{runtime: cpu+gpu}}
          coreml: {{minimum_deployment_target: iOS17}}
        app:
          android: {{project: {json.dumps(str(app_project))}, package: com.example.hostileapp, name: {json.dumps(HOSTILE_NAME)}}}
          ios: {{project: {json.dumps(str(ios_project or folder / "ios"))}, name: {json.dumps(HOSTILE_NAME)}, bundle_id: org.example.Hostile-Demo}}
        """
    )
    path = folder / "hostile.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# Variants of the model interface: each is rendered into its own package and exercised by the harness.
VARIANTS = {
    "stretch": {
        "size": (48, 40), "channels": "rgb", "range": (-1.0, 1.0), "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
        "resize": "stretch", "stride": 2, "sigma": 1.0, "subpixel": True, "io": None,
    },
    "letterbox": {
        "size": (32, 48), "channels": "bgr", "range": (0.0, 255.0), "mean": (123.7, 116.3, 103.5), "std": (58.4, 57.1, 57.4),
        "resize": "letterbox", "stride": 4, "sigma": 0.0, "subpixel": False, "io": None,
    },
    "crop": {
        "size": (40, 32), "channels": "rgb", "range": (0.0, 1.0), "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
        "resize": "crop", "stride": 2, "sigma": 0.6, "subpixel": True,
        "io": {"input": ("uint8", 1 / 255, 0), "output": ("int8", 0.00392156862745098, -128)},
    },
    "pefm": {  # the PoseEstimationForMobile Android demo's decode rules (preset pefm_android)
        "size": (40, 40), "channels": "bgr", "range": (0.0, 255.0), "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
        "resize": "stretch", "stride": 2, "sigma": 0.0, "subpixel": False, "io": None, "preset": "pefm_android",
    },
}


def variant_spec(name: str):
    from mdeploy.keypoints import get_keypoint_set
    from mdeploy.spec import DecodeSettings, ModelSpec, Preprocessing, TensorInfo

    v = VARIANTS[name]
    h, w = v["size"]
    kps = get_keypoint_set("aic14")
    return ModelSpec(
        name=f"variant_{name}",
        input=TensorInfo("image", (1, h, w, 3)),
        output=TensorInfo("heatmaps", (1, h // v["stride"], w // v["stride"], len(kps))),
        preprocessing=Preprocessing((h, w), v["channels"], v["range"], v["mean"], v["std"], v["resize"]),
        keypoints=kps,
        output_stride=v["stride"],
        decode=DecodeSettings(v["sigma"], v["subpixel"], 0.2, v.get("preset", "mdeploy")),
    )


# The multi-person (PAF) model the app tests render for: tf-openpose's mobilenet_thin at its
# release size (the recorded release outputs have this grid). "app" is a scaffolded demo app
# with float outputs; "int8" glue only, int8 outputs with different scales and zero points.
PAF_INPUT_HW = (368, 432)
PAF_PACKAGES = {
    "app": {"package": "com.example.multipose", "resize": "stretch", "io": None},
    "int8": {"package": "mdeploy.multi.int8", "resize": "letterbox",
             "io": {"heatmaps": ("int8", 0.0041, -120), "pafs": ("int8", 0.0087, 3)}},
}


def paf_spec(resize: str = "stretch"):
    """The ModelSpec of an imported mobilenet_thin (family paf), as its build writes it."""
    from mdeploy.evaluate.paf import PafSettings
    from mdeploy.keypoints import TF_OPENPOSE_COCO18, get_keypoint_set
    from mdeploy.spec import ModelSpec, Preprocessing, TensorInfo

    h, w = PAF_INPUT_HW
    grid = (h // 8, w // 8)
    return ModelSpec(
        name="multipose",
        input=TensorInfo("image", (1, h, w, 3)),
        output=TensorInfo("heatmaps", (1, *grid, TF_OPENPOSE_COCO18.heatmaps)),
        preprocessing=Preprocessing((h, w), "bgr", (0.0, 255.0), resize=resize),
        keypoints=get_keypoint_set("coco18"),
        output_stride=8,
        task="pose_paf",
        family="paf",
        extra_outputs=(TensorInfo("pafs", (1, *grid, TF_OPENPOSE_COCO18.pafs)),),
        head={"layout": TF_OPENPOSE_COCO18.to_json(), "settings": PafSettings().to_json()},
    )


def paf_artifact(name: str) -> dict:
    io = PAF_PACKAGES[name]["io"] or {}
    entry = {f"output:{tensor}": {"dtype": d, "shape": [], "scale": sc, "zero_point": z} for tensor, (d, sc, z) in io.items()}
    return {"details": {"io": entry}} if entry else {}


def paf_app_model(name: str):
    """The AppModel of PAF package `name` (as the app step of a build of that model would make it)."""
    from mdeploy.codegen.apps import AppModel

    settings = {"project": None, "package": PAF_PACKAGES[name]["package"], "artifact": "tflite/fp32", "name": "Multi Pose"}
    return AppModel("android", "multipose", "mobilenet_thin, every person", paf_spec(PAF_PACKAGES[name]["resize"]),
                    "tflite/fp32", "tflite/multipose_fp32.tflite", settings, details=paf_artifact(name))


PEOPLE_HARNESS = """\
package {package}

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** Test harness: the estimator's path after inference, on recorded output buffers in `dir`. */
object {name} {{
    fun run(dir: File) {{
        val values = PoseModelConfig.OUTPUTS.map {{ FloatArray(it.size) }}
        for (f in dir.listFiles()!!.filter {{ it.name.startsWith("frame_") }}.sortedBy {{ it.name }}) {{
            val (w, h) = f.readText().trim().split(" ").map {{ it.toInt() }}
            val stem = f.name.removePrefix("frame_").removeSuffix(".txt")
            val buffers =
                PoseModelConfig.OUTPUTS.map {{ tensor ->
                    val bytes = File(dir, tensor.name + "_" + stem + ".bin").readBytes()
                    val buffer = ByteBuffer.allocateDirect(bytes.size).order(ByteOrder.nativeOrder())
                    buffer.put(bytes)
                    buffer
                }}
            val people = ModelOutputs.people(buffers, values, Preprocess.geometry(w, h))
            {each}
        }}
        {after}
    }}
}}
"""


def people_harness(package: str, name: str, each: str, after: str = "") -> str:
    """Kotlin of a harness object `name`: for every recorded frame in `dir`, the estimator's
    people from its output buffers, then `each` (Kotlin reading `people`, `dir`, `stem`)."""
    return PEOPLE_HARNESS.format(package=package, name=name, each=each, after=after)


MULTI_EACH = ('val lines = people.map { pose -> pose.keypoints.joinToString(" ") { "${it.x} ${it.y} ${it.score}" } }\n'
              '            File(dir, "out_" + stem + ".txt").writeText(lines.joinToString("\\n") + "\\n")')


def variant_artifact(name: str) -> dict:
    io = VARIANTS[name]["io"]
    if io is None:
        return {}
    entry = {}
    for kind, tensor in (("input", "image"), ("output", "heatmaps")):
        dtype, scale, zero = io[kind]
        entry[f"{kind}:{tensor}"] = {"dtype": dtype, "shape": [], "scale": scale, "zero_point": zero}
    return {"details": {"io": entry}}


HARNESS = """\
package {package}

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** Test harness: runs the generated pure math on the vectors in `dir`, writes the results beside them. */
object Harness {{
    private fun floats(line: String) = line.trim().split(" ").map {{ it.toFloat() }}.toFloatArray()

    fun run(dir: File) {{
        for (f in dir.listFiles()!!.filter {{ it.name.startsWith("image_") }}) {{
            val lines = f.readLines()
            val (w, h) = lines[0].trim().split(" ").map {{ it.toInt() }}
            val argb = lines[1].trim().split(" ").map {{ it.toLong().toInt() }}.toIntArray()
            val box = if (lines.size > 2 && lines[2].isNotBlank()) lines[2].trim().split(" ").map {{ it.toDouble() }}.toDoubleArray() else null
            val g = Preprocess.geometry(w, h, box)
            val values = FloatArray(PoseModelConfig.INPUT_WIDTH * PoseModelConfig.INPUT_HEIGHT * 3)
            Preprocess.normalize(Preprocess.warp(argb, w, h, g), values)
            val q = values.map {{ Preprocess.quantize(it, PoseModelConfig.INPUT_SCALE, PoseModelConfig.INPUT_ZERO_POINT, PoseModelConfig.INPUT_UNSIGNED) }}
            File(dir, "out_" + f.name).writeText(
                values.joinToString(" ") + "\\n" + q.joinToString(" ") + "\\n" + "${{g.scaleX}} ${{g.scaleY}} ${{g.offsetX}} ${{g.offsetY}}\\n",
            )
        }}
        for (f in dir.listFiles()!!.filter {{ it.name.startsWith("heatmap_") }}) {{
            val lines = f.readLines()
            val (w, h) = lines[0].trim().split(" ").map {{ it.toInt() }}
            // as the interpreter leaves the output: float32 or 8-bit values in a native-order buffer
            val tensor = PoseModelConfig.OUTPUTS[0]
            val buffer = ByteBuffer.allocateDirect(tensor.size * (if (tensor.quantized) 1 else 4)).order(ByteOrder.nativeOrder())
            if (lines[1].startsWith("q ")) {{
                lines[1].substring(2).trim().split(" ").forEach {{ buffer.put(it.toInt().toByte()) }}
            }} else {{
                buffer.asFloatBuffer().put(floats(lines[1]))
            }}
            val people = ModelOutputs.people(listOf(buffer), listOf(FloatArray(tensor.size)), Preprocess.geometry(w, h))
            require(people.size == 1) {{ "a single-person model gives one person, not ${{people.size}}" }}
            val points = people[0].keypoints.map {{ floatArrayOf(it.x, it.y, it.score) }}
            File(dir, "out_" + f.name).writeText(points.joinToString("\\n") {{ it.joinToString(" ") }} + "\\n")
        }}
        val frames = File(dir, "frames.txt")
        if (frames.exists()) {{
            val smoother = PoseSmoother()
            val out = frames.readLines().filter {{ it.isNotBlank() }}.map {{ line ->
                val v = floats(line)
                val points = Array(v.size / 3) {{ k -> floatArrayOf(v[3 * k], v[3 * k + 1], v[3 * k + 2]) }}
                smoother.smooth(points).joinToString(" ") {{ it.joinToString(" ") }}
            }}
            File(dir, "out_frames.txt").writeText(out.joinToString("\\n") + "\\n")
        }}
    }}
}}
"""


def adversarial_strings(count: int, seed: int = 7) -> list[str]:
    """Strings built from everything that ends, interpolates or breaks a literal or a comment."""
    pieces = ['"', "\\", "$", "${", "$x", "\\(", ")", "*/", "/*", "\n", "\r", "\t", "\0", "\x07", "'", "`", "{", "}",
              "\\u0041", "\\n", "é", "中", "\U0001f600", "\u2028", "\ufeff", "#", "%", "a", "Z", " ", "\"\"\""]
    rng = random.Random(seed)
    out = ["", '"', "\\", "$", "${x}", "\\(x)", "*/", '"""']
    while len(out) < count:
        out.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))))
    return out


@dataclass
class JvmBuild:
    """Results of the shared compilation."""

    root: Path
    app: Path  # the scaffolded hostile-recipe Android app
    paf_app: Path  # the Android app written for a multi-person (PAF) model
    recipe: Path
    classes: Path
    stubs: Path
    compile_output: str
    escaped: list[str]  # the values compiled into EscapeBatch, in order

    def java(self, *args: str) -> str:
        stdlib = tc.KOTLINC.parent.parent / "lib" / "kotlin-stdlib.jar"
        import os

        cp = os.pathsep.join(str(p) for p in (self.classes, self.stubs, stdlib))
        return tc.run([tc._tool("java"), "-cp", cp, *args], timeout=300).stdout


@pytest.fixture(scope="session")
def jvm_build(tmp_path_factory) -> JvmBuild:
    from mdeploy.codegen import escape
    from mdeploy.codegen.apps import app_model, glue_files, write_app
    from mdeploy.codegen.glue import context, render_glue
    from mdeploy.recipe import load_recipe

    root = tmp_path_factory.mktemp("jvm")
    app = root / "hostile_app"
    recipe_path = hostile_recipe(root, app)
    recipe = load_recipe(recipe_path)
    write_app(app_model(recipe, "android", None), app)

    sources = sorted(app.rglob("*.kt"))
    r_file = root / "R.java"
    r_file.write_text(tc.r_java(app, "com.example.hostileapp"), encoding="utf-8")
    sources.append(r_file)

    src = root / "harness_src"
    for name in VARIANTS:
        package = f"mdeploy.variant.{name}"
        ctx = context(variant_spec(name), name=f"variant_{name}", description=name, package=package,
                      model_file=f"{name}.tflite", artifact=variant_artifact(name))
        for rel, text in render_glue("android", ctx).items():
            path = src / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            sources.append(path)
        harness = src / package.replace(".", "/") / "generated" / "Harness.kt"
        harness.write_text(HARNESS.format(package=f"{package}.generated"), encoding="utf-8")
        sources.append(harness)

    # the multi-person family: a demo app of a PAF model and an int8-output glue package
    paf_app = root / "multipose_app"
    for name in PAF_PACKAGES:
        model = paf_app_model(name)
        package = PAF_PACKAGES[name]["package"]
        if name == "app":
            write_app(model, paf_app)
            sources.extend(sorted(paf_app.rglob("*.kt")))
            r_paf = root / "R_multipose.java"
            r_paf.write_text(tc.r_java(paf_app, package), encoding="utf-8")
            sources.append(r_paf)
            folder = paf_app / "app" / "src" / "main" / "java" / package.replace(".", "/") / "generated"
        else:
            for rel, text in glue_files(model).items():
                path = src / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                sources.append(path)
            folder = src / "app" / "src" / "main" / "java" / package.replace(".", "/") / "generated"
        harness = src / f"multi_{name}" / "MultiHarness.kt"
        harness.parent.mkdir(parents=True, exist_ok=True)
        harness.write_text(people_harness(f"{package}.generated", "MultiHarness", MULTI_EACH), encoding="utf-8")
        sources.append(harness)
        assert folder.is_dir(), folder

    escaped = adversarial_strings(300)
    batch = src / "mdeploy" / "harness" / "Main.kt"
    batch.parent.mkdir(parents=True, exist_ok=True)
    values = ",\n".join(f"        {escape.kotlin_string(s)}" for s in escaped)
    variants = "\n".join(
        f'        "{name}" -> mdeploy.variant.{name}.generated.Harness.run(java.io.File(args[1]))' for name in VARIANTS
    )
    variants += "\n" + "\n".join(
        f'        "multi_{name}" -> {p["package"]}.generated.MultiHarness.run(java.io.File(args[1]))' for name, p in PAF_PACKAGES.items()
    )
    batch.write_text(
        "package mdeploy.harness\n\n"
        "val VALUES: Array<String> = arrayOf(\n" + values + ",\n)\n\n"
        "fun units(s: String): String = s.map { it.code.toString(16) }.joinToString(\",\")\n\n"
        "fun main(args: Array<String>) {\n"
        "    when (args[0]) {\n"
        '        "escape" -> VALUES.forEach { println(units(it)) }\n'
        '        "config" -> {\n'
        "            val c = com.example.hostileapp.generated.PoseModelConfig\n"
        "            println(units(c.DESCRIPTION))\n"
        "            println(units(c.RECIPE))\n"
        "            println(units(c.MODEL_ASSET))\n"
        "            println(units(com.example.hostileapp.generated.MaceJni.MODEL_TAG))\n"
        "        }\n" + variants + "\n"
        "    }\n}\n",
        encoding="utf-8",
    )
    sources.append(batch)

    stubs = tc.compile_stubs(root / "stubs")
    classes = root / "classes"
    proc = tc.kotlinc(sources, [stubs], classes)
    return JvmBuild(root, app, paf_app, recipe_path, classes, stubs, proc.stdout + proc.stderr, escaped)
