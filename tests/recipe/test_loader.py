"""The recipe language: extends, overrides, path resolution, defaults, freezing."""

from __future__ import annotations

import shutil

import pytest
from pydantic import ValidationError

from mdeploy.errors import InputError, RecipeError
from mdeploy.recipe import load_recipe
from tests.helpers import write

BASE = """
name: base
model:
  import: {format: frozen_pb, path: models/m.pb, inputs: [image], outputs: [out]}
  input: {size: [192, 192], channels: bgr, range: [0, 255]}
export:
  tflite: {variants: [fp32, fp16]}
verify:
  tolerances:
    tflite/fp16: {max_abs: 0.05}
"""


def test_defaults_are_filled(tmp_path):
    recipe = load_recipe(write(tmp_path / "r.yaml", BASE))
    assert recipe.model.keypoints == "aic14"
    assert recipe.model.input.mean == (0.0, 0.0, 0.0)
    assert recipe.verify.parity == "fail"
    assert recipe.train.epochs == 10 and recipe.train.foreground_weight == 1.0
    assert recipe.bench is None and recipe.data is None


def test_export_defaults_to_tflite_fp32(tmp_path):
    text = BASE.replace("export:\n  tflite: {variants: [fp32, fp16]}\n", "")
    recipe = load_recipe(write(tmp_path / "r.yaml", text))
    assert recipe.export.tflite.variants == ["fp32"]
    assert not recipe.given("export")


def test_mixed_precision_search_is_on_where_an_int8_gate_can_be_checked(tmp_path):
    """The search runs by default for an int8 variant of a recipe with verify.accuracy and a
    data.val split; without either there is nothing to search for, and `enabled: false` turns it off."""
    int8 = BASE.replace("variants: [fp32, fp16]", "variants: [fp32, int8]").replace(
        "name: base\n", "name: base\ndata:\n  train: {synthetic: {count: 8}}\n")
    val = int8.replace("  train: {synthetic: {count: 8}}\n", "  train: {synthetic: {count: 8}}\n  val: {synthetic: {count: 8}}\n")
    gate = "\n  accuracy: {max_drop: 1.0}\n"
    cases = {
        "no gate, no val": (int8, False),
        "val, no gate": (val, False),
        "gate, no val": (int8 + gate, False),
        "gate and val": (val + gate, True),
        "fp16 only": ((val + gate).replace("[fp32, int8]", "[fp32, fp16]"), False),
        "turned off": ((val + gate).replace("variants: [fp32, int8]", "variants: [fp32, int8], mixed_precision: {enabled: false}"), False),
    }
    for case, (text, expected) in cases.items():
        recipe = load_recipe(write(tmp_path / f"{case}.yaml", text))
        assert recipe.mixed_precision_search() is expected, case
        assert recipe.export.tflite.mixed_precision.max_float_layers == 16


def test_extends_merges_maps_and_replaces_lists(tmp_path):
    write(tmp_path / "base" / "b.yaml", BASE)
    child = write(
        tmp_path / "child.yaml",
        """
        extends: base/b.yaml
        name: child
        model:
          input: {channels: rgb}
        export:
          tflite: {variants: [fp16]}
        """,
    )
    recipe = load_recipe(child)
    assert recipe.name == "child"
    assert recipe.model.input.channels == "rgb"  # overridden
    assert recipe.model.input.range == (0.0, 255.0)  # merged from the base
    assert recipe.model.input.size == (192, 192)
    assert recipe.export.tflite.variants == ["fp16"]  # lists replace
    assert recipe.verify.tolerances["tflite/fp16"].max_abs == 0.05


def test_null_removes_an_inherited_key(tmp_path):
    write(tmp_path / "b.yaml", BASE)
    recipe = load_recipe(
        write(
            tmp_path / "c.yaml",
            """
            extends: b.yaml
            name: c
            verify:
              tolerances: null
            """,
        )
    )
    assert recipe.verify.tolerances == {}


def test_relative_paths_resolve_against_the_file_that_wrote_them(tmp_path):
    write(tmp_path / "bases" / "b.yaml", BASE)
    child = write(tmp_path / "recipes" / "c.yaml", "extends: ../bases/b.yaml\nname: c\n")
    assert load_recipe(child).model.import_.path == tmp_path / "bases" / "models" / "m.pb"
    child2 = write(
        tmp_path / "recipes" / "d.yaml",
        "extends: ../bases/b.yaml\nname: d\nmodel:\n  import: {format: frozen_pb, path: own.pb, inputs: [i], outputs: [o]}\n",
    )
    assert load_recipe(child2).model.import_.path == tmp_path / "recipes" / "own.pb"


