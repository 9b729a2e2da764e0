"""The generated volume decoders (templates/glue/*/VolumeDecoder.*.j2, mdeploy.codegen.volume_glue).

- rendered from data: joints, depth bins, grid, channel order, depth range, cell origin,
  input size, resize mode and joint names appear in the Kotlin and the Swift as values, and
  the channel indexing follows the layout's order;
- the Kotlin compiles with the real kotlinc (one run for every variant), passes ktlint, and
  on the JVM decodes recorded volumes as mdeploy's Python decoder (`volumetric.decode`) does:
  the soft-argmax, the joints in source pixels (1e-3 px), the depths (1e-2 mm) and the
  back-projection (1e-2 mm), through the crop box the decoder maps itself; the baked-in
  entry point ([1, J, 3]) agrees with `decode_coords`; missing camera parameters or root
  depth are refused on both sides. Volumes: sharp synthetic peaks (scores down to -1e5, which
  only a max-subtracted softmax survives), broad peaks and random scores, for the real LPSKI
  shape (32 x 32 x 21*32, MuCo-21), a depth-major Human3.6M-17 layout with corner cells and
  a letterbox crop, and a small unnamed one with a cover crop;
- the comparison can fail: the Kotlin rendered for another depth range and cell origin
  (same shapes) disagrees with Python for the LPSKI layout;
- the Swift parses with tree-sitter-swift and mirrors the Kotlin (functions, constants, values).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mdeploy.codegen.volume_glue import render_volume_decoder, volume_context
from mdeploy.errors import InputError
from mdeploy.evaluate.volumetric import VolumeLayout, decode, decode_coords, soft_argmax
from mdeploy.keypoints import get_keypoint_set
from mdeploy.spec import Preprocessing
from tests.codegen import toolchain as tc
from tests.helpers import REPO


@dataclass(frozen=True)
class Variant:
    layout: VolumeLayout
    keypoints: str | None
    input_size: tuple[int, int]  # (height, width)
    resize: str

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.input_size, "rgb", (0.0, 1.0), resize=self.resize)


VARIANTS = {
    "lpski": Variant(VolumeLayout(21, 32, 32, 32), "muco21", (256, 256), "stretch"),
    # the same shapes with another depth range and cell origin: the comparison must fail against "lpski"
    "wide": Variant(VolumeLayout(21, 32, 32, 32, depth_range_mm=3000.0, cell_origin="corner"), "muco21", (256, 256), "stretch"),
    "h36m": Variant(VolumeLayout(17, 8, 12, 10, order="depth_major", depth_range_mm=1500.0, cell_origin="corner"), "h36m17",
                    (96, 80), "letterbox"),
    "small": Variant(VolumeLayout(2, 3, 4, 5, depth_range_mm=2500.0), None, (16, 20), "crop"),
}

# (name, box in source pixels, root depth mm, focal, principal, back-project); None = not given
OPTIONS = (
    ("plain", None, None, None, None, False),
    ("root", (310.5, 122.0, 420.0, 380.0), 4870.0, None, None, False),
    ("camera", (120.25, 64.0, 260.0, 300.5), 5230.5, (1145.05, 1143.78), (512.54, 515.45), True),
    ("nofocal", (120.25, 64.0, 260.0, 300.5), 5230.5, None, (512.54, 515.45), True),
    ("noroot", (120.25, 64.0, 260.0, 300.5), None, (1145.05, 1143.78), (512.54, 515.45), True),
)

HARNESS = """\
package {package}

import java.io.File

/** Test harness: decodes the volumes and coordinates recorded in `dir` with this package's VolumeDecoder. */
object VolumeHarness {{
    private fun doubles(field: String): DoubleArray? = if (field == "-") null else field.split(",").map {{ it.toDouble() }}.toDoubleArray()

