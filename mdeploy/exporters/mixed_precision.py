"""Accuracy-driven mixed precision for the full-integer TFLite variant.

When the int8 variant loses more accuracy than `verify.accuracy` allows, some layers are
kept in float. Which ones is measured where it counts, at the model's output: the quantized
tensors are grouped by name scope (the deepest scope level with at most `MAX_GROUPS`
groups: the blocks of a network, or single layers in a small one), and the int8 model is
requantized (one calibration, many requantizations) with candidate groups in float and its
outputs compared with the float model's on the validation images (the model is quantized
with the calibration images; the validation images only probe it, they never set a range).
Groups join the float set one at a time, greedily: each step takes the group that lowers the
output error most per layer, then scores the candidate on every validation split's gate,
until all pass, nothing lowers the error, or `export.tflite.mixed_precision.max_float_layers`
is reached. A layer's own error (LiteRT's quantization debugger: each channel's error relative
to its own spread, averaged, and the usual `rmse/scale`) is recorded beside it, but it does not
choose: a block whose coarse step is amplified by the layers after it (a per-channel scale
that shrinks a 0..6 tensor to 0..0.45, say) shows little error where it happens and much at
the output. The layers kept in float, their group and errors, and what each step measured go
into the manifest and the report.

The validation splits choose which layers and how many, so the int8 accuracy the build
reports after a search is the one that passed it: an optimistic number on those splits,
which the report says.
"""

from __future__ import annotations

import csv
import io
import math
import os
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


class Requantizer:
    """The int8 model calibrated once, requantized with any set of tensors left in float
    (their producer ops: see `consumers` for which to name)."""

    def __init__(self, saved_model: Path, calibration: Callable, int8_io: str):
        import tensorflow as tf

        self._options = tf.lite.experimental.QuantizationDebugOptions(fully_quantize=int8_io != "float")
        self._debugger = tf.lite.experimental.QuantizationDebugger(
            converter=_converter(saved_model, calibration, int8_io, mixed=True),
            debug_dataset=lambda: ([x] for x in calibration()),
            debug_options=self._options,
        )

    def keeping_float(self, tensors: list[str]) -> bytes:
        # The debugger reads its options at each quantization: no second calibration.
        self._options.denylisted_nodes = list(tensors)
        return self._debugger.get_nondebug_quantized_model()


MAX_GROUPS = 32  # the deepest name-scope level with at most this many groups is measured


def group_tensors(tensors: list[str], most: int = MAX_GROUPS) -> dict[str, list[str]]:
    """`tensors` by name scope: the deepest level of the scope path (a tensor's first name less its
    op) at which there are at most `most` groups; every tensor in one group at worst."""

    def scope(name: str, depth: int) -> str:
        return "/".join(name.split(";")[0].split("/")[:-1][:depth])

    deepest = max((len(t.split(";")[0].split("/")) - 1 for t in tensors), default=0)
    best: dict[str, list[str]] = {"": list(tensors)}
    for depth in range(1, deepest + 1):
        grouped: dict[str, list[str]] = {}
        for t in tensors:
            grouped.setdefault(scope(t, depth), []).append(t)
        if len(grouped) > most:
            break
        best = grouped
    return best


class OutputError:
    """How far a candidate's outputs are from the float model's on the `probe` images: the mean
    absolute difference of each output relative to the float output's mean magnitude, averaged
    over outputs (XNNPACK kernels, as apps run them)."""

    def __init__(self, floating: bytes, probe: Callable):
        import numpy as np

        self._inputs = np.concatenate(list(probe()))
        self._folder = tempfile.TemporaryDirectory(prefix="mdeploy-mixed-")
        self._reference = self._outputs(floating)

    def _outputs(self, flatbuffer: bytes) -> dict:
        from mdeploy.runners.litert import LiteRTRunner

        path = scratch_path(flatbuffer, Path(self._folder.name))
        try:
            return LiteRTRunner(path).outputs(self._inputs)
        finally:
            path.unlink(missing_ok=True)

    def __call__(self, flatbuffer: bytes) -> float:
        import numpy as np

        got = self._outputs(flatbuffer)
        return float(np.mean([np.abs(got[k] - v).sum() / max(float(np.abs(v).sum()), 1e-12) for k, v in self._reference.items()]))

    def close(self) -> None:
        self._folder.cleanup()


