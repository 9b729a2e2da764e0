"""Run a .tflite artifact with LiteRT (ai_edge_litert).

mdeploy's own artifacts are run through their serving signature (`image` -> `heatmaps`).
An imported .tflite may have no signature (or one with other names): it is run through its
plain input and output tensors, picked by tensor name, or the only one there is.

`kernels` picks the CPU kernels: "xnnpack" (what an app gets by default: LiteRT applies the
XNNPACK delegate) or "reference" (TFLite's builtin reference kernels). Quantized models can
compute differently under the two, so verification runs both (docs/verification.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdeploy.spec import INPUT_NAME, OUTPUT_NAME


class LiteRTRunner:
    def __init__(
        self,
        path: Path,
        num_threads: int | None = None,
        input_name: str | None = None,
        output_name: str | None = None,
        kernels: str = "xnnpack",
    ):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.BUILTIN_REF if kernels == "reference" else OpResolverType.AUTO
        self._interp = Interpreter(model_path=str(path), num_threads=num_threads, experimental_op_resolver_type=resolver)
        signatures = self._interp.get_signature_list()
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures), None)
        canonical = key is not None and INPUT_NAME in signatures[key]["inputs"]
        self._all = None
        if canonical and input_name is None and output_name is None:
            runner = self._interp.get_signature_runner(key)
            self._in = runner.get_input_details()[INPUT_NAME]
            self._outs = runner.get_output_details()
            first = OUTPUT_NAME if OUTPUT_NAME in self._outs else signatures[key]["outputs"][0]  # a family's first output
            self._out = self._outs[first]
            self._run = lambda x: runner(**{INPUT_NAME: x})[first]
            self._all = lambda x: runner(**{INPUT_NAME: x})
        else:
            self._in = _pick(self._interp.get_input_details(), input_name, "input", path)
            self._out = _pick(self._interp.get_output_details(), output_name, "output", path)
            self._interp.allocate_tensors()
            self._run = self._run_plain

    def _run_plain(self, x: np.ndarray) -> np.ndarray:
        self._interp.set_tensor(self._in["index"], x)
        self._interp.invoke()
        return self._interp.get_tensor(self._out["index"])

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

    def _dequantize(self, y: np.ndarray, details: dict | None = None) -> np.ndarray:
        details = details or self._out
        if np.dtype(details["dtype"]) == np.float32:
            return y.astype(np.float32)
        scale, zero = details["quantization"]
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        outs = [self._dequantize(self._run(self._quantize(x[None]))) for x in batch]
        return np.concatenate(outs, axis=0)

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the serving signature by name, each dequantized with its own parameters."""
        if self._all is None:
            return {OUTPUT_NAME: self(batch)}
        runs = [self._all(self._quantize(x[None])) for x in batch]
        return {name: np.concatenate([self._dequantize(r[name], self._outs[name]) for r in runs], axis=0) for name in runs[0]}


def _pick(details: list[dict], name: str | None, kind: str, path: Path) -> dict:
    from mdeploy.errors import ModelError
    from mdeploy.registry import unknown_name_message

    if name is not None:
        for d in details:
            if d["name"] == name:
                return d
        raise ModelError(unknown_name_message(f"{kind} tensor of {Path(path).name}", name, [d["name"] for d in details]))
    if len(details) != 1:
        raise ModelError(f"{Path(path).name} has {len(details)} {kind}s ({', '.join(d['name'] for d in details)}); name one")
    return details[0]


def reference_kernels(path: Path) -> LiteRTRunner:
    """A runner on TFLite's builtin reference kernels (no XNNPACK)."""
    return LiteRTRunner(path, kernels="reference")
