"""Run a MACE package's frozen graph in TensorFlow, as MACE's converter reads it.

MACE cannot run here (its runtime is for phones; its converter needs TensorFlow 1.x),
so this runner emulates it at the level of op semantics: the graph is executed by
TensorFlow after applying what MACE's TensorFlow converter keeps of each op. The graph
mdeploy writes holds only what a TF 1 reader takes (exporters/mace.py, `tf1_graph`), and
MACE (1.0 and later) reads every attribute left in it, `half_pixel_centers: true` of a
resize among them, so today the reading changes nothing (`MACE_DROPS` is empty). A rule
belongs there only when a MACE release this package targets ignores an attribute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# (op, attribute) pairs MACE's converter ignores: reset to TensorFlow's default before running.
MACE_DROPS: frozenset[tuple[str, str]] = frozenset()


def mace_reading(graph_def):
    """A copy of the graph with the attributes MACE's converter ignores (`MACE_DROPS`) removed."""
    import tensorflow as tf

    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    for node in out.node:
        for op, attr in MACE_DROPS:
            if node.op == op and attr in node.attr:
                del node.attr[attr]  # TensorFlow fills the default back in on import
    return out


class MaceEmulationRunner:
    """The package's frozen graph in TensorFlow: input the one Placeholder, outputs every node nothing reads.

    The outputs are named as mdeploy's exporter names them (the ModelSpec's: `heatmaps`,
    and `pafs` for a PAF model) and come in the spec's order, so `outputs(batch)` gives each
    by name as every runner does and calling the runner gives the first (the spec's `output`).
    """

    def __init__(self, path: Path):
        import tensorflow as tf

        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(Path(path).read_bytes())
        graph_def = mace_reading(graph_def)
        inputs = [n.name for n in graph_def.node if n.op == "Placeholder"]
        consumed = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
        outputs = [n.name for n in graph_def.node if n.name not in consumed and n.op not in ("Const", "Placeholder")]
        self.output_names = outputs  # mdeploy writes them last, in the spec's order
        wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        self._fn = wrapped.prune(f"{inputs[0]}:0", [f"{name}:0" for name in self.output_names])
        self._tf = tf

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name ([N, ...] each)."""
        runs = [self._fn(self._tf.constant(x[None], self._tf.float32)) for x in batch]
        return {name: np.concatenate([r[i].numpy() for r in runs]).astype(np.float32) for i, name in enumerate(self.output_names)}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.outputs(batch)[self.output_names[0]]

