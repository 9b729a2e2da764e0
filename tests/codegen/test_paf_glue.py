"""The generated PAF decoders (templates/glue/*/PafDecoder.*.j2, mdeploy.codegen.paf_glue).

- rendered from data: the layout's limb table and channel pairs, the settings and the
  evaluator's smoother taps appear in the Kotlin and the Swift as numbers;
- the Kotlin compiles with the real kotlinc, passes ktlint, and on the JVM finds the people
  mdeploy's Python decoder (`decode_people`) finds: the same people in the same order, the
  same parts within 1e-3 input pixels, the same scores. Inputs: the real tf-openpose
  `mobilenet_thin` outputs on the 4 COCO photos of ../shared (recorded as .npy; that part
  skips without ../shared) and hand-made people with noise (always), for the release's
  settings and a second, different set (non-integer upsampling, other thresholds), through
  both entry points (one concatenated output; heatmaps and PAFs as separate outputs);
- the comparison can fail: Python with the release's settings disagrees with the Kotlin
  decoder rendered for the other settings;
- the Swift parses with tree-sitter-swift and mirrors the Kotlin (functions, constants).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mdeploy.codegen.paf_glue import paf_context, render_paf_decoder
from mdeploy.errors import InputError
from mdeploy.evaluate.paf import PafSettings, decode_people, smoother_taps, split_output
from mdeploy.keypoints import TF_OPENPOSE_COCO18, PafLayout
from tests.codegen import toolchain as tc
from tests.evaluate.conftest import THIN_INPUT_HW, release_available, run_thin_release
from tests.helpers import REPO

VARIANTS = {
    "release": PafSettings(),
    "fork": PafSettings(upsample=2.5, vector_count=6, min_score=0.3, heat=0.08, min_parts=3),
}

HARNESS = """\
package {package}

import java.io.File

/** Test harness: decodes the recorded outputs in `dir` with this package's PafDecoder. */
object PafHarness {{
    fun run(
        dir: File,
        scaleX: Double,
        scaleY: Double,
    ) {{
        val files = dir.listFiles()!!.sortedBy {{ it.name }}
        for (f in files.filter {{ it.name.startsWith("output_") }}) {{
            val (shape, data) = mdeploy.pafharness.readNpy(f)
            write(PafDecoder.decode(data, shape[0], shape[1], scaleX, scaleY), File(dir, "{variant}_" + f.name + ".txt"))
        }}
        for (f in files.filter {{ it.name.startsWith("heat_") }}) {{
            val (shape, heat) = mdeploy.pafharness.readNpy(f)
            val (_, paf) = mdeploy.pafharness.readNpy(File(dir, "paf_" + f.name.removePrefix("heat_")))
            val people = PafDecoder.decodeSeparate(heat, paf, shape[0], shape[1], shape[2], scaleX, scaleY)
            write(people, File(dir, "{variant}_" + f.name + ".txt"))
        }}
    }}

    private fun write(
        people: List<PafPerson>,
        file: File,
    ) {{
        val lines = ArrayList<String>()
        for (p in people) {{
            lines.add("person " + p.score + " " + p.partCount)
            for (k in p.present.indices) {{
                if (p.present[k]) {{
                    lines.add("$k " + p.keypoints[k][0] + " " + p.keypoints[k][1] + " " + p.keypoints[k][2])
                }}
            }}
        }}
        file.writeText(lines.joinToString("\\n") + "\\n")
    }}
}}
"""

MAIN = """\
package mdeploy.pafharness

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** A little-endian float32, C-order .npy file -> (shape, values). */
fun readNpy(file: File): Pair<IntArray, FloatArray> {
    val bytes = file.readBytes()
    val le = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN)
    val start = if (bytes[6].toInt() == 1) 10 else 12
    val length = if (bytes[6].toInt() == 1) le.getShort(8).toInt() and 0xFFFF else le.getInt(8)
    val header = String(bytes, start, length, Charsets.ISO_8859_1)
    require(header.contains("'<f4'") && header.contains("'fortran_order': False")) { header }
    val dims = Regex("'shape': \\\\(([^)]*)\\\\)").find(header)!!.groupValues[1]
    val shape = dims.split(",").map { it.trim() }.filter { it.isNotEmpty() }.map { it.toInt() }.toIntArray()
    val values = FloatArray(shape.fold(1) { a, b -> a * b })
    ByteBuffer.wrap(bytes, start + length, values.size * 4).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(values)
    return Pair(shape, values)
}

