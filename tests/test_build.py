"""`mdeploy build` end to end on tiny real models: import, TFLite, parity, manifest, cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdeploy.build import build
from mdeploy.errors import InputError, ModelError
from mdeploy.fsutil import sha256_path
from mdeploy.recipe import load_recipe
from mdeploy.spec import ModelSpec
from tests.helpers import TINY_SIZE, tiny_recipe, write


def statuses(result) -> dict[str, str]:
    return {name: rec.status for name, rec in result.outcome.records.items()}


@pytest.mark.parametrize("fmt", ["keras", "saved_model", "frozen_pb"])
def test_import_formats_build_verified_tflite(tmp_path, tiny_models, fmt):
    recipe = load_recipe(tiny_recipe(tmp_path, tiny_models, fmt))
    result = build(recipe, out_root=tmp_path / "build")
    out = tmp_path / "build" / "tiny"
    assert result.written == "assembled"
    assert (out / "model" / "saved_model" / "saved_model.pb").is_file()
    assert (out / "tflite" / "tiny_fp32.tflite").is_file()

    spec = ModelSpec.load(out / "model" / "spec.json")
    assert spec.input.shape == (1, TINY_SIZE, TINY_SIZE, 3)
    assert spec.output.shape == (1, TINY_SIZE // 2, TINY_SIZE // 2, 14)
    assert spec.output_stride == 2
    assert spec.source["format"] == fmt

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == result.manifest
    by_id = {a["id"]: a for a in manifest["artifacts"]}
    assert set(by_id) == {"model", "spec", "tflite/fp32"}
    for art in manifest["artifacts"]:
        assert art["sha256"] == sha256_path(out / art["path"]), art["id"]
    assert by_id["tflite/fp32"]["stage"] == "tflite/fp32"
    assert manifest["tools"]["tensorflow"].startswith("2.")
    (gate,) = manifest["gates"]["parity"]["results"]
    assert gate["status"] == "passed"
    assert gate["metrics"]["max_abs"] < 1e-4
    assert gate["metrics"]["samples"] == 6  # 4 random + 2 package photos


def test_second_build_is_fully_cached_and_leaves_files_alone(tmp_path, tiny_models):
    recipe = load_recipe(tiny_recipe(tmp_path, tiny_models))
    build(recipe, out_root=tmp_path / "build")
    manifest = tmp_path / "build" / "tiny" / "manifest.json"
    before = manifest.stat().st_mtime_ns
    again = build(load_recipe(tiny_recipe(tmp_path, tiny_models)), out_root=tmp_path / "build")
    assert set(statuses(again).values()) == {"cached"}
    assert again.written == "unchanged"
    assert manifest.stat().st_mtime_ns == before


def test_changing_one_key_reruns_only_what_depends_on_it(tmp_path, tiny_models):
    path = tiny_recipe(tmp_path, tiny_models)
    build(load_recipe(path), out_root=tmp_path / "build")
    result = build(load_recipe(path, ["export.tflite.variants=[fp32, fp16]"]), out_root=tmp_path / "build")
    assert statuses(result) == {
        "model": "cached",
        "people/model": "cached",
        "tflite/fp32": "cached",
        "parity/tflite/fp32": "cached",
        "tflite/fp16": "ran",
        "parity/tflite/fp16": "ran",
    }
    assert (tmp_path / "build" / "tiny" / "tflite" / "tiny_fp16.tflite").is_file()


def test_changing_a_tolerance_reruns_nothing(tmp_path, tiny_models):
    path = tiny_recipe(tmp_path, tiny_models)
    build(load_recipe(path), out_root=tmp_path / "build")
    result = build(load_recipe(path, ["verify.tolerances.tflite/fp32.max_abs=0"]), out_root=tmp_path / "build")
    assert set(statuses(result).values()) == {"cached"}
    assert result.written == "manifest"
    assert [g.status for g in result.gates if g.gate == "parity"] == ["failed"]


def test_no_cache_reruns_every_stage(tmp_path, tiny_models):
    path = tiny_recipe(tmp_path, tiny_models)
    build(load_recipe(path), out_root=tmp_path / "build")
    result = build(load_recipe(path), out_root=tmp_path / "build", use_cache=False)
    assert set(statuses(result).values()) == {"ran"}


def test_only_export_skips_verification(tmp_path, tiny_models):
    lines: list[str] = []
    result = build(load_recipe(tiny_recipe(tmp_path, tiny_models)), out_root=tmp_path / "build", only=["export"], progress=lines.append)
    assert statuses(result) == {"model": "ran", "tflite/fp32": "ran"}
    assert result.outcome.skipped == ["people/model", "parity/tflite/fp32"]
    assert [g.status for g in result.gates if g.gate == "parity"] == ["not run"]
    # The log counts and lists what ran or was needed; the stages left out are named once.
    tagged = [line for line in lines if line.startswith("[")]
    assert {line.split(":")[0] for line in tagged} == {"[1/2] model", "[2/2] tflite/fp32"}, lines
    assert "not run (not selected by --only): people/model, parity/tflite/fp32" in lines
    assert not [line for line in lines if "skipped" in line], lines
    assert not [line for line in tagged if "[" in line.split("]", 1)[1]], lines  # no brackets inside a tagged line
    again: list[str] = []
    build(load_recipe(tiny_recipe(tmp_path, tiny_models)), out_root=tmp_path / "build", only=["tflite"], progress=again.append)
    assert [line for line in again if line.startswith("[")] == ["[1/2] model: cached", "[2/2] tflite/fp32: cached"]


def test_unknown_only_stage(tmp_path, tiny_models):
    with pytest.raises(InputError) as caught:
        build(load_recipe(tiny_recipe(tmp_path, tiny_models)), out_root=tmp_path / "build", only=["tflte"])
    assert "no such stage in this build (did you mean 'tflite'?)" in caught.value.message


def test_parity_failure_exits_1_with_a_table_and_still_writes(tmp_path, tiny_models, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tiny_recipe(
        tmp_path,
        tiny_models,
        extra="""
        export: {tflite: {variants: [fp32, fp16]}}
        verify:
          tolerances:
            tflite/fp16: {max_abs: 0.0, min_agreement: 1.0}
        """,
    )
    result = cli("build", path)
    assert result.exit_code == 1
    assert "parity problems:" in result.stdout
    assert "tflite/fp16  max_abs" in result.stdout
    assert "error: 1 verification gate failed: parity of tflite/fp16" in result.stderr
    manifest = json.loads((tmp_path / "build" / "tiny" / "manifest.json").read_text())
    gates = {g["artifact"]: g["status"] for g in manifest["gates"]["parity"]["results"]}
    assert gates == {"tflite/fp32": "passed", "tflite/fp16": "failed"}

    warned = cli("build", path, "--set", "verify.parity=warn")
    assert warned.exit_code == 0
    assert "warned" in warned.stdout


def test_wrong_input_size_names_the_recipe_key(tmp_path, tiny_models, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tiny_recipe(tmp_path, tiny_models, fmt="frozen_pb")
    with pytest.raises(ModelError) as caught:
        build(load_recipe(path, ["model.input.size=[64, 64]"]), out_root=tmp_path / "build")
    assert caught.value.message == "model.input.size is [64, 64] but the model's input is 32 high (shape [1, 32, 32, 3])"
    assert caught.value.where == "--set model.input.size=[64, 64]:1:18"


def test_keypoint_count_must_match_output_channels(tmp_path, tiny_models):
    path = tiny_recipe(tmp_path, tiny_models, extra="")
    with pytest.raises(ModelError) as caught:
        build(load_recipe(path, ["model.keypoints=coco17"]), out_root=tmp_path / "build")
    assert caught.value.message == "the model outputs 14 heatmap channels but keypoint set coco17 has 17"
    assert not (tmp_path / "build" / "tiny").exists()


def test_unknown_frozen_output_suggests_the_closest_node(tmp_path, tiny_models):
    path = tiny_recipe(tmp_path, tiny_models, fmt="frozen_pb")
    with pytest.raises(ModelError) as caught:
        build(load_recipe(path, ["model.import.outputs=[Identty]"]), out_root=tmp_path / "build")
    assert "unknown output tensor 'Identty'" in caught.value.message
    assert "did you mean 'Identity'" in caught.value.message


def test_missing_model_file(tmp_path, tiny_models, cli):
    path = tiny_recipe(tmp_path, tiny_models)
    result = cli("build", path, "--set", f"model.import.path={tmp_path / 'gone.keras'}", "--out", tmp_path / "b")
    assert result.exit_code == 2
    assert f"error: --set model.import.path={tmp_path / 'gone.keras'}:1:19: model file not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "b").exists()


def test_not_a_model_file(tmp_path, tiny_models, cli):
    junk = write(tmp_path / "junk.pb", "this is not a protobuf")
    path = tiny_recipe(tmp_path, tiny_models, fmt="frozen_pb")
    result = cli("build", path, "--set", f"model.import.path={junk}", "--out", tmp_path / "b")
    assert result.exit_code == 2
    assert "junk.pb is not a TensorFlow GraphDef" in result.stderr


def test_refuses_to_replace_a_folder_that_is_not_a_build(tmp_path, tiny_models):
    precious = tmp_path / "build" / "tiny"
    precious.mkdir(parents=True)
    (precious / "notes.txt").write_text("mine")
    with pytest.raises(InputError) as caught:
        build(load_recipe(tiny_recipe(tmp_path, tiny_models)), out_root=tmp_path / "build")
    assert "is not an mdeploy build folder" in caught.value.message
    assert (precious / "notes.txt").read_text() == "mine"


def test_checksum_of_a_local_model_is_verified(tmp_path, tiny_models):
    path = tiny_recipe(tmp_path, tiny_models)
    with pytest.raises(ModelError) as caught:
        build(load_recipe(path, ["model.import.sha256=" + "ab" * 32]), out_root=tmp_path / "build")
    assert caught.value.message.startswith("checksum mismatch for ")


def test_url_import_downloads_once_into_the_cache(tmp_path, tiny_models, monkeypatch):
    """file:// stands in for http(s): the same download, verify and cache path, no network."""
    src = tiny_models["frozen_pb"]
    sha = sha256_path(src)
    path = tiny_recipe(tmp_path, tiny_models, fmt="frozen_pb")
    recipe = load_recipe(path, ["model.import.path=", f"model.import.url={src.as_uri()}", f"model.import.sha256={sha}"])
    result = build(recipe, out_root=tmp_path / "build")
    assert [g.status for g in result.gates if g.gate == "parity"] == ["passed"]
    cache = Path(str(tmp_path / "mdeploy-cache"))
    assert (cache / "downloads" / sha / src.name).is_file()


