"""The generated Kotlin compiles with a real kotlinc, passes ktlint, and computes what Python computes.

No Android SDK can be installed here, so the Android, AndroidX, CameraX and TFLite classes
are project-owned Java stand-ins with the SDK's signatures (tests/codegen/stubs), and the
R class is generated from the app's real resource XML as aapt would. The pure math of the
glue (preprocessing, quantization, decoding, smoothing) has no Android dependency and runs
on the JVM against vectors from mdeploy's Python evaluator.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.codegen import toolchain as tc
from tests.codegen.conftest import HOSTILE_DESCRIPTION, VARIANTS, variant_spec


def _units(text: str) -> str:
    data = text.encode("utf-16-be")
    return ",".join(format(int.from_bytes(data[i : i + 2], "big"), "x") for i in range(0, len(data), 2))


def test_demo_app_and_glue_compile_without_warnings(jvm_build):
    assert "error:" not in jvm_build.compile_output
    assert tc.kotlin_warnings(jvm_build.compile_output) == []
    classes = {p.relative_to(jvm_build.classes).as_posix() for p in jvm_build.classes.rglob("*.class")}
    for name in ("MainActivity", "OverlayView", "generated/PoseEstimator", "generated/MacePoseEstimator", "generated/HeatmapDecoder"):
        assert f"com/example/hostileapp/{name}.class" in classes


def test_escaped_strings_mean_the_same_in_kotlin(jvm_build):
    printed = jvm_build.java("mdeploy.harness.MainKt", "escape").splitlines()
    assert len(printed) == len(jvm_build.escaped)
    for value, line in zip(jvm_build.escaped, printed):
        assert line == _units(value), repr(value)


def test_recipe_strings_reach_the_app_unchanged(jvm_build):
    description, recipe, asset, tag = jvm_build.java("mdeploy.harness.MainKt", "config").splitlines()
    assert description == _units(HOSTILE_DESCRIPTION)
    assert recipe == _units("hostile_demo")
    assert asset == _units("hostile_demo_fp32.tflite")
    assert tag == _units("hostile_demo")


def test_ktlint_passes_on_app_and_glue(jvm_build):
    files = sorted(p.relative_to(jvm_build.app) for p in jvm_build.app.rglob("*.kt*"))
    assert any(str(f).endswith(".kts") for f in files) and len(files) > 8
    proc = tc.ktlint(files, jvm_build.app)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ktlint_reports_a_style_violation(tmp_path, jvm_build):
    """The lint step can fail: the same ktlint and .editorconfig reject a badly formatted file."""
    (tmp_path / ".editorconfig").write_text((jvm_build.app / ".editorconfig").read_text())
    (tmp_path / "Bad.kt").write_text("package a\nfun  f( ) {val x=1}\n")
    proc = tc.ktlint([tmp_path / "Bad.kt"], tmp_path)
    assert proc.returncode != 0 and "Bad.kt:2" in proc.stdout


# ---------------------------------------------------------------------------- math on the JVM


def _images(rng: np.random.Generator) -> list[tuple[np.ndarray, tuple | None]]:
    """Noise (the hardest case for bilinear sampling), gradients, odd sizes and a box."""
    noise = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:61, 0:29]
    gradient = np.stack([xx * 8 % 256, yy * 4 % 256, (xx + yy) * 3 % 256], axis=2).astype(np.uint8)
    tall = rng.integers(0, 256, (90, 20, 3), dtype=np.uint8)
    return [(noise, None), (gradient, None), (tall, None), (noise, (5.5, 3.0, 30.0, 24.5))]


def _heatmaps(rng: np.random.Generator, h: int, w: int, k: int) -> list[np.ndarray]:
    """Blobs at random places (some on the border), flat maps (ties), and noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(3):
        hm = rng.normal(0, 0.02, (h, w, k)).astype(np.float32)
        for c in range(k):
            cy, cx = rng.uniform(-1, h), rng.uniform(-1, w)
            hm[..., c] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(0.6, 2.5) ** 2))
        out.append(hm)
    flat = np.zeros((h, w, k), np.float32)
    flat[h // 2, :, 0] = 0.5  # a whole row ties: the first maximum wins
    out.append(flat)
    return out


def _argb(rgb: np.ndarray) -> list[int]:
    a = rgb.astype(np.int64)
    return ((0xFF << 24) | (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]).reshape(-1).tolist()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kotlin_preprocessing_and_decoding_match_python(jvm_build, tmp_path, variant):
    from mdeploy.evaluate.decode import decode_spec, to_source

    spec = variant_spec(variant)
    pre = spec.preprocessing
    rng = np.random.default_rng(sorted(VARIANTS).index(variant))
    images = _images(rng)
    for i, (rgb, box) in enumerate(images):
        h, w = rgb.shape[:2]
        lines = [f"{w} {h}", " ".join(str(v) for v in _argb(rgb)), " ".join(repr(float(v)) for v in box) if box else ""]
        (tmp_path / f"image_{i}.txt").write_text("\n".join(lines) + "\n")
    oh, ow = spec.heatmap_size
    k = len(spec.keypoints)
    maps = _heatmaps(rng, oh, ow, k)
    io = VARIANTS[variant]["io"]
    sources = [(57, 41), (41, 57), (40, 40), (300, 200)]
    expected_maps = []
    for i, hm in enumerate(maps):
        src_w, src_h = sources[i % len(sources)]
        if io is not None:  # int8 output: the app dequantizes what the interpreter wrote
            _, scale, zero = io["output"]
            q = np.clip(np.round(hm / np.float32(scale) + zero), -128, 127).astype(np.int32)
            payload = "q " + " ".join(str(v) for v in q.reshape(-1))
            hm = ((q - zero).astype(np.float32) * np.float32(scale)).astype(np.float32)
        else:
            payload = " ".join(repr(float(v)) for v in hm.reshape(-1))
        (tmp_path / f"heatmap_{i}.txt").write_text(f"{src_w} {src_h}\n{payload}\n")
        expected_maps.append((hm, src_w, src_h))
    frames = rng.uniform(0, 100, (6, k * 3)).astype(np.float32)
    (tmp_path / "frames.txt").write_text("\n".join(" ".join(repr(float(v)) for v in f) for f in frames) + "\n")

    jvm_build.java("mdeploy.harness.MainKt", variant, str(tmp_path))

    level = (pre.range[1] - pre.range[0]) / 255.0 / min(pre.std)
    for i, (rgb, box) in enumerate(images):
        values_line, quant_line, geometry_line = (tmp_path / f"out_image_{i}.txt").read_text().splitlines()
        kotlin = np.array(values_line.split(), np.float32).reshape(pre.height, pre.width, 3)
        python, affine = pre.apply(rgb, box)
        assert np.abs(kotlin - python).max() <= level * 1.0001 + 1e-6, f"image {i}: more than one level apart"
        assert np.mean(np.abs(kotlin - python) > 1e-6) < 0.02, f"image {i}: many pixels differ"
        geometry = [float(v) for v in geometry_line.split()]
        assert geometry == pytest.approx([affine.scale_x, affine.scale_y, affine.offset_x, affine.offset_y], rel=1e-12)
        if io is not None:
            _, scale, zero = io["input"]
            q_python = np.clip(np.round(kotlin / np.float32(scale) + zero), 0, 255).astype(np.int64).reshape(-1)
            assert np.array_equal(np.array(quant_line.split(), np.int64), q_python)

    for i, (hm, src_w, src_h) in enumerate(expected_maps):
        kotlin = np.array([line.split() for line in (tmp_path / f"out_heatmap_{i}.txt").read_text().splitlines()], np.float32)
        points = decode_spec(hm, spec.output_stride, spec.decode)[0]
        python = to_source(points, pre.geometry(src_w, src_h))
        np.testing.assert_allclose(kotlin, python, atol=1e-4, rtol=0, err_msg=f"heatmap {i}")

    smoothed = np.array([line.split() for line in (tmp_path / "out_frames.txt").read_text().splitlines()], np.float32)
    for t in range(len(frames)):
        window = frames[max(0, t - 2) : t + 1]
        np.testing.assert_allclose(smoothed[t], window.mean(axis=0), atol=1e-4)


def test_harness_detects_a_decoding_difference(jvm_build, tmp_path):
    """The comparison can fail: Python decoding without sub-pixel refinement disagrees with the app's."""
    from mdeploy.evaluate.decode import decode, to_source

    spec = variant_spec("stretch")
    oh, ow = spec.heatmap_size
    hm = _heatmaps(np.random.default_rng(5), oh, ow, len(spec.keypoints))[0]
    (tmp_path / "heatmap_0.txt").write_text(f"40 48\n{' '.join(repr(float(v)) for v in hm.reshape(-1))}\n")
    jvm_build.java("mdeploy.harness.MainKt", "stretch", str(tmp_path))
    kotlin = np.array([line.split() for line in (tmp_path / "out_heatmap_0.txt").read_text().splitlines()], np.float32)
    wrong = to_source(decode(hm, spec.output_stride, spec.decode.smooth_sigma, subpixel=False)[0], spec.preprocessing.geometry(40, 48))
    assert np.abs(kotlin - wrong).max() > 0.1
