"""Core ML export: an ML Program `.mlpackage`, and optionally a neuralnetwork `.mlmodel` for old iOS.

The input is an image (`ImageType`) whose colour layout, scale and bias implement the
ModelSpec's preprocessing contract, so an app hands Vision a camera frame and Core ML
normalizes it exactly as training did; the outputs are float32 arrays named as the
ModelSpec names them (`heatmaps`; a PAF model also `pafs`, each with its own shape).
After conversion the spec is read back (no model load: that needs macOS) and its input,
outputs and preprocessing are checked against the ModelSpec.

Core ML's image scale is one number for all channels: a contract with different std per
channel cannot be an image input, and the recipe is refused (recipe validation).
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings

import numpy as np

from mdeploy.errors import ModelError
from mdeploy.exporters import ExportInputs, ExportTarget, Tolerance

# Raised when what this exporter writes changes (part of the cache key: older entries are rebuilt).
# 2: no conversion date (or other time) in the metadata.
# 3: every output of a multi-output model, named and shaped as the spec says.
WRITER = 3

TOLERANCES = {
    "fp32": Tolerance(max_abs=1e-3, min_agreement=0.98),
    "fp16": Tolerance(max_abs=2e-2, min_agreement=0.90),
    "quantized": Tolerance(max_abs=1e-1, min_agreement=0.80),
}


def not_on_macos() -> str | None:
    return None if sys.platform == "darwin" else "needs macOS: Core ML models only run there"


def image_contract(pre) -> tuple[float, list[float]]:
    """(scale, bias per model channel) with input = scale * pixel + bias, pixel in 0..255."""
    lo, hi = pre.range
    std = pre.std[0]
    scale = (hi - lo) / 255.0 / std
    bias = [(lo - m) / std for m in pre.mean]
    return scale, bias


def targets(recipe, build_dir) -> list[ExportTarget]:
    section = recipe.export.coreml
    settings = dict(recipe.section_json("export", "coreml"), writer=WRITER)
    key = "quantized" if section.quantize != "none" else section.precision
    out = [
        ExportTarget(
            artifact_id="coreml",
            format="coreml",
            variant=f"mlprogram-{section.precision}" + (f"-{section.quantize}" if section.quantize != "none" else ""),
            filename=f"coreml/{recipe.name}.mlpackage",
            settings=dict(settings, kind="mlprogram"),
            tools=("tensorflow", "coremltools"),
            tolerance=TOLERANCES[key],
            run=convert,
            describe=f"convert to Core ML (ML Program, {section.precision}, {section.minimum_deployment_target})",
            runnable_here=not_on_macos,
        )
    ]
    if section.neuralnetwork:
        out.append(
            ExportTarget(
                artifact_id="coreml/neuralnetwork",
                format="coreml",
                variant="neuralnetwork",
                filename=f"coreml/{recipe.name}.mlmodel",
                settings=dict(settings, kind="neuralnetwork"),
                tools=("tensorflow", "coremltools"),
                tolerance=TOLERANCES["fp32"],
                run=convert,
                describe="convert to Core ML (neuralnetwork, iOS 13+)",
                runnable_here=not_on_macos,
            )
        )
    return out


def convert(target: ExportTarget, inputs: ExportInputs) -> dict:
    import coremltools as ct
    import tensorflow as tf

    s = target.settings
    spec = inputs.spec
    pre = spec.preprocessing
    scale, bias = image_contract(pre)
    layout = ct.colorlayout.BGR if pre.channels == "bgr" else ct.colorlayout.RGB
    loaded = tf.saved_model.load(str(inputs.saved_model))
    signature = loaded.signatures["serving_default"]
    nodes = output_nodes(signature, [o.name for o in spec.outputs])
    image = ct.ImageType(name=spec.input.name, shape=tuple(spec.input.shape), color_layout=layout, scale=scale, bias=bias)
    kwargs = {}
    if s["kind"] == "mlprogram":
        kwargs = {
            "convert_to": "mlprogram",
            "compute_precision": ct.precision.FLOAT16 if s["precision"] == "fp16" else ct.precision.FLOAT32,
            "minimum_deployment_target": getattr(ct.target, s["minimum_deployment_target"]),
        }
    else:
        kwargs = {"convert_to": "neuralnetwork", "minimum_deployment_target": ct.target.iOS13}
    with _quiet():  # coremltools draws progress bars and version warnings on stderr
        try:
            model = ct.convert(
                [signature],
                source="tensorflow",
                inputs=[image],
                outputs=[ct.TensorType(name=node, dtype=np.float32) for node in nodes.values()],
                **kwargs,
            )
        except Exception as err:  # coremltools raises many types for unsupported graphs
            raise ModelError(f"Core ML conversion failed: {str(err).splitlines()[0][:400]}") from err
        if s["kind"] == "mlprogram" and s["quantize"] != "none":
            model = _quantize(model, s["quantize"])
    if s["quantize"] != "none" and s["kind"] == "mlprogram":
        inputs.log(f"weights quantized: {s['quantize']}")
    mlspec = model.get_spec()
    for name, node in nodes.items():
        if node != name:
            ct.utils.rename_feature(mlspec, node, name)
    shapes = {o.name: list(o.shape) for o in spec.outputs}
    for feature in mlspec.description.output:
        if s["kind"] == "neuralnetwork" and not feature.type.multiArrayType.shape:
            feature.type.multiArrayType.shape.extend(shapes[feature.name])
    described = f"{len(spec.keypoints)} {spec.keypoints.name} keypoint heatmaps"
    if len(spec.outputs) > 1:
        described = f"{described} + {', '.join(o.name for o in spec.extra_outputs)}"
    mlspec.description.metadata.shortDescription = f"{spec.name}: {described}"
    mlspec.description.metadata.userDefined.update(
        {"mdeploy.keypoints": ",".join(spec.keypoints.names), "mdeploy.output_stride": str(spec.output_stride)}
    )
    if s["kind"] == "mlprogram":
        final = ct.models.MLModel(mlspec, weights_dir=model.weights_dir, skip_model_load=True)
    else:
        final = ct.models.MLModel(mlspec, skip_model_load=True)
    inputs.out.parent.mkdir(parents=True, exist_ok=True)
    final.save(str(inputs.out))
    from mdeploy.exporters.reproducible import normalize_mlmodel, normalize_mlpackage

    if inputs.out.is_dir():
        normalize_mlpackage(inputs.out)
    else:
        normalize_mlmodel(inputs.out)
    details = inspect(inputs.out)
    problems = check_against_spec(details, spec)
    if problems:
        raise ModelError(f"the converted Core ML model does not match the ModelSpec: {'; '.join(problems)}")
    details["parity"] = not_on_macos() or "runs on this host"
    return details


def output_nodes(signature, names: list[str]) -> dict[str, str]:
    """Each spec output name -> the graph node the serving signature returns it from, in the spec's order."""
    import tensorflow as tf

    nodes = [t.name.split(":")[0] for t in signature.outputs]
    if len(names) == 1:
        return {names[0]: nodes[0]}
    keys = tf.nest.flatten({k: k for k in signature.structured_outputs})  # the order of signature.outputs
    by_key = dict(zip(keys, nodes, strict=True))
    missing = [n for n in names if n not in by_key]
    if missing:
        raise ModelError(f"the canonical model has no output {missing[0]!r} (it gives {', '.join(keys)})")
    return {name: by_key[name] for name in names}