    fun run(dir: File) {{
        val cache = HashMap<String, FloatArray>()
        for (line in File(dir, "cases.txt").readLines().filter {{ it.isNotBlank() }}) {{
            val f = line.trim().split(" ")
            val data = cache.getOrPut(f[1]) {{ mdeploy.volumeharness.readNpy(File(dir, f[1])).second }}
            val box = doubles(f[2])
            val root = doubles(f[3])?.get(0)
            val text =
                try {{
                    val affine = if (box == null) null else VolumeDecoder.cropAffine(box)
                    val back = f[6] == "1"
                    val pose =
                        if (f[1].startsWith("coords_")) {{
                            VolumeDecoder.decodeCoords(data, affine, root, doubles(f[4]), doubles(f[5]), back)
                        }} else {{
                            VolumeDecoder.decode(data, affine, root, doubles(f[4]), doubles(f[5]), back)
                        }}
                    val lines = ArrayList<String>()
                    lines.add("ok " + pose.relative + " " + (affine?.joinToString(" ") ?: "-"))
                    for (j in 0 until VolumeDecoder.JOINTS) {{
                        val cam = pose.camera?.get(j)?.joinToString(" ") ?: "-"
                        lines.add("${{pose.image[j][0]}} ${{pose.image[j][1]}} ${{pose.depth[j]}} $cam")
                    }}
                    lines.joinToString("\\n")
                }} catch (e: IllegalArgumentException) {{
                    "error " + e.message
                }}
            File(dir, "{variant}_" + f[0] + ".txt").writeText(text + "\\n")
        }}
        for (name in cache.keys.filter {{ it.startsWith("volume_") }}.sorted()) {{
            val xyz = VolumeDecoder.softArgmax(cache.getValue(name))
            File(dir, "{variant}_softargmax_" + name + ".txt").writeText(xyz.joinToString("\\n") {{ it.joinToString(" ") }} + "\\n")
        }}
    }}
}}
"""

MAIN = """\
package mdeploy.volumeharness

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

