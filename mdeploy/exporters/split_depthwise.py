"""Large depthwise kernels split into pieces that XNNPACK runs on its fast path (TFLite only).

XNNPACK, the CPU kernels a TFLite app gets by default, has single-pass depthwise kernels for
up to 25 taps (3x3 and 5x5 and anything with as few taps). A 7x7 depthwise convolution (49
taps, the CPM's refinement stages) falls to its general multi-pass path, which measured here
is 15-20x slower per multiply than the 25-tap kernel: slower than TFLite's builtin kernels, and
slower still in int8 (docs/benchmarks.md "Why int8 was slower than fp32").

A depthwise convolution is a sum over its taps, so it splits exactly: the input is padded
once as the layer pads it, and each band of kernel rows (at most `max_taps` taps: 3, 3 and 1
rows of a 7x7) is a VALID depthwise convolution of the rows of the padded input it reads,
the bands summed. The layer's bias goes on the last band (so TFLite fuses it there) and an
activation after it fuses into the final ADD. Same numbers up to the order of the float
additions; in int8 each band's partial sum has its own scale (measured, not assumed: the
accuracy gate scores the artifact as it ships).

Only the TFLite export reads the split graph (`export.tflite.split_depthwise`); the
canonical model, ONNX, Core ML and MACE keep the layer as it is.
"""

from __future__ import annotations

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


