"""Run an .onnx artifact with ONNX Runtime (CPU), NHWC or NCHW input."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class OnnxRunner:
    def __init__(self, path: Path, num_threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self._session.get_inputs()[0]
        self._input = meta.name
        shape = meta.shape
        self._nchw = len(shape) == 4 and shape[1] == 3 and shape[3] != 3

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name ([N, ...] each; mdeploy's exports keep the canonical names)."""
        names = [o.name for o in self._session.get_outputs()]
        runs = []
        for x in batch.astype(np.float32):
            feed = x.transpose(2, 0, 1)[None] if self._nchw else x[None]
            runs.append(self._session.run(None, {self._input: np.ascontiguousarray(feed)}))
        return {name: np.concatenate([r[i] for r in runs], axis=0).astype(np.float32) for i, name in enumerate(names)}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        first = self._session.get_outputs()[0].name
        return self.outputs(batch)[first]