/** Pairs of arguments: a variant and the folder of recorded outputs it decodes. */
fun main(args: Array<String>) {
    for (k in args.indices step 2) {
        val dir = File(args[k + 1])
        when (args[k]) {
VARIANTS
        }
    }
}
"""


# ------------------------------------------------------------------- recorded outputs


def synthetic_volumes(layout: VolumeLayout, seed: int) -> dict[str, np.ndarray]:
    """[1, H, W, C] float32 outputs: sharp peaks (large scores), broad peaks, random scores."""
    rng = np.random.default_rng(seed)
    j, d, h, w = layout.joints, layout.depth, layout.height, layout.width
    zz, yy, xx = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    out = {}
    for name, sharpness, spread in (("sharp", 40.0, 0.6), ("broad", 1.0, 2.5)):
        centres = rng.uniform([0.5, 0.5, 0.5], [w - 1.5, h - 1.5, d - 1.5], size=(j, 3))
        vol = np.stack([-sharpness * ((xx - cx) ** 2 + (yy - cy) ** 2 + (zz - cz) ** 2) / (2 * spread**2) for cx, cy, cz in centres])
        out[name] = layout.to_output(vol[None].astype(np.float32))
    out["random"] = rng.normal(0.0, 3.0, (1, h, w, layout.channels)).astype(np.float32)
    return out


def option_fields(box, root, focal, principal, back) -> str:
    def field(values) -> str:
        return "-" if values is None else ",".join(repr(float(v)) for v in np.atleast_1d(values))

    return " ".join([field(box), field(root), field(focal), field(principal), "1" if back else "0"])


def record(folder: Path, variant: Variant, seed: int) -> dict[str, np.ndarray]:
    """Write the volumes, their soft-argmax as a baked-in model would output it, and the cases; return the volumes."""
    folder.mkdir(parents=True, exist_ok=True)
    volumes = synthetic_volumes(variant.layout, seed)
    lines = []
    for name, volume in volumes.items():
        np.save(folder / f"volume_{name}.npy", volume)
        coords = soft_argmax(variant.layout.volumes(volume)).astype(np.float32)  # [1, J, 3]
        np.save(folder / f"coords_{name}.npy", coords)
        for opt in OPTIONS:
            for kind in ("volume", "coords"):
                lines.append(f"{kind}_{name}_{opt[0]} {kind}_{name}.npy {option_fields(*opt[1:])}")
    (folder / "cases.txt").write_text("\n".join(lines) + "\n")
    return volumes


def python_decode(variant: Variant, kind: str, data: np.ndarray, option) -> object:
    _, box, root, focal, principal, back = option
    affine = variant.preprocessing().geometry(0, 0, box) if box is not None else None
    if kind == "volume":
        return decode(data, variant.layout, variant.input_size, affine, root_depth=root, focal=focal, principal=principal,
                      back_project=back)
    from mdeploy.camera import camera_from

    camera = camera_from(focal, principal) if back or (focal is not None and principal is not None) else None
    return decode_coords(data[0], variant.layout, variant.input_size, affine, root_depth=root, camera=camera, back_project=back)


def read_result(path: Path) -> dict:
    lines = path.read_text().splitlines()
    if lines[0].startswith("error "):
        return {"error": lines[0][len("error "):]}
    head = lines[0].split()
    rows = [line.split() for line in lines[1:]]
    camera = None if rows[0][3] == "-" else np.array([[float(v) for v in r[3:6]] for r in rows])
    return {
        "relative": head[1] == "true",
        "affine": None if head[2] == "-" else [float(v) for v in head[2:6]],
        "image": np.array([[float(r[0]), float(r[1])] for r in rows]),
        "depth": np.array([float(r[2]) for r in rows]),
        "camera": camera,
    }


def compare_case(result: dict, variant: Variant, kind: str, data: np.ndarray, option, where: str) -> None:
    """Kotlin's result for one case against Python's decode (or both refuse the request)."""
    try:
        pose = python_decode(variant, kind, data, option)
    except InputError as err:
        assert "error" in result, f"{where}: Python refuses ({err}), Kotlin decodes"
        assert ("focal" in result["error"]) == ("focal" in str(err)), f"{where}: {result['error']!r} vs {err}"
        return
    assert "error" not in result, f"{where}: Kotlin refuses: {result.get('error')}"
    if option[1] is not None:
        aff = variant.preprocessing().geometry(0, 0, option[1])
        np.testing.assert_allclose(result["affine"], [aff.scale_x, aff.scale_y, aff.offset_x, aff.offset_y], rtol=1e-12, atol=1e-9)
    assert result["relative"] == pose.relative, where
    np.testing.assert_allclose(result["image"], pose.image, rtol=0, atol=1e-3, err_msg=f"{where}: joints (px)")
    np.testing.assert_allclose(result["depth"], pose.depth, rtol=0, atol=1e-2, err_msg=f"{where}: depth (mm)")
    assert (result["camera"] is None) == (pose.camera is None), where
    if pose.camera is not None:
        np.testing.assert_allclose(result["camera"], pose.camera, rtol=0, atol=1e-2, err_msg=f"{where}: camera space (mm)")


# ------------------------------------------------------------------- the JVM run


@dataclass
class VolumeRun:
    sources: dict[str, Path]  # variant -> rendered VolumeDecoder.kt
    compile_output: str
    folders: dict[str, Path]  # variant -> its recorded outputs (and the Kotlin results)
    volumes: dict[str, dict[str, np.ndarray]]
    wide_on_lpski: Path  # the "wide" decoder's results on the LPSKI recordings


@pytest.fixture(scope="session")
def volume_run(tmp_path_factory) -> VolumeRun:
    """Every variant's decoder, harness and the main in one kotlinc run; then one JVM run over all recordings."""
    root = tmp_path_factory.mktemp("volume_jvm")
    src = root / "src"
    sources, rendered = [], {}
    for name, v in VARIANTS.items():
        package = f"mdeploy.volume.{name}"
        files = render_volume_decoder("android", v.layout, package=package, input_size=v.input_size, keypoints=v.keypoints,
                                      resize=v.resize)
        for rel, text in files.items():
            path = src / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            sources.append(path)
            rendered[name] = path
        harness = rendered[name].parent / "VolumeHarness.kt"
        harness.write_text(HARNESS.format(package=f"{package}.generated", variant=name), encoding="utf-8")
        sources.append(harness)
    dispatch = "\n".join(f'            "{v}" -> mdeploy.volume.{v}.generated.VolumeHarness.run(dir)' for v in VARIANTS)
    main = src / "mdeploy" / "volumeharness" / "Main.kt"
    main.parent.mkdir(parents=True, exist_ok=True)
    main.write_text(MAIN.replace("VARIANTS", dispatch), encoding="utf-8")
    sources.append(main)
    proc = tc.kotlinc(sources, [], root / "classes")

    folders, volumes, args = {}, {}, []
    for seed, (name, v) in enumerate(VARIANTS.items()):
        if name == "wide":
            continue
        folders[name] = root / "data" / name
        volumes[name] = record(folders[name], v, seed)
        args += [name, str(folders[name])]
    args += ["wide", str(folders["lpski"])]
    stdlib = tc.KOTLINC.parent.parent / "lib" / "kotlin-stdlib.jar"
    cp = os.pathsep.join(str(p) for p in (root / "classes", stdlib))
    tc.run([tc._tool("java"), "-cp", cp, "mdeploy.volumeharness.MainKt", *args], timeout=300)
    return VolumeRun(rendered, proc.stdout + proc.stderr, folders, volumes, folders["lpski"])


