#!/usr/bin/env python3
"""Stand-in for TFLite's `benchmark_model` on the emulated device.

It takes the real tool's flags, really runs the .tflite with LiteRT, and prints what the real
tool prints (the same lines, in the same format), so mdeploy's command building, parsing and
statistics are exercised end to end. The copy pushed to the device gets a shebang naming this
machine's Python, which the device's sandbox can see read-only.

Behaviour switches for failure tests (the test writes the file in the device's /data/local/tmp):
`.bench_crash` -> dies with SIGSEGV after loading; `.bench_garbage` -> prints noise, exit 0;
`.bench_heat` -> the "phone" heats up during the run (thermal zone +15 C, thermal status 2).
"""

import os
import signal
import sys
import time


def flag(args: dict, name: str, default):
    value = args.get(name)
    if value is None:
        return default
    if isinstance(default, bool):
        return value.lower() in ("1", "true")
    return type(default)(value)


def stats(values_us):
    n = len(values_us)
    avg = sum(values_us) / n
    std = (sum((v - avg) ** 2 for v in values_us) / n) ** 0.5
    return (f"count={n} first={int(values_us[0])} curr={int(values_us[-1])} min={int(min(values_us))} "
            f"max={int(max(values_us))} avg={avg:g} std={int(std)}")


def main() -> int:
    args = {}
    for raw in sys.argv[1:]:
        if not raw.startswith("--") or "=" not in raw:
            print(f"ERROR: could not parse flag {raw}", file=sys.stderr)
            return 1
        key, value = raw[2:].split("=", 1)
        args[key] = value
    graph = flag(args, "graph", "")
    threads = flag(args, "num_threads", -1)
    warmup = flag(args, "warmup_runs", 1)
    runs = flag(args, "num_runs", 50)
    use_xnnpack = flag(args, "use_xnnpack", True)
    use_gpu = flag(args, "use_gpu", False)
    use_nnapi = flag(args, "use_nnapi", False)
    tmp = "/data/local/tmp"
    print("INFO: STARTING!")
    print("INFO: Log parameter values verbosely: [0]")
    print(f"INFO: Min num runs: [{runs}]")
    print(f"INFO: Num threads: [{threads}]")
    print(f"INFO: Min warmup runs: [{warmup}]")
    print(f"INFO: Graph: [{graph}]")
    print(f"INFO: #threads used for CPU inference: [{threads}]")
    print(f"INFO: Use xnnpack: [{int(use_xnnpack)}]")
    sys.stdout.flush()
    if os.path.exists(f"{tmp}/.bench_garbage"):
        print("\x1b[2Jsegmentation? no. 0xDEADBEEF random words 1234 us maybe")
        return 0
    if not os.path.isfile(graph):
        print(f"ERROR: Could not open '{graph}'.", file=sys.stderr)
        print("ERROR: Benchmarking failed.", file=sys.stderr)
        return 1
    if use_gpu or use_nnapi:
        kind = "GPU" if use_gpu else "NNAPI"
        print(f"ERROR: {kind} acceleration is unsupported on this platform.", file=sys.stderr)
        print("ERROR: Benchmarking failed.", file=sys.stderr)
        return 1

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    start = time.perf_counter()
    kwargs = {"model_path": graph, "num_threads": max(threads, 1)}
    if not use_xnnpack:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(**kwargs)
    interp.allocate_tensors()
    init_us = (time.perf_counter() - start) * 1e6
    print(f"INFO: Loaded model {graph}")
    if use_xnnpack:
        print("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    print(f"INFO: The input model file size (MB): {os.path.getsize(graph) / 1e6:g}")
    print(f"INFO: Initialized session in {init_us / 1000:g}ms.")
    sys.stdout.flush()
    if os.path.exists(f"{tmp}/.bench_crash"):
        os.kill(os.getpid(), signal.SIGSEGV)

    rng = np.random.default_rng(0)
    inputs = []
    for d in interp.get_input_details():
        if np.issubdtype(d["dtype"], np.integer):
            inputs.append((d["index"], rng.integers(0, 100, d["shape"]).astype(d["dtype"])))
        else:
            inputs.append((d["index"], rng.uniform(-1, 1, d["shape"]).astype(d["dtype"])))

    def once():
        t0 = time.perf_counter()
        for index, data in inputs:
            interp.set_tensor(index, data)
        interp.invoke()
        return (time.perf_counter() - t0) * 1e6

    warm = [once() for _ in range(max(warmup, 1))]
    print(f"INFO: Running benchmark for at least {warmup} iterations and at least 0 seconds but terminate if exceeding 150 seconds.")
    print(f"INFO: {stats(warm)}")
    print()
    timed = [once() for _ in range(runs)]
    if os.path.exists(f"{tmp}/.bench_heat"):
        with open("/sys/class/thermal/thermal_zone0/temp", "w") as fh:
            fh.write("56000\n")
        with open("/sys/class/thermal/thermal_status", "w") as fh:
            fh.write("2\n")
    print(f"INFO: Running benchmark for at least {runs} iterations and at least 0 seconds but terminate if exceeding 150 seconds.")
    print(f"INFO: {stats(timed)}")
    print()
    warm_avg = sum(warm) / len(warm)
    avg = sum(timed) / len(timed)
    print(f"INFO: Inference timings in us: Init: {int(init_us)}, First inference: {int(warm[0])}, "
          f"Warmup (avg): {warm_avg:g}, Inference (avg): {avg:g}")
    if flag(args, "report_peak_memory_footprint", False):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE "
              "to the actual memory footprint of the model at runtime. Take the information at your one's own risk.")
        print(f"INFO: Memory footprint delta from the start of the tool (MB): init={peak * 0.6:g} overall={peak:g}")
        print(f"INFO: Overall peak memory footprint (MB) via periodic monitoring: {peak:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
