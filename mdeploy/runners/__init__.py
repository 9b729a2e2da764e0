"""Runners: execute a model artifact on the host on float inputs, one format per module.

Verification (parity), evaluation and prediction all run models through these, so every
format is fed and read the same way. A runner takes a float32 batch [N, H, W, 3] laid
out as the ModelSpec input and returns the float32 heatmaps [N, h, w, K]; quantized
inputs and outputs are (de)quantized inside the runner with the model's own parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from mdeploy.registry import Registry, lazy


class ModelRunner(Protocol):
    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


RUNNERS: Registry[Callable[[Path], ModelRunner]] = Registry("runtime")
RUNNERS.register("saved_model", lazy("mdeploy.runners.tensorflow", "SavedModelRunner"))
RUNNERS.register("tflite", lazy("mdeploy.runners.litert", "LiteRTRunner"))
RUNNERS.register("tflite_reference", lazy("mdeploy.runners.litert", "reference_kernels"))
RUNNERS.register("keras", lazy("mdeploy.runners.keras", "KerasRunner"))
RUNNERS.register("onnx", lazy("mdeploy.runners.onnxrt", "OnnxRunner"))
RUNNERS.register("coreml", lazy("mdeploy.runners.coreml", "CoreMLRunner"))
RUNNERS.register("mace", lazy("mdeploy.runners.mace", "MaceEmulationRunner"))


def open_runner(fmt: str, path: Path) -> ModelRunner:
    return RUNNERS.get(fmt)(Path(path))
