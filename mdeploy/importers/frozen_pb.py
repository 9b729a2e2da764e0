"""Import a TF1 frozen GraphDef (.pb) by its input and output tensor names."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

from mdeploy.errors import ModelError
from mdeploy.importers import LoadedModel
from mdeploy.registry import unknown_name_message


def load(section, path: Path, where: Callable[..., str | None]) -> LoadedModel:
    import tensorflow as tf

    graph_def = read_graph_def(path, where("model", "import", "path"))
    nodes = {n.name: n for n in graph_def.node}
    in_name = _tensor(section.inputs[0], nodes, "input", where("model", "import", "inputs", 0), placeholders=True)
    out_name = _tensor(section.outputs[0], nodes, "output", where("model", "import", "outputs", 0))

    dropped = drop_redundant_relus(graph_def, keep={in_name, out_name})

    def _import():
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    try:
        pruned = wrapped.prune(f"{in_name}:0", f"{out_name}:0")
    except (ValueError, KeyError) as err:
        raise ModelError(f"cannot cut the graph from {in_name} to {out_name}: {err}", where=where("model", "import")) from err
    placeholder = wrapped.graph.get_tensor_by_name(f"{in_name}:0")
    shape = placeholder.shape
    return LoadedModel(
        fn=pruned,
        input_shape=tuple(shape.as_list()) if shape.rank is not None else (None, None, None, None),
        input_dtype=placeholder.dtype.name,
        keep=wrapped,
        source={"format": "frozen_pb", "input": in_name, "output": out_name, "nodes": len(graph_def.node),
                "simplified": {"redundant_relu": dropped} if dropped else {}},
    )


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
