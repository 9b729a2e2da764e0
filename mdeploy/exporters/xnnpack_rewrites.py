"""Graph rewrites for the TFLite artifacts: XNNPACK's fast paths, and int8 that keeps its numbers.

XNNPACK is the CPU backend a TFLite app gets by default. Two things in pose models fall off
its fast paths, and two lose int8 precision; all have exact (float) rewrites:

**Large depthwise kernels** (`export.tflite.split_depthwise`). XNNPACK has single-pass
depthwise kernels for up to 25 taps (3x3, 5x5 and anything with as few taps). A 7x7 depthwise
convolution (49 taps, the CPM's refinement stages) falls to its general multi-pass path, which
measured here is 15-20x slower per multiply than the 25-tap kernel: slower than TFLite's
builtin kernels, and slower still in int8 (docs/benchmarks.md). A depthwise convolution is a
sum over its taps, so it splits exactly: the input is padded once as the layer pads it, and
each band of kernel rows (at most `max_taps` taps: 3, 3 and 1 rows of a 7x7) is a VALID
depthwise convolution of the rows of the padded input it reads, the bands summed. The layer's
bias goes on the last band (so TFLite fuses it there) and an activation after it fuses into
the final ADD.

**PReLU in int8** (`export.tflite.int8_prelu`). XNNPACK runs PReLU in float only: every int8
PRELU (MobileHumanPose has one after nearly every convolution) is left to TFLite's builtin
kernels, cutting the delegated graph into pieces (42 for LPSKI). With per-channel slopes a and
any slope s != 1, PReLU(x) = w1 * x + w2 * LeakyReLU_s(x) where w2 = (1 - a) / (1 - s) and
w1 = (a - s) / (1 - s) (check x > 0: w1 + w2 = 1; x < 0: w1 + w2 s = a). s is the layer's
mean slope, so the linear term is small; a layer whose slopes are all equal becomes one
LEAKY_RELU. XNNPACK takes LEAKY_RELU, MUL and ADD in int8.

**Concatenations in int8** (`export.tflite.int8_concat`). TFLite's int8 CONCATENATION gives
its inputs and its output one scale. A CPM or OpenPose stage reads concat(features, previous
heatmaps): the heatmaps (0..1) get the features' step (0..18 in the PEFM release: 0.07, about
14 levels for a heatmap), and every stage refines coarser maps. Two exact remedies:

- *scale* (`scale_concat`): a convolution is linear in each input channel, so a faint part can
  be multiplied by s before the concatenation and the reading convolution's weights for its
  channels divided by s. The part then shares the concatenation's range instead of a sliver of
  it, at the cost of one MUL. A Conv2D has one int8 weight scale per output channel across all
  parts, so s balances the range between the activation and those weights (sqrt of the range
  ratio times the weight ratio, as for equalization below); a depthwise layer's weights have a
  scale per channel, so there s is the whole range ratio. Between the concatenation and the
  Conv2D, per-channel ops (a depthwise layer, a bias, a ReLU) carry the scale along, and s stops
  where a part's channels would set the range of a tensor they pass through: after a depthwise
  layer the part is one of that tensor's channels again, with one scale for all of them.
- *split* (`split_concat`): a convolution over a channel concatenation is the sum of one
  convolution per part over its slice of the input channels, so each reading Conv2D becomes
  that sum (its bias and any constant per-channel Mul/Add after it, an unfolded batch norm,
  folded into the parts), and per-channel ops between the concatenation and the convolution
  are repeated per part: each part keeps its own int8 scale all the way, and the ADDs rescale.
  It costs a convolution and an ADD per part. A part so faint that it is below one int8 step of
  the sum gains nothing and makes an ADD XNNPACK refuses: the exporter checks the converted
  file (`refused_split_sums`) and converts the graph without the split when that happens.

`auto` (the default) scales the concatenations Conv2D layers read directly, where the two are
as precise (the PEFM CPM, docs/benchmarks.md) and scaling adds no convolution, and splits those
read through per-channel ops (tf-openpose's depthwise layers), where only the split keeps the
parts apart.

**Channel ranges in int8** (`export.tflite.int8_equalize`). An int8 activation tensor has one
scale for all its channels, so a channel whose values span 0..0.01 next to one spanning
0..0.45 keeps 2 or 3 of its 255 steps. In the PEFM CPM's stage blocks, a 1x1 depthwise layer
multiplies each channel of a 0..6 tensor by its own weight before a ReLU: that is where most of
its int8 heatmap error is made (docs/benchmarks.md). ReLU commutes with a positive scale
(ReLU(x / r) = ReLU(x) / r), so for a convolution -> ReLU -> Conv2D pair each channel can be
divided by r_c before the ReLU and multiplied by r_c in the reader's weights with the float
model unchanged. Weights are quantized per output channel, so shrinking a channel's range moves
precision from the reader's weights to the activation: r_c = sqrt(m_c / w_c) balances the two
(the channel's largest value on the calibration images, m_c, against the largest weight the
reader gives it, w_c; SmoothQuant's rule at alpha 0.5). It runs after the other rewrites: a
depthwise layer split into bands is a sum of int8 partial sums and is left alone.

All are the same numbers up to float rounding; in int8 each new tensor has its own scale, so
the rewritten file is measured, not assumed: parity and the accuracy gate score the artifact as
it ships. The canonical model, ONNX, Core ML and MACE keep the layers as they are.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections import OrderedDict
from functools import partial
from pathlib import Path

import numpy as np

MAX_TAPS = 25  # XNNPACK's largest single-pass depthwise tile (5x5)


def pieces(kh: int, kw: int, max_taps: int = MAX_TAPS) -> list[tuple[int, int, int, int]]:
    """(row0, row1, col0, col1) bands of a kh x kw kernel, each at most `max_taps` taps."""
    if kh * kw <= max_taps:
        return [(0, kh, 0, kw)]
    cols = min(kw, max_taps)
    rows = max(1, max_taps // cols)
    return [(r, min(r + rows, kh), c, min(c + cols, kw)) for r in range(0, kh, rows) for c in range(0, kw, cols)]


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Graph:
    """A frozen GraphDef's nodes, readers and static shapes, and NodeDef builders."""

    def __init__(self, graph_def):
        import tensorflow as tf

        self.tf = tf
        self._graph_def = graph_def
        self._graph = None
        self.nodes = {n.name: n for n in graph_def.node}
        self._values: dict[str, np.ndarray] = {}
        self._variable: set[str] | None = None
        self.consumers: dict[str, list[str]] = {}
        for n in graph_def.node:
            for ref in n.input:
                self.consumers.setdefault(ref.lstrip("^").split(":")[0], []).append(n.name)

    @property
    def graph(self):
        """The graph imported into TensorFlow, for static shapes (imported on first use)."""
        if self._graph is None:
            self._graph = self.tf.Graph()
            with self._graph.as_default():
                self.tf.graph_util.import_graph_def(self._graph_def, name="")
        return self._graph

    def node(self, ref: str):
        return self.nodes[ref.lstrip("^").split(":")[0]]

    def value(self, ref: str):
        """The constant a tensor always holds, or None: a Const (through Identity), or what a
        subgraph of constants computes (a batch norm's gamma * rsqrt(var + eps), a reshaped bias)."""
        node = self.node(ref)
        if node.op == "Identity":
            return self.value(node.input[0])
        if node.op == "Const":
            return self.tf.make_ndarray(node.attr["value"].tensor)
        if not self._constant(node.name):
            return None
        name = ref.lstrip("^") if ":" in ref else f"{ref.lstrip('^')}:0"
        if name not in self._values:
            with self.tf.compat.v1.Session(graph=self.graph) as session:
                self._values[name] = np.asarray(session.run(name))
        return self._values[name]

    def _constant(self, name: str) -> bool:
        """Whether `name` depends on constants only (no input, variable or stateful op)."""
        if self._variable is None:  # everything an input, a variable or a stateful op reaches, once
            ops = {op.name: op for op in self.graph.get_operations()}
            stack = [n.name for n in self.nodes.values()
                     if n.op != "Const" and (not n.input or n.op in ("Placeholder", "VarHandleOp", "ReadVariableOp")
                                             or ops[n.name].op_def.is_stateful)]
            self._variable = set(stack)
            while stack:
                for reader in self.consumers.get(stack.pop(), []):
                    if reader not in self._variable:
                        self._variable.add(reader)
                        stack.append(reader)
        return name not in self._variable

    def const(self, name: str, value: np.ndarray):
        from tensorflow.core.framework import attr_value_pb2, node_def_pb2

        node = node_def_pb2.NodeDef(name=name, op="Const")
        node.attr["dtype"].CopyFrom(attr_value_pb2.AttrValue(type=self.tf.as_dtype(value.dtype).as_datatype_enum))
        node.attr["value"].CopyFrom(attr_value_pb2.AttrValue(tensor=self.tf.make_tensor_proto(value)))
        return node

    @staticmethod
    def op(name: str, op: str, inputs: list[str], like=None, **attrs):
        from tensorflow.core.framework import node_def_pb2

        node = node_def_pb2.NodeDef(name=name, op=op)
        node.input.extend(inputs)
        if like is not None:
            node.attr["T"].CopyFrom(like.attr["T"])
        for key, value in attrs.items():
            node.attr[key].CopyFrom(value)
        return node


