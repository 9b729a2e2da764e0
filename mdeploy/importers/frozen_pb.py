"""Import a TF1 frozen GraphDef (.pb) by its input and output tensor names.

A graph whose input has free dimensions ([?, ?, ?, 3]) may size its layers from the input
at run time: tf-openpose's mobilenet_v2_small resizes one feature map to another's size
through Shape -> StridedSlice -> ResizeBilinear. When the model is traced at the size the
recipe gives (`model.input.size`, the canonical model's fixed input), the graph is first
re-imported with that input shape fixed and every Shape of a now static tensor, and the
small shape arithmetic after it, folded to constants (`fix_input_shape`): the resize gets a
constant size and no converter has to follow the chain.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

from mdeploy.errors import ModelError
from mdeploy.importers import LoadedModel
from mdeploy.registry import unknown_name_message


def load(section, path: Path, where: Callable[..., str | None]) -> LoadedModel:
    graph_def = read_graph_def(path, where("model", "import", "path"))
    nodes = {n.name: n for n in graph_def.node}
    in_name = _tensor(section.inputs[0], nodes, "input", where("model", "import", "inputs", 0), placeholders=True)
    out_name = _tensor(section.outputs[0], nodes, "output", where("model", "import", "outputs", 0))

    from mdeploy.importers.graph_folds import fold_pointwise_depthwise

    dropped = drop_redundant_relus(graph_def, keep={in_name, out_name})
    folded_depthwise = fold_pointwise_depthwise(graph_def, keep={in_name, out_name})  # exact; see graph_folds.py
    wrapped, pruned = _cut(graph_def, in_name, out_name, where)
    placeholder = wrapped.graph.get_tensor_by_name(f"{in_name}:0")
    shape = placeholder.shape
    simplified = {"redundant_relu": dropped} if dropped else {}
    if folded_depthwise:
        simplified["folded_1x1_depthwise"] = folded_depthwise
    source = {"format": "frozen_pb", "input": in_name, "output": out_name, "nodes": len(graph_def.node),
              "simplified": simplified}
    if shape.is_fully_defined():
        fn = pruned
    else:
        fixed: dict[tuple[int, ...], Callable] = {}

        def fn(image):
            """The graph cut at `image`'s static shape when it has one (the canonical model's fixed input)."""
            static = image.shape
            if not static.is_fully_defined():
                return pruned(image)
            key = tuple(static.as_list())
            if key not in fixed:
                graph, folded = fix_input_shape(graph_def, in_name, key)
                if folded:
                    source["simplified"]["folded_shape_ops"] = folded
                fixed[key] = _cut(graph, in_name, out_name, where)[1]
            return fixed[key](image)

    return LoadedModel(
        fn=fn,
        input_shape=tuple(shape.as_list()) if shape.rank is not None else (None, None, None, None),
        input_dtype=placeholder.dtype.name,
        keep=wrapped,
        source=source,
    )


def _cut(graph_def, in_name: str, out_name: str, where: Callable[..., str | None]):
    """(wrapped graph, function from `in_name` to `out_name`) of a GraphDef."""
    import tensorflow as tf

    def _import():
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    try:
        pruned = wrapped.prune(f"{in_name}:0", f"{out_name}:0")
    except (ValueError, KeyError) as err:
        raise ModelError(f"cannot cut the graph from {in_name} to {out_name}: {err}", where=where("model", "import")) from err
    return wrapped, pruned


# Ops of the small shape arithmetic that follows a Shape (sizes, slices, scales), folded once
# their inputs are constants.
SHAPE_ARITHMETIC = frozenset(
    "StridedSlice Slice Cast Mul Add AddV2 Sub RealDiv FloorDiv Floor Pack ConcatV2 Gather GatherV2 Identity".split()
)
_SMALL = 64  # at most this many values in a folded constant (shapes, not weights)


def fix_input_shape(graph_def, in_name: str, shape: tuple[int, ...]):
    """A copy of the graph with input `in_name` fixed to `shape` and its shape arithmetic folded.

    Every Shape whose input's shape is then fully known becomes a Const, and every node of
    `SHAPE_ARITHMETIC` whose inputs are all small constants becomes the Const it computes
    (evaluated by TensorFlow, once). Returns (graph, how many nodes were folded).
    """
    import numpy as np
    import tensorflow as tf

    fixed = tf.compat.v1.GraphDef()
    fixed.CopyFrom(graph_def)
    for node in fixed.node:
        if node.name == in_name:
            node.attr["shape"].shape.CopyFrom(tf.TensorShape(list(shape)).as_proto())
    probe = tf.compat.v1.GraphDef()
    probe.CopyFrom(fixed)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(probe, name="")
    values: dict[str, np.ndarray] = {}
    for node in fixed.node:
        if node.op == "Const":
            tensor = node.attr["value"].tensor
            if tf.TensorShape(tensor.tensor_shape).num_elements() is not None and \
                    tf.TensorShape(tensor.tensor_shape).num_elements() <= _SMALL:
                values[node.name] = tf.make_ndarray(tensor)
    folded = 0
    pending = True
    while pending:  # until no node folds (the chain is short: a few passes)
        pending = False
        for node in fixed.node:
            if node.op == "Const" or node.name in values:
                continue
            refs = [r for r in node.input if not r.startswith("^")]
            value = None
            if node.op == "Shape" and len(refs) == 1:
                known = graph.get_tensor_by_name(refs[0] if ":" in refs[0] else f"{refs[0]}:0").shape
                if known.is_fully_defined():
                    dtype = tf.as_dtype(node.attr["out_type"].type).as_numpy_dtype
                    value = np.asarray(known.as_list(), dtype)
            elif node.op in SHAPE_ARITHMETIC and refs and all(r.split(":")[0] in values and ":" not in r for r in refs):
                value = _evaluate(node, [values[r] for r in refs])
            if value is None or value.size > _SMALL:
                continue
            _to_const(node, value)
            values[node.name] = value
            folded += 1
            pending = True
    return fixed, folded


def _evaluate(node, inputs: list) -> object:
    """The value of one node on constant inputs (None when TensorFlow cannot compute it here)."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    feeds = []
    for k, value in enumerate(inputs):
        const = graph_def.node.add(name=f"input_{k}", op="Const")
        const.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
        const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
        feeds.append(const.name)
    copy = graph_def.node.add()
    copy.CopyFrom(node)
    del copy.input[:]
    copy.input.extend(feeds)
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            return session.run(f"{node.name}:0")
    except (ValueError, TypeError, tf.errors.OpError):
        return None