def test_sections_an_import_does_not_use_are_reported(tmp_path, tiny_models, cli):
    path = tiny_recipe(tmp_path, tiny_models, extra="train: {epochs: 2}\n")
    result = cli("build", path, "--out", tmp_path / "b")
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert [w.split(": ", 2)[-1] for w in warnings] == ["train: not used: the model is imported, nothing is trained"]
    manifest = json.loads((tmp_path / "b" / "tiny" / "manifest.json").read_text())
    assert [p["key"] for p in manifest["not_built"]] == ["train"]


def test_bench_devices_that_are_not_there_fail_the_build_step_clearly(tmp_path, tiny_models, cli):
    """A recipe's bench device that cannot be reached: artifacts are built, the bench step says why (exit 3)."""
    path = tiny_recipe(tmp_path, tiny_models, extra="devices: [pixel]\nbench: {runs: 2, trials: 1}\n")
    result = cli("build", path, "--out", tmp_path / "b")
    assert result.exit_code == 3
    assert "bench: not run (no adb server answers at 127.0.0.2:9)" in result.output  # in the summary
    assert "error: no adb server answers at 127.0.0.2:9" in result.output
    assert (tmp_path / "b" / "tiny" / "tflite" / "tiny_fp32.tflite").is_file()


def test_training_without_data_is_refused_clearly(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path / "arch.yaml",
        """
        name: arch
        model:
          arch: mv2_cpm
          input: {size: [192, 192], channels: bgr, range: [0, 255]}
        """,
    )
    result = cli("build", path, "--out", tmp_path / "b")
    assert result.exit_code == 2
    assert "error: arch.yaml:1:1: data: training model.arch needs a data.train split (synthetic, coco or mpii)" in result.stderr
    assert not (tmp_path / "b").exists()


