"""Accuracy-driven mixed precision for the full-integer TFLite variant.

When the int8 variant loses more accuracy than `verify.accuracy` allows, some layers are
kept in float. Which ones is measured where it counts, at the model's output: the quantized
tensors are grouped by name scope (the deepest scope level with at most `MAX_GROUPS`
groups: the blocks of a network, or single layers in a small one), and the int8 model is
requantized (one calibration, many requantizations) with candidate groups in float and its
outputs compared with the float model's on the validation images (the model is quantized
with the calibration images; the validation images only probe it, they never set a range).
Groups join the float set one at a time, greedily: each step takes the group that lowers the
output error most per layer, up to `export.tflite.mixed_precision.max_float_layers` layers.
The gates of every validation split then say how many of those groups are needed (scored at
1, 2, 4, ... groups, then bisected: about 2 log2(n) scorings). A layer's own error (LiteRT's
quantization debugger: each channel's error relative to its own spread, averaged, and the
usual `rmse/scale`) misses a block whose coarse step is amplified by the layers after it (a
per-channel scale that shrinks a 0..6 tensor to 0..0.45, say): little error where it happens,
much at the output. A relative output error can in turn weigh little what a decoder's
thresholds hang on (a multi-person model's faint false peaks). So when the output-error order
passes nowhere within the limit, single layers ranked by their own error are tried the same
way. The layers kept in float, their group and errors, the order that chose them, and what
each scoring measured go into the manifest and the report.

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
    """The int8 model calibrated once (LiteRT's quantization debugger), then measured layer by layer
    on the `probe` images (the calibration images if none; `ranked`) and requantized with any set of tensors left in float
    (`keeping_float`; their producer ops: see `consumers` for which to name)."""

    def __init__(self, saved_model: Path, calibration: Callable, int8_io: str, probe: Callable | None = None):
        import tensorflow as tf

        from mdeploy.exporters.tflite import int8_converter

        self._fully_quantize = int8_io != "float"
        self._options = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics={"channel_error": channel_error})
        self._debugger = tf.lite.experimental.QuantizationDebugger(
            converter=int8_converter(saved_model, calibration, int8_io, float_kernels=True),
            debug_dataset=lambda: ([x] for x in (probe or calibration)()),
            debug_options=self._options,
        )

    def ranked(self) -> list[dict]:
        """Quantized layers, worst first: tensor name, op, channel error and rmse/scale of the int8
        model (quantized with the calibration images) against the float one, on the probe images."""
        self._debugger.run()
        buffer = io.StringIO()
        self._debugger.layer_statistics_dump(buffer)
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

    def keeping_float(self, tensors: list[str]) -> bytes:
        # The debugger reads its options at each quantization: no second calibration.
        self._options.denylisted_nodes = list(tensors)
        self._options.fully_quantize = self._fully_quantize
        return self._debugger.get_nondebug_quantized_model()


MAX_GROUPS = 32  # the deepest name-scope level with at most this many groups is measured
REMEASURED = 8  # groups measured again at each step after the first: those that gained most before


def group_tensors(tensors: list[str], most: int = MAX_GROUPS, largest: int | None = None) -> dict[str, list[str]]:
    """`tensors` by name scope: the deepest level of the scope path (a tensor's first name less its
    op) at which there are at most `most` groups; every tensor in one group at worst. A group of
    more than `largest` tensors (one the search could never keep whole) is split the same way
    below its own level, until it is a single scope's layers."""

    def path(name: str) -> list[str]:
        return name.split(";")[0].split("/")[:-1]

    def at(members: list[str], depth: int) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for t in members:
            grouped.setdefault("/".join(path(t)[:depth]), []).append(t)
        return grouped

    def level(members: list[str], first: int) -> tuple[int, dict[str, list[str]]]:
        """The deepest depth from `first` on with at most `most` groups. When even `first` has more,
        a group being split takes it anyway; at the top, everything is one group."""
        found = (first, at(members, first)) if first > 1 else (0, {"": list(members)})
        for depth in range(first, max(len(path(t)) for t in members) + 1):
            grouped = at(members, depth)
            if len(grouped) > most:
                break
            found = (depth, grouped)
        return found

    def split(members: list[str], first: int) -> dict[str, list[str]]:
        depth, grouped = level(members, first)
        out: dict[str, list[str]] = {}
        for name, group in grouped.items():
            deeper = largest is not None and len(group) > largest and any(len(path(t)) > depth for t in group)
            out.update(split(group, depth + 1) if deeper else {name: group})
        return out

    return split(list(tensors), 1) if tensors else {}


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


def _fewest(reach: Callable[[int], int], score: Callable[[int], bool]) -> int | None:
    """The smallest k for which `score(k)` holds, trying 1, 2, 4, ... then bisecting (the scores are
    taken to rise with k). `reach(k)` says how many items there are, up to k."""
    low, high, k = 0, None, 1
    while high is None:
        reached = reach(k)
        if reached <= low:
            return None
        if score(reached):
            high = reached
        else:
            low, k = reached, 2 * reached
    while high - low > 1:
        mid = (low + high) // 2
        if score(mid):
            high = mid
        else:
            low = mid
    return high


def search(
    saved_model: Path,
    calibration: Callable,
    probe: Callable,
    int8_io: str,
    passes: Callable[[bytes], tuple[bool, dict]],
    max_float_layers: int,
    log: Callable[[str], None],
) -> dict:
    """The fewest layers in float, in one of two orders, that pass every gate.

    The output-error order (first): groups of layers (`group_tensors`), greedily, each step
    taking the group that lowers the output error (`OutputError`) most per layer together with
    those already chosen. The first step measures every group; later ones the `REMEASURED` that
    gained most when last measured (a group's gain seldom grows as others join: the usual lazy
    greedy). The order stops at `max_float_layers` or when no group lowers the error.
    The layer-error order (the fallback, when the first passes nowhere within the limit): single
    layers by the debugger's per-channel error (`Requantizer.ranked`). Some models' accuracy hangs on
    what a relative output error weighs little (a multi-person decoder's thresholds). Each order
    is scored on the gates at 1, 2, 4, ... of its items, then bisected. (On splits of a few
    people a gate's verdict moves with single joints, so the first order is kept whenever it
    passes rather than whichever passes with fewer layers: fewer layers passing there is often
    luck.) Returns the chosen flatbuffer (None when nothing within the limit passes), the order
    that chose it, the layers kept in float (with their group and output error in the first
    order), the groups, and every gate measurement.
    """
    import tensorflow as tf

    requantizer = Requantizer(saved_model, calibration, int8_io, probe)
    ranked = requantizer.ranked()
    by_tensor = {r["tensor"]: r for r in ranked}
    # The float graph's tensor names (those the debugger's denylist takes), read once.
    floating = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"]).convert()
    limit = min(max_float_layers, len(ranked))
    grouped = group_tensors([r["tensor"] for r in ranked], largest=limit)
    remaining = [{"group": name, "tensors": tensors} for name, tensors in grouped.items()]
    named = [g["group"] for g in remaining if g["group"]]
    shared = os.path.commonpath(named) if len(named) > 1 else ""

    def short(group: dict) -> str:  # what tells the groups apart, for the log
        return group["group"][len(shared):].lstrip("/") or group["group"] or "(all)"

    trail: list[dict] = []

    def scored(order_name: str, layers: int, flatbuffer: bytes | None, note: dict) -> bool:
        if flatbuffer is None:
            return False
        ok, measured = passes(flatbuffer)
        trail.append({"order": order_name, "float_layers": layers, **note, "passed": ok, **measured})
        log(f"mixed precision ({order_name} order): {layers} layer(s) in float: {'passes' if ok else 'still fails'} "
            f"({measured.get('summary', '')})")
        return ok

    def requantized(tensors: list[str]) -> bytes | None:
        try:
            return requantizer.keeping_float(consumers(floating, tensors))
        except Exception as err:  # the converter refuses some splits of a graph
            log(f"mixed precision: {len(tensors)} layer(s) in float cannot be converted ({' '.join(str(err).split())[:160]})")
            return None

    error = OutputError(floating, probe)
    try:
        current = baseline = error(requantizer.keeping_float([]))
        log(f"mixed precision: {len(ranked)} quantized layers in {len(remaining)} group(s); int8 output error {baseline:.4f}")
        order: list[dict] = []  # the groups in the order the greedy steps chose them
        prefixes: dict[int, bytes] = {}  # the candidate with the first k of them in float
        gains: dict[str, float] = {}  # each group's gain per layer when last measured

        def step() -> bool:
            nonlocal current
            used = sum(len(g["tensors"]) for g in order)
            fitting = [g for g in remaining if used + len(g["tensors"]) <= limit]
            if gains:  # after the first step, remeasure only the groups that gained most last time
                fitting = sorted(fitting, key=lambda g: -gains.get(g["group"], math.inf))[:REMEASURED]
            best = None
            for group in fitting:
                flatbuffer = requantized([t for g in order for t in g["tensors"]] + group["tensors"])
                if flatbuffer is None:
                    gains[group["group"]] = -math.inf
                    continue
                measured = error(flatbuffer)
                gain = gains[group["group"]] = (current - measured) / len(group["tensors"])
                if best is None or gain > best[0]:
                    best = (gain, measured, group, flatbuffer)
            if best is None or best[0] <= 0:
                return False
            _, current, group, flatbuffer = best
            remaining.remove(group)
            order.append({**group, "output_error": round(current, 5)})
            prefixes[len(order)] = flatbuffer
            log(f"mixed precision: + {short(group)} ({len(group['tensors'])} layer(s); "
                f"{used + len(group['tensors'])} in float, output error {current:.4f})")
            return True

        def reach(k: int) -> int:
            while len(order) < k and step():
                pass
            return min(k, len(order))

        def size(k: int) -> int:
            return sum(len(g["tensors"]) for g in order[:k])

        groups = _fewest(reach, lambda k: scored("output error", size(k), prefixes[k],
                                                 {"float_groups": k, "output_error": order[k - 1]["output_error"]}))
    finally:
        error.close()
    found = {"ranked": ranked[:limit], "int8_output_error": round(baseline, 5), "trail": trail, "limit": limit}
    if groups is None:
        log("mixed precision: the output-error order does not pass within the limit; trying single layers by their own error")
        layers = _fewest(lambda k: min(k, limit),
                         lambda k: scored("layer error", k, requantized([r["tensor"] for r in ranked[:k]]), {}))
        if layers is None:
            log(f"mixed precision: no {limit} layer(s) in float pass the gates in either order")
            return {**found, "order": None, "groups": order, "flatbuffer": None, "float_layers": []}
        return {**found, "order": "layer error", "groups": [], "float_layers": ranked[:layers],
                "flatbuffer": requantized([r["tensor"] for r in ranked[:layers]])}
    chosen = order[:groups]
    return {**found, "order": "output error", "groups": chosen, "flatbuffer": prefixes[groups],
            "float_layers": [{**by_tensor[t], "group": g["group"], "output_error": g["output_error"]}
                             for g in chosen for t in sorted(g["tensors"], key=lambda t: -by_tensor[t]["channel_error"])]}


def scratch_path(flatbuffer: bytes, folder: Path) -> Path:
    """Write a candidate where a runner can open it."""
    handle = tempfile.NamedTemporaryFile(dir=folder, suffix=".tflite", delete=False)
    with handle:
        handle.write(flatbuffer)
    return Path(handle.name)
