"""The tf-openpose release run once per session on the real COCO photos, for every test that needs it.

`thin_release` (and `run_thin_release` for tests outside this folder, e.g. the generated
decoders' check) runs the real `mobilenet_thin` frozen graph from ../shared with TensorFlow
as the release's estimator feeds it (BGR 0..255, bicubic resize to 432 x 368). It skips
cleanly when ../shared or TensorFlow is absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pytest

from tests.helpers import SHARED

THIN_PB = SHARED / "reference" / "tf-openpose" / "mobilenet_thin" / "graph_opt.pb"
REAL_COCO = SHARED / "data" / "realkp" / "coco"
REAL_COCO_JSON = REAL_COCO / "test_coco.json"
THIN_INPUT_HW = (368, 432)


@dataclass(frozen=True)
class ReleaseRun:
    coco: dict  # the parsed ground-truth file
    outputs: dict[str, np.ndarray]  # file name -> model output [46, 54, 57]


def release_available() -> bool:
    return THIN_PB.is_file() and REAL_COCO_JSON.is_file()


@lru_cache(maxsize=1)
def run_thin_release() -> ReleaseRun:
    """The release's outputs on the 4 photos (TensorFlow imported here, once)."""
    import tensorflow as tf
    from PIL import Image

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(THIN_PB.read_bytes())
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph, name=""), [])
    run = wrapped.prune("image:0", "Openpose/concat_stage7:0")
    coco = json.loads(REAL_COCO_JSON.read_text())
    outputs = {}
    for image in coco["images"]:
        rgb = Image.open(REAL_COCO / image["file_name"]).convert("RGB").resize(THIN_INPUT_HW[::-1], Image.BICUBIC)
        bgr = np.asarray(rgb, np.float32)[None, :, :, ::-1].copy()  # the release takes BGR 0..255
        outputs[image["file_name"]] = run(tf.constant(bgr)).numpy()[0]
    return ReleaseRun(coco, outputs)


@pytest.fixture(scope="session")
def thin_release() -> ReleaseRun:
    if not release_available():
        pytest.skip("tf-openpose's release or the real photos are not here: ../shared is absent")
    pytest.importorskip("tensorflow")
    return run_thin_release()
