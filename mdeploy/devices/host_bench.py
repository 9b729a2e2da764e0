"""Measure one model on this machine in a process of its own (`mdeploy bench --device host`).

Run as `python -m mdeploy.devices.host_bench MODEL --format tflite|onnx ...`; prints one
JSON object: the load time, every timed run of every trial (warm-up runs excluded), and the
process's peak memory. A fresh process measures the model alone: timings taken in a process
that just converted a model were 2-4x too high (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def _tflite(path: str, threads: int, delegate: str):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {"model_path": path, "num_threads": threads}
    if delegate == "cpu":  # the reference kernels without XNNPACK
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(**kwargs)
    interp.allocate_tensors()
    feeds = []
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        if np.issubdtype(d["dtype"], np.integer):
            info = np.iinfo(d["dtype"])
            data = rng.integers(info.min, info.max, d["shape"], dtype=d["dtype"], endpoint=True)
        else:
            data = rng.uniform(-1, 1, d["shape"]).astype(d["dtype"])
        feeds.append((d["index"], data))

    def run():
        for index, data in feeds:
            interp.set_tensor(index, data)
        interp.invoke()

    return run


def _onnx(path: str, threads: int, delegate: str):
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = rng.uniform(-1, 1, shape).astype(np.float32)

    def run():
        session.run(None, feeds)

    return run


def peak_memory_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the address space exec made, while
    ru_maxrss carries over the parent's peak from before exec (a build process's TensorFlow)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mdeploy.devices.host_bench")
    parser.add_argument("model")
    parser.add_argument("--format", choices=["tflite", "onnx"], required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--delegate", choices=["cpu", "xnnpack"], default="xnnpack")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    run = (_tflite if args.format == "tflite" else _onnx)(args.model, args.threads, args.delegate)
    init_ms = (time.perf_counter() - start) * 1000
    first = time.perf_counter()
    run()
    first_ms = (time.perf_counter() - first) * 1000
    trials = []
    for _ in range(args.trials):
        for _ in range(args.warmup):
            run()
        samples = []
        for _ in range(args.runs):
            t0 = time.perf_counter_ns()
            run()
            samples.append((time.perf_counter_ns() - t0) / 1e6)
        trials.append(samples)
    peak_mb = peak_memory_mb()
    json.dump({"init_ms": init_ms, "first_ms": first_ms, "trials_ms": trials, "peak_memory_mb": peak_mb}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
