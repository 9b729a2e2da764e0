"""The report's plots, measured on the drawn figures (matplotlib's own renderer, in pixels).

The reports here are report.json documents written out by hand: a build of a few int8 and
float artifacts benchmarked on two devices at several thread counts, with accuracies near
100 % so bars reach the top of the axes (where a legend inside them would sit) and with
latencies close together so the accuracy-vs-latency labels crowd.
"""

from __future__ import annotations

import itertools

import pytest

from mdeploy.report import plots

JOINTS = ["head_top", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist"]


def _report(artifacts: dict[str, float | None], bench: dict[str, dict[tuple[str, int], float]], delegates=("xnnpack",)) -> dict:
    rows = []
    for i, (artifact, value) in enumerate(artifacts.items()):
        accuracy = None if value is None else {
            "status": "passed", "metric": "pckh@0.5", "value": value, "drop": 0.0,
            "per_joint": {j: {"pckh@0.5": min(100.0, value + 3 - k)} for k, j in enumerate(JOINTS)}}
        rows.append({"id": artifact, "format": artifact.split("/")[0], "size": (8 - i) * 900_000, "accuracy": accuracy})
    results = {}
    for device, table in bench.items():
        results[device] = {"results": [
            {"artifact": artifact, "threads": threads, "delegate": delegate,
             "latency": {"median_ms": ms, "p90_ms": ms * 1.1, "trial_medians_ms": [ms * 0.97, ms * 1.04]}}
            for (artifact, threads), ms in table.items() for delegate in delegates]}
    return {"artifacts": rows, "bench": results,
            "validation": [{"name": "val", "kind": "real", "metric": "pckh@0.5", "people": 40, "images": 30}]}


ARTIFACTS = {"model": 97.2, "tflite/fp32": 97.2, "tflite/fp16": 97.1, "tflite/int8": 95.4, "onnx": 97.2, "coreml": None}


@pytest.fixture
def crowded():
    """Two devices, three thread counts, three artifacts: twelve points within a few ms."""
    bench = {
        "host": {(a, t): ms for (a, t), ms in zip(itertools.product(["tflite/fp32", "tflite/fp16", "tflite/int8"], [1, 2, 4]),
                                                 [4.0, 2.3, 1.5, 4.1, 2.35, 1.55, 3.0, 1.8, 1.2])},
        "pixel": {("tflite/fp32", 4): 4.05, ("tflite/int8", 4): 2.95, ("tflite/fp16", 4): 4.0},
    }
    return _report(ARTIFACTS, bench)


def _drawn(key: str, report: dict):
    fig = plots.figure(key, report)
    assert fig is not None, key
    fig.canvas.draw()
    return fig, fig.canvas.get_renderer()


def _overlaps(a, b) -> bool:
    return min(a.x1, b.x1) > max(a.x0, b.x0) and min(a.y1, b.y1) > max(a.y0, b.y0)


def _data_boxes(fig, renderer) -> list:
    """Every bar (its rectangle) and every scatter point (its marker's box) drawn for an artifact."""
    from matplotlib.collections import PathCollection
    from matplotlib.patches import Rectangle
    from matplotlib.transforms import Bbox

    out = []
    for artist in fig.findobj(lambda a: (a.get_gid() or "").startswith("artifact:")):
        if isinstance(artist, Rectangle):
            if artist.get_width() and artist.get_height():
                out.append(artist.get_window_extent(renderer))
        elif isinstance(artist, PathCollection):
            half = (artist.get_sizes()[0] ** 0.5) * fig.dpi / 72 / 2
            for x, y in artist.get_offset_transform().transform(artist.get_offsets()):
                out.append(Bbox.from_extents(x - half, y - half, x + half, y + half))
    return out


def _legend_hits_data(fig, renderer) -> bool:
    boxes = _data_boxes(fig, renderer)
    assert boxes
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends
    return any(_overlaps(legend.get_window_extent(renderer), box) for legend in legends for box in boxes)


@pytest.mark.parametrize("key", plots.PLOTS)
def test_legends_cover_no_bar_and_no_point(crowded, key):
    fig, renderer = _drawn(key, crowded)
    assert not _legend_hits_data(fig, renderer)
    for ax in fig.axes:  # and nothing it lists is cut off by the figure's edge
        legend = ax.get_legend().get_window_extent(renderer)
        assert legend.x1 <= fig.bbox.x1 + 1 and legend.y0 >= -1, key


def test_the_legend_check_sees_a_legend_over_bars(crowded):
    """The check above fails where it should: the per-joint plot's old legend, inside the axes."""
    fig, renderer = _drawn("per_joint", crowded)
    ax = fig.axes[0]
    ax.get_legend().remove()
    ax.legend(handles=plots._artifact_handles(["model", "onnx"], plots.artifact_colours(crowded)), loc="upper right")
    fig.canvas.draw()
    assert _legend_hits_data(fig, renderer)


def _colours_by_artifact(fig) -> dict[str, set[str]]:
    from matplotlib.colors import to_hex

    out: dict[str, set[str]] = {}
    for artist in fig.findobj(lambda a: (a.get_gid() or "").startswith("artifact:")):
        colour = artist.get_facecolor()
        colour = colour[0] if getattr(colour, "ndim", 1) == 2 else colour
        out.setdefault(artist.get_gid().split(":", 1)[1], set()).add(to_hex(colour))
    return out


def test_an_artifact_has_one_colour_in_every_plot(crowded):
    seen: dict[str, set[str]] = {}
    for key in plots.PLOTS:
        fig, _ = _drawn(key, crowded)
        for artifact, colours in _colours_by_artifact(fig).items():
            seen.setdefault(artifact, set()).update(colours)
        for ax in fig.axes:  # each legend's swatch is the colour its artifact is drawn in
            for handle, text in zip(ax.get_legend().legend_handles, ax.get_legend().get_texts()):
                if text.get_text() in plots.artifact_colours(crowded):
                    from matplotlib.colors import to_hex

                    assert {to_hex(handle.get_facecolor())} == _colours_by_artifact(fig)[text.get_text()], (key, text.get_text())
    # every artifact drawn somewhere: the benchmarked ones in all four plots, the others in three
    assert set(seen) == {"model", "tflite/fp32", "tflite/fp16", "tflite/int8", "onnx"}
    assert all(len(c) == 1 for c in seen.values()), seen
    assert len({c for cs in seen.values() for c in cs}) == len(seen)  # and no two artifacts share one


def test_an_artifact_keeps_its_colour_when_others_have_no_accuracy():
    """Colours follow the artifact table, not which artifacts a plot happens to include."""
    with_all = plots.artifact_colours(_report(ARTIFACTS, {}))
    fewer = dict(ARTIFACTS, **{"tflite/fp32": None, "model": None})
    fig, _ = _drawn("accuracy_size", _report(fewer, {}))
    assert {a: c.pop() for a, c in _colours_by_artifact(fig).items()} == {a: with_all[a] for a in ("tflite/fp16", "tflite/int8", "onnx")}


def _label_boxes(fig, renderer):
    from matplotlib.text import Text

    ax = fig.axes[0]
    return ax, [Text.get_window_extent(t, renderer) for t in ax.texts]


@pytest.mark.parametrize("devices, threads, delegates, artifacts", [
    (("host", "pixel"), (1, 2, 4), ("xnnpack",), ["tflite/fp32", "tflite/fp16", "tflite/int8", "onnx"]),
    (("host", "pixel"), (1, 4), ("xnnpack", "gpu"), ["tflite/fp32", "tflite/fp16", "tflite/int8"]),
    (("host", "pixel", "galaxy"), (1, 2, 4, 8), ("xnnpack", "gpu"), ["tflite/fp32", "tflite/fp16", "tflite/int8", "onnx"]),
])
def test_accuracy_vs_latency_labels_do_not_overlap(devices, threads, delegates, artifacts):
    """No label on another or on a marker, all inside the axes. Up to two dozen configurations
    whose latencies differ by a few percent (CPU and GPU delegate at the same speed), every one
    is labelled in the report's figure size; a crowd of 96 grows the figure and still has no
    label over another (a label with no free place left is left out)."""
    bench = {d: {(a, t): 8.0 / t * (1 + 0.02 * i + 0.01 * k) for i, a in enumerate(artifacts) for t in threads}
             for k, d in enumerate(devices)}
    report = _report(ARTIFACTS, bench, delegates)
    fig, renderer = _drawn("accuracy_latency", report)
    ax, boxes = _label_boxes(fig, renderer)
    points = len(devices) * len(threads) * len(artifacts) * len(delegates)
    if points <= 24:
        assert len(boxes) == points and fig.get_size_inches()[0] == 6.4
    else:
        assert len(boxes) >= points * 3 // 4 and fig.get_size_inches()[0] > 6.4
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlaps(a, b), (a, b)
    area = ax.get_window_extent(renderer)
    assert all(area.x0 <= b.x0 and b.x1 <= area.x1 and area.y0 <= b.y0 and b.y1 <= area.y1 for b in boxes)
    markers = _data_boxes(fig, renderer)
    assert len(markers) == points
    assert not any(_overlaps(b, m) for b in boxes for m in markers)
    labels = {t.get_text() for t in ax.texts}
    assert labels == ({f"{t}t" for t in threads} if len(delegates) == 1 else {f"{t}t {d}" for t in threads for d in delegates})
    for text in ax.texts:  # a label has the colour of its point's artifact
        assert text.get_color() in {plots.artifact_colours(report)[a] for a in artifacts}


def test_the_overlap_check_sees_overlapping_labels(crowded):
    """Two labels at the same offset from the same point are seen as overlapping."""
    fig, renderer = _drawn("accuracy_latency", crowded)
    ax = fig.axes[0]
    for _ in range(2):
        ax.annotate("1t", (4.0, 97.2), xytext=(5, 5), textcoords="offset points", fontsize=7)
    fig.canvas.draw()
    _, boxes = _label_boxes(fig, renderer)
    assert _overlaps(boxes[-1], boxes[-2])


@pytest.mark.parametrize("key", plots.PLOTS)
def test_each_caption_says_what_its_axes_show(crowded, key):
    fig, _ = _drawn(key, crowded)
    text = plots.caption(key, crowded)
    labels = [label for ax in fig.axes for label in (ax.get_xlabel(), ax.get_ylabel()) if label]
    assert labels
    for label in labels:
        quantity, _, unit = label.rpartition(", ")
        assert quantity and f"{quantity} in {unit}".lower() in text.lower(), (label, text)
    if key in ("latency", "accuracy_latency"):
        assert "measured on host and pixel" in text
    if key == "accuracy_latency":
        assert "marker shape the device" in text and "the label the thread count (t)." in text
    if key == "per_joint":
        assert "(model, tflite/fp32, tflite/fp16, tflite/int8, onnx)" in text


def test_captions_follow_the_report():
    """The accuracy axis names the metric and split the report measured; without a benchmark
    there is no latency figure to caption."""
    report = _report(ARTIFACTS, {})
    report["validation"] = [{"name": "coco_val", "kind": "real", "metric": "pck@0.2_torso"}]
    assert plots.figure("latency", report) is None and plots.figure("accuracy_latency", report) is None
    fig, _ = _drawn("accuracy_size", report)
    assert fig.axes[0].get_ylabel() == "PCK@0.2 torso on coco_val (real), %"
    assert plots.caption("accuracy_size", report).startswith("PCK@0.2 torso on coco_val (real) in % against size in MiB")


def test_same_numbers_same_png_bytes(crowded, tmp_path):
    for key in plots.PLOTS:
        a = plots.draw(key, crowded, tmp_path / "a" / f"{key}.png").read_bytes()
        b = plots.draw(key, crowded, tmp_path / "b" / f"{key}.png").read_bytes()
        assert a == b and a[:8] == b"\x89PNG\r\n\x1a\n", key