def test_json_summary(tmp_path, tiny_models, cli):
    path = tiny_recipe(tmp_path, tiny_models)
    result = cli("build", path, "--out", tmp_path / "b", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert [s["status"] for s in data["stages"]] == ["ran", "ran", "ran", "ran"]
    again = json.loads(cli("build", path, "--out", tmp_path / "b", "--json").stdout)
    assert [s["status"] for s in again["stages"]] == ["cached", "cached", "cached", "cached"]
    assert again["written"] == "unchanged"


def test_changed_joints_are_counted_against_the_source_models_clear_ones():
    from mdeploy.build import changed_joints, describe_changes

    reference = {"metric": "pckh@0.5", "hits": ["11-0", "1100"], "clear": ["1100", "0011"]}
    artifact = {"metric": "pckh@0.5", "hits": ["10-1", "1100"], "clear": ["0000", "0000"]}
    changes = changed_joints(reference, artifact, "pckh@0.5")
    # Person 0: joint 1 lost (clear in the source), joint 3 gained (weak there), joint 2 not scored;
    # the clear ones: person 0's joints 0 and 1, person 1's 2 and 3 (2 of 4 right in the source, 1 here).
    assert changes == {"lost": 1, "gained": 1, "weak_in_source": 1, "clear_joints": 4,
                       "clear_reference": 50.0, "clear_value": 25.0}
    assert describe_changes(changes, "%") == ("; 1 joint lost, 1 gained; 1 of these 2 weak in the source model "
                                              "(heatmap peak < 0.3 or a second peak); on the 4 it finds clearly: 25.0% vs 50.0%")
    assert changed_joints(reference, artifact | {"metric": "pck@0.2_torso"}, "pckh@0.5") is None
    assert changed_joints(reference, {**artifact, "hits": ["10-1"]}, "pckh@0.5") is None
    assert describe_changes(changed_joints(reference, reference, "pckh@0.5"), "%") == ""


@pytest.mark.parametrize("steps", [0, 300])
def test_a_failed_int8_gate_names_int8_finetuning_unless_it_is_on(tmp_path, tiny_models, steps):
    """An int8 variant that fails parity or accuracy: the hint names the setting that takes back
    int8's loss, and leaves it out where the recipe already fine-tunes."""
    from mdeploy.build import BuildResult, GateResult
    from mdeploy.errors import GateFailure

    path = tiny_recipe(tmp_path, tiny_models, extra=f"""
        data: {{train: {{synthetic: {{count: 8, seed: 1}}}}}}
        export: {{tflite: {{variants: [fp32, int8], int8_finetune: {{steps: {steps}}}}}}}
        """)
    result = BuildResult(recipe=load_recipe(path), build_dir=tmp_path / "out", manifest={}, outcome=None, plan=None,
                         gates=[GateResult("accuracy", "tflite/int8", "failed", split="val")], written="manifest")
    with pytest.raises(GateFailure) as caught:
        result.raise_for_gates()
    assert caught.value.message == "1 verification gate failed: accuracy of tflite/int8 on val"
    assert ("export.tflite.int8_finetune: {steps: 300}" in caught.value.hint) is (steps == 0)
    result.gates = [GateResult("parity", "tflite/fp16", "failed")]
    with pytest.raises(GateFailure) as caught:
        result.raise_for_gates()
    assert "int8_finetune" not in caught.value.hint
