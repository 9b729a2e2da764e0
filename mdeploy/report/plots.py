"""The report's figures (matplotlib, Agg): PNG files written without timestamps, so the same
numbers give the same bytes.

Every figure colours an artifact the same way (`artifact_colours`: by its place in the
report's artifact table), keeps its legend outside the axes so it never hides data, and has
a caption (`caption`) written from the same numbers the figure draws, so the text under a
plot says what its axes show. `figure` returns the drawn figure without saving it: the tests
measure legends, bars and labels on it.
"""

from __future__ import annotations

from pathlib import Path

# Twenty distinguishable colours: an artifact's colour repeats only past twenty artifacts.
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#0b3d91", "#f4a3a8", "#98df8a", "#c5b0d5", "#ffbb78", "#0e6b73", "#c49c94", "#7b2d5b", "#3d3d3d", "#6b6b00"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
PLOTS = ("latency", "accuracy_size", "accuracy_latency", "per_joint")  # the report's order
MIB = 1 << 20
LATENCY_LABEL = "median latency, ms"
SIZE_LABEL = "size, MiB"
LABEL_SIZE = 7  # points: the accuracy-vs-latency labels
STYLE = {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False}


def artifact_colours(report: dict) -> dict[str, str]:
    """One colour per artifact id for every figure of a report: its row in the artifact table."""
    ids = [a["id"] for a in report.get("artifacts", [])]
    for data in (report.get("bench") or {}).values():
        ids += [r["artifact"] for r in data.get("results", []) if r["artifact"] not in ids]
    return {artifact: PALETTE[i % len(PALETTE)] for i, artifact in enumerate(dict.fromkeys(ids))}


def _figure(width: float, height: float):
    """A figure of its own (no pyplot state) on the Agg canvas, so it can be measured before saving."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _legend_outside(ax, handles=None, **kwargs):
    """The legend right of the axes, top-aligned: it cannot cover a bar or a point."""
    if handles is not None:
        kwargs["handles"] = handles
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, frameon=False, **kwargs)


def _artifact_handles(ids: list[str], colour: dict[str, str]) -> list:
    from matplotlib.patches import Patch

    return [Patch(facecolor=colour[i], label=i) for i in ids]


# --- what each figure draws (shared by the figure and its caption) ---

def _latency_rows(report: dict) -> list[tuple[str, dict]]:
    return [(device, r) for device, data in report["bench"].items() for r in data["results"]
            if isinstance((r.get("latency") or {}).get("median_ms"), (int, float))]


def _scored(report: dict) -> list[dict]:
    return [a for a in report["artifacts"] if (a.get("accuracy") or {}).get("value") is not None]


def _bench_points(report: dict) -> list[tuple[str, dict]]:
    scored = {a["id"] for a in _scored(report)}
    return [(device, r) for device, r in _latency_rows(report) if r["artifact"] in scored]


def _per_joint_series(report: dict) -> list[tuple[str, dict]]:
    return [(a["id"], a["accuracy"]["per_joint"]) for a in report["artifacts"] if (a.get("accuracy") or {}).get("per_joint")]


def _point_label(r: dict, delegates: set) -> str:
    return f"{r['threads']}t" + (f" {r['delegate']}" if len(delegates) > 1 else "")


def metric_label(report: dict) -> str:
    """The y axis of accuracy plots: the first validation split's metric, and which split it is."""
    from mdeploy.evaluate.metrics import LABELS

    rank = {"real": 0, "unknown": 1, "synthetic": 2}
    first = min(report.get("validation") or [{}], key=lambda v: rank.get(v.get("kind"), 1))
    metric = first.get("metric") or "pckh@0.5"
    where = f" on {first['name']} ({first.get('kind', 'unknown')})" if first.get("name") else ""
    return f"{LABELS.get(metric, metric)}{where}, %"


