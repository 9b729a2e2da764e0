"""`mdeploy scaffold` and the app step of `mdeploy build`: what gets written, and what never does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mdeploy.codegen.apps import app_model, write_app
from mdeploy.codegen.files import is_pristine, stamp
from mdeploy.errors import InputError
from mdeploy.recipe import load_recipe
from tests.codegen import toolchain as tc
from tests.codegen.conftest import hostile_recipe
from tests.helpers import REPO

GLUE = "app/src/main/java/com/mdeploy/pose/generated"


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def _scaffold(cli, tmp_path, *args, platform="android", recipe=REPO / "recipes" / "cpm_android.yaml"):
    return cli("scaffold", platform, "--recipe", recipe, "--dest", tmp_path / "app", "--out", tmp_path / "build", *args)


# ---------------------------------------------------------------------------- the committed demo apps


@pytest.mark.parametrize("platform, recipe, folder", [("android", "cpm_android.yaml", "android_demo"), ("ios", "hourglass_ios.yaml", "ios_demo")])
def test_committed_demo_app_is_what_scaffold_writes(tmp_path, platform, recipe, folder):
    """Golden files: android_demo/ and ios_demo/ are the scaffold of the shipped recipes.

    A template change shows up as a diff of these folders (regenerate them with
    `make demo-apps`); a test fails until they are regenerated.
    """
    model = app_model(load_recipe(REPO / "recipes" / recipe), platform, None)
    write_app(model, tmp_path / folder)
    fresh = {k: v[1] for k, v in _snapshot(tmp_path / folder).items()}
    committed_root = REPO / folder
    ignored = {".mdeploy/models.json"}
    committed = {
        k: v[1] for k, v in _snapshot(committed_root).items()
        if k not in ignored and not k.startswith(("app/src/main/assets/", "PoseDemo/Models/"))
    }
    assert sorted(committed) == sorted(fresh), "run `make demo-apps` to regenerate the demo apps"
    for rel, data in fresh.items():
        assert committed[rel] == data, f"{folder}/{rel} differs from the templates: run `make demo-apps`"


def test_every_generated_source_parses(tmp_path):
    """Every .kt, .kts and .swift of both apps (shipped recipes and a hostile one) parses with no ERROR/MISSING node."""
    recipe = hostile_recipe(tmp_path, tmp_path / "hostile_android", tmp_path / "hostile_ios")
    apps = [
        (REPO / "recipes" / "cpm_android.yaml", "android", tmp_path / "a"),
        (REPO / "recipes" / "hourglass_ios.yaml", "ios", tmp_path / "i"),
        (recipe, "android", tmp_path / "hostile_android"),
        (recipe, "ios", tmp_path / "hostile_ios"),
    ]
    checked = 0
    for path, platform, dest in apps:
        write_app(app_model(load_recipe(path), platform, None), dest)
        for source in sorted(dest.rglob("*")):
            language = tc.language_of(source)
            if language:
                assert tc.syntax_problems(source.read_text(encoding="utf-8"), language) == [], source
                checked += 1
    assert checked >= 36  # 9-10 sources per app
    assert tc.syntax_problems("struct A { let x = }\n", "swift") != []  # the check can fail


def test_swift_glue_mirrors_kotlin_glue():
    """Swift cannot be compiled here: its logic is kept a mirror of the Kotlin, function for function.

    Pixel work is the exception: on iOS, Vision warps the frame and the Core ML model's image
    input scales it, so the Swift glue has no warp/normalize/quantize of its own; and Core ML
    gives float outputs, so it reads no 8-bit output buffers (`read`).
    """
    import re

    kotlin = (REPO / "templates/glue/android/PoseMath.kt.j2").read_text()
    swift = (REPO / "templates/glue/ios/PoseMath.swift.j2").read_text()
    kt_funcs = set(re.findall(r"fun (\w+)\(", kotlin)) - {"warp", "sample", "normalize", "quantize", "dequantize", "read"}
    swift_funcs = set(re.findall(r"func (\w+)\(", swift))
    assert {"geometry", "smooth", "decode", "toSource", "toView", "people"} <= kt_funcs
    assert kt_funcs <= swift_funcs, f"in Kotlin only: {sorted(kt_funcs - swift_funcs)}"
    for const in ("0.25", "0.5"):
        assert kotlin.count(f"{const}f") + kotlin.count(f"{const})") <= swift.count(const) + 2, const


def test_ios_app_files(tmp_path):
    recipe = hostile_recipe(tmp_path, tmp_path / "a", tmp_path / "ios")
    write_app(app_model(load_recipe(recipe), "ios", None), tmp_path / "ios")
    import plistlib

    import yaml

    plist = plistlib.loads((tmp_path / "ios" / "PoseDemo" / "Info.plist").read_bytes())
    assert plist["CFBundleDisplayName"] == "@Pose's \"demo\" <&> \\ ?"
    project = yaml.safe_load((tmp_path / "ios" / "project.yml").read_text())
    assert project["targets"]["PoseDemo"]["settings"]["base"]["PRODUCT_BUNDLE_IDENTIFIER"] == "org.example.Hostile-Demo"
    assert project["options"]["deploymentTarget"]["iOS"] == "17.0"
    config = (tmp_path / "ios" / "PoseDemo" / "Generated" / "PoseModelConfig.swift").read_text()
    assert 'static let modelResource = "hostile_demo"' in config


# ---------------------------------------------------------------------------- the write policy


def test_scaffold_is_idempotent(cli, tmp_path):
    first = _scaffold(cli, tmp_path)
    assert first.exit_code == 0, first.output
    assert "model: not copied" in first.output
    before = _snapshot(tmp_path / "app")
    assert f"{GLUE}/PoseEstimator.kt" in before and "app/src/main/java/com/mdeploy/pose/MainActivity.kt" in before
    again = _scaffold(cli, tmp_path, "--json")
    assert again.exit_code == 0
    report = json.loads(again.stdout)
    assert report["written"] == [] and len(report["unchanged"]) == len(before) - 1  # all but the state file
    assert _snapshot(tmp_path / "app") == before  # not even a timestamp moved


def test_edited_generated_file_is_refused_then_forced(cli, tmp_path):
    _scaffold(cli, tmp_path)
    glue = tmp_path / "app" / GLUE / "PoseMath.kt"
    glue.write_text(glue.read_text() + "// my change\n")
    config = tmp_path / "app" / GLUE / "PoseModelConfig.kt"
    config_before = config.read_bytes()
    result = _scaffold(cli, tmp_path, "--set", "description=changed")  # would rewrite PoseModelConfig.kt too
    assert result.exit_code == 2
    assert "PoseMath.kt" in result.output and "--force" in result.output
    assert config.read_bytes() == config_before  # nothing was written
    assert glue.read_text().endswith("// my change\n")
    forced = _scaffold(cli, tmp_path, "--force", "--set", "description=changed")
    assert forced.exit_code == 0
    assert "my change" not in glue.read_text() and is_pristine(glue.read_text())
    assert b"changed" in config.read_bytes()


def test_user_sources_are_kept_and_template_updates_reach_untouched_ones(cli, tmp_path):
    _scaffold(cli, tmp_path)
    activity = tmp_path / "app" / "app/src/main/java/com/mdeploy/pose/MainActivity.kt"
    activity.write_text(activity.read_text().replace("STRATEGY_KEEP_ONLY_LATEST", "STRATEGY_BLOCK_PRODUCER"))
    strings = tmp_path / "app" / "app/src/main/res/values/strings.xml"
    result = _scaffold(cli, tmp_path, "--set", "app.android.name=My Pose")
    assert result.exit_code == 0
    assert "kept 1" in result.output and "MainActivity.kt" in result.output
    assert "STRATEGY_BLOCK_PRODUCER" in activity.read_text()  # the user's edit survives
    assert "My Pose" in strings.read_text()  # an untouched scaffolded file follows the recipe
    forced = _scaffold(cli, tmp_path, "--force")
    assert forced.exit_code == 0 and "STRATEGY_BLOCK_PRODUCER" not in activity.read_text()


def test_dry_run_writes_nothing(cli, tmp_path):
    result = _scaffold(cli, tmp_path, "--dry-run", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["dry_run"] and f"{GLUE}/PoseEstimator.kt" in report["written"]
    assert not (tmp_path / "app").exists()


def test_nothing_is_written_outside_the_destination(cli, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    app = tmp_path / "app"
    (app / "app" / "src").mkdir(parents=True)
    (app / "app" / "src" / "main").symlink_to(outside, target_is_directory=True)
    result = _scaffold(cli, tmp_path)
    assert result.exit_code == 2 and "outside" in result.output
    assert list(outside.iterdir()) == []
    from mdeploy.codegen.files import write_files

    with pytest.raises(InputError, match="outside"):
        write_files(tmp_path / "other", {"../escape.kt": "x"}, source="test")
    assert not (tmp_path / "escape.kt").exists()


def test_header_hash_detects_any_edit():
    text = stamp("package a\n\nval x = 1\n", "A.kt", "recipe r")
    assert is_pristine(text)
    assert not is_pristine(text.replace("x = 1", "x = 2"))
    assert not is_pristine(text + "\n")
    assert not is_pristine("package a\n")


@pytest.mark.parametrize(
    "args, message",
    [
        (("scaffold", "web"), "unknown platform 'web'"),
        (("scaffold", "ios", "--recipe", REPO / "recipes" / "cpm_android.yaml"), "builds no artifact the ios app can run"),
        (("scaffold", "android", "--recipe", REPO / "recipes" / "pefm_cpm.yaml"), "known only once it is built"),
        (("scaffold", "android", "--recipe", "missing.yaml"), "missing.yaml"),
    ],
)
def test_scaffold_errors(cli, tmp_path, args, message):
    result = cli(*args, "--dest", tmp_path / "x", "--out", tmp_path / "build")
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_destination_that_is_a_file_is_refused(cli, tmp_path):
    (tmp_path / "app").write_text("mine")
    result = _scaffold(cli, tmp_path)
    assert result.exit_code == 2 and "not a folder" in result.output
    assert (tmp_path / "app").read_text() == "mine"


def test_corrupt_state_file_is_reported(cli, tmp_path):
    _scaffold(cli, tmp_path)
    (tmp_path / "app" / ".mdeploy" / "scaffold.json").write_text("{not json")
    result = _scaffold(cli, tmp_path)
    assert result.exit_code == 2 and "scaffold.json" in result.output


# ---------------------------------------------------------------------------- mdeploy build with app:


# A one-step tiny model finds no one and draws no keypoint: these tests are about the app, so
# its parity is reported (not gated) and the photos-of-people check is off unless a test asks.
APP_VERIFY = "  parity: warn\n  find_people: off\n"


def _app_recipe(tmp_path: Path, artifact: str = "tflite/fp32", verify: str = APP_VERIFY) -> Path:
    recipe = tmp_path / "app_recipe.yaml"
    recipe.write_text(
        f"""\
