"""Each fact has one home its readers import without pulling in a stage.

Validating a recipe and preparing a MACE run on a phone read MACE's deployment-file rules
(mdeploy/mace_rules.py), not the exporter; the app glue and the runners read the canonical
interface from mdeploy/spec.py, not the import stage; evaluation and prediction load
images from mdeploy/images.py, not the verification stage. Each is checked in a fresh
interpreter, where sys.modules shows everything the import chain loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.helpers import REPO

RECIPE = """
name: layers
model: {arch: tiny_cpm, input: {size: [32, 32], channels: rgb, range: [0, 1]}}
data: {train: {synthetic: {count: 8, seed: 1, size: 32}}}
export:
  mace: {runtime: gpu, data_type: fp16_fp32, model_tag: layers_tag, validation_threshold: {gpu: 0.99}}
bench: {mace_model: converted}
"""


def loaded_after(tmp_path, code: str) -> list[str]:
    """The mdeploy modules (and TensorFlow) a fresh interpreter holds after running `code`."""
    (tmp_path / "layers.yaml").write_text(RECIPE)
    script = textwrap.dedent(code) + textwrap.dedent("""
        import json, sys
        print(json.dumps(sorted(m for m in sys.modules if m.startswith(("mdeploy", "tensorflow", "keras")))))
        """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_recipe_validation_and_the_devices_do_not_import_an_exporter(tmp_path):
    loaded = loaded_after(tmp_path, """
        import sys
        from pathlib import Path
        from types import SimpleNamespace

        from mdeploy.recipe import load_recipe
        from mdeploy.devices import plan

        recipe = load_recipe(Path(sys.argv[1]) / "layers.yaml")  # runs the model-tag and data-type rules
        phone = SimpleNamespace(is_host=False, profile=SimpleNamespace(abi="arm64-v8a", mace_run=None))
        assert plan.mace_kit(recipe, Path(sys.argv[1]), {"artifacts": []}, phone) is None  # no mace_run: no kit
        """)
    assert "mdeploy.mace_rules" in loaded
    stages = [m for m in loaded if m.startswith(("mdeploy.exporters", "mdeploy.importers", "mdeploy.verify", "tensorflow"))]
    assert stages == []


def test_glue_runners_and_evaluation_read_the_spec_and_images_from_their_homes(tmp_path):
    loaded = loaded_after(tmp_path, """
        import sys
        from pathlib import Path

        import mdeploy.codegen.apps, mdeploy.codegen.glue, mdeploy.runners.tensorflow, mdeploy.evaluate.evaluator
        from mdeploy.recipe import load_recipe
        from mdeploy.spec import INPUT_NAME, planned_spec

        spec = planned_spec(load_recipe(Path(sys.argv[1]) / "layers.yaml"))
        assert spec.input.name == INPUT_NAME and spec.output.shape == (1, 16, 16, 14)
        """)
    assert {"mdeploy.spec", "mdeploy.images"} <= set(loaded)
    assert [m for m in loaded if m.startswith(("mdeploy.importers", "mdeploy.verify", "mdeploy.exporters"))] == []
