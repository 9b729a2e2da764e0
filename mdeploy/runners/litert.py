"""Run a .tflite artifact with LiteRT (ai_edge_litert) through its serving signature."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdeploy.importers.canonical import INPUT_NAME, OUTPUT_NAME


class LiteRTRunner:
    def __init__(self, path: Path, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self._interp = Interpreter(model_path=str(path), num_threads=num_threads)
        signatures = self._interp.get_signature_list()
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        self._runner = self._interp.get_signature_runner(key)
        self._in = self._runner.get_input_details()[INPUT_NAME]
        self._out = self._runner.get_output_details()[OUTPUT_NAME]

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._in["dtype"])

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self._in["dtype"])
        if dtype == np.float32:
            return x.astype(np.float32)
        scale, zero = self._in["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if np.dtype(self._out["dtype"]) == np.float32:
            return y.astype(np.float32)
        scale, zero = self._out["quantization"]
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        outs = [self._dequantize(self._runner(**{INPUT_NAME: self._quantize(x[None])})[OUTPUT_NAME]) for x in batch]
        return np.concatenate(outs, axis=0)