def _assemble(graph_def, replaced: dict, added: list):
    """`graph_def` with the nodes of `replaced` swapped (None: dropped) and `added` appended."""
    import tensorflow as tf

    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.name in replaced:
            if replaced[node.name] is not None:
                out.node.append(replaced.pop(node.name))
            continue
        out.node.append(node)
    out.node.extend(added)
    out.node.extend(n for n in replaced.values() if n is not None)
    return out


def _biased_sum(g: _Graph, base: str, terms: list[str], bias, like, final: str, added: list, replaced: dict) -> None:
    """terms[0] + ... + terms[-1] (+ bias on the last term, where TFLite fuses it), the last ADD
    named `final` so that the replaced node's readers read the sum."""
    from tensorflow.core.framework import attr_value_pb2

    terms = list(terms)
    if bias is not None:
        added.append(g.const(f"{base}/bias", np.asarray(bias, np.float32)))
        added.append(g.op(f"{base}/biased", "BiasAdd", [terms[-1], f"{base}/bias"], like=like,
                          data_format=attr_value_pb2.AttrValue(s=b"NHWC")))
        terms[-1] = f"{base}/biased"
    total = terms[0]
    for i, term in enumerate(terms[1:], 1):
        name = final if i == len(terms) - 1 else f"{base}/sum_{i}"
        replaced[name] = g.op(name, "AddV2", [total, term], like=like)
        total = name


CONV_ATTRS = ("strides", "padding", "dilations", "data_format", "explicit_paddings", "use_cudnn_on_gpu")


def _copy_of(g: _Graph, name: str, node, inputs: list[str]):
    """`node` as `name` reading `inputs`, with its convolution attributes."""
    copy = g.op(name, node.op, inputs, like=node)
    for key in CONV_ATTRS:
        if key in node.attr:
            copy.attr[key].CopyFrom(node.attr[key])
    return copy


def _reading(g: _Graph, node, index: int, value: np.ndarray, suffix: str, added: list):
    """A copy of `node` (every attribute kept) whose input `index` is a new constant `value`,
    named `<node><suffix>` and appended to `added`."""
    name = f"{node.name}{suffix}"
    added.append(g.const(name, np.asarray(value, np.float32)))
    copy = type(node)()
    copy.CopyFrom(node)
    copy.input[index] = name
    return copy


