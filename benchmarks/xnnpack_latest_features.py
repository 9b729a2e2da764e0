"""Does XNNPACK's opt-in feature set change what int8 buys? Times an fp32 and an int8 .tflite
with LiteRT's default XNNPACK delegate as apps get it and with
`experimental_default_delegate_latest_features=True` (every flag-protected feature on), all
four interpreters in one process, interleaved, median.

    python benchmarks/xnnpack_latest_features.py FP32.tflite INT8.tflite [--runs 60] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import numpy as np
from common import machine


def interpreter(path: Path, threads: int, latest: bool):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads, experimental_default_delegate_latest_features=latest)
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    x = np.random.default_rng(0).uniform(0, 255, d["shape"]).astype(np.float32)
    if d["dtype"] != np.float32:
        scale, zero = d["quantization"]
        info = np.iinfo(d["dtype"])
        x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])
    interp.set_tensor(d["index"], x)
    for _ in range(5):
        interp.invoke()
    return interp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("fp32", type=Path)
    parser.add_argument("int8", type=Path)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args()
    print(f"Machine: {machine()}; {datetime.date.today()}\n")
    print("| threads | delegate features | fp32 ms | int8 ms | int8 / fp32 |\n|---|---|---|---|---|")
    for threads in args.threads:
        runs = {(name, latest): interpreter(path, threads, latest)
                for name, path in (("fp32", args.fp32), ("int8", args.int8)) for latest in (False, True)}
        times: dict = {key: [] for key in runs}
        for _ in range(args.runs):
            for key, interp in runs.items():
                start = time.perf_counter()
                interp.invoke()
                times[key].append(time.perf_counter() - start)
        for latest in (False, True):
            fp32, int8 = (1000 * float(np.median(times[(name, latest)])) for name in ("fp32", "int8"))
            print(f"| {threads} | {'latest' if latest else 'default (apps)'} | {fp32:.2f} | {int8:.2f} | {int8 / fp32:.3f} |")


if __name__ == "__main__":
    main()
