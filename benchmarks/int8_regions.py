"""Where the PEFM CPM's int8 heatmap error is made: parts of the network kept in float.

Builds the PoseEstimationForMobile CPM release (recipes/pefm_cpm.yaml) with TFLite fp32, then
quantizes the int8 variant's graph (the exporter's rewrites applied) calibrated on the 12 COCO
people of ../shared/data/realkp, once, and requantizes it (LiteRT's quantization debugger)
with one part of the graph at a time left in float: every tensor whose name lies
under the part's name scope. For each it prints the mean absolute heatmap difference from
fp32 on the AI Challenger, MPII and COCO people (XNNPACK). Last, the ranges inside stage 5's
last block (a 1x1 depthwise layer after a ReLU6 conv) on all those people, which say why it
matters.

    python benchmarks/int8_regions.py [--out /tmp/mdeploy-int8-regions]
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
from common import machine
from int8_fidelity import int8_graph, outputs

PARTS = {
    "nothing (plain int8)": [],
    "the backbone (MobilenetV2)": ["MobilenetV2"],
    "stage 1": ["stage_1"],
    "stage 5": ["stage_5"],
    "stage 5's inverted bottlenecks (mv2)": ["stage_5_mv2"],
    "stage 5's last block (mv1)": ["stage_5_mv1"],
    "the mv1 block of stages 2-5": ["stage_2_mv1", "stage_3_mv1", "stage_4_mv1", "stage_5_mv1"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/mdeploy-int8-regions"))
    args = parser.parse_args()
    folder, inputs, source = int8_graph(args.out)
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from mdeploy.exporters.mixed_precision import Requantizer, scratch_path

    fp32 = folder / "tflite" / "pefm_cpm_fp32.tflite"
    calibration = next(x for name, x in inputs.items() if "coco" in name)
    requantizer = Requantizer(source, lambda: (calibration[i:i + 1] for i in range(len(calibration))), "float")
    floating = tf.lite.TFLiteConverter.from_saved_model(str(source), signature_keys=["serving_default"]).convert()
    names = [d["name"] for d in Interpreter(model_content=floating).get_tensor_details()]
    reference = {name: outputs(fp32, "xnnpack", x) for name, x in inputs.items()}

    print(f"Machine: {machine()}; {datetime.date.today()}\n")
    print("| kept in float | tensors | " + " | ".join(f"MAE {n.split(' (')[0]}" for n in inputs) + " |")
    print("|---|---|" + "---|" * len(inputs))
    for part, scopes in PARTS.items():
        tensors = [n for n in names if any(f"/{s}" in n.split(";")[0] for s in scopes)]
        path = scratch_path(requantizer.keeping_float(tensors), args.out)
        try:
            errors = [np.abs(outputs(path, "xnnpack", x) - reference[name]).mean() for name, x in inputs.items()]
        finally:
            path.unlink()
        print(f"| {part} | {len(tensors)} | " + " | ".join(f"{e:.4f}" for e in errors) + " |")

    # Why stage 5's last block: the ranges around its second 1x1 depthwise layer, in float.
    interp = Interpreter(model_content=floating, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    details = interp.get_tensor_details()
    block = [op for op in interp._get_ops_details()  # noqa: SLF001 (the graph's own op list)
             if "stage_5_mv1" in details[op["outputs"][0]]["name"].split(";")[0]]
    seen = {op["index"]: [] for op in block}
    image = interp.get_input_details()[0]["index"]
    for x in np.concatenate(list(inputs.values())):
        interp.set_tensor(image, x[None])
        interp.invoke()
        for op in block:
            seen[op["index"]].append(interp.get_tensor(op["outputs"][0]).reshape(-1, details[op["outputs"][0]]["shape"][-1]))
    print("\nStage 5's last block, in float on every person above:\n")
    print("| op | output | channel max: median | channel max: largest | 1x1 depthwise weights: median abs | largest abs |")
    print("|---|---|---|---|---|---|")
    for op in block:
        top = np.concatenate(seen[op["index"]]).max(axis=0)
        weights = interp.get_tensor(op["inputs"][1]) if op["op_name"] == "DEPTHWISE_CONV_2D" else None
        w = "- | -" if weights is None else f"{np.median(np.abs(weights)):.3f} | {np.abs(weights).max():.3f}"
        print(f"| {op['op_name']} | {details[op['outputs'][0]]['name'].split(';')[0].rsplit('stage_5_mv1/', 1)[-1]} "
              f"| {np.median(top):.3f} | {top.max():.3f} | {w} |")


if __name__ == "__main__":
    main()
