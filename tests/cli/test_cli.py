"""The command line: exit codes, messages, JSON, and what it imports at start-up."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import run_cli, tiny_recipe, write

RECIPE = """
name: demo
model:
  import: {format: frozen_pb, path: m.pb, inputs: [image], outputs: [out]}
  input: {size: [192, 192], channels: bgr, range: [0, 255]}
export:
  tflite: {variants: [fp32, fp16]}
train: {epochs: 2}
"""

PROBE = """
import sys
from mdeploy.cli import main
sys.argv = ["mdeploy", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in ("tensorflow", "keras", "coremltools", "tf2onnx", "ai_edge_litert") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["validate", "demo.yaml"], ["schema"], ["build", "--help"]])
def test_light_commands_do_not_import_frameworks(tmp_path, args):
    write(tmp_path / "demo.yaml", RECIPE)
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=tmp_path, capture_output=True, text=True)
    assert "HEAVY=\n" in proc.stderr, proc.stderr


def test_help_lists_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("validate", "schema", "build", "init"):
        assert command in proc.stdout


def test_version():
    from mdeploy import __version__

    assert run_cli("--version").stdout.strip() == f"mdeploy {__version__}"


def test_validate_ok_prints_a_summary(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "demo.yaml", RECIPE)
    result = cli("validate", "demo.yaml")
    assert result.exit_code == 0
    assert result.stdout == (
        "ok: demo.yaml\n"
        "  name       demo\n"
        "  model      import frozen_pb m.pb (input image, output out)\n"
        "  input      192x192 BGR [0, 255], resize stretch\n"
        "  keypoints  aic14\n"
        "  export     tflite (fp32, fp16)\n"
        "  verify     parity fail on 4 random, package photos; gpu ops warn, find people fail\n"
        "validated but not built by this version of mdeploy:\n"
        "  demo.yaml:7:1: train: not used: the model is imported, nothing is trained\n"
    )
    # The model file is not here: a warning (the build machine may hold it), with where to get it.
    assert result.stderr.splitlines() == [
        "warning: demo.yaml:3:37: model file not found: m.pb (a build on this machine would stop here)",
        "hint: model.import.path names a frozen_pb file: copy it there, point the recipe at your copy "
        "(--set model.import.path=FILE), or give model.import.url and its sha256 to download it once into the cache",
    ]
    (tmp_path / "m.pb").write_bytes(b"")
    assert cli("validate", "demo.yaml").stderr == ""


def test_validate_warns_of_missing_release_weights(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "ft.yaml", """
        name: ft
        model:
          arch: tiny_cpm
          init: {path: weights/model.pb, sha256: "%s"}
          input: {size: [64, 64], channels: rgb, range: [-1, 1]}
        data:
          train: {synthetic: {count: 8}}
        """ % ("ab" * 32))
    result = cli("validate", "ft.yaml", "--json")
    assert result.exit_code == 0, result.output
    (warning,) = json.loads(result.stdout)["warnings"]
    assert warning["key"] == "model.init.path" and warning["where"].startswith("ft.yaml:4:")
    assert warning["message"] == f"release weights not found: {'weights/model.pb'} (a build on this machine would stop here)"
    assert f"a TF1 frozen graph (.pb) with sha256 {'ab' * 32}" in warning["hint"]


def test_validate_reports_every_problem_with_positions(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "bad.yaml", RECIPE.replace("bgr", "bgrr").replace("epochs: 2", "epochz: 2"))
    result = cli("validate", "bad.yaml")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: bad.yaml:4:39: model.input.channels: expected one of rgb, bgr; got 'bgrr' (did you mean 'bgr'?)",
        "error: bad.yaml:7:9: train.epochz: unknown key 'epochz' (did you mean 'epochs'?); expected one of: "
        "epochs, batch_size, optimizer, distribute, seed, checkpoint_every, early_stop, max_steps, freeze_batchnorm, foreground_weight",
        "2 problems found",
        "hint: `mdeploy schema` prints every key a recipe accepts",
    ]


def test_validate_json(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "demo.yaml", RECIPE)
    ok = json.loads(cli("validate", "demo.yaml", "--json").stdout)
    assert ok["ok"] is True and ok["summary"]["name"] == "demo"
    assert ok["not_built"] == [
        {"key": "train", "where": "demo.yaml:7:1", "reason": "not used: the model is imported, nothing is trained"}
    ]
    write(tmp_path / "bad.yaml", RECIPE.replace("epochs: 2", "epochs: -2"))
    result = cli("validate", "bad.yaml", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "ok": False,
        "issues": [{"file": "bad.yaml", "line": 7, "col": 17, "key": "train.epochs", "message": "must be > 0, got -2"}],
    }


