"""Accuracy-driven mixed precision for the full-integer TFLite variant.

When the int8 variant loses more accuracy than `verify.accuracy` allows, some layers are
kept in float: LiteRT's quantization debugger measures every quantized layer's error on
the validation images (the model quantized with the calibration images; the validation
images only probe it, they never set a range) as the error of each channel relative to that
channel's own spread, averaged over channels; the layers are ranked by it (the usual
`rmse/scale` is recorded too), and the fewest of the worst layers are kept in
float that bring every validation split back under its gate (the count is found by
doubling, then bisection: about 2 log2(n) conversions). The search stops at
`export.tflite.mixed_precision.max_float_layers`; the layers kept in float, their error and
what each step of the search measured go into the manifest and the report.

The validation splits choose which layers and how many, so the int8 accuracy the build
reports after a search is the one that passed it: an optimistic number on those splits,
which the report says.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from collections.abc import Callable
from pathlib import Path


def _converter(saved_model: Path, calibration: Callable, int8_io: str, mixed: bool):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    converter.optimizations = {tf.lite.Optimize.DEFAULT}
    ops = {tf.lite.OpsSet.TFLITE_BUILTINS_INT8}
    if mixed:
        ops.add(tf.lite.OpsSet.TFLITE_BUILTINS)  # float kernels for the layers kept in float
    converter.target_spec.supported_ops = ops
    converter.representative_dataset = lambda: ([x] for x in calibration())
    if int8_io != "float":
        converter.inference_input_type = tf.uint8 if int8_io == "uint8" else tf.int8
        converter.inference_output_type = tf.uint8 if int8_io == "uint8" else tf.int8
    return converter


def rank_layers(saved_model: Path, calibration: Callable, int8_io: str, probe: Callable) -> list[dict]:
    """Quantized layers, worst first: tensor name, op, rmse/scale of the int8 model (quantized with
    the calibration images) against the float one, on the `probe` images."""
    import tensorflow as tf

    options = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics={"channel_error": channel_error})
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=_converter(saved_model, calibration, int8_io, mixed=False),
        debug_dataset=lambda: ([x] for x in probe()),
        debug_options=options,
    )
    debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    rows = []
    for row in csv.DictReader(io.StringIO(buffer.getvalue())):
        try:
            rmse, scale, error = math.sqrt(float(row["mean_squared_error"])), float(row["scale"]), float(row["channel_error"])
        except (KeyError, ValueError):
            continue
        if scale > 0 and math.isfinite(error):
            rows.append({"tensor": row["tensor_name"], "op": row.get("op_name", ""), "channel_error": round(error, 4),
                         "rmse_over_scale": round(rmse / scale, 4)})
    return sorted(rows, key=lambda r: -r["channel_error"])


def channel_error(float_tensors, quant_tensors, scale: float, zero_point: int) -> float:
    """Mean over channels of the quantization error relative to the channel's own spread.

    The debugger's usual rmse/scale measures the error in quantization steps, which misses a
    tensor whose step is too coarse for most of its channels (one channel with a far wider
    range sets the scale of all). Relative to each channel's spread, that is the worst error.
    """
    import numpy as np

    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite tensor scores NaN, which the ranking skips
        f = np.concatenate([np.asarray(t, np.float64).reshape(-1, np.shape(t)[-1]) for t in float_tensors])
        q = np.concatenate([(np.asarray(t, np.float64).reshape(-1, np.shape(t)[-1]) - zero_point) * scale
                            for t in quant_tensors])
        rmse = np.sqrt(np.mean((q - f) ** 2, axis=0))
        spread = f.std(axis=0)
    live = spread > 1e-6
    return float(np.mean(rmse[live] / spread[live])) if live.any() else 0.0


def consumers(flatbuffer: bytes, tensors: list[str]) -> list[str]:
    """`tensors` and the outputs of every op that reads one of them.

    Keeping a tensor in float takes its producer and its consumers: an op left in float whose
    output feeds an int8 op is quantized again right after it, with the same coarse scale.
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flatbuffer)
    names = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # noqa: SLF001 (the graph's own op list)
    wanted = set(tensors)
    out = list(tensors)
    for op in ops:
        if any(names.get(i) in wanted for i in op["inputs"]):
            out += [names[o] for o in op["outputs"] if names.get(o) and names[o] not in out]
    # A concatenation kept in float keeps its readers too: int8 would requantize its output with
    # one scale for all its inputs (a PAF model's stage input joins -1..1 PAFs with 0..34 features).
    joined = {names[o] for op in ops if op["op_name"] == "CONCATENATION" for o in op["outputs"] if names.get(o) in out}
    for op in ops:
        if any(names.get(i) in joined for i in op["inputs"]):
            out += [names[o] for o in op["outputs"] if names.get(o) and names[o] not in out]
    return out


