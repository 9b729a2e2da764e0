"""`mdeploy init --import`: tensors listed and proposed, names checked, preprocessing probed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import PEFM_OUTPUT, SHARED, TINY_SIZE, tiny_keras_model

AIC_PHOTOS = SHARED / "data" / "realkp" / "aic"


def two_stage_model(seed: int = 1):
    """A tiny two-stage heatmap model (like a CPM): stage_0 feeds stage_1; both are outputs."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((TINY_SIZE, TINY_SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    s0 = keras.layers.Conv2D(14, 1, activation="sigmoid", name="stage_0")(x)
    y = keras.layers.Concatenate()([x, s0])
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(y)
    s1 = keras.layers.Conv2D(14, 1, activation="sigmoid", name="stage_1")(y)
    return keras.Model(inp, [s0, s1], name="two_stage")


def freeze(fn, path: Path) -> list[str]:
    """Write the frozen GraphDef of `fn(image[1, 32, 32, 3])`; returns its output node names."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = tf.function(fn).get_concrete_function(tf.TensorSpec([1, TINY_SIZE, TINY_SIZE, 3], tf.float32, name="image"))
    frozen = convert_variables_to_constants_v2(concrete)
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return [t.name.split(":")[0] for t in frozen.outputs]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict:
    """A two-stage frozen graph, and a graph that ends in a decoder (argmax) after its heatmaps."""
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("graphs")
    model = two_stage_model()
    names = freeze(lambda x: model(x, training=False), folder / "two_stage.pb")
    tiny = tiny_keras_model()
    freeze(lambda x: tf.argmax(tf.reshape(tiny(x, training=False), [1, -1, 14]), axis=1), folder / "decoded.pb")
    x = np.random.default_rng(0).uniform(0, 1, (1, TINY_SIZE, TINY_SIZE, 3)).astype(np.float32)
    stages = [np.asarray(v) for v in model(x, training=False)]
    return {"two_stage": folder / "two_stage.pb", "two_stage_outputs": names, "decoded": folder / "decoded.pb",
            "x": x, "stages": stages}


def recipe_text(folder: Path, name: str) -> str:
    return (folder / f"{name}.yaml").read_text()


def test_pefm_frozen_graph_needs_no_names_and_its_preprocessing_is_probed(tmp_path, cli, pefm_pb):
    """The acceptance of the init command: the PEFM release proposes image -> stage_5_out, BGR [0, 255]."""
    result = cli("init", "pefm", "--import", pefm_pb, "--dest", tmp_path)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "  image  float32  [1, 192, 192, 3]" in out
    assert f"  {PEFM_OUTPUT}  ResizeBilinear  [1, 96, 96, 14]  heatmaps: aic14" in out
    assert f"proposed: input image -> output {PEFM_OUTPUT} (heatmaps: aic14" in out
    assert "preprocessing probe on 2 photos of people" in out  # the package photos only, by default
    chosen = next(line for line in out.splitlines() if line.endswith("<- chosen"))
    assert chosen.split()[:3] == ["bgr", "[0,", "255]"]
    text = recipe_text(tmp_path, "pefm")
    assert 'inputs: ["image"]' in text and f'outputs: ["{PEFM_OUTPUT}"]' in text
    assert "channels: bgr" in text and "range: [0, 255]" in text and "keypoints: aic14" in text
    assert "# channels and range were probed by `mdeploy init` on 2 photos of people: bgr [0, 255] found 9" in text
    assert "# runner-up settings: rgb [0, 255] 8 (" in text  # the runner-ups' scores are in the recipe

    assert cli("validate", tmp_path / "pefm.yaml").exit_code == 0
    built = cli("build", tmp_path / "pefm.yaml", "--out", tmp_path / "build")
    assert built.exit_code == 0, built.stderr


def test_pefm_names_given_are_checked_against_the_graph(tmp_path, cli, pefm_pb):
    typo = cli("init", "pefm", "--import", pefm_pb, "--output", "Convolutional_Pose_Machine/stage_5_ou", "--dest", tmp_path)
    assert typo.exit_code == 2 and f"did you mean '{PEFM_OUTPUT}'" in typo.stderr
    assert "Traceback" not in typo.stderr
    wrong_input = cli("init", "pefm", "--import", pefm_pb, "--input", "imag", "--dest", tmp_path)
    assert wrong_input.exit_code == 2 and "did you mean 'image'" in wrong_input.stderr
    assert not (tmp_path / "pefm.yaml").exists()
    # An output named on purpose is taken as given, even one that does not read as heatmaps.
    inner = "Convolutional_Pose_Machine/concat_3"
    named = cli("init", "pefm", "--import", pefm_pb, "--output", inner, "--channels", "bgr", "--range", "0,255", "--dest", tmp_path)
    assert named.exit_code == 0, named.stderr
    assert f"proposed: input image -> output {inner} (given) (does not read as heatmaps" in named.stdout
    assert f'outputs: ["{inner}"]' in recipe_text(tmp_path, "pefm") and "probed" not in recipe_text(tmp_path, "pefm")


@pytest.mark.skipif(not AIC_PHOTOS.is_dir(), reason="no real AI Challenger photos here (../shared is absent)")
def test_more_probe_photos_make_the_call_clearer(tmp_path, cli, pefm_pb):
    result = cli("init", "pefm", "--import", pefm_pb, "--probe-images", AIC_PHOTOS, "--dest", tmp_path, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    scores = report["probe"]["scores"]
    assert len(report["probe"]["photos"]) == 2 + len(list(AIC_PHOTOS.glob("*.jpg")))
    assert (scores[0]["channels"], scores[0]["range"]) == ("bgr", [0.0, 255.0])
    assert scores[0]["found"] > scores[1]["found"] >= 0
    assert report["chosen"] == {"input": "image", "input_given": False, "output": PEFM_OUTPUT, "output_given": False, "stride": 2}


def test_tiny_frozen_graph_needs_no_names_and_builds(tmp_path, cli, tiny_models):
    result = cli("init", "tiny", "--import", tiny_models["frozen_pb"], "--dest", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert "proposed: input image -> output Identity (heatmaps: aic14" in result.stdout
    text = recipe_text(tmp_path, "tiny")
    assert 'inputs: ["image"]' in text and 'outputs: ["Identity"]' in text and "# runner-up settings:" in text
    assert cli("build", tmp_path / "tiny.yaml", "--out", tmp_path / "build").exit_code == 0


def test_flags_skip_or_narrow_the_probe(tmp_path, cli, tiny_models):
    given = cli("init", "both", "--import", tiny_models["keras"], "--channels", "bgr", "--range", "-1,1", "--dest", tmp_path)
    assert given.exit_code == 0, given.stderr
    assert "probe" not in given.stdout and given.stdout.strip() == f"wrote {tmp_path / 'both.yaml'}"
    text = recipe_text(tmp_path, "both")
    assert "channels: bgr" in text and "range: [-1, 1]" in text and "probed" not in text
    assert "inputs:" not in text and "outputs:" not in text  # a Keras file's names are only written when given

    ranges_only = cli("init", "half", "--import", tiny_models["keras"], "--channels", "bgr", "--dest", tmp_path, "--json")
    assert ranges_only.exit_code == 0, ranges_only.stderr
    tried = [(s["channels"], tuple(s["range"])) for s in json.loads(ranges_only.stdout)["probe"]["scores"]]
    assert sorted(tried) == [("bgr", (-1.0, 1.0)), ("bgr", (0.0, 1.0)), ("bgr", (0.0, 255.0))]
    assert "channels: bgr" in recipe_text(tmp_path, "half")

    saved = cli("init", "sm", "--import", tiny_models["saved_model"], "--dest", tmp_path)
    assert saved.exit_code == 0, saved.stderr
    assert "preprocessing probe on 2 photos" in saved.stdout and "probed" in recipe_text(tmp_path, "sm")
    assert cli("validate", tmp_path / "sm.yaml").exit_code == 0


def test_the_deepest_heatmap_output_is_proposed(tmp_path, cli, graphs):
    """Two heatmap-like sinks (a two-stage model): the later stage is proposed, the other listed."""
    first, last = graphs["two_stage_outputs"]
    result = cli("init", "two", "--import", graphs["two_stage"], "--channels", "rgb", "--range", "0,1", "--dest", tmp_path)
    assert result.exit_code == 0, result.stderr
    listed = result.stdout.split("candidate outputs", 1)[1]
    assert f"  {first}  " in listed and f"  {last}  " in listed
    assert f"proposed: input image -> output {last} (heatmaps: aic14" in result.stdout
    assert f'outputs: ["{last}"]' in recipe_text(tmp_path, "two")


def test_a_graph_ending_in_a_decoder_offers_its_inner_heatmaps(tmp_path, cli, graphs):
    result = cli("init", "dec", "--import", graphs["decoded"], "--channels", "rgb", "--range", "0,1", "--dest", tmp_path, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    sinks = [o for o in report["outputs_found"] if not o.get("inner")]
    assert [o["op"] for o in sinks] == ["Identity"] and sinks[0]["shape"] == [1, 14]  # the argmax, not heatmaps
    inner = [o for o in report["outputs_found"] if o.get("inner")]
    assert inner and report["chosen"]["output"] == inner[-1]["name"] and inner[-1]["op"] == "Sigmoid"
    built = cli("build", tmp_path / "dec.yaml", "--out", tmp_path / "build")
    assert built.exit_code == 0, built.stderr


def test_bad_imports_exit_2_with_one_message_and_write_nothing(tmp_path, cli, tiny_models):
    import tensorflow as tf

    fake = tmp_path / "fake.tflite"
    fake.write_text("not a model")
    graph = tf.Graph()
    with graph.as_default():
        tf.identity(tf.constant([1.0, 2.0]), name="out")
    no_input = tmp_path / "no_input.pb"
    no_input.write_bytes(graph.as_graph_def().SerializeToString())
    cases = [
        (["--import", fake], "fake.tflite is not a TFLite model"),
        (["--import", no_input], "no_input.pb has no Placeholder node"),
        (["--import", tmp_path / "missing.pb"], "no such file or folder"),
        (["--import", tiny_models["keras"], "--probe-images", tmp_path / "nope"], "--probe-images"),
        (["--import", tiny_models["keras"], "--range", "1,0"], "low < high"),
    ]
    for args, message in cases:
        result = cli("init", "bad", *args, "--dest", tmp_path)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "bad.yaml").exists()


def test_probe_scores_rank_settings_and_flag_close_calls():
    from mdeploy.importers.probe import close_call, probe, probe_photos, recipe_note, settings

    # A stand-in model that "sees" people only when fed raw 0..255 values, whatever the channel order.
    def run(x):
        return np.full((1, 4, 4, 14), x.max() / 255.0, np.float32)

    photos = probe_photos()
    scores = probe(run, (32, 32), photos, settings(), 0.2)
    assert [(s.channels, s.range) for s in scores[:2]] == [("rgb", (0.0, 255.0)), ("bgr", (0.0, 255.0))]
    assert scores[0].found == 14 * len(photos) and all(s.found == 0 for s in scores[2:])
    assert close_call(scores) == scores[1]
    note = recipe_note(scores, len(photos), 0.2)
    assert note[0].startswith("channels and range were probed") and "bgr [0, 255] 28" in note[1]
    assert "close call" in note[2]
    assert close_call(probe(run, (32, 32), photos, settings("bgr"), 0.2)) is None