def _as_words(label: str) -> str:
    """An axis label "quantity, unit" as caption text: "quantity in unit"."""
    quantity, _, unit = label.rpartition(", ")
    return f"{quantity} in {unit}" if quantity else label


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def caption(key: str, report: dict) -> str:
    """The text under a figure: what its axes, colours and marks show, from the same numbers."""
    if key == "latency":
        devices = _listed(sorted({d for d, _ in _latency_rows(report)}))
        return (f"{_as_words(LATENCY_LABEL).capitalize()} of each configuration measured on {devices} (artifact · device · "
                "threads and delegate): the bar is the median, the whisker the range of the trials' medians, the tick "
                "the p90; colour is the artifact, as in every plot.")
    accuracy = _as_words(metric_label(report))
    if key == "accuracy_size":
        return f"{accuracy} against {_as_words(SIZE_LABEL)}, a point per artifact with an accuracy; colour is the artifact."
    if key == "accuracy_latency":
        points = _bench_points(report)
        labels = "thread count (t) and delegate" if len({r["delegate"] for _, r in points}) > 1 else "thread count (t)"
        return (f"{accuracy} against {_as_words(LATENCY_LABEL)}, a point per configuration measured on "
                f"{_listed(sorted({d for d, _ in points}))}: colour is the artifact, marker shape the device, "
                f"the label the {labels}.")
    if key == "per_joint":
        return (f"{accuracy} per joint, a bar per artifact ({', '.join(name for name, _ in _per_joint_series(report))}); "
                "colour is the artifact.")
    raise KeyError(key)


# --- the figures ---

def figure(key: str, report: dict):
    """The laid-out figure for `key`, or None when the report has nothing for it to show."""
    import matplotlib

    draw_it = {"latency": _latency, "accuracy_size": _accuracy_size, "accuracy_latency": _accuracy_latency,
               "per_joint": _per_joint}[key]
    with matplotlib.rc_context(STYLE):  # the report's style, without changing anyone else's figures
        return draw_it(report)