def split_depthwise(graph_def, input_name: str, output_names: list[str], max_taps: int = MAX_TAPS):
    """A copy of a frozen `graph_def` whose depthwise convolutions of more than `max_taps` taps are
    split (see the module docstring), and what was split: [{node, kernel, pieces, taps}]."""
    import tensorflow as tf
    from tensorflow.core.framework import attr_value_pb2

    g = _Graph(graph_def)
    keep = {input_name.split(":")[0], *(o.split(":")[0] for o in output_names)}
    added, replaced, done = [], {}, []
    for node in graph_def.node:
        if node.op != "DepthwiseConv2dNative" or node.name in keep:
            continue
        weights = g.value(node.input[1])
        strides = list(node.attr["strides"].list.i)
        dilations = list(node.attr["dilations"].list.i) or [1, 1, 1, 1]
        fmt = node.attr["data_format"].s.decode() or "NHWC"
        padding = node.attr["padding"].s.decode()
        if weights is None or fmt != "NHWC" or dilations != [1, 1, 1, 1] or padding not in ("SAME", "VALID"):
            continue
        kh, kw = int(weights.shape[0]), int(weights.shape[1])
        bands = pieces(kh, kw, max_taps)
        if len(bands) == 1:
            continue
        x_ref = node.input[0]
        x = g.graph.get_tensor_by_name(x_ref if ":" in x_ref else f"{x_ref}:0")
        if not x.shape.is_fully_defined():
            continue
        batch, height, width, channels = x.shape.as_list()
        sh, sw = strides[1], strides[2]
        (top, bottom), (left, right) = ((_same_padding(height, kh, sh), _same_padding(width, kw, sw)) if padding == "SAME"
                                        else ((0, 0), (0, 0)))
        out_h = (height + top + bottom - kh) // sh + 1
        out_w = (width + left + right - kw) // sw + 1
        base = node.name + "/split"
        source = x_ref
        if top or bottom or left or right:
            pads = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
            added.append(g.const(f"{base}/paddings", pads))
            added.append(g.op(f"{base}/pad", "Pad", [x_ref, f"{base}/paddings"], like=node,
                                 Tpaddings=attr_value_pb2.AttrValue(type=tf.int32.as_datatype_enum)))
            source = f"{base}/pad"
        # The layer's bias (a BiasAdd that only it feeds) moves onto the last band.
        after = g.consumers.get(node.name, [])
        bias_node = g.nodes[after[0]] if len(after) == 1 and g.nodes[after[0]].op == "BiasAdd" else None
        bias = g.value(bias_node.input[1]) if bias_node is not None else None
        if bias is None:
            bias_node = None
        terms = []
        for i, (r0, r1, c0, c1) in enumerate(bands):
            rows, cols = (out_h - 1) * sh + (r1 - r0), (out_w - 1) * sw + (c1 - c0)
            begin = np.array([0, r0, c0, 0], np.int32)
            # Every size spelled out: XNNPACK leaves a SLICE with a -1 size to the builtin kernels,
            # which would cut the delegated graph at every band.
            size = np.array([batch, rows, cols, channels], np.int32)
            added.append(g.const(f"{base}/begin_{i}", begin))
            added.append(g.const(f"{base}/size_{i}", size))
            added.append(g.op(f"{base}/slice_{i}", "Slice", [source, f"{base}/begin_{i}", f"{base}/size_{i}"], like=node,
                                 Index=attr_value_pb2.AttrValue(type=tf.int32.as_datatype_enum)))
            added.append(g.const(f"{base}/weights_{i}", np.ascontiguousarray(weights[r0:r1, c0:c1])))
            conv = g.op(f"{base}/depthwise_{i}", "DepthwiseConv2dNative", [f"{base}/slice_{i}", f"{base}/weights_{i}"],
                           like=node, strides=node.attr["strides"], padding=attr_value_pb2.AttrValue(s=b"VALID"))
            conv.attr["data_format"].CopyFrom(attr_value_pb2.AttrValue(s=b"NHWC"))
            conv.attr["dilations"].CopyFrom(attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(i=[1, 1, 1, 1])))
            added.append(conv)
            terms.append(f"{base}/depthwise_{i}")
        final = bias_node.name if bias_node is not None else node.name
        _biased_sum(g, base, terms, bias if bias_node is not None else None, node, final, added, replaced)
        if bias_node is not None:
            replaced[node.name] = None  # its only reader, the BiasAdd, is now the sum
        done.append({"node": node.name, "kernel": [kh, kw], "pieces": len(bands),
                     "taps": [(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in bands]})
    if not done:
        return graph_def, []
    return _assemble(graph_def, replaced, added), done


def prelu_as_leaky_relu(graph_def, input_name: str, output_names: list[str]):
    """A copy of a frozen `graph_def` whose PReLUs (Relu(x) + c * Relu(-x) with a constant
    c = -slopes, as Keras writes them) are w1 * x + w2 * LeakyRelu_s(x) (see the module
    docstring), and what was rewritten: [{node, channels, slope, single_op}]."""
    from tensorflow.core.framework import attr_value_pb2

    g = _Graph(graph_def)

    def parts(add):
        """(x, slopes) when `add` is Relu(x) + c * Relu(Neg(x)), else None."""
        if add.op not in ("AddV2", "Add") or len(add.input) != 2:
            return None
        for relu_ref, mul_ref in (add.input, reversed(add.input)):
            relu, mul = g.node(relu_ref), g.node(mul_ref)
            if relu.op != "Relu" or mul.op != "Mul":
                continue
            for c_ref, neg_relu_ref in (mul.input, reversed(mul.input)):
                c, neg_relu = g.value(c_ref), g.node(neg_relu_ref)
                if c is None or neg_relu.op != "Relu" or g.node(neg_relu.input[0]).op != "Neg":
                    continue
                if g.node(neg_relu.input[0]).input[0] == relu.input[0]:
                    return relu.input[0], -np.asarray(c, np.float32)
        return None

    keep = {input_name.split(":")[0], *(o.split(":")[0] for o in output_names)}
    added, replaced, done = [], {}, []
    for add in graph_def.node:
        found = None if add.name in keep else parts(add)
        if found is None:
            continue
        x, slopes = found
        base = add.name + "/leaky_prelu"
        single = float(slopes.max() - slopes.min()) <= 1e-7 * max(1.0, float(np.abs(slopes).max()))
        s = float(slopes.reshape(-1)[0]) if single else float(np.clip(slopes.mean(), -0.99, 0.99))
        if abs(1.0 - s) < 1e-3:  # the decomposition divides by 1 - s
            continue
        leaky = g.op(f"{base}/leaky", "LeakyRelu", [x], like=add, alpha=attr_value_pb2.AttrValue(f=s))
        if single:
            leaky.name = add.name
            replaced[add.name] = leaky
        else:
            w2 = ((1.0 - slopes) / (1.0 - s)).astype(np.float32)
            w1 = ((slopes - s) / (1.0 - s)).astype(np.float32)
            added += [leaky, g.const(f"{base}/w1", w1), g.const(f"{base}/w2", w2),
                      g.op(f"{base}/linear", "Mul", [x, f"{base}/w1"], like=add),
                      g.op(f"{base}/scaled", "Mul", [f"{base}/leaky", f"{base}/w2"], like=add)]
            replaced[add.name] = g.op(add.name, "AddV2", [f"{base}/linear", f"{base}/scaled"], like=add)
        done.append({"node": add.name, "channels": int(slopes.size), "slope": round(s, 4), "single_op": single})
    if not done:
        return graph_def, []
    return _assemble(graph_def, replaced, added), done


PER_CHANNEL = ("DepthwiseConv2dNative", "BiasAdd", "Relu", "Relu6")  # ops a channel concatenation passes through
CONCAT_SPLIT = "/concat_split"  # in the names of the nodes split_concat adds
# XNNPACK takes an int8 ADD only when each input's scale over the output's is in [2**-10, 2**8).
ADD_SCALE_RATIO = (2.0**-10, 2.0**8)


AFFINE = ("Mul", "BiasAdd", "Add", "AddV2", "Sub")  # constant per-channel ops: a bias, an unfolded batch norm


def _constant_ops(g: _Graph, start, keep: set[str]) -> list[tuple]:
    """The elementwise ops with a constant (AFFINE) after `start`, each the only reader of the one
    before and none an input or output: [(op, which input holds the constant, the constant)]."""
    out, last = [], start
    while True:
        after = g.consumers.get(last.name, [])
        if len(after) != 1:
            return out
        op = g.nodes[after[0]]
        if op.name in keep or op.op not in AFFINE or len(op.input) != 2:
            return out
        mine = [i for i, ref in enumerate(op.input) if ref in (last.name, f"{last.name}:0")]
        if len(mine) != 1 or (op.op in ("BiasAdd", "Sub") and mine[0] != 0):
            return out
        value = g.value(op.input[1 - mine[0]])
        if value is None:
            return out
        out.append((op, 1 - mine[0], value))
        last = op


def _channel_concats(g: _Graph, keep: set[str]):
    """(node, parts, readers, channels per part, None where unknown) of each channel concatenation
    of 4-D tensors that some op reads, has no control input and is not named in `keep`."""
    for node in g.nodes.values():
        if node.op != "ConcatV2" or node.name in keep or any(ref.startswith("^") for ref in node.input):
            continue
        parts, axis = list(node.input[:-1]), g.value(node.input[-1])
        readers = [g.nodes[name] for name in dict.fromkeys(g.consumers.get(node.name, []))]  # each reader once
        if axis is None or len(parts) < 2 or not readers:
            continue
        if g.graph.get_tensor_by_name(f"{node.name}:0").shape.rank != 4 or int(axis) not in (-1, 3):
            continue
        shapes = [g.graph.get_tensor_by_name(ref if ":" in ref else f"{ref}:0").shape for ref in parts]
        yield node, parts, readers, [int(s[-1]) if s.rank == 4 and s[-1] else None for s in shapes]  # 0 channels: None


def split_concat(graph_def, input_name: str, output_names: list[str], through_chains_only: bool = False):
    """A copy of a frozen `graph_def` whose channel concatenations read only by convolutions are
    gone (see the module docstring), and what was split: [{node, parts, channels, readers}];
    with `through_chains_only`, only those that a reader reaches through per-channel ops (the rest
    are scale_concat's: `int8_concat: auto`).

    A reader is a Conv2D, or a chain of per-channel ops (a depthwise convolution, a constant
    BiasAdd, ReLU/ReLU6, each read only by the next) ending in one: the chain is repeated per
    part on that part's channels, and the Conv2D becomes the sum of one convolution per part
    over the part's slice of its input channels, its bias on the last."""
    from tensorflow.core.framework import attr_value_pb2

    g = _Graph(graph_def)
    keep = {input_name.split(":")[0], *(o.split(":")[0] for o in output_names)}

    def reads(node, name: str) -> bool:
        return bool(node.input) and node.input[0] in (name, f"{name}:0")

    def chain(reader, source: str):
        """[per-channel ops..., Conv2D] from `reader` (which reads `source`), or None."""
        path, node, feeding = [], reader, source
        while True:
            fmt = node.attr["data_format"].s.decode() if "data_format" in node.attr else ""
            if not reads(node, feeding) or node.name in keep or (fmt or "NHWC") != "NHWC":
                return None
            if node.op == "Conv2D":
                return path + [node] if g.value(node.input[1]) is not None else None
            if node.op not in PER_CHANNEL:
                return None
            if node.op == "DepthwiseConv2dNative" and g.value(node.input[1]) is None:
                return None
            if node.op == "BiasAdd" and g.value(node.input[1]) is None:
                return None
            after = g.consumers.get(node.name, [])
            if len(after) != 1:
                return None
            path.append(node)
            node, feeding = g.nodes[after[0]], node.name

    def affine_tail(conv, channels: int):
        """(scale, shift, ops): the constant per-channel Mul / BiasAdd / Add / Sub ops after `conv`,
        each the only reader of the one before (a bias, an unfolded batch norm), as
        y = conv * scale + shift."""
        scale, shift, tail = np.ones(channels), np.zeros(channels), []
        for op, _, v in _constant_ops(g, conv, keep):
            if v.size not in (1, channels) or (v.ndim > 1 and any(d != 1 for d in v.shape[:-1])):
                break
            v = np.broadcast_to(np.asarray(v, np.float64).reshape(-1), (channels,))
            if op.op == "Mul":
                scale, shift = scale * v, shift * v
            else:
                shift = shift - v if op.op == "Sub" else shift + v
            tail.append(op)
        return scale, shift, tail

    added, replaced, done = [], {}, []
    for node, parts, readers, channels in _channel_concats(g, keep):
        chains = [chain(r, node.name) for r in readers]
        if None in channels or None in chains or (through_chains_only and all(len(path) == 1 for path in chains)):
            continue
        offsets = np.cumsum([0, *channels])
        for path in chains:
            *per_channel, conv = path
            base = conv.name + CONCAT_SPLIT
            multiplier = 1  # channels out per channel in, through the chain's depthwise convolutions
            heads = list(parts)
            for step, op in enumerate(per_channel):
                if op.op == "DepthwiseConv2dNative":
                    weights = g.value(op.input[1])
                    for i in range(len(parts)):
                        name = f"{base}/chain{step}_{i}"
                        lo, hi = offsets[i] * multiplier, offsets[i + 1] * multiplier  # after earlier depthwise layers
                        added.append(g.const(f"{name}/weights", np.ascontiguousarray(weights[:, :, lo:hi])))
                        added.append(_copy_of(g, name, op, [heads[i], f"{name}/weights"]))
                        heads[i] = name
                    multiplier *= int(weights.shape[3])
                elif op.op == "BiasAdd":
                    bias = g.value(op.input[1])
                    for i in range(len(parts)):
                        name = f"{base}/chain{step}_{i}"
                        lo, hi = offsets[i] * multiplier, offsets[i + 1] * multiplier
                        added.append(g.const(f"{name}/bias", np.ascontiguousarray(bias[lo:hi])))
                        added.append(g.op(name, "BiasAdd", [heads[i], f"{name}/bias"], like=op,
                                          data_format=attr_value_pb2.AttrValue(s=b"NHWC")))
                        heads[i] = name
                else:  # Relu, Relu6
                    for i in range(len(parts)):
                        name = f"{base}/chain{step}_{i}"
                        added.append(g.op(name, op.op, [heads[i]], like=op))
                        heads[i] = name
                replaced[op.name] = None
            weights = g.value(conv.input[1])
            scale, shift, tail = affine_tail(conv, int(weights.shape[3]))
            terms = []
            for i, head in enumerate(heads):
                lo, hi = offsets[i] * multiplier, offsets[i + 1] * multiplier
                added.append(g.const(f"{base}/weights_{i}", np.ascontiguousarray(weights[:, :, lo:hi] * scale, np.float32)))
                added.append(_copy_of(g, f"{base}/conv_{i}", conv, [head, f"{base}/weights_{i}"]))
                terms.append(f"{base}/conv_{i}")
            for op in [conv, *tail[:-1]]:
                replaced[op.name] = None
            _biased_sum(g, base, terms, shift if tail else None, conv, tail[-1].name if tail else conv.name, added, replaced)
        replaced[node.name] = None
        done.append({"node": node.name, "parts": len(parts), "channels": [int(c) for c in channels],
                     "readers": [[op.name for op in path] for path in chains]})
    if not done:
        return graph_def, []
    return _assemble(graph_def, replaced, added), done


CONCAT_SCALED = "/concat_scaled"  # in the names of the Mul nodes scale_concat adds
MIN_PART_SCALE = 2.0  # a part scaled by less gains under one bit of int8 resolution: left as it is


def _chain_channels(g: _Graph, path: list) -> int | None:
    """How many concatenated channels `path`'s convolutions read one to one (None where they
    disagree): each depthwise layer's input channels, then the closing convolution's input
    channels divided by the depth multipliers before it."""
    multiplier, channels = 1, None
    for op in path:
        if op.op == "Relu" or op.op == "BiasAdd":
            continue
        shape = g.value(op.input[1]).shape
        read = int(shape[2]) // multiplier if int(shape[2]) % multiplier == 0 else None
        if read is None or (channels is not None and read != channels):
            return None
        channels = read
        if op.op == "DepthwiseConv2dNative":
            multiplier *= int(shape[3])
    return channels


def scale_concat(graph_def, input_name: str, output_names: list[str], calibration, direct_only: bool = False):
    """A copy of a frozen `graph_def` where each channel concatenation read only by convolutions
    has its faint parts multiplied up towards the concatenation's range, and what was scaled:
    [{node, channels, ranges, scales}] (see the module docstring); with `direct_only`, only those
    that Conv2D layers read directly (the rest are split_concat's: `int8_concat: auto`).

    Each reader is a chain of per-channel ops (a depthwise convolution, a constant BiasAdd, a
    ReLU, each read only by the next; not ReLU6, which a scale does not pass) ending in a Conv2D
    with constant weights, whose weights for the part's channels are divided back; or, where no
    such chain follows, a depthwise convolution with constant weights that divides it back itself.
    A scale passes a chain as it is: a depthwise layer keeps its weights, a bias is multiplied.
    `calibration()` yields the inputs whose values give each part's range m (largest |x|) and w
    is the largest weight the closing convolutions give its channels. The part that sets the
    concatenation's range stays; part i is multiplied by s_i = r_ref / r_i, r = m ** a / w **
    (1 - a): a = 0.5 where a Conv2D closes a chain (its weights have one int8 scale per output
    channel across all parts, so the range is balanced between activation and weights, as in
    equalize_ranges), a = 1 where only depthwise convolutions do (one weight scale per channel:
    the weights lose nothing). s_i never takes a part's channels past the largest value of any
    tensor they pass through, and a part scaled by less than MIN_PART_SCALE is left alone. The
    float model is the same."""
    g = _Graph(graph_def)
    keep = {input_name.split(":")[0], *(o.split(":")[0] for o in output_names)}

    def nhwc(node) -> bool:
        return "data_format" not in node.attr or node.attr["data_format"].s in (b"", b"NHWC")

    def reads(node, name: str) -> bool:
        return bool(node.input) and node.input[0] in (name, f"{name}:0") and nhwc(node)

    def weighted(node) -> bool:
        return node.input[1] != node.input[0] and g.value(node.input[1]) is not None

    def chain(reader, source: str):
        """[per-channel ops..., closing convolution] from `reader` (which reads `source`), or None."""
        path, node, feeding = [], reader, source
        while reads(node, feeding):
            if node.op == "Conv2D":
                return path + [node] if weighted(node) else None
            after = g.consumers.get(node.name, [])
            if (node.op not in ("DepthwiseConv2dNative", "BiasAdd", "Relu") or node.name in keep or len(after) != 1
                    or (node.op != "Relu" and not weighted(node))):
                break
            path.append(node)
            node, feeding = g.nodes[after[0]], node.name
        if reader.op == "DepthwiseConv2dNative" and reads(reader, source) and weighted(reader):
            return [reader]
        return None

    found = []
    for node, parts, readers, channels in _channel_concats(g, keep):
        chains = [chain(r, node.name) for r in readers]
        if None in channels or None in chains:
            continue
        if direct_only and not all(len(path) == 1 and path[0].op == "Conv2D" for path in chains):
            continue
        if not all(_chain_channels(g, path) == sum(channels) for path in chains):
            continue  # a grouped convolution, or weights that do not read these channels one to one
        found.append((node, parts, chains, channels))
    if not found:
        return graph_def, []

    # Over the calibration inputs, in float: each concatenation's and each chain tensor's largest
    # magnitude per channel.
    fetches = [[f"{node.name}:0"] + [f"{op.name}:0" for path in chains for op in path[:-1]]
               for node, _, chains, _ in found]
    highest = [None] * len(found)
    with g.tf.compat.v1.Session(graph=g.graph) as session:
        for x in calibration():
            for i, values in enumerate(session.run(fetches, {input_name: np.asarray(x, np.float32)})):
                tops = [np.abs(v).reshape(-1, v.shape[-1]).max(axis=0) for v in values]
                highest[i] = tops if highest[i] is None else [np.maximum(a, b) for a, b in zip(highest[i], tops)]

    scaled_ops: dict[str, np.ndarray] = {}  # node: its new constant (weights or bias)
    added, replaced, done = [], {}, []
    for (node, parts, chains, channels), tops in zip(found, highest):
        part_of = np.repeat(np.arange(len(parts)), channels)  # concatenation channel -> part
        m = np.array([tops[0][part_of == i].max() for i in range(len(parts))])
        # Per tensor along each chain, per part: its largest value, and the tensor's; per closing
        # convolution the largest weight it gives each part.
        limits, w = [], np.zeros(len(parts))
        step = 1
        for path in chains:
            owner = part_of
            for op in path[:-1]:
                if op.op == "DepthwiseConv2dNative":
                    owner = np.repeat(owner, int(g.value(op.input[1]).shape[3]))
                top = tops[step]
                limits.append([top.max() / top[owner == i].max() if top[owner == i].max() > 0 else np.inf
                               for i in range(len(parts))])
                step += 1
            close = np.abs(np.asarray(g.value(path[-1].input[1]), np.float64))
            w = np.maximum(w, [close[:, :, owner == i].max() for i in range(len(parts))])
        alpha = 1.0 if all(path[-1].op == "DepthwiseConv2dNative" for path in chains) else 0.5
        ref = int(np.argmax(m))
        live = (m > 0) & (w > 0)
        if not live[ref]:
            continue
        r = np.ones(len(parts))
        r[live] = m[live] ** alpha / w[live] ** (1 - alpha)
        cap = np.min([m[ref] / np.where(live, m, 1.0), *limits], axis=0)
        scales = np.where(live, np.minimum(r[ref] / r, cap), 1.0)
        scales = np.where(scales >= MIN_PART_SCALE, scales, 1.0)
        if np.all(scales == 1.0):
            continue
        inputs = list(node.input)
        for i, s in enumerate(scales):
            if s != 1.0:
                name = f"{node.name}{CONCAT_SCALED}_{i}"
                added.append(g.const(f"{name}/scale", np.float32(s)))
                added.append(g.op(name, "Mul", [parts[i], f"{name}/scale"], like=node))
                inputs[i] = name
        copy = g.op(node.name, "ConcatV2", inputs, like=node)
        for key in ("N", "Tidx"):
            copy.attr[key].CopyFrom(node.attr[key])
        replaced[node.name] = copy
        for path in chains:
            per_channel = np.repeat(scales, channels)
            for op in path:  # chains of distinct readers share no op
                if op.op == "Relu":
                    continue
                value = np.asarray(g.value(op.input[1]), np.float64)
                if op is path[-1]:  # the closing convolution divides the scale back
                    scaled_ops[op.name] = value / per_channel[None, None, :, None]
                elif op.op == "DepthwiseConv2dNative":  # output channel c * multiplier + k carries channel c's scale
                    per_channel = np.repeat(per_channel, value.shape[3])
                elif op.op == "BiasAdd":
                    scaled_ops[op.name] = value * per_channel
        done.append({"node": node.name, "channels": channels, "ranges": [float(f"{v:.3g}") for v in m],
                     "scales": [float(f"{v:.3g}") for v in scales]})
    for name, value in scaled_ops.items():
        replaced[name] = _reading(g, g.nodes[name], 1, value, CONCAT_SCALED, added)
    if not done:
        return graph_def, []
    return _assemble(graph_def, replaced, added), done


EQUALIZE_ALPHA = 0.5  # how the range moves between activations and weights: (m / w) ** 0.5 per channel


def equalize_ranges(graph_def, input_name: str, output_names: list[str], calibration):
    """A copy of a frozen `graph_def` where each convolution -> ReLU -> Conv2D pair has its
    channels rescaled across the ReLU (see the module docstring), and what was changed:
    [{node, reader, channels, scaled, smallest}].

    The producer is a Conv2D or a depthwise convolution with constant weights, optionally
    followed by constant per-channel Mul / BiasAdd / Add / Sub ops, then a Relu read only by a
    Conv2D with constant weights, each op read only by the next. `calibration()` yields the
    inputs whose ReLU outputs give each channel's range m_c; w_c is the largest weight the
    reader gives channel c. Channel c is divided by r_c = sqrt(m_c / w_c) (relative to the
    largest) before the ReLU and the reader's weights for it multiplied by r_c: ReLU(x / r) =
    ReLU(x) / r for r > 0, so the float model is the same. Channels that never fire keep r = 1."""
    g = _Graph(graph_def)
    keep = {input_name.split(":")[0], *(o.split(":")[0] for o in output_names)}

    def only_reader(node):
        after = g.consumers.get(node.name, [])
        return g.nodes[after[0]] if len(after) == 1 and after[0] not in keep else None

    def nhwc(node) -> bool:
        return "data_format" not in node.attr or node.attr["data_format"].s in (b"", b"NHWC")

    pairs = []
    for producer in graph_def.node:
        if producer.op not in ("Conv2D", "DepthwiseConv2dNative") or producer.name in keep or not nhwc(producer):
            continue
        if g.value(producer.input[1]) is None:
            continue
        affine = _constant_ops(g, producer, keep)
        if not all(nhwc(op) for op, _, _ in affine):
            continue
        node = only_reader(affine[-1][0] if affine else producer)
        if node is None or node.op != "Relu":
            continue
        reader = only_reader(node)
        if reader is None or reader.op != "Conv2D" or not nhwc(reader) or g.value(reader.input[1]) is None:
            continue
        if reader.input[0] not in (node.name, f"{node.name}:0"):
            continue
        pairs.append((producer, affine, node, reader))
    if not pairs:
        return graph_def, []

    # Each channel's largest ReLU output over the calibration inputs, in float.
    highest = [None] * len(pairs)
    with g.tf.compat.v1.Session(graph=g.graph) as session:
        fetches = [f"{relu.name}:0" for _, _, relu, _ in pairs]
        for x in calibration():
            values = session.run(fetches, {input_name: np.asarray(x, np.float32)})
            for i, v in enumerate(values):
                top = v.reshape(-1, v.shape[-1]).max(axis=0)
                highest[i] = top if highest[i] is None else np.maximum(highest[i], top)

    # A layer can read one pair and produce the next: its weights take both scalings.
    weights: dict[str, np.ndarray] = {}
    shifts: dict[str, tuple[int, np.ndarray]] = {}  # op: (which input is the constant, its new value)
    done = []
    for (producer, affine, _relu, reader), m in zip(pairs, highest):
        w_reader = weights.get(reader.name, g.value(reader.input[1]))
        channels = int(w_reader.shape[2])
        if m is None or m.shape[0] != channels:
            continue
        w = np.abs(w_reader).max(axis=(0, 1, 3)).astype(np.float64)
        live = (m > 0) & (w > 0)
        if live.sum() < 2:
            continue
        s = m[live] ** EQUALIZE_ALPHA / w[live] ** (1 - EQUALIZE_ALPHA)
        r = np.ones(channels)
        r[live] = s / s.max()
        produced = weights.get(producer.name, g.value(producer.input[1]))
        if producer.op == "Conv2D":
            weights[producer.name] = produced / r
        else:  # depthwise [kh, kw, in, multiplier]: output channel c * multiplier + k
            weights[producer.name] = (produced.reshape(*produced.shape[:2], -1) / r).reshape(produced.shape)
        for op, const, value in affine:
            if op.op != "Mul":  # a shift scales with the channel; a product already follows it
                value = np.asarray(value, np.float64)
                shifts[op.name] = (const, np.broadcast_to(value, value.shape[:-1] + (channels,)) / r)
        weights[reader.name] = w_reader * r[None, None, :, None]
        done.append({"node": producer.name, "reader": reader.name, "channels": channels, "scaled": int(live.sum()),
                     "smallest": float(f"{r[live].min():.3g}")})
    added, replaced = [], {}
    for name, value in weights.items():
        replaced[name] = _reading(g, g.nodes[name], 1, value, "/equalized", added)
    for name, (const, value) in shifts.items():
        replaced[name] = _reading(g, g.nodes[name], const, value, "/equalized", added)
    if not done:
        return graph_def, []
    return _assemble(graph_def, replaced, added), done


def refused_split_sums(flatbuffer: bytes) -> list[dict]:
    """The ADDs of split_concat's sums in an int8 .tflite that XNNPACK will not take (an input
    scale out of ADD_SCALE_RATIO of the output's: a part so small next to the sum that it is
    below one int8 step of it). Each one is left to TFLite's builtin kernels and cuts the
    delegated graph; [{tensor, ratios}]."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flatbuffer)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    refused = []
    for op in interp._get_ops_details():  # noqa: SLF001 (the analyzer's own data)
        if op["op_name"] != "ADD" or not any(CONCAT_SPLIT in tensors[i]["name"] for i in op["inputs"] if i >= 0):
            continue
        out = tensors[op["outputs"][0]]["quantization"][0]
        ratios = [tensors[i]["quantization"][0] / out for i in op["inputs"] if i >= 0 and out]
        if any(not ADD_SCALE_RATIO[0] <= r < ADD_SCALE_RATIO[1] for r in ratios):
            refused.append({"tensor": tensors[op["outputs"][0]]["name"], "ratios": [float(f"{r:.3g}") for r in ratios]})
    return refused


REWRITES = {"split_depthwise": split_depthwise, "prelu_as_leaky_relu": prelu_as_leaky_relu,
            "split_concat": split_concat, "scale_concat": scale_concat,
            # int8_concat: auto, in this order: scaled where Conv2D layers read directly, split where per-channel ops come first
            "scale_concat_direct": partial(scale_concat, direct_only=True),
            "split_concat_chains": partial(split_concat, through_chains_only=True),
            "equalize_ranges": equalize_ranges}
MEASURED = {"scale_concat", "scale_concat_direct", "equalize_ranges"}  # rewrites that read the calibration inputs


def frozen_signature(saved_model: Path):
    """(frozen GraphDef, input tensor name, {output key: tensor name}, input TensorSpec) of a
    SavedModel's serving signature."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from mdeploy.spec import SIGNATURE

    loaded = tf.saved_model.load(str(saved_model))  # held while freezing: its variables live in it
    concrete = loaded.signatures[SIGNATURE]
    frozen = convert_variables_to_constants_v2(concrete)
    (arg,) = [t for t in frozen.inputs if t.dtype != tf.resource]
    # Outputs of a frozen function come in the order of its flattened structure (sorted keys).
    outputs = {name: frozen.outputs[i].name for i, name in enumerate(sorted(concrete.structured_outputs))}
    (spec,) = concrete.structured_input_signature[1].values()
    return frozen.graph.as_graph_def(), arg.name, outputs, spec


def save_graph_def(graph_def, input_name: str, outputs: dict[str, str], spec, out_dir: Path) -> None:
    """Write a frozen `graph_def` as a SavedModel with the serving signature `frozen_signature` read."""
    import tensorflow as tf

    from mdeploy.spec import SIGNATURE

    def imports():
        tf.graph_util.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imports, [])
    pruned = wrapped.prune(feeds=[wrapped.graph.get_tensor_by_name(input_name)],
                           fetches={k: wrapped.graph.get_tensor_by_name(v) for k, v in outputs.items()})
    module = tf.Module()
    module.keep = wrapped

    @tf.function(input_signature=[tf.TensorSpec(spec.shape, spec.dtype, name=spec.name)])
    def serve(image):
        return {k: tf.identity(v, name=k) for k, v in pruned(image).items()}

    module.serve = serve
    tf.saved_model.save(module, str(out_dir), signatures={SIGNATURE: serve.get_concrete_function()})