fun main(args: Array<String>) {
    val dir = File(args[1])
    val scaleX = args[2].toDouble()
    val scaleY = args[3].toDouble()
    when (args[0]) {
VARIANTS
    }
}
"""


@dataclass
class PafJvm:
    classes: Path
    sources: dict[str, Path]  # variant -> rendered PafDecoder.kt
    compile_output: str

    def run(self, variant: str, folder: Path, scale_x: float, scale_y: float) -> None:
        stdlib = tc.KOTLINC.parent.parent / "lib" / "kotlin-stdlib.jar"
        cp = os.pathsep.join(str(p) for p in (self.classes, stdlib))
        tc.run([tc._tool("java"), "-cp", cp, "mdeploy.pafharness.MainKt", variant, str(folder), repr(scale_x), repr(scale_y)],
               timeout=300)


@pytest.fixture(scope="session")
def paf_jvm(tmp_path_factory) -> PafJvm:
    """Both variants' decoders, their harnesses and the main, compiled in one kotlinc run."""
    root = tmp_path_factory.mktemp("paf_jvm")
    src = root / "src"
    sources, rendered = [], {}
    for variant, settings in VARIANTS.items():
        package = f"mdeploy.paf.{variant}"
        for rel, text in render_paf_decoder("android", TF_OPENPOSE_COCO18, settings, package=package).items():
            path = src / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            sources.append(path)
            rendered[variant] = path
        harness = rendered[variant].parent / "PafHarness.kt"
        harness.write_text(HARNESS.format(package=f"{package}.generated", variant=variant), encoding="utf-8")
        sources.append(harness)
    dispatch = "\n".join(
        f'        "{v}" -> mdeploy.paf.{v}.generated.PafHarness.run(dir, scaleX, scaleY)' for v in VARIANTS
    )
    main = src / "mdeploy" / "pafharness" / "Main.kt"
    main.parent.mkdir(parents=True, exist_ok=True)
    main.write_text(MAIN.replace("VARIANTS", dispatch), encoding="utf-8")
    sources.append(main)
    proc = tc.kotlinc(sources, [], root / "classes")
    return PafJvm(root / "classes", rendered, proc.stdout + proc.stderr)


def read_people(path: Path) -> list[tuple[float, dict[int, np.ndarray]]]:
    people = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "person":
            people.append((float(fields[1]), {}))
        else:
            people[-1][1][int(fields[0])] = np.array(fields[1:], np.float64)
    return people


def assert_same_people(kotlin, python, where: str) -> None:
    assert len(kotlin) == len(python), f"{where}: {len(kotlin)} people in Kotlin, {len(python)} in Python"
    for i, ((score, parts), person) in enumerate(zip(kotlin, python)):
        assert set(parts) == set(np.nonzero(person.present)[0].tolist()), f"{where}: person {i} has other parts"
        for k, (x, y, s) in parts.items():
            px, py, ps = person.keypoints[k]
            assert abs(x - px) <= 1e-3 and abs(y - py) <= 1e-3, f"{where}: person {i} part {k} at {x, y}, Python {px, py}"
            assert s == pytest.approx(ps, abs=1e-6), f"{where}: person {i} part {k}"
        assert score == pytest.approx(person.score, abs=1e-5), f"{where}: person {i} score"