def split_graph(graph_def, input_name: str, output_names: list[str], max_taps: int = MAX_TAPS):
    """A copy of a frozen `graph_def` whose depthwise convolutions of more than `max_taps` taps are
    split (see the module docstring), and what was split: [{node, kernel, pieces}]."""
    import tensorflow as tf
    from tensorflow.core.framework import attr_value_pb2, node_def_pb2

    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    nodes = {n.name: n for n in graph_def.node}
    consumers: dict[str, list[str]] = {}
    for n in graph_def.node:
        for ref in n.input:
            consumers.setdefault(ref.lstrip("^").split(":")[0], []).append(n.name)

    def const_of(ref: str):
        node = nodes[ref.split(":")[0]]
        while node.op == "Identity":
            node = nodes[node.input[0].split(":")[0]]
        return tf.make_ndarray(node.attr["value"].tensor) if node.op == "Const" else None

    def const_node(name: str, value: np.ndarray):
        node = node_def_pb2.NodeDef(name=name, op="Const")
        node.attr["dtype"].CopyFrom(attr_value_pb2.AttrValue(type=tf.as_dtype(value.dtype).as_datatype_enum))
        node.attr["value"].CopyFrom(attr_value_pb2.AttrValue(tensor=tf.make_tensor_proto(value)))
        return node

    def op_node(name: str, op: str, inputs: list[str], like=None, **attrs):
        node = node_def_pb2.NodeDef(name=name, op=op)
        node.input.extend(inputs)
        if like is not None:
            node.attr["T"].CopyFrom(like.attr["T"])
        for key, value in attrs.items():
            node.attr[key].CopyFrom(value)
        return node

    keep = {input_name.split(":")[0], *(o.split(":")[0] for o in output_names)}
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    added, replaced, done = [], {}, []
    for node in graph_def.node:
        if node.op != "DepthwiseConv2dNative" or node.name in keep:
            continue
        weights = const_of(node.input[1])
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
        x = graph.get_tensor_by_name(x_ref if ":" in x_ref else f"{x_ref}:0")
        if not x.shape.is_fully_defined():
            continue
        _, height, width, _ = x.shape.as_list()
        sh, sw = strides[1], strides[2]
        (top, bottom), (left, right) = ((_same_padding(height, kh, sh), _same_padding(width, kw, sw)) if padding == "SAME"
                                        else ((0, 0), (0, 0)))
        out_h = (height + top + bottom - kh) // sh + 1
        out_w = (width + left + right - kw) // sw + 1
        base = node.name + "/split"
        source = x_ref
        if top or bottom or left or right:
            pads = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
            added.append(const_node(f"{base}/paddings", pads))
            added.append(op_node(f"{base}/pad", "Pad", [x_ref, f"{base}/paddings"], like=node,
                                 Tpaddings=attr_value_pb2.AttrValue(type=tf.int32.as_datatype_enum)))
            source = f"{base}/pad"
        # The layer's bias (a BiasAdd that only it feeds) moves onto the last band.
        after = consumers.get(node.name, [])
        bias_node = nodes[after[0]] if len(after) == 1 and nodes[after[0]].op == "BiasAdd" else None
        bias = const_of(bias_node.input[1]) if bias_node is not None else None
        if bias is None:
            bias_node = None
        terms = []
        for i, (r0, r1, c0, c1) in enumerate(bands):
            rows, cols = (out_h - 1) * sh + (r1 - r0), (out_w - 1) * sw + (c1 - c0)
            begin = np.array([0, r0, c0, 0], np.int32)
            size = np.array([-1, rows, cols, -1], np.int32)
            added.append(const_node(f"{base}/begin_{i}", begin))
            added.append(const_node(f"{base}/size_{i}", size))
            added.append(op_node(f"{base}/slice_{i}", "Slice", [source, f"{base}/begin_{i}", f"{base}/size_{i}"], like=node,
                                 Index=attr_value_pb2.AttrValue(type=tf.int32.as_datatype_enum)))
            added.append(const_node(f"{base}/weights_{i}", np.ascontiguousarray(weights[r0:r1, c0:c1])))
            conv = op_node(f"{base}/depthwise_{i}", "DepthwiseConv2dNative", [f"{base}/slice_{i}", f"{base}/weights_{i}"],
                           like=node, strides=node.attr["strides"], padding=attr_value_pb2.AttrValue(s=b"VALID"))
            conv.attr["data_format"].CopyFrom(attr_value_pb2.AttrValue(s=b"NHWC"))
            conv.attr["dilations"].CopyFrom(attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(i=[1, 1, 1, 1])))
            added.append(conv)
            terms.append(f"{base}/depthwise_{i}")
        if bias_node is not None:
            added.append(const_node(f"{base}/bias", bias))
            added.append(op_node(f"{base}/biased", "BiasAdd", [terms[-1], f"{base}/bias"], like=node,
                                 data_format=attr_value_pb2.AttrValue(s=b"NHWC")))
            terms[-1] = f"{base}/biased"
        total = terms[0]
        final = bias_node.name if bias_node is not None else node.name
        for i, term in enumerate(terms[1:], 1):
            name = final if i == len(terms) - 1 else f"{base}/sum_{i}"
            replaced[name] = op_node(name, "AddV2", [total, term], like=node)
            total = name
        if bias_node is not None:
            replaced[node.name] = None  # its only reader, the BiasAdd, is now the sum
        done.append({"node": node.name, "kernel": [kh, kw], "pieces": len(bands),
                     "taps": [(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in bands]})
    if not done:
        return graph_def, []
    for node in graph_def.node:
        if node.name in replaced:
            if replaced[node.name] is not None:
                out.node.append(replaced.pop(node.name))
            continue
        out.node.append(node)
    out.node.extend(added)
    out.node.extend(n for n in replaced.values() if n is not None)
    return out, done


def split_saved_model(saved_model: Path, out_dir: Path, max_taps: int = MAX_TAPS) -> list[dict]:
    """Write `saved_model` with its large depthwise kernels split to `out_dir` (same signature);
    return what was split (empty: nothing to split, nothing written)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from mdeploy.spec import SIGNATURE

    loaded = tf.saved_model.load(str(saved_model))
    concrete = loaded.signatures[SIGNATURE]
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    (arg,) = [t for t in frozen.inputs if t.dtype != tf.resource]
    outputs = {name: frozen.outputs[i].name for i, name in enumerate(sorted(concrete.structured_outputs))}
    # Outputs of a frozen function come in the order of its flattened structure (sorted keys).
    split, done = split_graph(graph_def, arg.name, list(outputs.values()), max_taps)
    if not done:
        return []

    def imports():
        tf.graph_util.import_graph_def(split, name="")

    wrapped = tf.compat.v1.wrap_function(imports, [])
    pruned = wrapped.prune(feeds=[wrapped.graph.get_tensor_by_name(arg.name)],
                           fetches={k: wrapped.graph.get_tensor_by_name(v) for k, v in outputs.items()})
    (spec,) = concrete.structured_input_signature[1].values()
    module = tf.Module()
    module.keep = wrapped

    @tf.function(input_signature=[tf.TensorSpec(spec.shape, spec.dtype, name=spec.name)])
    def serve(image):
        return {k: tf.identity(v, name=k) for k, v in pruned(image).items()}

    module.serve = serve
    tf.saved_model.save(module, str(out_dir), signatures={SIGNATURE: serve.get_concrete_function()})
    return done