# ------------------------------------------------------------------- rendering from data


def test_the_decoders_are_rendered_from_the_layout():
    layout = VolumeLayout(17, 8, 12, 10, order="depth_major", depth_range_mm=1500.0, cell_origin="corner")
    (kotlin,) = render_volume_decoder("android", layout, package="com.example.app", input_size=(96, 80), keypoints="h36m17",
                                      resize="letterbox").values()
    for const, value in (("JOINTS: Int", "17"), ("DEPTH_BINS: Int", "8"), ("GRID_HEIGHT: Int", "12"), ("GRID_WIDTH: Int", "10"),
                         ("OUTPUT_CHANNELS: Int", "136"), ("DEPTH_MAJOR: Boolean", "true"), ("DEPTH_RANGE_MM: Double", "1500.0"),
                         ("CELL_OFFSET: Double", "0.0"), ("INPUT_HEIGHT: Int", "96"), ("INPUT_WIDTH: Int", "80"),
                         ("RESIZE_MODE: String", '"letterbox"'), ("ROOT_JOINT: Int", "0")):
        assert f"const val {const} = {value}\n" in kotlin, const
    h36m = get_keypoint_set("h36m17")
    assert re.findall(r'^ {12}"(\w+)",$', kotlin, re.M) == list(h36m.names)
    assert [tuple(map(int, b)) for b in re.findall(r"intArrayOf\((\d+), (\d+)\)", kotlin)] == list(h36m.skeleton)
    assert "): Int = bin * JOINTS + joint\n" in kotlin and "min(sx, sy)" in kotlin
    # the repository's default: joint-major, centre cells, no names, stretch
    (other,) = render_volume_decoder("android", VolumeLayout(2, 3, 4, 5), package="com.example.app", input_size=(16, 20)).values()
    assert "): Int = joint * DEPTH_BINS + bin\n" in other and "const val ROOT_JOINT: Int = -1\n" in other
    assert '"joint_0",' in other and "emptyArray()" in other and "min(sx, sy)" not in other
    ctx = volume_context(VolumeLayout(21, 32, 32, 32), input_size=(256, 256), keypoints="muco21")
    assert ctx["root_joint"] == get_keypoint_set("muco21").root_index and ctx["layout"]["channels"] == 672


def test_bad_render_requests_are_refused():
    layout = VolumeLayout(21, 32, 32, 32)
    with pytest.raises(ValueError, match="unknown platform"):
        render_volume_decoder("web", layout, package="com.example.app", input_size=(256, 256))
    with pytest.raises(ValueError, match="needs a package"):
        render_volume_decoder("android", layout, input_size=(256, 256))
    with pytest.raises(ValueError, match="17 joints, the volume layout 21"):
        render_volume_decoder("ios", layout, input_size=(256, 256), keypoints="h36m17")
    with pytest.raises(ValueError, match="resize mode"):
        render_volume_decoder("ios", layout, input_size=(256, 256), resize="fill")
    with pytest.raises(InputError):
        render_volume_decoder("android", layout, package="com.example.1app", input_size=(256, 256))


# ------------------------------------------------------------------- Swift


def swift_and_kotlin(name: str) -> tuple[str, str]:
    v = VARIANTS[name]
    kw = {"input_size": v.input_size, "keypoints": v.keypoints, "resize": v.resize}
    (swift,) = render_volume_decoder("ios", v.layout, **kw).values()
    (kotlin,) = render_volume_decoder("android", v.layout, package="com.example.app", **kw).values()
    return swift, kotlin