def rewrite_saved_model(saved_model: Path, out_dir: Path, rewrites: list[str], calibration=None) -> dict[str, list[dict]]:
    """Write `saved_model` through the named `rewrites` (of REWRITES, in order) to `out_dir`, with
    the same signature; return what each changed (empty: nothing changed, nothing written). The
    MEASURED rewrites read `calibration` (a factory of [1, H, W, 3] inputs) and are skipped without it."""
    graph_def, arg, outputs, spec = frozen_signature(saved_model)
    changed = {}
    for name in rewrites:
        if name in MEASURED:
            if calibration is None:
                continue
            graph_def, done = REWRITES[name](graph_def, arg, list(outputs.values()), calibration)
        else:
            graph_def, done = REWRITES[name](graph_def, arg, list(outputs.values()))
        if done:
            changed[name] = done
    if not changed:
        return {}
    save_graph_def(graph_def, arg, outputs, spec, out_dir)
    return changed


# Rewritten SavedModels of this process, by (content of the canonical SavedModel, rewrites): a
# build's fp32, fp16 and dynamic variants read the same one, and a model with nothing to
# rewrite is read once. Temporary folders, removed when evicted or when the process ends.
_KEPT = 4
_CACHE: OrderedDict[tuple, tuple[tempfile.TemporaryDirectory | None, dict]] = OrderedDict()
_LOCK = threading.Lock()


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _inputs_digest(calibration) -> str:
    h = hashlib.sha256()
    for x in calibration():
        x = np.ascontiguousarray(x, np.float32)
        h.update(str(x.shape).encode())
        h.update(x.tobytes())
    return h.hexdigest()


