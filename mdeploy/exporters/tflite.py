"""TFLite export: fp32, fp16 (float16 weights), dynamic (int8 weights), int8 (full integer).

Converted from the fixed-batch SavedModel through its serving signature, so the
artifact's signature names are the canonical `image` and `heatmaps`. Only builtin ops are
allowed: a model that would need Flex (select TF) ops is an error naming them. Full int8
calibrates on images of the recipe's calibration split, preprocessed by the ModelSpec
exactly as evaluation and training preprocess them; its input and output are float, uint8
or int8 (`export.tflite.int8_io`). Each artifact's manifest entry lists its ops and which
of them the GPU delegate would leave to the CPU.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from mdeploy.errors import ModelError
from mdeploy.exporters import ExportInputs, ExportTarget, Tolerance

# Default parity tolerances per variant (absolute heatmap error, argmax agreement). Full int8
# clips whatever lies outside its calibrated ranges, and white-noise parity inputs do: its
# max_abs is loose, and its argmax agreement and the accuracy gate carry the weight.
TOLERANCES = {
    "fp32": Tolerance(max_abs=1e-4, min_agreement=0.98),
    "fp16": Tolerance(max_abs=2e-2, min_agreement=0.90),
    "dynamic": Tolerance(max_abs=1e-1, min_agreement=0.80),
    "int8": Tolerance(max_abs=0.5, min_agreement=0.70),
}

BUILT_VARIANTS = ("fp32", "fp16", "dynamic", "int8")

_DESCRIBE = {
    "fp32": "convert to TFLite fp32",
    "fp16": "convert to TFLite with float16 weights",
    "dynamic": "convert to TFLite with dynamic-range int8 weights",
    "int8": "convert to full-integer TFLite (calibrating)",
}


def targets(recipe, build_dir) -> list[ExportTarget]:
    from mdeploy.importers.tflite import is_tflite_import, package

    section = recipe.export.tflite
    if is_tflite_import(recipe):  # check_exports allowed fp32 only: the imported file, packaged
        return [
            ExportTarget(
                artifact_id="tflite/fp32",
                format="tflite",
                variant="fp32",
                filename=f"tflite/{recipe.name}_fp32.tflite",
                settings={"variant": "fp32", "packaged": "import"},
                tools=("ai-edge-litert", "flatbuffers"),
                tolerance=TOLERANCES["fp32"],
                run=package,
                describe="package the imported .tflite with a serving signature",
            )
        ]
    out = []
    for variant in section.variants:
        settings: dict = {"variant": variant, "split_depthwise": section.split_depthwise}
        calibration = {}
        if variant == "int8":
            settings.update(io=section.int8_io, calibration=recipe.section_json("export", "tflite", "calibration"),
                            int8_prelu=section.int8_prelu, int8_concat=section.int8_concat,
                            int8_equalize=section.int8_equalize)
            if section.int8_finetune.steps:
                settings["int8_finetune"] = recipe.section_json("export", "tflite", "int8_finetune")
            if recipe.mixed_precision_search():
                settings["mixed_precision"] = recipe.section_json("export", "tflite", "mixed_precision")
                settings["accuracy_gate"] = recipe.section_json("verify", "accuracy")
            settings["calibration"]["split"] = recipe.calibration_split()
            calibration = {"calibration_split": recipe.calibration_split(), "calibration_samples": section.calibration.samples}
        out.append(
            ExportTarget(
                artifact_id=f"tflite/{variant}",
                format="tflite",
                variant=variant,
                filename=f"tflite/{recipe.name}_{variant}.tflite",
                settings=settings,
                tools=("tensorflow",),
                tolerance=TOLERANCES[variant],
                run=convert,
                describe=_DESCRIBE[variant],
                source=xnnpack_source,
                **calibration,
            )
        )
    return out


# export.tflite.int8_concat -> the rewrites it runs (exporters/xnnpack_rewrites.py), in order
CONCAT_REWRITES = {"auto": ["scale_concat_direct", "split_concat_chains"], "scale": ["scale_concat"], "split": ["split_concat"]}


@contextmanager
def xnnpack_source(target: ExportTarget, inputs: ExportInputs):
    """The canonical SavedModel through the rewrites that keep this variant on XNNPACK's fast
    paths and int8 its precision (exporters/xnnpack_rewrites.py: `split_depthwise`; for int8 also
    `int8_prelu`, `int8_concat` and `int8_equalize`; scaled concatenations and equalization are
    measured on the calibration images), then for int8 `int8_finetune` (exporters/int8_finetune.py)
    on the rewritten graph; the rewritten model is made once per content in a process and shared by the variants."""
    # Equalization last, on the graph that is quantized: a depthwise layer split into bands is
    # not rescaled (each band's partial sum is an int8 tensor of its own; rescaling the PEFM
    # CPM's 7x7 layers before the split brought its heatmap error back to plain int8's).
    concat = CONCAT_REWRITES.get(target.settings.get("int8_concat"), [])
    rewrites = [name for name, on in (("split_depthwise", target.settings.get("split_depthwise")),
                                      ("prelu_as_leaky_relu", target.settings.get("int8_prelu") == "leaky_relu"),
                                      *((name, True) for name in concat),
                                      ("equalize_ranges", target.settings.get("int8_equalize")))
                if on]
    tune = target.settings.get("int8_finetune")
    if not rewrites and not tune:
        yield inputs
        return
    from mdeploy.exporters.xnnpack_rewrites import MAX_TAPS, rewritten

    source, changed = rewritten(inputs.saved_model, rewrites, inputs.calibration) if rewrites else (None, {})
    summary = {}
    if tune and inputs.calibration is not None:
        tuned, summary["int8_finetune"] = _finetuned(source or inputs.saved_model, inputs, tune)
        source = tuned or source
    if source is None:
        yield replace(inputs, rewrites=summary)
        return
    if "split_depthwise" in changed:
        done = changed["split_depthwise"]
        kernels = sorted({"x".join(map(str, d["kernel"])) for d in done})
        inputs.log(f"split {len(done)} depthwise layer(s) ({', '.join(kernels)}) into bands of at most {MAX_TAPS} taps for XNNPACK")
        summary["split_depthwise"] = {"layers": len(done), "max_taps": MAX_TAPS, "kernels": kernels,
                                      "pieces": sum(d["pieces"] for d in done)}
    if "prelu_as_leaky_relu" in changed:
        done = changed["prelu_as_leaky_relu"]
        single = sum(d["single_op"] for d in done)
        inputs.log(f"{len(done)} PReLU layer(s) as LeakyReLU for XNNPACK's int8 kernels ({single} with one slope: a single op)")
        summary["int8_prelu"] = {"layers": len(done), "single_op": single, "as": "w1 * x + w2 * leaky_relu(x)"}
    fallbacks = {}
    split = next((name for name in ("split_concat", "split_concat_chains") if name in changed), None)
    scaled = next((name for name in ("scale_concat", "scale_concat_direct") if name in changed), None)
    if split or scaled:
        summary["int8_concat"] = {"mode": target.settings["int8_concat"]}
    if scaled:
        done = changed[scaled]
        scales = [s for d in done for s in d["scales"] if s != 1.0]
        inputs.log(f"{len(done)} concatenation(s) with {len(scales)} faint part(s) scaled up x{min(scales):.3g}-x{max(scales):.3g} "
                   "to share the concatenation's int8 range, the reading convolutions' weights divided back")
        summary["int8_concat"]["scaled"] = {"concatenations": len(done), "parts_scaled": len(scales),
                                            "parts": [d["channels"] for d in done], "scales": [d["scales"] for d in done]}
    if split:
        done = changed[split]
        readers = sum(len(d["readers"]) for d in done)
        inputs.log(f"{len(done)} concatenation(s) split into per-part convolutions ({readers} reading convolution(s)) so "
                   "each part keeps its own int8 scale")
        summary["int8_concat"]["split"] = {"concatenations": len(done), "readers": readers,
                                           "parts": [d["channels"] for d in done]}
        others = [r for r in rewrites if r != split]

        def without_split():
            plain = rewritten(inputs.saved_model, others, inputs.calibration)[0] or inputs.saved_model
            if tune:
                return _finetuned(plain, inputs, tune)[0] or plain
            return plain

        fallbacks["int8_concat"] = without_split
    if "equalize_ranges" in changed:
        done = changed["equalize_ranges"]
        inputs.log(f"{len(done)} layer pair(s) rescaled across their ReLU so that int8 activations and weights share the "
                   f"range ({sum(d['scaled'] for d in done)} channels; smallest scale {min(d['smallest'] for d in done):g})")
        summary["int8_equalize"] = {"pairs": len(done), "channels": sum(d["scaled"] for d in done),
                                    "smallest_scale": min(d["smallest"] for d in done)}
    yield replace(inputs, saved_model=source, rewrites=summary, fallbacks=fallbacks)


def _finetuned(saved_model: Path, inputs: ExportInputs, settings: dict) -> tuple[Path | None, dict]:
    """`saved_model` with its weights tuned for int8 (exporters/int8_finetune.py), and what was done."""
    from mdeploy.exporters.int8_finetune import finetuned

    inputs.log(f"int8 fine-tuning: {settings['steps']} steps against the float model's own outputs on the calibration images")
    tuned, done = finetuned(saved_model, inputs.calibration, settings, inputs.log)
    if tuned is None:
        inputs.log(f"int8 fine-tuning skipped: {done['skipped']}")
    else:
        rmse = done["int8_output_rmse"]
        inputs.log(f"int8 fine-tuned {done['layers']} layer(s): emulated int8 output error {rmse['before']:g} -> "
                   f"{rmse['after']:g} (rms, calibration images)")
    return tuned, done


def convert(target: ExportTarget, inputs: ExportInputs) -> dict:
    flatbuffer = _convert(target, inputs, inputs.saved_model)
    rewrites = dict(inputs.rewrites or {})
    if "int8_concat" in rewrites and (inputs.fallbacks or {}).get("int8_concat"):
        from mdeploy.exporters.xnnpack_rewrites import refused_split_sums

        refused = refused_split_sums(flatbuffer)
        if refused:  # a part below one int8 step of its sum: the split buys nothing and cuts XNNPACK's graph
            inputs.log(f"concatenation split undone: {len(refused)} of its sums have a part below one int8 step of the "
                       "sum, which XNNPACK does not take")
            # What follows in the stage (the mixed-precision search) reads the graph that ships.
            inputs.saved_model = inputs.fallbacks["int8_concat"]()
            flatbuffer = _convert(target, inputs, inputs.saved_model)
            rewrites["int8_concat"] = {**rewrites["int8_concat"], "split": {
                "undone": "a part below one int8 step of its sum (XNNPACK refuses such ADDs)", "sums": refused[:8]}}
    inputs.out.parent.mkdir(parents=True, exist_ok=True)
    inputs.out.write_bytes(flatbuffer)
    details = describe_flatbuffer(flatbuffer)
    details.update(rewrites)
    log_delegates(inputs.log, details)
    return details


def log_delegates(log, details: dict) -> None:
    """One line each for what the GPU delegate and XNNPACK leave to other kernels, if anything."""
    if details["gpu_fallback"]:
        log(f"GPU delegate would leave to the CPU: {', '.join(sorted({o['op'] for o in details['gpu_fallback']}))}")
    plan = details.get("xnnpack") or {}
    if plan.get("builtin"):
        ops = ", ".join(f"{o['op']} x{o['count']}" for o in plan["builtin"])
        parts = plan["partitions"]
        log(f"XNNPACK leaves to TFLite's builtin kernels: {ops} ({parts} delegated part{'' if parts == 1 else 's'})")


def _convert(target: ExportTarget, inputs: ExportInputs, saved_model: Path) -> bytes:
    import tensorflow as tf

    if target.variant == "int8":
        if inputs.calibration is None:
            raise ModelError("full-integer TFLite needs calibration images (export.tflite.calibration)")
        converter = int8_converter(saved_model, inputs.calibration, target.settings["io"])
    else:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
        converter.target_spec.supported_ops = {tf.lite.OpsSet.TFLITE_BUILTINS}
        if target.variant in ("fp16", "dynamic"):
            converter.optimizations = {tf.lite.Optimize.DEFAULT}
        if target.variant == "fp16":
            converter.target_spec.supported_types = {tf.float16}
    try:
        return converter.convert()
    except Exception as err:  # the converter raises ConverterError and plain exceptions
        raise ModelError(_conversion_message(err), hint=_conversion_hint(err)) from err


def int8_converter(saved_model: Path, calibration, int8_io: str, float_kernels: bool = False):
    """LiteRT's converter of `saved_model` to full-integer TFLite, calibrated on `calibration()`
    ([1, H, W, 3] inputs), its input and output of type `int8_io` (float, uint8 or int8);
    `float_kernels` lets layers stay float (the mixed-precision search keeps some)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    converter.optimizations = {tf.lite.Optimize.DEFAULT}
    converter.target_spec.supported_ops = {tf.lite.OpsSet.TFLITE_BUILTINS_INT8}
    if float_kernels:
        converter.target_spec.supported_ops.add(tf.lite.OpsSet.TFLITE_BUILTINS)
    converter.representative_dataset = lambda: ([x] for x in calibration())
    if int8_io != "float":
        converter.inference_input_type = tf.uint8 if int8_io == "uint8" else tf.int8
        converter.inference_output_type = tf.uint8 if int8_io == "uint8" else tf.int8
    return converter


