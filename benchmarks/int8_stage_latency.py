"""Where the PEFM CPM's int8 time goes: fp32 and int8 latency of the network cut after each part.

Builds the PoseEstimationForMobile CPM release (recipes/pefm_cpm.yaml) with TFLite fp32, takes
the int8 variant's graph (the exporter's rewrites applied: depthwise bands, concatenation
split), and converts it cut after the backbone and after each CPM stage, to fp32 and to int8
(calibrated on the 12 COCO people of ../shared/data/realkp). All files are timed on XNNPACK in
one process, interleaved, median; a part's cost is the difference between consecutive cuts, so
each part's int8/fp32 ratio shows where int8 pays and where it does not.

    python benchmarks/int8_stage_latency.py [--out /tmp/mdeploy-int8-stages] [--runs 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import numpy as np
from common import machine
from int8_fidelity import int8_graph


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/mdeploy-int8-stages"))
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    _, inputs, source = int8_graph(args.out)
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    calibration = next(x for name, x in inputs.items() if "coco" in name)
    concrete = tf.saved_model.load(str(source)).signatures["serving_default"]
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    (arg,) = [t for t in frozen.inputs if t.dtype != tf.resource]
    names = [n.name for n in graph_def.node]
    cuts = {"backbone": next(n for n in names if n.endswith("MobilenetV2/concat"))}
    stages = sorted(n for n in names if n.endswith("_mv1_2_pointwise/BatchNorm/Relu6"))  # each stage's heatmaps
    for n in stages:
        cuts[n.split("Convolutional_Pose_Machine/")[1].split("_mv1/")[0].replace("_", " ")] = n

    def imports():
        tf.graph_util.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imports, [])
    files = {}
    for part, node in cuts.items():
        cut = wrapped.prune(feeds=[wrapped.graph.get_tensor_by_name(arg.name)], fetches=wrapped.graph.get_tensor_by_name(f"{node}:0"))
        for variant in ("fp32", "int8"):
            converter = tf.lite.TFLiteConverter.from_concrete_functions([cut])
            if variant == "int8":
                converter.optimizations = {tf.lite.Optimize.DEFAULT}
                converter.target_spec.supported_ops = {tf.lite.OpsSet.TFLITE_BUILTINS_INT8}
                converter.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
            files[(part, variant)] = converter.convert()

    x = calibration[:1]
    interpreters = {}
    for key, flatbuffer in files.items():
        interp = Interpreter(model_content=flatbuffer, num_threads=args.threads)
        interp.allocate_tensors()
        interpreters[key] = interp
    times = {key: [] for key in interpreters}
    for i in range(args.runs + 5):
        for key, interp in interpreters.items():
            interp.set_tensor(interp.get_input_details()[0]["index"], x)
            start = time.perf_counter()
            interp.invoke()
            if i >= 5:
                times[key].append((time.perf_counter() - start) * 1000)
    ms = {key: float(np.median(t)) for key, t in times.items()}

    print(f"Machine: {machine()}; {datetime.date.today()}; XNNPACK, {args.threads} thread(s), median of {args.runs}\n")
    print("| cut after | fp32 ms | int8 ms | part | part fp32 ms | part int8 ms | part int8 / fp32 |")
    print("|---|---|---|---|---|---|---|")
    before = {"fp32": 0.0, "int8": 0.0}
    for part in cuts:
        f, q = ms[(part, "fp32")], ms[(part, "int8")]
        df, dq = f - before["fp32"], q - before["int8"]
        print(f"| {part} | {f:.2f} | {q:.2f} | {part} | {df:.2f} | {dq:.2f} | {dq / df:.2f} |")
        before = {"fp32": f, "int8": q}


if __name__ == "__main__":
    main()
