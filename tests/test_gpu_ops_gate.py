"""verify.gpu_ops: a TFLite op the GPU delegate would leave to the CPU fails the build (fail),
is reported (warn, the default) or only recorded (off); the JUnit XML carries the gate."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.helpers import run_cli, write


@pytest.fixture(scope="module")
def argmax_model(tmp_path_factory):
    """A heatmap model (32x32x3 -> 16x16x14) with an ARG_MAX inside, which the GPU delegate cannot run."""
    import numpy as np
    import tensorflow as tf

    kernel = tf.constant(np.random.default_rng(0).normal(size=(1, 1, 3, 14)).astype("float32"))

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32, name="image")])
        def serve(self, image):
            pooled = tf.nn.avg_pool2d(image, 2, 2, "VALID")
            heat = tf.nn.sigmoid(tf.nn.conv2d(pooled, kernel, 1, "SAME"))
            winner = tf.cast(tf.argmax(heat, axis=-1), tf.float32)[..., None]
            return {"heatmaps": heat + 0.001 * winner}

    folder = tmp_path_factory.mktemp("argmax")
    module = Module()
    tf.saved_model.save(module, str(folder / "sm"), signatures={"serving_default": module.serve.get_concrete_function()})
    return folder / "sm"


def test_gpu_ops_policy(tmp_path, argmax_model):
    recipe = write(tmp_path / "argmax.yaml", f"""
        name: argmax
        model:
          import: {{format: saved_model, path: {argmax_model}}}
          input: {{size: [32, 32], channels: rgb, range: [0, 1]}}
          keypoints: aic14
        verify: {{gpu_ops: fail}}
        """)
    env = {"MDEPLOY_CACHE_DIR": str(tmp_path / "cache")}
    junit = tmp_path / "junit.xml"
    failed = run_cli("build", str(recipe), "--out", str(tmp_path / "build"), "--junit", str(junit), env=env)
    assert failed.returncode == 1, failed.stderr
    assert "ARG_MAX" in failed.stderr and "verify.gpu_ops" in failed.stderr
    suites = {s.get("name").split(".")[-1]: s for s in ET.parse(junit).getroot()}
    (case,) = list(suites["ops"])
    assert case.get("name") == "tflite/fp32" and "ARG_MAX" in case.find("failure").get("message")
    assert int(suites["parity"].get("failures")) == 0  # the model itself converts faithfully

    warned = run_cli("build", str(recipe), "--out", str(tmp_path / "build"), "--set", "verify.gpu_ops=warn", "--json", env=env)
    assert warned.returncode == 0, warned.stderr
    manifest = json.loads((tmp_path / "build/argmax/manifest.json").read_text())
    (ops,) = manifest["gates"]["ops"]["results"]
    assert ops["status"] == "warned" and ops["metrics"]["gpu_fallback"] == ["ARG_MAX"]

    off = run_cli("build", str(recipe), "--out", str(tmp_path / "build"), "--set", "verify.gpu_ops=off", "--json", env=env)
    assert off.returncode == 0, off.stderr
    manifest = json.loads((tmp_path / "build/argmax/manifest.json").read_text())
    assert manifest["gates"]["ops"]["results"] == []
    tflite = next(a for a in manifest["artifacts"] if a["id"] == "tflite/fp32")
    assert [f["op"] for f in tflite["details"]["gpu_fallback"]] == ["ARG_MAX"]  # still recorded, just not a gate
