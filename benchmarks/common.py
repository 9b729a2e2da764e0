"""Shared helpers for benchmark scripts: machine description, timing of child processes."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}, {platform.system()}"


def build_with(recipe: Path, out: Path, overrides: list[str]) -> None:
    """`mdeploy build RECIPE --out OUT --set ...` in a child process. A build whose gate failed
    (exit 1) still wrote its artifacts and counts; anything else stops here."""
    cmd = [sys.executable, "-m", "mdeploy", "build", str(recipe), "--out", str(out), "--json"]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode not in (0, 1):
        raise SystemExit(proc.stderr[-3000:])


def timed(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def summary(samples: list[float]) -> str:
    return f"median {statistics.median(samples):.3f} s (min {min(samples):.3f}, max {max(samples):.3f}, n={len(samples)})"


MDEPLOY = [sys.executable, "-m", "mdeploy"]

_LATENCY_CHILD = r"""
import json, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
paths, threads, warmup, runs, low, high = json.loads(sys.argv[1])
its = []
rng = np.random.default_rng(0)
for path in paths:
    it = Interpreter(model_path=path, num_threads=threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    if np.issubdtype(inp["dtype"], np.integer):
        info = np.iinfo(inp["dtype"])
        x = rng.integers(info.min, info.max, inp["shape"], dtype=inp["dtype"])
    else:
        x = rng.uniform(low, high, inp["shape"]).astype(inp["dtype"])
    it.set_tensor(inp["index"], x)
    its.append(it)
for _ in range(warmup):
    for it in its:
        it.invoke()
times = [[] for _ in its]
for _ in range(runs):
    for k, it in enumerate(its):
        t = time.perf_counter(); it.invoke(); times[k].append((time.perf_counter() - t) * 1000)
out = {}
for path, ts in zip(paths, times):
    ts.sort()
    out[path] = {"median": ts[len(ts) // 2], "p90": ts[int(len(ts) * 0.9)], "min": ts[0]}
print(json.dumps(out))
"""


def interleaved_latency(paths, threads: int = 2, warmup: int = 5, runs: int = 50,
                        input_range: tuple[float, float] = (0.0, 1.0)) -> dict[str, dict]:
    """ms per .tflite (median, p90, min) with LiteRT's default XNNPACK, every file timed in one
    child process, interleaved (A B C A B C ...) on a fixed random input in `input_range`."""
    args = [[str(p) for p in paths], threads, warmup, runs, *input_range]
    proc = subprocess.run([sys.executable, "-c", _LATENCY_CHILD, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])