name: appbuild
model:
  arch: tiny_cpm
  input: {{size: [32, 32], channels: rgb, range: [-1, 1]}}
  keypoints: aic14
data:
  train: {{synthetic: {{count: 8, seed: 1, size: 32}}}}
train: {{epochs: 1, batch_size: 8}}
export:
  tflite: {{variants: [fp32, fp16]}}
app:
  android: {{project: demo, artifact: {artifact}}}
verify:
{verify}""",
        encoding="utf-8",
    )
    return recipe


def test_build_installs_artifact_and_glue(cli, tmp_path):
    recipe = _app_recipe(tmp_path)
    result = cli("build", recipe, "--out", tmp_path / "build", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    (update,) = summary["apps"]
    assert update["model"] == "app/src/main/assets/appbuild_fp32.tflite" and not update["skipped"]
    demo = tmp_path / "demo"
    built = tmp_path / "build" / "appbuild" / "tflite" / "appbuild_fp32.tflite"
    assert (demo / update["model"]).read_bytes() == built.read_bytes()
    glue_in_build = tmp_path / "build" / "appbuild" / "glue" / "android" / GLUE / "PoseModelConfig.kt"
    assert glue_in_build.read_text() == (demo / GLUE / "PoseModelConfig.kt").read_text()
    assert 'MODEL_ASSET: String = "appbuild_fp32.tflite"' in glue_in_build.read_text()
    assert (demo / "app/src/main/java/com/mdeploy/pose/MainActivity.kt").is_file()

    before = _snapshot(demo)
    again = cli("build", recipe, "--out", tmp_path / "build")
    assert again.exit_code == 0 and "up to date" in again.output
    assert _snapshot(demo) == before

    switched = cli("build", recipe, "--out", tmp_path / "build", "--set", "app.android.artifact=tflite/fp16", "--json")
    assert switched.exit_code == 0, switched.output
    (update,) = json.loads(switched.stdout)["apps"]
    assert update["removed"] == ["app/src/main/assets/appbuild_fp32.tflite"]
    assert sorted(os.listdir(demo / "app/src/main/assets")) == ["appbuild_fp16.tflite"]


def test_failed_gate_leaves_the_app_alone(cli, tmp_path):
    recipe = _app_recipe(tmp_path, verify="  find_people: fail\n")  # the one-step model finds no one: exit 1
    result = cli("build", recipe, "--out", tmp_path / "build")
    assert result.exit_code == 1
    assert "not updated (a verification gate failed)" in result.output
    assert not (tmp_path / "demo").exists()


def test_app_artifact_must_be_built(cli, tmp_path):
    recipe = _app_recipe(tmp_path, artifact="tflite/int8")
    result = cli("build", recipe, "--out", tmp_path / "build")
    assert result.exit_code == 2
    assert "app_recipe.yaml:12:38" in result.output and "does not build" in result.output
    assert not (tmp_path / "build" / "appbuild").exists()


# ---------------------------------------------------------------------------- recipe strings in README.md, strings.xml, Info.plist


MARKUP_NAME = "50% *off* 20% <b>[x](y)</b> `c` & \\ _u_ #"


def test_recipe_strings_reach_readme_strings_and_plist_escaped(tmp_path):
    """The app name goes through one escaping per file: Markdown, Android resources, plist XML."""
    import plistlib
    import xml.etree.ElementTree as ET

    from tests.codegen.test_escape import aapt_format_problem, markdown_heading_text, read_android

    recipe = hostile_recipe(tmp_path, tmp_path / "android", tmp_path / "ios")
    names = [f"app.android.name={json.dumps(MARKUP_NAME)}", f"app.ios.name={json.dumps(MARKUP_NAME)}"]
    loaded = load_recipe(recipe, names)
    write_app(app_model(loaded, "android", None), tmp_path / "android")
    write_app(app_model(loaded, "ios", None), tmp_path / "ios")

    for readme, platform in ((tmp_path / "android" / "README.md", "Android"), (tmp_path / "ios" / "README.md", "iOS")):
        heading = readme.read_text(encoding="utf-8").splitlines()[0]
        assert markdown_heading_text(heading + "\n") == f"{MARKUP_NAME}: {platform} pose demo"

    resources = ET.parse(tmp_path / "android" / "app/src/main/res/values/strings.xml").getroot()
    for string in resources.iter("string"):
        value = read_android(string.text or "")
        if string.get("name") == "app_name":
            assert value == MARKUP_NAME and aapt_format_problem(value)  # two '%': aapt2 would refuse it ...
            assert string.get("formatted") == "false"  # ... unless the resource is marked unformatted
        else:
            assert string.get("formatted") == "false" or not aapt_format_problem(value), string.get("name")

    plist = plistlib.loads((tmp_path / "ios" / "PoseDemo" / "Info.plist").read_bytes())
    assert plist["CFBundleDisplayName"] == MARKUP_NAME


@pytest.mark.parametrize("value", ["Pose $(HOME)", "Pose ${SRCROOT}", "Pose\u202eomeD"])
def test_app_names_xcode_would_expand_or_reorder_are_refused(tmp_path, value):
    from mdeploy.errors import RecipeError

    recipe = hostile_recipe(tmp_path, tmp_path / "android", tmp_path / "ios")
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe, [f"app.ios.name={json.dumps(value)}"])
    assert [i.keypath for i in caught.value.issues] == [("app", "ios", "name")]
    if "$" in value:  # on Android the same text is plain: no build settings there
        load_recipe(recipe, [f"app.android.name={json.dumps(value)}"])
