"""Start a model from released weights: copy a TF1 frozen graph's constants into a Keras model.

A user who fine-tunes the PoseEstimationForMobile CPM on their own data, or who wants
mdeploy's `mv2_cpm` to compute exactly what the published model computes, starts from
the release's `model.pb` instead of random weights. The frozen graph keeps its weights as
Const nodes (conv kernels, depthwise kernels, batch-norm offsets and statistics, or the
biases of a graph whose batch norms were folded); this module finds, for every Keras
layer with weights, the graph op that plays its part, and copies the constants over.

The pairing is structural, not by name: starting from the graph's output and the model's
final output, both graphs are walked backwards together, input by input, and every pair of
ops must be the same operation with the same settings (kernel shapes, strides, padding,
batch-norm epsilon, activation, resize sampling, pooling, concatenation order). Identity
ops and a ReLU applied on top of a ReLU6 (a no-op the TF-slim code left in the release)
are skipped. The first difference (closest to the input) fails with a `ModelError` naming
the Keras layer and the graph node, and nothing is copied unless every weighted layer has
its counterpart: a layer left at its random initialisation would silently spoil the model.

The released CPM takes BGR pixels in 0..255 with no mean or scale; the initialised Keras
model takes the same input, so a recipe that uses it says `channels: bgr` and
`range: [0, 255]`. Its structure is `mv2_cpm`'s defaults with `heatmap_head: bn_relu6`
(the default linear head is a training choice, see docs/training.md); `initialise` builds
that model and loads it in one call.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from mdeploy.errors import ModelError

# Parameters each architecture needs, on top of its defaults, to have a release's structure.
RELEASE_PARAMS: dict[str, dict[str, Any]] = {"mv2_cpm": {"heatmap_head": "bn_relu6"}}

_HINT = (
    "build the model with the architecture and parameters the graph was trained with; the "
    "PoseEstimationForMobile CPM release is mv2_cpm with its defaults, heatmap_head: bn_relu6 "
    "and 14 keypoints (mdeploy.models.release_weights.initialise builds it)"
)
_BN_OPS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
_PASS_THROUGH = ("Identity", "StopGradient", "Snapshot")


def initialise(
    arch: str,
    params: dict | None,
    input_size: tuple[int, int],
    num_keypoints: int,
    graph_path: Path,
    *,
    where: str | None = None,
):
    """Build `arch` (with the release's parameters under `params`) and load the graph's weights.

    Returns (model, report); the model is the training model of `create_model` (every stage
    output, final last).
    """
    from mdeploy.models import create_model

    merged = {**RELEASE_PARAMS.get(arch, {}), **(params or {})}
    model = create_model(arch, merged, tuple(input_size), num_keypoints)
    return model, load_release_weights(model, Path(graph_path), where=where)


def load_release_weights(model, graph_path: Path, *, where: str | None = None, output: str | None = None) -> dict:
    """Copy the weights of the TF1 frozen graph at `graph_path` into the Keras `model`.

    The model's final output (`model.outputs[-1]`) is paired with the graph's output: the
    one op nothing consumes, or the node named `output`. Raises `ModelError` at the first
    op or weight shape that differs, or when a weighted layer has no counterpart; the model
    is untouched then. Returns a report: the graph file and its sha256, the number of
    tensors and values copied, the number of Keras layers given weights and the pairing
    (Keras layer name -> graph node name).
    """
    import numpy as np

    graph_path = Path(graph_path)
    data = _read(graph_path, where)
    graph = _Graph(_parse(data, graph_path, where), graph_path.name, where)
    sink = graph.output(output)
    walk = _Walk(model, graph, where)
    walk.run(model.outputs[-1], sink)

    unmatched = [layer.name for layer in _weighted_layers(model) if id(layer) not in walk.layers_done]
    if unmatched:
        more = f" and {len(unmatched) - 1} more" if len(unmatched) > 1 else ""
        raise ModelError(
            f"{graph_path.name} has no weights for layer {unmatched[0]!r}{more} of {model.name}: "
            "they do not feed the model's final output the way the graph's ops feed its output",
            where=where,
            hint=_HINT,
        )
    for variable, value in walk.assignments:
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return {
        "graph": str(graph_path),
        "sha256": hashlib.sha256(data).hexdigest(),
        "output": sink,
        "tensors": len(walk.assignments),
        "values": int(sum(int(np.prod(v.shape)) for v, _ in walk.assignments)),
        "layers": len(walk.mapping),
        "mapping": dict(walk.mapping),
    }


def _read(path: Path, where: str | None) -> bytes:
    if not path.is_file():
        raise ModelError(f"no frozen graph at {path}", where=where)
    return path.read_bytes()


def _parse(data: bytes, path: Path, where: str | None):
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except DecodeError as err:
        raise ModelError(f"{path.name} is not a TensorFlow GraphDef ({err})", where=where) from err
    if not graph_def.node:
        raise ModelError(f"{path.name} holds an empty graph", where=where)
    variables = [n.name for n in graph_def.node if n.op in ("VariableV2", "Variable", "VarHandleOp")]
    if variables:
        raise ModelError(
            f"{path.name} is not frozen: its weights are in {len(variables)} variable(s) (e.g. {variables[0]}), not constants",
            where=where,
            hint="freeze it first (variables converted to constants)",
        )
    return graph_def


class _Graph:
    """A frozen GraphDef read as data flow: effective producers, constants, attributes."""

    def __init__(self, graph_def, name: str, where: str | None):
        self.nodes = {n.name: n for n in graph_def.node}
        self.name = name
        self.where = where

    def output(self, requested: str | None) -> str:
        if requested is not None:
            base = requested[:-2] if requested.endswith(":0") else requested
            if base not in self.nodes:
                raise ModelError(f"{self.name} has no node {requested!r}", where=self.where)
            return base
        consumed = {self._split(i)[0] for n in self.nodes.values() for i in n.input}
        sinks = [n.name for n in self.nodes.values() if n.name not in consumed and n.op not in ("Const", "NoOp", "Placeholder")]
        if len(sinks) != 1:
            listed = ", ".join(sinks[:5]) or "none"
            raise ModelError(
                f"{self.name} has {len(sinks)} outputs ({listed}): name the one that matches the model's final output",
                where=self.where,
            )
        return sinks[0]

    @staticmethod
    def _split(name: str) -> tuple[str, int]:
        name = name.lstrip("^")
        base, _, index = name.partition(":")
        return base, int(index) if index else 0

    def inputs(self, name: str) -> list[tuple[str, int]]:
        """Data inputs (node, output index), control inputs left out."""
        return [self._split(i) for i in self.nodes[name].input if not i.startswith("^")]

    def effective(self, name: str, index: int = 0) -> tuple[str, int]:
        """Skip pass-through ops and a ReLU applied to what is already a ReLU6 or ReLU output."""
        while True:
            node = self.nodes[name]
            if node.op in _PASS_THROUGH:
                name, index = self.inputs(name)[0]
                continue
            if node.op == "Relu":
                below, below_index = self.effective(*self.inputs(name)[0])
                if self.nodes[below].op in ("Relu", "Relu6"):
                    name, index = below, below_index
                    continue
            return name, index

    def data_input(self, name: str, position: int = 0) -> tuple[str, int]:
        return self.effective(*self.inputs(name)[position])

    def const(self, name: str, position: int):
        """The constant value feeding input `position` of `name` (through Identity ops)."""
        import tensorflow as tf

        source, _ = self.inputs(name)[position]
        while self.nodes[source].op in _PASS_THROUGH:
            source = self.inputs(source)[0][0]
        node = self.nodes[source]
        if node.op != "Const":
            raise ModelError(
                f"{self.name}: input {position} of {name} is computed by {node.op} {source}, not a constant: "
                "only frozen weights can be copied",
                where=self.where,
            )
        return source, tf.make_ndarray(node.attr["value"].tensor)

    def attr(self, name: str, key: str, default=None):
        node = self.nodes[name]
        if key not in node.attr:
            return default
        value = node.attr[key]
        kind = value.WhichOneof("value")
        if kind == "list":
            return list(value.list.i) or [s.decode() for s in value.list.s]
        if kind == "s":
            return value.s.decode()
        return getattr(value, kind) if kind else default


class _Walk:
    """Walks the Keras model and the graph backwards from their outputs, pairing ops."""

    def __init__(self, model, graph: _Graph, where: str | None):
        self.model = model
        self.graph = graph
        self.where = where
        self.order = {id(layer): i for i, layer in enumerate(model.layers)}
        self.pairs: dict[tuple[int, int], str] = {}  # (id(layer), node index) -> graph node
        self.taken: dict[str, str] = {}  # graph node -> keras layer name
        self.layers_done: set[int] = set()
        self.mapping: dict[str, str] = {}  # weighted keras layer -> graph node holding its weights
        self.assignments: list[tuple[Any, Any]] = []
        self.problems: list[tuple[int, str, str | None]] = []  # (layer order, message, hint)
        self.scale = (1.0, 1.0)  # model input size / graph input size

    # -- driving -----------------------------------------------------------------------
    def run(self, keras_output, graph_output: str) -> None:
        self._input_scale()
        stack = [(keras_output, (graph_output, 0))]
        while stack:
            tensor, (gname, gindex) = stack.pop()
            layer, node_index, _ = tensor._keras_history
            key = (id(layer), node_index)
            gname, gindex = self.graph.effective(gname, gindex)
            if key in self.pairs:
                if self.pairs[key] != gname:
                    self._problem(layer, f"layer {layer.name!r} is used where the graph has two different ops ({self.pairs[key]} and {gname})")
                continue
            if gname in self.taken:
                self._problem(layer, f"layer {layer.name!r} and layer {self.taken[gname]!r} both stand where the graph has the one op {gname}")
                continue
            self.pairs[key] = gname
            self.taken[gname] = layer.name
            if gindex != 0:
                self._problem(layer, f"layer {layer.name!r} stands where the graph uses output {gindex} of {gname}")
                continue
            inputs = self._pair(layer, node_index, gname)
            if inputs is None:
                continue
            k_inputs = _keras_inputs(layer, node_index)
            if len(k_inputs) != len(inputs):
                self._problem(layer, f"layer {layer.name!r} takes {len(k_inputs)} inputs but {gname} takes {len(inputs)}")
                continue
            stack.extend(reversed(list(zip(k_inputs, inputs, strict=True))))
        if self.problems:
            order, message, hint = min(self.problems, key=lambda p: p[0])
            more = len(self.problems) - 1
            suffix = f" (and {more} more difference{'s' if more > 1 else ''})" if more else ""
            raise ModelError(f"{self.graph.name} does not match {self.model.name}: {message}{suffix}", where=self.where, hint=hint or _HINT)

    def _input_scale(self) -> None:
        placeholders = [n for n in self.graph.nodes.values() if n.op == "Placeholder"]
        shape = self.model.inputs[0].shape
        if len(placeholders) == 1 and "shape" in placeholders[0].attr:
            dims = [d.size for d in placeholders[0].attr["shape"].shape.dim]
            if len(dims) == 4 and dims[1] > 0 and dims[2] > 0 and shape[1] and shape[2]:
                self.scale = (shape[1] / dims[1], shape[2] / dims[2])

    def _problem(self, layer, message: str, hint: str | None = None) -> None:
        self.problems.append((self.order.get(id(layer), -1), message, hint))

    # -- one pair of ops -------------------------------------------------------------
    def _pair(self, layer, node_index: int, gname: str):
        """Check one Keras layer against one graph op; the graph inputs to pair next, or None."""
        kind = type(layer).__name__
        op = self.graph.nodes[gname].op
        handler = {
            "InputLayer": self._input,
            "Conv2D": self._conv,
            "DepthwiseConv2D": self._conv,
            "BatchNormalization": self._batch_norm,
            "ReLU": self._relu,
            "Add": self._add,
            "Concatenate": self._concat,
            "MaxPooling2D": self._max_pool,
            "LegacyBilinearResize": self._resize,
            "Resizing": self._resize,
        }.get(kind)
        if handler is None:
            self._problem(layer, f"layer {layer.name!r} is a {kind}, which has no TF1 counterpart here (the graph has {op} {gname})")
            return None
        return handler(layer, gname, op)

    def _mismatch(self, layer, gname: str, op: str, expected: str, hint: str | None = None) -> None:
        self._problem(layer, f"layer {layer.name!r} ({type(layer).__name__}) needs {expected} in the graph, which has {op} {gname} there", hint)

    def _input(self, layer, gname, op):
        if op != "Placeholder":
            self._mismatch(layer, gname, op, "the graph's input placeholder")
        return [] if op == "Placeholder" else None

    def _relu(self, layer, gname, op):
        max_value = None if layer.max_value is None else float(layer.max_value)
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0 or max_value not in (None, 6.0):
            self._problem(layer, f"layer {layer.name!r} is a leaky or thresholded ReLU, which the graph does not have")
            return None
        expected = "Relu6" if max_value == 6.0 else "Relu"
        if op != expected:
            self._mismatch(layer, gname, op, expected, _head_hint(layer, op))
            return None
        return [self.graph.data_input(gname)]

    def _add(self, layer, gname, op):
        if op not in ("Add", "AddV2"):
            self._mismatch(layer, gname, op, "Add")
            return None
        return [self.graph.data_input(gname, 0), self.graph.data_input(gname, 1)]

    def _concat(self, layer, gname, op):
        if op != "ConcatV2":
            self._mismatch(layer, gname, op, "ConcatV2")
            return None
        count = len(self.graph.inputs(gname)) - 1
        _, axis = self.graph.const(gname, count)
        if int(axis) not in (-1, 3) or int(layer.axis) not in (-1, 3):
            self._problem(layer, f"layer {layer.name!r} concatenates on axis {layer.axis}, {gname} on axis {int(axis)}")
            return None
        return [self.graph.data_input(gname, i) for i in range(count)]

    def _max_pool(self, layer, gname, op):
        if op != "MaxPool":
            self._mismatch(layer, gname, op, "MaxPool")
            return None
        ksize = tuple(self.graph.attr(gname, "ksize")[1:3])
        strides = tuple(self.graph.attr(gname, "strides")[1:3])
        padding = self.graph.attr(gname, "padding")
        if tuple(layer.pool_size) != ksize or tuple(layer.strides) != strides:
            self._problem(layer, f"layer {layer.name!r} pools {tuple(layer.pool_size)} with stride {tuple(layer.strides)}, {gname} pools {ksize} with stride {strides}")
            return None
        if layer.padding.upper() != padding:
            # SAME and VALID agree when the window tiles the input exactly.
            height, width = layer.input.shape[1:3]
            if ksize != strides or height is None or width is None or height % strides[0] or width % strides[1]:
                self._problem(layer, f"layer {layer.name!r} pools with {layer.padding!r} padding, {gname} with {padding!r}")
                return None
        return [self.graph.data_input(gname)]

    def _resize(self, layer, gname, op):
        mine = "legacy" if type(layer).__name__ == "LegacyBilinearResize" else "half_pixel"
        if type(layer).__name__ == "Resizing" and (layer.interpolation != "bilinear" or layer.crop_to_aspect_ratio or layer.pad_to_aspect_ratio):
            self._problem(layer, f"layer {layer.name!r} resizes with {layer.interpolation!r}, the graph has {op} {gname}")
            return None
        if op != "ResizeBilinear":
            self._mismatch(layer, gname, op, "ResizeBilinear")
            return None
        if self.graph.attr(gname, "align_corners", False):
            theirs = "align_corners"
        else:
            theirs = "half_pixel" if self.graph.attr(gname, "half_pixel_centers", False) else "legacy"
        if mine != theirs:
            hint = "the release samples as TensorFlow 1 did: build with resize: legacy" if theirs == "legacy" else None
            self._problem(layer, f"layer {layer.name!r} resizes with {mine!r} sampling, {gname} with {theirs!r}", hint)
            return None
        _, size = self.graph.const(gname, 1)
        expected = (size[0] * self.scale[0], size[1] * self.scale[1])
        if (float(layer.height), float(layer.width)) != expected:
            self._problem(layer, f"layer {layer.name!r} resizes to {layer.height}x{layer.width}, {gname} to {size[0]}x{size[1]} (model input scaled by {self.scale[0]:g})")
            return None
        return [self.graph.data_input(gname)]

    def _conv(self, layer, gname, op):
        """Conv2D / DepthwiseConv2D, possibly with bias and activation: activation(BiasAdd(conv))."""
        depthwise = type(layer).__name__ == "DepthwiseConv2D"
        want = "DepthwiseConv2dNative" if depthwise else "Conv2D"
        activation = getattr(layer.activation, "__name__", str(layer.activation))
        if activation not in ("linear", "relu", "relu6"):
            self._problem(layer, f"layer {layer.name!r} has activation {activation!r}, which this loader does not pair")
            return None
        conv = gname
        if activation != "linear":
            expected = "Relu6" if activation == "relu6" else "Relu"
            if self.graph.nodes[conv].op != expected:
                self._mismatch(layer, conv, self.graph.nodes[conv].op, f"{expected} (the layer's activation)")
                return None
            conv = self.graph.data_input(conv)[0]
        bias_node = None
        if layer.use_bias:
            if self.graph.nodes[conv].op != "BiasAdd":
                self._mismatch(layer, conv, self.graph.nodes[conv].op, f"BiasAdd over {want} (the layer has a bias)", _head_hint(layer, self.graph.nodes[conv].op))
                return None
            bias_node, conv = conv, self.graph.data_input(conv)[0]
        if self.graph.nodes[conv].op != want:
            self._mismatch(layer, conv, self.graph.nodes[conv].op, want, _head_hint(layer, self.graph.nodes[conv].op))
            return None
        strides = tuple(self.graph.attr(conv, "strides")[1:3])
        dilations = tuple((self.graph.attr(conv, "dilations") or [1, 1, 1, 1])[1:3])
        padding = self.graph.attr(conv, "padding")
        if tuple(layer.strides) != strides or layer.padding.upper() != padding or tuple(layer.dilation_rate) != dilations:
            self._problem(
                layer,
                f"layer {layer.name!r} has strides {tuple(layer.strides)}, padding {layer.padding!r}, dilation {tuple(layer.dilation_rate)}; "
                f"{conv} has strides {strides}, padding {padding!r}, dilation {dilations}",
            )
            return None
        if getattr(layer, "groups", 1) != 1:
            self._problem(layer, f"layer {layer.name!r} is a grouped convolution, {conv} is not")
            return None
        weights = [(layer.kernel, *self.graph.const(conv, 1), "kernel")]
        if bias_node is not None:
            weights.append((layer.bias, *self.graph.const(bias_node, 1), "bias"))
        if self._take(layer, weights):
            self.mapping[layer.name] = conv
        return [self.graph.data_input(conv)]

    def _batch_norm(self, layer, gname, op):
        """BatchNormalization <- FusedBatchNorm (offset, statistics), or the BiasAdd of a folded graph."""
        import numpy as np

        if int(layer.axis) not in (-1, 3):
            self._problem(layer, f"layer {layer.name!r} normalises axis {layer.axis}, not the channels")
            return None
        if op == "BiasAdd" and self.graph.nodes[self.graph.data_input(gname)[0]].op in ("Conv2D", "DepthwiseConv2dNative"):
            # Batch norm folded into the conv: keep it an identity normalisation plus offset.
            source, bias = self.graph.const(gname, 1)
            if not layer.center:
                self._problem(layer, f"layer {layer.name!r} has no offset (center=False) for the bias {source}")
                return None
            values = {"beta": bias, "moving_mean": np.zeros_like(bias), "moving_variance": np.full_like(bias, 1.0 - layer.epsilon)}
            if layer.scale:
                values["gamma"] = np.ones_like(bias)
            weights = [(getattr(layer, key), source, value, key) for key, value in values.items()]
            if self._take(layer, weights):
                self.mapping[layer.name] = gname
            return [self.graph.data_input(gname)]
        if op not in _BN_OPS:
            self._mismatch(layer, gname, op, "FusedBatchNorm", _head_hint(layer, op))
            return None
        if self.graph.attr(gname, "is_training", False):
            self._problem(layer, f"{gname} normalises with batch statistics (is_training): the graph was frozen in training mode")
            return None
        epsilon = float(self.graph.attr(gname, "epsilon", 1e-4))
        if abs(epsilon - float(layer.epsilon)) > 1e-6 * max(1.0, epsilon):
            self._problem(layer, f"layer {layer.name!r} has epsilon {layer.epsilon:g}, {gname} {epsilon:g}")
            return None
        names = ("gamma", "beta", "moving_mean", "moving_variance")
        consts = {key: self.graph.const(gname, i + 1) for i, key in enumerate(names)}
        weights = []
        for key in names:
            source, value = consts[key]
            variable = getattr(layer, key, None)
            if variable is not None:
                weights.append((variable, source, value, key))
            elif key == "gamma" and np.any(value != 1):
                self._problem(layer, f"layer {layer.name!r} has no scale (scale=False) but {source} is not all ones")
                return None
            elif key == "beta" and np.any(value != 0):
                self._problem(layer, f"layer {layer.name!r} has no offset (center=False) but {source} is not all zeros")
                return None
        if self._take(layer, weights):
            self.mapping[layer.name] = gname
        return [self.graph.data_input(gname)]

    def _take(self, layer, weights) -> bool:
        """Queue (variable, value) pairs after checking every shape; False (and a problem) on the first mismatch."""
        for variable, source, value, what in weights:
            if tuple(variable.shape) != tuple(value.shape):
                self._problem(
                    layer,
                    f"layer {layer.name!r} {what} has shape {list(variable.shape)}, {source} has {list(value.shape)}",
                )
                return False
        self.assignments.extend((variable, value) for variable, _, value, _ in weights)
        self.layers_done.add(id(layer))
        return True


def _head_hint(layer, op: str) -> str | None:
    """A precise hint for the usual cause: mv2_cpm's linear heatmap head against the release's."""
    if type(layer).__name__ == "Conv2D" and layer.use_bias and op in ("Relu6", "Relu", *_BN_OPS):
        return "the release ends every stage in batch norm + ReLU6: build mv2_cpm with heatmap_head: bn_relu6"
    if type(layer).__name__ in ("ReLU", "BatchNormalization") and op == "BiasAdd":
        return "the graph's heatmap head is a linear conv with bias: build mv2_cpm with heatmap_head: linear"
    return None


def _keras_inputs(layer, node_index: int) -> list:
    return list(layer._inbound_nodes[node_index].input_tensors)


def _weighted_layers(model) -> list:
    return [layer for layer in model.layers if layer.weights]
