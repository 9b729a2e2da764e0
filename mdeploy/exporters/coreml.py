"""Core ML export: an ML Program `.mlpackage`, and optionally a neuralnetwork `.mlmodel` for old iOS.

The input is an image (`ImageType`) whose colour layout, scale and bias implement the
ModelSpec's preprocessing contract, so an app hands Vision a camera frame and Core ML
normalizes it exactly as training did; the outputs are float32 arrays named as the
ModelSpec names them (`heatmaps`; a PAF model also `pafs`, each with its own shape).
After conversion the spec is read back (no model load: that needs macOS) and its input,
outputs and preprocessing are checked against the ModelSpec.

Core ML's image scale is one number for all channels. A contract with a different std per
channel (ImageNet's, as MobileHumanPose's LPSKI uses) is split in two: the image input
applies the value range and the mean (scale (high - low) / 255, bias low - mean per
channel), and the model's first op multiplies each channel by 1 / std
(`channel_scale`). The split is checked in TensorFlow before conversion (the wrapped
graph on raw pixels against the canonical model on the contract's inputs) and read back
from the saved spec afterwards, so the app still hands Core ML a plain camera frame.

The outputs are float32 arrays named and shaped as the ModelSpec says, whatever the family:
`heatmaps` (+ `pafs`), or a volumetric model's `volume` [1, H, W, J*D] or, with the
soft-argmax in the graph, its `coords` [1, J, 3]; the short description names the family
and each output (`describe_outputs`), the metadata the family and keypoints.
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
# 4: per-channel std as an in-graph channel scale; outputs described by family; an in-graph
#    soft-argmax (softmax and the product reading it) kept float32 in an fp16 program.
WRITER = 4

TOLERANCES = {
    "fp32": Tolerance(max_abs=1e-3, min_agreement=0.98),
    "fp16": Tolerance(max_abs=2e-2, min_agreement=0.90),
    "quantized": Tolerance(max_abs=1e-1, min_agreement=0.80),
}


def not_on_macos() -> str | None:
    return None if sys.platform == "darwin" else "needs macOS: Core ML models only run there"


def channel_scale(pre) -> list[float] | None:
    """The per-channel factor (1 / std, model channel order) the graph applies after the image
    input, or None when one std serves every channel (the image input then applies it)."""
    if len(set(pre.std)) <= 1:
        return None
    return [1.0 / s for s in pre.std]


def image_contract(pre) -> tuple[float, list[float]]:
    """(scale, bias per model channel) of the image input: scale * pixel + bias, pixel in 0..255.

    With one std that is the whole contract; with one std per channel it is the range and the
    mean only, and `channel_scale` finishes the contract inside the graph."""
    lo, hi = pre.range
    std = pre.std[0] if channel_scale(pre) is None else 1.0
    scale = (hi - lo) / 255.0 / std
    bias = [(lo - m) / std for m in pre.mean]
    return scale, bias


def describe_outputs(spec) -> str:
    """What the outputs hold, for the model's short description (Xcode shows it): the family's
    own description, the keypoint set and each output's name and shape."""
    from mdeploy.families import family_of

    shapes = ", ".join(f"{o.name} {'x'.join(str(d) for d in o.shape)}" for o in spec.outputs)
    return f"{family_of(spec).description}; {len(spec.keypoints)} {spec.keypoints.name} keypoints; {shapes}"


def _scaled_signature(signature, spec, factors: list[float]):
    """The serving signature behind a per-channel multiply: a concrete function whose input
    (named as the spec's) is the image input's output and whose outputs are the signature's."""
    import tensorflow as tf

    (key,) = signature.structured_input_signature[1]
    k = tf.constant(np.asarray(factors, np.float32).reshape(1, 1, 1, -1))

    @tf.function(input_signature=[tf.TensorSpec(tuple(spec.input.shape), tf.float32, name=spec.input.name)])
    def standardized(image):
        return signature(**{key: image * k})

    return standardized.get_concrete_function()