def describe_flatbuffer(flatbuffer: bytes) -> dict:
    """Ops, tensor types and quantization of a .tflite, and what the GPU delegate cannot run."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flatbuffer)
    ops = sorted({d["op_name"] for d in interp._get_ops_details()})  # noqa: SLF001 (the analyzer's own data)
    plan = xnnpack_plan(interp)  # before the signature runner, which holds the tensors the delegate would move
    runner = interp.get_signature_runner("serving_default")
    io = {}
    for kind, details in (("input", runner.get_input_details()), ("output", runner.get_output_details())):
        for name, d in details.items():
            scale, zero = d["quantization"]
            io[f"{kind}:{name}"] = {"dtype": d["dtype"].__name__, "shape": [int(v) for v in d["shape"]], "scale": scale, "zero_point": zero}
    return {"ops": ops, "io": io, "gpu_fallback": gpu_fallback(ops), "xnnpack": plan}


def xnnpack_plan(model) -> dict:
    """How LiteRT's default XNNPACK delegate takes a .tflite (its bytes, or an Interpreter of it
    whose tensors are not allocated yet): {partitions: the delegated parts, builtin: [{op, count}]
    the ops it leaves to TFLite's builtin kernels}.

    Read from the interpreter itself once the delegate is applied: each DELEGATE node stands for
    the ops that produce its outputs, back to its inputs; every other op runs on the builtin
    kernels, and each one cuts the delegated graph (on phones too, where XNNPACK is the CPU
    default). An int8 op XNNPACK does not take (a standalone RELU, PRELU, ADD_N, a SLICE with a
    -1 size) costs far more than the op itself.
    """
    from collections import Counter

    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_content=model) if isinstance(model, bytes) else model
        interp.allocate_tensors()  # where the delegate takes its ops
    except Exception as err:  # a file the runtime refuses fails its gates later, with the message
        return {"partitions": None, "builtin": [], "error": (str(err).strip().splitlines() or [type(err).__name__])[0][:300]}
    details = interp._get_ops_details()  # noqa: SLF001 (the execution plan is not public)
    delegates = [d for d in details if d["op_name"] == "DELEGATE"]
    ops = {d["index"]: d for d in details if d["op_name"] != "DELEGATE"}
    producer = {int(t): i for i, d in ops.items() for t in d["outputs"]}
    delegated: set[int] = set()
    for delegate in delegates:
        boundary = {int(t) for t in delegate["inputs"]}
        stack = [producer[int(t)] for t in delegate["outputs"] if int(t) in producer]
        while stack:
            index = stack.pop()
            if index in delegated:
                continue
            delegated.add(index)
            stack += [producer[int(t)] for t in ops[index]["inputs"] if int(t) not in boundary and int(t) in producer]
    left = Counter(d["op_name"] for i, d in ops.items() if i not in delegated)
    return {"partitions": len(delegates), "builtin": [{"op": op, "count": n} for op, n in sorted(left.items())]}


# Builtin ops the TFLite GPU delegate accepts (the cases of TFLite's GPU compatibility check,
# tensorflow/lite/tools/versioning/gpu_compatibility.cc). TensorFlow 2.21's model analyzer
# reports every model as compatible (it passed ARG_MAX), so mdeploy checks names itself:
# an op outside this set runs on the CPU, splitting the graph. Per-op option limits (e.g.
# STRIDED_SLICE masks) are not checked.
GPU_OPS = frozenset(
    """ABS ADD ADD_N ATAN2 AVERAGE_POOL_2D BATCH_MATMUL CAST CEIL CONCATENATION CONV_2D COS CUMSUM
    DENSIFY DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU EMBEDDING_LOOKUP
    EQUAL EXP FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GELU GREATER GREATER_EQUAL HARD_SWISH
    LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGISTIC LSTM MAXIMUM MAX_POOL_2D MEAN MINIMUM
    MIRROR_PAD MUL NEG NOT_EQUAL ONE_HOT PACK PAD PADV2 POW PRELU QUANTIZE REDUCE_MAX REDUCE_MIN
    REDUCE_PROD RELU RELU6 RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR RSQRT SELECT
    SELECT_V2 SIGN SIN SLICE SOFTMAX SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE
    STABLEHLO_CLAMP STRIDED_SLICE SUB SUM TANH TILE TRANSPOSE TRANSPOSE_CONV""".split()
)


def gpu_fallback(ops) -> list[dict]:
    """Ops of a model that the TFLite GPU delegate would leave to the CPU."""
    return [{"op": op, "reason": "not supported by the TFLite GPU delegate"} for op in sorted(set(ops) - GPU_OPS)]


_NOT_BUILTIN = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")


def _unsupported_ops(text: str) -> list[str]:
    ops = set(_NOT_BUILTIN.findall(text))
    if "Flex" in text or "select TensorFlow ops" in text:
        ops.update(re.findall(r"tf\.(\w+)", text))
    return sorted(ops)


def _conversion_message(err: Exception) -> str:
    text = str(err)
    ops = _unsupported_ops(text)
    if ops:
        return f"TFLite conversion needs TensorFlow ops that are not TFLite builtins: {', '.join(ops)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = next((line for line in lines if "error" in line.lower()), lines[0] if lines else type(err).__name__)
    return f"TFLite conversion failed: {first[:400]}"


def _conversion_hint(err: Exception) -> str | None:
    if _unsupported_ops(str(err)):
        return "replace those layers with TFLite-compatible ones; mdeploy does not ship Flex delegates to phones"
    return None
