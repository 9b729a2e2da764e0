"""The report's figures (matplotlib, Agg): PNG files written without timestamps, so the same
numbers give the same bytes."""

from __future__ import annotations

from pathlib import Path

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt, plt.figure(figsize=(width, height), dpi=100)


def _save(plt, fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def latency(report: dict, path: Path) -> Path | None:
    """Median latency of every measured configuration, with the spread of the trials and the p90."""
    rows = []
    for device, data in report["bench"].items():
        for r in data["results"]:
            lat = r["latency"]
            rows.append((device, f"{r['artifact']} · {device} · {r['threads']}t {r['delegate']}", lat))
    if not rows:
        return None
    devices = sorted({d for d, _, _ in rows})
    plt, fig = _figure(8, 0.35 * len(rows) + 1.2)
    ax = fig.add_subplot(1, 1, 1)
    for i, (device, _label, lat) in enumerate(rows):
        colour = PALETTE[devices.index(device) % len(PALETTE)]
        lo, hi = min(lat["trial_medians_ms"]), max(lat["trial_medians_ms"])
        ax.barh(i, lat["median_ms"], color=colour, alpha=0.8)
        ax.errorbar(lat["median_ms"], i, xerr=[[lat["median_ms"] - lo], [hi - lat["median_ms"]]], fmt="none", ecolor="black", capsize=3)
        ax.plot(lat["p90_ms"], i, marker="|", color="black", markersize=12)
    ax.set_yticks(range(len(rows)), [label for _, label, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("latency, ms (bar: median; whisker: range of trial medians; tick: p90)")
    ax.set_title("Latency per artifact and device")
    return _save(plt, fig, path)


MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def tradeoff(report: dict, path: Path) -> Path | None:
    """Accuracy against size, and against latency where measured: what quantization trades.

    Each artifact keeps its colour in both panels (one legend); in the latency panel the
    marker shape is the device and the label the thread count.
    """
    scored = [a for a in report["artifacts"] if (a.get("accuracy") or {}).get("value") is not None]
    if not scored:
        return None
    label = _metric_label(report)
    colour = {a["id"]: PALETTE[i % len(PALETTE)] for i, a in enumerate(scored)}
    pckh = {a["id"]: a["accuracy"]["value"] for a in scored}
    bench_points = [(device, r) for device, data in report["bench"].items() for r in data["results"] if r["artifact"] in pckh]
    plt, fig = _figure(10 if bench_points else 5.5, 4)
    ax = fig.add_subplot(1, 2 if bench_points else 1, 1)
    for a in scored:
        ax.scatter(a["size"] / 1e6, pckh[a["id"]], color=colour[a["id"]], s=45, label=a["id"], alpha=0.85)
    ax.set_xlabel("size, MB")
    ax.set_ylabel(label)
    ax.set_title("Accuracy vs size")
    _accuracy_limits(ax, list(pckh.values()))
    ax.legend(fontsize=8, loc="best")
    if bench_points:
        ax2 = fig.add_subplot(1, 2, 2)
        devices = sorted({d for d, _ in bench_points})
        for device, r in bench_points:
            x, y = r["latency"]["median_ms"], pckh[r["artifact"]]
            ax2.scatter(x, y, color=colour[r["artifact"]], marker=MARKERS[devices.index(device) % len(MARKERS)], s=45, alpha=0.85)
            ax2.annotate(f"{r['threads']}t", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for i, device in enumerate(devices):
            ax2.scatter([], [], color="grey", marker=MARKERS[i % len(MARKERS)], label=device)
        ax2.legend(fontsize=8, title="device", title_fontsize=8, loc="best")
        ax2.set_xlabel("median latency, ms")
        ax2.set_ylabel(label)
        ax2.set_title("Accuracy vs latency")
        _accuracy_limits(ax2, list(pckh.values()))
    return _save(plt, fig, path)


def _metric_label(report: dict) -> str:
    """The y axis of accuracy plots: the first validation split's metric, and which split it is."""
    from mdeploy.evaluate.metrics import LABELS

    rank = {"real": 0, "unknown": 1, "synthetic": 2}
    first = min(report.get("validation") or [{}], key=lambda v: rank.get(v.get("kind"), 1))
    metric = first.get("metric") or "pckh@0.5"
    where = f" on {first['name']} ({first.get('kind', 'unknown')})" if first.get("name") else ""
    return f"{LABELS.get(metric, metric)}{where}, %"


def _accuracy_limits(ax, values: list[float]) -> None:
    """At least 4 points of accuracy on the axis: differences of hundredths are not drawn as cliffs."""
    lo, hi = min(values), max(values)
    pad = max(2.0 - (hi - lo) / 2, (hi - lo) * 0.15)
    ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))


def per_joint(report: dict, path: Path) -> Path | None:
    """PCKh@0.5 per joint for the canonical model and every scored artifact."""
    series = [(a["id"], a["accuracy"]["per_joint"]) for a in report["artifacts"]
              if (a.get("accuracy") or {}).get("per_joint")]
    if not series:
        return None
    joints = list(series[0][1])
    metric = next((a["accuracy"].get("metric") for a in report["artifacts"] if (a.get("accuracy") or {}).get("metric")), "pckh@0.5")
    plt, fig = _figure(max(7, 0.6 * len(joints)), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(series)
    for s, (name, table) in enumerate(series):
        values = [_joint_value(table.get(j), metric) for j in joints]
        ax.bar([i + s * width - 0.4 + width / 2 for i in range(len(joints))], values, width=width, label=name,
               color=PALETTE[s % len(PALETTE)])
    ax.set_xticks(range(len(joints)), [j.replace("_", " ") for j in joints], rotation=40, ha="right")
    ax.set_ylabel(_metric_label(report))
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy per joint")
    ax.legend(fontsize=7, ncol=min(4, len(series)))
    return _save(plt, fig, path)


def _joint_value(entry, metric: str = "pckh@0.5") -> float:
    if isinstance(entry, dict):
        value = entry.get(metric, entry.get("pckh"))
    else:
        value = entry
    return float(value) if value is not None else 0.0