def test_set_overrides_any_key_with_yaml_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "sub" / "r.yaml", BASE)
    recipe = load_recipe(
        path,
        [
            "export.tflite.variants=[fp32, dynamic]",
            "train.epochs=3",
            "model.import.path=elsewhere/x.pb",
            "verify.tolerances.tflite/fp32.max_abs=0.001",
        ],
    )
    assert recipe.export.tflite.variants == ["fp32", "dynamic"]
    assert recipe.train.epochs == 3
    assert recipe.model.import_.path == tmp_path / "elsewhere" / "x.pb"  # --set paths: the working folder
    assert recipe.verify.tolerances["tflite/fp32"].max_abs == 0.001
    assert recipe.overrides[1] == "train.epochs=3"


def test_set_errors_point_at_the_argument(tmp_path):
    path = write(tmp_path / "r.yaml", BASE)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, ["train.epochs=ten"])
    assert caught.value.issues[0].render() == "--set train.epochs=ten:1:14: train.epochs: expected an integer, got 'ten'"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs", "--set expects KEY=VALUE, got 'train.epochs'"),
        ("=3", "--set expects KEY=VALUE, got '=3'"),
        ("train..epochs=3", "--set train..epochs=3: empty part in key path 'train..epochs'"),
        ("name.x=3", "--set name.x=3: cannot set name.x: name is a string, not a mapping"),
    ],
)
def test_malformed_set(tmp_path, override, message):
    with pytest.raises(InputError) as caught:
        load_recipe(write(tmp_path / "r.yaml", BASE), [override])
    assert caught.value.message == message


def test_set_null_unsets_a_key(tmp_path):
    recipe = load_recipe(write(tmp_path / "r.yaml", BASE), ["verify.tolerances="])
    assert recipe.verify.tolerances == {}


def test_recipe_is_frozen(tmp_path):
    recipe = load_recipe(write(tmp_path / "r.yaml", BASE))
    with pytest.raises(ValidationError):
        recipe.name = "other"
    with pytest.raises(ValidationError):
        recipe.model.input.channels = "rgb"


def test_yaml_anchors_and_merge_keys(tmp_path):
    recipe = load_recipe(
        write(
            tmp_path / "r.yaml",
            """
            name: anchors
            model:
              import: {format: keras, path: m.keras}
              input: {size: [96, 96], channels: rgb, range: [-1, 1]}
            verify:
              tolerances:
                tflite/fp32: &tol {max_abs: 0.001}
                tflite/fp16:
                  <<: *tol
                  min_agreement: 0.5
            """,
        )
    )
    assert recipe.verify.tolerances["tflite/fp16"].max_abs == 0.001
    assert recipe.verify.tolerances["tflite/fp16"].min_agreement == 0.5


def test_section_json_is_independent_of_where_the_project_lives(tmp_path):
    one = write(tmp_path / "a" / "r.yaml", BASE)
    two = tmp_path / "b" / "r.yaml"
    shutil.copytree(one.parent, two.parent)
    j1, j2 = load_recipe(one).section_json("model"), load_recipe(two).section_json("model")
    assert j1 == j2
    assert j1["import"]["path"] == "models/m.pb"


def test_where_points_at_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(write(tmp_path / "r.yaml", BASE))
    assert recipe.where("model", "import") == "r.yaml:3:11"
    assert recipe.where("export", "tflite", "variants", 1) == "r.yaml:6:29"


def test_missing_recipe_file(tmp_path):
    with pytest.raises(InputError) as caught:
        load_recipe(tmp_path / "nope.yaml")
    assert "recipe not found" in caught.value.message


def test_non_utf8_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert "not UTF-8" in caught.value.issues[0].message


def test_json_schema_describes_recipes():
    from mdeploy.recipe.schema import Recipe

    schema = Recipe.model_json_schema(by_alias=True)
    model = schema["$defs"]["ModelSection"]["properties"]
    assert "import" in model and "import_" not in model
    channels = schema["$defs"]["InputSection"]["properties"]["channels"]
    assert channels["enum"] == ["rgb", "bgr"]
    assert schema["additionalProperties"] is False