@contextlib.contextmanager
def _quiet():
    import logging

    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _quantize(model, mode: str):
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OpPalettizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
        palettize_weights,
    )

    if mode == "int8":
        return linear_quantize_weights(model, OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric")))
    bits = int(mode.removeprefix("palettize"))
    return palettize_weights(model, OptimizationConfig(global_config=OpPalettizerConfig(nbits=bits, mode="kmeans")))


def inspect(path) -> dict:
    """Read a saved Core ML model's interface and image preprocessing back from its spec."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    inp = spec.description.input[0]
    image = inp.type.imageType
    colour = {10: "grayscale", 20: "rgb", 30: "bgr"}.get(image.colorSpace, str(image.colorSpace))

    def array(out) -> dict:
        a = out.type.multiArrayType
        dtype = {65568: "float32", 65552: "float16", 65600: "double"}.get(a.dataType, str(a.dataType))
        return {"name": out.name, "shape": [int(v) for v in a.shape], "dtype": dtype}

    outputs = [array(out) for out in spec.description.output]
    details = {
        "spec_version": spec.specificationVersion,
        "kind": "mlprogram" if spec.WhichOneof("Type") == "mlProgram" else spec.WhichOneof("Type"),
        "input": {"name": inp.name, "type": inp.type.WhichOneof("Type"), "width": image.width, "height": image.height, "color": colour},
        "output": outputs[0],
    }
    if len(outputs) > 1:
        details["outputs"] = outputs
    details["preprocessing"] = _mlprogram_preprocessing(spec) if details["kind"] == "mlprogram" else _nn_preprocessing(spec, colour)
    return details


def _mlprogram_preprocessing(spec) -> dict:
    """The leading `mul` (scale) and `add` (bias) the converter puts on an image input."""
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    consts = {}
    scale, bias = 1.0, [0.0, 0.0, 0.0]
    for op in block.operations:
        if op.type == "const":
            value = op.attributes["val"]
            if value.HasField("immediateValue") and value.immediateValue.tensor.HasField("floats"):
                consts[op.outputs[0].name] = list(value.immediateValue.tensor.floats.values)
        elif op.type in ("mul", "add") and op.outputs[0].name.startswith(spec.description.input[0].name + "__"):
            y = consts.get(op.inputs["y"].arguments[0].name, [])
            if op.type == "mul" and y:
                scale = float(y[0])
            elif op.type == "add" and y:
                bias = [float(v) for v in y]
    return {"scale": scale, "bias": bias}


def _nn_preprocessing(spec, colour: str) -> dict:
    for pre in spec.neuralNetwork.preprocessing:
        if pre.WhichOneof("preprocessor") == "scaler":
            sc = pre.scaler
            bias = [sc.blueBias, sc.greenBias, sc.redBias] if colour == "bgr" else [sc.redBias, sc.greenBias, sc.blueBias]
            return {"scale": float(sc.channelScale), "bias": [float(b) for b in bias]}
    return {"scale": 1.0, "bias": [0.0, 0.0, 0.0]}


def check_against_spec(details: dict, spec) -> list[str]:
    """Every way the Core ML model's interface differs from the ModelSpec (empty: none)."""
    problems = []
    inp, out, pre = details["input"], details["output"], spec.preprocessing
    if inp["type"] != "imageType":
        problems.append(f"input is {inp['type']}, not an image")
    if (inp["name"], inp["height"], inp["width"]) != (spec.input.name, pre.height, pre.width):
        problems.append(f"input {inp['name']} {inp['height']}x{inp['width']}, expected {spec.input.name} {pre.height}x{pre.width}")
    if inp["color"] != pre.channels:
        problems.append(f"input colour layout {inp['color']}, expected {pre.channels}")
    outs = details.get("outputs") or [out]
    wanted = getattr(spec, "outputs", (spec.output,))
    if len(wanted) == 1 and len(outs) == 1:  # one output: its name must be the spec's
        if out["name"] != spec.output.name:
            problems.append(f"output named {out['name']}, expected {spec.output.name}")
        if out["shape"] and out["shape"] != list(spec.output.shape):
            problems.append(f"output shape {out['shape']}, expected {list(spec.output.shape)}")
    else:
        got = [o["name"] for o in outs]
        want = [o.name for o in wanted]
        if got != want:
            problems.append(f"outputs named {', '.join(got)}, expected {', '.join(want)}")
        for o, expected in zip(outs, wanted, strict=False):
            if o["shape"] and o["shape"] != list(expected.shape):
                problems.append(f"output {o['name']} shape {o['shape']}, expected {list(expected.shape)}")
    scale, bias = image_contract(pre)
    got = details["preprocessing"]
    if not np.isclose(got["scale"], scale, rtol=1e-5) or not np.allclose(got["bias"], bias, rtol=1e-5, atol=1e-6):
        problems.append(f"image preprocessing scale {got['scale']} bias {got['bias']}, expected scale {scale} bias {bias}")
    return problems
