"""TFLite export: fp32, fp16 (float16 weights), dynamic (int8 weights) from the canonical SavedModel.

Converted from the fixed-batch SavedModel through its serving signature, so the
artifact's signature names are the canonical `image` and `heatmaps`. Only builtin ops
are allowed: a model that would need Flex (select TF) ops is an error naming them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from mdeploy.errors import ModelError
from mdeploy.exporters import ExportTarget, Tolerance
from mdeploy.spec import ModelSpec

# Default parity tolerances per variant (absolute heatmap error, argmax agreement).
TOLERANCES = {
    "fp32": Tolerance(max_abs=1e-4, min_agreement=0.98),
    "fp16": Tolerance(max_abs=2e-2, min_agreement=0.90),
    "dynamic": Tolerance(max_abs=1e-1, min_agreement=0.80),
    "int8": Tolerance(max_abs=1.5e-1, min_agreement=0.70),
}

BUILT_VARIANTS = ("fp32", "fp16", "dynamic")

_DESCRIBE = {
    "fp32": "convert to TFLite fp32",
    "fp16": "convert to TFLite with float16 weights",
    "dynamic": "convert to TFLite with dynamic-range int8 weights",
}


def targets(recipe) -> list[ExportTarget]:
    section = recipe.export.tflite
    out = []
    for variant in section.variants:
        if variant not in BUILT_VARIANTS:
            continue  # reported by the build plan as not built yet
        out.append(
            ExportTarget(
                artifact_id=f"tflite/{variant}",
                format="tflite",
                variant=variant,
                filename=f"tflite/{recipe.name}_{variant}.tflite",
                settings={"variant": variant},
                tools=("tensorflow",),
                tolerance=TOLERANCES[variant],
                run=convert,
                describe=_DESCRIBE[variant],
            )
        )
    return out


def convert(target: ExportTarget, saved_model: Path, spec: ModelSpec, out_path: Path, log: Callable[[str], None]) -> dict:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    converter.target_spec.supported_ops = {tf.lite.OpsSet.TFLITE_BUILTINS}
    if target.variant == "fp16":
        converter.optimizations = {tf.lite.Optimize.DEFAULT}
        converter.target_spec.supported_types = {tf.float16}
    elif target.variant == "dynamic":
        converter.optimizations = {tf.lite.Optimize.DEFAULT}
    try:
        flatbuffer = converter.convert()
    except Exception as err:  # the converter raises ConverterError and plain exceptions
        raise ModelError(_conversion_message(err), hint=_conversion_hint(err)) from err
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(flatbuffer)
    return {"ops": sorted(_op_names(flatbuffer))}


def _conversion_message(err: Exception) -> str:
    text = str(err)
    flex = sorted(set(re.findall(r"tf\.(\w+)", text))) if "Flex" in text or "select TensorFlow ops" in text else []
    if flex:
        return f"TFLite conversion needs TensorFlow ops that are not TFLite builtins: {', '.join(flex)}"
    first = next((line.strip() for line in text.splitlines() if "error" in line.lower()), text.strip().splitlines()[0] if text.strip() else type(err).__name__)
    return f"TFLite conversion failed: {first[:400]}"


def _conversion_hint(err: Exception) -> str | None:
    if "Flex" in str(err) or "select TensorFlow ops" in str(err):
        return "replace those layers with TFLite-compatible ones; mdeploy does not ship Flex delegates to phones"
    return None


def _op_names(flatbuffer: bytes) -> set[str]:
    """Builtin op names used by a .tflite flatbuffer (via LiteRT's own analyzer data)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flatbuffer)
    return {detail["op_name"] for detail in interp._get_ops_details()}
