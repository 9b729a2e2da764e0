"""Run the canonical SavedModel with TensorFlow (the reference every artifact is checked against)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdeploy.spec import INPUT_NAME, OUTPUT_NAME, SIGNATURE


class SavedModelRunner:
    def __init__(self, path: Path):
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(str(path))
        self._fn = self._loaded.signatures[SIGNATURE]

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the serving signature by name ([N, ...] each)."""
        runs = [self._fn(**{INPUT_NAME: self._tf.constant(x[None], self._tf.float32)}) for x in batch]
        return {name: np.concatenate([r[name].numpy() for r in runs], axis=0).astype(np.float32) for name in runs[0]}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        outs = [self._fn(**{INPUT_NAME: self._tf.constant(x[None], self._tf.float32)})[OUTPUT_NAME].numpy() for x in batch]
        return np.concatenate(outs, axis=0).astype(np.float32)