def search(
    saved_model: Path,
    calibration: Callable,
    probe: Callable,
    int8_io: str,
    passes: Callable[[bytes], tuple[bool, dict]],
    max_float_layers: int,
    log: Callable[[str], None],
) -> dict:
    """Groups kept in float one at a time until every gate passes (greedy on the output error).

    Each step tries every group not yet in float (`group_tensors`; those larger than what is
    left of `max_float_layers` are passed over) together with the groups already chosen, and
    takes the one that lowers the output error (`OutputError`) most per layer; then
    `passes(flatbuffer)` scores the candidate on the gates. Steps stop when the gates pass, when
    no group lowers the error, or at the limit. Returns the chosen flatbuffer (None when nothing
    within the limit passes), the layers kept in float with their group and errors, and every
    measurement of the search.
    """
    import tensorflow as tf

    ranked = rank_layers(saved_model, calibration, int8_io, probe)
    by_tensor = {r["tensor"]: r for r in ranked}
    # The float graph's tensor names (those the debugger's denylist takes), read once.
    floating = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"]).convert()
    requantizer = Requantizer(saved_model, calibration, int8_io)
    limit = min(max_float_layers, len(ranked))
    remaining = [{"group": name, "tensors": tensors} for name, tensors in group_tensors([r["tensor"] for r in ranked]).items()]
    shared = os.path.commonpath([g["group"] for g in remaining]) if len(remaining) > 1 else ""

    def short(group: dict) -> str:  # what tells the groups apart, for the log
        return group["group"][len(shared):].lstrip("/") or group["group"] or "(all)"

    error = OutputError(floating, probe)
    try:
        current = baseline = error(requantizer.keeping_float([]))
        log(f"mixed precision: {len(ranked)} quantized layers in {len(remaining)} group(s); int8 output error {baseline:.4f}")
        chosen: list[dict] = []
        trail: list[dict] = []
        found = {"ranked": ranked[:limit], "int8_output_error": round(baseline, 5), "groups": chosen, "trail": trail, "limit": limit}
        used = 0
        while True:
            best = None
            for group in remaining:
                if used + len(group["tensors"]) > limit:
                    continue
                tensors = [t for g in chosen for t in g["tensors"]] + group["tensors"]
                try:
                    flatbuffer = requantizer.keeping_float(consumers(floating, tensors))
                except Exception as err:  # the converter refuses some splits of a graph: not a candidate
                    log(f"mixed precision: {short(group)} cannot be kept in float ({' '.join(str(err).split())[:160]})")
                    continue
                measured = error(flatbuffer)
                gain = (current - measured) / len(group["tensors"])
                if best is None or gain > best[0]:
                    best = (gain, measured, group, flatbuffer)
            if best is None or best[0] <= 0:
                log("mixed precision: no group left within the limit lowers the output error")
                return {**found, "flatbuffer": None, "float_layers": []}
            _, current, group, flatbuffer = best
            remaining.remove(group)
            used += len(group["tensors"])
            chosen.append({**group, "output_error": round(current, 5)})
            ok, measured = passes(flatbuffer)
            trail.append({"float_groups": len(chosen), "float_layers": used, "group": group["group"],
                          "output_error": round(current, 5), "passed": ok, **measured})
            log(f"mixed precision: + {short(group)} ({len(group['tensors'])} layer(s); {used} in float, "
                f"output error {current:.4f}): {'passes' if ok else 'still fails'} ({measured.get('summary', '')})")
            if ok:
                layers = [{**by_tensor[t], "group": g["group"], "output_error": g["output_error"]}
                          for g in chosen for t in sorted(g["tensors"], key=lambda t: -by_tensor[t]["channel_error"])]
                return {**found, "flatbuffer": flatbuffer, "float_layers": layers}
    finally:
        error.close()


def scratch_path(flatbuffer: bytes, folder: Path) -> Path:
    """Write a candidate where a runner can open it."""
    handle = tempfile.NamedTemporaryFile(dir=folder, suffix=".tflite", delete=False)
    with handle:
        handle.write(flatbuffer)
    return Path(handle.name)
