"""Test helpers: tiny real models in every import format, recipe writing, CLI running."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PEFM_DIR = SHARED / "reference" / "pefm" / "cpm_model"
PEFM_PB = PEFM_DIR / "model.pb"
PEFM_SHA256 = "e9314c15af001cafde741dde93827f646361b3b4cf08131807a8ec91e4e93134"
PEFM_OUTPUT = "Convolutional_Pose_Machine/stage_5_out"

TINY_SIZE = 32  # input 32x32, output 16x16x14 (stride 2)


def tiny_keras_model(seed: int = 0, keypoints: int = 14, size: int = TINY_SIZE):
    """A real Keras heatmap model of ~2k parameters (conv stride 2 -> depthwise -> 1x1 conv)."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu6")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu")(x)
    out = keras.layers.Conv2D(keypoints, 1, activation="sigmoid", name="heatmaps")(x)
    return keras.Model(inp, out, name="tiny_pose")


def save_all_formats(folder: Path, seed: int = 0) -> dict[str, Path]:
    """The same tiny model as .keras, SavedModel folder and TF1 frozen .pb."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_keras_model(seed)
    keras_path = folder / "tiny.keras"
    model.save(keras_path)
    sm_path = folder / "tiny_saved_model"
    model.export(str(sm_path), format="tf_saved_model", verbose=False)

    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, TINY_SIZE, TINY_SIZE, 3], tf.float32, name="image")
    )
    frozen = convert_variables_to_constants_v2(fn)
    graph_def = frozen.graph.as_graph_def()
    out_name = frozen.outputs[0].name.split(":")[0]
    in_name = frozen.inputs[0].name.split(":")[0]
    pb_path = folder / "tiny.pb"
    pb_path.write_bytes(graph_def.SerializeToString())
    (folder / "tiny.pb.names").write_text(f"{in_name}\n{out_name}\n")
    return {"keras": keras_path, "saved_model": sm_path, "frozen_pb": pb_path}


def pytorch_style_onnx(model, path: Path, size: int, nchw_output: bool) -> Path:
    """`model` (NHWC, a [1, size, size, 3] input) exported as PyTorch exports a 3-D model: NCHW
    input `input`; output `volume` [1, C, H, W] (`nchw_output`) or `coords` as the model gives it."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    if nchw_output:
        fn = tf.function(lambda image: {"volume": tf.transpose(model(image), [0, 3, 1, 2])})
    else:
        fn = tf.function(lambda image: {"coords": model(image)})
    spec = [tf.TensorSpec([1, size, size, 3], tf.float32, name="input")]
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, inputs_as_nchw=["input:0"])
    onnx.save(proto, str(path))
    return path


# A tiny LPSKI (Human3.6M-17 joints, 4 depth bins) trained on the synthetic 3-D people the build
# generates itself, then built into every format. One build of it (the session fixture
# `volumetric_training_build`, tests/conftest.py) serves tests/families/test_volumetric_training.py
# and the report's 3-D skeletons (tests/report/test_skeletons3d.py).
VOLUMETRIC_IMAGENET = "{size: [64, 64], channels: rgb, range: [0, 1], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}"
VOLUMETRIC_TRAINING_RECIPE = f"""
name: tiny3d_train
model:
  arch: tiny_lpski
  input: {VOLUMETRIC_IMAGENET}
  keypoints: h36m17
data:
  train: {{synthetic: {{count: 64, seed: 1, size: 64, keypoints3d: h36m17}}}}
  val: {{name: synth3d, synthetic: {{count: 16, seed: 2, size: 64, keypoints3d: h36m17}}}}
train: {{epochs: 3, batch_size: 16, optimizer: {{lr: 0.005}}, early_stop: {{patience: 1}}}}
export:
  tflite: {{variants: [fp32, int8], calibration: {{samples: 32}}}}
  onnx: {{opset: 17}}
  coreml: {{precision: fp16, minimum_deployment_target: iOS16}}
  mace: {{runtime: cpu+gpu, target_abis: [arm64-v8a]}}
verify:
  samples: {{random: 2}}
  find_people: warn
  tolerances: {{tflite/int8: {{max_abs: 40.0, min_agreement: 0.0}}}}
  accuracy: {{max_drop: 5.0}}
"""


def frozen_names(pb_path: Path) -> tuple[str, str]:
    in_name, out_name = (pb_path.parent / "tiny.pb.names").read_text().split()
    return in_name, out_name


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def tiny_recipe(folder: Path, models: dict[str, Path], fmt: str = "keras", name: str = "tiny", extra: str = "") -> Path:
    """A recipe importing one of the tiny models; `extra` is appended YAML."""
    import os as _os

    rel = Path(_os.path.relpath(models[fmt], folder)).as_posix()
    names = ""
    if fmt == "frozen_pb":
        in_name, out_name = frozen_names(models[fmt])
        names = f"\n    inputs: [{in_name}]\n    outputs: [{out_name}]"
    text = f"""\
name: {name}
model:
  import:
    format: {fmt}
    path: {rel}{names}
  input: {{size: [{TINY_SIZE}, {TINY_SIZE}], channels: rgb, range: [0, 1]}}
  keypoints: aic14
"""
    return write(folder / f"{name}.yaml", text + textwrap.dedent(extra))


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real `mdeploy` entry point in a child process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mdeploy", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


DOT_COLOURS = [
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 128, 0),
    (128, 0, 255), (0, 128, 255), (255, 0, 128), (128, 255, 0), (0, 255, 128), (255, 255, 255), (0, 0, 0),
]


def dots_dataset(folder: Path, count: int, size: int = 64, seed: int = 0, blank: bool = False) -> Path:
    """A COCO-keypoints set a tiny model learns in seconds: 14 keypoints drawn as dots of 14 colours
    on grey. `blank` writes the same labels over empty grey images (broken calibration data)."""
    import json

    import numpy as np
    from PIL import Image, ImageDraw

    from mdeploy.keypoints import get_keypoint_set

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(count):
        img = Image.new("RGB", (size, size), (128, 128, 128))
        draw = ImageDraw.Draw(img)
        pts = rng.uniform(6, size - 6, (14, 2))
        kps = []
        for k, (x, y) in enumerate(pts):
            if not blank:
                draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=DOT_COLOURS[k])
            kps += [float(x), float(y), 2]
        name = f"{i:05d}.png"
        img.save(folder / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        anns.append({"id": i + 1, "image_id": i + 1, "keypoints": kps, "num_keypoints": 14, "bbox": [0, 0, size, size]})
    kps_set = get_keypoint_set("aic14")
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person", "keypoints": list(kps_set.names)}]}
    (folder / "annotations.json").write_text(json.dumps(data))
    return folder
