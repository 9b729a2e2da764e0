"""Reading what benchmark tools print. Anything that is not their format is an error, never a number."""

from __future__ import annotations

import re

from mdeploy.errors import DeviceError

_TIMINGS = re.compile(
    r"Inference timings in us: Init: (?P<init>[\d.]+), First inference: (?P<first>[\d.]+), "
    r"Warmup \(avg\): (?P<warmup>[\d.eE+-]+|nan|-?inf), Inference \(avg\): (?P<avg>[\d.eE+-]+)"
)
_COUNT = re.compile(
    r"count=(?P<count>\d+) first=(?P<first>[\d.]+) curr=(?P<curr>[\d.]+) min=(?P<min>[\d.]+) max=(?P<max>[\d.]+) "
    r"avg=(?P<avg>[\d.eE+-]+) std=(?P<std>[\d.]+)"
)
_MEMORY_DELTA = re.compile(r"Memory footprint delta from the start of the tool \(MB\): init=(?P<init>[\d.]+) overall=(?P<overall>[\d.]+)")
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: (?P<peak>[\d.]+)")


class BenchFailure(DeviceError):
    """A benchmark tool failed for one configuration (crash, exit code, unreadable output);
    the device itself still answers, so other configurations can go on."""


class BenchOutputError(BenchFailure):
    """A benchmark tool ran but printed something mdeploy cannot read as a measurement."""


def parse_benchmark_model(text: str) -> dict:
    """TFLite benchmark_model output -> timings (ms) and memory (MB).

    The timing line is required; the per-run statistics line of the measured phase (the
    last `count=` line) and the memory lines are read when present.
    """
    timings = list(_TIMINGS.finditer(text))
    if not timings:
        last = [line for line in text.strip().splitlines() if line.strip()][-3:]
        raise BenchOutputError(
            "benchmark_model printed no 'Inference timings in us' line" + (f"; it ended with: {' | '.join(last)[:300]}" if last else " (no output)")
        )
    t = timings[-1]
    avg_us = float(t["avg"])
    if not avg_us > 0:
        raise BenchOutputError(f"benchmark_model reported an average of {t['avg']} us, which is not a latency")
    out = {
        "init_ms": float(t["init"]) / 1000,
        "first_ms": float(t["first"]) / 1000,
        "warmup_avg_ms": float(t["warmup"]) / 1000 if t["warmup"] not in ("nan", "inf", "-inf") else None,
        "avg_ms": avg_us / 1000,
    }
    counts = list(_COUNT.finditer(text[: t.start()]))
    if counts:
        c = counts[-1]
        out.update(count=int(c["count"]), min_ms=float(c["min"]) / 1000, max_ms=float(c["max"]) / 1000, std_ms=float(c["std"]) / 1000)
    memory = _MEMORY_DELTA.search(text)
    if memory:
        out["memory_init_mb"] = float(memory["init"])
        out["memory_overall_mb"] = float(memory["overall"])
    peak = _PEAK.search(text)
    if peak:
        out["peak_memory_mb"] = float(peak["peak"])
    return out


_MACE_TIME = re.compile(r"^time\s+(?P<a>-?[\d.]+)\s+(?P<b>-?[\d.]+)\s+(?P<c>-?[\d.]+)(?:\s+(?P<d>-?[\d.]+))?\s*$", re.MULTILINE)


def parse_mace_run(text: str) -> dict:
    """mace_run's summary line (ms): `time [capability] init warmup run_avg` (4 numbers in MACE 1.x,
    3 in older releases; the last three are always init, first run, average run)."""
    matches = list(_MACE_TIME.finditer(text))
    if not matches:
        last = [line for line in text.strip().splitlines() if line.strip()][-3:]
        raise BenchOutputError("mace_run printed no 'time' line" + (f"; it ended with: {' | '.join(last)[:300]}" if last else " (no output)"))
    m = matches[-1]
    numbers = [float(v) for v in (m["a"], m["b"], m["c"], m["d"]) if v is not None]
    init, warmup, avg = numbers[-3:]
    if not avg > 0:
        raise BenchOutputError(f"mace_run reported an average of {avg} ms, which is not a latency (is --round 0?)")
    return {"init_ms": init, "first_ms": warmup, "avg_ms": avg}
