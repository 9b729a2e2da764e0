"""Run a MACE package's frozen graph in TensorFlow, as MACE's converter reads it.

MACE cannot run here (its runtime is for phones; its converter needs TensorFlow 1.x),
so this runner emulates it at the level of op semantics: the graph is executed by
TensorFlow after applying what MACE's TensorFlow converter keeps of each op. Today that
is one rule: ResizeBilinear keeps `align_corners` and drops `half_pixel_centers`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def mace_reading(graph_def):
    """A copy of the graph with the attributes MACE's converter ignores reset to their defaults."""
    import tensorflow as tf

    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    for node in out.node:
        if node.op == "ResizeBilinear" and "half_pixel_centers" in node.attr:
            node.attr["half_pixel_centers"].b = False
    return out


class MaceEmulationRunner:
    def __init__(self, path: Path):
        import tensorflow as tf

        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(Path(path).read_bytes())
        graph_def = mace_reading(graph_def)
        inputs = [n.name for n in graph_def.node if n.op == "Placeholder"]
        consumed = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
        outputs = [n.name for n in graph_def.node if n.name not in consumed and n.op not in ("Const", "Placeholder")]
        wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        self._fn = wrapped.prune(f"{inputs[0]}:0", f"{outputs[0]}:0")
        self._tf = tf

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.concatenate([self._fn(self._tf.constant(x[None], self._tf.float32)).numpy() for x in batch]).astype(np.float32)
