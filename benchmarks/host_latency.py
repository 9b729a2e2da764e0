"""Host latency of TFLite models with LiteRT (XNNPACK), each timed in a fresh child process.

    python host_latency.py --build ../build/cpm_android --build ../build/hourglass_ios

times every .tflite of the given build folders and the PoseEstimationForMobile release
`model.tflite` (when ../shared is present) with 1 and 2 threads: warm-up runs, then the
median (and p90) of --runs invocations on a fixed input. Each measurement runs in its
own process, after any conversion, because timings taken in the converting process were
2-4x too high. Achieved GFLOP/s = 2 x MACs / median.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

from common import REPO, machine

PEFM_TFLITE = REPO.parent / "shared" / "reference" / "pefm" / "cpm_model" / "model.tflite"
MACS = {"mv2_cpm": 0.277e9, "mv2_hourglass": 0.268e9}
PEAK_PER_CORE = 32 * 2.6e9  # Zen 4: two 256-bit FMA pipes = 32 fp32 FLOP/cycle, 2.6 GHz nominal

CHILD = r"""
import json, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
path, threads, warmup, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
it = Interpreter(model_path=path, num_threads=threads)
it.allocate_tensors()
inp = it.get_input_details()[0]
rng = np.random.default_rng(0)
if np.issubdtype(inp["dtype"], np.integer):
    info = np.iinfo(inp["dtype"])
    x = rng.integers(info.min, info.max, inp["shape"], dtype=inp["dtype"])
else:
    x = rng.uniform(0, 1, inp["shape"]).astype(inp["dtype"])
it.set_tensor(inp["index"], x)
for _ in range(warmup):
    it.invoke()
times = []
for _ in range(runs):
    t = time.perf_counter(); it.invoke(); times.append((time.perf_counter() - t) * 1000)
times.sort()
print(json.dumps({"median": times[len(times) // 2], "p90": times[int(len(times) * 0.9)], "min": times[0]}))
"""


def measure(path: Path, threads: int, warmup: int, runs: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(threads), str(warmup), str(runs)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{path}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def arch_of(build: Path) -> str:
    spec = json.loads((build / "model" / "spec.json").read_text())
    return spec["source"].get("arch") or "mv2_cpm"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", action="append", default=[], type=Path, help="build folder (repeatable)")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    args = ap.parse_args()
    from importlib import metadata

    print(f"# host latency (LiteRT {metadata.version('ai-edge-litert')}, XNNPACK), {datetime.date.today()}, {machine()}; "
          f"median of {args.runs} after {args.warmup} warm-up, each in its own process")
    print("| model | threads | size | median | p90 | GFLOP/s | of peak | vs release |")
    models = []
    if PEFM_TFLITE.is_file():
        models.append(("PEFM release CPM (model.tflite)", PEFM_TFLITE, MACS["mv2_cpm"]))
    for build in args.build:
        arch = arch_of(build)
        for f in sorted((build / "tflite").glob("*.tflite")):
            models.append((f"{build.name} {f.stem.rsplit('_', 1)[-1]}", f, MACS.get(arch, 0)))
    reference = {}
    for label, path, macs in models:
        for threads in (1, 2):
            r = measure(path, threads, args.warmup, args.runs)
            gflops = 2 * macs / (r["median"] / 1000) / 1e9 if macs else 0
            peak = PEAK_PER_CORE * threads / 1e9
            if label.startswith("PEFM"):
                reference[threads] = r["median"]
            ratio = r["median"] / reference[threads] if threads in reference else float("nan")
            print(f"| {label} | {threads} | {path.stat().st_size / 1e6:.2f} MB | {r['median']:.2f} ms | {r['p90']:.2f} ms | "
                  f"{gflops:.1f} | {gflops / peak * 100:.1f}% | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