def synthetic_inputs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Hand-made people (tests/evaluate/test_paf's maps) with noise, and an empty scene."""
    from tests.evaluate.test_paf import PERSON, shifted, synthetic

    rng = np.random.default_rng(11)
    out = {}
    for name, people in (("two", [PERSON, shifted(PERSON, 14.0, 3.0)]),
                         ("three", [shifted(PERSON, -3.0, 2.0), shifted(PERSON, 9.0, 0.0), shifted(PERSON, 17.0, 9.0)])):
        heat, paf = synthetic(people, strength=0.8)
        heat = heat + rng.normal(0, 0.02, heat.shape).astype(np.float32)
        paf = paf + rng.normal(0, 0.05, paf.shape).astype(np.float32)
        out[name] = (heat.astype(np.float32), paf.astype(np.float32))
    out["noise"] = (rng.random((30, 30, 19), np.float32) * 0.2, rng.normal(0, 0.3, (30, 30, 38)).astype(np.float32))
    return out


def record(folder: Path, inputs: dict[str, tuple[np.ndarray, np.ndarray]], separate: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (heat, paf) in inputs.items():
        np.save(folder / f"output_{name}.npy", np.concatenate([heat, paf], axis=2).astype(np.float32))
        if separate:
            np.save(folder / f"heat_{name}.npy", heat.astype(np.float32))
            np.save(folder / f"paf_{name}.npy", paf.astype(np.float32))


def compare(paf_jvm: PafJvm, folder: Path, inputs, size_hw: tuple[int, int], separate: bool) -> int:
    """Run every variant's Kotlin decoder on the recorded inputs and compare with Python; the people found."""
    found = 0
    for variant, settings in VARIANTS.items():
        paf_jvm.run(variant, folder, float(size_hw[1]), float(size_hw[0]))
        for name, (heat, paf) in inputs.items():
            python = decode_people(heat, paf, settings, input_size=size_hw)
            assert_same_people(read_people(folder / f"{variant}_output_{name}.npy.txt"), python, f"{variant} {name}")
            if separate:
                assert_same_people(read_people(folder / f"{variant}_heat_{name}.npy.txt"), python, f"{variant} {name} (separate)")
            found += len(python)
    return found


# ------------------------------------------------------------------- rendering from data


def test_the_decoders_are_rendered_from_the_layout_and_the_settings():
    ctx = paf_context(TF_OPENPOSE_COCO18, PafSettings(), package="com.example.app")
    assert ctx["generated_package"] == "com.example.app.generated" and ctx["layout"]["limbs"][0] == [1, 2]
    # a layout with another limb order and channel table, and other settings, show up as numbers
    layout = PafLayout(
        name="reordered", keypoints="coco18", limbs=tuple(reversed(TF_OPENPOSE_COCO18.limbs)),
        paf_channels=tuple(reversed(TF_OPENPOSE_COCO18.paf_channels)), background=None, new_person_limbs=15, stride=4,
    )
    settings = PafSettings(upsample=3.0, heat=0.125, vector_count=5, samples=7, min_parts=2, min_score=0.25, smooth_size=9, smooth_nsig=2.0)
    (kotlin,) = render_paf_decoder("android", layout, settings, package="com.example.app").values()
    limbs = re.findall(r"intArrayOf\((\d+), (\d+)\)", kotlin)
    assert [tuple(map(int, pair)) for pair in limbs] == list(layout.limbs)
    pafx = re.search(r"PAF_X: IntArray = intArrayOf\(([^)]*)\)", kotlin).group(1)
    assert [int(v) for v in pafx.split(",")] == [x for x, _ in layout.paf_channels]
    for const, value in (("HEATMAP_CHANNELS: Int", "18"), ("OUTPUT_CHANNELS: Int", "56"), ("NEW_PERSON_LIMBS: Int", "15"),
                         ("UPSAMPLE: Double", "3.0"), ("HEAT_THRESHOLD: Float", "0.125f"), ("VECTOR_COUNT: Int", "5"),
                         ("SAMPLES: Int", "7"), ("MIN_PARTS: Int", "2"), ("MIN_SCORE: Double", "0.25"), ("OUTPUT_STRIDE: Int", "4")):
        assert f"const val {const} = {value}\n" in kotlin, const
    taps = re.search(r"SMOOTHER_TAPS: DoubleArray =\s*doubleArrayOf\(([^)]*)\)", kotlin).group(1)
    np.testing.assert_array_equal([float(t) for t in taps.split(",") if t.strip()], smoother_taps(9, 2.0))
    (swift,) = render_paf_decoder("ios", layout, settings).values()
    assert "static let newPersonLimbs = 15\n" in swift and "static let heatThreshold: Float = 0.125\n" in swift
    swift_taps = re.search(r"smootherTaps: \[Double\] = \[([^\]]*)\]", swift).group(1)
    np.testing.assert_array_equal([float(t) for t in swift_taps.split(",") if t.strip()], smoother_taps(9, 2.0))


def test_bad_render_requests_are_refused():
    with pytest.raises(ValueError, match="unknown platform"):
        render_paf_decoder("web", package="com.example.app")
    with pytest.raises(ValueError, match="needs a package"):
        render_paf_decoder("android")
    with pytest.raises(InputError):
        render_paf_decoder("android", package="com.example.1app")


# ------------------------------------------------------------------- Swift


def test_swift_decoder_parses_and_mirrors_the_kotlin():
    (swift,) = render_paf_decoder("ios").values()
    (kotlin,) = render_paf_decoder("android", package="com.example.app").values()
    assert tc.syntax_problems(swift, "swift") == []
    kt_funcs = set(re.findall(r"fun (\w+)\(", kotlin))
    swift_funcs = set(re.findall(r"func (\w+)\(", swift))
    assert kt_funcs == swift_funcs and len(kt_funcs) >= 10, (kt_funcs, swift_funcs)
    kt_consts = re.findall(r"(?:const )?val ([A-Z][A-Z_]+):", kotlin)
    for const in kt_consts:
        camel = const.split("_")[0].lower() + "".join(w.title() for w in const.split("_")[1:])
        assert f"static let {camel}" in swift, const
    assert len(kt_consts) >= 15


# ------------------------------------------------------------------- Kotlin on the JVM


def test_kotlin_decoder_compiles_without_warnings_and_passes_ktlint(paf_jvm, tmp_path):
    assert "error:" not in paf_jvm.compile_output
    assert tc.kotlin_warnings(paf_jvm.compile_output) == []
    shutil.copy(REPO / "templates" / "apps" / "android" / ".editorconfig", tmp_path / ".editorconfig")
    files = []
    for variant, path in paf_jvm.sources.items():
        files.append(Path(variant) / "PafDecoder.kt")
        (tmp_path / variant).mkdir()
        shutil.copy(path, tmp_path / files[-1])
    proc = tc.ktlint(files, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kotlin_finds_the_python_people_in_hand_made_maps(paf_jvm, tmp_path):
    inputs = synthetic_inputs()
    record(tmp_path, inputs, separate=True)
    found = compare(paf_jvm, tmp_path, inputs, (240, 240), separate=True)
    assert found >= 8  # 2 + 3 people per variant; noise finds nobody or a few


@pytest.mark.skipif(not release_available(), reason="tf-openpose's release or the real photos are not here: ../shared is absent")
def test_kotlin_finds_the_python_people_in_the_release_outputs(paf_jvm, tmp_path):
    pytest.importorskip("tensorflow")
    outputs = run_thin_release().outputs
    inputs = {Path(name).stem: split_output(out) for name, out in outputs.items()}
    record(tmp_path, inputs, separate=True)
    found = compare(paf_jvm, tmp_path, inputs, THIN_INPUT_HW, separate=True)
    assert found >= 24  # 12 people with the release's settings, as many or more with the other


def test_the_comparison_fails_for_other_settings(paf_jvm, tmp_path):
    """Python with the release's settings against the Kotlin rendered with the other settings disagrees."""
    inputs = synthetic_inputs()
    if release_available() and importlib.util.find_spec("tensorflow") is not None:
        inputs.update({Path(n).stem: split_output(o) for n, o in run_thin_release().outputs.items()})
    record(tmp_path, inputs, separate=False)
    paf_jvm.run("fork", tmp_path, 432.0, 368.0)
    failures = 0
    for name, (heat, paf) in inputs.items():
        try:
            assert_same_people(read_people(tmp_path / f"fork_output_{name}.npy.txt"), decode_people(heat, paf, input_size=(368, 432)), name)
        except AssertionError:
            failures += 1
    assert failures >= 2, failures