def draw(key: str, report: dict, path: Path) -> Path | None:
    """Write the figure for `key` as a PNG at `path`; None (and no file) when there is nothing to draw."""
    fig = figure(key, report)
    if fig is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def _latency(report: dict):
    """Median latency of every measured configuration, with the spread of the trials and the p90."""
    from matplotlib.lines import Line2D

    rows = _latency_rows(report)
    if not rows:
        return None
    colour = artifact_colours(report)
    fig = _figure(8.5, 0.35 * len(rows) + 1.3)
    ax = fig.add_subplot(1, 1, 1)
    for i, (_device, r) in enumerate(rows):
        lat = r["latency"]
        medians = lat.get("trial_medians_ms") or [lat["median_ms"]]
        lo, hi = min(medians), max(medians)
        ax.barh(i, lat["median_ms"], color=colour[r["artifact"]], alpha=0.85, gid=f"artifact:{r['artifact']}")
        ax.errorbar(lat["median_ms"], i, xerr=[[max(0.0, lat["median_ms"] - lo)], [max(0.0, hi - lat["median_ms"])]],
                    fmt="none", ecolor="black", capsize=3)
        if isinstance(lat.get("p90_ms"), (int, float)):
            ax.plot(lat["p90_ms"], i, marker="|", color="black", markersize=12, linestyle="none")
    ax.set_yticks(range(len(rows)), [f"{r['artifact']} · {d} · {r['threads']}t {r['delegate']}" for d, r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(LATENCY_LABEL)
    ax.set_title("Latency per artifact and device")
    _legend_outside(ax, [Line2D([], [], color="grey", lw=6, label="median"),
                         Line2D([], [], color="black", marker="|", markersize=8, lw=1, label="trial medians, range"),
                         Line2D([], [], color="black", marker="|", markersize=12, linestyle="none", label="p90")])
    fig.tight_layout()
    return fig


def _accuracy_size(report: dict):
    """Accuracy against size: what quantization saves in bytes and what it costs in accuracy."""
    scored = _scored(report)
    if not scored:
        return None
    colour = artifact_colours(report)
    fig = _figure(6.4, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    for a in scored:
        ax.scatter(a["size"] / MIB, a["accuracy"]["value"], color=colour[a["id"]], s=45, alpha=0.85, gid=f"artifact:{a['id']}")
    ax.set_xlabel(SIZE_LABEL)
    ax.set_ylabel(metric_label(report))
    ax.set_title("Accuracy vs size")
    _accuracy_limits(ax, [a["accuracy"]["value"] for a in scored])
    _legend_outside(ax, _artifact_handles([a["id"] for a in scored], colour), title="artifact", title_fontsize=8)
    fig.tight_layout()
    return fig


SCALES = (1.0, 1.4, 1.9)  # the accuracy-vs-latency figure grows until its labels find room


def _accuracy_latency(report: dict):
    """Accuracy against latency: a point per measured configuration, labelled with its threads.

    Labels never overlap: where some find no free place the figure is drawn again larger,
    and at the largest size a label with no free place is left out (its point keeps its
    colour and marker)."""
    points = _bench_points(report)
    if not points:
        return None
    for scale in SCALES:
        fig, crowded = _accuracy_latency_at(report, points, scale)
        if not crowded:
            break
    for ann in crowded:
        ann.remove()
    return fig


def _accuracy_latency_at(report: dict, points: list[tuple[str, dict]], scale: float):
    from matplotlib.lines import Line2D

    colour = artifact_colours(report)
    accuracy = {a["id"]: a["accuracy"]["value"] for a in _scored(report)}
    devices = sorted({d for d, _ in points})
    delegates = {r["delegate"] for _, r in points}
    fig = _figure(6.4 * scale, 3.8 * scale)
    ax = fig.add_subplot(1, 1, 1)
    for device, r in points:
        ax.scatter(r["latency"]["median_ms"], accuracy[r["artifact"]], color=colour[r["artifact"]], s=45, alpha=0.85,
                   marker=MARKERS[devices.index(device) % len(MARKERS)], gid=f"artifact:{r['artifact']}")
    ax.set_xlabel(LATENCY_LABEL)
    ax.set_ylabel(metric_label(report))
    ax.set_title("Accuracy vs latency")
    _accuracy_limits(ax, list(accuracy.values()))
    xs = [r["latency"]["median_ms"] for _, r in points]
    pad = (max(xs) - min(xs)) * 0.12 or max(xs) * 0.1 or 1.0
    ax.set_xlim(max(0.0, min(xs) - pad), max(xs) + pad)  # room for the labels of the outermost points
    handles = _artifact_handles(list(dict.fromkeys(r["artifact"] for _, r in points)), colour)
    handles += [Line2D([], [], color="grey", marker=MARKERS[i % len(MARKERS)], linestyle="none", label=f"device {d}")
                for i, d in enumerate(devices)]
    _legend_outside(ax, handles)
    fig.tight_layout()  # first the layout, then the labels: their places are measured on the final axes
    labels = place_labels(fig, ax, [(r["latency"]["median_ms"], accuracy[r["artifact"]], _point_label(r, delegates),
                                     colour[r["artifact"]]) for _, r in points])
    return fig, [ann for ann, free in labels if not free]


def place_labels(fig, ax, points: list[tuple[float, float, str, str]], marker_pt: float = 7.0) -> list[tuple[object, bool]]:
    """Annotate each (x, y, text, colour) where the text covers no other label, no marker and stays in the axes.

    Candidate places ring the point at growing distances (in points); the first free one is
    taken, with a thin leader line once it is more than one ring out. Where no place is free
    within the rings (a crowd larger than the axes), the least covered one is used and
    reported: returns (annotation, found a free place) per point."""
    import numpy as np

    renderer = fig.canvas.get_renderer()
    area = ax.get_window_extent(renderer)
    px = fig.dpi / 72.0
    half = marker_pt * px / 2
    centres = [ax.transData.transform((x, y)) for x, y, _, _ in points]
    taken = [(cx - half, cy - half, cx + half, cy + half) for cx, cy in centres]  # x0, y0, x1, y1 in pixels
    sizes = {}
    for text in {p[2] for p in points}:  # measured once: a candidate's box is then arithmetic
        probe = ax.text(0, 0, text, fontsize=LABEL_SIZE)
        box = probe.get_window_extent(renderer)
        sizes[text] = (box.width, box.height)
        probe.remove()
    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    out = []
    for (x, y, text, colour), (cx, cy) in sorted(zip(points, centres), key=lambda p: (p[1][0], -p[1][1])):
        w, h = sizes[text]
        boxes = np.array(taken)
        best = None  # (covered area, offset in points, box, ring)
        for ring in range(1, 9):
            step = 5 + 7 * (ring - 1)  # ring 1 clears the point's own marker
            for dx, dy in directions:
                ax_ = cx + dx * step * px - (w if dx < 0 else w / 2 if dx == 0 else 0)
                ay_ = cy + dy * step * px - (h if dy < 0 else h / 2 if dy == 0 else 0)
                box = (ax_ - 1, ay_ - 1, ax_ + w + 1, ay_ + h + 1)
                cover = float(_overlaps(box, boxes).sum())
                inside = area.x0 <= box[0] and box[2] <= area.x1 and area.y0 <= box[1] and box[3] <= area.y1
                cover += 0.0 if inside else w * h
                if best is None or cover < best[0]:
                    best = (cover, (dx * step, dy * step), box, ring)
                if cover == 0:
                    break
            if best[0] == 0:
                break
        cover, offset, box, ring = best
        arrow = {"arrowstyle": "-", "lw": 0.5, "color": "grey", "shrinkA": 0, "shrinkB": half / px} if ring > 1 else None
        out.append((_label(ax, text, colour, (x, y), offset, arrow), cover == 0))  # far out: a leader line to its point
        taken.append(box)
    return out


def _overlaps(box: tuple[float, float, float, float], boxes):
    """The area `box` shares with each row (x0, y0, x1, y1) of `boxes`."""
    import numpy as np

    w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def _label(ax, text: str, colour: str, xy: tuple[float, float], offset: tuple[float, float], arrow: dict | None):
    dx, dy = offset
    ann = ax.annotate(text, xy, xytext=offset, textcoords="offset points", fontsize=LABEL_SIZE, annotation_clip=False, arrowprops=arrow,
                      color=colour,
                      ha="left" if dx > 0 else "right" if dx < 0 else "center",
                      va="bottom" if dy > 0 else "top" if dy < 0 else "center")
    ann.set_in_layout(False)  # placed after the layout, on the final axes
    return ann


def _accuracy_limits(ax, values: list[float]) -> None:
    """At least 4 points of accuracy on the axis: differences of hundredths are not drawn as cliffs."""
    lo, hi = min(values), max(values)
    pad = max(2.0 - (hi - lo) / 2, (hi - lo) * 0.15)
    ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))


def _per_joint(report: dict):
    """The accuracy of each joint for every artifact with per-joint numbers (a bar each)."""
    series = _per_joint_series(report)
    if not series:
        return None
    colour = artifact_colours(report)
    joints = list(series[0][1])
    metric = next((a["accuracy"].get("metric") for a in report["artifacts"] if (a.get("accuracy") or {}).get("metric")), "pckh@0.5")
    fig = _figure(max(7, 0.6 * len(joints)) + 1.6, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(series)
    for s, (name, table) in enumerate(series):
        values = [_joint_value(table.get(j), metric) for j in joints]
        ax.bar([i + s * width - 0.4 + width / 2 for i in range(len(joints))], values, width=width, color=colour[name],
               gid=f"artifact:{name}")
    ax.set_xticks(range(len(joints)), [j.replace("_", " ") for j in joints], rotation=40, ha="right")
    ax.set_ylabel(metric_label(report))
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy per joint")
    _legend_outside(ax, _artifact_handles([name for name, _ in series], colour), title="artifact", title_fontsize=8)
    fig.tight_layout()
    return fig


def _joint_value(entry, metric: str = "pckh@0.5") -> float:
    if isinstance(entry, dict):
        value = entry.get(metric, entry.get("pckh"))
    else:
        value = entry
    return float(value) if value is not None else 0.0