def convert_keeping_float(saved_model: Path, calibration: Callable, int8_io: str, tensors: list[str]) -> bytes:
    """The int8 model with the ops that produce `tensors` left in float (see `consumers`)."""
    import tensorflow as tf

    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(tensors), fully_quantize=int8_io != "float")
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=_converter(saved_model, calibration, int8_io, mixed=True),
        debug_dataset=lambda: ([x] for x in calibration()),
        debug_options=options,
    )
    return debugger.get_nondebug_quantized_model()


def search(
    saved_model: Path,
    calibration: Callable,
    probe: Callable,
    int8_io: str,
    passes: Callable[[bytes], tuple[bool, dict]],
    max_float_layers: int,
    log: Callable[[str], None],
) -> dict:
    """The smallest prefix of the ranked layers whose float version passes every gate.

    `passes(flatbuffer)` scores a candidate and says whether every gate holds. Returns the
    chosen flatbuffer (None when no prefix within the limit passes), the layers kept in float
    with their error, and every measurement of the search.
    """
    import tensorflow as tf

    ranked = rank_layers(saved_model, calibration, int8_io, probe)
    # The float graph's tensor names (those the debugger's denylist takes), read once.
    floating = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"]).convert()
    limit = min(max_float_layers, len(ranked))
    trail: list[dict] = []
    cache: dict[int, tuple[bool, bytes]] = {}

    def attempt(k: int) -> bool:
        if k not in cache:
            try:
                kept = consumers(floating, [r["tensor"] for r in ranked[:k]])
                flatbuffer = convert_keeping_float(saved_model, calibration, int8_io, kept)
            except Exception as err:  # the converter refuses some splits of a graph: that candidate fails
                log(f"mixed precision: {k} layer(s) in float: cannot convert ({' '.join(str(err).split())[:200]})")
                trail.append({"float_layers": k, "passed": False, "error": " ".join(str(err).split())[:400]})
                cache[k] = (False, b"")
                return False
            ok, measured = passes(flatbuffer)
            trail.append({"float_layers": k, "passed": ok, **measured})
            log(f"mixed precision: {k} layer(s) in float: {'passes' if ok else 'still fails'} ({measured.get('summary', '')})")
            cache[k] = (ok, flatbuffer)
        return cache[k][0]

    low, high = 0, None  # low fails (the plain int8 failed already); high passes
    k = 1
    while k <= limit:
        if attempt(k):
            high = k
            break
        low = k
        k = min(2 * k, limit) if k < limit else limit + 1
    if high is None:
        return {"flatbuffer": None, "float_layers": [], "ranked": ranked[:limit], "trail": trail, "limit": limit}
    while high - low > 1:
        mid = (low + high) // 2
        if attempt(mid):
            high = mid
        else:
            low = mid
    return {"flatbuffer": cache[high][1], "float_layers": ranked[:high], "ranked": ranked[:limit], "trail": trail, "limit": limit}


def scratch_path(flatbuffer: bytes, folder: Path) -> Path:
    """Write a candidate where a runner can open it."""
    handle = tempfile.NamedTemporaryFile(dir=folder, suffix=".tflite", delete=False)
    with handle:
        handle.write(flatbuffer)
    return Path(handle.name)