def rewritten(saved_model: Path, rewrites: list[str], calibration=None) -> tuple[Path | None, dict[str, list[dict]]]:
    """(`saved_model` through `rewrites`, what each changed), or (None, {}) when nothing changes;
    computed once per content, rewrite list and (for MEASURED rewrites) calibration inputs in
    this process (see _CACHE)."""
    measured = calibration is not None and any(name in MEASURED for name in rewrites)
    key = (_digest(Path(saved_model)), tuple(rewrites), _inputs_digest(calibration) if measured else None)
    return kept(key, lambda out: rewrite_saved_model(Path(saved_model), out, rewrites, calibration if measured else None))


def kept(key: tuple, make) -> tuple[Path | None, dict]:
    """(the SavedModel `make(folder)` wrote, what it returned), made once per `key` in this process;
    None when it wrote nothing (see _CACHE)."""
    with _LOCK:
        if key not in _CACHE:
            folder = tempfile.TemporaryDirectory(prefix="mdeploy-xnnpack-")
            out = Path(folder.name) / "saved_model"
            done = make(out)
            if not out.exists():
                folder.cleanup()
                folder = None
            _CACHE[key] = (folder, done)
            while len(_CACHE) > _KEPT:
                old, _ = _CACHE.popitem(last=False)[1]
                if old is not None:
                    old.cleanup()
        _CACHE.move_to_end(key)
        folder, done = _CACHE[key]
    return (Path(folder.name) / "saved_model" if folder is not None else None), done
