"""Run a Keras `.keras` model (its final output) on the host."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class KerasRunner:
    def __init__(self, path: Path):
        from mdeploy.importers.keras import check_keras_archive

        check_keras_archive(Path(path))  # within the archive limits before Keras reads it
        import keras

        from mdeploy.models.layers import register_custom_layers

        register_custom_layers()  # .keras files trained by mdeploy may hold its layers
        model = keras.models.load_model(path, compile=False)
        outputs = model.outputs
        self._model = model if len(outputs) == 1 else keras.Model(model.inputs, outputs[-1])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._model(batch.astype(np.float32), training=False), np.float32)
