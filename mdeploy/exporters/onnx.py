"""ONNX export with tf2onnx from the canonical SavedModel's serving signature.

The input keeps the canonical name `image` (NHWC, or NCHW with `export.onnx.nchw`: the
transpose then disappears from the graph instead of running first thing on the device),
the output is `heatmaps`, and onnxsim folds what it can when `simplify` is on.
"""

from __future__ import annotations

from mdeploy.errors import ModelError
from mdeploy.exporters import ExportInputs, ExportTarget, Tolerance

TOLERANCE = Tolerance(max_abs=1e-4, min_agreement=0.98)


def targets(recipe, build_dir) -> list[ExportTarget]:
    section = recipe.export.onnx
    return [
        ExportTarget(
            artifact_id="onnx",
            format="onnx",
            variant=f"opset{section.opset}" + ("-nchw" if section.nchw else ""),
            filename=f"onnx/{recipe.name}.onnx",
            settings=recipe.section_json("export", "onnx"),
            tools=("tensorflow", "tf2onnx", "onnx", "onnxsim"),
            tolerance=TOLERANCE,
            run=convert,
            describe=f"convert to ONNX (opset {section.opset}{', NCHW input' if section.nchw else ''})",
        )
    ]


def convert(target: ExportTarget, inputs: ExportInputs) -> dict:
    import onnx
    import tensorflow as tf
    import tf2onnx

    settings = target.settings
    spec = inputs.spec
    loaded = tf.saved_model.load(str(inputs.saved_model))
    signature = loaded.signatures["serving_default"]
    fn = tf.function(lambda image: signature(image=image))
    in_spec = [tf.TensorSpec(list(spec.input.shape), tf.float32, name=spec.input.name)]
    try:
        model, _ = tf2onnx.convert.from_function(
            fn,
            input_signature=in_spec,
            opset=settings["opset"],
            inputs_as_nchw=[f"{spec.input.name}:0"] if settings["nchw"] else None,
        )
    except Exception as err:  # tf2onnx raises plain exceptions for unsupported ops
        raise ModelError(f"ONNX conversion failed: {str(err).splitlines()[0][:400]}") from err
    simplified = False
    if settings["simplify"]:
        import onnxsim

        candidate, ok = onnxsim.simplify(model)
        if ok:
            model, simplified = candidate, True
        else:
            inputs.log("onnxsim could not check its result; keeping the unsimplified graph")
    onnx.checker.check_model(model)
    from mdeploy.exporters.reproducible import normalize_onnx, onnx_bytes

    model = normalize_onnx(model)
    onnx.checker.check_model(model)
    inputs.out.parent.mkdir(parents=True, exist_ok=True)
    inputs.out.write_bytes(onnx_bytes(model))
    ins = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    outs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    return {
        "opset": settings["opset"],
        "layout": "NCHW" if settings["nchw"] else "NHWC",
        "simplified": simplified,
        "inputs": ins,
        "outputs": outs,
        "ops": sorted({n.op_type for n in model.graph.node}),
        "nodes": len(model.graph.node),
    }
