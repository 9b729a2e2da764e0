"""Exit codes by whose fault it is (2 input, 3 environment, 70 only a bug in mdeploy), and one
JSON document on stdout for every failure in --json/--ci mode (issue 15, items 11 and 12)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import write

RECIPE = """
name: tiny
model:
  import: {format: keras, path: missing.keras}
  input: {channels: rgb, range: [0, 1]}
"""


@pytest.fixture
def recipe(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return write(tmp_path / "tiny.yaml", RECIPE)


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A folder nobody may write into. Root ignores file modes, so for root the file system's
    answer (EACCES) is given at os.open / os.mkdir, where every write into the folder starts."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        real_open, real_mkdir = os.open, os.mkdir

        def refuse(path):
            if str(path).startswith(str(folder) + os.sep):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))

        monkeypatch.setattr(os, "open", lambda path, *a, **k: (refuse(path), real_open(path, *a, **k))[1])
        monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: (refuse(path), real_mkdir(path, *a, **k))[1])
    yield folder
    folder.chmod(0o755)


def failure_json(result, code: int) -> dict:
    assert result.exit_code == code, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["exit_code"] == code
    return doc


# ---------------------------------------------------------------------------- predict on files its runtime refuses


@pytest.fixture
def spec_and_image(tmp_path):
    from mdeploy.importers.canonical import planned_spec
    from mdeploy.recipe import load_recipe

    recipe = write(tmp_path / "arch.yaml", """
        name: arch
        model:
          arch: tiny_cpm
          input: {size: [32, 32], channels: rgb, range: [0, 1]}
        data: {train: {synthetic: {count: 4}}}
        """)
    planned_spec(load_recipe(recipe)).save(tmp_path / "spec.json")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "person.png")
    return tmp_path / "spec.json", tmp_path / "person.png"


@pytest.mark.parametrize("name", ["garbage.onnx", "garbage.tflite", "garbage.keras", "saved_model"])
def test_predict_on_a_garbage_model_is_bad_input(cli, tmp_path, spec_and_image, name):
    spec, image = spec_and_image
    path = tmp_path / name
    if name == "saved_model":
        path.mkdir()
        path = path / "saved_model.pb"
    path.write_bytes(b"\x00not a model\xff" * 64)
    result = cli("predict", tmp_path / name, image, "--spec", spec, "--out", tmp_path / "o.png", "--json")
    doc = failure_json(result, 2)  # was 70: "internal error: ValueError ..." / "DecodeError ..."
    assert doc["error"] == "ModelError" and name.split(".")[0] in doc["message"]
    assert "internal error" not in result.stderr and not (tmp_path / "o.png").exists()


def test_predict_out_is_checked_before_the_model(cli, tmp_path, spec_and_image):
    spec, image = spec_and_image
    (tmp_path / "m.tflite").write_bytes(b"never opened")
    # An existing folder is where results go (<name>_pose.png in it); wrong kinds of path fail first.
    inside_a_file = cli("predict", tmp_path / "m.tflite", image, "--spec", spec, "--out", image / "pose.png")
    assert inside_a_file.exit_code == 2 and f"--out {image / 'pose.png'}: {image} is not a folder" in inside_a_file.stderr
    (tmp_path / "other.png").write_bytes(image.read_bytes())
    several = cli("predict", tmp_path / "m.tflite", image, tmp_path / "other.png", "--spec", spec, "--out", tmp_path / "other.png")
    assert several.exit_code == 2 and f"--out {tmp_path / 'other.png'} is not a folder" in several.stderr


# ---------------------------------------------------------------------------- recipes and --set


def test_nul_and_control_characters_in_a_recipe(cli, tmp_path, recipe):
    (tmp_path / "nul.yaml").write_bytes(RECIPE.replace("name: tiny", "name: ti\x00ny").encode())
    result = cli("validate", "nul.yaml")
    assert result.exit_code == 2, result.output  # was 70: ReaderError raised outside parse_yaml's try
    assert result.stderr.startswith("error: nul.yaml:2:9: YAML syntax: character U+0000 is not allowed")
    on_ci = cli("build", "nul.yaml", "--ci")
    assert failure_json(on_ci, 2)["issues"][0]["line"] == 2


def test_control_characters_in_set_values_point_at_the_argument(cli, recipe):
    result = cli("validate", "tiny.yaml", "--set", "description=a\x1b[2Jb")
    assert result.exit_code == 2, result.output
    assert "\x1b" not in result.output  # the terminal never gets the raw character back
    assert result.stderr.startswith("error: --set description=a\\x1b[2Jb:1:14: description: YAML syntax: character U+001B")
    escaped = cli("validate", "tiny.yaml", "--set", 'description="a\\0b"')
    assert escaped.exit_code == 2 and "description: character U+0000 is not allowed" in escaped.stderr


def test_set_extends_is_refused(cli, tmp_path, recipe):
    write(tmp_path / "other.yaml", RECIPE.replace("rgb", "bgr"))
    result = cli("validate", "tiny.yaml", "--set", "extends=other.yaml")
    assert result.exit_code == 2  # was: ignored, exit 0
    assert result.stderr.startswith("error: --set extends=other.yaml: extends cannot be overridden")


def test_set_yaml_errors_point_into_the_argument(cli, recipe):
    syntax = cli("validate", "tiny.yaml", "--set", "train={epochs: 2")
    assert syntax.stderr.startswith("error: --set train={epochs: 2:1:17: train: YAML syntax:")  # column of the argument
    dupe = cli("validate", "tiny.yaml", "--set", "train={epochs: 2, epochs: 3}")
    assert dupe.stderr.startswith("error: --set train={epochs: 2, epochs: 3}:1:19: train.epochs: duplicate key")


# ---------------------------------------------------------------------------- output paths


def test_read_only_out_is_an_environment_problem(cli, recipe, read_only_dir):
    for out in (read_only_dir, read_only_dir / "sub"):
        result = cli("build", "tiny.yaml", "--out", out, "--json")
        doc = failure_json(result, 3)
        assert doc["error"] == "EnvironmentProblem", doc
    schema = cli("schema", "--out", read_only_dir / "s.json")
    assert schema.exit_code == 3 and "Permission denied" in schema.stderr  # was 70 (PermissionError)


@pytest.mark.parametrize("option", ["--out", "--junit", "--bundle"])
def test_output_paths_of_the_wrong_kind_are_refused_before_building(cli, tmp_path, recipe, option):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "folder.zip").mkdir()
    wrong = {"--out": tmp_path / "file", "--junit": tmp_path / "folder.zip", "--bundle": tmp_path / "folder.zip"}[option]
    result = cli("build", "tiny.yaml", option, wrong, "--ci")
    doc = failure_json(result, 2)
    assert doc["message"].startswith(f"{option} {wrong}")
    inside = cli("build", "tiny.yaml", option, tmp_path / "file" / "x.zip")  # a file where a folder must be
    assert inside.exit_code == 2 and "is not a folder" in inside.stderr
    assert not (tmp_path / "build").exists() and (tmp_path / "file").read_text() == "mine"


def test_a_build_folder_that_is_a_symlink_is_refused_not_renamed(cli, tmp_path, recipe):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "tiny").symlink_to(target, target_is_directory=True)
    result = cli("build", "tiny.yaml")
    assert result.exit_code == 2 and "symbolic link" in result.stderr
    assert (tmp_path / "build" / "tiny").is_symlink() and os.readlink(tmp_path / "build" / "tiny") == str(target)
    assert sorted(p.name for p in (tmp_path / "build").iterdir() if not p.name.endswith(".lock")) == ["tiny"]
    assert (target / "keep.txt").read_text() == "mine"


def test_swap_dir_drops_a_link_in_place_of_a_folder(tmp_path):
    from mdeploy.fsutil import swap_dir

    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    (tmp_path / "report").symlink_to(target, target_is_directory=True)
    (tmp_path / "new").mkdir()
    swap_dir(tmp_path / "new", tmp_path / "report")
    assert (tmp_path / "report").is_dir() and not (tmp_path / "report").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "target"]  # no renamed link left beside it
    assert (target / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------------------- report --compare


def test_compare_against_a_manifest_missing_fields(cli, tmp_path):
    for name in ("new", "old"):
        (tmp_path / name).mkdir()
    good = {"schema": "mdeploy.manifest/1", "name": "b", "artifacts": [
        {"id": "tflite/fp32", "path": "tflite/b_fp32.tflite", "format": "tflite", "sha256": "0" * 64, "size": 10}]}
    (tmp_path / "new" / "manifest.json").write_text(json.dumps(good))
    partial = dict(good, artifacts=[{"id": "tflite/fp32", "path": "tflite/b_fp32.tflite", "format": "tflite"}])
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(partial))
    result = cli("report", tmp_path / "new", "--compare", tmp_path / "old", "--json")
    doc = failure_json(result, 2)  # was 70: KeyError 'size'
    assert doc["message"] == f"--compare {tmp_path / 'old' / 'manifest.json'} is incomplete: artifacts[0] has no 'sha256' (a string)"
    assert not (tmp_path / "new" / "report").exists()
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(dict(good, gates={"parity": {"results": [{"status": "passed"}]}})))
    assert cli("report", tmp_path / "new", "--compare", tmp_path / "old").exit_code == 2
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(good))
    assert cli("report", tmp_path / "new", "--compare", tmp_path / "old").exit_code == 0


def test_compare_refuses_another_recipe_or_model_unless_asked(cli, tmp_path):
    art = {"id": "tflite/fp32", "path": "tflite/b_fp32.tflite", "format": "tflite", "sha256": "0" * 64, "size": 10}
    int8 = dict(art, id="tflite/int8", path="tflite/b_int8.tflite")
    onnx = dict(art, id="onnx", path="onnx/b.onnx", format="onnx")

    def manifest(folder, name, artifacts):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "manifest.json").write_text(json.dumps({"schema": "mdeploy.manifest/1", "name": name, "artifacts": artifacts}))

    manifest("new", "b", [art, int8])
    manifest("old", "b", [art, onnx])
    manifest("other", "c", [art])
    same = cli("report", tmp_path / "new", "--compare", tmp_path / "old")
    assert same.exit_code == 0, same.output
    assert f"added since {tmp_path / 'old'}: tflite/int8" in same.stdout.splitlines()
    assert f"removed since {tmp_path / 'old'}: onnx" in same.stdout.splitlines()
    html = (tmp_path / "new" / "report" / "report.html").read_text()
    assert "Added since: <code>tflite/int8</code>" in html and "Removed since: <code>onnx</code>" in html

    refused = cli("report", tmp_path / "new", "--compare", tmp_path / "other", "--json")
    doc = failure_json(refused, 2)
    assert doc["message"] == f"--compare {tmp_path / 'other'} is not a build of the same recipe and model: recipe 'b' here, 'c' there"
    assert "--allow-different" in doc["hint"]
    assert json.loads((tmp_path / "new" / "report" / "report.json").read_text())["compare"]["other"] == str(tmp_path / "old")  # untouched

    allowed = cli("report", tmp_path / "new", "--compare", tmp_path / "other", "--allow-different", "--json")
    assert allowed.exit_code == 0, allowed.output
    compare = json.loads(allowed.stdout)["compare"]
    assert compare["different"] == ["recipe 'b' here, 'c' there"]
    assert compare["only_here"] == ["tflite/int8"] and compare["only_there"] == []


def test_compare_tells_models_apart_by_their_spec(tmp_path):
    from mdeploy.report.compare import differences

    def spec(folder, source, keypoints="aic14"):
        (tmp_path / folder / "model").mkdir(parents=True)
        doc = {"keypoints": {"name": keypoints}, "input": {"shape": [1, 64, 64, 3]}, "source": source}
        (tmp_path / folder / "model" / "spec.json").write_text(json.dumps(doc))

    spec("a", {"format": "trained", "arch": "tiny_cpm"})
    spec("retrained", {"format": "trained", "arch": "tiny_cpm", "trained_on": {"known": True}})
    spec("imported", {"format": "frozen_pb", "file": "model.pb"}, keypoints="coco17")
    (tmp_path / "no_spec").mkdir()
    named = {"name": "b"}
    assert differences(tmp_path / "a", tmp_path / "retrained", named, named) == []  # retrained: still the same model
    assert differences(tmp_path / "a", tmp_path / "no_spec", named, named) == []  # unknown is not a difference
    assert differences(tmp_path / "a", tmp_path / "imported", named, named) == [
        "model tiny_cpm trained here, frozen_pb model.pb there", "keypoints aic14 here, coco17 there"]


# ---------------------------------------------------------------------------- JSON on every failure


def test_internal_errors_and_interrupts_still_print_json(cli, recipe, monkeypatch):
    import mdeploy.recipe

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(mdeploy.recipe, "load_recipe", broken)
    result = cli("build", "tiny.yaml", "--ci")
    doc = failure_json(result, 70)
    assert doc["error"] == "InternalError" and doc["message"] == "RuntimeError: a bug"
    assert "internal error: RuntimeError: a bug" in result.stderr

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mdeploy.recipe, "load_recipe", interrupted)
    assert failure_json(cli("build", "tiny.yaml", "--json"), 130)["error"] == "Interrupted"


@pytest.mark.parametrize("code, exit_code", [(errno.EACCES, 3), (errno.EROFS, 3), (errno.ENOSPC, 3), (errno.ENOENT, 70)])
def test_file_system_errors_are_the_environment(code, exit_code, capsys):
    import typer

    from mdeploy.cli.common import guarded

    def body():
        raise OSError(code, os.strerror(code), "/some/file")

    with pytest.raises(typer.Exit) as caught:
        guarded(body, json_output=True)
    assert caught.value.exit_code == exit_code
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit_code"] == exit_code and "/some/file" in doc["message"]