def test_checksum_read_as_a_number_asks_for_quotes(tmp_path):
    with pytest.raises(RecipeError) as caught:
        load_recipe(write(tmp_path / "r.yaml", BASE), ["model.import.sha256=" + "0" * 64])
    assert caught.value.issues[0].message == "YAML read this checksum as a number: put it in quotes"


def test_every_shipped_recipe_validates():
    """The recipes/ folder is documentation users copy: each must load as it is."""
    from mdeploy.recipe import load_recipe
    from tests.helpers import REPO

    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert len(recipes) >= 4
    for path in recipes:
        assert load_recipe(path).name == path.stem


def test_control_characters_are_refused_with_their_position(tmp_path):
    """A raw NUL made parse_yaml raise outside its try (exit 70); escaped ones reached build folders and reports."""
    (tmp_path / "b.yaml").write_bytes(BASE.replace("name: base", "name: ba\x00se").encode())
    child = write(tmp_path / "c.yaml", "extends: b.yaml\nname: c\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(child)
    (issue,) = caught.value.issues
    assert (issue.mark.file.endswith("b.yaml"), issue.mark.line, issue.mark.col) == (True, 2, 9)
    assert issue.message.startswith("YAML syntax: character U+0000 is not allowed")
    for text in ('description: "a\\0b"', 'description: "\\e[31mred"', '"a\\x07": 1', "description: \"a\\u0085b\""):
        with pytest.raises(RecipeError, match="is not allowed"):
            load_recipe(write(tmp_path / "r.yaml", BASE + text + "\n"))
    assert load_recipe(write(tmp_path / "r.yaml", BASE + 'description: "tab\\tand\\nline"\n')).description == "tab\tand\nline"


def test_set_value_problems_are_placed_in_the_argument(tmp_path):
    path = write(tmp_path / "r.yaml", BASE)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, ["verify.tolerances={tflite/fp16: {max_abs: 1}, tflite/fp16: {max_abs: 2}}"])
    (issue,) = caught.value.issues
    assert issue.keypath == ("verify", "tolerances", "tflite/fp16")  # under the key the argument sets
    assert str(issue.mark) == "--set verify.tolerances={tflite/fp16: {max_abs: 1}, tflite/fp16: {max_abs: 2}}:1:47"
    with pytest.raises(InputError, match="extends cannot be overridden"):
        load_recipe(path, ["extends=other.yaml"])
    with pytest.raises(InputError, match="extends cannot be overridden"):
        load_recipe(path, ["extends.x=1"])


def test_a_required_key_unset_by_set_points_at_the_argument(tmp_path):
    with pytest.raises(RecipeError) as caught:
        load_recipe(write(tmp_path / "r.yaml", BASE), ["model.input.channels="])
    assert [i.render() for i in caught.value.issues] == ["--set model.input.channels=:1:1: model.input.channels: required key is missing"]


def test_accuracy_crops_is_auto_or_a_count(tmp_path):
    path = write(tmp_path / "r.yaml", BASE + "  accuracy: {max_drop: 1.0}\n")
    assert load_recipe(path).verify.accuracy.crops == "auto"
    assert load_recipe(path, ["verify.accuracy.crops=8"]).verify.accuracy.crops == 8
    for bad, shown in (("0", "0"), ("65", "65"), ("many", "'many'"), ("true", "True")):
        with pytest.raises(RecipeError) as caught:
            load_recipe(path, [f"verify.accuracy.crops={bad}"])
        assert caught.value.issues[0].render().endswith(
            f"verify.accuracy.crops: expected auto or a whole number from 1 to 64, got {shown}"), bad


def test_int8_finetune_is_off_unless_given_steps(tmp_path):
    path = write(tmp_path / "r.yaml", BASE)
    tuned = load_recipe(path).export.tflite.int8_finetune
    assert (tuned.steps, tuned.learning_rate, tuned.batch) == (0, 1e-5, 8)
    tuned = load_recipe(path, ["export.tflite.int8_finetune={steps: 300, learning_rate: 3.0e-5}"]).export.tflite.int8_finetune
    assert (tuned.steps, tuned.learning_rate, tuned.batch) == (300, 3e-5, 8)
    for bad in ("steps=-1", "steps=many", "learning_rate=0", "batch=0", "epochs=3"):
        with pytest.raises(RecipeError) as caught:
            load_recipe(path, [f"export.tflite.int8_finetune.{bad}"])
        assert f"export.tflite.int8_finetune.{bad.split('=')[0]}:" in caught.value.issues[0].render(), bad