@pytest.mark.parametrize("name", ["lpski", "h36m", "small"])
def test_swift_decoder_parses_and_mirrors_the_kotlin(name):
    swift, kotlin = swift_and_kotlin(name)
    assert tc.syntax_problems(swift, "swift") == []
    kt_funcs = set(re.findall(r"fun (\w+)\(", kotlin))
    swift_funcs = set(re.findall(r"func (\w+)\(", swift))
    assert kt_funcs == swift_funcs and len(kt_funcs) >= 9, (kt_funcs, swift_funcs)
    consts = re.findall(r"const val ([A-Z][A-Z_]+): \w+ = (.+)\n", kotlin)
    assert len(consts) >= 12
    for const, value in consts:
        camel = const.split("_")[0].lower() + "".join(w.title() for w in const.split("_")[1:])
        found = re.search(rf"static let {camel}(?:: \w+)? = (.+)\n", swift)
        assert found and found.group(1) == value, (const, value, found and found.group(1))
    for const in re.findall(r"^    val ([A-Z][A-Z_]+):", kotlin, re.M):
        camel = const.split("_")[0].lower() + "".join(w.title() for w in const.split("_")[1:])
        assert f"static let {camel}: " in swift, const
    names = re.findall(r'^ {8}"(\w+)",$', swift, re.M)
    assert names == re.findall(r'^ {12}"(\w+)",$', kotlin, re.M) and len(names) == VARIANTS[name].layout.joints
    # the channel indexing is rendered for the layout's order in both
    kt_index = re.search(r"\): Int = (.+)\n", kotlin).group(1)
    assert re.search(r"func channel\(_ joint: Int, _ bin: Int\) -> Int \{ (.+) \}", swift).group(1) == kt_index.replace(
        "DEPTH_BINS", "depthBins").replace("JOINTS", "joints")


# ------------------------------------------------------------------- Kotlin on the JVM


def test_kotlin_decoder_compiles_without_warnings_and_passes_ktlint(volume_run, tmp_path):
    assert "error:" not in volume_run.compile_output
    assert tc.kotlin_warnings(volume_run.compile_output) == []
    shutil.copy(REPO / "templates" / "apps" / "android" / ".editorconfig", tmp_path / ".editorconfig")
    files = []
    for variant, path in volume_run.sources.items():
        files.append(Path(variant) / "VolumeDecoder.kt")
        (tmp_path / variant).mkdir()
        shutil.copy(path, tmp_path / files[-1])
    proc = tc.ktlint(files, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["lpski", "h36m", "small"])
def test_kotlin_decodes_the_recorded_volumes_as_python_does(volume_run, name):
    variant, folder = VARIANTS[name], volume_run.folders[name]
    refused = 0
    for volume_name, volume in volume_run.volumes[name].items():
        xyz = np.loadtxt(folder / f"{name}_softargmax_volume_{volume_name}.npy.txt", ndmin=2)
        np.testing.assert_allclose(xyz, soft_argmax(variant.layout.volumes(volume))[0], rtol=0, atol=1e-6,
                                   err_msg=f"{name} {volume_name}: soft-argmax")
        coords = np.load(folder / f"coords_{volume_name}.npy")
        for option in OPTIONS:
            for kind, data in (("volume", volume), ("coords", coords)):
                case = f"{kind}_{volume_name}_{option[0]}"
                result = read_result(folder / f"{name}_{case}.txt")
                refused += "error" in result
                compare_case(result, variant, kind, data, option, f"{name} {case}")
    assert refused == 2 * 2 * len(volume_run.volumes[name])  # nofocal and noroot, both entry points


def test_sharp_peaks_are_found_where_they_were_put(volume_run):
    """The synthetic sharp peaks are recovered (so the recorded cases exercise real poses, not noise)."""
    layout = VARIANTS["lpski"].layout
    volume = volume_run.volumes["lpski"]["sharp"]
    xyz = np.loadtxt(volume_run.folders["lpski"] / "lpski_softargmax_volume_sharp.npy.txt")
    best = layout.volumes(volume)[0].reshape(layout.joints, -1).argmax(axis=1)
    z, y, x = np.unravel_index(best, (layout.depth, layout.height, layout.width))
    np.testing.assert_allclose(xyz, np.stack([x, y, z], axis=1), atol=0.6)
    assert np.ptp(xyz[:, 2]) > 5  # joints at many depths


def test_the_comparison_fails_for_another_depth_range_and_cell_origin(volume_run):
    """Python with the LPSKI layout against the Kotlin rendered for the "wide" layout (same shapes) disagrees."""
    variant = VARIANTS["lpski"]
    failures = 0
    for volume_name, volume in volume_run.volumes["lpski"].items():
        for option in OPTIONS:
            result = read_result(volume_run.wide_on_lpski / f"wide_volume_{volume_name}_{option[0]}.txt")
            if "error" in result:
                continue
            try:
                compare_case(result, variant, "volume", volume, option, volume_name)
            except AssertionError:
                failures += 1
            pose = python_decode(variant, "volume", volume, option)
            assert np.abs(result["image"] - pose.image).max() > 1.0  # half a cell (4 input pixels) apart
            assert np.abs(result["depth"] - pose.depth).max() > 1.0  # 3 m against 2 m of depth range
    assert failures == 3 * len(volume_run.volumes["lpski"]), failures
