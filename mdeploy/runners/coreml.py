"""Run a Core ML model on macOS (Core ML has no runtime elsewhere; on Linux parity is recorded
as unverified and this runner is never opened).

Core ML models take images: the float input is turned back into the 8-bit pixels it was
made from (the preprocessing is an exact affine map) and handed over as a PIL image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdeploy.errors import EnvironmentProblem


class CoreMLRunner:
    def __init__(self, path: Path):
        import sys

        if sys.platform != "darwin":
            raise EnvironmentProblem("Core ML models run only on macOS")
        import coremltools as ct

        from mdeploy.predict import find_spec

        self._spec = find_spec(path)
        self._model = ct.models.MLModel(str(path))

    def _image(self, x: np.ndarray):
        from PIL import Image

        pre = self._spec.preprocessing
        lo, hi = pre.range
        pixels = ((x * np.asarray(pre.std) + np.asarray(pre.mean)) - lo) * 255.0 / (hi - lo)
        if pre.channels == "bgr":
            pixels = pixels[..., ::-1]
        return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output the spec names (`heatmaps`; a PAF model also `pafs`) by name, [N, ...] each."""
        runs = [self._model.predict({self._spec.input.name: self._image(x)}) for x in batch]
        return {
            o.name: np.concatenate([np.asarray(r[o.name], np.float32).reshape(o.shape) for r in runs], axis=0)
            for o in self._spec.outputs
        }

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.outputs(batch)[self._spec.output.name]
