"""Exact simplifications of imported TF1 graphs that make their int8 variants work.

`fold_pointwise_depthwise`: a 1x1 depthwise convolution (a per-channel scale, no bias, no
activation) feeding straight into a 1x1 convolution is the same linear map as that
convolution with each input row scaled: W'[c, o] = d[c] W[c, o]. TF-slim's separable
convolutions with a 1x1 kernel (tf-openpose's OpenPose stages, two per branch per stage)
are written that way. Float kernels do not care, but full-integer quantization gives the
depthwise output one activation scale for all its channels while the per-channel scales
d[c] spread its channels over orders of magnitude: most channels then fall into a few int8
levels (LiteRT's quantization debugger puts these layers first, with an error as large as
each channel's own spread) and the int8 model finds ghosts instead of people. Folded, the
ill-conditioned tensor no longer exists.
"""

from __future__ import annotations

from collections import defaultdict


def _source(ref: str) -> str:
    return ref.split(":")[0].lstrip("^")


def _const(nodes: dict, ref: str):
    node = nodes.get(_source(ref))
    return node if node is not None and node.op == "Const" else None


def _ones(node, attr: str) -> bool:
    return attr not in node.attr or all(v == 1 for v in node.attr[attr].list.i)


def fold_pointwise_depthwise(graph_def, keep: set[str] = frozenset()) -> int:
    """Fold every 1x1 depthwise convolution whose only reader is a 1x1 convolution into it (in place).

    Returns how many were folded. Nodes named in `keep` (the import's input and output) stay.
    """
    import numpy as np
    import tensorflow as tf

    nodes = {n.name: n for n in graph_def.node}
    readers: dict[str, list] = defaultdict(list)
    for node in graph_def.node:
        for ref in node.input:
            readers[_source(ref)].append(node)
    removed: set[str] = set()
    folded = 0
    for dw in list(graph_def.node):
        if dw.op != "DepthwiseConv2dNative" or dw.name in keep or len(dw.input) != 2:
            continue
        if dw.attr["data_format"].s not in (b"", b"NHWC") or not _ones(dw, "strides") or not _ones(dw, "dilations"):
            continue
        dw_const = _const(nodes, dw.input[1])
        users = readers.get(dw.name, [])
        if dw_const is None or len(users) != 1:
            continue
        conv = users[0]
        if conv.op != "Conv2D" or conv.input[0] not in (dw.name, f"{dw.name}:0") or conv.attr["data_format"].s not in (b"", b"NHWC"):
            continue
        conv_const = _const(nodes, conv.input[1])
        if conv_const is None or len(readers.get(conv_const.name, [])) != 1:
            continue
        d = tf.make_ndarray(dw_const.attr["value"].tensor)
        w = tf.make_ndarray(conv_const.attr["value"].tensor)
        if d.shape[:2] != (1, 1) or d.shape[3] != 1 or w.shape[:2] != (1, 1) or w.shape[2] != d.shape[2]:
            continue
        scaled = (w.astype(np.float64) * d[0, 0, :, 0].astype(np.float64)[:, None]).astype(w.dtype)
        conv_const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(scaled))
        conv.input[0] = dw.input[0]
        removed.add(dw.name)
        if len(readers.get(dw_const.name, [])) == 1:
            removed.add(dw_const.name)
        folded += 1
    if removed:
        kept = [n for n in graph_def.node if n.name not in removed]
        del graph_def.node[:]
        graph_def.node.extend(kept)
    return folded
