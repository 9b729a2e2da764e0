#!/usr/bin/env python3
"""Stand-in for MACE 1.x's `mace_run` on the emulated device.

It accepts exactly mace_run's flags (an unknown one is an error, as with gflags), checks
what the real tool checks (model, data and input files; input size = product of the shape
x 4 bytes), really runs the model (here the graph is the frozen TensorFlow graph mdeploy's
MACE package holds, run with TensorFlow), writes `<output_file>_<node>`, and prints the
real tool's timing block. Its copy on the device gets a shebang naming this machine's Python.
"""

import os
import re
import sys
import time

FLAGS = {
    "model_name": "", "input_node": "", "input_shape": "", "output_node": "", "output_shape": "",
    "input_data_format": "NHWC", "output_data_format": "NHWC", "input_file": "", "output_file": "",
    "input_dir": "", "output_dir": "output", "model_data_file": "", "model_file": "", "opencl_binary_file": "",
    "opencl_parameter_file": "", "device": "GPU", "round": "1", "restart_round": "1", "malloc_check_cycle": "-1",
    "gpu_perf_hint": "3", "gpu_priority_hint": "3", "num_threads": "-1", "cpu_affinity_policy": "1", "benchmark": "false",
}


def name(node: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", node)


def main() -> int:
    flags = dict(FLAGS)
    for raw in sys.argv[1:]:
        key, _, value = raw.lstrip("-").partition("=")
        if key not in flags:
            print(f"ERROR: unknown command line flag '{key}'", file=sys.stderr)
            return 1
        flags[key] = value
    if not flags["input_node"] or not flags["output_node"]:
        print("usage: mace_run --model_name=... --input_node=... (see --help)")
        return 0
    for key in ("model_file", "model_data_file"):
        if not os.path.isfile(flags[key]):
            print(f"F mace_run.cc] Failed to read file: {flags[key]}", file=sys.stderr)
            return 134
    shape = [int(d) for d in flags["input_shape"].split(",")]
    input_path = f"{flags['input_file']}_{name(flags['input_node'])}"
    if not os.path.isfile(input_path):
        print(f"E mace_run.cc] Open input file failed: {input_path}", file=sys.stderr)
        return 1
    import numpy as np

    expected = int(np.prod(shape)) * 4
    raw = open(input_path, "rb").read()
    if len(raw) != expected:
        print(f"E mace_run.cc] input file {input_path} has {len(raw)} bytes, expected {expected}", file=sys.stderr)
        return 1
    x = np.frombuffer(raw, "<f4").reshape(shape)

    start = time.perf_counter()
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(open(flags["model_file"], "rb").read())
    fn = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    run_fn = fn.prune(fn.graph.get_tensor_by_name(f"{flags['input_node']}:0"), fn.graph.get_tensor_by_name(f"{flags['output_node']}:0"))
    init_ms = (time.perf_counter() - start) * 1000
    t0 = time.perf_counter()
    out = run_fn(tf.constant(x)).numpy()
    warmup_ms = (time.perf_counter() - t0) * 1000
    rounds = int(flags["round"])
    t0 = time.perf_counter()
    for _ in range(rounds):
        out = run_fn(tf.constant(x)).numpy()
    run_ms = (time.perf_counter() - t0) * 1000 / rounds if rounds > 0 else -1
    out.astype("<f4").tofile(f"{flags['output_file']}_{name(flags['output_node'])}")
    print("========================================================")
    print("     capability(CPU)        init      warmup     run_avg")
    print("========================================================")
    print(f"time {0.0:15.3f} {init_ms:11.3f} {warmup_ms:11.3f} {run_ms:11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