def _to_const(node, value) -> None:
    import tensorflow as tf

    name = node.name
    node.Clear()
    node.name = name
    node.op = "Const"
    node.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))


def drop_redundant_relus(graph_def, keep: set[str]) -> int:
    """Remove every Relu whose input is already a Relu6 or Relu output (an exact no-op).

    TF-slim graphs (the PoseEstimationForMobile releases among them) put a Relu after each
    Relu6. Float kernels shrug it off, but a full-integer TFLite keeps each as a standalone
    int8 RELU that XNNPACK does not take, which splits the delegated graph into one partition
    per Relu and made the int8 CPM 2.4x slower than fp32. Returns how many were removed.
    """
    nodes = {n.name: n for n in graph_def.node}

    def source(ref: str) -> str:
        return ref.split(":")[0].lstrip("^")

    replace = {}
    for node in graph_def.node:
        if node.op != "Relu" or node.name in keep or len(node.input) != 1:
            continue
        ref = node.input[0]
        if ref.startswith("^") or (":" in ref and not ref.endswith(":0")):
            continue
        upstream = nodes.get(source(ref))
        if upstream is not None and upstream.op in ("Relu6", "Relu"):
            replace[node.name] = ref
    if not replace:
        return 0

    def resolve(ref: str) -> str:
        name = source(ref)
        while name in replace:  # chains of Relus collapse onto the first activation
            ref = replace[name]
            name = source(ref)
        return ref

    kept = [n for n in graph_def.node if n.name not in replace]
    for node in kept:
        for i, ref in enumerate(node.input):
            if source(ref) in replace:
                node.input[i] = ("^" + source(resolve(ref))) if ref.startswith("^") else resolve(ref)
    del graph_def.node[:]
    graph_def.node.extend(kept)
    return len(replace)


def read_graph_def(path: Path, where: str | None):
    """The GraphDef in `path`, checked to be a non-empty frozen graph."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise ModelError(f"expected a frozen GraphDef file, got a folder: {path}", where=where)
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except DecodeError as err:
        raise ModelError(
            f"{path.name} is not a TensorFlow GraphDef ({err})",
            where=where,
            hint="a frozen graph is the .pb written by freeze_graph / convert_variables_to_constants",
        ) from err
    if not graph_def.node:
        raise ModelError(f"{path.name} holds an empty graph", where=where)

    variables = sorted(n.name for n in graph_def.node if n.op in ("VariableV2", "Variable", "VarHandleOp"))
    if variables:
        raise ModelError(
            f"{path.name} is not frozen: it still has {len(variables)} variable(s), e.g. {variables[0]}",
            where=where,
            hint="freeze it first (variables converted to constants)",
        )
    return graph_def


def _tensor(name: str, nodes: dict, kind: str, where: str | None, placeholders: bool = False) -> str:
    """Accept `name` or `name:0`; unknown names fail with the closest node name."""
    base = name[:-2] if name.endswith(":0") else name
    if ":" in base:
        raise ModelError(f"only the first output (:0) of a node can be an {kind}, got {name!r}", where=where)
    if base not in nodes:
        pool = [n for n, node in nodes.items() if node.op == "Placeholder"] if placeholders else list(nodes)
        if len(pool) <= 12:
            message = unknown_name_message(f"{kind} tensor", base, pool)
        else:
            near = difflib.get_close_matches(base, pool, n=3, cutoff=0.5)
            message = f"unknown {kind} tensor {base!r}: no node of that name among the graph's {len(pool)} nodes"
            if near:
                message += f" (did you mean {' or '.join(repr(n) for n in near)}?)"
        raise ModelError(message, where=where)
    return base
