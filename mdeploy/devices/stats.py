"""Latency statistics over benchmark trials: medians, tails, spread, throttling, significance.

A measurement is several trials; warm-up runs are never in them. When every run's time is
known (the host), median and p90 are over all runs; when a tool reports one average per
trial (benchmark_model, mace_run), they are over the trial averages. The spread is the range
of the trial medians (or averages) relative to the median: how much a repeat can move.
"""

from __future__ import annotations

import math
import statistics


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    data = sorted(values)
    if not data:
        raise ValueError("no values")
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summarize(trial_samples: list[list[float]]) -> dict:
    """Per-run samples (ms) of each trial -> summary."""
    if not trial_samples or not all(trial_samples):
        raise ValueError("every trial needs at least one sample")
    runs = [v for trial in trial_samples for v in trial]
    centers = [statistics.median(t) for t in trial_samples]
    return _summary(runs, centers, basis="runs")


def summarize_averages(trial_averages: list[float]) -> dict:
    """One average (ms) per trial -> summary (median and p90 over the trials)."""
    if not trial_averages:
        raise ValueError("no trials")
    return _summary(list(trial_averages), list(trial_averages), basis="trial averages")


def _summary(values: list[float], centers: list[float], basis: str) -> dict:
    median = statistics.median(values)
    spread = (max(centers) - min(centers)) / median * 100 if median > 0 else 0.0
    return {
        "median_ms": round(median, 4),
        "p90_ms": round(percentile(values, 90), 4),
        "mean_ms": round(statistics.fmean(values), 4),
        "min_ms": round(min(values), 4),
        "max_ms": round(max(values), 4),
        "stdev_ms": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "trial_medians_ms": [round(c, 4) for c in centers],
        "spread_pct": round(spread, 2),
        "samples": len(values),
        "basis": basis,
    }


def throttling(before: dict, after: dict, trial_centers: list[float]) -> list[str]:
    """Reasons to believe the device slowed itself down during the measurement (empty: none)."""
    reasons = []
    status = after.get("thermal_status")
    if isinstance(status, int) and status > 0:
        reasons.append(f"thermal status {status} after the run (0 = none)")
    b_max, a_max = before.get("cpu_max_freq_khz"), after.get("cpu_max_freq_khz")
    if b_max and a_max and a_max < b_max:
        reasons.append(f"CPU frequency cap dropped from {b_max / 1000:.0f} to {a_max / 1000:.0f} MHz")
    b_t, a_t = before.get("cpu_temp_c"), after.get("cpu_temp_c")
    if b_t is not None and a_t is not None and a_t - b_t >= 10:
        reasons.append(f"CPU temperature rose {a_t - b_t:.0f} C ({b_t:.0f} -> {a_t:.0f} C)")
    first, last = (trial_centers[0], trial_centers[-1]) if trial_centers else (0.0, 0.0)
    if len(trial_centers) >= 3 and first > 0 and last > first * 1.25 and last - first >= 1.0 and all(
        b >= a for a, b in zip(trial_centers, trial_centers[1:])
    ):
        reasons.append(
            f"every trial slower than the one before ({first:.2f} -> {last:.2f} ms)"
        )
    return reasons


def significant(old: dict, new: dict, floor_pct: float = 2.0) -> bool:
    """Whether the median moved by more than the trials' own spread (and `floor_pct`) allows.

    The change must exceed the larger of the two measurements' spreads (the range of their
    trial medians, as a fraction of the median) and a small floor, so that two runs of the
    same model on the same device are never called different.
    """
    a, b = old["median_ms"], new["median_ms"]
    if a <= 0:
        return False
    change = abs(b - a) / a * 100
    return change > max(old.get("spread_pct", 0.0), new.get("spread_pct", 0.0), floor_pct)