def _check_split(signature, converted, spec) -> float:
    """Largest difference between the canonical model on the contract's inputs and the graph
    Core ML converts on the image input's values (a random image): the split must change nothing."""
    import tensorflow as tf

    pre = spec.preprocessing
    pixels = np.random.default_rng(0).integers(0, 256, (1, pre.height, pre.width, 3)).astype(np.float32)
    scale, bias = image_contract(pre)
    ordered = pixels[..., ::-1] if pre.channels == "bgr" else pixels  # model channel order
    (key,) = signature.structured_input_signature[1]
    want = signature(**{key: tf.constant(pre.normalize(pixels))})
    got = converted(tf.constant((scale * ordered + np.asarray(bias)).astype(np.float32)))
    worst = 0.0
    for name, value in want.items():
        ref = np.asarray(value, np.float64)
        diff = np.abs(ref - np.asarray(got[name], np.float64)).max()
        worst = max(worst, float(diff / max(1.0, np.abs(ref).max())))
    return worst


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
    factors = channel_scale(pre)
    if factors is not None:
        converted = _scaled_signature(signature, spec, factors)
        worst = _check_split(signature, converted, spec)
        if worst > 1e-4:
            raise ModelError(f"splitting the per-channel std between the image input and the graph changed the outputs "
                             f"by {worst:.3g} (relative): the Core ML input would not implement the preprocessing")
        inputs.log("per-channel std: the image input applies range and mean, the graph's first op 1 / std per channel")
        signature = converted
    nodes = output_nodes(signature, [o.name for o in spec.outputs])
    image = ct.ImageType(name=spec.input.name, shape=tuple(spec.input.shape), color_layout=layout, scale=scale, bias=bias)
    kwargs = {}
    if s["kind"] == "mlprogram":
        kwargs = {
            "convert_to": "mlprogram",
            "compute_precision": (ct.transform.FP16ComputePrecision(op_selector=_fp16_op) if s["precision"] == "fp16"
                                  else ct.precision.FLOAT32),
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
    mlspec.description.metadata.shortDescription = f"{spec.name}: {describe_outputs(spec)}"
    meta = {"mdeploy.keypoints": ",".join(spec.keypoints.names), "mdeploy.output_stride": str(spec.output_stride),
            "mdeploy.family": getattr(spec, "family", "heatmap") or "heatmap"}
    if factors is not None:
        meta["mdeploy.channel_scale"] = ",".join(f"{f:.9g}" for f in factors)
    mlspec.description.metadata.userDefined.update(meta)
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


HEAD_OPS = ("reshape", "transpose", "expand_dims", "squeeze", "matmul", "linear")


def _fp16_op(op) -> bool:
    """Whether an op of an fp16 ML Program computes in float16: all but a softmax and what reads
    its probabilities (reshapes, the matrix product, reshapes of its result). A volumetric model
    whose graph ends in the soft-argmax spreads one joint's mass over D*H*W cells (32768 for
    MobileHumanPose), each far below float16's smallest normal value, and sums them times
    cell coordinates up to 31: that head stays float32; the convolutions stay float16."""
    if op.op_type == "softmax":
        return False
    if op.op_type not in HEAD_OPS:
        return True
    source = op.inputs.get("x")
    for _ in range(12):
        producer = getattr(source, "op", None)
        if producer is None:
            return True
        if producer.op_type == "softmax":
            return False
        if producer.op_type not in ("cast", *HEAD_OPS):
            return True
        source = producer.inputs.get("x")
    return True


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


def _const_floats(value) -> list[float] | None:
    """A const op's immediate float32 or float16 values (None: another type, or stored in the weights file)."""
    if not value.HasField("immediateValue"):
        return None
    tensor = value.immediateValue.tensor
    if tensor.HasField("floats"):
        return [float(v) for v in tensor.floats.values]
    if tensor.HasField("bytes") and value.type.tensorType.dataType == 10:  # FLOAT16
        return [float(v) for v in np.frombuffer(tensor.bytes.values, np.float16)]
    return None


def _mlprogram_preprocessing(spec) -> dict:
    """The leading `mul` (scale) and `add` (bias) the converter puts on an image input, and the
    per-channel `mul` right after them where the contract has one std per channel (`channel_scale`)."""
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    consts = {}
    scale, bias = 1.0, [0.0, 0.0, 0.0]
    image = spec.description.input[0].name
    image_ends = set()  # the image input's values after its scale and bias (and any cast of them)
    channels = None
    for op in block.operations:
        x = op.inputs["x"].arguments[0].name if "x" in op.inputs and op.inputs["x"].arguments else None
        if op.type == "const":
            values = _const_floats(op.attributes["val"])
            if values is not None:
                consts[op.outputs[0].name] = values
        elif op.type in ("mul", "add") and op.outputs[0].name.startswith(image + "__"):
            y = consts.get(op.inputs["y"].arguments[0].name, [])
            if op.type == "mul" and y:
                scale = float(y[0])
            elif op.type == "add" and y:
                bias = [float(v) for v in y]
                image_ends.add(op.outputs[0].name)
        elif op.type == "cast" and x in image_ends:
            image_ends.add(op.outputs[0].name)
        elif op.type == "mul" and x in image_ends and channels is None:
            y = consts.get(op.inputs["y"].arguments[0].name, [])
            if len(y) == 3:
                channels = y
    out = {"scale": scale, "bias": bias}
    if channels is not None:
        out["channel_scale"] = channels
    return out


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
    factors = channel_scale(pre)
    if details.get("kind") == "mlprogram" and factors is not None:
        found = got.get("channel_scale")
        if found is None:
            problems.append(f"no per-channel multiply by 1 / std {[round(f, 6) for f in factors]} after the image input")
        elif not np.allclose(found, factors, rtol=2e-3):  # float16 holds 1 / std to 3 significant digits
            problems.append(f"per-channel multiply {found} after the image input, expected 1 / std {factors}")
    return problems
