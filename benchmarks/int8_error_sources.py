"""Where the PEFM CPM's int8 error comes from: its weights, its activations, their ranges.

Builds the PoseEstimationForMobile CPM release (recipes/pefm_cpm.yaml) with TFLite fp32 and
converts the graph its int8 variant is made from (the exporter's structural rewrites applied)
twice: in float, and in int8 calibrated on the 12 COCO people of ../shared/data/realkp (as
`int8_regions.py` does). Then:

- "weights int8": the float file again with every convolution's weights rounded to the int8
  grid the converter gives them (symmetric, one scale per output channel: largest |w| / 127)
  and everything else float. The int8 file's weights are those same values, so the int8 file
  against this one is the activations' error alone. A 6-bit grid is added as a scale.
- "int8, MSE ranges": the same calibration, but each activation's range chosen to minimise its
  own quantization error on the calibration images (the calibrated range shrunk by 1.0 ... 0.1,
  the best kept; the model's input and output keep theirs) instead of its minimum and maximum,
  as some converters offer: whether clipping rare large values buys resolution that matters.

For every person of the AI Challenger, MPII and COCO sets (XNNPACK) it prints, per pair of
files: the mean absolute heatmap difference, the mean distance the keypoints move (model-input
pixels, 192 x 192), the share moved more than 8 px, and each file's PCKh@0.5 where the set has
head sizes.

    python benchmarks/int8_error_sources.py [--out /tmp/mdeploy-int8-regions]
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
from common import machine
from int8_fidelity import int8_graph, outputs, people

FILTERS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3}  # op -> the axis of its output channels


def rounded_weights(flatbuffer: bytes, bits: int) -> tuple[bytes, int]:
    """The float file with each convolution's filter rounded to a symmetric per-channel grid of
    `bits` bits; how many filters were rounded."""
    from ai_edge_litert import schema_py_generated as schema

    from mdeploy.importers.tflite import TFLITE_IDENTIFIER, _aligned_builder

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    top = 2 ** (bits - 1) - 1
    count = 0
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        axis = FILTERS.get(names[max(code.builtinCode, code.deprecatedBuiltinCode)])
        if axis is None:
            continue
        tensor = model.subgraphs[0].tensors[op.inputs[1]]
        buffer = model.buffers[tensor.buffer]
        w = np.frombuffer(bytes(buffer.data), np.float32).reshape(tensor.shape)
        scale = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis), keepdims=True) / top
        scale[scale == 0] = 1.0
        buffer.data = np.frombuffer((np.round(w / scale) * scale).astype(np.float32).tobytes(), np.uint8)
        count += 1
    builder = _aligned_builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output()), count


SHRINK = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1)


def mse_ranges(requantizer, calibration: np.ndarray) -> tuple[bytes, int]:
    """The int8 model with each activation range (of the debugger's calibrated model) shrunk by the
    factor of SHRINK that gives the least quantization error on `calibration`; how many shrank."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from mdeploy.importers.tflite import TFLITE_IDENTIFIER, _aligned_builder

    calibrated = bytes(requantizer._debugger.calibrated_model)  # noqa: SLF001 (the debugger's own calibration)
    model = schema.ModelT.InitFromPackedBuf(bytearray(calibrated), 0)
    graph = model.subgraphs[0]
    fixed = set(graph.inputs) | set(graph.outputs)
    ranges = {i: (t.quantization.min[0], t.quantization.max[0]) for i, t in enumerate(graph.tensors)
              if i not in fixed and t.quantization is not None and t.quantization.min is not None
              and len(t.quantization.min) == 1}
    errors = {i: np.zeros(len(SHRINK)) for i in ranges}
    interp = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    image = interp.get_input_details()[0]["index"]
    for x in calibration:
        interp.set_tensor(image, x[None])
        interp.invoke()
        for i, (lo, hi) in ranges.items():
            try:
                value = interp.get_tensor(i).astype(np.float64)
            except ValueError:  # a tensor the interpreter does not keep (no data)
                continue
            for k, shrink in enumerate(SHRINK):
                low, high = min(lo * shrink, 0.0), max(hi * shrink, 0.0)
                step = (high - low) / 255 or 1.0
                zero = np.round(-128 - low / step)
                q = np.clip(np.round(value / step) + zero, -128, 127)
                errors[i][k] += float((((q - zero) * step - value) ** 2).sum())
    shrunk = 0
    for i, (lo, hi) in ranges.items():
        best = SHRINK[int(np.argmin(errors[i]))] if errors[i].any() else 1.0
        graph.tensors[i].quantization.min, graph.tensors[i].quantization.max = [lo * best], [hi * best]
        shrunk += best < 1.0
    builder = _aligned_builder(len(calibrated) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    requantizer._debugger.calibrated_model = bytes(builder.Output())  # noqa: SLF001
    try:
        return requantizer.keeping_float([]), shrunk
    finally:
        requantizer._debugger.calibrated_model = calibrated  # noqa: SLF001


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/mdeploy-int8-regions"))
    args = parser.parse_args()
    folder, inputs, source = int8_graph(args.out)
    import tensorflow as tf

    from mdeploy.evaluate.decode import decode_spec, to_source
    from mdeploy.evaluate.evaluator import prepare, score
    from mdeploy.exporters.mixed_precision import Requantizer
    from mdeploy.spec import ModelSpec

    spec = ModelSpec.load(folder / "model" / "spec.json")
    calibration = next(x for name, x in inputs.items() if "coco" in name)
    floating = tf.lite.TFLiteConverter.from_saved_model(str(source), signature_keys=["serving_default"]).convert()
    files = {"fp32": floating}
    files["weights int8"], count = rounded_weights(floating, 8)
    files["weights int6"], _ = rounded_weights(floating, 6)
    requantizer = Requantizer(source, lambda: (calibration[i:i + 1] for i in range(len(calibration))), "float")
    files["int8"] = requantizer.keeping_float([])
    files["int8, MSE ranges"], shrunk = mse_ranges(requantizer, calibration)
    paths = {}
    for name, data in files.items():
        paths[name] = args.out / f"error-sources_{name.replace(', ', '_').replace(' ', '-')}.tflite"
        paths[name].write_bytes(data)
    pairs = [("weights int8", "fp32", "weights alone (int8 grid)"), ("weights int6", "fp32", "weights alone (6-bit grid)"),
             ("int8", "weights int8", "activations alone"), ("int8", "fp32", "int8 (both)"),
             ("int8, MSE ranges", "fp32", "int8, activation ranges by MSE")]

    print(f"Machine: {machine()}; {datetime.date.today()}; {count} convolution filters rounded; "
          f"{shrunk} activation ranges shrunk by MSE\n")
    print("| set | error | compared | heatmap MAE | mean move px | moved > 8 px | PCKh@0.5 of the two |")
    print("|---|---|---|---|---|---|---|")
    for set_name, ds in people().items():
        x, affines = prepare(spec, ds, range(len(ds)))
        heatmaps = {name: outputs(path, "xnnpack", x) for name, path in paths.items()}
        points = {name: decode_spec(hm, spec.output_stride, spec.decode) for name, hm in heatmaps.items()}

        pckh = {}
        for name, p in points.items():
            source_points = np.stack([to_source(p[j], affines[j]) for j in range(len(x))])
            value = score(source_points, np.zeros((len(x), source_points.shape[1], 2)), ds, spec).metrics.get("pckh@0.5")
            pckh[name] = "-" if value is None else f"{value:.1f}"
        for a, b, label in pairs:
            move = np.linalg.norm(points[a][..., :2] - points[b][..., :2], axis=-1)
            print(f"| {set_name} | {label} | {a} vs {b} | {np.abs(heatmaps[a] - heatmaps[b]).mean():.4f} "
                  f"| {move.mean():.1f} | {np.mean(move > 8):.2f} | {pckh[a]} / {pckh[b]} |")


if __name__ == "__main__":
    main()