def test_validate_missing_file(cli, tmp_path):
    result = cli("validate", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: recipe not found: ")
    assert "hint: check the path" in result.stderr


def test_schema_is_json_schema(cli, tmp_path):
    result = cli("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "mdeploy recipe"
    assert {"name", "model", "export", "verify"} <= set(schema["properties"])
    assert cli("schema", "--out", tmp_path / "s.json").exit_code == 0
    assert json.loads((tmp_path / "s.json").read_text()) == schema


def test_debug_shows_the_traceback(tmp_path):
    quiet = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    loud = run_cli("validate", str(tmp_path / "nope.yaml"), env={"MDEPLOY_DEBUG": "1"})
    assert "Traceback" in loud.stderr and "InputError: recipe not found" in loud.stderr


def test_bad_arguments_exit_2(cli):
    assert cli("build").exit_code == 2
    assert cli("build", "x.yaml", "--no-such-flag").exit_code == 2


def test_init_writes_a_recipe_that_validates(tmp_path, cli, tiny_models):
    result = cli("init", "my_model", "--import", tiny_models["frozen_pb"], "--input", "image", "--output", "Identity",
                 "--channels", "bgr", "--range", "0,255", "--dest", tmp_path)
    assert result.exit_code == 0, result.stderr
    text = (tmp_path / "my_model.yaml").read_text()
    assert "format: frozen_pb" in text and "channels: bgr" in text and "range: [0, 255]" in text
    assert cli("validate", tmp_path / "my_model.yaml").exit_code == 0
    again = cli("init", "my_model", "--import", tiny_models["keras"], "--dest", tmp_path)
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert (tmp_path / "my_model.yaml").read_text() == text


def test_init_refuses_bad_names_and_missing_tensor_names(tmp_path, cli, tiny_models):
    bad = cli("init", "bad name", "--import", tiny_models["keras"], "--dest", tmp_path)
    assert bad.exit_code == 2 and "expected a slug" in bad.stderr
    assert not (tmp_path / "bad name.yaml").exists()
    pb = cli("init", "pb", "--import", tiny_models["frozen_pb"], "--output", "Identit", "--dest", tmp_path)
    assert pb.exit_code == 2 and "did you mean 'Identity'" in pb.stderr
    assert not (tmp_path / "pb.yaml").exists()


def test_build_prints_stage_lines_and_a_table(tmp_path, tiny_models):
    path = tiny_recipe(tmp_path, tiny_models)
    proc = run_cli("build", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[:2] == ["[1/4] model: import keras tiny.keras ...", "[1/4] model: input 1x32x32x3 -> heatmaps 1x16x16x14 (stride 2)"]
    assert not [line for line in proc.stderr.splitlines() if not line.startswith("[")], proc.stderr  # no framework noise
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["artifact", "file", "size", "parity", "status"]
    assert lines[-2:] == ["build written: build/tiny", "report: build/tiny/report/report.html"]
    report = tmp_path / "build/tiny/report/report.html"
    written = report.stat().st_mtime_ns
    again = run_cli("build", str(path), cwd=tmp_path)
    assert again.stderr.splitlines() == ["[1/4] model: cached", "[2/4] people/model: cached", "[3/4] tflite/fp32: cached", "[4/4] parity/tflite/fp32: cached"]
    assert again.stdout.splitlines()[-2:] == ["build up to date: build/tiny", "report: build/tiny/report/report.html"]
    assert report.stat().st_mtime_ns == written  # a cached build rewrites nothing, the report included

    # On a CI runner (CI=true) the same command prints the JSON summary; --no-ci restores the table.
    on_ci = run_cli("build", str(path), cwd=tmp_path, env={"CI": "true"})
    assert json.loads(on_ci.stdout)["ok"] is True and on_ci.stderr.splitlines()[0] == "[1/4] model: cached"
    forced = run_cli("build", str(path), "--no-ci", cwd=tmp_path, env={"CI": "true"})
    assert forced.stdout.splitlines()[-2] == "build up to date: build/tiny"
